package translate

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetworkv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/minimesh/minimesh/policy"
)

// This file turns AuthorizationPolicies into Envoy RBAC, with Istio's
// semantics:
//
//   - AUDIT policies become an RBAC filter with action LOG, placed first so
//     every request is audited, including those denied later;
//   - DENY policies become one RBAC filter with action DENY, evaluated before
//     ALLOW, so a request matching any DENY rule is denied;
//   - ALLOW policies become one RBAC filter with action ALLOW, present
//     whenever any ALLOW policy selects the workload, so a request must match
//     one of their rules; a policy with no rules adds nothing to the filter,
//     which is how "allow-nothing" ({} or rules: []) denies everything.
//
// A policy annotated istio.io/dry-run: "true" goes into the same filter's
// shadow_rules instead of its rules, as Istio does: Envoy evaluates shadow
// rules, counts the result under shadow_rules_stat_prefix
// (istio_dry_run_allow_ / istio_dry_run_deny_) and writes it to dynamic
// metadata (shadow_effective_policy_id, shadow_engine_result under
// envoy.filters.http.rbac), but never acts on it. A filter holding only
// shadow rules has no rules at all, so it enforces nothing; in particular
// a dry-run ALLOW policy never turns on "deny unless allowed".
//
// A rule matches when any from matches, any to matches and every when
// matches; inside one source or operation every present field must match.
// Each rule becomes one Envoy policy named ns[<ns>]-policy[<name>]-rule[<i>].
//
// What Envoy cannot check is never silently allowed. On a TCP port the
// fields that need HTTP (methods, paths, hosts, requestPrincipals,
// request.* conditions, notX variants of those) are unknowable, and so is a
// value minimesh cannot express (an unknown condition key, a port that is
// not a number). Such a field fails closed and is reported as a Problem:
//
//   - in an ALLOW rule the whole rule is dropped, so it allows nothing;
//   - in a DENY (or AUDIT) rule the field is widened to match everything,
//     so the rule denies (audits) at least what it asked for; a DENY rule
//     made only of HTTP fields denies every connection to that TCP port.

// jwtMetadataNamespace is where jwt_authn puts the verified payload
// (payload_in_metadata), which requestPrincipals and request.auth.*
// conditions read.
const (
	jwtMetadataNamespace = "envoy.filters.http.jwt_authn"
	jwtPayloadKey        = "payload"
)

// authzScope is what the RBAC for one filter chain depends on.
type authzScope struct {
	// issuers are the JWT issuers the workload accepts (from the
	// RequestAuthentications selecting it), to split <iss>/<sub>.
	issuers []string
	// tcp is true for a chain without an HTTP connection manager.
	tcp bool
	// port names the target port in problems; 0 is any undeclared port.
	port uint32
	// sniffed is true for the TCP chains of a port whose protocol is
	// detected per connection: they carry what was not detected as HTTP.
	sniffed bool
	// grpc is true for a proxyless gRPC server. gRPC's RBAC engine has no
	// dynamic metadata (so no verified JWT to match), sees an empty
	// requested server name, and refuses header matchers on :scheme and
	// grpc-* names; such fields fail closed there like L7 fields on TCP.
	grpc bool
}

// rbacRules are the compiled RBAC configurations for one chain: per
// action the enforced rules and the dry-run (shadow) rules, each nil when
// no policy of that kind applies.
type rbacRules struct {
	audit, deny, allow                   *rbacv3.RBAC
	shadowAudit, shadowDeny, shadowAllow *rbacv3.RBAC
}

// Stat prefixes of dry-run rules, Istio's, so dashboards built for Istio's
// rbac.istio_dry_run_allow_.shadow_denied counters keep working.
const (
	shadowAllowStatPrefix = "istio_dry_run_allow_"
	shadowDenyStatPrefix  = "istio_dry_run_deny_"
)

// rbacFilter is one RBAC filter's configuration: the enforced rules and the
// shadow rules of one action, either of which may be nil.
type rbacFilter struct {
	rules, shadow *rbacv3.RBAC
}

