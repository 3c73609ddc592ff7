package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
)

// API is the part of the Kubernetes API flanneld uses. NewRESTAPI is the
// real one; tests wrap client-go's fake clientset.
type API interface {
	GetNode(ctx context.Context, name string) (*v1.Node, error)
	ListNodes(ctx context.Context, opts metav1.ListOptions) (*v1.NodeList, error)
	WatchNodes(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
	// PatchNodeStatus patches the nodes/status subresource.
	PatchNodeStatus(ctx context.Context, name string, pt types.PatchType, data []byte) error
	CreateEvent(ctx context.Context, ev *v1.Event) error
	GetPod(ctx context.Context, namespace, name string) (*v1.Pod, error)
}

// restAPI talks to the API server with a scheme of core/v1 alone. client-go's
// full clientset links every API group into the binary, which costs flanneld
// about 11 MB of resident memory before it has done anything.
type restAPI struct {
	c  *rest.RESTClient
	pc runtime.ParameterCodec
	// noWatchList is set once the API server refused a watch-list.
	noWatchList atomic.Bool
}

// NewRESTAPI returns the API over cfg (its content type is kept, so
// protobuf can be asked for).
func NewRESTAPI(cfg *rest.Config) (API, error) {
	s := runtime.NewScheme()
	if err := v1.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("building the core/v1 scheme: %w", err)
	}
	metav1.AddToGroupVersion(s, v1.SchemeGroupVersion)
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &v1.SchemeGroupVersion
	c.APIPath = "/api"
	c.NegotiatedSerializer = serializer.NewCodecFactory(s).WithoutConversion()
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("creating the API client: %w", err)
	}
	return &restAPI{c: rc, pc: runtime.NewParameterCodec(s)}, nil
}

func (a *restAPI) GetNode(ctx context.Context, name string) (*v1.Node, error) {
	n := &v1.Node{}
	if err := a.c.Get().Resource("nodes").Name(name).Do(ctx).Into(n); err != nil {
		return nil, err
	}
	return n, nil
}

func (a *restAPI) ListNodes(ctx context.Context, opts metav1.ListOptions) (*v1.NodeList, error) {
	l := &v1.NodeList{}
	if err := a.c.Get().Resource("nodes").VersionedParams(&opts, a.pc).Do(ctx).Into(l); err != nil {
		return nil, err
	}
	return l, nil
}

func (a *restAPI) WatchNodes(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return a.c.Get().Resource("nodes").VersionedParams(&opts, a.pc).Watch(ctx)
}

func (a *restAPI) PatchNodeStatus(ctx context.Context, name string, pt types.PatchType, data []byte) error {
	return a.c.Patch(pt).Resource("nodes").Name(name).SubResource("status").Body(data).Do(ctx).Error()
}

func (a *restAPI) CreateEvent(ctx context.Context, ev *v1.Event) error {
	return a.c.Post().Namespace(ev.Namespace).Resource("events").Body(ev).Do(ctx).Error()
}

func (a *restAPI) GetPod(ctx context.Context, namespace, name string) (*v1.Pod, error) {
	p := &v1.Pod{}
	if err := a.c.Get().Namespace(namespace).Resource("pods").Name(name).Do(ctx).Into(p); err != nil {
		return nil, err
	}
	return p, nil
}

// pageBuffers holds the read buffers of list pages, so each page of the
// initial list does not allocate its megabyte again.
var pageBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// ListPeerNodes lists one page of nodes straight into PeerNodes: in
// protobuf, it skims the page without building v1.Node objects; in JSON
// (an API server that does not speak protobuf) it decodes and strips.
func (a *restAPI) ListPeerNodes(ctx context.Context, opts metav1.ListOptions, ann Annotations) (*PeerNodeList, error) {
	body, err := a.c.Get().Resource("nodes").VersionedParams(&opts, a.pc).
		SetHeader("Accept", "application/vnd.kubernetes.protobuf, application/json").Stream(ctx)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	buf := pageBuffers.Get().(*bytes.Buffer)
	defer pageBuffers.Put(buf)
	buf.Reset()
	if _, err := buf.ReadFrom(body); err != nil {
		return nil, fmt.Errorf("reading a page of the node list: %w", err)
	}
	out := &PeerNodeList{}
	if isProtobuf(buf.Bytes()) {
		if err := ann.skimNodeList(buf.Bytes(), out); err != nil {
			return nil, fmt.Errorf("decoding a page of the node list: %w", err)
		}
		return out, nil
	}
	var l v1.NodeList
	if err := json.Unmarshal(buf.Bytes(), &l); err != nil {
		return nil, fmt.Errorf("decoding a page of the node list: %w", err)
	}
	out.ResourceVersion, out.Continue = l.ResourceVersion, l.Continue
	out.Items = make([]PeerNode, len(l.Items))
	for i := range l.Items {
		out.Items[i] = *ann.Strip(&l.Items[i])
	}
	return out, nil
}
