package translate

import "github.com/minimesh/minimesh/policy"

// chainSpec is one inbound filter chain of a port before it has filters:
// what it matches and what it does with the connection.
type chainSpec struct {
	// kind ends the chain's name (see inboundChainName).
	kind string
	// transport is the transport_protocol matched: transportTLS or
	// transportPlaintext.
	transport string
	// alpn is the application_protocols matched; empty matches any.
	alpn []string
	// mtls terminates mesh mTLS; a TLS chain without it passes the TLS
	// through to the application untouched.
	mtls bool
	// http serves the chain with the HTTP connection manager (HTTP RBAC);
	// otherwise it is TCP proxy (network RBAC).
	http bool
}

// Chain kinds, as they end chain names.
const (
	kindMTLS          = "mtls"
	kindPlaintext     = "plaintext"
	kindTLS           = "tls"
	kindMTLSHTTP      = "mtls-http"
	kindPlaintextHTTP = "plaintext-http"
)

// inboundChainSpecs decides the chains of one inbound port from its
// effective mTLS mode and protocol, following Istio's inbound filter chain
// matches (pilot/pkg/networking/core/filterchain_options.go):
//
//   - STRICT takes TLS only, and terminates it as mTLS whatever the ALPN,
//     so a client without a mesh certificate is refused by the handshake.
//     A port of unknown protocol splits mTLS the client detected as HTTP
//     (alpnMeshHTTP) from the rest.
//   - PERMISSIVE terminates mTLS only when the client offers a mesh ALPN
//     value, and passes other TLS (HTTPS from a client outside the mesh)
//     to the application untouched, as plain TCP. A port declared HTTP has
//     no such chain, as in Istio: it cannot carry TLS of the application's
//     own. Plaintext goes to the plaintext chain; on a port of unknown
//     protocol http_inspector picks HTTP or TCP.
//   - DISABLE takes plaintext only, sniffed the same way.
//
// UNSET never gets here (the policy package resolves it) and is treated as
// PERMISSIVE, Istio's default.
func inboundChainSpecs(mode policy.MTLSMode, proto Protocol) []chainSpec {
	httpPort := proto.IsHTTP()
	sniffed := proto == ProtocolUnknown
	mtls := func(alpn []string) chainSpec {
		return chainSpec{kind: kindMTLS, transport: transportTLS, alpn: alpn, mtls: true, http: httpPort}
	}
	plaintext := chainSpec{kind: kindPlaintext, transport: transportPlaintext, http: httpPort}
	passTLS := chainSpec{kind: kindTLS, transport: transportTLS}
	mtlsHTTP := chainSpec{kind: kindMTLSHTTP, transport: transportTLS, alpn: alpnMeshHTTP, mtls: true, http: true}
	plaintextHTTP := chainSpec{kind: kindPlaintextHTTP, transport: transportPlaintext, alpn: alpnPlainHTTP, http: true}

	switch mode {
	case policy.ModeStrict:
		if sniffed {
			return []chainSpec{mtlsHTTP, mtls(nil)}
		}
		return []chainSpec{mtls(nil)}
	case policy.ModeDisable:
		if sniffed {
			return []chainSpec{plaintextHTTP, plaintext}
		}
		return []chainSpec{plaintext}
	default:
		switch {
		case sniffed:
			return []chainSpec{mtlsHTTP, plaintextHTTP, mtls(alpnMeshTCP), plaintext, passTLS}
		case httpPort:
			return []chainSpec{mtls(alpnMeshAnyOrH2), plaintext}
		default:
			return []chainSpec{mtls(alpnMeshAny), passTLS, plaintext}
		}
	}
}