// shadowStatPrefix is Istio's stat prefix for dry-run rules of an action;
// Istio sets none for AUDIT.
func (f rbacFilter) shadowStatPrefix() string {
	if f.shadow == nil {
		return ""
	}
	switch f.shadow.Action {
	case rbacv3.RBAC_ALLOW:
		return shadowAllowStatPrefix
	case rbacv3.RBAC_DENY:
		return shadowDenyStatPrefix
	}
	return ""
}

// filters lists the RBAC filters in evaluation order: audit, deny, allow.
func (r rbacRules) filters() []rbacFilter {
	var out []rbacFilter
	for _, f := range []rbacFilter{{r.audit, r.shadowAudit}, {r.deny, r.shadowDeny}, {r.allow, r.shadowAllow}} {
		if f.rules != nil || f.shadow != nil {
			out = append(out, f)
		}
	}
	return out
}

// buildRBAC compiles the policies selecting a workload (as returned by
// policy.AuthorizationPoliciesFor, sorted) for one chain.
func buildRBAC(policies []*policy.AuthorizationPolicy, scope authzScope) (rbacRules, policy.Problems) {
	var out rbacRules
	var problems policy.Problems
	add := func(dst **rbacv3.RBAC, action rbacv3.RBAC_Action, name string, p *rbacv3.Policy) {
		if *dst == nil {
			*dst = &rbacv3.RBAC{Action: action, Policies: map[string]*rbacv3.Policy{}}
		}
		if p != nil {
			(*dst).Policies[name] = p
		}
	}
	for _, ap := range policies {
		action := ap.Spec.EffectiveAction()
		allow, deny, audit := &out.allow, &out.deny, &out.audit
		if ap.DryRun {
			allow, deny, audit = &out.shadowAllow, &out.shadowDeny, &out.shadowAudit
		}
		for i, r := range ap.Spec.Rules {
			b := ruleBuilder{scope: scope, meta: &ap.Meta, action: action, rule: i}
			p := b.build(r)
			problems = append(problems, b.problems...)
			name := RBACPolicyName(ap.Namespace, ap.Name, i)
			switch action {
			case policy.ActionAllow:
				add(allow, rbacv3.RBAC_ALLOW, name, p)
			case policy.ActionDeny:
				add(deny, rbacv3.RBAC_DENY, name, p)
			case policy.ActionAudit:
				add(audit, rbacv3.RBAC_LOG, name, p)
			}
		}
		switch action {
		case policy.ActionAllow:
			// Present even with no rules: that is what makes an empty ALLOW
			// policy deny everything (in dry run: record that it would).
			add(allow, rbacv3.RBAC_ALLOW, "", nil)
		case policy.ActionDeny, policy.ActionAudit:
		default:
			// Validation refuses other actions (CUSTOM); should one get
			// here, deny everything rather than ignore it, dry run or not.
			problems = append(problems, policy.Problem{
				Severity: policy.SeverityError, Kind: ap.Kind, Namespace: ap.Namespace, Name: ap.Name,
				Location: ap.Origin, Field: "spec.action",
				Message: fmt.Sprintf("action %q is not supported; minimesh denies every request to the selected workloads instead", action),
			})
			add(&out.deny, rbacv3.RBAC_DENY, RBACPolicyName(ap.Namespace, ap.Name, 0), anyPolicy())
		}
	}
	return out, problems
}

// HTTPRBACFilters are the HTTP filters for compiled rules, in evaluation
// order: audit, deny, allow; each carries its action's dry-run policies
// as shadow rules.
func HTTPRBACFilters(r rbacRules) []*hcmv3.HttpFilter {
	var out []*hcmv3.HttpFilter
	for _, f := range r.filters() {
		out = append(out, &hcmv3.HttpFilter{
			Name: wellknown.HTTPRoleBasedAccessControl,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&rbachttpv3.RBAC{
				Rules:                 f.rules,
				ShadowRules:           f.shadow,
				ShadowRulesStatPrefix: f.shadowStatPrefix(),
			})},
		})
	}
	return out
}

