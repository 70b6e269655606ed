package translate

import (
	"net/netip"
	"strconv"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

// Constructors for the resources a proxyless gRPC workload receives. They
// are shaped by what gRPC-Go accepts (gRFC A27, A29, A36, A41), which is
// narrower than Envoy: gRPC NACKs listener filters, use_original_dst,
// tls_params, SDS secret configs, transport_socket_matches, SAN matchers on
// the server, duplicate HTTP filter names and an HTTP filter list that does
// not end with the router; it drops filter chains that match on
// destination_port, a transport_protocol other than "raw_buffer",
// application_protocols or server_names; and it ignores a locality without
// weight.

// maxSNILength is the longest server name TLS allows; gRPC NACKs longer ones
// when it reads sni at all.
const maxSNILength = 255

// serverListener describes one proxyless server listener.
type serverListener struct {
	ip   string
	port uint32
	mode policy.MTLSMode
	// meshSources are the addresses of in-mesh workloads, which must use
	// mTLS on a PERMISSIVE port.
	meshSources []*corev3.CidrRange
	// filters are the RBAC filters, in order; the router is appended.
	filters []*hcmv3.HttpFilter
}

// ProxylessServerListener is the listener a gRPC server on ip:port asks
// for. Its address must equal the one the server listens on, or gRPC stops
// serving. The chains follow the port's mTLS mode:
//
//   - STRICT: one mTLS chain;
//   - DISABLE: one plaintext chain;
//   - PERMISSIVE: an mTLS chain matching the in-mesh workloads' source
//     addresses, and a plaintext default chain for every other caller. gRPC
//     cannot look at the first bytes of a connection to tell TLS from
//     plaintext as Envoy's tls_inspector does, so the caller's address
//     decides instead; without in-mesh addresses there is no mTLS chain.
//
// Every matched chain says transport_protocol "raw_buffer", mTLS chains
// too. gRFC A36 defines transport_protocol as matching only "raw_buffer"
// (gRPC has no listener filters to detect TLS; the TLS handshake happens
// after the chain is chosen), and gRPC-Go drops every chain with an empty
// transport_protocol once one chain says "raw_buffer", so the chains of a
// listener must agree. Some implementations skip a chain that leaves it
// empty; "raw_buffer" is the one value all of them match.
func ProxylessServerListener(c serverListener) *listenerv3.Listener {
	l := &listenerv3.Listener{
		Name:             ServerListenerName(c.ip, c.port),
		Address:          socketAddress(c.ip, c.port),
		TrafficDirection: corev3.TrafficDirection_INBOUND,
	}
	chain := func(tls bool) *listenerv3.FilterChain {
		kind := kindPlaintext
		if tls {
			kind = kindMTLS
		}
		fc := &listenerv3.FilterChain{
			Name:             inboundChainName(c.port, kind),
			FilterChainMatch: &listenerv3.FilterChainMatch{TransportProtocol: transportPlaintext},
			Filters:          []*listenerv3.Filter{proxylessServerHCM(c.port, c.filters)},
		}
		if tls {
			fc.TransportSocket = ProxylessDownstreamMTLS()
		}
		return fc
	}
	switch c.mode {
	case policy.ModeStrict:
		l.FilterChains = []*listenerv3.FilterChain{chain(true)}
	case policy.ModeDisable:
		l.FilterChains = []*listenerv3.FilterChain{chain(false)}
	default:
		if len(c.meshSources) > 0 {
			mtls := chain(true)
			mtls.FilterChainMatch.SourcePrefixRanges = c.meshSources
			l.FilterChains = []*listenerv3.FilterChain{mtls}
		}
		// The default chain is not matched, so it needs no match.
		l.DefaultFilterChain = chain(false)
		l.DefaultFilterChain.FilterChainMatch = nil
	}
	return l
}

// proxylessServerHCM serves every RPC in the server itself: gRPC requires
// non_forwarding_action routes on the server side.
func proxylessServerHCM(port uint32, filters []*hcmv3.HttpFilter) *listenerv3.Filter {
	p := strconv.FormatUint(uint64(port), 10)
	m := &hcmv3.HttpConnectionManager{
		StatPrefix: "inbound_" + p,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: InboundClusterName(port),
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    "inbound|grpc|" + p,
				Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Name:   "default",
					Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_NonForwardingAction{NonForwardingAction: &routev3.NonForwardingAction{}},
				}},
			}},
		}},
		HttpFilters: append(append([]*hcmv3.HttpFilter(nil), filters...), routerFilter()),
	}
	return &listenerv3.Filter{
		Name:       wellknown.HTTPConnectionManager,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(m)},
	}
}

// ProxylessClientListener is the API listener for one authority a gRPC
// client may dial (xds:///<authority>). Its route configuration comes over
// ADS; the router is the only HTTP filter (gRPC NACKs an empty list).
func ProxylessClientListener(authority, route string) *listenerv3.Listener {
	m := &hcmv3.HttpConnectionManager{
		StatPrefix: "outbound_" + authority,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: route,
			ConfigSource:    adsConfigSource(),
		}},
		HttpFilters: []*hcmv3.HttpFilter{routerFilter()},
	}
	return &listenerv3.Listener{
		Name:        authority,
		ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(m)},
	}
}

func routerFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{
		Name:       wellknown.Router,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})},
	}
}

