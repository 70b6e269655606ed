package xds

import (
	"context"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// response is a SOTW response of about n bytes.
func response(n int) *discoveryv3.DiscoveryResponse {
	return &discoveryv3.DiscoveryResponse{Resources: []*anypb.Any{{Value: make([]byte, n)}}}
}

// acquired reports whether acquire returns within a short while.
func acquired(sb *streamBudget, typeURL, nonce string, n int) bool {
	done := make(chan struct{})
	go func() {
		_ = sb.acquire(context.Background(), typeURL, nonce, response(n))
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(50 * time.Millisecond):
		return false
	}
}

func TestSendBudget(t *testing.T) {
	b := newSendBudget(1000, time.Hour)
	s1, s2 := b.stream(), b.stream()
	if !acquired(s1, resourcev3.ClusterType, "1", 600) {
		t.Fatal("the first response waited on an empty budget")
	}
	// 600 + 600 > 1000: the second stream waits for the first's ACK.
	done := make(chan struct{})
	go func() {
		_ = s2.acquire(context.Background(), resourcev3.ClusterType, "1", response(600))
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("a response went out beyond the budget")
	case <-time.After(50 * time.Millisecond):
	}
	// A request of another type, or naming an older nonce, is no ACK.
	s1.answered(resourcev3.ListenerType, "1")
	s1.answered(resourcev3.ClusterType, "0")
	select {
	case <-done:
		t.Fatal("budget came back without an answer to the response")
	case <-time.After(50 * time.Millisecond):
	}
	s1.answered(resourcev3.ClusterType, "1")
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("the ACK did not give the budget back")
	}
	// A closed stream gives back everything it held.
	s2.close()
	if !acquired(s1, resourcev3.ClusterType, "2", 900) {
		t.Error("a closed stream kept its budget")
	}
	// A response larger than the whole budget still goes, alone.
	s1.answered(resourcev3.ClusterType, "2")
	if !acquired(s1, resourcev3.EndpointType, "3", 5000) {
		t.Error("a response larger than the budget never went out")
	}
}

func TestSendBudgetNeverStallsForever(t *testing.T) {
	b := newSendBudget(100, 20*time.Millisecond)
	stuck, other := b.stream(), b.stream()
	_ = stuck.acquire(context.Background(), resourcev3.ClusterType, "1", response(100))
	// The stuck proxy never answers; the other one goes after maxWait.
	if !acquired(other, resourcev3.ClusterType, "1", 100) {
		t.Error("a proxy that never answers stalled another one")
	}
	// A cancelled stream stops waiting with its context's error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b2 := newSendBudget(100, time.Hour)
	_ = b2.stream().acquire(context.Background(), resourcev3.ClusterType, "1", response(100))
	if err := b2.stream().acquire(ctx, resourcev3.ClusterType, "1", response(100)); err == nil {
		t.Error("acquire on a cancelled stream returned no error")
	}
}
