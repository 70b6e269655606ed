package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minimesh/minimesh/e2e/harness"
	"github.com/minimesh/minimesh/xds"
)

// TestRealEnvoy starts a real Envoy, when one is on PATH, with the
// bootstrap `meshctl bootstrap` renders for product-0, and checks that it
// syncs every type with meshd and activates every listener and cluster
// meshd sends it, over state-of-the-world and then delta ADS. Envoy binds
// the virtual listeners' ports (0.0.0.0:15001 and :15006) as a sidecar
// would, so the two flavours run one after the other.
func TestRealEnvoy(t *testing.T) {
	t.Parallel()
	envoy, err := exec.LookPath("envoy")
	if err != nil {
		t.Skip("envoy not on PATH: the real-Envoy test was SKIPPED (Envoy cannot be installed on this machine); translation is covered by golden files and ValidateAll")
	}
	m := startADSMesh(t)
	tokenFile := filepath.Join(m.dir, "product.token")
	if err := os.WriteFile(tokenFile, []byte(m.tokens[productSA]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, delta := range []bool{false, true} {
		name := "sotw"
		if delta {
			name = "delta"
		}
		t.Run(name, func(t *testing.T) { runRealEnvoy(t, m, envoy, tokenFile, delta) })
	}
}

func runRealEnvoy(t *testing.T, m *adsMesh, envoy, tokenFile string, delta bool) {
	ctx := t.Context()
	w := harness.Product
	nodeID := nodeIDOf(w)
	admin := freeAddrOn(t, "127.0.0.1")
	_, adminPort, _ := net.SplitHostPort(admin)
	flavour := "sotw"
	if delta {
		flavour = "delta"
	}
	bootstrap := filepath.Join(m.dir, "envoy-"+flavour+".yaml")
	args := []string{"bootstrap", "--pod", w.Pod, "--namespace", w.Namespace, "--ip", w.IP, "--app", "product",
		"--xds-address", m.xdsAddr, "--token-file", tokenFile, "--admin-port", adminPort, "--out", bootstrap}
	if delta {
		args = append(args, "--delta")
	}
	if out, err := exec.CommandContext(ctx, bins.Meshctl, args...).CombinedOutput(); err != nil {
		t.Fatalf("meshctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}

	p := startProc(t, t, m.dir, "envoy-"+flavour, "", envoy, "-c", bootstrap,
		"--disable-hot-restart", "--concurrency", "1", "--drain-time-s", "1", "--log-level", "info")
	defer p.stop()

	// Envoy starts, connects and ACKs every type: meshd sees it in sync.
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, found, err := m.proxyStatus(ctx, nodeID)
		if err == nil && found && allSynced(st) && hasTypes(st, "lds", "cds", "eds", "rds", "sds") {
			break
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("Envoy is not SYNCED for lds, cds, eds, rds and sds in meshd's /debug/syncz within 30s (listed: %t, error: %v, types: %+v)\nEnvoy log:\n%s",
				found, err, st.Types, p.logTail())
		}
		time.Sleep(200 * time.Millisecond)
	}

	sent, err := m.configDumpState(ctx, nodeID)
	if err != nil {
		t.Fatal(err)
	}
	body, err := httpBody(ctx, "http://"+admin+"/config_dump")
	if err != nil {
		t.Fatalf("Envoy's /config_dump: %v\nEnvoy log:\n%s", err, p.logTail())
	}
	got, err := parseConfigDump(body)
	if err != nil {
		t.Fatalf("Envoy's /config_dump: %v", err)
	}
	if len(sent.listeners) == 0 || len(sent.clusters) == 0 {
		t.Fatalf("meshd's config dump for %s lists %d listeners and %d clusters; want some of each", nodeID, len(sent.listeners), len(sent.clusters))
	}
	for _, kind := range []struct {
		name       string
		sent, have map[string]string
	}{{"listener", sent.listeners, got.listeners}, {"cluster", sent.clusters, got.clusters}} {
		for _, n := range slices.Sorted(maps.Keys(kind.sent)) {
			state, ok := kind.have[n]
			switch {
			case !ok:
				t.Errorf("Envoy does not have %s %q that meshd sent", kind.name, n)
			case state != "":
				t.Errorf("Envoy's %s %q is not active: %s", kind.name, n, state)
			}
		}
	}
	t.Logf("Envoy (%s ADS) runs meshd's %d listeners and %d clusters", flavour, len(sent.listeners), len(sent.clusters))

	p.stop()
	if !p.exited() {
		t.Errorf("Envoy did not stop")
	}
}

func hasTypes(p xds.ProxyStatus, types ...string) bool {
	for _, typ := range types {
		if _, ok := p.Types[typ]; !ok {
			return false
		}
	}
	return true
}

// configDumpState is meshd's /debug/config_dump for a proxy, reduced to
// its listeners' and clusters' states.
func (m *adsMesh) configDumpState(ctx context.Context, nodeID string) (dumpState, error) {
	body, err := httpBody(ctx, "http://"+m.monitoring+"/debug/config_dump?proxy="+url.QueryEscape(nodeID))
	if err != nil {
		return dumpState{}, fmt.Errorf("meshd's config dump for %s: %w", nodeID, err)
	}
	st, err := parseConfigDump(body)
	if err != nil {
		return dumpState{}, fmt.Errorf("meshd's config dump for %s: %w", nodeID, err)
	}
	st.raw = body
	return st, nil
}

func httpBody(ctx context.Context, u string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s: %s", u, resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

// dumpState is what a config dump says of each dynamic listener and
// cluster, by name: "" when active, otherwise why not (warming, or the
// error Envoy recorded).
type dumpState struct {
	listeners, clusters map[string]string
	raw                 []byte
}

// parseConfigDump reads an admin ConfigDump as JSON without resolving its
// Anys: Envoy's own dump holds extension types this binary does not link.
// It accepts Envoy's snake_case field names and protojson's lowerCamelCase
// (meshd's dump), as protojson itself does.
func parseConfigDump(b []byte) (dumpState, error) {
	var dump map[string]any
	if err := json.Unmarshal(b, &dump); err != nil {
		return dumpState{}, fmt.Errorf("not a JSON config dump: %w", err)
	}
	st := dumpState{listeners: map[string]string{}, clusters: map[string]string{}}
	configs, _ := field(dump, "configs").([]any)
	if len(configs) == 0 {
		return st, fmt.Errorf("the config dump has no configs")
	}
	for _, c := range configs {
		c, _ := c.(map[string]any)
		typ, _ := c["@type"].(string)
		switch {
		case strings.HasSuffix(typ, ".ListenersConfigDump"):
			for _, l := range list(field(c, "dynamic_listeners")) {
				name, _ := field(l, "name").(string)
				switch {
				case field(l, "error_state") != nil:
					st.listeners[name] = fmt.Sprintf("update failed: %v", field(field(l, "error_state"), "details"))
				case field(l, "active_state") != nil:
					st.listeners[name] = ""
				case field(l, "warming_state") != nil:
					st.listeners[name] = "warming"
				default:
					st.listeners[name] = "neither active nor warming"
				}
			}
		case strings.HasSuffix(typ, ".ClustersConfigDump"):
			for _, cl := range list(field(c, "dynamic_active_clusters")) {
				name, _ := field(field(cl, "cluster"), "name").(string)
				st.clusters[name] = ""
			}
			for _, cl := range list(field(c, "dynamic_warming_clusters")) {
				name, _ := field(field(cl, "cluster"), "name").(string)
				if _, active := st.clusters[name]; !active {
					st.clusters[name] = "warming"
				}
			}
		}
	}
	return st, nil
}

// field reads a JSON object's field by its proto (snake_case) name or its
// lowerCamelCase JSON name.
func field(v any, snake string) any {
	m, _ := v.(map[string]any)
	if x, ok := m[snake]; ok {
		return x
	}
	parts := strings.Split(snake, "_")
	for i := 1; i < len(parts); i++ {
		if parts[i] != "" {
			parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
		}
	}
	return m[strings.Join(parts, "")]
}

func list(v any) []any {
	l, _ := v.([]any)
	return l
}

// TestParseConfigDump checks the reading of Envoy's /config_dump that
// TestRealEnvoy relies on, on a dump in Envoy's own snake_case form (the
// camelCase form is read from meshd in TestEnvoyADS): active, warming and
// failed listeners and clusters each get their state, static ones are
// left out, and Anys of unknown types do not stop the reading.
func TestParseConfigDump(t *testing.T) {
	t.Parallel()
	const envoyDump = `{"configs": [
 {"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
  "bootstrap": {"node": {"id": "sidecar~127.0.0.12~product-0.default~default.svc.cluster.local"},
   "static_resources": {"clusters": [{"name": "xds-grpc", "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {"@type": "type.googleapis.com/example.Unknown"}}}]}}},
 {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
  "static_clusters": [{"cluster": {"name": "xds-grpc"}}],
  "dynamic_active_clusters": [{"version_info": "v1", "cluster": {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "inbound|8080||"}}],
  "dynamic_warming_clusters": [{"version_info": "v1", "cluster": {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "outbound|8080||stock.default.svc.cluster.local"}}]},
 {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
  "version_info": "v1",
  "dynamic_listeners": [
   {"name": "virtualInbound", "active_state": {"version_info": "v1", "listener": {"name": "virtualInbound"}}},
   {"name": "virtualOutbound", "warming_state": {"version_info": "v1", "listener": {"name": "virtualOutbound"}}},
   {"name": "0.0.0.0_8080", "active_state": {"version_info": "v0"}, "error_state": {"failed_configuration": {}, "details": "cannot bind 0.0.0.0:8080"}}]}
]}`
	got, err := parseConfigDump([]byte(envoyDump))
	if err != nil {
		t.Fatal(err)
	}
	wantListeners := map[string]string{
		"virtualInbound":  "",
		"virtualOutbound": "warming",
		"0.0.0.0_8080":    "update failed: cannot bind 0.0.0.0:8080",
	}
	wantClusters := map[string]string{
		"inbound|8080||": "",
		"outbound|8080||stock.default.svc.cluster.local": "warming",
	}
	if !maps.Equal(got.listeners, wantListeners) {
		t.Errorf("listeners = %q; want %q", got.listeners, wantListeners)
	}
	if !maps.Equal(got.clusters, wantClusters) {
		t.Errorf("clusters = %q; want %q", got.clusters, wantClusters)
	}
	for _, bad := range []string{`not json`, `{"configs": []}`} {
		if _, err := parseConfigDump([]byte(bad)); err == nil {
			t.Errorf("parseConfigDump(%q) accepted it", bad)
		}
	}
}
