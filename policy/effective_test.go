package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

const root = "istio-system"

// t0 is an arbitrary epoch; age n means created n hours after it, so a
// smaller age is older.
var t0 = time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)

func meta(ns, name string, age int) Meta {
	return Meta{Namespace: ns, Name: name, CreationTimestamp: t0.Add(time.Duration(age) * time.Hour)}
}

func sel(kv ...string) *WorkloadSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &WorkloadSelector{MatchLabels: m}
}

// peer builds a PeerAuthentication; mode "" means no mtls block.
func peer(ns, name string, age int, s *WorkloadSelector, mode MTLSMode, ports map[uint32]MTLSMode) *PeerAuthentication {
	p := &PeerAuthentication{Meta: meta(ns, name, age)}
	p.Kind = KindPeerAuthentication
	p.Spec.Selector = s
	if mode != "" {
		p.Spec.MTLS = &MutualTLS{Mode: mode}
	}
	for port, m := range ports {
		if p.Spec.PortLevelMTLS == nil {
			p.Spec.PortLevelMTLS = map[uint32]MutualTLS{}
		}
		p.Spec.PortLevelMTLS[port] = MutualTLS{Mode: m}
	}
	return p
}

func TestComposePeerAuthentication(t *testing.T) {
	product := Workload{Namespace: "default", Labels: map[string]string{"app": "product", "version": "v1"}}
	inRoot := Workload{Namespace: root, Labels: map[string]string{"app": "gw"}}
	type warning struct{ policy, contains string }
	tests := []struct {
		name     string
		w        Workload
		policies []*PeerAuthentication
		mode     MTLSMode
		ports    map[uint32]MTLSMode
		applied  []string
		warnings []warning
	}{{
		name: "nothing anywhere is PERMISSIVE",
		w:    product,
		mode: ModePermissive,
	}, {
		name:     "mesh policy applies",
		w:        product,
		policies: []*PeerAuthentication{peer(root, "default", 0, nil, ModeStrict, nil)},
		mode:     ModeStrict,
		applied:  []string{"istio-system/default"},
	}, {
		name:     "mesh policy with empty matchLabels is still mesh scope",
		w:        product,
		policies: []*PeerAuthentication{peer(root, "default", 0, sel(), ModeStrict, nil)},
		mode:     ModeStrict,
		applied:  []string{"istio-system/default"},
	}, {
		name: "namespace beats mesh",
		w:    product,
		policies: []*PeerAuthentication{
			peer(root, "default", 0, nil, ModeStrict, nil),
			peer("default", "default", 5, nil, ModeDisable, nil),
		},
		mode:    ModeDisable,
		applied: []string{"default/default"},
	}, {
		name: "namespace UNSET inherits mesh",
		w:    product,
		policies: []*PeerAuthentication{
			peer(root, "default", 0, nil, ModeStrict, nil),
			peer("default", "default", 0, nil, ModeUnset, nil),
		},
		mode:    ModeStrict,
		applied: []string{"istio-system/default"},
	}, {
		name: "namespace without mtls block inherits mesh",
		w:    product,
		policies: []*PeerAuthentication{
			peer(root, "default", 0, nil, ModeDisable, nil),
			peer("default", "default", 0, nil, "", nil),
		},
		mode:    ModeDisable,
		applied: []string{"istio-system/default"},
	}, {
		name: "workload beats namespace",
		w:    product,
		policies: []*PeerAuthentication{
			peer("default", "default", 0, nil, ModeStrict, nil),
			peer("default", "product", 0, sel("app", "product"), ModePermissive, nil),
		},
		mode:    ModePermissive,
		applied: []string{"default/product"},
	}, {
		name: "workload selector needs every label",
		w:    product,
		policies: []*PeerAuthentication{
			peer("default", "default", 0, nil, ModeStrict, nil),
			peer("default", "product-v2", 0, sel("app", "product", "version", "v2"), ModeDisable, nil),
		},
		mode:    ModeStrict,
		applied: []string{"default/default"},
	}, {
		name: "workload UNSET inherits namespace, namespace UNSET inherits mesh",
		w:    product,
		policies: []*PeerAuthentication{
			peer(root, "default", 0, nil, ModeDisable, nil),
			peer("default", "default", 0, nil, ModeUnset, nil),
			peer("default", "product", 0, sel("app", "product"), ModeUnset, nil),
		},
		mode:    ModeDisable,
		applied: []string{"istio-system/default"},
	}, {
		name: "port level beats workload level; other ports keep the inherited mode",
		w:    product,
		policies: []*PeerAuthentication{
			peer("default", "default", 0, nil, ModeStrict, nil),
			peer("default", "product", 0, sel("app", "product"), "", map[uint32]MTLSMode{8080: ModeDisable}),
		},
		mode:    ModeStrict,
		ports:   map[uint32]MTLSMode{8080: ModeDisable},
		applied: []string{"default/default", "default/product"},
	}, {
		name: "port level UNSET inherits the workload's effective mode",
		w:    product,
		policies: []*PeerAuthentication{
			peer("default", "product", 0, sel("app", "product"), ModePermissive,
				map[uint32]MTLSMode{8080: ModeUnset, 9090: ModeStrict}),
		},
		mode:    ModePermissive,
		ports:   map[uint32]MTLSMode{9090: ModeStrict},
		applied: []string{"default/product"},
	}, {
		name: "port level in a namespace-wide policy is not honoured",
		w:    product,
		policies: []*PeerAuthentication{
			peer("default", "default", 0, nil, ModeStrict, map[uint32]MTLSMode{8080: ModeDisable}),
		},
		mode:    ModeStrict,
		applied: []string{"default/default"},
	}, {
		name: "namespace tie: oldest wins, the other is named in a warning",
		w:    product,
		policies: []*PeerAuthentication{
			peer("default", "a-newer", 2, nil, ModeDisable, nil),
			peer("default", "z-older", 1, nil, ModeStrict, nil),
		},
		mode:     ModeStrict,
		applied:  []string{"default/z-older"},
		warnings: []warning{{"default/a-newer", "default/z-older applies at the same (namespace-wide) scope"}},
	}, {
		name: "workload tie with equal timestamps: name decides",
		w:    product,
		policies: []*PeerAuthentication{
			peer("default", "b", 1, sel("app", "product"), ModeDisable, nil),
			peer("default", "a", 1, sel("version", "v1"), ModeStrict, nil),
		},
		mode:     ModeStrict,
		applied:  []string{"default/a"},
		warnings: []warning{{"default/b", "default/a applies at the same (workload) scope"}},
	}, {
		name: "mesh tie",
		w:    product,
		policies: []*PeerAuthentication{
			peer(root, "old", 0, nil, ModeStrict, nil),
			peer(root, "new", 3, nil, ModeDisable, nil),
		},
		mode:     ModeStrict,
		applied:  []string{"istio-system/old"},
		warnings: []warning{{"istio-system/new", "istio-system/old applies at the same (mesh-wide) scope"}},
	}, {
		name: "root-namespace policy with a selector applies to no workload, with a warning when it matches",
		w:    product,
		policies: []*PeerAuthentication{
			peer(root, "product", 0, sel("app", "product"), ModeStrict, nil),
			peer(root, "other", 0, sel("app", "other"), ModeStrict, nil),
		},
		mode:     ModePermissive,
		warnings: []warning{{"istio-system/product", "applies to no workload"}},
	}, {
		name: "root-namespace selector policy is ignored in the root namespace too",
		w:    inRoot,
		policies: []*PeerAuthentication{
			peer(root, "default", 0, nil, ModeDisable, nil),
			peer(root, "gw", 0, sel("app", "gw"), ModeStrict, nil),
		},
		mode:     ModeDisable,
		applied:  []string{"istio-system/default"},
		warnings: []warning{{"istio-system/gw", "applies to no workload"}},
	}, {
		name: "policies of other namespaces never apply",
		w:    product,
		policies: []*PeerAuthentication{
			peer("test", "default", 0, nil, ModeStrict, nil),
			peer("test", "product", 0, sel("app", "product"), ModeStrict, nil),
			nil,
		},
		mode: ModePermissive,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ComposePeerAuthentication(root, tt.policies, tt.w)
			if got.Mode != tt.mode {
				t.Errorf("Mode = %s, want %s", got.Mode, tt.mode)
			}
			if diff := cmp.Diff(tt.ports, got.PortModes, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("PortModes (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.applied, got.Applied, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Applied (-want +got):\n%s", diff)
			}
			if len(got.Problems) != len(tt.warnings) {
				t.Fatalf("got %d problems, want %d:\n%s", len(got.Problems), len(tt.warnings), render(got.Problems))
			}
			for i, wn := range tt.warnings {
				p := got.Problems[i]
				if p.Severity != SeverityWarning || p.Namespace+"/"+p.Name != wn.policy || !strings.Contains(p.Message, wn.contains) {
					t.Errorf("problem %d = %q; want a warning about %s containing %q", i, p.Error(), wn.policy, wn.contains)
				}
			}
		})
	}
}

