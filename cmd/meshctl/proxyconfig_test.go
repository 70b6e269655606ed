package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"sigs.k8s.io/yaml"

	"github.com/minimesh/minimesh/xds"
	"github.com/minimesh/minimesh/xds/xdstest"
)

const synced = xds.StateSynced

// shop starts meshd on testdata/proxyconfig and connects four proxies:
// the gateway's sidecar (in sync), product-0 as proxyless gRPC, stock-0's
// sidecar rejecting every route configuration, and a proxy for a pod
// meshd does not know (waiting).
func shop(t *testing.T) (m *testMeshd, gateway *xdstest.Client) {
	t.Helper()
	m = startMeshd(t, "testdata/proxyconfig/mesh.yaml")
	gateway, gw := m.connect("product-gateway-0", "default", "10.0.0.10", nil)
	_, product := m.connect("product-0", "default", "10.0.0.11", func(o *xdstest.Options) {
		o.Metadata = map[string]string{"GENERATOR": "grpc"}
	})
	_, stock := m.connect("stock-0", "default", "10.0.0.12", func(o *xdstest.Options) {
		o.Reject = func(typeURL, _ string, _ map[string]proto.Message) error {
			if typeURL == xdstest.RDS {
				return errors.New("route configuration rejected by the test")
			}
			return nil
		}
	})
	_, ghost := m.connect("ghost-0", "default", "10.0.0.99", nil)
	all := map[string]string{"cds": synced, "lds": synced, "eds": synced, "rds": synced, "sds": synced}
	m.waitStates(gw, all)
	m.waitStates(product, map[string]string{"cds": synced, "lds": synced, "eds": synced, "rds": synced})
	m.waitStates(stock, map[string]string{"cds": synced, "lds": synced, "eds": synced, "rds": xds.StateNacked, "sds": synced})
	m.eventually("ghost-0 to wait", func() bool {
		for _, p := range m.srv.SyncStatus().Proxies {
			if p.NodeID == ghost && p.Waiting && len(p.Types) > 0 {
				return true
			}
		}
		return false
	})
	return m, gateway
}

// TestProxyConfigTables prints each table for the sidecar and the
// proxyless workload and compares it with a golden file, so that what
// users read is reviewed in diffs.
func TestProxyConfigTables(t *testing.T) {
	m, _ := shop(t)
	tests := []struct {
		golden string
		args   []string
	}{
		{"listeners", []string{"listeners", "product-gateway-0"}},
		{"listeners-inbound", []string{"listeners", "product-gateway-0.default", "--port", "15006"}},
		{"clusters", []string{"clusters", "product-gateway-0"}},
		{"clusters-outbound-stock", []string{"clusters", "product-gateway-0", "--fqdn", "stock", "--direction", "outbound"}},
		{"routes", []string{"routes", "product-gateway-0", "--name", "8080"}},
		{"endpoints", []string{"endpoints", "product-gateway-0"}},
		{"endpoints-legacy", []string{"endpoints", "product-gateway-0", "--fqdn", "legacy.default.svc.cluster.local", "--address", "10.0.0.21"}},
		{"proxyless-listeners", []string{"listeners", "product-0", "--namespace", "default"}},
		{"proxyless-clusters", []string{"clusters", "product-0"}},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			code, stdout, stderr := m.meshctl(append([]string{"proxy-config"}, tt.args...)...)
			if code != exitOK {
				t.Fatalf("exit %d; stderr: %s", code, stderr)
			}
			checkGolden(t, "proxyconfig/"+tt.golden+".golden", stdout)
		})
	}
}

// TestProxyConfigNotes checks that what the config dump cannot show is
// said on stderr: translation warnings for the proxyless group and the
// sidecar's NACK.
func TestProxyConfigNotes(t *testing.T) {
	m, _ := shop(t)
	_, _, stderr := m.meshctl("proxy-config", "listeners", "product-0")
	if !strings.Contains(stderr, "translation warning: ") || !strings.Contains(stderr, "PERMISSIVE mTLS cannot be served") {
		t.Errorf("proxyless workload: stderr lacks the translation warning:\n%s", stderr)
	}
	_, _, stderr = m.meshctl("proxy-config", "routes", "stock-0")
	if !strings.Contains(stderr, "warning: proxy stock-0.default rejected (NACKed) RDS version") || !strings.Contains(stderr, "route configuration rejected by the test") {
		t.Errorf("NACKing proxy: stderr lacks the NACK:\n%s", stderr)
	}
	code, stdout, stderr := m.meshctl("proxy-config", "clusters", "ghost-0")
	if code != exitOK || !strings.Contains(stderr, "proxy ghost-0.default is waiting (pod default/ghost-0 not found in the mesh)") || strings.Count(stdout, "\n") != 1 {
		t.Errorf("waiting proxy: exit %d, stdout %q, stderr %q; want 0, only the header, and a note", code, stdout, stderr)
	}
}

