// Package clientsetapi adapts a client-go clientset (in tests, the fake one)
// to kube.API. flanneld itself uses kube.NewRESTAPI, which links far less.
package clientsetapi

import (
	"context"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/twill-net/twill/subnet/kube"
)

// API implements kube.API over a clientset.
type API struct{ C kubernetes.Interface }

var _ kube.API = API{}

// GetNode implements kube.API.
func (a API) GetNode(ctx context.Context, name string) (*v1.Node, error) {
	return a.C.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
}

// ListNodes implements kube.API.
func (a API) ListNodes(ctx context.Context, opts metav1.ListOptions) (*v1.NodeList, error) {
	return a.C.CoreV1().Nodes().List(ctx, opts)
}

// WatchNodes implements kube.API.
func (a API) WatchNodes(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	return a.C.CoreV1().Nodes().Watch(ctx, opts)
}

// PatchNodeStatus implements kube.API.
func (a API) PatchNodeStatus(ctx context.Context, name string, pt types.PatchType, data []byte) error {
	_, err := a.C.CoreV1().Nodes().Patch(ctx, name, pt, data, metav1.PatchOptions{}, "status")
	return err
}

// CreateEvent implements kube.API.
func (a API) CreateEvent(ctx context.Context, ev *v1.Event) error {
	_, err := a.C.CoreV1().Events(ev.Namespace).Create(ctx, ev, metav1.CreateOptions{})
	return err
}

// GetPod implements kube.API.
func (a API) GetPod(ctx context.Context, namespace, name string) (*v1.Pod, error) {
	return a.C.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
}
