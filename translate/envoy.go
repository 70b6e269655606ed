package translate

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

// anypbAny shortens the type of typed_extension_protocol_options values.
type anypbAny = anypb.Any

// translateEnvoy assembles a sidecar's configuration: the inbound side from
// the services selecting the proxy and the policies applying to it, the
// outbound side from every service in the mesh (the proxy's own included,
// as in Istio, so a workload can call its own service).
func translateEnvoy(b *Batch, p Proxy) (res *Resources) {
	defer func() {
		// Translation is written not to panic on any input; should a bug
		// make it, the caller gets an error instead of a crash and keeps
		// serving the last good configuration.
		if r := recover(); r != nil {
			res = internalError(p, r)
		}
	}()
	res = &Resources{}
	t := envoyTranslation{snap: b.snap, proxy: p, opts: b.opts, res: res, accessLogs: AccessLogs(b.opts.AccessLog)}
	t.inbound()
	res.add(b.outboundFor(FlavorEnvoy, p.Namespace, func() *Resources {
		// Outbound reads the proxy's namespace only (see Batch).
		o := envoyTranslation{snap: b.snap, proxy: Proxy{Flavor: FlavorEnvoy, Namespace: p.Namespace}, opts: b.opts, res: &Resources{}, accessLogs: t.accessLogs}
		o.outbound()
		return o.res
	}))
	t.finish()
	return res
}

// internalError is the result of a translation that panicked.
func internalError(p Proxy, r any) *Resources {
	return &Resources{Problems: policy.Problems{{
		Severity: policy.SeverityError,
		Message:  fmt.Sprintf("internal error translating for namespace %s: %v; the previous configuration stays in place", p.Namespace, r),
	}}}
}

type envoyTranslation struct {
	snap  *model.Snapshot
	proxy Proxy
	opts  Options
	res   *Resources
	// accessLogs go on every connection manager and TCP proxy.
	accessLogs []*accesslogv3.AccessLog
}

// inboundPort is one port the workload serves, from the services
// selecting it.
type inboundPort struct {
	target uint32
	proto  Protocol
}

// inboundPorts are the target ports of the services in the proxy's
// namespace whose selector matches its labels, named target ports resolved
// through the workload's container ports. When two services disagree about
// a port's protocol, the first service by name decides, so the choice is
// stable; a service without a selector selects nothing, as in Kubernetes.
// Both flavours use it.
func inboundPorts(snap *model.Snapshot, proxy Proxy) []inboundPort {
	var ports []inboundPort
	seen := map[uint32]bool{}
	for i := range snap.Services {
		s := &snap.Services[i]
		if s.Namespace != proxy.Namespace || len(s.Selector) == 0 || !labelsMatch(s.Selector, proxy.Labels) {
			continue
		}
		for _, sp := range s.Ports {
			if !isTCP(sp.Protocol) {
				continue
			}
			target := uint32(sp.TargetPort)
			if sp.TargetPortName != "" {
				target = 0
				for _, cp := range proxy.Ports {
					if cp.Name == sp.TargetPortName {
						target = uint32(cp.Port)
						break
					}
				}
				if target == 0 {
					continue // Kubernetes sends no traffic to an unresolvable named port.
				}
			}
			if target == 0 {
				target = uint32(sp.Port)
			}
			if seen[target] {
				continue
			}
			seen[target] = true
			ports = append(ports, inboundPort{target: target, proto: PortProtocol(sp)})
		}
	}
	slices.SortFunc(ports, func(a, b inboundPort) int { return cmp.Compare(a.target, b.target) })
	return ports
}

