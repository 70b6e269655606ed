package translate

import (
	"cmp"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

// The proxyless gRPC flavour: a workload whose gRPC library speaks xDS
// itself (node metadata GENERATOR=grpc). It gets server listeners for the
// ports it serves, client API listeners, route configurations, clusters and
// endpoints for every HTTP service port in the mesh, with the same
// effective policy as a sidecar (policy.Set's functions, nothing else).
//
// Where gRPC cannot express a policy as Envoy does, minimesh chooses what
// is never weaker and reports a Problem:
//
//   - PERMISSIVE: gRPC cannot tell TLS from plaintext on one port, so the
//     caller's address decides: in-mesh workload addresses must use mTLS,
//     any other address may use plaintext (see ProxylessServerListener).
//     Istio's own proxyless support makes PERMISSIVE STRICT instead, which
//     breaks the plaintext callers PERMISSIVE promises to serve.
//   - AUDIT AuthorizationPolicies: gRPC has no LOG action; they are not
//     sent (auditing only logs, so nothing is allowed that was denied).
//   - Dry-run AuthorizationPolicies (istio.io/dry-run): gRPC has no shadow
//     mode; they are not sent (a dry run never allows or denies).
//   - requestPrincipals, request.auth.* conditions, connection.sni: gRPC
//     cannot check them; an ALLOW rule using them matches nothing, a DENY
//     rule has the field widened to match everything (as for TCP in the
//     Envoy flavour).
//   - RequestAuthentication: gRPC has no JWT filter, so tokens cannot be
//     verified; requests carrying one in a header the rule names are denied
//     (a DENY policy named after the rule), requests without one are decided
//     by AuthorizationPolicy as in Istio.
//   - Auto mTLS: gRPC has no transport_socket_matches, so TLS is chosen per
//     cluster; a service with both in-mesh and other endpoints gets mTLS,
//     and calls to the others fail.
//   - DestinationRule SIMPLE / MUTUAL: gRPC only has certificate providers,
//     not files; the service port is left out for this workload, so its
//     calls fail rather than go out in plaintext.

// translateProxyless assembles a proxyless gRPC workload's configuration.
func translateProxyless(b *Batch, p Proxy) (res *Resources) {
	defer func() {
		// As for Envoy: a bug must cost a configuration, not the process.
		if r := recover(); r != nil {
			res = internalError(p, r)
		}
	}()
	res = &Resources{}
	t := proxylessTranslation{snap: b.snap, proxy: p, opts: b.opts, res: res}
	t.inbound()
	res.add(b.outboundFor(FlavorProxyless, p.Namespace, func() *Resources {
		// Outbound reads the proxy's namespace only (see Batch).
		o := proxylessTranslation{snap: b.snap, proxy: Proxy{Flavor: FlavorProxyless, Namespace: p.Namespace}, opts: b.opts, res: &Resources{}}
		o.outbound()
		return o.res
	}))
	canonicalize(res)
	return res
}

type proxylessTranslation struct {
	snap  *model.Snapshot
	proxy Proxy
	opts  Options
	res   *Resources
}

func (t *proxylessTranslation) problem(p policy.Problem) { t.res.Problems = append(t.res.Problems, p) }

// serverPorts are the ports the workload's gRPC servers may listen on: the
// target ports of the services selecting it and its declared TCP container
// ports (a gRPC server asks for its listener whether or not a service names
// the port; Envoy covers such ports with its passthrough chain instead).
// Every one carries gRPC, so every one gets HTTP authorization.
func (t *proxylessTranslation) serverPorts() []uint32 {
	var ports []uint32
	for _, ip := range inboundPorts(t.snap, t.proxy) {
		ports = append(ports, ip.target)
	}
	for _, cp := range t.proxy.Ports {
		if isTCP(cp.Protocol) && cp.Port > 0 && cp.Port <= 65535 {
			ports = append(ports, uint32(cp.Port))
		}
	}
	slices.Sort(ports)
	return slices.Compact(ports)
}

func (t *proxylessTranslation) inbound() {
	root := t.opts.RootNamespace
	w := policy.Workload{Namespace: t.proxy.Namespace, Labels: t.proxy.Labels}
	set := &t.snap.Policies
	peer := set.PeerAuthenticationFor(root, w)
	t.res.Problems = append(t.res.Problems, peer.Problems...)

	var enforced []*policy.AuthorizationPolicy
	for _, ap := range set.AuthorizationPoliciesFor(root, w) {
		if ap.Spec.EffectiveAction() == policy.ActionAudit {
			t.problem(policy.Problem{
				Severity: policy.SeverityWarning, Kind: ap.Kind, Namespace: ap.Namespace, Name: ap.Name,
				Location: ap.Origin, Field: "spec.action",
				Message: "proxyless gRPC servers cannot audit (gRPC has no LOG action), so this policy is not sent to them; it would only have logged, so nothing is allowed or denied differently",
			})
			continue
		}
		if ap.DryRun {
			t.problem(policy.Problem{
				Severity: policy.SeverityWarning, Kind: ap.Kind, Namespace: ap.Namespace, Name: ap.Name,
				Location: ap.Origin, Field: "metadata.annotations." + policy.AnnotationDryRun,
				Message: "proxyless gRPC servers have no dry-run mode (gRPC ignores shadow rules), so this policy is not sent to them; it allows and denies nothing there, as a dry run should",
			})
			continue
		}
		enforced = append(enforced, ap)
	}
	rules, problems := buildRBAC(enforced, authzScope{grpc: true})
	t.res.Problems = append(t.res.Problems, problems...)

	ports := t.serverPorts()
	if len(ports) == 0 {
		return
	}
	deny, jwtProblems := jwtTokenDenyPolicies(set.RequestAuthenticationsFor(root, w))
	t.res.Problems = append(t.res.Problems, jwtProblems...)
	if len(deny) > 0 {
		if rules.deny == nil {
			rules.deny = &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{}}
		}
		for name, p := range deny {
			rules.deny.Policies[name] = p
		}
	}
	filters := GRPCRBACFilters(rules)

	ip, err := netip.ParseAddr(t.proxy.IP)
	if err != nil {
		t.problem(policy.Problem{
			Severity: policy.SeverityWarning,
			Message: fmt.Sprintf("proxyless gRPC workload in namespace %s has no IP address yet (%q); its server listeners are sent once it has one, and its gRPC servers do not serve until then",
				t.proxy.Namespace, t.proxy.IP),
		})
		return
	}
	sources := t.meshSourceRanges()
	var permissive []string
	for _, port := range ports {
		mode := peer.ForPort(port)
		if mode != policy.ModeStrict && mode != policy.ModeDisable {
			permissive = append(permissive, strconv.FormatUint(uint64(port), 10))
		}
		t.res.Listeners = append(t.res.Listeners, ProxylessServerListener(serverListener{
			ip: ip.String(), port: port, mode: mode, meshSources: sources, filters: filters,
		}))
	}
	if len(permissive) > 0 {
		msg := fmt.Sprintf("proxyless gRPC workload %s in namespace %s, port(s) %s: PERMISSIVE mTLS cannot be served as Envoy serves it (gRPC cannot tell mTLS from plaintext on one port); ",
			ip, t.proxy.Namespace, strings.Join(permissive, ", "))
		if len(sources) > 0 {
			msg += fmt.Sprintf("minimesh requires mTLS from the %d in-mesh workload address(es) and accepts plaintext from every other address, so an in-mesh caller that sends plaintext is refused", len(sources))
		} else {
			msg += "no in-mesh workload has an address yet, so every caller is served in plaintext; mTLS callers are refused until one does"
		}
		t.problem(policy.Problem{Severity: policy.SeverityWarning, Message: msg})
	}
}

