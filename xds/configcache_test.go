package xds

import (
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/minimesh/minimesh/translate"
)

// publishedClusters builds a group snapshot of EDS clusters through the
// same gate and table meshd uses, ready for the config cache.
func publishedClusters(t *testing.T, table *resourceTable, names ...string) *published {
	t.Helper()
	snap, err := groupSnapshot(edsClusters(names...), table)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := publish(snap, table)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func cdsWatch(t *testing.T, c *configCache, node, version string, known map[string]string, nonce string) chan cachev3.Response {
	t.Helper()
	sub := streamv3.NewSotwSubscription(nil, true)
	sub.SetReturnedResources(known)
	out := make(chan cachev3.Response, 1)
	req := &cachev3.Request{TypeUrl: resourcev3.ClusterType, VersionInfo: version, ResponseNonce: nonce, Node: &corev3.Node{Id: node}}
	if _, err := c.CreateWatch(req, sub, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func clusterNames(t *testing.T, r cachev3.Response) []string {
	t.Helper()
	return responseNames(t, r, func() *clusterv3.Cluster { return &clusterv3.Cluster{} }, (*clusterv3.Cluster).GetName)
}

func TestPublishEncodesWhatTheSnapshotHolds(t *testing.T) {
	pub := publishedClusters(t, newResourceTable(), "b", "a")
	pt := pub.types[resourcev3.ClusterType]
	if got := []string{pt.sorted[0].name, pt.sorted[1].name}; !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("published order %v, want sorted", got)
	}
	for _, it := range pt.sorted {
		got := &clusterv3.Cluster{}
		if err := it.any.UnmarshalTo(got); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(edsCluster(it.name, ""), got, protocmp.Transform()); diff != "" {
			t.Errorf("cluster %s as sent differs from the translated one (-want +got):\n%s", it.name, diff)
		}
		if it.delta.GetVersion() != pub.snap.VersionMap[resourcev3.ClusterType][it.name] {
			t.Errorf("cluster %s: delta version %s, snapshot says %s", it.name, it.delta.GetVersion(), pub.snap.VersionMap[resourcev3.ClusterType][it.name])
		}
	}
	if _, ok := pub.types[resourcev3.EndpointType]; ok {
		t.Error("assignments were published with the group; the endpoint cache serves them")
	}
}

func TestConfigCacheStateOfTheWorld(t *testing.T) {
	table := newResourceTable()
	c := newConfigCache()
	// A proxy whose pod is not known yet waits.
	waiting := cdsWatch(t, c, "n1", "", nil, "")
	if _, ok := got(waiting); ok {
		t.Fatal("a proxy without a snapshot was answered")
	}
	v1 := publishedClusters(t, table, "a", "b")
	c.SetSnapshot("n1", v1)
	r, ok := got(waiting)
	if !ok || !slices.Equal(clusterNames(t, r), []string{"a", "b"}) {
		t.Fatalf("the waiting proxy got %v, want [a b]", r)
	}
	if r.GetReturnedResources() != nil {
		t.Error("a complete response returned a map: go-control-plane would write to a map every proxy of the group shares")
	}
	// The ACK waits; the same snapshot set again answers nothing.
	acked := cdsWatch(t, c, "n1", r.GetResponseVersion(), r.GetReturnedResources(), "1")
	c.SetSnapshot("n1", v1)
	if _, ok := got(acked); ok {
		t.Fatal("setting the same snapshot again answered the proxy")
	}
	// A new cluster: every cluster is sent (CDS is state of the world).
	v2 := publishedClusters(t, table, "a", "b", "c")
	c.SetSnapshot("n1", v2)
	r, ok = got(acked)
	if !ok || !slices.Equal(clusterNames(t, r), []string{"a", "b", "c"}) {
		t.Fatalf("after a new cluster the proxy got %v, want [a b c]", r)
	}
	// A NACK names the rejected version (guardNack): not sent again.
	if _, ok := got(cdsWatch(t, c, "n1", r.GetResponseVersion(), r.GetReturnedResources(), "2")); ok {
		t.Error("the rejected version was sent again")
	}
	// A proxy resuming after a meshd restart with the current version
	// waits for its snapshot, then is sent nothing.
	resumed := cdsWatch(t, c, "n2", v2.types[resourcev3.ClusterType].version, nil, "")
	c.SetSnapshot("n2", v2)
	if _, ok := got(resumed); ok {
		t.Error("a resumed proxy holding the current version was sent it again")
	}
	// Forgetting a node drops its snapshot.
	c.ClearSnapshot("n1")
	if c.served("n1") != nil {
		t.Error("ClearSnapshot kept the snapshot")
	}
}

func TestConfigCacheDelta(t *testing.T) {
	table := newResourceTable()
	c := newConfigCache()
	v1 := publishedClusters(t, table, "a", "b")
	c.SetSnapshot("n", v1)
	watch := func(known map[string]string, nonce string) chan cachev3.DeltaResponse {
		sub := streamv3.NewDeltaSubscription(nil, nil, known, true)
		out := make(chan cachev3.DeltaResponse, 1)
		req := &cachev3.DeltaRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: nonce, Node: &corev3.Node{Id: "n"}}
		if _, err := c.CreateDeltaWatch(req, sub, out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	r, ok := got(watch(nil, ""))
	if !ok {
		t.Fatal("no first response")
	}
	if up, _ := deltaNames(r); !slices.Equal(up, []string{"a", "b"}) {
		t.Fatalf("first delta response %v, want [a b]", up)
	}
	// A resumed proxy that holds both at their versions: an empty first
	// answer (Envoy waits for one on a wildcard subscription), no more.
	r, ok = got(watch(v1.snap.VersionMap[resourcev3.ClusterType], ""))
	if !ok {
		t.Fatal("a wildcard delta subscription's first request was not answered")
	}
	if up, rm := deltaNames(r); len(up)+len(rm) != 0 {
		t.Errorf("a proxy holding everything was sent %v, removed %v", up, rm)
	}
	held := r.GetReturnedResources()
	out := watch(held, "1")
	// b changes, a goes away, c comes: exactly that is sent.
	r2 := &translate.Resources{Clusters: []*clusterv3.Cluster{edsCluster("b", "svc-b"), edsCluster("c", "")},
		Endpoints: []*endpointv3.ClusterLoadAssignment{cla("svc-b", "10.0.0.1"), cla("c", "10.0.0.1")}}
	snap, err := groupSnapshot(r2, table)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := publish(snap, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.SetSnapshot("n", v2)
	r, ok = got(out)
	if !ok {
		t.Fatal("the change did not reach the delta proxy")
	}
	up, rm := deltaNames(r)
	if !slices.Equal(up, []string{"b", "c"}) || !slices.Equal(rm, []string{"a"}) {
		t.Errorf("delta change: updated %v removed %v, want [b c] and [a]", up, rm)
	}
	if diff := cmp.Diff(v2.snap.VersionMap[resourcev3.ClusterType], c.bases.view(r.GetReturnedResources()).flatten(0)); diff != "" {
		t.Errorf("what the returned map says the client holds differs from the snapshot's versions (-want +got):\n%s", diff)
	}
	// The map names the group's shared base and holds nothing else.
	if len(r.GetReturnedResources()) != 1 || c.bases.of(r.GetReturnedResources()) != v2.types[resourcev3.ClusterType].base {
		t.Errorf("returned map %q does not just name the type's shared base", r.GetReturnedResources())
	}
	// Another proxy of the group gets the same base in a map of its own.
	other, ok := got(watch(nil, ""))
	if !ok {
		t.Fatal("no first response to a second proxy")
	}
	if c.bases.of(other.GetReturnedResources()) != c.bases.of(r.GetReturnedResources()) {
		t.Error("two proxies holding the same version do not share its base")
	}
	if mapPointer(other.GetReturnedResources()) == mapPointer(r.GetReturnedResources()) {
		t.Error("two delta streams were handed one returned map")
	}
	// Holding exactly the current version, an ACK is not answered.
	if r, ok := got(watch(r.GetReturnedResources(), "2")); ok {
		t.Errorf("an ACK of the current version was answered: %v", r)
	}
}

// A wildcard delta client that unsubscribes a name it holds through the
// shared base is told again whether it exists, as go-control-plane does
// for a map of its own; the other proxies sharing the base are unaffected.
func TestConfigCacheDeltaUnsubscribeFromSharedBase(t *testing.T) {
	table := newResourceTable()
	c := newConfigCache()
	c.SetSnapshot("n", publishedClusters(t, table, "a", "b"))
	request := func(sub *streamv3.Subscription, nonce string, unsubscribe ...string) chan cachev3.DeltaResponse {
		t.Helper()
		sub.UpdateResourceSubscriptions(nil, unsubscribe) // as go-control-plane's server does first
		out := make(chan cachev3.DeltaResponse, 1)
		req := &cachev3.DeltaRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: nonce, ResourceNamesUnsubscribe: unsubscribe, Node: &corev3.Node{Id: "n"}}
		if _, err := c.CreateDeltaWatch(req, *sub, out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	var subs [2]streamv3.Subscription
	for i := range subs {
		subs[i] = streamv3.NewDeltaSubscription(nil, nil, nil, true)
		r, ok := got(request(&subs[i], ""))
		if !ok {
			t.Fatal("no first response")
		}
		subs[i].SetReturnedResources(r.GetReturnedResources())
	}
	r, ok := got(request(&subs[0], "1", "b"))
	if !ok {
		t.Fatal("unsubscribing b while subscribed to everything was not answered; b must be sent again")
	}
	if up, rm := deltaNames(r); !slices.Equal(up, []string{"b"}) || len(rm) != 0 {
		t.Fatalf("unsubscribing b while subscribed to everything: got %v removed %v, want b sent again", up, rm)
	}
	if r, ok := got(request(&subs[1], "1")); ok {
		t.Errorf("the other proxy's ACK was answered: %v", r)
	}
}

func TestPublishSharesItemsThroughTheTable(t *testing.T) {
	table := newResourceTable()
	table.nextGeneration()
	g1 := publishedClusters(t, table, "a", "b")
	g2 := publishedClusters(t, table, "b", "c")
	b1, b2 := g1.types[resourcev3.ClusterType].items["b"], g2.types[resourcev3.ClusterType].items["b"]
	if b1 == nil || b1 != b2 {
		t.Fatal("two groups holding the same cluster do not share its published item")
	}
	// What is shared is what a group alone would have published.
	alone, err := publish(groupSnapshotOf(t, "b"), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := alone.types[resourcev3.ClusterType].items["b"]
	if diff := cmp.Diff(want.delta, b1.delta, protocmp.Transform()); diff != "" {
		t.Errorf("the shared item differs from one published without the table (-want +got):\n%s", diff)
	}
	if b1.any != b1.delta.GetResource() {
		t.Error("the item's SOTW and delta forms do not share one Any")
	}
	// A full push that no longer uses b drops it, item and all.
	table.nextGeneration()
	publishedClusters(t, table, "a")
	table.sweep()
	if len(table.byShell) != len(table.entries) {
		t.Errorf("after a sweep the table finds %d shells for %d entries", len(table.byShell), len(table.entries))
	}
	for _, e := range table.entries {
		if e.item == b1 {
			t.Error("the swept cluster's item is still held")
		}
	}
}

// groupSnapshotOf is the snapshot of one group holding the named EDS
// clusters, made without a table.
func groupSnapshotOf(t *testing.T, names ...string) *cachev3.Snapshot {
	t.Helper()
	snap, err := groupSnapshot(edsClusters(names...), nil)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// edsClusters is a group's resources: an EDS cluster and its assignment
// per name.
func edsClusters(names ...string) *translate.Resources {
	r := &translate.Resources{}
	for _, n := range names {
		r.Clusters = append(r.Clusters, edsCluster(n, ""))
		r.Endpoints = append(r.Endpoints, cla(n, "10.0.0.1"))
	}
	return r
}
