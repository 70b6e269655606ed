package translate

import (
	"fmt"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

// BenchmarkTranslate measures a full sidecar translation for meshes of
// 100, 1,000 and 10,000 services with 4 endpoints each and a few policies
// (namespace STRICT, deny-all plus an allow rule, a RequestAuthentication,
// a wildcard DestinationRule). Run with
//
//	go test ./translate/ -run '^$' -bench BenchmarkTranslate -benchtime 3x
func BenchmarkTranslate(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		snap := benchSnapshot(b, n)
		w := snap.Workload("ns-0", "svc-0-0")
		if w == nil {
			b.Fatal("generated mesh has no svc-0-0")
		}
		p := ProxyFor(FlavorEnvoy, w)
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				res := Translate(snap, p, Options{})
				if len(res.Clusters) < n {
					b.Fatalf("got %d clusters for %d services", len(res.Clusters), n)
				}
			}
		})
	}
}

// benchSnapshot generates n services spread over namespaces of 100, every
// other one HTTP, each with 4 ready in-mesh endpoints.
func benchSnapshot(b testing.TB, n int) *model.Snapshot {
	b.Helper()
	snap := &model.Snapshot{}
	for i := range n {
		ns := fmt.Sprintf("ns-%d", i/100)
		if i%100 == 0 {
			snap.Namespaces = append(snap.Namespaces, model.Namespace{Name: ns})
		}
		name := fmt.Sprintf("svc-%d", i)
		portName := "http"
		if i%2 == 1 {
			portName = "tcp"
		}
		snap.Services = append(snap.Services, model.Service{
			Namespace: ns, Name: name,
			ClusterIP: fmt.Sprintf("10.96.%d.%d", i/250, i%250+1),
			Selector:  map[string]string{"app": name},
			Ports:     []model.ServicePort{{Name: portName, Port: 8080, TargetPort: 8080, Protocol: "TCP"}},
		})
		se := model.ServiceEndpoints{Namespace: ns, Service: name, Port: 8080}
		for j := range 4 {
			idx := i*4 + j
			ip := fmt.Sprintf("10.%d.%d.%d", idx>>16&255, idx>>8&255, idx&255)
			pod := fmt.Sprintf("%s-%d", name, j)
			snap.Workloads = append(snap.Workloads, model.Workload{
				Namespace: ns, Name: pod, IP: ip, ServiceAccount: name, InMesh: true, Ready: true,
				Labels: map[string]string{"app": name, model.LabelTLSMode: model.TLSModeIstio},
				Ports:  []model.ContainerPort{{Port: 8080, Protocol: "TCP"}},
			})
			se.Endpoints = append(se.Endpoints, model.Endpoint{
				IP: ip, Port: 8080, Workload: pod, ServiceAccount: name, InMesh: true, Ready: true, Serving: true,
			})
		}
		snap.Endpoints = append(snap.Endpoints, se)
	}
	for _, doc := range []struct{ apiVersion, kind, ns, name, spec string }{
		{"security.istio.io/v1", "PeerAuthentication", "ns-0", "default", `{"mtls":{"mode":"STRICT"}}`},
		{"security.istio.io/v1", "AuthorizationPolicy", "ns-0", "allow-nothing", `{}`},
		{"security.istio.io/v1", "AuthorizationPolicy", "ns-0", "allow-get", `{"rules":[{"from":[{"source":{"principals":["cluster.local/ns/ns-0/sa/svc-1"]}}],"to":[{"operation":{"methods":["GET"],"paths":["/api/*"]}}]}]}`},
		{"security.istio.io/v1", "RequestAuthentication", "ns-0", "jwt", `{"jwtRules":[{"issuer":"https://issuer.example.com","jwks":"{\"keys\":[]}"}]}`},
		{"networking.istio.io/v1", "DestinationRule", "istio-system", "mesh-mtls", `{"host":"*.svc.cluster.local","trafficPolicy":{"tls":{"mode":"ISTIO_MUTUAL"}}}`},
	} {
		obj, problems := policy.Decode(doc.apiVersion, doc.kind, policy.Meta{Kind: doc.kind, Namespace: doc.ns, Name: doc.name}, []byte(doc.spec))
		if problems.HasErrors() || obj == nil {
			b.Fatalf("benchmark policy %s/%s: %v", doc.ns, doc.name, problems.Err())
		}
		snap.Policies.Add(obj)
	}
	snap.Sort()
	return snap
}

// TestValidateLooksInsideTypedConfigs makes sure Validate catches an
// invalid message packed in an Any, which ValidateAll alone skips.
func TestValidateLooksInsideTypedConfigs(t *testing.T) {
	bad := &listenerv3.Listener{
		Name:    "bad",
		Address: socketAddress("0.0.0.0", 80),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.http_connection_manager",
			// stat_prefix is required.
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(&hcmv3.HttpConnectionManager{})},
		}}}},
	}
	if err := bad.ValidateAll(); err != nil {
		t.Fatalf("the outer listener should be valid for this test to mean anything: %v", err)
	}
	err := (&Resources{Listeners: []*listenerv3.Listener{bad}}).Validate()
	if err == nil {
		t.Fatal("Validate accepted an HttpConnectionManager without stat_prefix")
	}
	t.Log(err)
}
