package translate

import (
	"testing"

	"github.com/minimesh/minimesh/discovery/model"
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
