package translate

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
)

// TestBatchSharesOutboundPerNamespace: a batch gives every group exactly
// what Translate gives it, and groups of one namespace and flavour share
// the very same outbound resources (groups of another namespace do not).
func TestBatchSharesOutboundPerNamespace(t *testing.T) {
	snap := benchSnapshot(t, 300) // namespaces ns-0, ns-1, ns-2
	pods := []struct{ ns, pod string }{{"ns-0", "svc-0-0"}, {"ns-0", "svc-1-0"}, {"ns-1", "svc-100-0"}}
	for _, f := range []Flavor{FlavorEnvoy, FlavorProxyless} {
		batch := NewBatch(snap, Options{})
		var got []*Resources
		for _, p := range pods {
			w := snap.Workload(p.ns, p.pod)
			if w == nil {
				t.Fatalf("no pod %s/%s", p.ns, p.pod)
			}
			px := ProxyFor(f, w)
			res := batch.Translate(px)
			want := Translate(snap, px, Options{})
			if diff := cmp.Diff(want, res, protocmp.Transform()); diff != "" {
				t.Errorf("%s %s/%s: batch translation differs from Translate (-want +got):\n%s", f, p.ns, p.pod, diff)
			}
			got = append(got, res)
		}
		cluster := func(r *Resources, name string) any {
			for _, c := range r.Clusters {
				if c.GetName() == name {
					return c
				}
			}
			t.Fatalf("%s: no cluster %s", f, name)
			return nil
		}
		name := OutboundClusterName(8080, FQDN("svc-4", "ns-0", DefaultClusterDomain))
		if cluster(got[0], name) != cluster(got[1], name) {
			t.Errorf("%s: two groups of one namespace do not share their outbound cluster", f)
		}
		if cluster(got[0], name) == cluster(got[2], name) {
			t.Errorf("%s: groups of different namespaces share an outbound cluster", f)
		}
	}
}

// TestAssignmentNamesOnly: with the option, a group's assignments name the
// same clusters as without it, and carry no endpoints; everything else is
// the same translation.
func TestAssignmentNamesOnly(t *testing.T) {
	snap := benchSnapshot(t, 30)
	for _, f := range []Flavor{FlavorEnvoy, FlavorProxyless} {
		px := ProxyFor(f, snap.Workload("ns-0", "svc-0-0"))
		full := Translate(snap, px, Options{})
		named := Translate(snap, px, Options{AssignmentNamesOnly: true})
		if len(full.Endpoints) == 0 || len(named.Endpoints) != len(full.Endpoints) {
			t.Fatalf("%s: %d assignments with the option, %d without", f, len(named.Endpoints), len(full.Endpoints))
		}
		for i, cla := range named.Endpoints {
			if cla.GetClusterName() != full.Endpoints[i].GetClusterName() || len(cla.GetEndpoints()) != 0 {
				t.Errorf("%s: assignment %d is %v, want only the name %q", f, i, cla, full.Endpoints[i].GetClusterName())
			}
		}
		full.Endpoints, named.Endpoints = nil, nil
		if diff := cmp.Diff(full, named, protocmp.Transform()); diff != "" {
			t.Errorf("%s: the option changed more than the assignments (-without +with):\n%s", f, diff)
		}
	}
}