func TestEffectivePeerAuthenticationForPort(t *testing.T) {
	s := &Set{PeerAuthentications: []*PeerAuthentication{
		peer("default", "default", 0, nil, ModeStrict, nil),
		peer("default", "product", 0, sel("app", "product"), ModeUnset, map[uint32]MTLSMode{8080: ModeDisable}),
	}}
	got := s.PeerAuthenticationFor(root, Workload{Namespace: "default", Labels: map[string]string{"app": "product"}})
	if m := got.ForPort(8080); m != ModeDisable {
		t.Errorf("ForPort(8080) = %s, want DISABLE", m)
	}
	if m := got.ForPort(9090); m != ModeStrict {
		t.Errorf("ForPort(9090) = %s, want STRICT", m)
	}
}

// rule builds a DestinationRule; tls "" means no trafficPolicy.tls.
func rule(ns, name string, age int, host string, tls ClientTLSMode, opts ...func(*DestinationRule)) *DestinationRule {
	d := &DestinationRule{Meta: meta(ns, name, age)}
	d.Kind = KindDestinationRule
	d.Spec.Host = host
	d.Spec.TrafficPolicy = &TrafficPolicy{}
	if tls != "" {
		d.Spec.TrafficPolicy.TLS = &ClientTLSSettings{Mode: tls}
	}
	for _, o := range opts {
		o(d)
	}
	return d
}