func (t *envoyTranslation) inbound() {
	root := t.opts.RootNamespace
	w := policy.Workload{Namespace: t.proxy.Namespace, Labels: t.proxy.Labels}
	set := &t.snap.Policies
	peer := set.PeerAuthenticationFor(root, w)
	authz := set.AuthorizationPoliciesFor(root, w)
	ras := set.RequestAuthenticationsFor(root, w)
	t.res.Problems = append(t.res.Problems, peer.Problems...)

	ports := inboundPorts(t.snap, t.proxy)
	jwtFilter, issuers, jwtProblems := JWTAuthn(ras, keySets(t.snap, t.opts))
	// Compiled for HTTP even when no port is HTTP, so mistakes in a policy
	// are reported once whatever ports the workload has.
	httpRBAC, rbacProblems := buildRBAC(authz, authzScope{issuers: issuers})
	t.res.Problems = append(t.res.Problems, rbacProblems...)
	var httpFilters []*hcmv3.HttpFilter
	// A port of unknown protocol has HTTP chains too.
	anyHTTP := slices.ContainsFunc(ports, func(p inboundPort) bool { return p.proto != ProtocolTCP })
	if anyHTTP {
		// RequestAuthentication only applies to HTTP, as in Istio.
		t.res.Problems = append(t.res.Problems, jwtProblems...)
		if jwtFilter != nil {
			httpFilters = append(httpFilters, jwtFilter)
		}
	}
	httpFilters = append(httpFilters, HTTPRBACFilters(httpRBAC)...)

	var chains []inboundChain
	for _, port := range ports {
		mode := peer.ForPort(port.target)
		cluster := InboundClusterName(port.target)
		specs := inboundChainSpecs(mode, port.proto)
		var tcpFilters []*listenerv3.Filter
		if slices.ContainsFunc(specs, func(s chainSpec) bool { return !s.http }) {
			// On a sniffed port this is for connections not detected as
			// HTTP: HTTP-only fields fail closed there, as on TCP ports.
			rules, problems := buildRBAC(authz, authzScope{issuers: issuers, tcp: true, port: port.target, sniffed: port.proto == ProtocolUnknown})
			t.res.Problems = append(t.res.Problems, problems...)
			tcpFilters = append(NetworkRBACFilters(rules), TCPProxy(cluster, cluster, t.accessLogs...))
		}
		for _, s := range specs {
			c := inboundChain{port: port.target, spec: s, filters: tcpFilters}
			if s.http {
				c.filters = []*listenerv3.Filter{HTTPConnectionManager(hcmConfig{
					statPrefix:  "inbound_0.0.0.0_" + RouteName(port.target),
					routeConfig: InboundRouteConfiguration(port.target),
					filters:     httpFilters,
					mtls:        s.mtls,
					accessLog:   t.accessLogs,
				})}
			}
			chains = append(chains, c)
		}
		t.res.Clusters = append(t.res.Clusters, InboundCluster(port.target, port.proto))
	}

	// Ports no service declares still reach the application, under the
	// workload-wide mTLS mode and the L4 part of its authorization policy
	// (HTTP-only rules fail closed there without a report: such a port
	// carries no HTTP minimesh knows of).
	passthroughRBAC, _ := buildRBAC(authz, authzScope{issuers: issuers, tcp: true})
	passthroughFilters := append(NetworkRBACFilters(passthroughRBAC), TCPProxy(InboundPassthroughCluster, InboundPassthroughCluster, t.accessLogs...))
	for _, s := range inboundChainSpecs(peer.Mode, ProtocolTCP) {
		chains = append(chains, inboundChain{spec: s, filters: passthroughFilters})
	}
	t.res.Listeners = append(t.res.Listeners, VirtualInboundListener(chains, t.opts.TrustDomain))
}

