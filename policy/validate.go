package policy

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// checker collects every problem of one object; it never stops early.
type checker struct {
	m  *Meta
	ps Problems
}

func (c *checker) errf(field, format string, args ...any) {
	c.ps = append(c.ps, errorf(c.m, field, format, args...))
}

func (c *checker) warnf(field, format string, args ...any) {
	c.ps = append(c.ps, warnf(c.m, field, format, args...))
}

func (c *checker) meta() {
	if c.m.Name == "" {
		c.errf("metadata.name", "is required")
	}
	if c.m.Namespace == "" {
		c.errf("metadata.namespace", "is required")
	}
}

// selector checks matchLabels the way Istio does: keys must be non-empty
// and neither keys nor values may use wildcards.
func (c *checker) selector(field string, s *WorkloadSelector) {
	if s == nil {
		return
	}
	for _, k := range sortedKeys(anyMap(s.MatchLabels)) {
		f := field + ".matchLabels[" + k + "]"
		v := s.MatchLabels[k]
		switch {
		case k == "":
			c.errf(f, "label name must not be empty")
		case strings.Contains(k, "*") || strings.Contains(v, "*"):
			c.errf(f, "wildcards are not supported in selectors; use the exact label name and value")
		case !labelValueRE.MatchString(v):
			c.errf(f, "%q is not a valid label value (at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)", v)
		}
	}
}

var labelValueRE = regexp.MustCompile(`^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$`)