// Names of the proxyless RBAC filters. gRPC refuses two HTTP filters with
// one name (Envoy does not), so the deny and allow filters are told apart.
const (
	grpcRBACDenyFilterName  = wellknown.HTTPRoleBasedAccessControl + ".deny"
	grpcRBACAllowFilterName = wellknown.HTTPRoleBasedAccessControl + ".allow"
)

// GRPCRBACFilters are the HTTP filters for a proxyless gRPC server: deny,
// then allow. gRPC only enforces ALLOW and DENY (it ignores a LOG filter),
// so audit rules are not sent; the caller reports that.
func GRPCRBACFilters(r rbacRules) []*hcmv3.HttpFilter {
	var out []*hcmv3.HttpFilter
	if r.deny != nil {
		out = append(out, httpRBACFilter(grpcRBACDenyFilterName, r.deny))
	}
	if r.allow != nil {
		out = append(out, httpRBACFilter(grpcRBACAllowFilterName, r.allow))
	}
	return out
}

func httpRBACFilter(name string, rules *rbacv3.RBAC) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{
		Name:       name,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&rbachttpv3.RBAC{Rules: rules})},
	}
}

// NetworkRBACFilters are the network filters for compiled rules, placed
// before tcp_proxy, in evaluation order: audit, deny, allow, with dry-run
// policies as shadow rules as for HTTP.
func NetworkRBACFilters(r rbacRules) []*listenerv3.Filter {
	var out []*listenerv3.Filter
	for _, f := range r.filters() {
		out = append(out, &listenerv3.Filter{
			Name: wellknown.RoleBasedAccessControl,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(&rbacnetworkv3.RBAC{
				StatPrefix:            "tcp.",
				Rules:                 f.rules,
				ShadowRules:           f.shadow,
				ShadowRulesStatPrefix: f.shadowStatPrefix(),
			})},
		})
	}
	return out
}

// ruleBuilder compiles one rule.
type ruleBuilder struct {
	scope  authzScope
	meta   *policy.Meta
	action policy.Action
	rule   int
	// dropped is set when an ALLOW rule cannot be expressed.
	dropped  bool
	problems policy.Problems
}

// errNeedsHTTP marks a field that a TCP chain cannot check.
var errNeedsHTTP = errors.New("needs HTTP")

// Fields proxyless gRPC cannot check (see authzScope.grpc).
var (
	errNeedsJWT = errors.New("needs a verified JWT, which proxyless gRPC cannot verify (it has no JWT filter)")
	errNoSNI    = errors.New("gRPC's RBAC cannot see the requested server name")
)

// requirement is what a field needs from the chain to be checked.
type requirement uint8

const (
	needsHTTP requirement = 1 << iota
	needsJWT
	needsSNI
)

// unsupported returns why the chain cannot check a field with these needs,
// or nil.
func (b *ruleBuilder) unsupported(needs requirement) error {
	switch {
	case needs&needsHTTP != 0 && b.scope.tcp:
		return errNeedsHTTP
	case needs&needsJWT != 0 && b.scope.grpc:
		return errNeedsJWT
	case needs&needsSNI != 0 && b.scope.grpc:
		return errNoSNI
	}
	return nil
}

// fail records a field that cannot be expressed and applies the fail-closed
// choice for the rule's action.
func (b *ruleBuilder) fail(field string, err error) {
	var what string
	if errors.Is(err, errNeedsHTTP) {
		where := fmt.Sprintf("port %d", b.scope.port)
		if b.scope.port == 0 {
			where = "ports no service declares"
		}
		what = fmt.Sprintf("needs HTTP, but %s carries TCP", where)
		if b.scope.sniffed {
			what = fmt.Sprintf("needs HTTP, which connections to %s not detected as HTTP (plaintext HTTP/1.1 or h2c, or mesh mTLS marked HTTP) do not have", where)
		}
	} else {
		what = err.Error()
	}
	var consequence string
	if b.action == policy.ActionAllow {
		b.dropped = true
		consequence = "the rule is dropped there, so it allows nothing"
	} else {
		consequence = "the field is widened to match everything there, so the rule applies to more traffic, never less"
	}
	b.problems = append(b.problems, policy.Problem{
		Severity: policy.SeverityWarning, Kind: b.meta.Kind, Namespace: b.meta.Namespace, Name: b.meta.Name,
		Location: b.meta.Origin, Field: field,
		Message: what + "; " + consequence,
	})
}

