package kube_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/sirupsen/logrus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/twill-net/twill/subnet/kube"
	"github.com/twill-net/twill/subnet/kube/clientsetapi"
)

// TestWarningEventsRateLimited: a Node whose annotations flap between
// broken and fine gets a burst of Warning Events, then no more, while
// another node's and another reason's still go out.
func TestWarningEventsRateLimited(t *testing.T) {
	client := fake.NewClientset()
	log := logrus.New()
	log.SetOutput(io.Discard)
	ann, _ := kube.NewAnnotations(kube.DefaultAnnotationPrefix)
	m := kube.NewManager(clientsetapi.API{C: client}, "me", ann, log, nil)
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		m.Warn(ctx, "flappy", "InvalidFlannelAnnotations", fmt.Errorf("broken %d", i))
		m.ClearWarning("flappy")
	}
	m.Warn(ctx, "flappy", "PeerUnreachable", errors.New("no route"))
	m.Warn(ctx, "steady", "InvalidFlannelAnnotations", errors.New("broken"))
	m.Warn(ctx, "steady", "InvalidFlannelAnnotations", errors.New("broken")) // the same message: no second Event
	events, err := client.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, ev := range events.Items {
		count[ev.InvolvedObject.Name+"/"+ev.Reason]++
	}
	if count["flappy/InvalidFlannelAnnotations"] != 3 || count["flappy/PeerUnreachable"] != 1 || count["steady/InvalidFlannelAnnotations"] != 1 {
		t.Errorf("events by node and reason: %v; want 3 (the burst), 1 and 1", count)
	}
}

// TestTwoProblemsOfOneNode: a node with two problems at once, reported at
// every reconcile, gets one Warning Event for each, not one per report;
// clearing one reason leaves the other's, and it comes back once.
func TestTwoProblemsOfOneNode(t *testing.T) {
	client := fake.NewClientset()
	log := logrus.New()
	log.SetOutput(io.Discard)
	ann, _ := kube.NewAnnotations(kube.DefaultAnnotationPrefix)
	m := kube.NewManager(clientsetapi.API{C: client}, "me", ann, log, nil)
	ctx := context.Background()
	for range 5 {
		m.Warn(ctx, "me", "SubnetEnvNotWritten", errors.New("cannot write subnet.env"))
		m.Warn(ctx, "me", "PodCIDRChanged", errors.New("podCIDR changed"))
	}
	m.ClearWarning("me", "SubnetEnvNotWritten")
	m.Warn(ctx, "me", "PodCIDRChanged", errors.New("podCIDR changed"))
	m.Warn(ctx, "me", "SubnetEnvNotWritten", errors.New("cannot write subnet.env"))
	events, err := client.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, ev := range events.Items {
		count[ev.Reason]++
	}
	if count["SubnetEnvNotWritten"] != 2 || count["PodCIDRChanged"] != 1 {
		t.Errorf("events by reason: %v; want SubnetEnvNotWritten 2 (once, and once after it was cleared), PodCIDRChanged 1", count)
	}
}
