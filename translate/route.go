package translate

import (
	"strconv"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// noTimeout disables Envoy's 15s route timeout, as Istio does by default:
// the mesh should not cut long requests the application allows.
var noTimeout = durationpb.New(0)

// outboundVirtualHost is one HTTP service port as seen by callers.
type outboundVirtualHost struct {
	name    string
	domains []string
	cluster string
}

// RouteConfiguration is the RDS resource <port> shared by every HTTP service
// on that port number. Virtual hosts come in the order given (sorted by the
// caller); a final allow_any host passes requests for hosts the mesh does
// not know to their original destination, as Istio's default
// outboundTrafficPolicy ALLOW_ANY does.
func RouteConfiguration(port uint32, hosts []outboundVirtualHost) *routev3.RouteConfiguration {
	rc := &routev3.RouteConfiguration{
		Name:             RouteName(port),
		ValidateClusters: wrapBool(false),
	}
	for _, h := range hosts {
		rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{
			Name:    h.name,
			Domains: h.domains,
			Routes:  []*routev3.Route{defaultRoute(h.cluster)},
		})
	}
	rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{
		Name:    allowAnyVirtualHost,
		Domains: []string{"*"},
		Routes:  []*routev3.Route{defaultRoute(PassthroughCluster)},
	})
	return rc
}

// SniffedRouteConfiguration is the RDS resource <fqdn>:<port> of the
// sniffing listener of one service port. That listener matches the
// service's cluster IP, so every request on it is for the service,
// whatever its Host.
func SniffedRouteConfiguration(fqdn string, port uint32, cluster string) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name:             SniffedRouteName(fqdn, port),
		ValidateClusters: wrapBool(false),
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    VirtualHostName(fqdn, port),
			Domains: []string{"*"},
			Routes:  []*routev3.Route{defaultRoute(cluster)},
		}},
	}
}

// InboundRouteConfiguration is the route table inlined in an inbound HTTP
// connection manager: everything goes to the local application.
func InboundRouteConfiguration(targetPort uint32) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name:             InboundClusterName(targetPort),
		ValidateClusters: wrapBool(false),
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    "inbound|http|" + strconv.FormatUint(uint64(targetPort), 10),
			Domains: []string{"*"},
			Routes:  []*routev3.Route{defaultRoute(InboundClusterName(targetPort))},
		}},
	}
}

func defaultRoute(cluster string) *routev3.Route {
	return &routev3.Route{
		Name:  "default",
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
			Timeout:          noTimeout,
		}},
	}
}