// TestProxyConfigJSON checks what the seeds' readers look for in
// 'istioctl proxy-config listeners <pod> --port 15006 -o json' and
// 'proxy-config cluster <pod> --fqdn <svc> -o json', and that the output
// is exactly the resources the proxy holds.
func TestProxyConfigJSON(t *testing.T) {
	m, gateway := shop(t)

	code, stdout, stderr := m.meshctl("proxy-config", "listeners", "product-gateway-0", "--port", "15006", "-o", "json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	got := decodeList(t, stdout, func() proto.Message { return &listenerv3.Listener{} })
	want := gateway.Resources(xdstest.LDS)["virtualInbound"]
	if len(got) != 1 || want == nil {
		t.Fatalf("got %d listeners for --port 15006, want virtualInbound only (proxy holds it: %v)", len(got), want != nil)
	}
	if diff := cmp.Diff(want, got[0], protocmp.Transform()); diff != "" {
		t.Errorf("virtualInbound differs from what the proxy received (-proxy +meshctl):\n%s", diff)
	}
	for _, s := range []string{`"transportProtocol": "tls"`, `"tlsCertificateSdsSecretConfigs"`, `"name": "ROOTCA"`, `"requireClientCertificate": true`, `envoy.filters.listener.tls_inspector`} {
		if !strings.Contains(stdout, s) {
			t.Errorf("listeners -o json lacks %s", s)
		}
	}

	code, stdout, stderr = m.meshctl("proxy-config", "clusters", "product-gateway-0", "--fqdn", "legacy.default.svc.cluster.local", "-o", "yaml")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	js, err := yaml.YAMLToJSON([]byte(stdout))
	if err != nil {
		t.Fatalf("-o yaml is not YAML: %v", err)
	}
	clusters := decodeList(t, string(js), func() proto.Message { return &clusterv3.Cluster{} })
	name := "outbound|8080||legacy.default.svc.cluster.local"
	if len(clusters) != 1 {
		t.Fatalf("got %d clusters for --fqdn legacy..., want 1", len(clusters))
	}
	if diff := cmp.Diff(gateway.Resources(xdstest.CDS)[name], clusters[0], protocmp.Transform()); diff != "" {
		t.Errorf("cluster %s differs from what the proxy received (-proxy +meshctl):\n%s", name, diff)
	}
	if !strings.Contains(stdout, "sni: outbound_.8080_._.legacy.default.svc.cluster.local") {
		t.Errorf("clusters -o yaml lacks the ISTIO_MUTUAL SNI:\n%s", stdout)
	}
}

// decodeList reads a JSON array of protojson objects.
func decodeList(t *testing.T, s string, newMsg func() proto.Message) []proto.Message {
	t.Helper()
	var raws []json.RawMessage
	if err := json.Unmarshal([]byte(s), &raws); err != nil {
		t.Fatalf("output is not a JSON array: %v\n%s", err, s)
	}
	var out []proto.Message
	for _, r := range raws {
		m := newMsg()
		if err := protojson.Unmarshal(r, m); err != nil {
			t.Fatalf("element is not a %T: %v", m, err)
		}
		out = append(out, m)
	}
	return out
}

// TestProxyConfigSecrets reads the real workload certificate's identity
// and checks that no key material is printed in any format.
func TestProxyConfigSecrets(t *testing.T) {
	m, _ := shop(t)
	code, stdout, stderr := m.meshctl("proxy-config", "secrets", "product-gateway-0")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	rows := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n")[1:] {
		f := regexp.MustCompile(`\s{3,}`).Split(line, -1)
		rows[f[0]] = f
	}
	def, root := rows["default"], rows["ROOTCA"]
	if len(def) != 6 || def[1] != "Cert Chain" || def[2] != "ACKED" || def[3] != "spiffe://cluster.local/ns/default/sa/product-gateway" {
		t.Errorf("default row = %q, want Cert Chain, ACKED, the gateway's SPIFFE ID, serial, expiry", def)
	}
	if len(root) != 6 || root[1] != "CA" || root[3] != "-" {
		t.Errorf("ROOTCA row = %q, want a CA without SPIFFE ID", root)
	}
	if len(def) == 6 {
		notAfter, err := time.Parse(time.RFC3339, def[5])
		if err != nil || notAfter.Before(time.Now()) || !regexp.MustCompile(`^[0-9a-f]+$`).MatchString(def[4]) {
			t.Errorf("default serial %q / not after %q: want lowercase hex and a future RFC 3339 time", def[4], def[5])
		}
	}
	for _, format := range []string{"json", "yaml"} {
		_, out, _ := m.meshctl("proxy-config", "secrets", "product-gateway-0", "-o", format)
		js := []byte(out)
		if format == "yaml" {
			var err error
			if js, err = yaml.YAMLToJSON(js); err != nil {
				t.Fatalf("-o yaml is not YAML: %v", err)
			}
		}
		var sawChain bool
		for _, msg := range decodeList(t, string(js), func() proto.Message { return &tlsv3.Secret{} }) {
			tc := msg.(*tlsv3.Secret).GetTlsCertificate()
			if tc == nil {
				continue
			}
			if got := tc.GetPrivateKey().GetInlineString(); got != "[redacted]" || tc.GetPrivateKey().GetInlineBytes() != nil {
				t.Errorf("-o %s: private key = %q, want [redacted]", format, got)
			}
			sawChain = strings.Contains(string(tc.GetCertificateChain().GetInlineBytes()), "BEGIN CERTIFICATE")
		}
		if !sawChain || strings.Contains(out, "PRIVATE KEY") {
			t.Errorf("-o %s: want the certificate chain and no private key:\n%s", format, out)
		}
	}
}

