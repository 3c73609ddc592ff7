package kube

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
)

// Every kubelet rewrites its Node's status every few seconds to a minute,
// and the API server sends each write to every watcher of Nodes: at 5,000
// nodes that is most of what flanneld ever receives, and none of it matters
// to a peer. The node watch therefore asks for metadata only
// (PartialObjectMetadata: name, UID, resourceVersion, annotations; no spec,
// no status) and skims each event as the list pages are skimmed. The
// podCIDRs, which the metadata lacks, come from the cache or one GET (see
// Manager.complete).

// metadataAccept asks the API server for PartialObjectMetadata instead of
// Nodes, in protobuf, else in JSON.
const metadataAccept = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadata;g=meta.k8s.io;v=v1, application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"

// maxWatchFrame bounds one event of the watch stream. A Node's metadata is
// a few KB; a frame beyond this is a broken stream, not a Node.
const maxWatchFrame = 16 << 20

// Field numbers of metav1.WatchEvent and runtime.RawExtension.
const (
	watchEventType   = 1
	watchEventObject = 2
	rawExtensionRaw  = 1
)

// metadataDecoder reads a watch stream of PartialObjectMetadata and
// returns each event's object as a *PeerNode without podCIDRs (or, for
// ERROR events, the *metav1.Status the API server sent). A bookmark's
// PeerNode keeps the initial-events-end annotation, if any.
type metadataDecoder struct {
	body   io.Closer
	r      *bufio.Reader
	ann    Annotations
	prefix string
	buf    []byte
	// sniffed is set once the first bytes told gzip or not, protobuf or
	// JSON; json is set when the API server answered in JSON.
	sniffed bool
	json    *json.Decoder
	// refused, when set, is called if an ERROR other than 410 Gone comes
	// before the initial events end: the API server cannot serve
	// watch-lists (kube-apiserver refuses them when etcd lacks progress
	// notifications), and the stream ends quietly.
	refused func()
	// peeked is an event Decode returns before reading on.
	peeked *decoded
}

// decoded is one decoded event.
type decoded struct {
	typ watch.EventType
	obj runtime.Object
	err error
}

// newMetadataDecoder reads body, gzipped or not, in protobuf frames or
// JSON, whichever the API server chose.
func newMetadataDecoder(body io.ReadCloser, ann Annotations) *metadataDecoder {
	return &metadataDecoder{body: body, r: bufio.NewReaderSize(body, 16<<10), ann: ann, prefix: ann.prefix()}
}

// sniff looks at the first bytes of the stream (which blocks until the
// first event, so it is not done before Decode is called). The API server
// gzips a watch only when it is a watch-list and we asked for gzip; a
// stream of frames starts with a zero byte (a length under 16 MB), JSON
// with '{'.
func (d *metadataDecoder) sniff() error {
	d.sniffed = true
	b, err := d.r.Peek(2)
	if err != nil {
		return err
	}
	if b[0] == 0x1f && b[1] == 0x8b {
		z, err := gzip.NewReader(d.r) // one gzip member per flush: multistream
		if err != nil {
			return fmt.Errorf("reading the gzipped node watch: %w", err)
		}
		d.r = bufio.NewReaderSize(z, 16<<10)
		if b, err = d.r.Peek(1); err != nil {
			return err
		}
	}
	if b[0] == '{' {
		d.json = json.NewDecoder(d.r)
	}
	return nil
}

// Decode implements watch.Decoder.
func (d *metadataDecoder) Decode() (watch.EventType, runtime.Object, error) {
	if p := d.peeked; p != nil {
		d.peeked = nil
		return p.typ, p.obj, p.err
	}
	if !d.sniffed {
		if err := d.sniff(); err != nil {
			return "", nil, err
		}
	}
	var typ watch.EventType
	var obj runtime.Object
	var err error
	if d.json != nil {
		typ, obj, err = d.decodeJSON()
	} else {
		typ, obj, err = d.decodeFrame()
	}
	if err != nil || d.refused == nil {
		return typ, obj, err
	}
	switch typ {
	case watch.Error:
		if st, ok := obj.(*metav1.Status); ok && st.Code != http.StatusGone {
			d.refused()
			return "", nil, io.EOF
		}
	case watch.Bookmark:
		if p, ok := obj.(*PeerNode); ok && p.Annotations[metav1.InitialEventsAnnotationKey] == "true" {
			d.refused = nil
		}
	}
	return typ, obj, nil
}