// meshSourceRanges are the /32 (or /128) ranges of every in-mesh workload
// with an address, sorted: the callers that must use mTLS on a PERMISSIVE
// port. They depend on the whole mesh, not only on this workload.
func (t *proxylessTranslation) meshSourceRanges() []*corev3.CidrRange {
	addrs := meshAddrs(t.snap.Workloads)
	out := make([]*corev3.CidrRange, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, hostPrefix(a))
	}
	return out
}

// jwtTokenDenyPolicies stand in for RequestAuthentication on a proxyless
// server, which cannot verify tokens: one DENY policy per jwtRule, named
// like the Envoy provider, matching requests that carry a token where the
// rule reads one. Headers match when present at all (any value, whatever
// prefix), cookies when the named cookie is set. Query parameters cannot
// reach a gRPC server (its :path is the method), so fromParams needs
// nothing.
func jwtTokenDenyPolicies(ras []*policy.RequestAuthentication) (map[string]*rbacv3.Policy, policy.Problems) {
	policies := map[string]*rbacv3.Policy{}
	var problems policy.Problems
	for _, ra := range ras {
		for i, r := range ra.Spec.JWTRules {
			name := JWTProviderName(ra.Namespace, ra.Name, i)
			field := fmt.Sprintf("spec.jwtRules[%d]", i)
			var headers []string
			for _, h := range r.FromHeaders {
				headers = append(headers, strings.ToLower(h.Name))
			}
			if len(r.FromHeaders) == 0 && len(r.FromParams) == 0 && len(r.FromCookies) == 0 {
				headers = []string{"authorization"}
			}
			slices.Sort(headers)
			headers = slices.Compact(headers)
			var ids []*rbacv3.Principal
			var where []string
			for _, h := range headers {
				if h == "" || strings.HasPrefix(h, ":") || strings.HasPrefix(h, "grpc-") {
					// gRPC refuses rules on these names, and clients cannot
					// send them as metadata anyway.
					problems = append(problems, policy.Problem{
						Severity: policy.SeverityWarning, Kind: ra.Kind, Namespace: ra.Namespace, Name: ra.Name,
						Location: ra.Origin, Field: field + ".fromHeaders",
						Message: fmt.Sprintf("header %q cannot carry a token to a proxyless gRPC server; it is ignored there", h),
					})
					continue
				}
				ids = append(ids, &rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: &routev3.HeaderMatcher{
					Name:                 h,
					HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true},
				}}})
				where = append(where, "header "+h)
			}
			for _, c := range r.FromCookies {
				ids = append(ids, &rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: &routev3.HeaderMatcher{
					Name:                 "cookie",
					HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: regexMatcher(`(.*;)?\s*` + regexp.QuoteMeta(c) + `=.*`)},
				}}})
				where = append(where, "cookie "+c)
			}
			msg := fmt.Sprintf("proxyless gRPC servers cannot verify JWTs (gRPC has no JWT filter), so they accept no token from issuer %q: ", r.Issuer)
			if len(ids) > 0 {
				policies[name] = &rbacv3.Policy{
					Permissions: []*rbacv3.Permission{anyPermission()},
					Principals:  []*rbacv3.Principal{orIDs(ids)},
				}
				msg += fmt.Sprintf("requests carrying %s are denied (PERMISSION_DENIED naming %s) instead of being verified; requests without a token are decided by AuthorizationPolicy, as in Istio",
					strings.Join(where, " or "), name)
			} else {
				msg += "tokens in query parameters cannot reach a gRPC server, so nothing needs denying; requests are decided by AuthorizationPolicy"
			}
			problems = append(problems, policy.Problem{
				Severity: policy.SeverityWarning, Kind: ra.Kind, Namespace: ra.Namespace, Name: ra.Name,
				Location: ra.Origin, Field: field, Message: msg,
			})
		}
	}
	return policies, problems
}

