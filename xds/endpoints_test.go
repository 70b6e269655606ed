package xds

import (
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"
	"weak"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// checkedCLAs builds what checkAssignments would hand the cache: one
// assignment per name, with the given endpoint address.
func checkedCLAs(t *testing.T, byName map[string]string) map[string]checkedAssignment {
	t.Helper()
	out := map[string]checkedAssignment{}
	for name, ip := range byName {
		res := cla(name, ip)
		enc, err := cachev3.MarshalResource(res)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = checkedAssignment{res: res, version: cachev3.HashResource(enc)}
	}
	return out
}

// sotwWatch opens a state-of-the-world EDS watch the way go-control-plane's
// server does: version is what the request says the client holds, known
// what this stream was sent (its subscription's returned resources).
func sotwWatch(t *testing.T, c *assignmentCache, version string, names []string, known map[string]string) chan cachev3.Response {
	t.Helper()
	sub := streamv3.NewSotwSubscription(names, false)
	sub.SetReturnedResources(known)
	out := make(chan cachev3.Response, 1)
	req := &cachev3.Request{TypeUrl: resourcev3.EndpointType, VersionInfo: version, ResourceNames: names}
	if _, err := c.CreateWatch(req, sub, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func deltaWatch(t *testing.T, c *assignmentCache, names []string, initial map[string]string) chan cachev3.DeltaResponse {
	t.Helper()
	sub := streamv3.NewDeltaSubscription(names, nil, initial, false)
	out := make(chan cachev3.DeltaResponse, 1)
	req := &cachev3.DeltaRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: names, InitialResourceVersions: initial}
	if _, err := c.CreateDeltaWatch(req, sub, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// got returns the response on out, or nil when none is there.
func got[T any](out chan T) (T, bool) {
	select {
	case r := <-out:
		return r, true
	case <-time.After(20 * time.Millisecond):
		var zero T
		return zero, false
	}
}

// responseNames decodes the resources of a SOTW response into new() and
// returns their names.
func responseNames[M proto.Message](t *testing.T, r cachev3.Response, newM func() M, name func(M) string) []string {
	t.Helper()
	dr, err := r.GetDiscoveryResponse()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range dr.GetResources() {
		m := newM()
		if err := a.UnmarshalTo(m); err != nil {
			t.Fatal(err)
		}
		names = append(names, name(m))
	}
	return names
}

func sotwNames(t *testing.T, r cachev3.Response) []string {
	t.Helper()
	return responseNames(t, r, func() *endpointv3.ClusterLoadAssignment { return &endpointv3.ClusterLoadAssignment{} },
		(*endpointv3.ClusterLoadAssignment).GetClusterName)
}

func deltaNames(r cachev3.DeltaResponse) (updated, removed []string) {
	dr, _ := r.GetDeltaDiscoveryResponse()
	for _, res := range dr.GetResources() {
		updated = append(updated, res.GetName())
	}
	return updated, dr.GetRemovedResources()
}

func TestAssignmentCacheSotwSendsOnlyChangedAssignments(t *testing.T) {
	c := newAssignmentCache("p-")
	if _, err := c.update(checkedCLAs(t, map[string]string{"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3"}), time.Time{}); err != nil {
		t.Fatal(err)
	}

	// A new proxy subscribing to a and b gets both.
	out := sotwWatch(t, c, "", []string{"a", "b"}, nil)
	r, ok := got(out)
	if !ok {
		t.Fatal("no response to a proxy that holds nothing")
	}
	if names := sotwNames(t, r); !slices.Equal(names, []string{"a", "b"}) {
		t.Fatalf("first response carries %v, want [a b]", names)
	}
	v1, held := r.GetResponseVersion(), r.GetReturnedResources()

	// A change elsewhere while the proxy has no watch open: its next
	// request, still at v1, gets nothing.
	if _, err := c.update(checkedCLAs(t, map[string]string{"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.31"}), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if r, ok := got(sotwWatch(t, c, v1, []string{"a", "b"}, held)); ok {
		t.Fatalf("a proxy holding current a and b was sent %v after a change to c", sotwNames(t, r))
	}
	// Its ACK opens a watch that waits: nothing changed.
	out = sotwWatch(t, c, v1, []string{"a", "b"}, held)
	if _, ok := got(out); ok {
		t.Fatal("a proxy holding every assignment it subscribes to was sent a response")
	}
	// A change to an assignment it does not use reaches nobody.
	if _, err := c.update(checkedCLAs(t, map[string]string{"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.33"}), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, ok := got(out); ok {
		t.Fatal("a change to c reached a proxy subscribed to a and b")
	}
	// A change to b sends b alone; the returned map is the same one.
	if _, err := c.update(checkedCLAs(t, map[string]string{"a": "10.0.0.1", "b": "10.0.0.22", "c": "10.0.0.33"}), time.Time{}); err != nil {
		t.Fatal(err)
	}
	r, ok = got(out)
	if !ok {
		t.Fatal("the change to b did not reach the proxy")
	}
	if names := sotwNames(t, r); !slices.Equal(names, []string{"b"}) {
		t.Errorf("the change carries %v, want only [b]", names)
	}
	if b := c.bases.of(r.GetReturnedResources()); b == nil || b != c.bases.of(held) {
		t.Errorf("a change to a held assignment names held set %v, want the same as before, %v", b, c.bases.of(held))
	}

	// NACKed: guardNack presents the rejected version; nothing is re-sent.
	if _, ok := got(sotwWatch(t, c, r.GetResponseVersion(), []string{"a", "b"}, r.GetReturnedResources())); ok {
		t.Error("the version the proxy rejected was sent again")
	}
	// Subscribing to c as well sends c, and only c.
	r, ok = got(sotwWatch(t, c, r.GetResponseVersion(), []string{"a", "b", "c"}, r.GetReturnedResources()))
	if !ok || !slices.Equal(sotwNames(t, r), []string{"c"}) {
		t.Errorf("a new subscription to c: got %v (%v), want [c]", r, ok)
	}
	// A proxy resuming with a version from another meshd process holds
	// who knows what: it gets all it subscribes to.
	r, ok = got(sotwWatch(t, c, "other-7", []string{"a", "b"}, nil))
	if !ok || !slices.Equal(sotwNames(t, r), []string{"a", "b"}) {
		t.Errorf("a proxy resuming from another process: got %v, want [a b]", r)
	}
}

func TestAssignmentCacheSotwProxiesShareHeldSets(t *testing.T) {
	c := newAssignmentCache("p-")
	if _, err := c.update(checkedCLAs(t, map[string]string{"a": "10.0.0.1", "b": "10.0.0.2"}), time.Time{}); err != nil {
		t.Fatal(err)
	}
	r1, _ := got(sotwWatch(t, c, "", []string{"a", "b"}, nil))
	r2, _ := got(sotwWatch(t, c, "", []string{"b", "a"}, nil))
	if r1 == nil || r2 == nil {
		t.Fatal("no responses")
	}
	if r1.GetResponseVersion() != r2.GetResponseVersion() {
		t.Errorf("two proxies holding the same assignments were sent versions %q and %q", r1.GetResponseVersion(), r2.GetResponseVersion())
	}
	m1, m2 := r1.GetReturnedResources(), r2.GetReturnedResources()
	if held := c.heldOf(m1); !slices.Equal(slices.Sorted(maps.Keys(held)), []string{"a", "b"}) {
		t.Errorf("the stream's held set is %v, want a and b", held)
	}
	if mapPointer(c.heldOf(m1)) != mapPointer(c.heldOf(m2)) {
		t.Error("two proxies holding the same assignments do not share one held set")
	}
	// go-control-plane writes to a stream's returned map: each stream
	// has one of its own, naming the shared set.
	if mapPointer(m1) == mapPointer(m2) || len(m1) != 1 {
		t.Errorf("returned maps %v and %v: want one entry each, not shared", m1, m2)
	}
}

func TestAssignmentCacheWaitsForTheFirstUpdate(t *testing.T) {
	c := newAssignmentCache("p-")
	a := checkedCLAs(t, map[string]string{"a": "10.0.0.1", "b": "10.0.0.2"})
	// A delta proxy resuming after a meshd restart names what it holds.
	held := map[string]string{"a": a["a"].version, "b": a["b"].version}
	out := deltaWatch(t, c, []string{"a", "b"}, held)
	sotw := sotwWatch(t, c, "old-3", []string{"a"}, nil)
	if _, ok := got(out); ok {
		t.Fatal("an empty cache answered a delta proxy (it would have removed its assignments)")
	}
	if _, ok := got(sotw); ok {
		t.Fatal("an empty cache answered a SOTW proxy")
	}
	if _, err := c.update(a, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if r, ok := got(out); ok {
		up, rm := deltaNames(r)
		t.Errorf("a delta proxy holding the current assignments was sent %v, removed %v", up, rm)
	}
	r, ok := got(sotw)
	if !ok || !slices.Equal(sotwNames(t, r), []string{"a"}) {
		t.Errorf("the SOTW proxy got %v, want [a] once the cache is filled", r)
	}
}

func TestAssignmentCacheDelta(t *testing.T) {
	c := newAssignmentCache("p-")
	if _, err := c.update(checkedCLAs(t, map[string]string{"a": "10.0.0.1", "b": "10.0.0.2"}), time.Time{}); err != nil {
		t.Fatal(err)
	}
	r, ok := got(deltaWatch(t, c, []string{"a", "b"}, nil))
	if !ok {
		t.Fatal("no first response")
	}
	if up, _ := deltaNames(r); !slices.Equal(up, []string{"a", "b"}) {
		t.Fatalf("first delta response %v, want [a b]", up)
	}
	held := r.GetReturnedResources()
	// A second proxy in the same state has a map of its own:
	// go-control-plane writes to it when the proxy unsubscribes.
	r2, _ := got(deltaWatch(t, c, []string{"a", "b"}, nil))
	if mapPointer(r2.GetReturnedResources()) == mapPointer(held) {
		t.Error("two delta streams were handed one returned map")
	}

	sub := streamv3.NewDeltaSubscription([]string{"a", "b"}, nil, nil, false)
	sub.SetReturnedResources(held)
	out := make(chan cachev3.DeltaResponse, 1)
	if _, err := c.CreateDeltaWatch(&cachev3.DeltaRequest{TypeUrl: resourcev3.EndpointType, ResponseNonce: "1"}, sub, out); err != nil {
		t.Fatal(err)
	}
	if _, ok := got(out); ok {
		t.Fatal("a proxy holding every current version was sent a response")
	}
	// b is gone from the mesh and no cluster uses it: it is removed.
	gone, err := c.update(checkedCLAs(t, map[string]string{"a": "10.0.0.1"}), time.Time{})
	if err != nil || !slices.Equal(gone, []string{"b"}) {
		t.Fatalf("update returned %v, %v; want b gone", gone, err)
	}
	if _, ok := got(out); ok {
		t.Fatal("b was withdrawn before the caller removed it")
	}
	c.remove(gone)
	r, ok = got(out)
	if !ok {
		t.Fatal("the removal did not reach the delta proxy")
	}
	if up, rm := deltaNames(r); len(up) != 0 || !slices.Equal(rm, []string{"b"}) {
		t.Errorf("removal response: updated %v removed %v, want removed [b]", up, rm)
	}
	if _, ok := c.bases.view(r.GetReturnedResources()).get("b"); ok {
		t.Error("the returned map still says the proxy holds b")
	}
}

func TestAssignmentCacheVersionsAndConvergence(t *testing.T) {
	c := newAssignmentCache("p-")
	e := &endpointCache{prefix: "p-"}
	t0 := time.Now()
	if _, err := c.update(checkedCLAs(t, map[string]string{"a": "10.0.0.1", "b": "10.0.0.2"}), time.Time{}); err != nil {
		t.Fatal(err)
	}
	vAB, ok := c.required([]string{"a", "b"})
	if !ok || vAB != "p-1" {
		t.Fatalf("required = %q, %v; want p-1", vAB, ok)
	}
	if _, ok := c.required([]string{"a", "zz"}); ok {
		t.Error("required reports an unpublished assignment as published")
	}
	changedAt := t0.Add(time.Second)
	if _, err := c.update(checkedCLAs(t, map[string]string{"a": "10.0.0.1", "b": "10.0.0.9"}), changedAt); err != nil {
		t.Fatal(err)
	}
	if v, _ := c.required([]string{"a"}); v != "p-1" {
		t.Errorf("a did not change, yet it requires %s", v)
	}
	vB, _ := c.required([]string{"a", "b"})
	if vB != "p-2" {
		t.Errorf("required after b changed = %s, want p-2", vB)
	}
	for _, tt := range []struct {
		acked, required string
		want            bool
	}{
		{"p-2", "p-2", true}, {"p-3", "p-2", true}, {"p-1", "p-2", false}, {"q-9", "p-2", false}, {"", "p-1", false},
	} {
		if got := e.holds(tt.acked, tt.required); got != tt.want {
			t.Errorf("holds(%q, %q) = %v, want %v", tt.acked, tt.required, got, tt.want)
		}
	}
	// The ACK of p-2 completes the change to b for a proxy using b,
	// not for one using a only, and not twice.
	if at, ok := c.converged([]string{"a", "b"}, "p-2", "p-1", t0); !ok || !at.Equal(changedAt) {
		t.Errorf("converged = %v, %v; want the change at %v", at, ok, changedAt)
	}
	if _, ok := c.converged([]string{"a"}, "p-2", "p-1", t0); ok {
		t.Error("a proxy not using b converged on b's change")
	}
	if _, ok := c.converged([]string{"b"}, "p-2", "p-2", t0); ok {
		t.Error("the same change was measured twice")
	}
	if _, ok := c.converged([]string{"b"}, "p-2", "", changedAt.Add(time.Second)); ok {
		t.Error("a change older than the stream was measured")
	}
}

// touches looks up whichever side is smaller; both ways must agree.
func TestTouches(t *testing.T) {
	set := func(names ...string) map[string]bool {
		m := map[string]bool{}
		for _, n := range names {
			m[n] = true
		}
		return m
	}
	for _, tt := range []struct {
		name    string
		changed map[string]bool
		names   []string
		want    bool
	}{
		{"one change among many names, used", set("m"), []string{"a", "b", "m", "z"}, true},
		{"one change among many names, first", set("a"), []string{"a", "b", "m", "z"}, true},
		{"one change among many names, last", set("z"), []string{"a", "b", "m", "z"}, true},
		{"one change among many names, unused", set("n"), []string{"a", "b", "m", "z"}, false},
		{"many changes, few names, used", set("a", "b", "c", "d"), []string{"c"}, true},
		{"many changes, few names, unused", set("a", "b", "c", "d"), []string{"e"}, false},
		{"equal sizes, used", set("a", "b"), []string{"b", "c"}, true},
		{"equal sizes, unused", set("a", "b"), []string{"c", "d"}, false},
		{"removal only (no changed names)", set(), []string{"a"}, false},
		{"group with no assignments", set("a"), nil, false},
	} {
		if got := touches(tt.changed, tt.names); got != tt.want {
			t.Errorf("%s: touches(%v, %v) = %v, want %v", tt.name, slices.Sorted(maps.Keys(tt.changed)), tt.names, got, tt.want)
		}
	}
}

func TestAssignmentCacheKeepsLastValidAssignment(t *testing.T) {
	c := newAssignmentCache("p-")
	good := checkedCLAs(t, map[string]string{"a": "10.0.0.1"})
	if _, err := c.update(good, time.Time{}); err != nil {
		t.Fatal(err)
	}
	bad := map[string]checkedAssignment{"a": {err: errTest("a is invalid")}}
	if _, err := c.update(bad, time.Time{}); err == nil {
		t.Fatal("an invalid assignment was accepted")
	}
	res := c.resources([]string{"a"})
	if len(res) != 1 || !proto.Equal(res["a"].Resource, good["a"].res) {
		t.Errorf("the last valid assignment was not kept: %v", res)
	}
	if err := c.invalidAmong([]string{"a"}); err == nil {
		t.Error("invalidAmong does not report the refused assignment")
	}
	if err := c.missing([]string{"a"}); err != nil {
		t.Errorf("a is still published, yet missing says %v", err)
	}
}

type errTest string

func (e errTest) Error() string { return string(e) }

// The endpoint cache interns the names proxies send.
// The codec hands out the cache's copy of every name it knows, in both
// kinds of request, so a thousand sidecars' requests hold no copies.
func TestRequestCodecInternsNames(t *testing.T) {
	e := newEndpointCache()
	const known = "outbound|80||a.ns.svc.cluster.local"
	if _, err := e.flavor("envoy").update(checkedCLAs(t, map[string]string{known: "10.0.0.1"}), time.Time{}); err != nil {
		t.Fatal(err)
	}
	e.refreshNames()
	var held string
	for n := range e.flavor("envoy").items {
		held = n
	}
	codec := newRequestCodec(e.lists)
	for _, m := range []proto.Message{
		&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResourceNames: []string{known, "unknown"}},
		&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResourceNamesSubscribe: []string{known, "unknown"}},
	} {
		wire, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got := m.ProtoReflect().New().Interface()
		if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, got); err != nil {
			t.Fatal(err)
		}
		var names []string
		switch r := got.(type) {
		case *discoveryv3.DiscoveryRequest:
			names = r.ResourceNames
		case *discoveryv3.DeltaDiscoveryRequest:
			names = r.ResourceNamesSubscribe
		}
		if len(names) != 2 || unsafeData(names[0]) != unsafeData(held) {
			t.Errorf("%T: a known name was not the cache's copy: %q", got, names)
		}
		if len(names) == 2 && names[1] != "unknown" {
			t.Errorf("%T: an unknown name was changed: %q", got, names)
		}
	}
}

// What the cache remembers about an ACK that names exactly what its
// stream holds keeps neither the request's list nor the held set alive.
func TestAssignmentCacheRemembersAcksWeakly(t *testing.T) {
	c := newAssignmentCache("p-")
	if _, err := c.update(checkedCLAs(t, map[string]string{"a": "10.0.0.1", "b": "10.0.0.2"}), time.Time{}); err != nil {
		t.Fatal(err)
	}
	names := []string{"a", "b"}
	list := weak.Make(&names[0])
	func() {
		r, _ := got(sotwWatch(t, c, "", names, nil))
		sub := streamv3.NewSotwSubscription(names, false)
		sub.SetReturnedResources(r.GetReturnedResources())
		out := make(chan cachev3.Response, 1)
		ack := &cachev3.Request{TypeUrl: resourcev3.EndpointType, VersionInfo: r.GetResponseVersion(), ResourceNames: names}
		cancel, err := c.CreateWatch(ack, sub, out)
		if err != nil {
			t.Fatal(err)
		}
		if r, ok := got(out); ok {
			t.Fatalf("the ACK was answered with %v", sotwNames(t, r))
		}
		cancel() // the stream goes
	}()
	if len(c.exact) != 1 {
		t.Fatalf("the cache remembers %d list/set pairs, want 1", len(c.exact))
	}
	names = nil
	if n := collectedDownTo(c.bases.count, 0); n != 0 {
		t.Errorf("%d held sets are still registered after the stream went", n)
	}
	collectedDownTo(func() int {
		if list.Value() != nil {
			return 1
		}
		return 0
	}, 0)
	if list.Value() != nil {
		t.Error("the request's list is still alive after the stream went")
	}
	runtime.KeepAlive(c) // the cache, and what it remembers, must not go first
}

func unsafeData(s string) *byte { return unsafe.StringData(s) }

func TestAssignmentCacheSotwAckOfSameNames(t *testing.T) {
	c := newAssignmentCache("p-")
	if _, err := c.update(checkedCLAs(t, map[string]string{"a": "10.0.0.1", "b": "10.0.0.2"}), time.Time{}); err != nil {
		t.Fatal(err)
	}
	// requestCodec hands every request naming a and b the same list.
	names := []string{"a", "b"}
	r, ok := got(sotwWatch(t, c, "", names, nil))
	if !ok {
		t.Fatal("no first response")
	}
	v, held := r.GetResponseVersion(), r.GetReturnedResources()
	for i := range 2 { // the first ACK is checked name by name, the second remembered
		if r, ok := got(sotwWatch(t, c, v, names, held)); ok {
			t.Fatalf("ACK %d of the current version was answered with %v", i+1, sotwNames(t, r))
		}
	}
	if len(c.exact) != 1 {
		t.Errorf("the cache remembers %d list/map pairs, want 1", len(c.exact))
	}
	// A change still reaches a watch opened by a remembered ACK.
	out := sotwWatch(t, c, v, names, held)
	if _, err := c.update(checkedCLAs(t, map[string]string{"a": "10.0.0.1", "b": "10.0.0.22"}), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if r, ok := got(out); !ok || !slices.Equal(sotwNames(t, r), []string{"b"}) {
		t.Fatalf("the change to b: got %v, want [b]", r)
	}
	r, _ = got(sotwWatch(t, c, "", names, nil))
	v, held = r.GetResponseVersion(), r.GetReturnedResources()
	if _, ok := got(sotwWatch(t, c, v, names, held)); ok {
		t.Fatal("an ACK of the current version was answered")
	}
	other, _ := got(sotwWatch(t, c, "", names, nil))
	otherHeld := other.GetReturnedResources()
	// A stream that drops b (its cluster went) holds only a from then
	// on, in its own map; there is nothing to send it.
	if r, ok := got(sotwWatch(t, c, v, []string{"a"}, held)); ok {
		t.Fatalf("dropping b was answered with %v", sotwNames(t, r))
	}
	if h := c.heldOf(held); !slices.Equal(slices.Sorted(maps.Keys(h)), []string{"a"}) {
		t.Fatalf("after dropping b the stream holds %v, want [a]", h)
	}
	// Subscribing to b again sends it again, though the request still
	// names the version that had it.
	if r, ok := got(sotwWatch(t, c, v, names, held)); !ok || !slices.Equal(sotwNames(t, r), []string{"b"}) {
		t.Fatalf("subscribing to b again: got %v, want [b]", r)
	}
	// Another stream holding a and b is not affected.
	if r, ok := got(sotwWatch(t, c, v, names, otherHeld)); ok {
		t.Fatalf("another stream's drop changed what this one holds: sent %v", sotwNames(t, r))
	}
	// A stream that reconnects names its last version but holds, for
	// all meshd knows, nothing: it is sent everything.
	if r, ok := got(sotwWatch(t, c, v, names, nil)); !ok || !slices.Equal(sotwNames(t, r), []string{"a", "b"}) {
		t.Fatalf("a new stream at version %s: got %v, want [a b]", v, r)
	}
}

// deltaAck opens a delta watch as go-control-plane does for a request of a
// stream that was last sent held, subscribing to subscribe more names.
func deltaAck(t *testing.T, c *assignmentCache, names []string, held map[string]string, subscribe ...string) chan cachev3.DeltaResponse {
	t.Helper()
	sub := streamv3.NewDeltaSubscription(names, nil, nil, false)
	sub.SetReturnedResources(held)
	sub.UpdateResourceSubscriptions(subscribe, nil)
	out := make(chan cachev3.DeltaResponse, 1)
	req := &cachev3.DeltaRequest{TypeUrl: resourcev3.EndpointType, ResponseNonce: "1", ResourceNamesSubscribe: subscribe}
	if _, err := c.CreateDeltaWatch(req, sub, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAssignmentCacheDeltaLooksOnlyAtChangesSinceItsLastResponse(t *testing.T) {
	c := newAssignmentCache("p-")
	all := map[string]string{"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3"}
	set := func(name, ip string) {
		t.Helper()
		all[name] = ip
		if _, err := c.update(checkedCLAs(t, all), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	set("a", "10.0.0.1")
	r, ok := got(deltaWatch(t, c, []string{"a", "b"}, nil))
	if !ok {
		t.Fatal("no first response")
	}
	held := r.GetReturnedResources()
	if held[deltaSynced] == "" {
		t.Fatal("the returned map does not say up to which version it is complete")
	}
	// Changed while the stream had no watch open: its ACK finds b in
	// the history.
	set("b", "10.0.0.22")
	r, ok = got(deltaAck(t, c, []string{"a", "b"}, held))
	if up, _ := deltaNames(r); !ok || !slices.Equal(up, []string{"b"}) {
		t.Fatalf("the ACK after a change to b: got %v, want [b]", up)
	}
	held = r.GetReturnedResources()
	// A request subscribing to c gets c, though c did not change.
	r, ok = got(deltaAck(t, c, []string{"a", "b"}, held, "c"))
	if up, _ := deltaNames(r); !ok || !slices.Equal(up, []string{"c"}) {
		t.Fatalf("subscribing to c: got %v, want [c]", up)
	}
	held = r.GetReturnedResources()
	// More changes than the history keeps, the first of them to a: the
	// history no longer reaches back, so everything is compared.
	set("a", "10.0.0.11")
	for i := range edsHistory + 2 {
		set("c", fmt.Sprintf("10.0.1.%d", i))
	}
	r, ok = got(deltaAck(t, c, []string{"a", "b", "c"}, held))
	if up, _ := deltaNames(r); !ok || !slices.Equal(up, []string{"a", "c"}) {
		t.Fatalf("after the history ran out: got %v, want [a c]", up)
	}
	// Nothing changed since: an ACK is not answered.
	if r, ok := got(deltaAck(t, c, []string{"a", "b", "c"}, r.GetReturnedResources())); ok {
		t.Fatalf("an ACK with nothing due was answered with %v", r)
	}
}

// TestAssignmentCacheReadsStandIns: requestCodec shows go-control-plane an
// explicit wildcard and a token instead of an endpoint request's names;
// the cache must serve the names the token stands for, not everything.
func TestAssignmentCacheReadsStandIns(t *testing.T) {
	e := newEndpointCache()
	c := e.flavor("envoy")
	if _, err := c.update(checkedCLAs(t, map[string]string{"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3"}), time.Time{}); err != nil {
		t.Fatal(err)
	}
	e.refreshNames()
	codec := newRequestCodec(e.lists)
	wire, err := proto.Marshal(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{"b", "a"}})
	if err != nil {
		t.Fatal(err)
	}
	req, err := decodeRaw(codec, wire)
	if err != nil {
		t.Fatal(err)
	}
	// As go-control-plane's server makes the subscription.
	sub := streamv3.NewSotwSubscription(req.ResourceNames, true)
	if !sub.IsWildcard() || len(sub.SubscribedResources()) > 1 {
		t.Fatalf("go-control-plane's subscription: wildcard %v, %d names; the stand-in should be a wildcard and a token", sub.IsWildcard(), len(sub.SubscribedResources()))
	}
	out := make(chan cachev3.Response, 1)
	if _, err := c.CreateWatch(req, sub, out); err != nil {
		t.Fatal(err)
	}
	r, ok := got(out)
	if !ok || !slices.Equal(sotwNames(t, r), []string{"a", "b"}) {
		t.Fatalf("a stand-in for [b a] was answered with %v, want [a b]", r)
	}
	// Its ACK, with the same stand-in, waits. (go-control-plane keeps
	// the returned map of the response it sent.)
	sub.SetReturnedResources(r.GetReturnedResources())
	ack := &cachev3.Request{TypeUrl: resourcev3.EndpointType, VersionInfo: r.GetResponseVersion(), ResourceNames: req.ResourceNames}
	out = make(chan cachev3.Response, 1)
	if _, err := c.CreateWatch(ack, sub, out); err != nil {
		t.Fatal(err)
	}
	if r, ok := got(out); ok {
		t.Fatalf("the ACK was answered with %v", sotwNames(t, r))
	}
	// A stand-in the lists forgot ends the stream rather than serve
	// everything.
	forgetTokens(e.lists)
	if _, err := c.CreateWatch(ack, sub, make(chan cachev3.Response, 1)); err == nil {
		t.Error("a forgotten stand-in was accepted")
	}
}

// A delta stream that subscribes to everything ("*") is sent every
// assignment it does not hold, not only what changed since its last
// response.
func TestAssignmentCacheDeltaWildcardSubscription(t *testing.T) {
	c := newAssignmentCache("p-")
	if _, err := c.update(checkedCLAs(t, map[string]string{"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3"}), time.Time{}); err != nil {
		t.Fatal(err)
	}
	r, ok := got(deltaWatch(t, c, []string{"a"}, nil))
	if up, _ := deltaNames(r); !ok || !slices.Equal(up, []string{"a"}) {
		t.Fatalf("first response %v, want [a]", up)
	}
	r, ok = got(deltaAck(t, c, []string{"a"}, r.GetReturnedResources(), "*"))
	if up, _ := deltaNames(r); !ok || !slices.Equal(up, []string{"b", "c"}) {
		t.Fatalf("subscribing to *: got %v, want [b c]", up)
	}
}

// heldOf returns the held set a state-of-the-world stream's map names.
func (c *assignmentCache) heldOf(m map[string]string) map[string]string {
	if b := c.bases.of(m); b != nil {
		return b.versions
	}
	return nil
}

// A held set lives while a stream's map names it, however many other
// sets come and go, and is collected once none does; a map naming no
// set, or one with the bytes of a set's name but not the name itself,
// holds nothing.
func TestHeldSetsLiveWhileNamed(t *testing.T) {
	c := newAssignmentCache("p-")
	func() { // the stream, and what it names, exist only here
		c.mu.Lock()
		mine := c.internHeld(map[string]string{"a": held})
		stream := map[string]string{heldBaseKey: mine.String()}
		for i := range 2 * maxExact {
			c.internHeld(map[string]string{fmt.Sprintf("x-%d", i): held})
		}
		c.mu.Unlock()
		runtime.GC()
		if c.heldOf(stream) == nil || mapPointer(c.heldOf(stream)) != mapPointer(mine.versions) {
			t.Fatal("a set a stream names was forgotten")
		}
		if c.heldOf(map[string]string{heldBaseKey: strings.Clone(mine.String())}) != nil {
			t.Error("a copy of a set's name was taken for the name")
		}
		if c.heldOf(map[string]string{heldBaseKey: "999999999"}) != nil {
			t.Error("an unknown set was found")
		}
	}()
	if n := collectedDownTo(c.bases.count, 0); n != 0 {
		t.Errorf("%d held sets are still registered after nothing names them", n)
	}
}