func exportTo(ns ...string) func(*DestinationRule) {
	return func(d *DestinationRule) { d.Spec.ExportTo = ns }
}

func portTLS(port uint32, mode ClientTLSMode) func(*DestinationRule) {
	return func(d *DestinationRule) {
		pl := PortTrafficPolicy{Port: &PortSelector{Number: port}}
		if mode != "" {
			pl.TLS = &ClientTLSSettings{Mode: mode}
		}
		d.Spec.TrafficPolicy.PortLevelSettings = append(d.Spec.TrafficPolicy.PortLevelSettings, pl)
	}
}

func TestClientTLSFor(t *testing.T) {
	// The default query: a client in "test" calls product.default:8080.
	query := func(mod ...func(*ClientTLSQuery)) ClientTLSQuery {
		q := ClientTLSQuery{RootNamespace: root, ClientNamespace: "test", ServiceNamespace: "default",
			ServiceHost: "product.default.svc.cluster.local", Port: 8080, ClusterDomain: "cluster.local"}
		for _, m := range mod {
			m(&q)
		}
		return q
	}
	fromNS := func(ns string) func(*ClientTLSQuery) { return func(q *ClientTLSQuery) { q.ClientNamespace = ns } }
	port := func(p uint32) func(*ClientTLSQuery) { return func(q *ClientTLSQuery) { q.Port = p } }

	tests := []struct {
		name  string
		rules []*DestinationRule
		q     ClientTLSQuery
		auto  bool
		mode  ClientTLSMode // when !auto
		rule  string
	}{
		{name: "no rule: auto", q: query(), auto: true},
		{name: "short host resolves in the rule's namespace",
			rules: []*DestinationRule{rule("default", "product", 0, "product", TLSIstioMutual)},
			q:     query(), mode: TLSIstioMutual, rule: "default/product"},
		{name: "short host in another namespace names another service",
			rules: []*DestinationRule{rule("test", "product", 0, "product", TLSDisable)},
			q:     query(), auto: true},
		{name: "name.namespace host from the client's namespace",
			rules: []*DestinationRule{rule("test", "product", 0, "product.default", TLSDisable)},
			q:     query(), mode: TLSDisable, rule: "test/product"},
		{name: "host comparison ignores case",
			rules: []*DestinationRule{rule("default", "p", 0, "Product.Default.svc.cluster.local", TLSSimple)},
			q:     query(), mode: TLSSimple, rule: "default/p"},
		{name: "cluster domain is honoured for short hosts",
			rules: []*DestinationRule{rule("default", "p", 0, "product", TLSSimple)},
			q: query(func(q *ClientTLSQuery) {
				q.ClusterDomain, q.ServiceHost = "example.org", "product.default.svc.example.org"
			}),
			mode: TLSSimple, rule: "default/p"},
		{name: "client namespace beats service namespace",
			rules: []*DestinationRule{
				rule("default", "svc-ns", 0, "product", TLSIstioMutual),
				rule("test", "client-ns", 5, "product.default.svc.cluster.local", TLSDisable),
			},
			q: query(), mode: TLSDisable, rule: "test/client-ns"},
		{name: "service namespace beats root namespace",
			rules: []*DestinationRule{
				rule(root, "mesh", 0, "*", TLSDisable),
				rule("default", "svc-ns", 5, "*.default.svc.cluster.local", TLSIstioMutual),
			},
			q: query(), mode: TLSIstioMutual, rule: "default/svc-ns"},
		{name: "root namespace applies when nothing narrower does",
			rules: []*DestinationRule{
				rule(root, "mesh", 0, "*.svc.cluster.local", TLSIstioMutual),
				rule("default", "other", 0, "stock", TLSDisable),
			},
			q: query(), mode: TLSIstioMutual, rule: "istio-system/mesh"},
		{name: "first namespace with a matching rule wins even without tls",
			rules: []*DestinationRule{
				rule("test", "lb-only", 0, "product.default.svc.cluster.local", ""),
				rule("default", "product", 0, "product", TLSDisable),
			},
			q: query(), auto: true, rule: "test/lb-only"},
		{name: "exportTo . hides a rule from other namespaces",
			rules: []*DestinationRule{
				rule("default", "private", 0, "product", TLSDisable, exportTo(".")),
				rule(root, "mesh", 0, "*", TLSIstioMutual),
			},
			q: query(), mode: TLSIstioMutual, rule: "istio-system/mesh"},
		{name: "exportTo . applies in its own namespace",
			rules: []*DestinationRule{
				rule("default", "private", 0, "product", TLSDisable, exportTo(".")),
				rule(root, "mesh", 0, "*", TLSIstioMutual),
			},
			q: query(fromNS("default")), mode: TLSDisable, rule: "default/private"},
		{name: "exportTo list including the client",
			rules: []*DestinationRule{rule("default", "p", 0, "product", TLSSimple, exportTo(".", "test"))},
			q:     query(), mode: TLSSimple, rule: "default/p"},
		{name: "exportTo list without the client",
			rules: []*DestinationRule{rule("default", "p", 0, "product", TLSSimple, exportTo("other"))},
			q:     query(), auto: true},
		{name: "exportTo star",
			rules: []*DestinationRule{rule("default", "p", 0, "product", TLSSimple, exportTo("*"))},
			q:     query(), mode: TLSSimple, rule: "default/p"},
		{name: "exact host beats every wildcard",
			rules: []*DestinationRule{
				rule("default", "a-star", 0, "*", TLSDisable),
				rule("default", "b-svc", 0, "*.svc.cluster.local", TLSDisable),
				rule("default", "c-ns", 0, "*.default.svc.cluster.local", TLSDisable),
				rule("default", "d-exact", 9, "product", TLSIstioMutual),
			},
			q: query(), mode: TLSIstioMutual, rule: "default/d-exact"},
		{name: "longer wildcard beats shorter",
			rules: []*DestinationRule{
				rule("default", "a-star", 0, "*", TLSDisable),
				rule("default", "b-svc", 0, "*.svc.cluster.local", TLSDisable),
				rule("default", "c-ns", 9, "*.default.svc.cluster.local", TLSSimple),
			},
			q: query(), mode: TLSSimple, rule: "default/c-ns"},
		{name: "any wildcard beats star",
			rules: []*DestinationRule{
				rule("default", "a-star", 0, "*", TLSDisable),
				rule("default", "b-svc", 9, "*.svc.cluster.local", TLSSimple),
			},
			q: query(), mode: TLSSimple, rule: "default/b-svc"},
		{name: "wildcard of another domain does not match",
			rules: []*DestinationRule{rule("default", "ext", 0, "*.example.com", TLSSimple)},
			q:     query(), auto: true},
		{name: "tie: oldest wins",
			rules: []*DestinationRule{
				rule("default", "a-new", 5, "product", TLSDisable),
				rule("default", "b-old", 1, "product.default.svc.cluster.local", TLSSimple),
			},
			q: query(), mode: TLSSimple, rule: "default/b-old"},
		{name: "tie at the same time: name wins",
			rules: []*DestinationRule{
				rule("default", "b", 1, "product", TLSDisable),
				rule("default", "a", 1, "product", TLSSimple),
			},
			q: query(), mode: TLSSimple, rule: "default/a"},
		{name: "port-level tls beats the rule's tls",
			rules: []*DestinationRule{rule("default", "p", 0, "product", TLSIstioMutual, portTLS(8080, TLSDisable))},
			q:     query(), mode: TLSDisable, rule: "default/p"},
		{name: "port-level tls of another port does not apply",
			rules: []*DestinationRule{rule("default", "p", 0, "product", TLSIstioMutual, portTLS(9090, TLSDisable))},
			q:     query(), mode: TLSIstioMutual, rule: "default/p"},
		{name: "port-level entry without tls keeps the rule's tls",
			rules: []*DestinationRule{rule("default", "p", 0, "product", TLSIstioMutual, portTLS(8080, ""))},
			q:     query(), mode: TLSIstioMutual, rule: "default/p"},
		{name: "only port-level tls, other port: auto with the rule named",
			rules: []*DestinationRule{rule("default", "p", 0, "product", "", portTLS(9090, TLSDisable))},
			q:     query(port(8080)), auto: true, rule: "default/p"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Set{DestinationRules: tt.rules}
			s.Sort()
			got := s.ClientTLSFor(tt.q)
			if got.Auto != tt.auto || got.Rule != tt.rule {
				t.Errorf("got Auto=%v Rule=%q, want Auto=%v Rule=%q", got.Auto, got.Rule, tt.auto, tt.rule)
			}
			switch {
			case tt.auto && got.Settings != nil:
				t.Errorf("Settings = %+v, want nil with Auto", got.Settings)
			case !tt.auto && (got.Settings == nil || got.Settings.Mode != tt.mode):
				t.Errorf("Settings = %+v, want mode %s", got.Settings, tt.mode)
			}
		})
	}
}