func (t *proxylessTranslation) outbound() {
	assignments := assignmentsFor(t.snap, FlavorProxyless, t.opts)
	accepts := newAcceptsMTLS(t.snap, t.opts.RootNamespace)
	for i := range t.snap.Services {
		s := &t.snap.Services[i]
		fqdn := FQDN(s.Name, s.Namespace, t.opts.ClusterDomain)
		for _, sp := range s.Ports {
			if !outboundPort(FlavorProxyless, sp) {
				continue
			}
			port := uint32(sp.Port)
			name := OutboundClusterName(port, fqdn)
			var endpoints []model.Endpoint
			if eps := t.snap.EndpointsFor(s.Namespace, s.Name, sp.Port); eps != nil {
				endpoints = eps.Endpoints
			}
			socket, ok := t.clientTLS(s, port, fqdn, endpoints, accepts.endpoints(s.Namespace, endpoints, uint32(sp.TargetPort)))
			if !ok {
				continue
			}
			authorities := Authorities(s.Name, s.Namespace, t.opts.ClusterDomain, port, t.proxy.Namespace)
			for _, a := range authorities {
				t.res.Listeners = append(t.res.Listeners, ProxylessClientListener(a, name))
			}
			t.res.Routes = append(t.res.Routes, ProxylessRouteConfiguration(name, VirtualHostName(fqdn, port), authorities, name))
			t.res.Clusters = append(t.res.Clusters, ProxylessCluster(name, socket))
			t.res.Endpoints = append(t.res.Endpoints, assignments(name))
		}
	}
}

