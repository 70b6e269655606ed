package translate

import (
	"slices"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	setfilterstatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/set_filter_state/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	setfilterstatehttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/set_filter_state/v3"
	httpinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Transport protocols the tls_inspector listener filter reports.
const (
	transportTLS       = "tls"
	transportPlaintext = "raw_buffer"
)

// inboundChain is one filter chain of virtualInbound before it becomes a
// proto: which port (0 for any port no service declares), what it matches
// and does (chainSpec), and its network filters.
type inboundChain struct {
	port    uint32
	spec    chainSpec
	filters []*listenerv3.Filter
}

// VirtualInboundListener receives all inbound traffic redirected to 15006.
// original_dst restores the address the caller dialled so chains can match
// on destination_port. tls_inspector reads the ClientHello (transport
// protocol and ALPN) when a chain matches TLS; http_inspector reads the
// first bytes of plaintext connections to ports whose protocol is sniffed
// (and is disabled on every other port, so server-first protocols there
// never wait for it), reporting "http/1.1" or "h2c" as application protocol.
func VirtualInboundListener(chains []inboundChain, trustDomain string) *listenerv3.Listener {
	l := &listenerv3.Listener{
		Name:             VirtualInboundListenerName,
		Address:          socketAddress("0.0.0.0", VirtualInboundPort),
		TrafficDirection: corev3.TrafficDirection_INBOUND,
		ListenerFilters: []*listenerv3.ListenerFilter{{
			Name:       wellknown.OriginalDestination,
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&originaldstv3.OriginalDst{})},
		}},
		// Server-first protocols (MySQL, SMTP) send nothing for the
		// inspector to read; let them through after the timeout rather than
		// closing them.
		ContinueOnListenerFiltersTimeout: true,
	}
	anyTLS := false
	var sniffed []uint32
	for _, c := range chains {
		fc := &listenerv3.FilterChain{
			Name: inboundChainName(c.port, c.spec.kind),
			FilterChainMatch: &listenerv3.FilterChainMatch{
				TransportProtocol:    c.spec.transport,
				ApplicationProtocols: c.spec.alpn,
			},
			Filters: c.filters,
		}
		if c.port != 0 {
			fc.FilterChainMatch.DestinationPort = wrapperspb.UInt32(c.port)
		}
		if c.spec.transport == transportTLS {
			anyTLS = true
		}
		if c.spec.transport == transportPlaintext && len(c.spec.alpn) > 0 && !slices.Contains(sniffed, c.port) {
			sniffed = append(sniffed, c.port)
		}
		if c.spec.mtls {
			fc.TransportSocket = DownstreamMTLS(trustDomain, c.spec.http)
		}
		l.FilterChains = append(l.FilterChains, fc)
	}
	if anyTLS {
		l.ListenerFilters = append(l.ListenerFilters, &listenerv3.ListenerFilter{
			Name:       wellknown.TLSInspector,
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&tlsinspectorv3.TlsInspector{})},
		})
	}
	if len(sniffed) > 0 {
		f := httpInspector()
		f.FilterDisabled = &listenerv3.ListenerFilterChainMatchPredicate{Rule: &listenerv3.ListenerFilterChainMatchPredicate_NotMatch{
			NotMatch: destinationPorts(sniffed),
		}}
		l.ListenerFilters = append(l.ListenerFilters, f)
	}
	return l
}

func httpInspector() *listenerv3.ListenerFilter {
	return &listenerv3.ListenerFilter{
		Name:       wellknown.HttpInspector,
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&httpinspectorv3.HttpInspector{})},
	}
}

// destinationPorts matches connections to any of ports (none is 0).
func destinationPorts(ports []uint32) *listenerv3.ListenerFilterChainMatchPredicate {
	var rules []*listenerv3.ListenerFilterChainMatchPredicate
	for _, p := range ports {
		rules = append(rules, &listenerv3.ListenerFilterChainMatchPredicate{
			Rule: &listenerv3.ListenerFilterChainMatchPredicate_DestinationPortRange{
				DestinationPortRange: &typev3.Int32Range{Start: int32(p), End: int32(p) + 1},
			},
		})
	}
	if len(rules) == 1 {
		return rules[0] // an or_match needs two rules
	}
	return &listenerv3.ListenerFilterChainMatchPredicate{Rule: &listenerv3.ListenerFilterChainMatchPredicate_OrMatch{
		OrMatch: &listenerv3.ListenerFilterChainMatchPredicate_MatchSet{Rules: rules},
	}}
}

