package translate

import (
	"net/netip"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"

	"github.com/minimesh/minimesh/policy"
)

// ALPN values, as Istio spells them. A mesh client offers
// "istio-peer-exchange" and "istio" on every mTLS connection (plus "h2" to
// an HTTP/2 port), which is how a server tells mesh mTLS from a TLS
// client of the application's own; a client that sniffed HTTP says so with
// "istio-http/1.1" or "istio-h2" (Istio's istio.alpn filter; minimesh sets
// the same through Envoy's filter state, see sniffedHTTPALPN).
var (
	alpnIstio     = []string{"istio-peer-exchange", "istio"}
	alpnIstioH2   = []string{"istio-peer-exchange", "istio", "h2"}
	alpnInboundH2 = []string{"h2", "http/1.1"}

	// alpnMeshAny is every value a mesh mTLS client may offer: what an
	// inbound mTLS chain of a declared port matches.
	alpnMeshAny = []string{"istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"}
	// alpnMeshHTTP marks mesh mTLS that the client detected as HTTP.
	alpnMeshHTTP = []string{"istio-http/1.0", "istio-http/1.1", "istio-h2"}
	// alpnMeshTCP is mesh mTLS the client could not identify as HTTP.
	alpnMeshTCP = []string{"istio-peer-exchange", "istio"}
	// alpnPlainHTTP is what http_inspector reports for plaintext HTTP it
	// serves as HTTP (Istio leaves HTTP/1.0 out by default: it goes to TCP).
	alpnPlainHTTP = []string{"http/1.1", "h2c"}
	// alpnMeshAnyOrH2 adds "h2" to alpnMeshAny for ports declared HTTP:
	// proxyless gRPC clients (gRPC-Go's xDS credentials) offer only "h2".
	// Istio leaves it out, so such a client finds no chain on a PERMISSIVE
	// HTTP port there; on a port declared HTTP no other TLS has a chain,
	// so matching "h2" takes nothing from anyone.
	alpnMeshAnyOrH2 = append(append([]string(nil), alpnMeshAny...), "h2")
)

// systemCABundle is where Envoy images (Istio's too) keep the public roots.
// SIMPLE and MUTUAL without caCertificates verify against it, as Istio does,
// instead of skipping verification.
const systemCABundle = "/etc/ssl/certs/ca-certificates.crt"

// adsConfigSource points at the ADS stream the proxy already has; minimesh
// serves every resource type, secrets included, on that one stream.
func adsConfigSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

func sdsSecret(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: adsConfigSource()}
}

// rawBufferTransportSocket is plaintext, spelled out so a
// transport_socket_matches entry can name it.
func rawBufferTransportSocket() *corev3.TransportSocket {
	return &corev3.TransportSocket{
		Name:       wellknown.TransportSocketRawBuffer,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&rawbufferv3.RawBuffer{})},
	}
}

func tlsTransportSocket(ctx proto.Message) *corev3.TransportSocket {
	return &corev3.TransportSocket{
		Name:       wellknown.TransportSocketTLS,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)},
	}
}

// istioValidationContext trusts ROOTCA (from SDS) and checks the peer's SANs.
func istioValidationContext(sans []*tlsv3.SubjectAltNameMatcher) *tlsv3.CommonTlsContext_CombinedValidationContext {
	return &tlsv3.CommonTlsContext_CombinedValidationContext{
		CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: sans},
			ValidationContextSdsSecretConfig: sdsSecret(SecretRootCA),
		},
	}
}

// DownstreamMTLS is the server side of Istio mTLS: the workload certificate
// from SDS "default", client certificates required and verified against
// ROOTCA, and only SPIFFE IDs of this trust domain accepted.
func DownstreamMTLS(trustDomain string, http bool) *corev3.TransportSocket {
	ctx := &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapBool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams:                      &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2},
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsSecret(SecretDefault)},
			ValidationContextType: istioValidationContext([]*tlsv3.SubjectAltNameMatcher{
				uriSAN(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://" + trustDomain + "/"}}),
			}),
		},
	}
	if http {
		ctx.CommonTlsContext.AlpnProtocols = alpnInboundH2
	}
	return tlsTransportSocket(ctx)
}

// UpstreamIstioMTLS is the client side of Istio mTLS toward one service
// port. sans are the SPIFFE IDs the server may present; when empty, any
// identity of the trust domain is accepted (the service has no known
// service accounts yet).
func UpstreamIstioMTLS(sni string, sans []string, trustDomain string, h2 bool) *corev3.TransportSocket {
	matchers := make([]*tlsv3.SubjectAltNameMatcher, 0, len(sans))
	for _, s := range sans {
		matchers = append(matchers, sanMatcher(s))
	}
	if len(matchers) == 0 {
		matchers = append(matchers, uriSAN(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://" + trustDomain + "/"}}))
	}
	alpn := alpnIstio
	if h2 {
		alpn = alpnIstioH2
	}
	return tlsTransportSocket(&tlsv3.UpstreamTlsContext{
		Sni: sni,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams:                      &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2},
			AlpnProtocols:                  alpn,
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsSecret(SecretDefault)},
			ValidationContextType:          istioValidationContext(matchers),
		},
	})
}

// UpstreamFileTLS is SIMPLE or MUTUAL TLS with the DestinationRule's files,
// which are paths on the client proxy's file system (Istio semantics).
func UpstreamFileTLS(s *policy.ClientTLSSettings, h2 bool) *corev3.TransportSocket {
	common := &tlsv3.CommonTlsContext{}
	if h2 {
		common.AlpnProtocols = []string{"h2"}
	}
	if s.Mode == policy.TLSMutual {
		common.TlsCertificates = []*tlsv3.TlsCertificate{{
			CertificateChain: fileSource(s.ClientCertificate),
			PrivateKey:       fileSource(s.PrivateKey),
		}}
	}
	if s.InsecureSkipVerify == nil || !*s.InsecureSkipVerify {
		ca := s.CACertificates
		if ca == "" {
			ca = systemCABundle
		}
		vc := &tlsv3.CertificateValidationContext{TrustedCa: fileSource(ca)}
		for _, san := range s.SubjectAltNames {
			vc.MatchTypedSubjectAltNames = append(vc.MatchTypedSubjectAltNames, sanMatcher(san))
		}
		common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}
	}
	return tlsTransportSocket(&tlsv3.UpstreamTlsContext{Sni: s.SNI, CommonTlsContext: common})
}

func fileSource(path string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}
}

func uriSAN(m *matcherv3.StringMatcher) *tlsv3.SubjectAltNameMatcher {
	return &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: m}
}

// sanMatcher matches one expected SAN exactly, in the SAN field its form
// implies: URIs (SPIFFE IDs) as URI, addresses as IP, anything else as DNS.
func sanMatcher(san string) *tlsv3.SubjectAltNameMatcher {
	t := tlsv3.SubjectAltNameMatcher_DNS
	switch {
	case strings.Contains(san, "://"):
		t = tlsv3.SubjectAltNameMatcher_URI
	case isIP(san):
		t = tlsv3.SubjectAltNameMatcher_IP_ADDRESS
	}
	return &tlsv3.SubjectAltNameMatcher{SanType: t, Matcher: exactMatcher(san)}
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}