func TestClientTLSForReturnsACopy(t *testing.T) {
	d := rule("default", "p", 0, "product", TLSSimple)
	d.Spec.TrafficPolicy.TLS.SubjectAltNames = []string{"a"}
	s := &Set{DestinationRules: []*DestinationRule{d}}
	got := s.ClientTLSFor(ClientTLSQuery{ClientNamespace: "default", ServiceNamespace: "default",
		ServiceHost: "product.default.svc.cluster.local", Port: 80})
	got.Settings.SubjectAltNames[0] = "changed"
	got.Settings.Mode = TLSDisable
	if d.Spec.TrafficPolicy.TLS.SubjectAltNames[0] != "a" || d.Spec.TrafficPolicy.TLS.Mode != TLSSimple {
		t.Errorf("changing the result changed the rule: %+v", d.Spec.TrafficPolicy.TLS)
	}
}

func TestResolveHost(t *testing.T) {
	tests := []struct{ host, ns, domain, want string }{
		{"product", "default", "cluster.local", "product.default.svc.cluster.local"},
		{"product.stock", "default", "cluster.local", "product.stock.svc.cluster.local"},
		{"Product", "default", "", "product.default.svc.cluster.local"},
		{"product.default.svc.cluster.local", "test", "cluster.local", "product.default.svc.cluster.local"},
		{"*.default.svc.cluster.local", "test", "cluster.local", "*.default.svc.cluster.local"},
		{"*", "test", "cluster.local", "*"},
	}
	for _, tt := range tests {
		if got := ResolveHost(tt.host, tt.ns, tt.domain); got != tt.want {
			t.Errorf("ResolveHost(%q, %q, %q) = %q, want %q", tt.host, tt.ns, tt.domain, got, tt.want)
		}
	}
}

