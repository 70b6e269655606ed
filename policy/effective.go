package policy

import (
	"cmp"
	"math"
	"slices"
	"strings"
)

// This file is the contract between policy/ and its callers (translate/,
// xds/, meshctl). The functions here are pure; each states its precedence
// rules in its doc comment and has a table test in effective_test.go.

// Workload is what the effective-policy functions need to know about a
// workload: its namespace and labels.
type Workload struct {
	Namespace string
	Labels    map[string]string
}

// EffectivePeerAuthentication is the composed PeerAuthentication for one
// workload. Modes are never UNSET.
type EffectivePeerAuthentication struct {
	// Mode applies to every port without a port-level override.
	Mode MTLSMode
	// PortModes holds port-level overrides, keyed by the workload's target port.
	PortModes map[uint32]MTLSMode
	// Applied lists the policies that contributed ("ns/name"), widest scope first.
	Applied []string
	// Problems holds warnings found while composing (for example ties).
	Problems Problems
}

// ForPort returns the mode for one target port.
func (e EffectivePeerAuthentication) ForPort(port uint32) MTLSMode {
	if m, ok := e.PortModes[port]; ok {
		return m
	}
	return e.Mode
}

// ClientTLSQuery asks which TLS a client in ClientNamespace uses toward one
// port of one service.
type ClientTLSQuery struct {
	RootNamespace    string
	ClientNamespace  string
	ServiceNamespace string
	// ServiceHost is the service's FQDN, e.g. product.default.svc.cluster.local.
	ServiceHost string
	// Port is the service port (not the target port).
	Port uint32
	// ClusterDomain resolves short DestinationRule hosts ("product" in
	// namespace default means product.default.svc.<ClusterDomain>).
	ClusterDomain string
}

// EffectiveClientTLS is the client TLS decision for one service port.
type EffectiveClientTLS struct {
	// Auto is true when no DestinationRule sets TLS for this port: the client
	// uses ISTIO_MUTUAL toward endpoints in the mesh and plaintext otherwise.
	Auto bool
	// Settings is the DestinationRule's TLS block when Auto is false.
	Settings *ClientTLSSettings
	// Rule is the deciding DestinationRule ("ns/name"), empty when none applies.
	Rule string
}

// ---------------------------------------------------------------------------
// (a) PeerAuthentication: what a server-side proxy accepts

// PeerAuthenticationFor is ComposePeerAuthentication over every
// PeerAuthentication in the set.
func (s *Set) PeerAuthenticationFor(rootNamespace string, w Workload) EffectivePeerAuthentication {
	return ComposePeerAuthentication(rootNamespace, s.PeerAuthentications, w)
}

