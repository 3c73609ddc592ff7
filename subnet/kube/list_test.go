package kube

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// failingAPI fails its first fails node lists with err, then lists one
// node; it has no other method.
type failingAPI struct {
	API
	err          error
	fails, calls atomic.Int32
}

func (a *failingAPI) ListNodes(context.Context, metav1.ListOptions) (*v1.NodeList, error) {
	a.calls.Add(1)
	if a.fails.Add(-1) >= 0 {
		return nil, a.err
	}
	return &v1.NodeList{ListMeta: metav1.ListMeta{ResourceVersion: "7"}, Items: []v1.Node{{ObjectMeta: metav1.ObjectMeta{Name: "peer"}}}}, nil
}

// TestListUntilReachable: the informer's list is tried again by itself
// while the API server cannot be reached (as after a watch broken by an
// API server's restart), not on the informer's growing backoff; an answer
// such as a refusal goes back to the informer at once.
func TestListUntilReachable(t *testing.T) {
	defer func(d time.Duration) { watchRetry = d }(watchRetry)
	watchRetry = 10 * time.Millisecond
	refused := &url.Error{Op: "Get", URL: "https://10.0.0.1:6443", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
	forbidden := apierrors.NewForbidden(v1.Resource("nodes"), "", errors.New("RBAC"))
	for _, c := range []struct {
		name      string
		err       error
		wantCalls int32
		wantErr   bool
	}{
		{"unreachable three times", refused, 4, false},
		{"refused", forbidden, 1, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			api := &failingAPI{err: c.err}
			api.fails.Store(3)
			ann, _ := NewAnnotations(DefaultAnnotationPrefix)
			log := logrus.New()
			log.SetOutput(io.Discard)
			m := NewManager(api, "me", ann, log, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			obj, err := m.listUntilReachable(ctx, metav1.ListOptions{})
			if (err != nil) != c.wantErr || api.calls.Load() != c.wantCalls {
				t.Fatalf("err = %v after %d lists; want error %v after %d", err, api.calls.Load(), c.wantErr, c.wantCalls)
			}
			if err == nil && len(obj.(*PeerNodeList).Items) != 1 {
				t.Errorf("listed %d nodes, want 1", len(obj.(*PeerNodeList).Items))
			}
		})
	}
}
