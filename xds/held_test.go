package xds

import (
	"maps"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// edsDeltaClient is one delta EDS stream of a test, driven as
// go-control-plane's delta server drives the cache: it updates the
// subscription, creates a watch, and installs the map of each response it
// sends.
type edsDeltaClient struct {
	t   *testing.T
	c   *assignmentCache
	sub streamv3.Subscription
	out chan cachev3.DeltaResponse
}

func newEDSDeltaClient(t *testing.T, c *assignmentCache, names ...string) *edsDeltaClient {
	s := &edsDeltaClient{t: t, c: c, sub: streamv3.NewDeltaSubscription(names, nil, nil, false)}
	s.watch(&cachev3.DeltaRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: names})
	return s
}

func (s *edsDeltaClient) watch(req *cachev3.DeltaRequest) {
	s.t.Helper()
	s.out = make(chan cachev3.DeltaResponse, 1)
	if _, err := s.c.CreateDeltaWatch(req, s.sub, s.out); err != nil {
		s.t.Fatal(err)
	}
}

// request sends a request (an ACK when both lists are empty).
func (s *edsDeltaClient) request(subscribe, unsubscribe []string) {
	s.t.Helper()
	s.sub.UpdateResourceSubscriptions(subscribe, unsubscribe)
	s.watch(&cachev3.DeltaRequest{TypeUrl: resourcev3.EndpointType, ResponseNonce: "n",
		ResourceNamesSubscribe: subscribe, ResourceNamesUnsubscribe: unsubscribe})
}

// receive returns what the stream was sent, if anything, and installs
// the response's map.
func (s *edsDeltaClient) receive() (updated, removed []string, ok bool) {
	r, ok := got(s.out)
	if !ok {
		return nil, nil, false
	}
	s.sub.SetReturnedResources(r.GetNextVersionMap())
	updated, removed = deltaNames(r)
	return updated, removed, true
}

func (s *edsDeltaClient) base() *heldBase { return s.c.bases.of(s.sub.ReturnedResources()) }

// The proxies of a group hold one shared base, each in a map of its own;
// one of them unsubscribing and subscribing again is sent the assignment
// again, while the others are unaffected.
func TestDeltaStreamsShareWhatTheyHold(t *testing.T) {
	c := newAssignmentCache("p-")
	all := map[string]string{"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3"}
	if _, err := c.update(checkedCLAs(t, all), time.Time{}); err != nil {
		t.Fatal(err)
	}
	var streams []*edsDeltaClient
	for range 3 {
		s := newEDSDeltaClient(t, c, "a", "b", "c")
		if up, _, ok := s.receive(); !ok || !slices.Equal(up, []string{"a", "b", "c"}) {
			t.Fatalf("first response %v, want [a b c]", up)
		}
		streams = append(streams, s)
	}
	for _, s := range streams {
		if s.base() == nil || s.base() != streams[0].base() {
			t.Fatal("proxies holding the same assignments do not share one base")
		}
		if n := len(s.sub.ReturnedResources()); n > 2 {
			t.Errorf("a stream's own map has %d entries; what it holds is in the base", n)
		}
		s.request(nil, nil)
	}
	// A change reaches all three, and they share the next base too.
	all["b"] = "10.0.0.22"
	if _, err := c.update(checkedCLAs(t, all), time.Time{}); err != nil {
		t.Fatal(err)
	}
	for _, s := range streams {
		if up, _, ok := s.receive(); !ok || !slices.Equal(up, []string{"b"}) {
			t.Fatalf("after b changed: %v, want [b]", up)
		}
		if s.base() != streams[0].base() {
			t.Error("after one change the proxies hold different bases")
		}
		if v, _ := s.c.bases.view(s.sub.ReturnedResources()).get("b"); v != c.items["b"].hash {
			t.Errorf("the base says b is at %q, want %q", v, c.items["b"].hash)
		}
		s.request(nil, nil)
	}
	// The first proxy drops b, then wants it back: it must be sent b,
	// although the base it shares says b is held.
	s0 := streams[0]
	s0.request(nil, []string{"b"})
	if up, rm, ok := s0.receive(); ok {
		t.Fatalf("unsubscribing was answered: %v removed %v", up, rm)
	}
	s0.request([]string{"b"}, nil)
	if up, _, ok := s0.receive(); !ok || !slices.Equal(up, []string{"b"}) {
		t.Fatalf("subscribing to b again: got %v, want [b]", up)
	}
	// The others still hold b: their ACKs are not answered.
	for _, s := range streams[1:] {
		if up, rm, ok := s.receive(); ok {
			t.Errorf("another proxy was sent %v removed %v", up, rm)
		}
	}
}

