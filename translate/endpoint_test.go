package translate

import (
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

// withEndpoints returns a copy of snap whose endpoints (and nothing else)
// can be changed by edit without touching snap.
func withEndpoints(snap *model.Snapshot, edit func(eps []model.ServiceEndpoints) []model.ServiceEndpoints) *model.Snapshot {
	c := *snap
	c.Endpoints = make([]model.ServiceEndpoints, len(snap.Endpoints))
	for i, se := range snap.Endpoints {
		se.Endpoints = slices.Clone(se.Endpoints)
		c.Endpoints[i] = se
	}
	c.Endpoints = edit(c.Endpoints)
	return &c
}

// TestOnlyEndpointsDifferTable states which changes leave everything but
// the assignments alone, per flavour.
func TestOnlyEndpointsDifferTable(t *testing.T) {
	ep := func(ip, sa string, inMesh, ready bool) model.Endpoint {
		return model.Endpoint{IP: ip, Port: 8080, Workload: "p-" + ip, ServiceAccount: sa, InMesh: inMesh, Ready: ready, Serving: ready}
	}
	client := model.Workload{Namespace: "default", Name: "client-0", IP: "10.0.0.9", InMesh: true, Ready: true}
	base := proxylessSnapshot([]model.Endpoint{ep("10.0.0.1", "product", true, true), ep("10.0.0.2", "product", true, true)}, client)
	setEP := func(f func(e *model.Endpoint)) *model.Snapshot {
		return withEndpoints(base, func(eps []model.ServiceEndpoints) []model.ServiceEndpoints {
			for i := range eps[0].Endpoints {
				f(&eps[0].Endpoints[i])
			}
			return eps
		})
	}
	tests := []struct {
		name            string
		next            *model.Snapshot
		envoy, grpcWant bool
	}{
		{"same snapshot", base, true, true},
		{"equal copy", withEndpoints(base, func(e []model.ServiceEndpoints) []model.ServiceEndpoints { return e }), true, true},
		{"endpoint addresses move", setEP(func(e *model.Endpoint) { e.IP += "0" }), true, true},
		{"a replica with the same service account", withEndpoints(base, func(eps []model.ServiceEndpoints) []model.ServiceEndpoints {
			eps[0].Endpoints = append(eps[0].Endpoints, ep("10.0.0.3", "product", true, true))
			return eps
		}), true, true},
		{"all endpoints go away", withEndpoints(base, func([]model.ServiceEndpoints) []model.ServiceEndpoints { return nil }), false, false},
		{"a new service account (cluster SANs)", setEP(func(e *model.Endpoint) {
			if e.IP == "10.0.0.2" {
				e.ServiceAccount = "product-v2"
			}
		}), false, false},
		{"an endpoint leaves the mesh (proxyless auto mTLS)", setEP(func(e *model.Endpoint) {
			if e.IP == "10.0.0.2" {
				e.InMesh = false
			}
		}), true, false},
		{"one of two endpoints turns unready", setEP(func(e *model.Endpoint) {
			if e.IP == "10.0.0.2" {
				e.Ready, e.Serving = false, false
			}
		}), true, true},
		{"no endpoint is usable any more (proxyless auto mTLS)", setEP(func(e *model.Endpoint) { e.Ready, e.Serving = false, false }), true, false},
		{"an in-mesh workload moves (proxyless server ranges)", func() *model.Snapshot {
			c := *base
			w := client
			w.IP = "10.0.0.99"
			c.Workloads = []model.Workload{w}
			return &c
		}(), true, false},
		{"a workload's labels change (reaches translation as its Proxy)", func() *model.Snapshot {
			c := *base
			w := client
			w.Labels = map[string]string{"app": "client"}
			c.Workloads = []model.Workload{w}
			return &c
		}(), true, true},
		{"a service port changes", func() *model.Snapshot {
			c := *base
			c.Services = slices.Clone(base.Services)
			c.Services[0].Ports = []model.ServicePort{{Name: "grpc", Port: 8080, TargetPort: 9090}}
			return &c
		}(), false, false},
		{"a policy is added", func() *model.Snapshot {
			c := *base
			c.Policies.PeerAuthentications = []*policy.PeerAuthentication{{Meta: policy.Meta{Namespace: "default", Name: "strict"}}}
			return &c
		}(), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := OnlyEndpointsDiffer(base, tt.next, FlavorEnvoy, Options{}); got != tt.envoy {
				t.Errorf("envoy: OnlyEndpointsDiffer = %v, want %v", got, tt.envoy)
			}
			if got := OnlyEndpointsDiffer(base, tt.next, FlavorProxyless, Options{}); got != tt.grpcWant {
				t.Errorf("proxyless: OnlyEndpointsDiffer = %v, want %v", got, tt.grpcWant)
			}
		})
	}
}