// decodeFrame reads one event of a protobuf watch stream.
func (d *metadataDecoder) decodeFrame() (watch.EventType, runtime.Object, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(d.r, hdr[:]); err != nil {
		return "", nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > maxWatchFrame {
		return "", nil, fmt.Errorf("a node watch event of %d bytes (more than %d): the stream is broken", n, maxWatchFrame)
	}
	if cap(d.buf) < int(n) {
		d.buf = make([]byte, n)
	}
	d.buf = d.buf[:n]
	if _, err := io.ReadFull(d.r, d.buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return "", nil, err
	}
	return d.decodeEvent(d.buf)
}

// decodeEvent reads one metav1.WatchEvent in protobuf (no magic prefix:
// the stream's frames are raw; the object inside has one).
func (d *metadataDecoder) decodeEvent(frame []byte) (watch.EventType, runtime.Object, error) {
	var typ, obj []byte
	err := eachField(frame, func(num protowire.Number, v []byte) error {
		switch num {
		case watchEventType:
			typ = v
		case watchEventObject:
			return eachField(v, func(num protowire.Number, v []byte) error {
				if num == rawExtensionRaw {
					obj = v
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return "", nil, fmt.Errorf("reading a node watch event: %w", err)
	}
	kind, raw, err := unwrap(obj)
	if err != nil {
		return "", nil, fmt.Errorf("reading the object of a node watch %s event: %w", typ, err)
	}
	switch string(kind) {
	case "PartialObjectMetadata", "Node":
		p := &PeerNode{}
		prefix := d.prefix
		if watch.EventType(typ) == watch.Bookmark {
			prefix = metav1.InitialEventsAnnotationKey
		}
		if err := d.ann.skimNode(raw, prefix, p); err != nil {
			return "", nil, fmt.Errorf("reading the node of a watch %s event: %w", typ, err)
		}
		p.PodCIDRs = nil // complete() decides where they come from
		return watch.EventType(typ), p, nil
	case "Status":
		st := &metav1.Status{}
		if err := st.Unmarshal(raw); err != nil {
			return "", nil, fmt.Errorf("reading the Status of a node watch %s event: %w", typ, err)
		}
		return watch.EventType(typ), st, nil
	}
	return "", nil, fmt.Errorf("the node watch sent a %q in a %s event, where PartialObjectMetadata was expected", kind, typ)
}

// decodeJSON reads one event of a JSON watch stream.
func (d *metadataDecoder) decodeJSON() (watch.EventType, runtime.Object, error) {
	var ev struct {
		Type   watch.EventType `json:"type"`
		Object json.RawMessage `json:"object"`
	}
	if err := d.json.Decode(&ev); err != nil {
		return "", nil, err
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(ev.Object, &tm); err != nil {
		return "", nil, fmt.Errorf("reading the object of a node watch %s event: %w", ev.Type, err)
	}
	if tm.Kind == "Status" {
		st := &metav1.Status{}
		if err := json.Unmarshal(ev.Object, st); err != nil {
			return "", nil, fmt.Errorf("reading the Status of a node watch %s event: %w", ev.Type, err)
		}
		return ev.Type, st, nil
	}
	var m metav1.PartialObjectMetadata
	if err := json.Unmarshal(ev.Object, &m); err != nil {
		return "", nil, fmt.Errorf("reading the node of a watch %s event: %w", ev.Type, err)
	}
	p := &PeerNode{}
	p.Name, p.UID, p.ResourceVersion = m.Name, m.UID, m.ResourceVersion
	prefix := d.prefix
	if ev.Type == watch.Bookmark {
		prefix = metav1.InitialEventsAnnotationKey
	}
	for k, v := range m.Annotations {
		if strings.HasPrefix(k, prefix) {
			if p.Annotations == nil {
				p.Annotations = make(map[string]string, 5)
			}
			p.Annotations[d.ann.internKey([]byte(k))] = v
		}
	}
	return ev.Type, p, nil
}

// Close implements watch.Decoder.
func (d *metadataDecoder) Close() { _ = d.body.Close() }

// WatchPeerMetadata watches the nodes' metadata only, and returns the
// decoder of its stream, which yields PeerNodes without podCIDRs (see
// metadataDecoder). It asks for a watch-list (the
// current state of every node as ADDED events, then a bookmark marking
// their end, then changes), which the API server sends gzipped: about a
// third of the bytes of a plain watch, for every event. It reports whether
// the initial events come; an API server that refuses watch-lists gets a
// plain watch, this time and from then on.
func (a *restAPI) WatchPeerMetadata(ctx context.Context, opts metav1.ListOptions, ann Annotations) (watch.Decoder, bool, error) {
	opts.Watch, opts.AllowWatchBookmarks = true, true
	list := !a.noWatchList.Load()
	if list {
		opts.SendInitialEvents = &list
		opts.ResourceVersionMatch = metav1.ResourceVersionMatchNotOlderThan
	}
	body, err := a.c.Get().Resource("nodes").VersionedParams(&opts, a.pc).
		SetHeader("Accept", metadataAccept).SetHeader("Accept-Encoding", "gzip").Stream(ctx)
	if list && (apierrors.IsInvalid(err) || apierrors.IsBadRequest(err)) {
		a.noWatchList.Store(true)
		return a.WatchPeerMetadata(ctx, metav1.ListOptions{ResourceVersion: opts.ResourceVersion, TimeoutSeconds: opts.TimeoutSeconds}, ann)
	}
	if err != nil {
		return nil, false, err
	}
	d := newMetadataDecoder(body, ann)
	if list {
		// The first event says whether the API server serves the
		// watch-list (it sends the initial events, or the end of none,
		// at once). A refusal must not reach the reflector: it would
		// list every node again.
		refused := false
		d.refused = func() { refused = true }
		typ, obj, err := d.Decode()
		if refused {
			d.Close()
			a.noWatchList.Store(true)
			return a.WatchPeerMetadata(ctx, metav1.ListOptions{ResourceVersion: opts.ResourceVersion, TimeoutSeconds: opts.TimeoutSeconds}, ann)
		}
		d.peeked = &decoded{typ, obj, err}
	}
	return d, list, nil
}