// A client that reconnects claiming, in initial_resource_versions, a base
// entry with the right bytes is not taken to hold the base: only the
// anchor minimesh put in the map names one.
func TestDeltaBaseCannotBeClaimed(t *testing.T) {
	c := newAssignmentCache("p-")
	if _, err := c.update(checkedCLAs(t, map[string]string{"a": "10.0.0.1"}), time.Time{}); err != nil {
		t.Fatal(err)
	}
	s := newEDSDeltaClient(t, c, "a")
	if _, _, ok := s.receive(); !ok {
		t.Fatal("no first response")
	}
	anchor := s.sub.ReturnedResources()[heldBaseKey]
	claim := map[string]string{heldBaseKey: strings.Clone(anchor)}
	sub := streamv3.NewDeltaSubscription([]string{"a"}, nil, claim, false)
	out := make(chan cachev3.DeltaResponse, 1)
	if _, err := c.CreateDeltaWatch(&cachev3.DeltaRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: []string{"a"}, InitialResourceVersions: claim}, sub, out); err != nil {
		t.Fatal(err)
	}
	r, ok := got(out)
	if !ok {
		t.Fatal("a client claiming a base it was never sent was sent nothing")
	}
	if up, _ := deltaNames(r); !slices.Equal(up, []string{"a"}) {
		t.Errorf("got %v, want [a]", up)
	}
}

// Bases live as long as some stream's map names them, and the registry
// forgets them after that, without waiting for the next version to drop
// the transitions that led to them.
func TestDeltaBasesAreCollected(t *testing.T) {
	c := newAssignmentCache("p-")
	if _, err := c.update(checkedCLAs(t, map[string]string{"a": "10.0.0.1", "b": "10.0.0.2"}), time.Time{}); err != nil {
		t.Fatal(err)
	}
	s := newEDSDeltaClient(t, c, "a", "b")
	if _, _, ok := s.receive(); !ok {
		t.Fatal("no first response")
	}
	runtime.GC()
	if c.bases.count() == 0 || s.base() == nil {
		t.Fatal("the base of a live stream's map was collected")
	}
	s = nil
	if n := collectedDownTo(c.bases.count, 0); n != 0 {
		t.Errorf("%d bases are still registered after every stream naming them is gone", n)
	}
	runtime.KeepAlive(c) // the cache, and its transitions, must not go first
}

// codecDeltaClient is a delta EDS stream whose requests go through the
// request codec, so that go-control-plane's subscription holds stand-ins
// as it does in meshd.
type codecDeltaClient struct {
	*edsDeltaClient
	codec requestCodec
	first bool
}

func newCodecDeltaClient(t *testing.T, e *endpointCache, names ...string) *codecDeltaClient {
	cl := &codecDeltaClient{edsDeltaClient: &edsDeltaClient{t: t, c: e.flavor("envoy")}, codec: newRequestCodec(e.lists), first: true}
	cl.send(names, nil)
	return cl
}

// send encodes a request, decodes it with the codec and hands it to the
// cache as go-control-plane's delta server does.
func (cl *codecDeltaClient) send(subscribe, unsubscribe []string) {
	cl.t.Helper()
	m := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: subscribe, ResourceNamesUnsubscribe: unsubscribe}
	if !cl.first {
		m.ResponseNonce = "n"
	}
	wire, err := proto.Marshal(m)
	if err != nil {
		cl.t.Fatal(err)
	}
	req := &discoveryv3.DeltaDiscoveryRequest{}
	if err := cl.codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, req); err != nil {
		cl.t.Fatal(err)
	}
	if cl.first {
		cl.sub = streamv3.NewDeltaSubscription(req.ResourceNamesSubscribe, req.ResourceNamesUnsubscribe, nil, false)
		cl.first = false
	} else {
		cl.sub.UpdateResourceSubscriptions(req.ResourceNamesSubscribe, req.ResourceNamesUnsubscribe)
	}
	cl.watch(req)
}

