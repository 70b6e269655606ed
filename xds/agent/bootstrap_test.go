package agent

import (
	"encoding/json"
	"log/slog"
	"maps"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/xds"
)

// TestBootstrapNodeShape checks the node the agent writes against gRFC
// A27: id, cluster, locality and metadata always present (locality with
// all three keys, empty when unknown, because some gRPC implementations
// refuse a node without it), and none of the fields the gRPC library sets
// itself. gRPC-Go must still accept the file.
func TestBootstrapNodeShape(t *testing.T) {
	for _, tc := range []struct {
		name     string
		locality *corev3.Locality
		want     map[string]any
	}{
		{"locality unknown", nil, map[string]any{"region": "", "zone": "", "sub_zone": ""}},
		{"locality known", &corev3.Locality{Region: "eu-west1", Zone: "eu-west1-b", SubZone: "rack7"},
			map[string]any{"region": "eu-west1", "zone": "eu-west1-b", "sub_zone": "rack7"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := New(Options{Pod: testPod, Namespace: testNS, IP: testIP, CertDir: t.TempDir(),
				Locality: tc.locality, Log: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = a.Close() })

			var b struct {
				XDSServers []map[string]any `json:"xds_servers"`
				Node       map[string]any   `json:"node"`
			}
			if err := json.Unmarshal(a.Bootstrap(), &b); err != nil {
				t.Fatalf("bootstrap is not JSON: %v", err)
			}
			if got, want := slices.Sorted(maps.Keys(b.Node)), []string{"cluster", "id", "locality", "metadata"}; !slices.Equal(got, want) {
				t.Errorf("node has fields %v, want exactly %v (A27: user_agent_*, build_version and client_features are the library's)", got, want)
			}
			if b.Node["id"] != "sidecar~127.0.0.12~product-0.default~default.svc.cluster.local" {
				t.Errorf("node id = %v", b.Node["id"])
			}
			if b.Node["cluster"] != "product-0.default" {
				t.Errorf("node cluster = %v, want product-0.default", b.Node["cluster"])
			}
			loc, _ := b.Node["locality"].(map[string]any)
			if !maps.Equal(loc, tc.want) {
				t.Errorf("node locality = %v, want %v", loc, tc.want)
			}
			md, _ := b.Node["metadata"].(map[string]any)
			if md["GENERATOR"] != "grpc" || md["NAMESPACE"] != testNS {
				t.Errorf("node metadata = %v, want GENERATOR grpc and NAMESPACE %s", md, testNS)
			}
			if len(b.XDSServers) != 1 {
				t.Fatalf("xds_servers has %d entries, want 1", len(b.XDSServers))
			}
			if f, _ := b.XDSServers[0]["server_features"].([]any); !slices.Contains(f, any("xds_v3")) {
				t.Errorf("server_features = %v, want xds_v3 among them", f)
			}
			if _, err := xds.NewXDSResolverWithConfigForTesting(a.Bootstrap()); err != nil {
				t.Errorf("gRPC-Go rejects the bootstrap: %v", err)
			}
		})
	}
}