// TestProxyConfigRedactsKeysItself serves a config dump that, against
// meshd's contract, carries a private key: meshctl must still not print it.
func TestProxyConfigRedactsKeysItself(t *testing.T) {
	const key = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n"
	secret := &tlsv3.Secret{Name: "default", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "not a certificate"}},
		PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: key}},
	}}}
	ticket := &tlsv3.Secret{Name: "tickets", Type: &tlsv3.Secret_SessionTicketKeys{SessionTicketKeys: &tlsv3.TlsSessionTicketKeys{
		Keys: []*corev3.DataSource{{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte("TICKETKEYTICKETKEYTICKETKEYTICKETKEYTICKETKEYTICKETKEYTICKETKEYTICKETKEYTICKETKEY")}}},
	}}}
	secrets := &adminv3.SecretsConfigDump{}
	for _, s := range []*tlsv3.Secret{secret, ticket} {
		secrets.DynamicActiveSecrets = append(secrets.DynamicActiveSecrets, &adminv3.SecretsConfigDump_DynamicSecret{Name: s.GetName(), Secret: mustAny(t, s)})
	}
	dump, err := protojson.Marshal(&adminv3.ConfigDump{Configs: []*anypb.Any{mustAny(t, secrets)}})
	if err != nil {
		t.Fatal(err)
	}
	node := "sidecar~10.0.0.1~leaky-0.default~default.svc.cluster.local"
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/debug/syncz":
			_ = json.NewEncoder(w).Encode(xds.SyncStatus{Ready: true, Proxies: []xds.ProxyStatus{{NodeID: node, Flavor: "envoy"}}})
		case "/debug/config_dump":
			if r.URL.Query().Get("proxy") != node {
				http.Error(w, "unknown proxy", http.StatusNotFound)
				return
			}
			w.Write(dump)
		default:
			http.NotFound(w, r)
		}
	}))
	defer fake.Close()
	for _, format := range []string{"table", "json", "yaml"} {
		m := &testMeshd{url: fake.URL}
		code, out, stderr := m.meshctl("proxy-config", "secrets", "leaky-0", "-o", format)
		if code != exitOK {
			t.Fatalf("-o %s: exit %d: %s", format, code, stderr)
		}
		if strings.Contains(out, "PRIVATE KEY") || strings.Contains(out, "MIGHAgEA") || strings.Contains(out, "TICKETKEY") || strings.Contains(out, "VElDS0VUS0VZ") {
			t.Errorf("-o %s printed key material:\n%s", format, out)
		}
		if format != "table" && strings.Count(out, "[redacted]") != 2 {
			t.Errorf("-o %s: want both keys shown as [redacted]:\n%s", format, out)
		}
	}
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestProxyConfigErrors(t *testing.T) {
	m, _ := shop(t)
	tests := []struct {
		args     []string
		wantCode int
		wantErr  string
	}{
		{[]string{"proxy-config", "listeners", "nobody"}, exitFailed,
			"no proxy for pod nobody in namespace default is connected to meshd; connected proxies: ghost-0.default, product-0.default, product-gateway-0.default, stock-0.default"},
		{[]string{"proxy-config", "listeners", "product-0.shop"}, exitFailed, "no proxy for pod product-0 in namespace shop"},
		{[]string{"proxy-config", "bogus", "product-0"}, exitUsage, `"bogus" is not one of listeners, clusters, routes, endpoints, secrets`},
		{[]string{"proxy-config", "listeners"}, exitUsage, "want a resource kind"},
		{[]string{"proxy-config", "listeners", "product-0", "-o", "xml"}, exitUsage, `-o "xml" is not one of table, json, yaml`},
		{[]string{"proxy-config", "clusters", "product-0", "--direction", "up"}, exitUsage, `--direction "up" is not inbound or outbound`},
		{[]string{"proxy-config", "clusters", "product-0", "--port", "70000"}, exitUsage, "--port 70000 is not a port number"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, _, stderr := m.meshctl(tt.args...)
			if code != tt.wantCode || !strings.Contains(stderr, tt.wantErr) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr, tt.wantCode, tt.wantErr)
			}
		})
	}
	// meshd not running at all.
	var out, errOut strings.Builder
	code := run([]string{"proxy-status", "--meshd", "127.0.0.1:1"}, &out, &errOut)
	if code != exitFailed || !strings.Contains(errOut.String(), "cannot reach meshd's debug API at http://127.0.0.1:1") {
		t.Errorf("unreachable meshd: exit %d, stderr %q", code, errOut.String())
	}
}