// ComposePeerAuthentication decides the mTLS mode a workload's proxy
// enforces, following Istio:
//
//   - Scopes. Mesh: a policy in rootNamespace without a selector (or with
//     empty matchLabels). Namespace: a policy in w's namespace without a
//     selector. Workload: a policy in w's namespace whose selector matches
//     w's labels. A policy with a selector in rootNamespace applies to no
//     workload at all (Istio's ComposePeerAuthentication skips it too);
//     when its selector matches w a warning says so. Policies in other
//     namespaces never apply.
//   - The narrowest scope that sets a mode wins: workload over namespace
//     over mesh. UNSET (or no mtls block) inherits the next wider scope's
//     mode; with nothing set anywhere the mode is PERMISSIVE.
//   - Port level (portLevelMtls, only honoured in the workload-scope policy,
//     keyed by target port) beats the workload's mode for that port; a
//     port-level UNSET inherits the workload's effective mode and is left
//     out of PortModes.
//   - Ties within one scope: the oldest creationTimestamp wins, then the
//     one served first (Meta.Admitted), then the smaller name; each losing
//     policy gets a warning naming the winner. A newcomer therefore never
//     displaces a policy already in force.
//
// Applied lists, widest scope first, the chosen policies whose settings
// decided Mode or a port mode.
func ComposePeerAuthentication(rootNamespace string, policies []*PeerAuthentication, w Workload) EffectivePeerAuthentication {
	const (
		scopeMesh = iota
		scopeNamespace
		scopeWorkload
	)
	scopeNames := [...]string{"mesh-wide", "namespace-wide", "workload"}
	var candidates [3][]*PeerAuthentication
	var out EffectivePeerAuthentication
	for _, p := range policies {
		if p == nil {
			continue
		}
		switch {
		case p.Spec.Selector.IsEmpty() && p.Namespace == rootNamespace:
			candidates[scopeMesh] = append(candidates[scopeMesh], p)
		case p.Spec.Selector.IsEmpty() && p.Namespace == w.Namespace:
			candidates[scopeNamespace] = append(candidates[scopeNamespace], p)
		case p.Namespace == rootNamespace:
			if p.Spec.Selector.Matches(w.Labels) {
				out.Problems = append(out.Problems, warnf(&p.Meta, "spec.selector",
					"ignored: a PeerAuthentication with a selector in the root namespace %q applies to no workload "+
						"(as in Istio); move it to the workload's namespace or remove the selector", rootNamespace))
			}
		case p.Namespace == w.Namespace && p.Spec.Selector.Matches(w.Labels):
			candidates[scopeWorkload] = append(candidates[scopeWorkload], p)
		}
	}

	var chosen [3]*PeerAuthentication
	for scope, cs := range candidates {
		if len(cs) == 0 {
			continue
		}
		winner := slices.MinFunc(cs, olderFirst)
		chosen[scope] = winner
		for _, loser := range cs {
			if loser != winner {
				out.Problems = append(out.Problems, warnf(&loser.Meta, "",
					"ignored: %s applies at the same (%s) scope and is older (or, created at the same time, sorts first by name)",
					winner.Key(), scopeNames[scope]))
			}
		}
	}

	out.Mode = ModePermissive
	var decidedBy *PeerAuthentication
	for _, p := range chosen {
		if p != nil && p.Spec.MTLS != nil && isSetMode(p.Spec.MTLS.Mode) {
			out.Mode = p.Spec.MTLS.Mode
			decidedBy = p
		}
	}
	if decidedBy != nil {
		out.Applied = append(out.Applied, decidedBy.Key())
	}
	if wl := chosen[scopeWorkload]; wl != nil {
		for port, m := range wl.Spec.PortLevelMTLS {
			if isSetMode(m.Mode) {
				if out.PortModes == nil {
					out.PortModes = map[uint32]MTLSMode{}
				}
				out.PortModes[port] = m.Mode
			}
		}
		if len(out.PortModes) > 0 && decidedBy != wl {
			out.Applied = append(out.Applied, wl.Key())
		}
	}
	return out
}

func isSetMode(m MTLSMode) bool { return m != "" && m != ModeUnset }

// olderFirst orders policies oldest first (creationTimestamp, then when
// they were first served), then by name: the first one wins a tie, as in
// Istio.
func olderFirst[T Object](a, b T) int {
	ma, mb := a.GetMeta(), b.GetMeta()
	return cmp.Or(ma.CreationTimestamp.Compare(mb.CreationTimestamp), ma.Admitted.Compare(mb.Admitted),
		cmp.Compare(ma.Namespace, mb.Namespace), cmp.Compare(ma.Name, mb.Name))
}

// ---------------------------------------------------------------------------
// (b) DestinationRule: what a client sends

// ClientTLSFor decides the TLS a client in q.ClientNamespace uses toward
// port q.Port of the service q.ServiceHost, following Istio:
//
//   - Namespaces are searched in order: the client's, the service's, then
//     the root namespace. The first namespace holding any rule that matches
//     the host and is visible to the client wins; later namespaces are not
//     consulted even if the winning rule sets no TLS.
//   - Visibility (exportTo): empty or "*" means every namespace, "." only
//     the rule's own namespace, otherwise the listed namespaces.
//   - Host matching: a short host ("product") or "name.namespace" is
//     resolved to name.namespace.svc.<ClusterDomain> in the rule's namespace
//     (see ResolveHost); "*.suffix" matches any host ending in ".suffix";
//     "*" matches every host. Comparison ignores case.
//   - Within the namespace the most specific host wins: an exact host beats
//     any wildcard, a longer wildcard suffix beats a shorter one
//     (*.default.svc.cluster.local beats *.svc.cluster.local beats *).
//     Ties: the oldest creationTimestamp wins, then the smaller name.
//   - In the chosen rule, a portLevelSettings entry for q.Port that sets tls
//     beats trafficPolicy.tls.
//   - If the chosen rule sets no TLS for the port, or no rule applies, the
//     result is Auto (auto-mTLS); Rule still names a chosen rule.
func (s *Set) ClientTLSFor(q ClientTLSQuery) EffectiveClientTLS {
	host := strings.ToLower(q.ServiceHost)
	var rule *DestinationRule
	for _, ns := range uniqueNonEmpty(q.ClientNamespace, q.ServiceNamespace, q.RootNamespace) {
		best, bestScore := (*DestinationRule)(nil), -1
		for _, dr := range s.DestinationRules {
			if dr == nil || dr.Namespace != ns || !exportedTo(dr, q.ClientNamespace) {
				continue
			}
			score := hostMatchScore(ResolveHost(dr.Spec.Host, dr.Namespace, q.ClusterDomain), host)
			if score < 0 {
				continue
			}
			if score > bestScore || (score == bestScore && olderFirst(dr, best) < 0) {
				best, bestScore = dr, score
			}
		}
		if best != nil {
			rule = best
			break
		}
	}
	if rule == nil {
		return EffectiveClientTLS{Auto: true}
	}
	out := EffectiveClientTLS{Auto: true, Rule: rule.Key()}
	if tp := rule.Spec.TrafficPolicy; tp != nil {
		tls := tp.TLS
		for _, pl := range tp.PortLevelSettings {
			if pl.Port != nil && pl.Port.Number == q.Port && pl.TLS != nil {
				tls = pl.TLS
				break
			}
		}
		if tls != nil {
			cp := *tls
			cp.SubjectAltNames = slices.Clone(tls.SubjectAltNames)
			out.Auto, out.Settings = false, &cp
		}
	}
	return out
}

