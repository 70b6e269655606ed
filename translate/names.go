package translate

import (
	"fmt"
	"net"
	"strconv"
)

// Names are a contract: users compare them with Istio's istioctl proxy-config
// output, the xDS layer publishes them, and Envoy uses them to join
// resources (a listener's RDS name must equal a route configuration's name,
// an EDS cluster's service name must equal a ClusterLoadAssignment's). Every
// name translation produces is built by a function in this file, following
// Istio's spelling wherever Istio has one:
//
//	outbound cluster      outbound|<port>||<fqdn>          outbound|8080||product.default.svc.cluster.local
//	inbound cluster       inbound|<targetPort>||           inbound|8080||
//	SNI (ISTIO_MUTUAL)    outbound_.<port>_._.<fqdn>       outbound_.8080_._.product.default.svc.cluster.local
//	inbound listener      virtualInbound                   0.0.0.0:15006, catches redirected inbound traffic
//	outbound listener     virtualOutbound                  0.0.0.0:15001, catches redirected outbound traffic
//	HTTP outbound         0.0.0.0_<port>                   one per service port number, shared by all HTTP services
//	TCP outbound          <clusterIP>_<port>               one per TCP service port with a cluster IP
//	outbound route        <port>                           RDS name of the HTTP listener 0.0.0.0_<port>
//	sniffing outbound     <clusterIP>_<port>               one per service port of unknown protocol (http_inspector)
//	sniffed route         <fqdn>:<port>                    RDS name of its HTTP chains
//	virtual host          <fqdn>:<port>                    one per HTTP service port
//	secrets (SDS)         default, ROOTCA                  workload certificate chain and key; trust bundle
//	RBAC policy           ns[<ns>]-policy[<name>]-rule[<i>]  so a denial names the rule that decided it
//	JWT provider          ns[<ns>]-requestauth[<name>]-jwt[<i>]
//	passthrough clusters  PassthroughCluster, InboundPassthroughCluster (ORIGINAL_DST)
//	SPIFFE identity       spiffe://<trustDomain>/ns/<ns>/sa/<serviceAccount>
//
// Proxyless gRPC workloads (node metadata GENERATOR=grpc) ask for resources
// by names gRPC itself derives, so those names are fixed by gRPC:
//
//	server listener       grpc/server?xds.resource.listening_address=<ip>:<port>
//	                      from the bootstrap template ServerListenerNameTemplate
//	                      and the address the server listens on ([<ipv6>]:<port>)
//	client listener       <authority>                      the target's authority, one per form a
//	                      <fqdn>:<port>                    gRPC target may use: xds:///product.default.svc.cluster.local:8080,
//	                      <name>.<ns>.svc:<port>           xds:///product.default.svc:8080,
//	                      <name>.<ns>:<port>               xds:///product.default:8080, and, for
//	                      <name>:<port>                    services in the caller's own namespace, xds:///product:8080
//	client route          outbound|<port>||<fqdn>          one per service port, shared by all its client listeners;
//	                                                       its virtual host <fqdn>:<port> lists every authority form
//	cluster, endpoints    outbound|<port>||<fqdn>          as for Envoy
//	server chains         inbound|<port>||mtls, inbound|<port>||plaintext
//	server route          inbound|<port>||                 inlined; every RPC is served locally (non_forwarding_action)
//	certificate provider  default                          instance in the gRPC bootstrap for both the
//	                                                       workload certificate and the trust bundle
//	RBAC filters          envoy.filters.http.rbac.deny, envoy.filters.http.rbac.allow (gRPC refuses duplicate names)
//	JWT token deny        ns[<ns>]-requestauth[<name>]-jwt[<i>]  DENY policy standing in for an unverifiable JWT rule
//
// Inbound filter chains are named after the cluster they feed, with the kind
// of traffic they accept appended, because Envoy requires filter-chain names
// to be unique within a listener and one port has up to five chains:
// "inbound|8080||mtls" (mesh mTLS, terminated), "inbound|8080||plaintext",
// "inbound|8080||tls" (TLS of the application's own, passed through), and
// on a port whose protocol is sniffed "inbound|8080||mtls-http" and
// "inbound|8080||plaintext-http" for the connections detected as HTTP.
const (
	VirtualInboundListenerName  = "virtualInbound"
	VirtualOutboundListenerName = "virtualOutbound"
	PassthroughCluster          = "PassthroughCluster"
	InboundPassthroughCluster   = "InboundPassthroughCluster"
	// SecretDefault is the workload's own certificate chain and key.
	SecretDefault = "default"
	// SecretRootCA is the mesh trust bundle.
	SecretRootCA = "ROOTCA"

	// VirtualInboundPort and VirtualOutboundPort are where iptables (or a
	// test harness) redirects traffic, as in Istio.
	VirtualInboundPort  = 15006
	VirtualOutboundPort = 15001

	// ServerListenerNameTemplate is the gRPC bootstrap's
	// server_listener_resource_name_template; gRPC replaces %s with the
	// address it listens on.
	ServerListenerNameTemplate = "grpc/server?xds.resource.listening_address=%s"
	// CertificateProviderInstance is the certificate provider instance a
	// proxyless workload's bootstrap defines; it serves both the workload
	// certificate and the trust bundle.
	CertificateProviderInstance = "default"

	// inboundPassthroughName prefixes the chains that accept traffic for
	// ports no service declares.
	inboundPassthroughName = "InboundPassthroughFilterChain"
	// allowAnyVirtualHost sends HTTP requests for unknown hosts through.
	allowAnyVirtualHost = "allow_any"
)

