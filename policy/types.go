// Package policy holds minimesh's Istio-compatible security policy: the
// object types (PeerAuthentication, DestinationRule, AuthorizationPolicy,
// RequestAuthentication) exactly as Istio's YAML spells them, their decoding
// and validation, and the pure functions that decide which policy applies to a
// workload, a port or a caller ("effective policy").
//
// Every precedence rule lives here and nowhere else: translation, the debug
// API and meshctl all ask this package. The package has no dependencies on
// where objects came from (files or Kubernetes) and does no I/O.
package policy

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// DefaultRootNamespace is where mesh-wide policy lives unless configured
// otherwise, as in Istio.
const DefaultRootNamespace = "istio-system"

// Kinds understood by this package.
const (
	KindPeerAuthentication    = "PeerAuthentication"
	KindDestinationRule       = "DestinationRule"
	KindAuthorizationPolicy   = "AuthorizationPolicy"
	KindRequestAuthentication = "RequestAuthentication"
)

// Location says where an object or a field was read from. Objects from
// Kubernetes have no file; Line is 0 when unknown.
type Location struct {
	File string `json:"file,omitempty"`
	Line int    `json:"line,omitempty"`
}

func (l Location) String() string {
	switch {
	case l.File == "":
		return ""
	case l.Line > 0:
		return fmt.Sprintf("%s:%d", l.File, l.Line)
	default:
		return l.File
	}
}

// Meta identifies one policy object. CreationTimestamp, then Admitted,
// then the name break ties between policies of equal scope: the oldest
// wins, as in Istio, so adding a policy never displaces one in force.
type Meta struct {
	Kind              string    `json:"kind"`
	Namespace         string    `json:"namespace"`
	Name              string    `json:"name"`
	CreationTimestamp time.Time `json:"creationTimestamp,omitzero"`
	// Admitted is when this control plane first served the object (a
	// source that keeps history sets it; zero otherwise). Manifests in
	// files have no creationTimestamp, and Kubernetes' has a resolution
	// of one second, so Admitted is what keeps a newcomer from winning a
	// tie against a policy already in force.
	Admitted time.Time `json:"admitted,omitzero"`
	Origin   Location  `json:"origin,omitzero"`
	// Annotations are the object's metadata.annotations as the source
	// read them. Decode turns the ones minimesh acts on into typed fields
	// (AuthorizationPolicy.DryRun); nothing else reads them.
	Annotations map[string]string `json:"-"`
}

// Key is "namespace/name".
func (m Meta) Key() string { return m.Namespace + "/" + m.Name }

// Object is implemented by every policy kind.
type Object interface {
	GetMeta() *Meta
}

// WorkloadSelector selects workloads in the policy's namespace by labels.
// A nil selector (or an empty matchLabels) selects every workload in scope.
type WorkloadSelector struct {
	MatchLabels map[string]string `json:"matchLabels,omitempty"`
}

