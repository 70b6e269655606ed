package xds

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/xds/xdstest"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

func TestHealthAndReadiness(t *testing.T) {
	h := newHarness(t, nil)
	handler := h.srv.Handler()
	if code, _ := get(t, handler, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d, want 200", code)
	}
	if code, body := get(t, handler, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "first model snapshot") {
		t.Errorf("/readyz before the first push = %d %q, want 503 with the reason", code, body)
	}
	if code, _ := get(t, handler, "/debug/model"); code != http.StatusServiceUnavailable {
		t.Errorf("/debug/model before any snapshot = %d, want 503", code)
	}
	h.update(mesh(t, shop...))
	if code, _ := get(t, handler, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz after the first push = %d, want 200", code)
	}
	code, body := get(t, handler, "/debug/model")
	var m model.Snapshot
	if code != http.StatusOK || json.Unmarshal([]byte(body), &m) != nil || m.Workload("default", "product-0") == nil {
		t.Errorf("/debug/model = %d, want the model with pod product-0; body starts %.200q", code, body)
	}
}

func TestConfigDumpAndSyncz(t *testing.T) {
	h := newHarness(t, nil)
	handler := h.srv.Handler()
	h.update(mesh(t, shop...))
	c := h.client("product-gateway-0", "default", "127.0.0.4", false, nil)
	h.waitComplete(c)
	node := nodeID("product-gateway-0", "default", "127.0.0.4")
	h.eventually("secrets ACKed", func() bool {
		ps, _ := h.proxyStatus(node)
		return ps.Types[typeSDS].State == StateSynced && ps.Types[typeLDS].State == StateSynced
	})

	code, body := get(t, handler, "/debug/config_dump?proxy="+url.QueryEscape(node))
	if code != http.StatusOK {
		t.Fatalf("/debug/config_dump = %d %s", code, body)
	}
	if strings.Contains(body, "PRIVATE KEY") {
		t.Fatal("the config dump contains a private key")
	}
	var dump adminv3.ConfigDump
	if err := protojson.Unmarshal([]byte(body), &dump); err != nil {
		t.Fatalf("config dump is not Envoy's ConfigDump JSON: %v", err)
	}
	var listeners *adminv3.ListenersConfigDump
	var secrets *adminv3.SecretsConfigDump
	var sawClusters, sawRoutes, sawEndpoints bool
	for _, a := range dump.GetConfigs() {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		switch d := m.(type) {
		case *adminv3.ListenersConfigDump:
			listeners = d
		case *adminv3.SecretsConfigDump:
			secrets = d
		case *adminv3.ClustersConfigDump:
			sawClusters = len(d.GetDynamicActiveClusters()) == len(c.Resources(xdstest.CDS))
		case *adminv3.RoutesConfigDump:
			sawRoutes = len(d.GetDynamicRouteConfigs()) == len(c.Resources(xdstest.RDS))
		case *adminv3.EndpointsConfigDump:
			sawEndpoints = len(d.GetDynamicEndpointConfigs()) == len(c.Resources(xdstest.EDS))
		}
	}
	if !sawClusters || !sawRoutes || !sawEndpoints {
		t.Errorf("clusters/routes/endpoints dumps incomplete: %v %v %v", sawClusters, sawRoutes, sawEndpoints)
	}
	if listeners == nil || len(listeners.GetDynamicListeners()) != len(c.Resources(xdstest.LDS)) {
		t.Fatalf("listeners dump = %v, want the %d listeners the proxy holds", listeners, len(c.Resources(xdstest.LDS)))
	}
	for _, l := range listeners.GetDynamicListeners() {
		if l.GetClientStatus() != adminv3.ClientResourceStatus_ACKED || l.GetActiveState().GetVersionInfo() != c.Version(xdstest.LDS) {
			t.Errorf("listener %s: status %v version %q, want ACKED %q", l.GetName(), l.GetClientStatus(), l.GetActiveState().GetVersionInfo(), c.Version(xdstest.LDS))
		}
	}
	if secrets == nil || len(secrets.GetDynamicActiveSecrets()) != 2 {
		t.Fatalf("secrets dump = %v, want default and ROOTCA", secrets)
	}
	for _, s := range secrets.GetDynamicActiveSecrets() {
		m, err := s.GetSecret().UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		sec := m.(*tlsv3.Secret)
		if tc := sec.GetTlsCertificate(); tc != nil {
			if got := tc.GetPrivateKey().GetInlineString(); got != redacted {
				t.Errorf("private key in dump = %q, want %q", got, redacted)
			}
			if len(tc.GetCertificateChain().GetInlineBytes()) == 0 {
				t.Error("the certificate itself should be shown")
			}
		}
	}
	// The served secret itself still carries the key.
	if k := c.Resources(xdstest.SDS)[SecretDefault].(*tlsv3.Secret).GetTlsCertificate().GetPrivateKey().GetInlineBytes(); len(k) == 0 {
		t.Error("redaction reached the secret served to the proxy")
	}

	if code, body := get(t, handler, "/debug/config_dump?proxy=sidecar~1.2.3.4~nope.default~default.svc.cluster.local"); code != http.StatusNotFound || !strings.Contains(body, "/debug/syncz") {
		t.Errorf("unknown proxy = %d %q, want 404 pointing to syncz", code, body)
	}
	if code, _ := get(t, handler, "/debug/config_dump"); code != http.StatusBadRequest {
		t.Errorf("config dump without proxy = %d, want 400", code)
	}

	code, body = get(t, handler, "/debug/syncz")
	var sz SyncStatus
	if code != http.StatusOK || json.Unmarshal([]byte(body), &sz) != nil {
		t.Fatalf("/debug/syncz = %d %.300q", code, body)
	}
	if !sz.Ready || len(sz.Proxies) != 1 || sz.Proxies[0].NodeID != node || len(sz.Groups) != 1 || sz.Groups[0].Proxies != 1 {
		t.Errorf("syncz = %+v", sz)
	}
	if strings.Contains(body, "PRIVATE KEY") {
		t.Error("syncz contains a private key")
	}

	code, body = get(t, handler, "/metrics")
	for _, name := range []string{
		"minimesh_xds_connected_proxies 1", "minimesh_xds_pushes_total", "minimesh_xds_push_build_seconds",
		"minimesh_xds_debounce_seconds", "minimesh_ca_certificates_issued_total 1",
		"minimesh_ca_root_expiry_timestamp_seconds", "minimesh_ca_workload_cert_expiry_timestamp_seconds",
	} {
		if !strings.Contains(body, name) {
			t.Errorf("/metrics (%d) lacks %q", code, name)
		}
	}
}