// build returns the Envoy policy for the rule, or nil when an ALLOW rule
// was dropped.
func (b *ruleBuilder) build(r policy.Rule) *rbacv3.Policy {
	prefix := fmt.Sprintf("spec.rules[%d]", b.rule)
	var principals []*rbacv3.Principal
	var permissions []*rbacv3.Permission

	if len(r.From) > 0 {
		var alts []*rbacv3.Principal
		for j, f := range r.From {
			alts = append(alts, b.source(f.Source, fmt.Sprintf("%s.from[%d].source", prefix, j)))
		}
		principals = append(principals, orIDs(alts))
	}
	if len(r.To) > 0 {
		var alts []*rbacv3.Permission
		for j, t := range r.To {
			alts = append(alts, b.operation(t.Operation, fmt.Sprintf("%s.to[%d].operation", prefix, j)))
		}
		permissions = append(permissions, orRules(alts))
	}
	for j, c := range r.When {
		field := fmt.Sprintf("%s.when[%d]", prefix, j)
		pr, pe, err := b.condition(c)
		switch {
		case err != nil:
			b.fail(field+" ("+c.Key+")", err)
		case pr != nil:
			principals = append(principals, pr)
		case pe != nil:
			permissions = append(permissions, pe)
		}
	}
	if b.dropped {
		return nil
	}
	return &rbacv3.Policy{
		Permissions: []*rbacv3.Permission{andRules(permissions)},
		Principals:  []*rbacv3.Principal{andIDs(principals)},
	}
}

// source is the AND of every present field of one source.
func (b *ruleBuilder) source(s *policy.Source, path string) *rbacv3.Principal {
	if s == nil {
		return anyPrincipal()
	}
	var ids []*rbacv3.Principal
	field := func(name string, values []string, negate bool, needs requirement, one func(string) (*rbacv3.Principal, error)) {
		if len(values) == 0 {
			return
		}
		if err := b.unsupported(needs); err != nil {
			b.fail(path+"."+name, err)
			return
		}
		var alts []*rbacv3.Principal
		for _, v := range values {
			p, err := one(v)
			if err != nil {
				b.fail(path+"."+name, fmt.Errorf("value %q: %w", v, err))
				return
			}
			alts = append(alts, p)
		}
		p := orIDs(alts)
		if negate {
			p = notID(p)
		}
		ids = append(ids, p)
	}
	field("principals", s.Principals, false, 0, b.principal)
	field("notPrincipals", s.NotPrincipals, true, 0, b.principal)
	field("requestPrincipals", s.RequestPrincipals, false, needsHTTP|needsJWT, b.requestPrincipal)
	field("notRequestPrincipals", s.NotRequestPrincipals, true, needsHTTP|needsJWT, b.requestPrincipal)
	field("namespaces", s.Namespaces, false, 0, namespacePrincipal)
	field("notNamespaces", s.NotNamespaces, true, 0, namespacePrincipal)
	field("ipBlocks", s.IPBlocks, false, 0, directRemoteIP)
	field("notIpBlocks", s.NotIPBlocks, true, 0, directRemoteIP)
	return andIDs(ids)
}

