package xds

import (
	"context"
	"fmt"
	"runtime"
	runtimemetrics "runtime/metrics"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// What one client makes meshd keep is released when it disconnects: a
// client that sends 60 distinct 100,000-name endpoint requests on one
// stream and goes leaves the live heap where it was. Each of those lists
// costs meshd about 10 MB while it is used (the names, their encoding, the
// set a stand-in shares); keeping even one would show.
func TestClientStateReleasedOnDisconnect(t *testing.T) {
	const (
		names     = 100_000
		tolerance = 4 << 20 // well under one list
	)
	requests := 60
	if raceDetector {
		requests = 6
	}
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "sotw", true: "delta"}[delta], func(t *testing.T) {
			h := newHarness(t, nil)
			h.update(mesh(t, shop...))
			node := &corev3.Node{Id: nodeID("product-0", "default", "127.0.0.2")}
			ads := discoveryv3.NewAggregatedDiscoveryServiceClient(h.conn)
			client := func(count, n int) {
				ctx, cancel := context.WithCancel(h.ctx)
				if delta {
					sendDeltaLists(ctx, t, ads, node, count, n)
				} else {
					sendSotwLists(ctx, t, ads, node, count, n)
				}
				cancel()
				h.eventually("the stream to close", func() bool {
					h.srv.mu.Lock()
					defer h.srv.mu.Unlock()
					return len(h.srv.streams) == 0
				})
				if n := collectedDownTo(h.srv.eds.lists.tokens.count, 0); n != 0 {
					t.Errorf("%d name lists still have a stand-in after the only client left", n)
				}
			}
			// A small client first, so that what the first stream
			// initialises once (gRPC's and go-control-plane's) is in
			// the heap before it is measured.
			client(2, 10)
			before := liveHeap(t)
			client(requests, names)
			after := liveHeap(t)
			t.Logf("live heap %.1f MiB before, %.1f MiB after %d requests of %d names",
				float64(before)/(1<<20), float64(after)/(1<<20), requests, names)
			if after > before+tolerance {
				t.Errorf("the live heap grew by %.1f MiB after the client left; want at most %.1f MiB",
					float64(after-before)/(1<<20), float64(tolerance)/(1<<20))
			}
		})
	}
}

// listNames is the i-th list of n distinct names, named like no
// assignment.
func listNames(i, n int) []string {
	out := make([]string, n)
	for j := range out {
		out[j] = fmt.Sprintf("list-%02d-name-%06d", i, j)
	}
	return out
}

// sendSotwLists sends count endpoint requests on one SOTW stream, each
// naming n new names, and waits for the answer to each. A request with no
// version is answered even when it names nothing that exists.
func sendSotwLists(ctx context.Context, t *testing.T, ads discoveryv3.AggregatedDiscoveryServiceClient, node *corev3.Node, count, n int) {
	t.Helper()
	st, err := ads.StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	nonce := ""
	for i := range count {
		req := &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: listNames(i, n), ResponseNonce: nonce}
		if i == 0 {
			req.Node = node
		}
		if err := st.Send(req); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		resp, err := st.Recv()
		if err != nil {
			t.Fatalf("answer to request %d: %v", i, err)
		}
		nonce = resp.GetNonce()
	}
}

// sendDeltaLists sends count endpoint requests on one delta stream, each
// subscribing to n new names and unsubscribing from the previous request's,
// then one subscribing to an assignment that exists, whose answer says
// that every request before it was handled.
func sendDeltaLists(ctx context.Context, t *testing.T, ads discoveryv3.AggregatedDiscoveryServiceClient, node *corev3.Node, count, n int) {
	t.Helper()
	st, err := ads.DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var prev []string
	for i := range count {
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType,
			ResourceNamesSubscribe: listNames(i, n), ResourceNamesUnsubscribe: prev}
		if i == 0 {
			req.Node = node
		}
		if err := st.Send(req); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		prev = req.ResourceNamesSubscribe
	}
	const known = "outbound|8080||stock.default.svc.cluster.local"
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType,
		ResourceNamesSubscribe: []string{known}, ResourceNamesUnsubscribe: prev}); err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatalf("answer to the last request: %v", err)
	}
	if len(resp.GetResources()) != 1 || resp.GetResources()[0].GetName() != known {
		t.Fatalf("the last request was answered with %v; want %s", resp.GetResources(), known)
	}
}

// liveHeap returns the bytes of heap objects live after a full
// collection. Two collections empty the sync.Pools (gRPC's buffers, the
// codec's scratch space), which keep their contents across one.
func liveHeap(t *testing.T) uint64 {
	t.Helper()
	runtime.GC()
	runtime.GC()
	s := []runtimemetrics.Sample{{Name: "/gc/heap/live:bytes"}}
	runtimemetrics.Read(s)
	if s[0].Value.Kind() != runtimemetrics.KindUint64 {
		t.Fatalf("runtime/metrics has no %s", s[0].Name)
	}
	return s[0].Value.Uint64()
}