func authz(ns, name string, s *WorkloadSelector) *AuthorizationPolicy {
	return &AuthorizationPolicy{Meta: meta(ns, name, 0), Spec: AuthorizationPolicySpec{Selector: s}}
}

func TestAuthorizationPoliciesFor(t *testing.T) {
	all := []*AuthorizationPolicy{
		authz("default", "z-deny-all", nil),
		authz("default", "allow-product", sel("app", "product")),
		authz("default", "allow-stock", sel("app", "stock")),
		authz("test", "test-all", nil),
		authz(root, "mesh-all", nil),
		authz(root, "mesh-product", sel("app", "product")),
		authz(root, "mesh-gw", sel("app", "gw")),
		nil,
	}
	tests := []struct {
		name string
		w    Workload
		want []string
	}{
		{"namespace and root policies whose selector matches, sorted",
			Workload{Namespace: "default", Labels: map[string]string{"app": "product"}},
			[]string{"default/allow-product", "default/z-deny-all", "istio-system/mesh-all", "istio-system/mesh-product"}},
		{"no labels: only selector-less policies",
			Workload{Namespace: "default"},
			[]string{"default/z-deny-all", "istio-system/mesh-all"}},
		{"other namespace",
			Workload{Namespace: "test", Labels: map[string]string{"app": "stock"}},
			[]string{"istio-system/mesh-all", "test/test-all"}},
		{"workload in the root namespace: each policy once",
			Workload{Namespace: root, Labels: map[string]string{"app": "gw"}},
			[]string{"istio-system/mesh-all", "istio-system/mesh-gw"}},
		{"namespace without policies still gets the mesh ones",
			Workload{Namespace: "empty", Labels: map[string]string{"app": "product"}},
			[]string{"istio-system/mesh-all", "istio-system/mesh-product"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Set{AuthorizationPolicies: all}
			var got []string
			for _, p := range s.AuthorizationPoliciesFor(root, tt.w) {
				got = append(got, p.Key())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestRequestAuthenticationsFor(t *testing.T) {
	ra := func(ns, name string, s *WorkloadSelector) *RequestAuthentication {
		return &RequestAuthentication{Meta: meta(ns, name, 0), Spec: RequestAuthenticationSpec{Selector: s}}
	}
	s := &Set{RequestAuthentications: []*RequestAuthentication{
		ra(root, "mesh-jwt", nil),
		ra("default", "product-jwt", sel("app", "product")),
		ra("default", "stock-jwt", sel("app", "stock")),
		ra("test", "test-jwt", nil),
	}}
	var got []string
	for _, p := range s.RequestAuthenticationsFor(root, Workload{Namespace: "default", Labels: map[string]string{"app": "product"}}) {
		got = append(got, p.Key())
	}
	if diff := cmp.Diff([]string{"default/product-jwt", "istio-system/mesh-jwt"}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