func TestDisconnectForgetsProxy(t *testing.T) {
	h := newHarness(t, nil)
	h.update(mesh(t, shop...))
	c := h.client("product-0", "default", "127.0.0.2", true, nil)
	h.waitComplete(c)
	node := nodeID("product-0", "default", "127.0.0.2")
	if h.srv.config.served(node) == nil {
		t.Fatal("no snapshot for a connected proxy")
	}
	// End this client's stream only.
	if err := h.conn.Close(); err != nil {
		t.Fatal(err)
	}
	h.eventually("the proxy to be forgotten", func() bool {
		errCfg := h.srv.config.served(node) == nil
		_, errSec := h.srv.secrets.GetSnapshot(node)
		return len(h.srv.SyncStatus().Proxies) == 0 && errCfg && errSec != nil
	})
	if got := value(h.srv.m.connected); got != 0 {
		t.Errorf("connected proxies = %v, want 0", got)
	}
	// The next push drops the unused group.
	h.update(mesh(t, shopWith(pod("stock-1", "stock", "stock", "127.0.0.7"))...))
	if g := h.srv.SyncStatus().Groups; len(g) != 0 {
		t.Errorf("groups after every proxy left = %+v, want none", g)
	}
}

func TestNewRejectsBadDebounce(t *testing.T) {
	for _, o := range []Options{
		{DebounceAfter: -1},
		{DebounceAfter: 2 * DefaultDebounceMax, DebounceMax: DefaultDebounceMax},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted bad debounce settings", o)
		}
	}
}