func (t *envoyTranslation) outbound() {
	assignments := assignmentsFor(t.snap, FlavorEnvoy, t.opts)
	t.res.Listeners = append(t.res.Listeners, VirtualOutboundListener(t.accessLogs))
	t.res.Clusters = append(t.res.Clusters, PassthroughClusters()...)

	hosts := map[uint32][]outboundVirtualHost{}
	domainsSeen := map[uint32]map[string]bool{}
	for i := range t.snap.Services {
		s := &t.snap.Services[i]
		fqdn := FQDN(s.Name, s.Namespace, t.opts.ClusterDomain)
		ip := s.ClusterIP
		if !isIP(ip) {
			ip = "" // headless ("None") or not allocated
		}
		for _, sp := range s.Ports {
			if !isTCP(sp.Protocol) {
				continue
			}
			port := uint32(sp.Port)
			if port == VirtualInboundPort || port == VirtualOutboundPort {
				t.res.Problems = append(t.res.Problems, policy.Problem{
					Severity: policy.SeverityWarning, Kind: "Service", Namespace: s.Namespace, Name: s.Name,
					Field:   "spec.ports",
					Message: fmt.Sprintf("port %d is reserved for the sidecar's own listeners; callers in the mesh cannot reach this service port", port),
				})
				continue
			}
			proto := PortProtocol(sp)
			http, h2 := proto.IsHTTP(), proto == ProtocolHTTP2
			name := OutboundClusterName(port, fqdn)
			eps := t.snap.EndpointsFor(s.Namespace, s.Name, sp.Port)
			var endpoints []model.Endpoint
			if eps != nil {
				endpoints = eps.Endpoints
			}
			ctls := t.clientTLS(s, port, fqdn, h2, endpoints)
			t.res.Clusters = append(t.res.Clusters, OutboundCluster(name, proto, ctls))
			t.res.Endpoints = append(t.res.Endpoints, assignments(name))

			switch {
			case http:
				if domainsSeen[port] == nil {
					domainsSeen[port] = map[string]bool{}
				}
				var domains []string
				for _, d := range t.domains(s, fqdn, ip) {
					for _, dp := range []string{d, d + ":" + RouteName(port)} {
						if !domainsSeen[port][dp] {
							domainsSeen[port][dp] = true
							domains = append(domains, dp)
						}
					}
				}
				hosts[port] = append(hosts[port], outboundVirtualHost{name: VirtualHostName(fqdn, port), domains: domains, cluster: name})
			case ip != "" && proto == ProtocolUnknown:
				t.res.Listeners = append(t.res.Listeners, OutboundSniffingListener(ip, port, fqdn, name, ctls.istio, t.accessLogs))
				t.res.Routes = append(t.res.Routes, SniffedRouteConfiguration(fqdn, port, name))
			case ip != "":
				t.res.Listeners = append(t.res.Listeners, OutboundTCPListener(ip, port, name, t.accessLogs))
			default:
				// A TCP (or sniffed) service without a cluster IP has no
				// address to listen on: callers dial pod IPs, which
				// virtualOutbound passes through unchanged, as TCP.
			}
		}
	}
	for port, hs := range hosts {
		t.res.Listeners = append(t.res.Listeners, OutboundHTTPListener(port, t.accessLogs))
		t.res.Routes = append(t.res.Routes, RouteConfiguration(port, hs))
	}
}

// domains are the names a caller may use for a service, as Istio lists
// them; the short name only for callers in the same namespace, where DNS
// search paths resolve it to this service.
func (t *envoyTranslation) domains(s *model.Service, fqdn, ip string) []string {
	d := []string{fqdn}
	if s.Namespace == t.proxy.Namespace {
		d = append(d, s.Name)
	}
	d = append(d, s.Name+"."+s.Namespace, s.Name+"."+s.Namespace+".svc")
	if ip != "" {
		d = append(d, ip)
	}
	return d
}

