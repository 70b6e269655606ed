package xds

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	deltav3 "github.com/envoyproxy/go-control-plane/pkg/server/delta/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protowire"
)

// fakeDeltaStream is a DeltaStream driven by a test.
type fakeDeltaStream struct {
	grpc.ServerStream
	ctx  context.Context
	in   chan *discoveryv3.DeltaDiscoveryRequest
	sent chan *discoveryv3.DeltaDiscoveryResponse
}

func (f *fakeDeltaStream) Context() context.Context     { return f.ctx }
func (f *fakeDeltaStream) SetHeader(metadata.MD) error  { return nil }
func (f *fakeDeltaStream) SendHeader(metadata.MD) error { return nil }
func (f *fakeDeltaStream) SetTrailer(metadata.MD)       {}
func (f *fakeDeltaStream) SendMsg(any) error            { return nil }
func (f *fakeDeltaStream) RecvMsg(any) error            { return nil }
func (f *fakeDeltaStream) Send(r *discoveryv3.DeltaDiscoveryResponse) error {
	f.sent <- r
	return nil
}
func (f *fakeDeltaStream) Recv() (*discoveryv3.DeltaDiscoveryRequest, error) {
	select {
	case r := <-f.in:
		return r, nil
	case <-f.ctx.Done():
		return nil, f.ctx.Err()
	}
}

// recvDelta returns the next response the stream sends, waiting up to
// wait for it.
func recvDelta(ch chan *discoveryv3.DeltaDiscoveryResponse, wait time.Duration) (*discoveryv3.DeltaDiscoveryResponse, bool) {
	select {
	case r := <-ch:
		return r, true
	case <-time.After(wait):
		return nil, false
	}
}

// Waits for a response that must come, and for one that must not.
const (
	responseDue  = 10 * time.Second
	responseNone = 200 * time.Millisecond
)

func responseNamesOf(r *discoveryv3.DeltaDiscoveryResponse) []string {
	var out []string
	for _, res := range r.GetResources() {
		out = append(out, res.GetName())
	}
	return out
}

// A response that the publisher puts on the stream's channel after
// go-control-plane drained it (processAll) but before it cancels the watch
// for the next request is installed after that request's unsubscribe was
// recorded in the older map: the record is lost. A later re-subscription
// must still be answered (heldBases.subscribing). Driven through
// go-control-plane's own delta server, for both caches.
func TestDeltaResubscribeAfterUnsubscribeLostToResponseInFlight(t *testing.T) {
	t.Run("endpoints", func(t *testing.T) {
		c := newAssignmentCache("p-")
		all := map[string]string{"a": "10.0.0.1", "b": "10.0.0.2"}
		if _, err := c.update(checkedCLAs(t, all), time.Time{}); err != nil {
			t.Fatal(err)
		}
		resubscribeAfterLostUnsubscribe(t, c, resourcev3.EndpointType, func() {
			all["b"] = "10.0.0.22"
			if _, err := c.update(checkedCLAs(t, all), time.Time{}); err != nil {
				t.Error(err)
			}
		})
	})
	t.Run("clusters", func(t *testing.T) {
		table := newResourceTable()
		c := newConfigCache()
		c.SetSnapshot("n", publishedClusters(t, table, "a", "b"))
		changed := edsClusters("a", "b")
		changed.Clusters[1] = edsCluster("b", "b-renamed")
		changed.Endpoints[1] = cla("b-renamed", "10.0.0.1")
		snap, err := groupSnapshot(changed, table)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := publish(snap, table)
		if err != nil {
			t.Fatal(err)
		}
		resubscribeAfterLostUnsubscribe(t, c, resourcev3.ClusterType, func() { c.SetSnapshot("n", pub) })
	})
}