// clientTLS decides the transport toward one service port from the
// effective DestinationRule TLS (policy.ClientTLSFor): the socket (nil for
// plaintext), and false when the port must not be offered at all.
//
// eps are the port's endpoints; autoEps the same as auto-mTLS sees them
// (acceptsMTLS: in the mesh only where the server accepts mTLS).
func (t *proxylessTranslation) clientTLS(s *model.Service, port uint32, fqdn string, eps, autoEps []model.Endpoint) (*corev3.TransportSocket, bool) {
	eff := t.snap.Policies.ClientTLSFor(policy.ClientTLSQuery{
		RootNamespace:    t.opts.RootNamespace,
		ClientNamespace:  t.proxy.Namespace,
		ServiceNamespace: s.Namespace,
		ServiceHost:      fqdn,
		Port:             port,
		ClusterDomain:    t.opts.ClusterDomain,
	})
	mtls := func(sni string, sans []string) *corev3.TransportSocket {
		if len(sans) == 0 {
			sans = serviceSANs(t.opts.TrustDomain, s, eps)
		}
		return ProxylessUpstreamMTLS(sni, sans, t.opts.TrustDomain)
	}
	if eff.Auto || eff.Settings == nil {
		return t.autoMTLS(s, port, autoEps, mtls(SNI(port, fqdn), nil))
	}
	st := eff.Settings
	switch st.Mode {
	case policy.TLSDisable:
		return nil, true
	case policy.TLSSimple, policy.TLSMutual:
		ns, name, _ := strings.Cut(eff.Rule, "/")
		t.problem(policy.Problem{
			Severity: policy.SeverityError, Kind: "DestinationRule", Namespace: ns, Name: name,
			Field: "trafficPolicy.tls.mode",
			Message: fmt.Sprintf("%s TLS reads certificate files, which proxyless gRPC cannot use (it only has certificate providers); service %s/%s port %d is not offered to proxyless workloads in namespace %s, so their calls to it fail instead of being sent without the TLS the rule asks for",
				st.Mode, s.Namespace, s.Name, port, t.proxy.Namespace),
		})
		return nil, false
	default: // ISTIO_MUTUAL
		sni := SNI(port, fqdn)
		if st.SNI != "" {
			sni = st.SNI
		}
		return mtls(sni, st.SubjectAltNames), true
	}
}

// autoMTLS picks one transport for the whole cluster, since gRPC cannot
// choose per endpoint: plaintext when no usable endpoint accepts mTLS
// (outside the mesh, or DISABLE at that port; see acceptsMTLS), mTLS
// otherwise. With mixed endpoints mTLS fails toward those
// outside the mesh, which is reported; plaintext would silently drop the
// encryption the in-mesh ones get. With no endpoints yet, mTLS: the choice
// is revisited when endpoints appear.
func (t *proxylessTranslation) autoMTLS(s *model.Service, port uint32, eps []model.Endpoint, socket *corev3.TransportSocket) (*corev3.TransportSocket, bool) {
	usable := usableEndpoints(eps)
	var outside []string
	for _, e := range usable {
		if !e.InMesh {
			outside = append(outside, e.IP)
		}
	}
	switch {
	case len(usable) > 0 && len(outside) == len(usable):
		return nil, true
	case len(outside) > 0:
		slices.SortFunc(outside, func(a, b string) int { return cmp.Compare(a, b) })
		t.problem(policy.Problem{
			Severity: policy.SeverityWarning, Kind: "Service", Namespace: s.Namespace, Name: s.Name,
			Field: "spec.ports",
			Message: fmt.Sprintf("port %d: endpoints are both in and outside the mesh; proxyless gRPC clients in namespace %s cannot pick TLS per endpoint, so they use mTLS for all and their calls to %s (outside the mesh) fail; put those in the mesh, or set a DestinationRule with tls.mode DISABLE if plaintext is acceptable",
				port, t.proxy.Namespace, strings.Join(slices.Compact(outside), ", ")),
		})
	}
	return socket, true
}
