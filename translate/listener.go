package translate

import (
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Transport protocols the tls_inspector listener filter reports.
const (
	transportTLS       = "tls"
	transportPlaintext = "raw_buffer"
)

// inboundChain is one filter chain of virtualInbound before it becomes a
// proto: which port (0 for any port no service declares), whether it
// terminates mTLS, and its network filters.
type inboundChain struct {
	port    uint32
	tls     bool
	http    bool
	filters []*listenerv3.Filter
}

// VirtualInboundListener receives all inbound traffic redirected to 15006.
// original_dst restores the address the caller dialled so chains can match
// on destination_port; tls_inspector is added only when a chain matches on
// transport_protocol "tls" (it must read the ClientHello first), and
// http_inspector never, because no chain matches on application protocol.
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
	for _, c := range chains {
		fc := &listenerv3.FilterChain{
			Name:             inboundChainName(c.port, c.tls),
			FilterChainMatch: &listenerv3.FilterChainMatch{TransportProtocol: transportPlaintext},
			Filters:          c.filters,
		}
		if c.port != 0 {
			fc.FilterChainMatch.DestinationPort = wrapperspb.UInt32(c.port)
		}
		if c.tls {
			anyTLS = true
			fc.FilterChainMatch.TransportProtocol = transportTLS
			fc.TransportSocket = DownstreamMTLS(trustDomain, c.http)
		}
		l.FilterChains = append(l.FilterChains, fc)
	}
	if anyTLS {
		l.ListenerFilters = append(l.ListenerFilters, &listenerv3.ListenerFilter{
			Name:       wellknown.TLSInspector,
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&tlsinspectorv3.TlsInspector{})},
		})
	}
	return l
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
