package main

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
)

func res(names ...string) []resource {
	var out []resource
	for _, n := range names {
		out = append(out, resource{name: []byte(n), value: []byte("body of " + n)})
	}
	return out
}

func names(s *typeState) []string {
	var out []string
	for n := range s.names {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func TestStateCacheInternsEqualTransitions(t *testing.T) {
	c := newStateCache()
	a, err := c.apply(tEDS, nil, 1, res("x", "y"), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.apply(tEDS, nil, 1, res("x", "y"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Error("two proxies receiving the same content got different states; replicas must share")
	}
	other, _ := c.apply(tEDS, nil, 2, res("x"), nil)
	if other == a {
		t.Error("different content returned the same state")
	}
	// The same content as another type is another state.
	rds, _ := c.apply(tRDS, nil, 1, res("x", "y"), nil)
	if rds == a {
		t.Error("an RDS response shared an EDS state")
	}
}

func TestStateCacheDeltaAccumulates(t *testing.T) {
	c := newStateCache()
	s1, _ := c.apply(tEDS, nil, 1, res("a", "b"), nil)
	s2, _ := c.apply(tEDS, s1, 2, res("c"), []string{"a"})
	if diff := cmp.Diff([]string{"b", "c"}, names(s2)); diff != "" {
		t.Errorf("after adding c and removing a (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"a", "b"}, names(s1)); diff != "" {
		t.Errorf("the previous state changed; states must be immutable (-want +got):\n%s", diff)
	}
	// The same delta from a different starting point is a different state.
	s3, _ := c.apply(tEDS, s2, 2, res("c"), []string{"a"})
	if s3 == s2 {
		t.Error("a delta applied to a different state returned the same state")
	}
}

func TestHolds(t *testing.T) {
	c := newStateCache()
	held, _ := c.apply(tEDS, nil, 1, res("a", "b", "c"), nil)
	list := func(n ...string) *nameList {
		set := map[string]struct{}{}
		for _, x := range n {
			set[x] = struct{}{}
		}
		return newNameList(set)
	}
	for _, tc := range []struct {
		name string
		held *typeState
		want *nameList
		ok   bool
	}{
		{"nothing wanted, nothing held", nil, nil, true},
		{"something wanted, nothing held", nil, list("a"), false},
		{"subset", held, list("a", "c"), true},
		{"equal", held, list("a", "b", "c"), true},
		{"one missing", held, list("a", "d"), false},
		{"empty want", held, list(), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Twice: the second answer comes from the cache.
			for range 2 {
				if got := c.holds(tc.held, tc.want); got != tc.ok {
					t.Errorf("holds = %v, want %v", got, tc.ok)
				}
			}
		})
	}
}

func TestUnion(t *testing.T) {
	c := newStateCache()
	a := newNameList(map[string]struct{}{"default": {}, "ROOTCA": {}})
	b := newNameList(map[string]struct{}{"ROOTCA": {}, "other": {}})
	u := c.union(a, b)
	if diff := cmp.Diff([]string{"ROOTCA", "default", "other"}, u.names); diff != "" {
		t.Errorf("union (-want +got):\n%s", diff)
	}
	if c.union(a, b) != u {
		t.Error("the same union was built twice; it should be shared")
	}
	if c.union(nil, a) != a || c.union(a, nil) != a || c.union(a, a) != a {
		t.Error("a union with an empty or equal list should be the other list")
	}
}

func TestMarkerFindsTheAddressInItsClusterOnly(t *testing.T) {
	const cluster = "outbound|8080||svc-0001.ns-1.svc.cluster.local"
	m := newMarker(1, cluster, "10.1.0.9", 1)
	encoded := func(name string, ips ...string) resource {
		t.Helper()
		a := cla(name, ips[0])
		for _, ip := range ips[1:] {
			a.Endpoints = append(a.Endpoints, cla(name, ip).Endpoints...)
		}
		b, err := proto.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		return resource{name: []byte(name), value: b}
	}
	for _, tc := range []struct {
		name string
		res  []resource
		want bool
	}{
		{"in its cluster", []resource{encoded("other", "10.1.0.2"), encoded(cluster, "10.1.0.1", "10.1.0.9")}, true},
		{"in another cluster", []resource{encoded("other", "10.1.0.9"), encoded(cluster, "10.1.0.1")}, false},
		{"its cluster without it", []resource{encoded(cluster, "10.1.0.1")}, false},
		{"a longer address with it as prefix", []resource{encoded(cluster, "10.1.0.90")}, false},
		{"empty response", nil, false},
	} {
		if got := m.in(tc.res); got != tc.want {
			t.Errorf("%s: in = %v, want %v", tc.name, got, tc.want)
		}
	}
}