// ProxylessRouteConfiguration is the route configuration of one service
// port, shared by all of its client listeners: one virtual host whose
// domains are every authority form, routing everything to the cluster.
func ProxylessRouteConfiguration(name, virtualHost string, domains []string, cluster string) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name: name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    virtualHost,
			Domains: domains,
			Routes: []*routev3.Route{{
				Name:  "default",
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
				}},
			}},
		}},
	}
}

// ProxylessCluster is the EDS cluster for one service port; socket is its
// transport, nil for plaintext.
func ProxylessCluster(name string, socket *corev3.TransportSocket) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{
			EdsConfig:   adsConfigSource(),
			ServiceName: name,
		},
		LbPolicy:        clusterv3.Cluster_ROUND_ROBIN,
		TransportSocket: socket,
	}
}

// ProxylessClusterLoadAssignment lists the usable endpoints (as for Envoy)
// in one locality. gRPC needs the locality to be present and its weight to
// be non-zero (it NACKs a missing locality and silently drops a zero
// weight), and NACKs two endpoints with one address, so duplicates are
// dropped. No transport-socket metadata: gRPC chooses TLS per cluster.
func ProxylessClusterLoadAssignment(cluster string, eps []model.Endpoint, targetPort uint32) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: cluster}
	var lbs []*endpointv3.LbEndpoint
	seen := map[netip.AddrPort]bool{}
	for _, e := range usableEndpoints(eps) {
		port := uint32(e.Port)
		if e.Port <= 0 {
			port = targetPort
		}
		addr, err := netip.ParseAddr(e.IP)
		if err != nil || port == 0 || port > 65535 {
			continue // not dialable; discovery reports such endpoints
		}
		key := netip.AddrPortFrom(addr, uint16(port))
		if seen[key] {
			continue
		}
		seen[key] = true
		lbs = append(lbs, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: socketAddress(e.IP, port),
			}},
			LoadBalancingWeight: wrapperspb.UInt32(1),
		})
	}
	if len(lbs) > 0 {
		cla.Endpoints = []*endpointv3.LocalityLbEndpoints{{
			Locality:            &corev3.Locality{},
			LbEndpoints:         lbs,
			LoadBalancingWeight: wrapperspb.UInt32(uint32(len(lbs))),
		}}
	}
	return cla
}

// certificateProvider names the bootstrap's certificate provider instance.
func certificateProvider() *tlsv3.CertificateProviderPluginInstance {
	return &tlsv3.CertificateProviderPluginInstance{InstanceName: CertificateProviderInstance}
}

// ProxylessDownstreamMTLS is the server side of mesh mTLS for gRPC: the
// workload certificate and the trust bundle from the bootstrap's certificate
// provider, client certificates required. gRPC refuses SAN matchers on the
// server, so unlike Envoy it does not also check that the peer's SPIFFE ID
// is in this trust domain; the trust bundle holds only the mesh CA, and
// AuthorizationPolicy principals check identities exactly.
func ProxylessDownstreamMTLS() *corev3.TransportSocket {
	return tlsTransportSocket(&tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapBool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateProviderInstance: certificateProvider(),
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				CaCertificateProviderInstance: certificateProvider(),
			}},
		},
	})
}

// ProxylessUpstreamMTLS is the client side of mesh mTLS for gRPC toward one
// service port. sans are the identities the server may present; when
// empty, any SPIFFE ID of the trust domain is accepted. gRPC reads the
// sni only behind an experimental flag, and then NACKs one longer than TLS
// allows, so an over-long one is left out.
//
// The SAN check is written twice, saying the same thing. The typed
// matchers (match_typed_subject_alt_names, a SAN type per matcher) are the
// current xDS field, for implementations that read it. gRFC A29 specifies
// the deprecated match_subject_alt_names, and it is the only one gRPC-Go
// v1.85 reads (internal/xds/xdsclient/xdsresource/unmarshal_cds.go): with
// the typed field alone gRPC-Go would accept any server the mesh CA
// signed. An implementation that reads both (as Envoy does) accepts the
// union, which is the same set of identities.
func ProxylessUpstreamMTLS(sni string, sans []string, trustDomain string) *corev3.TransportSocket {
	typed := make([]*tlsv3.SubjectAltNameMatcher, 0, len(sans))
	untyped := make([]*matcherv3.StringMatcher, 0, len(sans))
	for _, s := range sans {
		typed = append(typed, sanMatcher(s))
		untyped = append(untyped, exactMatcher(s))
	}
	if len(sans) == 0 {
		typed = append(typed, uriSAN(prefixMatcher("spiffe://"+trustDomain+"/")))
		untyped = append(untyped, prefixMatcher("spiffe://"+trustDomain+"/"))
	}
	if len(sni) > maxSNILength {
		sni = ""
	}
	return tlsTransportSocket(&tlsv3.UpstreamTlsContext{
		Sni: sni,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateProviderInstance: certificateProvider(),
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				CaCertificateProviderInstance: certificateProvider(),
				MatchTypedSubjectAltNames:     typed,
				MatchSubjectAltNames:          untyped, //nolint:staticcheck // gRFC A29's field; see above
			}},
		},
	})
}

// hostPrefix is the /32 or /128 range of one address, for
// source_prefix_ranges.
func hostPrefix(a netip.Addr) *corev3.CidrRange {
	return &corev3.CidrRange{AddressPrefix: a.String(), PrefixLen: wrapperspb.UInt32(uint32(a.BitLen()))}
}