// operation is the AND of every present field of one operation.
func (b *ruleBuilder) operation(o *policy.Operation, path string) *rbacv3.Permission {
	if o == nil {
		return anyPermission()
	}
	var rules []*rbacv3.Permission
	field := func(name string, values []string, negate bool, needs requirement, one func(string) (*rbacv3.Permission, error)) {
		if len(values) == 0 {
			return
		}
		if err := b.unsupported(needs); err != nil {
			b.fail(path+"."+name, err)
			return
		}
		var alts []*rbacv3.Permission
		for _, v := range values {
			p, err := one(v)
			if err != nil {
				b.fail(path+"."+name, fmt.Errorf("value %q: %w", v, err))
				return
			}
			alts = append(alts, p)
		}
		p := orRules(alts)
		if negate {
			p = notRule(p)
		}
		rules = append(rules, p)
	}
	field("hosts", o.Hosts, false, needsHTTP, hostPermission)
	field("notHosts", o.NotHosts, true, needsHTTP, hostPermission)
	field("ports", o.Ports, false, 0, portPermission)
	field("notPorts", o.NotPorts, true, 0, portPermission)
	field("methods", o.Methods, false, needsHTTP, methodPermission)
	field("notMethods", o.NotMethods, true, needsHTTP, methodPermission)
	field("paths", o.Paths, false, needsHTTP, pathPermission)
	field("notPaths", o.NotPaths, true, needsHTTP, pathPermission)
	return andRules(rules)
}

// condition compiles one when entry into a principal or a permission.
func (b *ruleBuilder) condition(c policy.Condition) (*rbacv3.Principal, *rbacv3.Permission, error) {
	key := c.Key
	if len(c.Values) == 0 && len(c.NotValues) == 0 {
		return nil, nil, fmt.Errorf("condition %q has neither values nor notValues", key)
	}
	type principalFn = func(string) (*rbacv3.Principal, error)
	type permissionFn = func(string) (*rbacv3.Permission, error)
	var (
		pr    principalFn
		pe    permissionFn
		needs requirement
	)
	switch {
	case strings.HasPrefix(key, "request.headers["):
		name, ok := bracketed(strings.TrimPrefix(key, "request.headers"))
		if !ok || len(name) != 1 {
			return nil, nil, fmt.Errorf("key %q is not request.headers[<name>]", key)
		}
		if lower := strings.ToLower(name[0]); b.scope.grpc && (lower == ":scheme" || strings.HasPrefix(lower, "grpc-")) {
			// gRPC refuses the whole listener over such a matcher.
			return nil, nil, fmt.Errorf("gRPC's RBAC refuses rules on header %q", name[0])
		}
		needs = needsHTTP
		pr = func(v string) (*rbacv3.Principal, error) {
			return &rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: headerMatcher(name[0], v, false)}}, nil
		}
	case key == "source.ip":
		pr = directRemoteIP
	case key == "remote.ip":
		pr = remoteIP
	case key == "source.namespace":
		pr = namespacePrincipal
	case key == "source.principal":
		pr = b.principal
	case key == "request.auth.principal":
		needs, pr = needsHTTP|needsJWT, b.requestPrincipal
	case key == "request.auth.audiences":
		needs, pr = needsHTTP|needsJWT, claimPrincipal([]string{"aud"})
	case key == "request.auth.presenter":
		needs, pr = needsHTTP|needsJWT, claimPrincipal([]string{"azp"})
	case strings.HasPrefix(key, "request.auth.claims["):
		path, ok := bracketed(strings.TrimPrefix(key, "request.auth.claims"))
		if !ok {
			return nil, nil, fmt.Errorf("key %q is not request.auth.claims[<name>] (or [<name>][<nested>])", key)
		}
		needs, pr = needsHTTP|needsJWT, claimPrincipal(path)
	case key == "destination.ip":
		pe = destinationIP
	case key == "destination.port":
		pe = portPermission
	case key == "connection.sni":
		needs = needsSNI
		pe = func(v string) (*rbacv3.Permission, error) {
			return &rbacv3.Permission{Rule: &rbacv3.Permission_RequestedServerName{RequestedServerName: istioMatcher(v)}}, nil
		}
	default:
		return nil, nil, fmt.Errorf("condition key %q is not supported", key)
	}
	if err := b.unsupported(needs); err != nil {
		return nil, nil, err
	}
	if pr != nil {
		var ids []*rbacv3.Principal
		for _, set := range []struct {
			values []string
			negate bool
		}{{c.Values, false}, {c.NotValues, true}} {
			if len(set.values) == 0 {
				continue
			}
			var alts []*rbacv3.Principal
			for _, v := range set.values {
				p, err := pr(v)
				if err != nil {
					return nil, nil, fmt.Errorf("value %q: %w", v, err)
				}
				alts = append(alts, p)
			}
			p := orIDs(alts)
			if set.negate {
				p = notID(p)
			}
			ids = append(ids, p)
		}
		return andIDs(ids), nil, nil
	}
	var rules []*rbacv3.Permission
	for _, set := range []struct {
		values []string
		negate bool
	}{{c.Values, false}, {c.NotValues, true}} {
		if len(set.values) == 0 {
			continue
		}
		var alts []*rbacv3.Permission
		for _, v := range set.values {
			p, err := pe(v)
			if err != nil {
				return nil, nil, fmt.Errorf("value %q: %w", v, err)
			}
			alts = append(alts, p)
		}
		p := orRules(alts)
		if set.negate {
			p = notRule(p)
		}
		rules = append(rules, p)
	}
	return nil, andRules(rules), nil
}