// Matches reports whether labels satisfy the selector. A nil or empty
// selector matches everything.
func (s *WorkloadSelector) Matches(labels map[string]string) bool {
	if s == nil {
		return true
	}
	for k, v := range s.MatchLabels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// IsEmpty reports whether the selector selects every workload.
func (s *WorkloadSelector) IsEmpty() bool { return s == nil || len(s.MatchLabels) == 0 }

// ---------------------------------------------------------------------------
// PeerAuthentication (security.istio.io)

// MTLSMode is PeerAuthentication's mtls.mode.
type MTLSMode string

// PeerAuthentication modes, as Istio names them. An empty string in YAML
// decodes as ModeUnset.
const (
	ModeUnset      MTLSMode = "UNSET"
	ModeDisable    MTLSMode = "DISABLE"
	ModePermissive MTLSMode = "PERMISSIVE"
	ModeStrict     MTLSMode = "STRICT"
)

// PeerAuthentication decides what a server-side proxy accepts.
type PeerAuthentication struct {
	Meta `json:"metadata"`
	Spec PeerAuthenticationSpec `json:"spec"`
}

// GetMeta implements Object.
func (p *PeerAuthentication) GetMeta() *Meta { return &p.Meta }

// PeerAuthenticationSpec mirrors Istio's PeerAuthentication spec.
type PeerAuthenticationSpec struct {
	Selector *WorkloadSelector `json:"selector,omitempty"`
	MTLS     *MutualTLS        `json:"mtls,omitempty"`
	// PortLevelMTLS is keyed by the workload's (target) port number.
	PortLevelMTLS map[uint32]MutualTLS `json:"portLevelMtls,omitempty"`
}

// MutualTLS is the mtls block.
type MutualTLS struct {
	Mode MTLSMode `json:"mode,omitempty"`
}

// ---------------------------------------------------------------------------
// DestinationRule (networking.istio.io), client TLS only

// ClientTLSMode is DestinationRule's trafficPolicy.tls.mode.
type ClientTLSMode string

// Client TLS modes, as Istio names them.
const (
	TLSDisable     ClientTLSMode = "DISABLE"
	TLSSimple      ClientTLSMode = "SIMPLE"
	TLSMutual      ClientTLSMode = "MUTUAL"
	TLSIstioMutual ClientTLSMode = "ISTIO_MUTUAL"
)

// DestinationRule decides what a client sends to a host.
type DestinationRule struct {
	Meta `json:"metadata"`
	Spec DestinationRuleSpec `json:"spec"`
}

// GetMeta implements Object.
func (d *DestinationRule) GetMeta() *Meta { return &d.Meta }

// DestinationRuleSpec mirrors the parts of Istio's DestinationRule that
// minimesh implements. Fields Istio has and minimesh ignores are kept as raw
// JSON so validation can warn about them by name instead of failing.
type DestinationRuleSpec struct {
	Host          string          `json:"host"`
	TrafficPolicy *TrafficPolicy  `json:"trafficPolicy,omitempty"`
	Subsets       json.RawMessage `json:"subsets,omitempty"`
	ExportTo      []string        `json:"exportTo,omitempty"`
	// WorkloadSelector is Istio's; minimesh refuses it (see validation).
	WorkloadSelector *WorkloadSelector `json:"workloadSelector,omitempty"`
}

// TrafficPolicy holds client TLS; the other members are ignored with a warning.
type TrafficPolicy struct {
	TLS               *ClientTLSSettings  `json:"tls,omitempty"`
	PortLevelSettings []PortTrafficPolicy `json:"portLevelSettings,omitempty"`

	LoadBalancer     json.RawMessage `json:"loadBalancer,omitempty"`
	ConnectionPool   json.RawMessage `json:"connectionPool,omitempty"`
	OutlierDetection json.RawMessage `json:"outlierDetection,omitempty"`
	Tunnel           json.RawMessage `json:"tunnel,omitempty"`
	ProxyProtocol    json.RawMessage `json:"proxyProtocol,omitempty"`
	RetryBudget      json.RawMessage `json:"retryBudget,omitempty"`
}

// PortTrafficPolicy is one entry of portLevelSettings.
type PortTrafficPolicy struct {
	Port *PortSelector      `json:"port,omitempty"`
	TLS  *ClientTLSSettings `json:"tls,omitempty"`

	LoadBalancer     json.RawMessage `json:"loadBalancer,omitempty"`
	ConnectionPool   json.RawMessage `json:"connectionPool,omitempty"`
	OutlierDetection json.RawMessage `json:"outlierDetection,omitempty"`
}

// PortSelector selects a service port by number.
type PortSelector struct {
	Number uint32 `json:"number"`
}

// ClientTLSSettings is trafficPolicy.tls. File paths are as seen by the
// client proxy (Istio semantics): minimesh passes them through.
type ClientTLSSettings struct {
	Mode               ClientTLSMode `json:"mode"`
	ClientCertificate  string        `json:"clientCertificate,omitempty"`
	PrivateKey         string        `json:"privateKey,omitempty"`
	CACertificates     string        `json:"caCertificates,omitempty"`
	CredentialName     string        `json:"credentialName,omitempty"`
	SubjectAltNames    []string      `json:"subjectAltNames,omitempty"`
	SNI                string        `json:"sni,omitempty"`
	InsecureSkipVerify *bool         `json:"insecureSkipVerify,omitempty"`
}

// ---------------------------------------------------------------------------
// AuthorizationPolicy (security.istio.io)

// Action is an AuthorizationPolicy action. Empty decodes as ActionAllow.
type Action string

// Actions. CUSTOM is recognised only to be refused with a clear error.
const (
	ActionAllow  Action = "ALLOW"
	ActionDeny   Action = "DENY"
	ActionAudit  Action = "AUDIT"
	ActionCustom Action = "CUSTOM"
)

// AuthorizationPolicy is Istio's access control for workloads.
type AuthorizationPolicy struct {
	Meta `json:"metadata"`
	Spec AuthorizationPolicySpec `json:"spec"`
	// DryRun is the istio.io/dry-run annotation: the policy is evaluated
	// and its result recorded, but it never allows or denies anything.
	DryRun bool `json:"dryRun,omitempty"`
}

// GetMeta implements Object.
func (a *AuthorizationPolicy) GetMeta() *Meta { return &a.Meta }

// AuthorizationPolicySpec mirrors Istio's spec. A spec with no rules and the
// ALLOW action matches nothing, which denies every request to the selected
// workloads ("allow-nothing").
type AuthorizationPolicySpec struct {
	Selector *WorkloadSelector `json:"selector,omitempty"`
	Action   Action            `json:"action,omitempty"`
	Rules    []Rule            `json:"rules,omitempty"`

	// Present in Istio, refused by minimesh with an error.
	Provider   json.RawMessage `json:"provider,omitempty"`
	TargetRef  json.RawMessage `json:"targetRef,omitempty"`
	TargetRefs json.RawMessage `json:"targetRefs,omitempty"`
}

// EffectiveAction is the action with the default applied.
func (s *AuthorizationPolicySpec) EffectiveAction() Action {
	if s.Action == "" {
		return ActionAllow
	}
	return s.Action
}

// Rule matches a request when every present part matches: any of From, any
// of To, and all of When.
type Rule struct {
	From []RuleFrom  `json:"from,omitempty"`
	To   []RuleTo    `json:"to,omitempty"`
	When []Condition `json:"when,omitempty"`
}

// RuleFrom wraps a Source, as in Istio's YAML.
type RuleFrom struct {
	Source *Source `json:"source,omitempty"`
}

// Source describes the peer. All present fields must match.
type Source struct {
	Principals           []string `json:"principals,omitempty"`
	NotPrincipals        []string `json:"notPrincipals,omitempty"`
	RequestPrincipals    []string `json:"requestPrincipals,omitempty"`
	NotRequestPrincipals []string `json:"notRequestPrincipals,omitempty"`
	Namespaces           []string `json:"namespaces,omitempty"`
	NotNamespaces        []string `json:"notNamespaces,omitempty"`
	IPBlocks             []string `json:"ipBlocks,omitempty"`
	NotIPBlocks          []string `json:"notIpBlocks,omitempty"`

	// Present in Istio, refused by minimesh with an error.
	RemoteIPBlocks     []string `json:"remoteIpBlocks,omitempty"`
	NotRemoteIPBlocks  []string `json:"notRemoteIpBlocks,omitempty"`
	ServiceAccounts    []string `json:"serviceAccounts,omitempty"`
	NotServiceAccounts []string `json:"notServiceAccounts,omitempty"`
}

// RuleTo wraps an Operation, as in Istio's YAML.
type RuleTo struct {
	Operation *Operation `json:"operation,omitempty"`
}

// Operation describes the request. Paths and hosts use Istio's matching:
// exact, "prefix*", "*suffix", or "*".
type Operation struct {
	Hosts      []string `json:"hosts,omitempty"`
	NotHosts   []string `json:"notHosts,omitempty"`
	Ports      []string `json:"ports,omitempty"`
	NotPorts   []string `json:"notPorts,omitempty"`
	Methods    []string `json:"methods,omitempty"`
	NotMethods []string `json:"notMethods,omitempty"`
	Paths      []string `json:"paths,omitempty"`
	NotPaths   []string `json:"notPaths,omitempty"`
}

// Condition is one entry of when.
type Condition struct {
	Key       string   `json:"key"`
	Values    []string `json:"values,omitempty"`
	NotValues []string `json:"notValues,omitempty"`
}

// ---------------------------------------------------------------------------
// RequestAuthentication (security.istio.io)

// RequestAuthentication declares which JWTs a workload accepts.
type RequestAuthentication struct {
	Meta `json:"metadata"`
	Spec RequestAuthenticationSpec `json:"spec"`
}

// GetMeta implements Object.
func (r *RequestAuthentication) GetMeta() *Meta { return &r.Meta }

// RequestAuthenticationSpec mirrors Istio's spec.
type RequestAuthenticationSpec struct {
	Selector *WorkloadSelector `json:"selector,omitempty"`
	JWTRules []JWTRule         `json:"jwtRules,omitempty"`

	// Present in Istio, refused by minimesh with an error.
	TargetRef  json.RawMessage `json:"targetRef,omitempty"`
	TargetRefs json.RawMessage `json:"targetRefs,omitempty"`
}

// JWTRule is one accepted issuer.
type JWTRule struct {
	Issuer                string      `json:"issuer"`
	Audiences             []string    `json:"audiences,omitempty"`
	JWKSURI               string      `json:"jwksUri,omitempty"`
	JWKS                  string      `json:"jwks,omitempty"`
	FromHeaders           []JWTHeader `json:"fromHeaders,omitempty"`
	FromParams            []string    `json:"fromParams,omitempty"`
	FromCookies           []string    `json:"fromCookies,omitempty"`
	OutputPayloadToHeader string      `json:"outputPayloadToHeader,omitempty"`
	ForwardOriginalToken  bool        `json:"forwardOriginalToken,omitempty"`

	// Present in Istio, refused by minimesh with an error.
	OutputClaimToHeaders json.RawMessage `json:"outputClaimToHeaders,omitempty"`
	Timeout              string          `json:"timeout,omitempty"`
}

// JWTHeader is a header a token may arrive in.
type JWTHeader struct {
	Name   string `json:"name"`
	Prefix string `json:"prefix,omitempty"`
}

// ---------------------------------------------------------------------------

// Set is every valid policy object in the mesh, each slice sorted by
// namespace then name. Invalid objects never enter a Set.
type Set struct {
	PeerAuthentications    []*PeerAuthentication    `json:"peerAuthentications,omitempty"`
	DestinationRules       []*DestinationRule       `json:"destinationRules,omitempty"`
	AuthorizationPolicies  []*AuthorizationPolicy   `json:"authorizationPolicies,omitempty"`
	RequestAuthentications []*RequestAuthentication `json:"requestAuthentications,omitempty"`
}

// Sort orders every slice by namespace, then name.
func (s *Set) Sort() {
	sortByKey(s.PeerAuthentications)
	sortByKey(s.DestinationRules)
	sortByKey(s.AuthorizationPolicies)
	sortByKey(s.RequestAuthentications)
}

func sortByKey[T Object](objs []T) {
	slices.SortFunc(objs, func(a, b T) int {
		ma, mb := a.GetMeta(), b.GetMeta()
		return cmp.Or(cmp.Compare(ma.Namespace, mb.Namespace), cmp.Compare(ma.Name, mb.Name))
	})
}