func anyMap(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// ---------------------------------------------------------------------------
// PeerAuthentication

var mtlsModes = []string{string(ModeUnset), string(ModeDisable), string(ModePermissive), string(ModeStrict)}

func (c *checker) peerAuthentication(s *PeerAuthenticationSpec) {
	c.selector("spec.selector", s.Selector)
	if s.MTLS != nil {
		c.mtlsMode("spec.mtls.mode", s.MTLS.Mode)
	}
	if len(s.PortLevelMTLS) > 0 && s.Selector.IsEmpty() {
		// Istio refuses this too: a port number only means something for
		// a known set of workloads.
		c.errf("spec.portLevelMtls", "needs a workload selector (spec.selector.matchLabels); "+
			"port-level settings are not allowed in namespace-wide or mesh-wide policies")
	}
	ports := make([]uint32, 0, len(s.PortLevelMTLS))
	for p := range s.PortLevelMTLS {
		ports = append(ports, p)
	}
	slices.Sort(ports)
	for _, p := range ports {
		f := fmt.Sprintf("spec.portLevelMtls[%d]", p)
		if p < 1 || p > 65535 {
			c.errf(f, "port %d is not in 1-65535", p)
		}
		c.mtlsMode(f+".mode", s.PortLevelMTLS[p].Mode)
	}
}

func (c *checker) mtlsMode(field string, m MTLSMode) {
	if m != "" && !slices.Contains(mtlsModes, string(m)) {
		c.errf(field, "%q is not one of %s", m, strings.Join(mtlsModes, ", "))
	}
}

// ---------------------------------------------------------------------------
// DestinationRule

var clientTLSModes = []string{string(TLSDisable), string(TLSSimple), string(TLSMutual), string(TLSIstioMutual)}

func (c *checker) destinationRule(s *DestinationRuleSpec) {
	if s.Host == "" {
		c.errf("spec.host", "is required: a service name (product), name.namespace, "+
			"an FQDN (product.default.svc.cluster.local) or a wildcard (*.default.svc.cluster.local)")
	} else if err := validateHost(s.Host); err != nil {
		c.errf("spec.host", "%v", err)
	}
	if s.WorkloadSelector != nil {
		c.errf("spec.workloadSelector", "is not supported by minimesh; a DestinationRule applies to every client "+
			"that can see it (use exportTo to limit the namespaces)")
	}
	c.exportTo("spec.exportTo", s.ExportTo)
	if len(s.Subsets) > 0 {
		c.warnf("spec.subsets", "ignored by minimesh: it has no subset routing, so traffic goes to every endpoint "+
			"of the host and any trafficPolicy inside a subset does not apply")
	}
	if tp := s.TrafficPolicy; tp != nil {
		if tp.TLS != nil {
			c.clientTLS("spec.trafficPolicy.tls", tp.TLS)
		}
		c.ignoredTrafficFields("spec.trafficPolicy", map[string]json.RawMessage{
			"loadBalancer": tp.LoadBalancer, "connectionPool": tp.ConnectionPool,
			"outlierDetection": tp.OutlierDetection, "tunnel": tp.Tunnel,
			"proxyProtocol": tp.ProxyProtocol, "retryBudget": tp.RetryBudget,
		})
		seen := map[uint32]int{}
		for i, pl := range tp.PortLevelSettings {
			f := fmt.Sprintf("spec.trafficPolicy.portLevelSettings[%d]", i)
			switch {
			case pl.Port == nil:
				c.errf(f+".port", "is required: set port.number to the service port this entry applies to")
			case pl.Port.Number < 1 || pl.Port.Number > 65535:
				c.errf(f+".port.number", "port %d is not in 1-65535", pl.Port.Number)
			default:
				if j, dup := seen[pl.Port.Number]; dup {
					c.errf(f+".port.number", "port %d is already configured by portLevelSettings[%d]; merge the two entries", pl.Port.Number, j)
				} else {
					seen[pl.Port.Number] = i
				}
			}
			if pl.TLS != nil {
				c.clientTLS(f+".tls", pl.TLS)
			}
			c.ignoredTrafficFields(f, map[string]json.RawMessage{
				"loadBalancer": pl.LoadBalancer, "connectionPool": pl.ConnectionPool,
				"outlierDetection": pl.OutlierDetection,
			})
		}
	}
}

func (c *checker) ignoredTrafficFields(field string, fields map[string]json.RawMessage) {
	names := make([]string, 0, len(fields))
	for name, raw := range fields {
		if len(raw) > 0 && string(raw) != "null" {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		c.warnf(field+"."+name, "ignored by minimesh: only tls is implemented in a traffic policy")
	}
}

func (c *checker) clientTLS(field string, t *ClientTLSSettings) {
	switch t.Mode {
	case "":
		c.warnf(field+".mode", "is not set; Istio's default DISABLE applies and the client sends plaintext")
	case TLSDisable, TLSSimple, TLSMutual, TLSIstioMutual:
	default:
		c.errf(field+".mode", "%q is not one of %s", t.Mode, strings.Join(clientTLSModes, ", "))
		return
	}
	if t.CredentialName != "" {
		c.errf(field+".credentialName", "is not supported: minimesh has no secret store; "+
			"set clientCertificate, privateKey and caCertificates to files on the client's proxy")
	}
	for i, san := range t.SubjectAltNames {
		if san == "" {
			c.errf(fmt.Sprintf("%s.subjectAltNames[%d]", field, i), "must not be empty")
		}
	}
	switch t.Mode {
	case "", TLSDisable:
		for _, f := range setFields(t) {
			c.warnf(field+"."+f, "ignored because mode is DISABLE (the client sends plaintext)")
		}
	case TLSIstioMutual:
		// Istio's rule: the mesh supplies these for ISTIO_MUTUAL.
		for _, kv := range [][2]string{{"caCertificates", t.CACertificates},
			{"clientCertificate", t.ClientCertificate}, {"privateKey", t.PrivateKey}} {
			if name, v := kv[0], kv[1]; v != "" {
				c.errf(field+"."+name, "must not be set with ISTIO_MUTUAL: the mesh's own certificates are used; "+
					"use MUTUAL to present your own")
			}
		}
	case TLSSimple:
		for _, kv := range [][2]string{{"clientCertificate", t.ClientCertificate}, {"privateKey", t.PrivateKey}} {
			if name, v := kv[0], kv[1]; v != "" {
				c.warnf(field+"."+name, "ignored with SIMPLE (the client presents no certificate); use MUTUAL to present one")
			}
		}
		c.caWarning(field, t)
	case TLSMutual:
		if t.ClientCertificate == "" && t.CredentialName == "" {
			c.errf(field+".clientCertificate", "is required with MUTUAL: the path of the client certificate on the client's proxy")
		}
		if t.PrivateKey == "" && t.CredentialName == "" {
			c.errf(field+".privateKey", "is required with MUTUAL: the path of the client's private key on the client's proxy")
		}
		c.caWarning(field, t)
	}
}

func (c *checker) caWarning(field string, t *ClientTLSSettings) {
	if t.CACertificates == "" && t.CredentialName == "" && (t.InsecureSkipVerify == nil || !*t.InsecureSkipVerify) {
		c.warnf(field+".caCertificates", "is not set, so the client cannot verify the server's certificate; "+
			"set caCertificates (or insecureSkipVerify: true to accept this knowingly)")
	}
}

// setFields lists the non-mode fields of t that are set, sorted.
func setFields(t *ClientTLSSettings) []string {
	var out []string
	add := func(name string, set bool) {
		if set {
			out = append(out, name)
		}
	}
	add("caCertificates", t.CACertificates != "")
	add("clientCertificate", t.ClientCertificate != "")
	add("insecureSkipVerify", t.InsecureSkipVerify != nil)
	add("privateKey", t.PrivateKey != "")
	add("sni", t.SNI != "")
	add("subjectAltNames", len(t.SubjectAltNames) > 0)
	return out
}

var dnsLabelRE = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?$`)

// validateHost accepts a DNS name whose first label may be "*" (or "*" on
// its own), as Istio does for DestinationRule hosts.
func validateHost(host string) error {
	if host == "*" {
		return nil
	}
	if len(host) > 253 {
		return fmt.Errorf("%q is longer than 253 characters", host)
	}
	labels := strings.Split(host, ".")
	for i, l := range labels {
		if i == 0 && l == "*" {
			continue
		}
		if strings.Contains(l, "*") {
			return fmt.Errorf("%q: a wildcard is only allowed as the whole first label (*.default.svc.cluster.local) or as \"*\"", host)
		}
		if !dnsLabelRE.MatchString(l) {
			return fmt.Errorf("%q is not a valid host name: label %q must be 1-63 letters, digits or '-', "+
				"not starting or ending with '-'", host, l)
		}
	}
	return nil
}

func (c *checker) exportTo(field string, values []string) {
	seen := map[string]bool{}
	for i, v := range values {
		f := fmt.Sprintf("%s[%d]", field, i)
		switch {
		case v == "." || v == "*":
		case dnsLabelRE.MatchString(v) && strings.ToLower(v) == v:
		default:
			c.errf(f, "%q is not \".\" (this namespace), \"*\" (all namespaces) or a namespace name", v)
			continue
		}
		if seen[v] {
			c.errf(f, "%q is listed twice", v)
		}
		seen[v] = true
	}
	if seen["*"] && len(values) > 1 {
		c.errf(field, "\"*\" already exports to every namespace and cannot be combined with other entries")
	}
}

// ---------------------------------------------------------------------------
// AuthorizationPolicy

var authzActions = []string{string(ActionAllow), string(ActionDeny), string(ActionAudit)}

func (c *checker) authorizationPolicy(s *AuthorizationPolicySpec) {
	c.selector("spec.selector", s.Selector)
	switch s.Action {
	case "", ActionAllow, ActionDeny, ActionAudit:
	case ActionCustom:
		c.errf("spec.action", "CUSTOM (external authorization) is not supported by minimesh; use ALLOW, DENY or AUDIT")
	default:
		c.errf("spec.action", "%q is not one of %s", s.Action, strings.Join(authzActions, ", "))
	}
	if len(s.Provider) > 0 {
		c.errf("spec.provider", "is not supported: it configures CUSTOM (external) authorization, which minimesh does not implement")
	}
	for _, name := range []string{"targetRef", "targetRefs"} {
		raw := s.TargetRef
		if name == "targetRefs" {
			raw = s.TargetRefs
		}
		if len(raw) > 0 {
			c.errf("spec."+name, "is not supported: minimesh attaches policies to workloads only; use spec.selector")
		}
	}
	if len(s.Rules) == 0 && (s.Action == ActionDeny || s.Action == ActionAudit) {
		c.warnf("spec.rules", "a %s policy without rules matches no request and has no effect", s.Action)
	}
	for i, r := range s.Rules {
		c.rule(fmt.Sprintf("spec.rules[%d]", i), &r)
	}
}

func (c *checker) rule(field string, r *Rule) {
	for i, from := range r.From {
		f := fmt.Sprintf("%s.from[%d].source", field, i)
		if from.Source == nil || isZeroSource(from.Source) {
			c.errf(f, "must set at least one field (principals, requestPrincipals, namespaces, ipBlocks or their not* forms)")
			continue
		}
		c.source(f, from.Source)
	}
	for i, to := range r.To {
		f := fmt.Sprintf("%s.to[%d].operation", field, i)
		if to.Operation == nil || isZeroOperation(to.Operation) {
			c.errf(f, "must set at least one field (hosts, ports, methods, paths or their not* forms)")
			continue
		}
		c.operation(f, to.Operation)
	}
	for i, cond := range r.When {
		c.condition(fmt.Sprintf("%s.when[%d]", field, i), &cond)
	}
}

func isZeroSource(s *Source) bool {
	return len(s.Principals)+len(s.NotPrincipals)+len(s.RequestPrincipals)+len(s.NotRequestPrincipals)+
		len(s.Namespaces)+len(s.NotNamespaces)+len(s.IPBlocks)+len(s.NotIPBlocks)+
		len(s.RemoteIPBlocks)+len(s.NotRemoteIPBlocks)+len(s.ServiceAccounts)+len(s.NotServiceAccounts) == 0
}

func isZeroOperation(o *Operation) bool {
	return len(o.Hosts)+len(o.NotHosts)+len(o.Ports)+len(o.NotPorts)+
		len(o.Methods)+len(o.NotMethods)+len(o.Paths)+len(o.NotPaths) == 0
}

func (c *checker) source(field string, s *Source) {
	c.patterns(field+".principals", s.Principals)
	c.patterns(field+".notPrincipals", s.NotPrincipals)
	c.patterns(field+".requestPrincipals", s.RequestPrincipals)
	c.patterns(field+".notRequestPrincipals", s.NotRequestPrincipals)
	c.patterns(field+".namespaces", s.Namespaces)
	c.patterns(field+".notNamespaces", s.NotNamespaces)
	c.ipBlocks(field+".ipBlocks", s.IPBlocks)
	c.ipBlocks(field+".notIpBlocks", s.NotIPBlocks)
	const remote = "is not supported: it matches the original client address taken from X-Forwarded-For or " +
		"the PROXY protocol, which minimesh does not track; use ipBlocks to match the peer's address"
	if len(s.RemoteIPBlocks) > 0 {
		c.errf(field+".remoteIpBlocks", remote)
	}
	if len(s.NotRemoteIPBlocks) > 0 {
		c.errf(field+".notRemoteIpBlocks", remote)
	}
	const sa = "is not supported; use principals with the SPIFFE form, e.g. cluster.local/ns/NAMESPACE/sa/NAME"
	if len(s.ServiceAccounts) > 0 {
		c.errf(field+".serviceAccounts", sa)
	}
	if len(s.NotServiceAccounts) > 0 {
		c.errf(field+".notServiceAccounts", sa)
	}
}

func (c *checker) operation(field string, o *Operation) {
	c.patterns(field+".hosts", o.Hosts)
	c.patterns(field+".notHosts", o.NotHosts)
	c.ports(field+".ports", o.Ports)
	c.ports(field+".notPorts", o.NotPorts)
	c.methods(field+".methods", o.Methods)
	c.methods(field+".notMethods", o.NotMethods)
	c.patterns(field+".paths", o.Paths)
	c.patterns(field+".notPaths", o.NotPaths)
}

func (c *checker) patterns(field string, values []string) {
	for i, v := range values {
		if err := ValidateMatch(v); err != nil {
			c.errf(fmt.Sprintf("%s[%d]", field, i), "%v", err)
		}
	}
}

func (c *checker) methods(field string, values []string) {
	for i, v := range values {
		f := fmt.Sprintf("%s[%d]", field, i)
		if err := ValidateMatch(v); err != nil {
			c.errf(f, "%v", err)
			continue
		}
		if strings.ToUpper(v) != v {
			c.warnf(f, "%q never matches: HTTP methods are case-sensitive and upper case (%q)", v, strings.ToUpper(v))
		}
	}
}

func (c *checker) ports(field string, values []string) {
	for i, v := range values {
		if err := validatePort(v); err != nil {
			c.errf(fmt.Sprintf("%s[%d]", field, i), "%v", err)
		}
	}
}

func validatePort(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q is not a port number in 1-65535", v)
	}
	return nil
}

func (c *checker) ipBlocks(field string, values []string) {
	for i, v := range values {
		if err := validateIPBlock(v); err != nil {
			c.errf(fmt.Sprintf("%s[%d]", field, i), "%v", err)
		}
	}
}

// validateIPBlock accepts an IP address or a CIDR, as Istio does.
func validateIPBlock(v string) error {
	if strings.Contains(v, "/") {
		if _, err := netip.ParsePrefix(v); err != nil {
			return fmt.Errorf("%q is not a valid CIDR (for example 10.0.0.0/16)", v)
		}
		return nil
	}
	if _, err := netip.ParseAddr(v); err != nil {
		return fmt.Errorf("%q is not an IP address or CIDR (for example 10.0.0.1 or 10.0.0.0/16)", v)
	}
	return nil
}

// conditionKeys are the when keys minimesh supports, each with the check
// its values get. Keys with a [NAME] part are matched by prefix.
var conditionKeys = []struct {
	key   string
	check func(string) error
}{
	{"request.headers[NAME]", ValidateMatch},
	{"source.ip", validateIPBlock},
	{"source.namespace", ValidateMatch},
	{"source.principal", ValidateMatch},
	{"request.auth.principal", ValidateMatch},
	{"request.auth.audiences", ValidateMatch},
	{"request.auth.presenter", ValidateMatch},
	{"request.auth.claims[NAME]", ValidateMatch},
	{"destination.ip", validateIPBlock},
	{"destination.port", validatePort},
	{"connection.sni", ValidateMatch},
}

func supportedConditionKeys() string {
	keys := make([]string, len(conditionKeys))
	for i, k := range conditionKeys {
		keys[i] = k.key
	}
	return strings.Join(keys, ", ")
}

func (c *checker) condition(field string, cond *Condition) {
	check, err := conditionCheck(cond.Key)
	if err != nil {
		c.errf(field+".key", "%v", err)
	}
	if len(cond.Values) == 0 && len(cond.NotValues) == 0 {
		c.errf(field, "needs values or notValues")
	}
	if check == nil {
		return
	}
	for i, v := range cond.Values {
		if err := check(v); err != nil {
			c.errf(fmt.Sprintf("%s.values[%d]", field, i), "%v", err)
		}
	}
	for i, v := range cond.NotValues {
		if err := check(v); err != nil {
			c.errf(fmt.Sprintf("%s.notValues[%d]", field, i), "%v", err)
		}
	}
}

// conditionCheck returns the value check for a when key, or an error that
// lists the supported keys.
func conditionCheck(key string) (func(string) error, error) {
	switch {
	case key == "":
		return nil, fmt.Errorf("is required; supported keys: %s", supportedConditionKeys())
	case strings.HasPrefix(key, "request.headers"):
		names, err := bracketNames(strings.TrimPrefix(key, "request.headers"))
		if err != nil || len(names) != 1 {
			return nil, fmt.Errorf("%q must name one header, as request.headers[x-user]", key)
		}
		return ValidateMatch, nil
	case strings.HasPrefix(key, "request.auth.claims"):
		if _, err := bracketNames(strings.TrimPrefix(key, "request.auth.claims")); err != nil {
			return nil, fmt.Errorf("%q must name a claim, as request.auth.claims[groups] or a nested one as request.auth.claims[a][b]", key)
		}
		return ValidateMatch, nil
	case key == "remote.ip":
		return nil, fmt.Errorf("remote.ip is not supported: minimesh does not track the original client address " +
			"(X-Forwarded-For or PROXY protocol); use source.ip")
	}
	for _, k := range conditionKeys {
		if k.key == key {
			return k.check, nil
		}
	}
	return nil, fmt.Errorf("%q is not a supported key; supported keys: %s", key, supportedConditionKeys())
}

// bracketNames parses "[a][b]" into ["a", "b"]. Names must be non-empty and
// at least one is required.
func bracketNames(s string) ([]string, error) {
	var names []string
	for s != "" {
		if s[0] != '[' {
			return nil, fmt.Errorf("expected '['")
		}
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return nil, fmt.Errorf("missing ']'")
		}
		name := s[1:end]
		if name == "" || strings.ContainsAny(name, "[") {
			return nil, fmt.Errorf("empty or malformed name")
		}
		names = append(names, name)
		s = s[end+1:]
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no name")
	}
	return names, nil
}

// ---------------------------------------------------------------------------
// RequestAuthentication

var headerNameRE = regexp.MustCompile("^[!#$%&'*+\\-.^_`|~0-9A-Za-z]+$")

func (c *checker) requestAuthentication(s *RequestAuthenticationSpec) {
	c.selector("spec.selector", s.Selector)
	for _, name := range []string{"targetRef", "targetRefs"} {
		raw := s.TargetRef
		if name == "targetRefs" {
			raw = s.TargetRefs
		}
		if len(raw) > 0 {
			c.errf("spec."+name, "is not supported: minimesh attaches policies to workloads only; use spec.selector")
		}
	}
	issuers := map[string]int{}
	for i, r := range s.JWTRules {
		f := fmt.Sprintf("spec.jwtRules[%d]", i)
		if r.Issuer == "" {
			c.errf(f+".issuer", "is required: the iss claim of tokens this rule accepts")
		} else if j, dup := issuers[r.Issuer]; dup {
			c.errf(f+".issuer", "%q is already configured by jwtRules[%d]; merge the two rules", r.Issuer, j)
		} else {
			issuers[r.Issuer] = i
		}
		c.jwtRule(f, &r)
	}
}

func (c *checker) jwtRule(f string, r *JWTRule) {
	for i, a := range r.Audiences {
		if a == "" {
			c.errf(fmt.Sprintf("%s.audiences[%d]", f, i), "must not be empty")
		}
	}
	switch {
	case r.JWKS == "" && r.JWKSURI == "":
		c.errf(f, "needs jwksUri or jwks: minimesh does not discover keys through the issuer's "+
			"OpenID Connect configuration; set jwksUri to the key set URL or jwks to the keys inline")
	case r.JWKS != "" && r.JWKSURI != "":
		c.warnf(f+".jwksUri", "ignored because jwks is set inline; remove one of them")
	}
	if r.JWKS != "" {
		var doc struct {
			Keys json.RawMessage `json:"keys"`
		}
		if err := json.Unmarshal([]byte(r.JWKS), &doc); err != nil {
			c.errf(f+".jwks", "is not valid JSON (a JSON Web Key Set, {\"keys\": [...]}): %v", err)
		} else {
			var keys []json.RawMessage
			if err := json.Unmarshal(doc.Keys, &keys); err != nil || doc.Keys == nil {
				c.errf(f+".jwks", "must be a JSON Web Key Set with a \"keys\" list, {\"keys\": [...]}")
			} else if len(keys) == 0 {
				c.warnf(f+".jwks", "has no keys, so no token from this issuer can be verified")
			}
		}
	}
	if r.JWKSURI != "" {
		u, err := url.Parse(r.JWKSURI)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			c.errf(f+".jwksUri", "%q is not an http:// or https:// URL", r.JWKSURI)
		}
	}
	for i, h := range r.FromHeaders {
		hf := fmt.Sprintf("%s.fromHeaders[%d].name", f, i)
		if h.Name == "" {
			c.errf(hf, "is required: the header the token arrives in")
		} else if !headerNameRE.MatchString(h.Name) {
			c.errf(hf, "%q is not a valid HTTP header name", h.Name)
		}
	}
	for i, p := range r.FromParams {
		if p == "" {
			c.errf(fmt.Sprintf("%s.fromParams[%d]", f, i), "must not be empty")
		}
	}
	for i, p := range r.FromCookies {
		if p == "" {
			c.errf(fmt.Sprintf("%s.fromCookies[%d]", f, i), "must not be empty")
		}
	}
	if r.OutputPayloadToHeader != "" && !headerNameRE.MatchString(r.OutputPayloadToHeader) {
		c.errf(f+".outputPayloadToHeader", "%q is not a valid HTTP header name", r.OutputPayloadToHeader)
	}
	if len(r.OutputClaimToHeaders) > 0 {
		c.errf(f+".outputClaimToHeaders", "is not supported by minimesh; use outputPayloadToHeader to pass the whole payload on")
	}
	if r.Timeout != "" {
		c.errf(f+".timeout", "is not supported: minimesh fetches jwksUri itself and hands the keys to proxies inline")
	}
}