// bracketed parses "[a][b]..." into its parts.
func bracketed(s string) ([]string, bool) {
	var parts []string
	for s != "" {
		if s[0] != '[' {
			return nil, false
		}
		end := strings.IndexByte(s, ']')
		if end <= 1 {
			return nil, false
		}
		parts = append(parts, s[1:end])
		s = s[end+1:]
	}
	return parts, len(parts) > 0
}

// principal matches the peer certificate's URI SAN. Istio writes principals
// without the scheme ("cluster.local/ns/default/sa/gateway"); "*" means any
// authenticated peer.
func (b *ruleBuilder) principal(v string) (*rbacv3.Principal, error) {
	kind, s := policy.ParseMatch(v)
	var m *matcherv3.StringMatcher
	switch kind {
	case policy.MatchAny:
		m = anyStringMatcher()
	case policy.MatchSuffix:
		m = suffixMatcher(s)
	default:
		s = strings.TrimPrefix(s, "spiffe://")
		if kind == policy.MatchPrefix {
			m = prefixMatcher("spiffe://" + s)
		} else {
			m = exactMatcher("spiffe://" + s)
		}
	}
	return authenticated(m), nil
}

// namespacePrincipal matches the namespace part of the peer's SPIFFE ID.
func namespacePrincipal(v string) (*rbacv3.Principal, error) {
	kind, s := policy.ParseMatch(v)
	var ns string
	switch kind {
	case policy.MatchAny:
		ns = `[^/]+`
	case policy.MatchPrefix:
		ns = regexp.QuoteMeta(s) + `[^/]*`
	case policy.MatchSuffix:
		ns = `[^/]*` + regexp.QuoteMeta(s)
	default:
		ns = regexp.QuoteMeta(s)
	}
	return authenticated(regexMatcher(`spiffe://[^/]+/ns/` + ns + `/.*`)), nil
}

func authenticated(m *matcherv3.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{
		Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: m},
	}}
}

