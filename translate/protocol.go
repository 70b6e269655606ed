package translate

import (
	"strings"

	"github.com/minimesh/minimesh/discovery/model"
)

// Protocol is what a service port carries, decided once per port by
// PortProtocol; everything else (listener shapes, RBAC kind, upstream
// HTTP/2) follows from it.
type Protocol uint8

const (
	// ProtocolUnknown is sniffed per connection, as in Istio: an
	// http_inspector tells HTTP/1.1 and h2c from anything else, HTTP gets
	// the HTTP connection manager and the rest TCP proxy.
	ProtocolUnknown Protocol = iota
	// ProtocolHTTP is HTTP/1.1 (http, http_proxy, grpc-web, kubernetes.io/ws).
	ProtocolHTTP
	// ProtocolHTTP2 is HTTP/2 in cleartext (http2, grpc, kubernetes.io/h2c).
	ProtocolHTTP2
	// ProtocolTCP is opaque bytes: tcp, and protocols the sidecar does not
	// parse (https, tls, mongo, redis, mysql, kubernetes.io/wss), which
	// Istio also proxies as TCP by default.
	ProtocolTCP
)

func (p Protocol) String() string {
	switch p {
	case ProtocolHTTP:
		return "HTTP"
	case ProtocolHTTP2:
		return "HTTP2"
	case ProtocolTCP:
		return "TCP"
	default:
		return "unknown (sniffed)"
	}
}

// IsHTTP reports whether the port always carries HTTP.
func (p Protocol) IsHTTP() bool { return p == ProtocolHTTP || p == ProtocolHTTP2 }

// wellKnownTCPPorts are the ports Istio never sniffs when nothing declares
// their protocol: server-first protocols (SMTP, MySQL) would wait for the
// inspector, and DNS and MongoDB are not HTTP.
var wellKnownTCPPorts = map[int32]bool{25: true, 53: true, 3306: true, 27017: true}

// PortProtocol decides a service port's protocol the way Istio does
// (istio.io/docs/ops/configuration/traffic-management/protocol-selection):
//
//  1. appProtocol, when set, stands in for the name entirely; besides
//     Istio's names it may be one of Kubernetes' standard values
//     kubernetes.io/h2c (HTTP2), kubernetes.io/ws (HTTP) and
//     kubernetes.io/wss (TLS, so TCP).
//  2. Otherwise the port name: its prefix up to the first "-" ("http",
//     "http-api"), compared case-insensitively with http, http_proxy,
//     http2, grpc, https, tls, tcp, mongo, redis, mysql; "grpc-web" is a
//     prefix of its own ("grpc-web-ui").
//  3. Anything else is unknown and sniffed, except on the well-known
//     ports 25, 53, 3306 and 27017, which are TCP.
//
// UDP and SCTP ports never get here (see isTCP). Proxyless gRPC does not
// use this for its own servers: every port of a gRPC server is HTTP/2.
func PortProtocol(sp model.ServicePort) Protocol {
	name := sp.Name
	if sp.AppProtocol != "" {
		name = sp.AppProtocol
		switch strings.ToLower(name) {
		case "kubernetes.io/h2c":
			return ProtocolHTTP2
		case "kubernetes.io/ws":
			return ProtocolHTTP
		case "kubernetes.io/wss":
			return ProtocolTCP
		}
	}
	const grpcWeb = "grpc-web"
	if len(name) >= len(grpcWeb) && strings.EqualFold(name[:len(grpcWeb)], grpcWeb) {
		return ProtocolHTTP
	}
	if i := strings.IndexByte(name, '-'); i >= 0 {
		name = name[:i]
	}
	switch strings.ToLower(name) {
	case "http", "http_proxy":
		return ProtocolHTTP
	case "http2", "grpc":
		return ProtocolHTTP2
	case "tcp", "https", "tls", "mongo", "redis", "mysql":
		return ProtocolTCP
	}
	if wellKnownTCPPorts[sp.Port] {
		return ProtocolTCP
	}
	return ProtocolUnknown
}
