package translate

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

// TestPortProtocol is Istio's protocol selection, rule by rule.
func TestPortProtocol(t *testing.T) {
	cases := []struct {
		name, appProtocol string
		port              int32
		want              Protocol
	}{
		// port name prefixes, alone or before "-", any case
		{"http", "", 8080, ProtocolHTTP},
		{"http-web", "", 8080, ProtocolHTTP},
		{"HTTP", "", 8080, ProtocolHTTP},
		{"http_proxy", "", 8080, ProtocolHTTP},
		{"http2", "", 8080, ProtocolHTTP2},
		{"http2-api", "", 8080, ProtocolHTTP2},
		{"grpc", "", 8080, ProtocolHTTP2},
		{"grpc-api", "", 8080, ProtocolHTTP2},
		{"grpc-web", "", 8080, ProtocolHTTP},
		{"grpc-web-ui", "", 8080, ProtocolHTTP},
		{"GRPC-Web", "", 8080, ProtocolHTTP},
		{"tcp", "", 8080, ProtocolTCP},
		{"tcp-legacy", "", 8080, ProtocolTCP},
		{"https", "", 8443, ProtocolTCP},
		{"tls-api", "", 8443, ProtocolTCP},
		{"mongo", "", 8080, ProtocolTCP},
		{"redis", "", 6379, ProtocolTCP},
		{"mysql", "", 8080, ProtocolTCP},
		// names Istio does not know are sniffed
		{"", "", 8080, ProtocolUnknown},
		{"web", "", 8080, ProtocolUnknown},
		{"httpx", "", 8080, ProtocolUnknown},
		{"api-http", "", 8080, ProtocolUnknown},
		// ... except on well-known ports
		{"", "", 25, ProtocolTCP},
		{"", "", 53, ProtocolTCP},
		{"db", "", 3306, ProtocolTCP},
		{"", "", 27017, ProtocolTCP},
		{"http", "", 3306, ProtocolHTTP}, // a declared protocol wins on them
		// appProtocol replaces the name
		{"tcp", "http", 8080, ProtocolHTTP},
		{"http", "tcp", 8080, ProtocolTCP},
		{"web", "grpc", 8080, ProtocolHTTP2},
		{"web", "grpc-web", 8080, ProtocolHTTP},
		{"web", "HTTP2", 8080, ProtocolHTTP2},
		{"web", "https", 8080, ProtocolTCP},
		{"web", "kubernetes.io/h2c", 8080, ProtocolHTTP2},
		{"web", "kubernetes.io/ws", 8080, ProtocolHTTP},
		{"web", "kubernetes.io/wss", 8080, ProtocolTCP},
		{"http", "example.com/custom", 8080, ProtocolUnknown}, // not the name's HTTP
		{"http", "example.com/custom", 3306, ProtocolTCP},
	}
	for _, c := range cases {
		got := PortProtocol(model.ServicePort{Name: c.name, AppProtocol: c.appProtocol, Port: c.port})
		if got != c.want {
			t.Errorf("name %q appProtocol %q port %d: got %v, want %v", c.name, c.appProtocol, c.port, got, c.want)
		}
	}
}

// TestInboundChainSpecs is Istio's inbound filter chain matches: which
// chains a port gets for each mTLS mode and protocol, in order.
func TestInboundChainSpecs(t *testing.T) {
	type c = string // kind/transport[/alpn]/mtls?/http?
	cases := []struct {
		mode  policy.MTLSMode
		proto Protocol
		want  []c
	}{
		{policy.ModeStrict, ProtocolHTTP, []c{"mtls tls [] mtls http"}},
		{policy.ModeStrict, ProtocolTCP, []c{"mtls tls [] mtls tcp"}},
		{policy.ModeStrict, ProtocolUnknown, []c{"mtls-http tls [istio-http/1.0 istio-http/1.1 istio-h2] mtls http", "mtls tls [] mtls tcp"}},
		{policy.ModePermissive, ProtocolHTTP2, []c{"mtls tls [istio istio-peer-exchange istio-http/1.0 istio-http/1.1 istio-h2 h2] mtls http", "plaintext raw_buffer [] - http"}},
		{policy.ModePermissive, ProtocolTCP, []c{"mtls tls [istio istio-peer-exchange istio-http/1.0 istio-http/1.1 istio-h2] mtls tcp", "tls tls [] - tcp", "plaintext raw_buffer [] - tcp"}},
		{policy.ModePermissive, ProtocolUnknown, []c{
			"mtls-http tls [istio-http/1.0 istio-http/1.1 istio-h2] mtls http",
			"plaintext-http raw_buffer [http/1.1 h2c] - http",
			"mtls tls [istio-peer-exchange istio] mtls tcp",
			"plaintext raw_buffer [] - tcp",
			"tls tls [] - tcp",
		}},
		{policy.ModeDisable, ProtocolHTTP, []c{"plaintext raw_buffer [] - http"}},
		{policy.ModeDisable, ProtocolUnknown, []c{"plaintext-http raw_buffer [http/1.1 h2c] - http", "plaintext raw_buffer [] - tcp"}},
	}
	for _, tc := range cases {
		var got []c
		for _, s := range inboundChainSpecs(tc.mode, tc.proto) {
			m, h := "-", "tcp"
			if s.mtls {
				m = "mtls"
			}
			if s.http {
				h = "http"
			}
			got = append(got, fmt.Sprintf("%s %s %v %s %s", s.kind, s.transport, s.alpn, m, h))
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%s %v (-want +got):\n%s", tc.mode, tc.proto, diff)
		}
	}
}