// Delta sidecars subscribing to the same list share its set; one that
// unsubscribes or subscribes to more gets a set of its own, and the
// others are unaffected.
func TestDeltaStandInSubscriptions(t *testing.T) {
	e := newEndpointCache()
	c := e.flavor("envoy")
	all := map[string]string{"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3", "d": "10.0.0.4"}
	update := func(name, ip string) {
		t.Helper()
		all[name] = ip
		if _, err := c.update(checkedCLAs(t, all), time.Time{}); err != nil {
			t.Fatal(err)
		}
		e.refreshNames()
	}
	update("a", "10.0.0.1")
	var clients []*codecDeltaClient
	for range 3 {
		cl := newCodecDeltaClient(t, e, "a", "b", "c")
		if up, _, ok := cl.receive(); !ok || !slices.Equal(up, []string{"a", "b", "c"}) {
			t.Fatalf("first response %v, want [a b c]", up)
		}
		if n := len(cl.sub.SubscribedResources()); n != 1 {
			t.Fatalf("go-control-plane's subscription holds %d names, want the stand-in alone", n)
		}
		clients = append(clients, cl)
	}
	// Client 0 drops b; client 1 adds d; client 2 only ACKs.
	clients[0].send(nil, []string{"b"})
	clients[1].send([]string{"d"}, nil)
	clients[2].send(nil, nil)
	if up, _, ok := clients[1].receive(); !ok || !slices.Equal(up, []string{"d"}) {
		t.Fatalf("subscribing to d: got %v, want [d]", up)
	}
	clients[1].send(nil, nil)
	for i, cl := range clients {
		if up, rm, ok := cl.receive(); ok {
			t.Errorf("client %d was sent %v removed %v with nothing due", i, up, rm)
		}
	}
	if got := slices.Sorted(maps.Keys(clients[0].sub.SubscribedResources())); !slices.Equal(got, []string{"a", "c"}) {
		t.Errorf("client 0 subscribes to %v, want [a c]", got)
	}
	if got := slices.Sorted(maps.Keys(clients[1].sub.SubscribedResources())); !slices.Equal(got, []string{"a", "b", "c", "d"}) {
		t.Errorf("client 1 subscribes to %v, want [a b c d]", got)
	}
	// Changes reach exactly their subscribers.
	for _, change := range []struct {
		name string
		want [][]string
	}{{"b", [][]string{nil, {"b"}, {"b"}}}, {"d", [][]string{nil, {"d"}, nil}}} {
		update(change.name, "10.0.1.1")
		for i, cl := range clients {
			up, _, ok := cl.receive()
			if !slices.Equal(up, change.want[i]) {
				t.Errorf("after %s changed, client %d got %v, want %v", change.name, i, up, change.want[i])
			}
			if ok {
				cl.send(nil, nil)
			}
		}
	}
	// Client 0 wants b back.
	clients[0].send([]string{"b"}, nil)
	if up, _, ok := clients[0].receive(); !ok || !slices.Equal(up, []string{"b"}) {
		t.Errorf("subscribing to b again: got %v, want [b]", up)
	}
}

// A stand-in whose list meshd does not know (which a stream holding it
// cannot see happen) ends the stream, so that its client reconnects,
// rather than subscribe it to nothing.
func TestDeltaForgottenStandIn(t *testing.T) {
	e := newEndpointCache()
	c := e.flavor("envoy")
	if _, err := c.update(checkedCLAs(t, map[string]string{"a": "10.0.0.1"}), time.Time{}); err != nil {
		t.Fatal(err)
	}
	cl := newCodecDeltaClient(t, e, "a")
	if _, _, ok := cl.receive(); !ok {
		t.Fatal("no first response")
	}
	forgetTokens(e.lists)
	req := &cachev3.DeltaRequest{TypeUrl: resourcev3.EndpointType, ResponseNonce: "n"}
	if _, err := c.CreateDeltaWatch(req, cl.sub, make(chan cachev3.DeltaResponse, 1)); err == nil {
		t.Error("a forgotten stand-in was accepted")
	}
}

// collectedDownTo runs the garbage collector until count (a registry's)
// is down to want or 10 s have passed, and returns the count: cleanups
// run some time after a collection.
func collectedDownTo(count func() int, want int) int {
	deadline := time.Now().Add(10 * time.Second)
	for count() > want && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	return count()
}