// VirtualOutboundListener receives all outbound traffic redirected to 15001
// and hands each connection to the listener for its original destination
// (use_original_dst); connections no listener claims go to
// PassthroughCluster unchanged.
func VirtualOutboundListener(logs []*accesslogv3.AccessLog) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name:             VirtualOutboundListenerName,
		Address:          socketAddress("0.0.0.0", VirtualOutboundPort),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		UseOriginalDst:   wrapBool(true),
		FilterChains: []*listenerv3.FilterChain{{
			Name:    "PassthroughFilterChain",
			Filters: []*listenerv3.Filter{TCPProxy(PassthroughCluster, PassthroughCluster, logs...)},
		}},
	}
}

// OutboundHTTPListener is 0.0.0.0_<port>: every HTTP service on that port
// number, told apart by Host through the RDS route <port>. It does not bind:
// virtualOutbound hands it connections.
func OutboundHTTPListener(port uint32, logs []*accesslogv3.AccessLog) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name:             HTTPListenerName(port),
		Address:          socketAddress("0.0.0.0", port),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		BindToPort:       wrapBool(false),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{HTTPConnectionManager(hcmConfig{
				statPrefix: "outbound_" + HTTPListenerName(port),
				rds:        RouteName(port),
				accessLog:  logs,
			})},
		}},
	}
}

// OutboundTCPListener is <clusterIP>_<port> for one TCP service port.
func OutboundTCPListener(ip string, port uint32, cluster string, logs []*accesslogv3.AccessLog) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name:             TCPListenerName(ip, port),
		Address:          socketAddress(ip, port),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		BindToPort:       wrapBool(false),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{TCPProxy(cluster, cluster, logs...)},
		}},
	}
}

// TCPProxy forwards a connection to one cluster, logging it to logs.
func TCPProxy(statPrefix, cluster string, logs ...*accesslogv3.AccessLog) *listenerv3.Filter {
	return &listenerv3.Filter{
		Name: wellknown.TCPProxy,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(&tcpproxyv3.TcpProxy{
			StatPrefix:       statPrefix,
			ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster},
			AccessLog:        logs,
		})},
	}
}

// hcmConfig is what differs between the connection managers minimesh builds.
type hcmConfig struct {
	statPrefix string
	// rds names the route configuration to fetch; routeConfig is inlined
	// instead when rds is empty.
	rds         string
	routeConfig *routev3.RouteConfiguration
	// filters run before the router, in order.
	filters []*hcmv3.HttpFilter
	// mtls sets x-forwarded-client-cert from the verified peer certificate,
	// so the application can see the caller's SPIFFE ID as in Istio.
	mtls bool
	// accessLog logs every request (see AccessLogs).
	accessLog []*accesslogv3.AccessLog
}

// HTTPConnectionManager builds the HCM network filter. Paths are normalized
// before filters run (Istio's default "BASE" normalization), so an
// authorization rule on /admin cannot be bypassed with /x/../admin.
func HTTPConnectionManager(c hcmConfig) *listenerv3.Filter {
	m := &hcmv3.HttpConnectionManager{
		StatPrefix:    c.statPrefix,
		NormalizePath: wrapBool(true),
		AccessLog:     c.accessLog,
	}
	if c.rds != "" {
		m.RouteSpecifier = &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: c.rds,
			ConfigSource:    adsConfigSource(),
		}}
	} else {
		m.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: c.routeConfig}
	}
	if c.mtls {
		m.ForwardClientCertDetails = hcmv3.HttpConnectionManager_APPEND_FORWARD
		m.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{
			Subject: wrapBool(true), Dns: true, Uri: true,
		}
	}
	m.HttpFilters = append(append([]*hcmv3.HttpFilter(nil), c.filters...), &hcmv3.HttpFilter{
		Name:       wellknown.Router,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})},
	})
	return &listenerv3.Filter{
		Name:       wellknown.HTTPConnectionManager,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(m)},
	}
}