// OutboundClusterName is outbound|<port>||<fqdn>.
func OutboundClusterName(port uint32, fqdn string) string {
	return fmt.Sprintf("outbound|%d||%s", port, fqdn)
}

// InboundClusterName is inbound|<targetPort>||.
func InboundClusterName(targetPort uint32) string {
	return fmt.Sprintf("inbound|%d||", targetPort)
}

// SNI is the server name an Istio client sends for ISTIO_MUTUAL.
func SNI(port uint32, fqdn string) string {
	return fmt.Sprintf("outbound_.%d_._.%s", port, fqdn)
}

// FQDN is <name>.<namespace>.svc.<clusterDomain>.
func FQDN(name, namespace, clusterDomain string) string {
	return name + "." + namespace + ".svc." + clusterDomain
}

// HTTPListenerName is 0.0.0.0_<port>.
func HTTPListenerName(port uint32) string { return "0.0.0.0_" + strconv.FormatUint(uint64(port), 10) }

// TCPListenerName is <clusterIP>_<port>.
func TCPListenerName(ip string, port uint32) string {
	return ip + "_" + strconv.FormatUint(uint64(port), 10)
}

// RouteName is the RDS name of the HTTP listener for one port: <port>.
func RouteName(port uint32) string { return strconv.FormatUint(uint64(port), 10) }

// SniffedRouteName is the RDS name of the HTTP chains of the sniffing
// listener <clusterIP>_<port>: <fqdn>:<port>, as Istio names it.
func SniffedRouteName(fqdn string, port uint32) string { return VirtualHostName(fqdn, port) }

// VirtualHostName is <fqdn>:<port>.
func VirtualHostName(fqdn string, port uint32) string {
	return fqdn + ":" + strconv.FormatUint(uint64(port), 10)
}

// ServerListenerName is the name a proxyless gRPC server listening on
// ip:port asks for (ServerListenerNameTemplate filled in).
func ServerListenerName(ip string, port uint32) string {
	return fmt.Sprintf(ServerListenerNameTemplate, net.JoinHostPort(ip, strconv.FormatUint(uint64(port), 10)))
}

// Authorities are the client listener names of one service port for a
// proxyless caller in callerNamespace, longest form first; the short name
// only in the service's own namespace, where Istio offers it too.
func Authorities(name, namespace, clusterDomain string, port uint32, callerNamespace string) []string {
	p := ":" + strconv.FormatUint(uint64(port), 10)
	out := []string{FQDN(name, namespace, clusterDomain) + p, name + "." + namespace + ".svc" + p, name + "." + namespace + p}
	if namespace == callerNamespace {
		out = append(out, name+p)
	}
	return out
}

// RBACPolicyName is ns[<ns>]-policy[<name>]-rule[<i>].
func RBACPolicyName(namespace, name string, rule int) string {
	return fmt.Sprintf("ns[%s]-policy[%s]-rule[%d]", namespace, name, rule)
}

// JWTProviderName names the provider built from one jwtRule.
func JWTProviderName(namespace, name string, rule int) string {
	return fmt.Sprintf("ns[%s]-requestauth[%s]-jwt[%d]", namespace, name, rule)
}

// SpiffeID is spiffe://<trustDomain>/ns/<ns>/sa/<serviceAccount>.
func SpiffeID(trustDomain, namespace, serviceAccount string) string {
	return "spiffe://" + trustDomain + "/ns/" + namespace + "/sa/" + serviceAccount
}

// inboundChainName names an inbound filter chain for one target port (0 is
// the passthrough chain for undeclared ports) and traffic kind (see
// chainSpec).
func inboundChainName(targetPort uint32, kind string) string {
	if targetPort == 0 {
		return inboundPassthroughName + "|" + kind
	}
	return InboundClusterName(targetPort) + kind
}
