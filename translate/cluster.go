package translate

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// connectTimeout is Istio's default connect timeout.
var connectTimeout = durationpb.New(10 * time.Second)

// inboundBindAddress is the source address Istio's sidecar uses toward its
// own application, so iptables can tell that traffic from traffic it must
// redirect.
const inboundBindAddress = "127.0.0.6"

// Transport-socket match names and metadata, as Istio spells them: a
// ClusterLoadAssignment marks in-mesh endpoints with
// envoy.transport_socket_match {tlsMode: istio}, and the cluster picks mTLS
// for them and plaintext for the rest.
const (
	transportSocketMatchFilter = "envoy.transport_socket_match"
	tlsModeKey                 = "tlsMode"
	tlsModeIstio               = "istio"
	matchTLSModeIstio          = "tlsMode-istio"
	matchTLSModeDisabled       = "tlsMode-disabled"
	upstreamHTTPOptionsKey     = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

// clientTLS says what transport an outbound cluster uses.
type clientTLS struct {
	// auto picks mTLS per endpoint by metadata; socket is then the mTLS
	// socket for in-mesh endpoints.
	auto bool
	// socket is the transport for every endpoint (nil means plaintext).
	socket *corev3.TransportSocket
	// istio is set when socket is Istio mTLS (auto or ISTIO_MUTUAL), whose
	// ALPN may carry the mesh's markers.
	istio bool
}

// OutboundCluster is the EDS cluster for one service port.
func OutboundCluster(name string, proto Protocol, tls clientTLS) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{
			EdsConfig:   adsConfigSource(),
			ServiceName: name,
		},
		ConnectTimeout: connectTimeout,
		LbPolicy:       clusterv3.Cluster_ROUND_ROBIN,
	}
	c.TypedExtensionProtocolOptions = upstreamProtocolOptions(proto)
	switch {
	case tls.auto:
		c.TransportSocketMatches = []*clusterv3.Cluster_TransportSocketMatch{
			{
				Name:            matchTLSModeIstio,
				Match:           &structpb.Struct{Fields: map[string]*structpb.Value{tlsModeKey: structpb.NewStringValue(tlsModeIstio)}},
				TransportSocket: tls.socket,
			},
			{
				// An empty match matches every endpoint the first entry did not.
				Name:            matchTLSModeDisabled,
				Match:           &structpb.Struct{},
				TransportSocket: rawBufferTransportSocket(),
			},
		}
	case tls.socket != nil:
		c.TransportSocket = tls.socket
	}
	return c
}

// InboundCluster reaches the local application. It is ORIGINAL_DST: the
// destination is the address the caller dialled (pod IP and target port),
// restored by the original_dst listener filter, so every replica of a
// workload shares one configuration.
func InboundCluster(targetPort uint32, proto Protocol) *clusterv3.Cluster {
	c := originalDstCluster(InboundClusterName(targetPort))
	c.UpstreamBindConfig = &corev3.BindConfig{SourceAddress: &corev3.SocketAddress{Address: inboundBindAddress, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0}}}
	c.TypedExtensionProtocolOptions = upstreamProtocolOptions(proto)
	return c
}

// upstreamProtocolOptions is how a cluster speaks HTTP to a port of this
// protocol: HTTP/2 to an HTTP/2 port, and on a sniffed port whatever the
// request came in with (HTTP/1.1 or h2c), as Istio's clusters for such
// ports do. nil leaves Envoy's default, HTTP/1.1.
func upstreamProtocolOptions(proto Protocol) map[string]*anypbAny {
	switch proto {
	case ProtocolHTTP2:
		return http2ProtocolOptions()
	case ProtocolUnknown:
		return map[string]*anypbAny{
			upstreamHTTPOptionsKey: mustAny(&httpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{
					UseDownstreamProtocolConfig: &httpv3.HttpProtocolOptions_UseDownstreamHttpConfig{
						HttpProtocolOptions:  &corev3.Http1ProtocolOptions{},
						Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
					},
				},
			}),
		}
	}
	return nil
}

// PassthroughClusters are the ORIGINAL_DST clusters for traffic to
// destinations the mesh does not know (outbound) and to ports no service
// declares (inbound).
func PassthroughClusters() []*clusterv3.Cluster {
	in := originalDstCluster(InboundPassthroughCluster)
	in.UpstreamBindConfig = &corev3.BindConfig{SourceAddress: &corev3.SocketAddress{Address: inboundBindAddress, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0}}}
	return []*clusterv3.Cluster{in, originalDstCluster(PassthroughCluster)}
}

func originalDstCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:       connectTimeout,
	}
}

func http2ProtocolOptions() map[string]*anypbAny {
	return map[string]*anypbAny{
		upstreamHTTPOptionsKey: mustAny(&httpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
				ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
						Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
					},
				},
			},
		}),
	}
}