// TestClusterTLSMode covers the inference rules one by one.
func TestClusterTLSMode(t *testing.T) {
	upstream := func(common *tlsv3.CommonTlsContext) *corev3.TransportSocket {
		return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{
			TypedConfig: mustAny(t, &tlsv3.UpstreamTlsContext{CommonTlsContext: common}),
		}}
	}
	istio := upstream(&tlsv3.CommonTlsContext{TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "default"}}})
	tests := []struct {
		name    string
		cluster *clusterv3.Cluster
		want    string
	}{
		{"no socket", &clusterv3.Cluster{}, "DISABLE"},
		{"mesh cert via SDS", &clusterv3.Cluster{TransportSocket: istio}, "ISTIO_MUTUAL"},
		{"mesh cert via provider (proxyless)", &clusterv3.Cluster{TransportSocket: upstream(&tlsv3.CommonTlsContext{
			TlsCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{InstanceName: "default"},
		})}, "ISTIO_MUTUAL"},
		{"own client cert", &clusterv3.Cluster{TransportSocket: upstream(&tlsv3.CommonTlsContext{
			TlsCertificates: []*tlsv3.TlsCertificate{{}},
		})}, "MUTUAL"},
		{"server cert only", &clusterv3.Cluster{TransportSocket: upstream(&tlsv3.CommonTlsContext{})}, "SIMPLE"},
		{"auto", &clusterv3.Cluster{TransportSocketMatches: []*clusterv3.Cluster_TransportSocketMatch{
			{Name: "tlsMode-istio", TransportSocket: istio}, {Name: "tlsMode-disabled"},
		}}, "auto (mTLS to in-mesh endpoints)"},
	}
	for _, tt := range tests {
		if got := clusterTLSMode(tt.cluster); got != tt.want {
			t.Errorf("%s: clusterTLSMode = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestChainMatch(t *testing.T) {
	tests := []struct {
		m    *listenerv3.FilterChainMatch
		want string
	}{
		{nil, "ALL"},
		{&listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer"}, "raw_buffer"},
		{&listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(8080), TransportProtocol: "tls", ApplicationProtocols: []string{"istio", "h2"}}, "dst port 8080; tls; ALPN istio,h2"},
		{&listenerv3.FilterChainMatch{SourcePrefixRanges: []*corev3.CidrRange{cidr("10.0.0.1"), cidr("10.0.0.2"), cidr("10.0.0.3"), cidr("10.0.0.4")}}, "src addr 10.0.0.1/32,10.0.0.2/32 +2 more"},
		{&listenerv3.FilterChainMatch{ServerNames: []string{"outbound_.8080_._.a.default.svc.cluster.local"}}, "SNI outbound_.8080_._.a.default.svc.cluster.local"},
	}
	for i, tt := range tests {
		if got := chainMatch(tt.m); got != tt.want {
			t.Errorf("case %d: chainMatch = %q, want %q", i, got, tt.want)
		}
	}
}

func cidr(ip string) *corev3.CidrRange {
	return &corev3.CidrRange{AddressPrefix: ip, PrefixLen: wrapperspb.UInt32(32)}
}

func TestFQDNMatches(t *testing.T) {
	const fqdn = "stock.default.svc.cluster.local"
	for want, ok := range map[string]bool{"": true, fqdn: true, "stock": true, "stock.default": true, "sto": false, "stock.other": false, "stock.default.svc.cluster.local.": false} {
		if got := fqdnMatches(fqdn, want); got != ok {
			t.Errorf("fqdnMatches(%q, %q) = %v, want %v", fqdn, want, got, ok)
		}
	}
}
