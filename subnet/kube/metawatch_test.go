package kube

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
)

// streamEvent is one event of a test watch stream.
type streamEvent struct {
	typ watch.EventType
	obj runtime.Object // *metav1.PartialObjectMetadata or *metav1.Status
}

// protoFrame encodes ev as the API server frames a protobuf watch event: a
// big-endian length, then a raw WatchEvent whose object has the envelope.
func protoFrame(t *testing.T, ev streamEvent) []byte {
	t.Helper()
	var raw []byte
	var err error
	kind, version := "Status", "v1"
	switch o := ev.obj.(type) {
	case *metav1.PartialObjectMetadata:
		kind, version = "PartialObjectMetadata", "meta.k8s.io/v1"
		raw, err = o.Marshal()
	case *metav1.Status:
		raw, err = o.Marshal()
	}
	if err != nil {
		t.Fatal(err)
	}
	u := runtime.Unknown{TypeMeta: runtime.TypeMeta{APIVersion: version, Kind: kind}, Raw: raw}
	env, err := u.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	we := metav1.WatchEvent{Type: string(ev.typ), Object: runtime.RawExtension{Raw: append(slices.Clone(protoMagic), env...)}}
	data, err := we.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(data))), data...)
}

// stream encodes evs as a watch stream in format: protobuf, gzip
// (protobuf, one gzip member per event as the API server flushes them) or
// json.
func stream(t *testing.T, evs []streamEvent, format string) []byte {
	t.Helper()
	var out bytes.Buffer
	for _, ev := range evs {
		var data []byte
		switch format {
		case "json":
			obj := ev.obj
			if p, ok := obj.(*metav1.PartialObjectMetadata); ok {
				p.TypeMeta = metav1.TypeMeta{APIVersion: "meta.k8s.io/v1", Kind: "PartialObjectMetadata"}
			} else {
				obj.(*metav1.Status).TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Status"}
			}
			js, err := json.Marshal(map[string]any{"type": ev.typ, "object": obj})
			if err != nil {
				t.Fatal(err)
			}
			data = append(js, '\n')
		default:
			data = protoFrame(t, ev)
		}
		if format == "gzip" {
			z := gzip.NewWriter(&out)
			if _, err := z.Write(data); err != nil {
				t.Fatal(err)
			}
			if err := z.Close(); err != nil {
				t.Fatal(err)
			}
			continue
		}
		out.Write(data)
	}
	return out.Bytes()
}

func meta(name, rv string, ann map[string]string) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name), ResourceVersion: rv, Annotations: ann,
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate, FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(`{"f:status":{}}`)}}}}
}

func TestMetadataDecoder(t *testing.T) {
	a, err := NewAnnotations(DefaultAnnotationPrefix)
	if err != nil {
		t.Fatal(err)
	}
	evs := []streamEvent{
		{watch.Added, meta("n1", "10", map[string]string{a.BackendType: "vxlan", "other/key": "x"})},
		{watch.Bookmark, meta("", "20", map[string]string{metav1.InitialEventsAnnotationKey: "true"})},
		{watch.Modified, meta("n1", "21", map[string]string{a.BackendType: "host-gw"})},
		{watch.Deleted, meta("n1", "22", nil)},
		{watch.Error, &metav1.Status{Status: metav1.StatusFailure, Code: http.StatusGone, Reason: metav1.StatusReasonExpired, Message: "too old"}},
	}
	for _, format := range []string{"protobuf", "gzip", "json"} {
		t.Run(format, func(t *testing.T) {
			refused := false
			d := newMetadataDecoder(io.NopCloser(bytes.NewReader(stream(t, evs, format))), a)
			d.refused = func() { refused = true }
			var got []string
			for {
				typ, obj, err := d.Decode()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("after %v: %v", got, err)
				}
				switch o := obj.(type) {
				case *PeerNode:
					if o.PodCIDRs != nil {
						t.Errorf("%s has podCIDRs %v from metadata", o.Name, o.PodCIDRs)
					}
					got = append(got, string(typ)+" "+o.Name+"@"+o.ResourceVersion+" "+o.Annotations[a.BackendType]+o.Annotations[metav1.InitialEventsAnnotationKey]+o.Annotations["other/key"])
				case *metav1.Status:
					got = append(got, string(typ)+" "+string(o.Reason))
				default:
					t.Fatalf("%s event with a %T", typ, obj)
				}
			}
			want := []string{"ADDED n1@10 vxlan", "BOOKMARK @20 true", "MODIFIED n1@21 host-gw", "DELETED n1@22 ", "ERROR Expired"}
			if !slices.Equal(got, want) {
				t.Errorf("events\n%q\nwant\n%q", got, want)
			}
			if refused {
				t.Error("a watch-list that sent its initial events counted as refused")
			}
		})
	}
	t.Run("refused watch-list ends quietly", func(t *testing.T) {
		refused := false
		data := stream(t, []streamEvent{{watch.Error, &metav1.Status{Status: metav1.StatusFailure, Code: http.StatusInternalServerError,
			Message: "a watch stream was requested by the client but the required storage feature RequestWatchProgress is disabled"}}}, "gzip")
		d := newMetadataDecoder(io.NopCloser(bytes.NewReader(data)), a)
		d.refused = func() { refused = true }
		if _, _, err := d.Decode(); err != io.EOF || !refused {
			t.Errorf("Decode: %v, refused %v; want io.EOF, true", err, refused)
		}
	})
	t.Run("a frame too long is an error", func(t *testing.T) {
		d := newMetadataDecoder(io.NopCloser(bytes.NewReader([]byte{0x7f, 0, 0, 0, 1})), a)
		if _, _, err := d.Decode(); err == nil || err == io.EOF {
			t.Errorf("Decode: %v, want an error", err)
		}
	})
}