// TestOnlyEndpointsDifferIsSound changes the endpoints of every golden
// case in several ways and checks the promise the xDS layer relies on:
// whenever OnlyEndpointsDiffer holds, translating the new snapshot gives
// the same listeners, routes, clusters and problems, and its assignments
// are exactly EndpointsFor's.
func TestOnlyEndpointsDifferIsSound(t *testing.T) {
	mutations := map[string]func(e *model.Endpoint){
		"move":        func(e *model.Endpoint) { e.IP = "10.255.0.1" },
		"unready":     func(e *model.Endpoint) { e.Ready, e.Serving = false, false },
		"terminating": func(e *model.Endpoint) { e.Ready, e.Terminating = false, true },
		"leave mesh":  func(e *model.Endpoint) { e.InMesh = false },
		"new account": func(e *model.Endpoint) { e.ServiceAccount = "other" },
		"new port":    func(e *model.Endpoint) { e.Port = 9999 },
	}
	held := 0
	for _, flavor := range []Flavor{FlavorEnvoy, FlavorProxyless} {
		cases, err := filepath.Glob(filepath.Join("testdata", map[Flavor]string{FlavorEnvoy: "envoy", FlavorProxyless: "proxyless"}[flavor], "*.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		for _, path := range cases {
			if isOutputFile(filepath.Base(path)) {
				continue
			}
			snap, proxy := loadCase(t, path, flavor)
			opts := Options{JWKS: goldenJWKS}
			before := Translate(snap, proxy, opts)
			for name, mutate := range mutations {
				for i := range snap.Endpoints {
					// The first and the last endpoint of each port: enough
					// to reach every rule, and a few seconds in all.
					n := len(snap.Endpoints[i].Endpoints)
					for _, j := range slices.Compact([]int{0, n - 1}) {
						if j < 0 {
							continue
						}
						next := withEndpoints(snap, func(eps []model.ServiceEndpoints) []model.ServiceEndpoints {
							mutate(&eps[i].Endpoints[j])
							return eps
						})
						if !OnlyEndpointsDiffer(snap, next, flavor, Options{}) {
							continue
						}
						held++
						after := Translate(next, proxy, opts)
						where := filepath.Base(path) + " " + string(flavor) + " " + name
						for _, d := range []struct {
							what     string
							old, new any
							same     bool
						}{
							{"listeners", before.Listeners, after.Listeners, sameProtos(before.Listeners, after.Listeners)},
							{"routes", before.Routes, after.Routes, sameProtos(before.Routes, after.Routes)},
							{"clusters", before.Clusters, after.Clusters, sameProtos(before.Clusters, after.Clusters)},
							{"problems", before.Problems, after.Problems, reflect.DeepEqual(before.Problems, after.Problems)},
						} {
							if d.same {
								continue // cmp.Diff only to explain: it is slow
							}
							if diff := cmp.Diff(d.old, d.new, protocmp.Transform()); diff != "" {
								t.Errorf("%s: OnlyEndpointsDiffer holds but the %s changed (-before +after):\n%s", where, d.what, diff)
							}
						}
						assignments := EndpointsFor(next, flavor, opts)
						for _, cla := range after.Endpoints {
							if proto.Equal(cla, assignments[cla.GetClusterName()]) {
								continue
							}
							if diff := cmp.Diff(cla, assignments[cla.GetClusterName()], protocmp.Transform()); diff != "" {
								t.Errorf("%s: EndpointsFor differs from translation for %q (-translate +EndpointsFor):\n%s", where, cla.GetClusterName(), diff)
							}
						}
					}
				}
			}
		}
	}
	if held == 0 {
		t.Error("no mutation was found endpoint-only: the test checks nothing")
	}
}

// sameProtos reports whether two lists hold equal messages in order.
func sameProtos[T proto.Message](a, b []T) bool {
	return slices.EqualFunc(a, b, func(x, y T) bool { return proto.Equal(x, y) })
}

// TestOnlyEndpointsDifferFollowsServerModes: a workload's labels decide
// its PeerAuthentication, so when a label change puts a server under a
// DISABLE policy, proxyless clients need new clusters (plaintext), while
// Envoy clients only need the assignment (its tlsMode metadata).
func TestOnlyEndpointsDifferFollowsServerModes(t *testing.T) {
	ep := func(ip string) model.Endpoint {
		return model.Endpoint{IP: ip, Port: 8080, Workload: "p-" + ip, ServiceAccount: "product", InMesh: true, Ready: true, Serving: true}
	}
	client := model.Workload{Namespace: "default", Name: "client-0", IP: "10.0.0.9", InMesh: true, Ready: true}
	base := proxylessSnapshot([]model.Endpoint{ep("10.0.0.1")}, client)
	server := model.Workload{Namespace: "default", Name: "p-10.0.0.1", IP: "10.0.0.1", InMesh: true, Ready: true,
		Labels: map[string]string{"app": "product"}}
	base.Workloads = append(slices.Clone(base.Workloads), server)
	base.Sort()
	base.Policies.PeerAuthentications = []*policy.PeerAuthentication{{
		Meta: policy.Meta{Namespace: "default", Name: "legacy"},
		Spec: policy.PeerAuthenticationSpec{Selector: &policy.WorkloadSelector{MatchLabels: map[string]string{"legacy": "true"}},
			MTLS: &policy.MutualTLS{Mode: policy.ModeDisable}},
	}}
	next := *base
	next.Workloads = slices.Clone(base.Workloads)
	for i := range next.Workloads {
		if next.Workloads[i].Name == server.Name {
			next.Workloads[i].Labels = map[string]string{"app": "product", "legacy": "true"}
		}
	}
	if !OnlyEndpointsDiffer(base, &next, FlavorEnvoy, Options{}) {
		t.Errorf("envoy: a server turning DISABLE changes more than assignments")
	}
	if OnlyEndpointsDiffer(base, &next, FlavorProxyless, Options{}) {
		t.Errorf("proxyless: a server turning DISABLE must change the cluster's TLS, not only assignments")
	}
	before := AssignmentInputs(base, FlavorEnvoy, Options{})
	after := AssignmentInputs(&next, FlavorEnvoy, Options{})
	for name, in := range after {
		if in.Equal(before[name]) {
			t.Errorf("assignment %s: input unchanged, so the tlsMode metadata would not be rebuilt", name)
		}
		if in.Endpoints[0].InMesh {
			t.Errorf("assignment %s: the DISABLE server is still marked for mTLS", name)
		}
	}
}