// resubscribeAfterLostUnsubscribe subscribes to a and b of typeURL, then
// unsubscribes b while change (which changes b) answers the open watch,
// then subscribes to b again, which must be sent.
func resubscribeAfterLostUnsubscribe(t *testing.T, c cachev3.Cache, typeURL string, change func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var hookP atomic.Pointer[func(*discoveryv3.DeltaDiscoveryRequest)]
	cb := serverv3.CallbackFuncs{StreamDeltaRequestFunc: func(_ int64, r *discoveryv3.DeltaDiscoveryRequest) error {
		if h := hookP.Load(); h != nil {
			(*h)(r)
		}
		return nil
	}}
	srv := deltav3.NewServer(ctx, c, cb)
	st := &fakeDeltaStream{ctx: ctx, in: make(chan *discoveryv3.DeltaDiscoveryRequest, 4), sent: make(chan *discoveryv3.DeltaDiscoveryResponse, 4)}
	go func() { _ = srv.DeltaStreamHandler(st, typeURL) }()

	st.in <- &discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "n"}, TypeUrl: typeURL, ResourceNamesSubscribe: []string{"a", "b"}}
	r, ok := recvDelta(st.sent, responseDue)
	if !ok || !slices.Equal(responseNamesOf(r), []string{"a", "b"}) {
		t.Fatalf("first response %v", responseNamesOf(r))
	}
	st.in <- &discoveryv3.DeltaDiscoveryRequest{TypeUrl: typeURL, ResponseNonce: r.GetNonce()}
	// The client unsubscribes b; b changes just as the request is handled
	// (after processAll, before the watch is cancelled). go-control-plane
	// handles requests in order, so the ACK's watch is open by then.
	hook := func(r *discoveryv3.DeltaDiscoveryRequest) {
		if slices.Contains(r.GetResourceNamesUnsubscribe(), "b") {
			change()
		}
	}
	hookP.Store(&hook)
	st.in <- &discoveryv3.DeltaDiscoveryRequest{TypeUrl: typeURL, ResponseNonce: r.GetNonce(), ResourceNamesUnsubscribe: []string{"b"}}
	r, ok = recvDelta(st.sent, responseDue)
	if !ok {
		t.Fatal("the change to b before the unsubscribe was not sent")
	}
	hookP.Store(nil)
	st.in <- &discoveryv3.DeltaDiscoveryRequest{TypeUrl: typeURL, ResponseNonce: r.GetNonce()}
	if extra, ok := recvDelta(st.sent, responseNone); ok {
		t.Logf("a response to the ACK: %v", responseNamesOf(extra))
	}
	// The client wants b again.
	st.in <- &discoveryv3.DeltaDiscoveryRequest{TypeUrl: typeURL, ResponseNonce: r.GetNonce(), ResourceNamesSubscribe: []string{"b"}}
	r, ok = recvDelta(st.sent, responseDue)
	if !ok || !slices.Equal(responseNamesOf(r), []string{"b"}) {
		t.Fatalf("re-subscribing to b: got %v (sent=%v), want [b]", responseNamesOf(r), ok)
	}
}

// A long-lived delta EDS stream never sends its subscription list again,
// so its stand-in must still resolve at its next ACK after other clients'
// lists came and went and the collector ran.
func TestDeltaStreamsOutliveOtherLists(t *testing.T) {
	e := newEndpointCache()
	c := e.flavor("envoy")
	if _, err := c.update(checkedCLAs(t, map[string]string{"a": "10.0.0.1"}), time.Time{}); err != nil {
		t.Fatal(err)
	}
	e.refreshNames()
	cl := newCodecDeltaClient(t, e, "a")
	if _, _, ok := cl.receive(); !ok {
		t.Fatal("no first response")
	}
	cl.send(nil, nil) // a healthy, ACKing stream
	// Other clients (SOTW sidecars, say) send many distinct lists.
	var wire []byte
	for i := range 20 {
		wire = wire[:0]
		for j := range 5000 {
			wire = protowireAppendName(wire, fmt.Sprintf("l%d-n%d", i, j))
		}
		if _, _, err := e.lists.endpointList(wire); err != nil {
			t.Fatal(err)
		}
	}
	if n := collectedDownTo(e.lists.tokens.count, 1); n != 1 {
		t.Errorf("%d lists have a token; want 1, the stream's", n)
	}
	req := &cachev3.DeltaRequest{TypeUrl: resourcev3.EndpointType, ResponseNonce: "n"}
	if _, err := c.CreateDeltaWatch(req, cl.sub, make(chan cachev3.DeltaResponse, 1)); err != nil {
		t.Errorf("a healthy delta stream's next ACK fails after other clients' lists were collected: %v", err)
	}
}

func protowireAppendName(b []byte, n string) []byte {
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	return protowire.AppendString(b, n)
}

// Proxies that hold the same assignments share a base however they got
// there: one that connected a version later, or reconnected with
// initial_resource_versions (every proxy, after a meshd restart), joins
// the others' base.
func TestDeltaBasesReconverge(t *testing.T) {
	c := newAssignmentCache("p-")
	all := map[string]string{}
	names := []string{}
	for i := range 100 {
		n := fmt.Sprintf("s%03d", i)
		all[n] = fmt.Sprintf("10.0.0.%d", i)
		names = append(names, n)
	}
	update := func() {
		t.Helper()
		if _, err := c.update(checkedCLAs(t, all), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	update()
	a := newEDSDeltaClient(t, c, names...)
	a.receive()
	a.request(nil, nil)

	all["s000"] = "10.0.1.1"
	update()
	a.receive()
	a.request(nil, nil)

	// b connects now; r reconnects with what it holds.
	b := newEDSDeltaClient(t, c, names...)
	b.receive()
	b.request(nil, nil)
	held := c.bases.view(a.sub.ReturnedResources()).flatten(0)
	r := &edsDeltaClient{t: t, c: c, sub: streamv3.NewDeltaSubscription(names, nil, held, false)}
	r.watch(&cachev3.DeltaRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: names, InitialResourceVersions: held})
	r.receive()
	r.request(nil, nil)

	for i := 1; i <= 3; i++ {
		all["s001"] = fmt.Sprintf("10.0.2.%d", i)
		update()
		for _, s := range []*edsDeltaClient{a, b, r} {
			if _, _, ok := s.receive(); !ok {
				t.Fatal("no response")
			}
			s.request(nil, nil)
		}
	}
	if a.base() != b.base() || a.base() != r.base() {
		t.Errorf("after three common changes the three proxies hold %p %p %p: identical content, %d live bases", a.base(), b.base(), r.base(), c.bases.count())
	}
}