// ResolveHost turns a DestinationRule host written in namespace into the
// form services are named by: "product" and "product.default" become
// product.default.svc.<clusterDomain> (a bare name takes the rule's
// namespace); names with more dots and wildcards are returned as written,
// lower-cased. An empty clusterDomain means cluster.local.
func ResolveHost(host, namespace, clusterDomain string) string {
	host = strings.ToLower(host)
	if clusterDomain == "" {
		clusterDomain = "cluster.local"
	}
	if strings.HasPrefix(host, "*") || host == "" {
		return host
	}
	switch strings.Count(host, ".") {
	case 0:
		return host + "." + namespace + ".svc." + clusterDomain
	case 1:
		return host + ".svc." + clusterDomain
	default:
		return host
	}
}

// hostMatchScore is -1 when pattern does not match host, and otherwise
// grows with specificity: "*" is 0, "*.suffix" is 1+len(suffix), and an
// exact match beats every wildcard.
func hostMatchScore(pattern, host string) int {
	switch {
	case pattern == "*":
		return 0
	case strings.HasPrefix(pattern, "*."):
		if strings.HasSuffix(host, pattern[1:]) {
			return len(pattern)
		}
		return -1
	case pattern == host:
		return math.MaxInt
	default:
		return -1
	}
}

func exportedTo(dr *DestinationRule, namespace string) bool {
	if len(dr.Spec.ExportTo) == 0 {
		return true
	}
	for _, e := range dr.Spec.ExportTo {
		if e == "*" || e == namespace || (e == "." && dr.Namespace == namespace) {
			return true
		}
	}
	return false
}

func uniqueNonEmpty(values ...string) []string {
	var out []string
	for _, v := range values {
		if v != "" && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// (c) AuthorizationPolicy and RequestAuthentication: which select a workload

// AuthorizationPoliciesFor returns the AuthorizationPolicies that apply to
// w: those in w's namespace whose selector matches w's labels (no selector
// selects every workload) and those in rootNamespace whose selector
// matches, which apply across the mesh as in Istio. The result is sorted by
// namespace, then name.
func (s *Set) AuthorizationPoliciesFor(rootNamespace string, w Workload) []*AuthorizationPolicy {
	return selectFor(s.AuthorizationPolicies, rootNamespace, w, func(p *AuthorizationPolicy) *WorkloadSelector {
		return p.Spec.Selector
	})
}

// RequestAuthenticationsFor returns the RequestAuthentications that apply
// to w, by the same rules as AuthorizationPoliciesFor.
func (s *Set) RequestAuthenticationsFor(rootNamespace string, w Workload) []*RequestAuthentication {
	return selectFor(s.RequestAuthentications, rootNamespace, w, func(p *RequestAuthentication) *WorkloadSelector {
		return p.Spec.Selector
	})
}

func selectFor[T Object](all []T, rootNamespace string, w Workload, selector func(T) *WorkloadSelector) []T {
	var out []T
	var null T // policy kinds are pointers; skip nil entries
	for _, p := range all {
		if any(p) == any(null) {
			continue
		}
		ns := p.GetMeta().Namespace
		if (ns == w.Namespace || ns == rootNamespace) && selector(p).Matches(w.Labels) {
			out = append(out, p)
		}
	}
	sortByKey(out)
	return out
}