// requestPrincipal matches <iss>/<sub> of a verified JWT. Envoy has no such
// joined value, so the string is split at an issuer the workload accepts;
// "*" means any verified token. A suffix that reaches into the issuer
// cannot be split and fails closed.
func (b *ruleBuilder) requestPrincipal(v string) (*rbacv3.Principal, error) {
	kind, s := policy.ParseMatch(v)
	present := &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_PresentMatch{PresentMatch: true}}
	var alts []*rbacv3.Principal
	switch kind {
	case policy.MatchAny:
		return jwtClaim([]string{"iss"}, present), nil
	case policy.MatchSuffix:
		if strings.Contains(s, "/") {
			return nil, errors.New(`a request principal suffix containing "/" cannot be split into issuer and subject`)
		}
		return andIDs([]*rbacv3.Principal{
			jwtClaim([]string{"iss"}, present),
			jwtClaim([]string{"sub"}, stringValue(suffixMatcher(s))),
		}), nil
	case policy.MatchPrefix:
		for _, iss := range b.scope.issuers {
			switch {
			case strings.HasPrefix(iss+"/", s):
				alts = append(alts, jwtClaim([]string{"iss"}, stringValue(exactMatcher(iss))))
			case strings.HasPrefix(s, iss+"/"):
				sub := present
				if rest := s[len(iss)+1:]; rest != "" {
					sub = stringValue(prefixMatcher(rest))
				}
				alts = append(alts, andIDs([]*rbacv3.Principal{
					jwtClaim([]string{"iss"}, stringValue(exactMatcher(iss))),
					jwtClaim([]string{"sub"}, sub),
				}))
			}
		}
	default:
		for _, iss := range b.scope.issuers {
			if sub, ok := strings.CutPrefix(s, iss+"/"); ok && sub != "" {
				alts = append(alts, andIDs([]*rbacv3.Principal{
					jwtClaim([]string{"iss"}, stringValue(exactMatcher(iss))),
					jwtClaim([]string{"sub"}, stringValue(exactMatcher(sub))),
				}))
			}
		}
	}
	if len(alts) == 0 {
		// No token this workload accepts can carry this principal: the
		// value matches nothing, which is exactly its meaning.
		return notID(anyPrincipal()), nil
	}
	return orIDs(alts), nil
}

// claimPrincipal matches one JWT claim that may be a string or a list of
// strings (aud, groups), as Istio's request.auth.claims does.
func claimPrincipal(path []string) func(string) (*rbacv3.Principal, error) {
	return func(v string) (*rbacv3.Principal, error) {
		m := istioMatcher(v)
		return jwtClaim(path, &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_OrMatch{OrMatch: &matcherv3.OrMatcher{
			ValueMatchers: []*matcherv3.ValueMatcher{
				stringValue(m),
				{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{
					MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: stringValue(m)},
				}}},
			},
		}}}), nil
	}
}

func jwtClaim(path []string, value *matcherv3.ValueMatcher) *rbacv3.Principal {
	segs := []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: jwtPayloadKey}}}
	for _, p := range path {
		segs = append(segs, &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: p}})
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_SourcedMetadata{SourcedMetadata: &rbacv3.SourcedMetadata{
		MetadataMatcher: &matcherv3.MetadataMatcher{Filter: jwtMetadataNamespace, Path: segs, Value: value},
	}}}
}

func stringValue(m *matcherv3.StringMatcher) *matcherv3.ValueMatcher {
	return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: m}}
}

func directRemoteIP(v string) (*rbacv3.Principal, error) {
	c, err := cidr(v)
	if err != nil {
		return nil, err
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: c}}, nil
}

func remoteIP(v string) (*rbacv3.Principal, error) {
	c, err := cidr(v)
	if err != nil {
		return nil, err
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: c}}, nil
}

func destinationIP(v string) (*rbacv3.Permission, error) {
	c, err := cidr(v)
	if err != nil {
		return nil, err
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: c}}, nil
}

// cidr accepts an address or a prefix, as Istio's ipBlocks do.
func cidr(v string) (*corev3.CidrRange, error) {
	var p netip.Prefix
	if a, err := netip.ParseAddr(v); err == nil {
		p = netip.PrefixFrom(a, a.BitLen())
	} else if p, err = netip.ParsePrefix(v); err != nil {
		return nil, fmt.Errorf("not an IP address or CIDR block")
	}
	return &corev3.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))}, nil
}

func portPermission(v string) (*rbacv3.Permission, error) {
	n, err := strconv.ParseUint(v, 10, 16)
	if err != nil || n == 0 {
		return nil, fmt.Errorf("not a port number between 1 and 65535")
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: uint32(n)}}, nil
}