// setFilterStateFilterName is Envoy's set_filter_state HTTP filter.
const setFilterStateFilterName = "envoy.filters.http.set_filter_state"

// sniffedHTTPALPN is the ALPN a client offers on mesh mTLS for a request
// its sniffing listener detected as HTTP/1.1 or h2c, as Istio's istio.alpn
// filter sets it: the server's port is sniffed too, and only these values
// send the connection to its HTTP chain (alpnMeshHTTP). The upstream
// protocol is the downstream one (use_downstream_protocol), so the value
// follows the chain the request came in on. Istio's filter is not in
// upstream Envoy; Envoy's own set_filter_state writes the same override
// through the well-known filter state object
// envoy.network.application_protocols, which takes precedence over the
// cluster's alpn_protocols.
var sniffedHTTPALPN = map[string]string{
	"http/1.1": "istio-http/1.1,istio",
	"h2c":      "istio-h2,istio",
}

// OutboundSniffingListener is <clusterIP>_<port> for a service port whose
// protocol is unknown, shaped as Istio shapes it: http_inspector reads the
// first bytes; HTTP/1.1 and h2c go to an HTTP connection manager with the
// RDS route <fqdn>:<port>, anything else (HTTP/1.0 included, as in Istio's
// default) to TCP proxy. meshALPN marks the HTTP requests with
// sniffedHTTPALPN; it is set when the cluster's TLS is Istio mTLS, and
// must not be for SIMPLE or MUTUAL TLS, whose servers expect their own ALPN.
func OutboundSniffingListener(ip string, port uint32, fqdn, cluster string, meshALPN bool, logs []*accesslogv3.AccessLog) *listenerv3.Listener {
	l := &listenerv3.Listener{
		Name:             TCPListenerName(ip, port),
		Address:          socketAddress(ip, port),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		BindToPort:       wrapBool(false),
		ListenerFilters:  []*listenerv3.ListenerFilter{httpInspector()},
		// A server-first protocol sends nothing for the inspector to read.
		ContinueOnListenerFiltersTimeout: true,
	}
	for _, alpn := range alpnPlainHTTP {
		var filters []*hcmv3.HttpFilter
		if meshALPN {
			filters = append(filters, setUpstreamALPN(sniffedHTTPALPN[alpn]))
		}
		l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
			Name:             alpn,
			FilterChainMatch: &listenerv3.FilterChainMatch{ApplicationProtocols: []string{alpn}},
			Filters: []*listenerv3.Filter{HTTPConnectionManager(hcmConfig{
				statPrefix: "outbound_" + TCPListenerName(ip, port),
				rds:        SniffedRouteName(fqdn, port),
				filters:    filters,
				accessLog:  logs,
			})},
		})
	}
	l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
		Name:    "tcp",
		Filters: []*listenerv3.Filter{TCPProxy(cluster, cluster, logs...)},
	})
	return l
}

// setUpstreamALPN overrides the ALPN the upstream TLS connection offers
// (comma-separated) for the requests of this connection manager.
func setUpstreamALPN(alpn string) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{
		Name: setFilterStateFilterName,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&setfilterstatehttpv3.Config{
			OnRequestHeaders: []*setfilterstatev3.FilterStateValue{{
				Key: &setfilterstatev3.FilterStateValue_ObjectKey{ObjectKey: "envoy.network.application_protocols"},
				Value: &setfilterstatev3.FilterStateValue_FormatString{FormatString: &corev3.SubstitutionFormatString{
					Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
						Specifier: &corev3.DataSource_InlineString{InlineString: alpn},
					}},
				}},
				SharedWithUpstream: setfilterstatev3.FilterStateValue_ONCE,
			}},
		})},
	}
}