// clientTLS decides the transport toward one service port from the
// effective DestinationRule TLS (policy.ClientTLSFor).
func (t *envoyTranslation) clientTLS(s *model.Service, port uint32, fqdn string, h2 bool, eps []model.Endpoint) clientTLS {
	eff := t.snap.Policies.ClientTLSFor(policy.ClientTLSQuery{
		RootNamespace:    t.opts.RootNamespace,
		ClientNamespace:  t.proxy.Namespace,
		ServiceNamespace: s.Namespace,
		ServiceHost:      fqdn,
		Port:             port,
		ClusterDomain:    t.opts.ClusterDomain,
	})
	sni := SNI(port, fqdn)
	if eff.Auto || eff.Settings == nil {
		return clientTLS{auto: true, istio: true, socket: UpstreamIstioMTLS(sni, t.serviceSANs(s, eps), t.opts.TrustDomain, h2)}
	}
	st := eff.Settings
	switch st.Mode {
	case policy.TLSDisable:
		return clientTLS{}
	case policy.TLSSimple, policy.TLSMutual:
		return clientTLS{socket: UpstreamFileTLS(st, h2)}
	default: // ISTIO_MUTUAL
		if st.SNI != "" {
			sni = st.SNI
		}
		sans := st.SubjectAltNames
		if len(sans) == 0 {
			sans = t.serviceSANs(s, eps)
		}
		return clientTLS{istio: true, socket: UpstreamIstioMTLS(sni, sans, t.opts.TrustDomain, h2)}
	}
}

// serviceSANs are the SPIFFE IDs of every service account behind a service
// port, sorted: the identities a server for it may present.
func (t *envoyTranslation) serviceSANs(s *model.Service, eps []model.Endpoint) []string {
	return serviceSANs(t.opts.TrustDomain, s, eps)
}

func serviceSANs(trustDomain string, s *model.Service, eps []model.Endpoint) []string {
	var sans []string
	for _, e := range eps {
		if e.ServiceAccount != "" {
			sans = append(sans, SpiffeID(trustDomain, s.Namespace, e.ServiceAccount))
		}
	}
	slices.Sort(sans)
	return slices.Compact(sans)
}

// finish puts every list in its canonical order, so equal inputs give
// byte-identical output whatever order maps were iterated in.
func (t *envoyTranslation) finish() { canonicalize(t.res) }

// canonicalize sorts every list of r by name and drops duplicate problems;
// both flavours end with it.
func canonicalize(r *Resources) {
	slices.SortFunc(r.Listeners, func(a, b *listenerv3.Listener) int { return cmp.Compare(a.GetName(), b.GetName()) })
	slices.SortFunc(r.Routes, func(a, b *routev3.RouteConfiguration) int { return cmp.Compare(a.GetName(), b.GetName()) })
	slices.SortFunc(r.Clusters, func(a, b *clusterv3.Cluster) int { return cmp.Compare(a.GetName(), b.GetName()) })
	slices.SortFunc(r.Endpoints, func(a, b *endpointv3.ClusterLoadAssignment) int {
		return cmp.Compare(a.GetClusterName(), b.GetClusterName())
	})
	slices.SortFunc(r.Problems, func(a, b policy.Problem) int { return cmp.Compare(a.Error(), b.Error()) })
	r.Problems = slices.CompactFunc(r.Problems, func(a, b policy.Problem) bool { return a == b })
}

// isTCP reports whether a service port is TCP (Kubernetes' default); Envoy
// sidecars do not carry UDP or SCTP.
func isTCP(protocol string) bool { return protocol == "" || strings.EqualFold(protocol, "TCP") }

func labelsMatch(selector, labels map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func socketAddress(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       ip,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func wrapBool(b bool) *wrapperspb.BoolValue { return wrapperspb.Bool(b) }

// mustAny packs a typed config with a deterministic encoding: the packed
// bytes hold maps (RBAC policies, JWT providers), and equal input must give
// equal bytes or every push would look like a change. Packing only fails for strings that are not
// UTF-8, which no decoded input contains; translateEnvoy turns the panic
// into an error should that ever change.
func mustAny(m proto.Message) *anypb.Any {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		panic(fmt.Sprintf("packing %T: %v", m, err))
	}
	return a
}