func methodPermission(v string) (*rbacv3.Permission, error) {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: headerMatcher(":method", v, false)}}, nil
}

func pathPermission(v string) (*rbacv3.Permission, error) {
	if kind, _ := policy.ParseMatch(v); kind == policy.MatchAny {
		return anyPermission(), nil
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
		Rule: &matcherv3.PathMatcher_Path{Path: istioMatcher(v)},
	}}}, nil
}

// hostPermission matches the Host (:authority) header case-insensitively,
// with or without a port, since clients add ":<port>" for non-default ports.
func hostPermission(v string) (*rbacv3.Permission, error) {
	kind, s := policy.ParseMatch(v)
	var re string
	switch kind {
	case policy.MatchAny:
		return anyPermission(), nil
	case policy.MatchPrefix:
		re = regexp.QuoteMeta(s) + `.*`
	case policy.MatchSuffix:
		re = `.*` + regexp.QuoteMeta(s) + `(:[0-9]+)?`
	default:
		re = regexp.QuoteMeta(s) + `(:[0-9]+)?`
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{
		Name:                 ":authority",
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: regexMatcher(`(?i)` + re)},
	}}}, nil
}

// headerMatcher matches one header value with Istio's exact/prefix/suffix
// forms; "*" means the header is present.
func headerMatcher(name, v string, ignoreCase bool) *routev3.HeaderMatcher {
	h := &routev3.HeaderMatcher{Name: name}
	if kind, _ := policy.ParseMatch(v); kind == policy.MatchAny {
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
		return h
	}
	m := istioMatcher(v)
	m.IgnoreCase = ignoreCase
	h.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: m}
	return h
}

// istioMatcher turns Istio's match syntax into a string matcher.
func istioMatcher(v string) *matcherv3.StringMatcher {
	kind, s := policy.ParseMatch(v)
	switch kind {
	case policy.MatchAny:
		return anyStringMatcher()
	case policy.MatchPrefix:
		return prefixMatcher(s)
	case policy.MatchSuffix:
		return suffixMatcher(s)
	default:
		return exactMatcher(s)
	}
}

func exactMatcher(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

// prefixMatcher and suffixMatcher fall back to "any" for an empty value,
// which Envoy's matchers refuse and which matches everything anyway.
func prefixMatcher(s string) *matcherv3.StringMatcher {
	if s == "" {
		return anyStringMatcher()
	}
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s}}
}

func suffixMatcher(s string) *matcherv3.StringMatcher {
	if s == "" {
		return anyStringMatcher()
	}
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: s}}
}

func regexMatcher(re string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}}
}

// anyStringMatcher matches any non-empty value.
func anyStringMatcher() *matcherv3.StringMatcher { return regexMatcher(`.+`) }

func anyPrincipal() *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
}

func anyPermission() *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}
}

func anyPolicy() *rbacv3.Policy {
	return &rbacv3.Policy{Permissions: []*rbacv3.Permission{anyPermission()}, Principals: []*rbacv3.Principal{anyPrincipal()}}
}

// orIDs, andIDs, orRules and andRules skip the wrapper for a single element
// so the output reads like the policy; an empty AND matches everything.
func orIDs(ids []*rbacv3.Principal) *rbacv3.Principal {
	if len(ids) == 1 {
		return ids[0]
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: slices.Clip(ids)}}}
}

func andIDs(ids []*rbacv3.Principal) *rbacv3.Principal {
	switch len(ids) {
	case 0:
		return anyPrincipal()
	case 1:
		return ids[0]
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: ids}}}
}

func notID(p *rbacv3.Principal) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: p}}
}

func orRules(rules []*rbacv3.Permission) *rbacv3.Permission {
	if len(rules) == 1 {
		return rules[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: rules}}}
}

func andRules(rules []*rbacv3.Permission) *rbacv3.Permission {
	switch len(rules) {
	case 0:
		return anyPermission()
	case 1:
		return rules[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: rules}}}
}

func notRule(p *rbacv3.Permission) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: p}}
}
