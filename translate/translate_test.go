package translate

import (
	"strings"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

func TestProxyKey(t *testing.T) {
	replica := func(name, ip string, labels map[string]string, ports ...model.ContainerPort) *model.Workload {
		return &model.Workload{Namespace: "default", Name: name, IP: ip, ServiceAccount: "stock", Labels: labels, Ports: ports, InMesh: true}
	}
	http := model.ContainerPort{Name: "http", Port: 8080, Protocol: "TCP"}
	tcp := model.ContainerPort{Name: "legacy", Port: 9000, Protocol: "TCP"}
	labels := map[string]string{"app": "stock", "version": "v1"}

	a := ProxyFor(FlavorEnvoy, replica("stock-0", "10.0.0.1", labels, http, tcp))
	b := ProxyFor(FlavorEnvoy, replica("stock-1", "10.0.0.2", map[string]string{"version": "v1", "app": "stock"}, tcp, http))
	if a.Key() != b.Key() {
		t.Errorf("replicas (other name, IP and port order) got different keys %s and %s", a.Key(), b.Key())
	}
	if a.IP != "" {
		t.Errorf("an Envoy proxy must not carry the pod IP (it would split replicas), got %q", a.IP)
	}

	differs := []struct {
		name string
		p    Proxy
	}{
		{"other label value", ProxyFor(FlavorEnvoy, replica("x", "", map[string]string{"app": "stock", "version": "v2"}, http, tcp))},
		{"extra label", ProxyFor(FlavorEnvoy, replica("x", "", map[string]string{"app": "stock", "version": "v1", "canary": "true"}, http, tcp))},
		{"label moved between key and value", ProxyFor(FlavorEnvoy, replica("x", "", map[string]string{"appstock": "", "version": "v1"}, http, tcp))},
		{"other namespace", Proxy{Flavor: FlavorEnvoy, Namespace: "other", Labels: labels, Ports: a.Ports}},
		{"other ports", ProxyFor(FlavorEnvoy, replica("x", "", labels, http))},
		{"other port name", ProxyFor(FlavorEnvoy, replica("x", "", labels, model.ContainerPort{Name: "web", Port: 8080, Protocol: "TCP"}, tcp))},
		{"other flavour", ProxyFor(FlavorProxyless, replica("stock-0", "10.0.0.1", labels, http, tcp))},
	}
	for _, d := range differs {
		if d.p.Key() == a.Key() {
			t.Errorf("%s: key equals the original's; proxies translated differently would share a result", d.name)
		}
	}

	g0 := ProxyFor(FlavorProxyless, replica("stock-0", "10.0.0.1", labels, http))
	g1 := ProxyFor(FlavorProxyless, replica("stock-1", "10.0.0.2", labels, http))
	if g0.IP != "10.0.0.1" || g0.Key() == g1.Key() {
		t.Errorf("proxyless proxies carry their IP and so never share a key: IP %q, keys %s %s", g0.IP, g0.Key(), g1.Key())
	}
}

func TestOptionsWithDefaults(t *testing.T) {
	got := Options{TrustDomain: "example.org"}.WithDefaults()
	want := Options{TrustDomain: "example.org", ClusterDomain: "cluster.local", RootNamespace: "istio-system"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("WithDefaults (-want +got):\n%s", diff)
	}
}

func TestTranslateNeverPanics(t *testing.T) {
	cases := []struct {
		name      string
		snap      *model.Snapshot
		p         Proxy
		wantError string
	}{
		{"nil snapshot", nil, Proxy{Flavor: FlavorEnvoy, Namespace: "default"}, ""},
		{"unknown flavour", &model.Snapshot{}, Proxy{Flavor: "nginx"}, `proxy flavour "nginx"`},
		{"proxyless nil snapshot", nil, Proxy{Flavor: FlavorProxyless, Namespace: "default"}, ""},
		{"service with odd ports", &model.Snapshot{Services: []model.Service{{
			Namespace: "default", Name: "odd", ClusterIP: "None", Selector: map[string]string{"app": "x"},
			Ports: []model.ServicePort{
				{Name: "http", Port: 80, TargetPortName: "missing"},
				{Name: "dns", Port: 53, Protocol: "UDP"},
				{Name: "tcp", Port: 15001},
			},
		}}}, Proxy{Flavor: FlavorEnvoy, Namespace: "default", Labels: map[string]string{"app": "x"}}, ""},
		{"proxyless with odd ports and no IP", &model.Snapshot{Services: []model.Service{{
			Namespace: "default", Name: "odd", ClusterIP: "None", Selector: map[string]string{"app": "x"},
			Ports: []model.ServicePort{
				{Name: "http", Port: 80, TargetPortName: "missing"},
				{Name: "grpc", Port: 70000},
				{Name: "dns", Port: 53, Protocol: "UDP"},
			},
		}}, Endpoints: []model.ServiceEndpoints{{Namespace: "default", Service: "odd", Port: 80, Endpoints: []model.Endpoint{
			{IP: "not-an-ip", Port: 8080, Ready: true},
			{IP: "10.0.0.1", Port: 0, Ready: true},
			{IP: "10.0.0.2", Port: 8080, Ready: true},
			{IP: "10.0.0.2", Port: 8080, Ready: true},
		}}}}, Proxy{Flavor: FlavorProxyless, Namespace: "default", Labels: map[string]string{"app": "x"},
			Ports: []model.ContainerPort{{Port: 9090}, {Port: 53, Protocol: "UDP"}}}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := Translate(c.snap, c.p, Options{})
			if c.wantError == "" {
				if res.Problems.HasErrors() {
					t.Fatalf("unexpected errors: %v", res.Problems.Err())
				}
				if err := res.Validate(); err != nil {
					t.Fatalf("invalid resources: %v", err)
				}
				if err := checkConsistency(res, c.p.Flavor); err != nil {
					t.Fatalf("inconsistent resources: %v", err)
				}
				return
			}
			if err := res.Problems.Err(); err == nil || !strings.Contains(err.Error(), c.wantError) {
				t.Fatalf("want an error containing %q, got %v", c.wantError, err)
			}
			if len(res.Listeners)+len(res.Clusters) != 0 {
				t.Fatal("a failed translation must carry no resources")
			}
		})
	}
}

func TestUsableEndpoints(t *testing.T) {
	ready := model.Endpoint{IP: "10.0.0.1", Ready: true, Serving: true}
	notReady := model.Endpoint{IP: "10.0.0.2"}
	draining := model.Endpoint{IP: "10.0.0.3", Serving: true, Terminating: true}
	gone := model.Endpoint{IP: "10.0.0.4", Terminating: true}
	cases := []struct {
		name string
		in   []model.Endpoint
		want []string
	}{
		{"ready only", []model.Endpoint{ready, notReady, draining, gone}, []string{"10.0.0.1"}},
		{"terminating fallback", []model.Endpoint{notReady, draining, gone}, []string{"10.0.0.3"}},
		{"nothing usable", []model.Endpoint{notReady, gone}, nil},
	}
	for _, c := range cases {
		var got []string
		for _, e := range usableEndpoints(c.in) {
			got = append(got, e.IP)
		}
		if diff := cmp.Diff(c.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", c.name, diff)
		}
	}
}

// TestRequestPrincipal covers how <iss>/<sub> patterns are split at the
// issuers the workload accepts.
func TestRequestPrincipal(t *testing.T) {
	issuers := []string{"https://a.example.com", "https://a.example.com/tenant", "plain"}
	iss := func(v string) *rbacv3.Principal { return jwtClaim([]string{"iss"}, stringValue(exactMatcher(v))) }
	sub := func(m *matcherv3.StringMatcher) *rbacv3.Principal { return jwtClaim([]string{"sub"}, stringValue(m)) }
	present := &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_PresentMatch{PresentMatch: true}}
	nothing := notID(anyPrincipal())
	cases := []struct {
		value   string
		want    *rbacv3.Principal
		wantErr bool
	}{
		{value: "plain/alice", want: andIDs([]*rbacv3.Principal{iss("plain"), sub(exactMatcher("alice"))})},
		// An issuer with "/" in it may be split two ways; both are allowed.
		{value: "https://a.example.com/tenant/bob", want: orIDs([]*rbacv3.Principal{
			andIDs([]*rbacv3.Principal{iss("https://a.example.com"), sub(exactMatcher("tenant/bob"))}),
			andIDs([]*rbacv3.Principal{iss("https://a.example.com/tenant"), sub(exactMatcher("bob"))}),
		})},
		{value: "unknown/alice", want: nothing},
		{value: "plain", want: nothing},
		{value: "*", want: jwtClaim([]string{"iss"}, present)},
		{value: "plain/*", want: iss("plain")},
		{value: "plain/adm*", want: andIDs([]*rbacv3.Principal{iss("plain"), sub(prefixMatcher("adm"))})},
		{value: "https://a.example.com/t*", want: orIDs([]*rbacv3.Principal{
			andIDs([]*rbacv3.Principal{iss("https://a.example.com"), sub(prefixMatcher("t"))}),
			iss("https://a.example.com/tenant"),
		})},
		{value: "*@example.com", want: andIDs([]*rbacv3.Principal{jwtClaim([]string{"iss"}, present), sub(suffixMatcher("@example.com"))})},
		{value: "*/alice", wantErr: true},
	}
	for _, c := range cases {
		b := ruleBuilder{scope: authzScope{issuers: issuers}}
		got, err := b.requestPrincipal(c.value)
		if (err != nil) != c.wantErr {
			t.Errorf("%q: error %v, want error %v", c.value, err, c.wantErr)
			continue
		}
		if diff := cmp.Diff(c.want, got, protocmp.Transform()); diff != "" {
			t.Errorf("%q (-want +got):\n%s", c.value, diff)
		}
	}
}

// TestRuleFailsClosed checks the fail-closed choice for fields a chain
// cannot check, per action.
func TestRuleFailsClosed(t *testing.T) {
	rule := policy.Rule{
		From: []policy.RuleFrom{{Source: &policy.Source{Namespaces: []string{"test"}}}},
		To:   []policy.RuleTo{{Operation: &policy.Operation{Methods: []string{"DELETE"}}}},
	}
	badKey := policy.Rule{When: []policy.Condition{{Key: "experimental.envoy.filters.foo", Values: []string{"x"}}}}
	ns, _ := namespacePrincipal("test")
	cases := []struct {
		name     string
		action   policy.Action
		rule     policy.Rule
		tcp      bool
		want     *rbacv3.Policy // nil: the rule is dropped
		problems int
	}{
		{"allow on HTTP", policy.ActionAllow, rule, false, &rbacv3.Policy{
			Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Header{Header: headerMatcher(":method", "DELETE", false)}}},
			Principals:  []*rbacv3.Principal{ns},
		}, 0},
		{"allow on TCP is dropped", policy.ActionAllow, rule, true, nil, 1},
		{"deny on TCP is widened", policy.ActionDeny, rule, true, &rbacv3.Policy{
			Permissions: []*rbacv3.Permission{anyPermission()},
			Principals:  []*rbacv3.Principal{ns},
		}, 1},
		{"allow with unknown key is dropped", policy.ActionAllow, badKey, false, nil, 1},
		{"deny with unknown key is widened", policy.ActionDeny, badKey, false, anyPolicy(), 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := ruleBuilder{scope: authzScope{tcp: c.tcp, port: 9000}, meta: &policy.Meta{Kind: policy.KindAuthorizationPolicy, Namespace: "default", Name: "p"}, action: c.action}
			got := b.build(c.rule)
			if diff := cmp.Diff(c.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if len(b.problems) != c.problems {
				t.Errorf("got %d problems %v, want %d", len(b.problems), b.problems, c.problems)
			}
		})
	}
}

// TestAuthorizationSemantics checks which RBAC filters exist for
// combinations of actions, including Istio's allow-nothing.
func TestAuthorizationSemantics(t *testing.T) {
	ap := func(name string, action policy.Action, rules ...policy.Rule) *policy.AuthorizationPolicy {
		return &policy.AuthorizationPolicy{
			Meta: policy.Meta{Kind: policy.KindAuthorizationPolicy, Namespace: "default", Name: name},
			Spec: policy.AuthorizationPolicySpec{Action: action, Rules: rules},
		}
	}
	cases := []struct {
		name               string
		policies           []*policy.AuthorizationPolicy
		audit, deny, allow int // number of Envoy policies; -1 means no filter
	}{
		{"none", nil, -1, -1, -1},
		{"allow-nothing", []*policy.AuthorizationPolicy{ap("nothing", "")}, -1, -1, 0},
		{"empty deny is a no-op", []*policy.AuthorizationPolicy{ap("d", policy.ActionDeny)}, -1, -1, -1},
		{"deny and allow", []*policy.AuthorizationPolicy{ap("d", policy.ActionDeny, policy.Rule{}), ap("a", policy.ActionAllow, policy.Rule{}, policy.Rule{})}, -1, 1, 2},
		{"audit", []*policy.AuthorizationPolicy{ap("log", policy.ActionAudit, policy.Rule{})}, 1, -1, -1},
	}
	count := func(r *rbacv3.RBAC) int {
		if r == nil {
			return -1
		}
		return len(r.Policies)
	}
	for _, c := range cases {
		got, problems := buildRBAC(c.policies, authzScope{})
		if len(problems) != 0 {
			t.Errorf("%s: unexpected problems %v", c.name, problems)
		}
		if g := [3]int{count(got.audit), count(got.deny), count(got.allow)}; g != [3]int{c.audit, c.deny, c.allow} {
			t.Errorf("%s: got audit/deny/allow %v, want %v", c.name, g, [3]int{c.audit, c.deny, c.allow})
		}
		if want := present(c.audit) + present(c.deny) + present(c.allow); len(HTTPRBACFilters(got)) != want {
			t.Errorf("%s: got %d HTTP filters, want %d", c.name, len(HTTPRBACFilters(got)), want)
		}
	}
	// The filters run audit, then deny, then allow, whatever the policy order.
	got, _ := buildRBAC([]*policy.AuthorizationPolicy{
		ap("a", policy.ActionAllow, policy.Rule{}), ap("d", policy.ActionDeny, policy.Rule{}), ap("l", policy.ActionAudit, policy.Rule{}),
	}, authzScope{})
	var order []rbacv3.RBAC_Action
	for _, f := range HTTPRBACFilters(got) {
		var cfg rbachttpv3.RBAC
		if err := f.GetTypedConfig().UnmarshalTo(&cfg); err != nil {
			t.Fatal(err)
		}
		order = append(order, cfg.GetRules().GetAction())
	}
	if diff := cmp.Diff([]rbacv3.RBAC_Action{rbacv3.RBAC_LOG, rbacv3.RBAC_DENY, rbacv3.RBAC_ALLOW}, order); diff != "" {
		t.Errorf("filter order (-want +got):\n%s", diff)
	}
}

func present(n int) int {
	if n < 0 {
		return 0
	}
	return 1
}

// TestDryRunNeverEnforces: a workload whose only policies are dry runs gets
// RBAC filters with shadow rules and no rules at all, so Envoy enforces
// nothing; in particular a dry-run ALLOW does not make "deny unless
// allowed" take effect, and a dry-run DENY denies nothing.
func TestDryRunNeverEnforces(t *testing.T) {
	dry := func(name string, action policy.Action) *policy.AuthorizationPolicy {
		return &policy.AuthorizationPolicy{
			Meta:   policy.Meta{Kind: policy.KindAuthorizationPolicy, Namespace: "default", Name: name},
			Spec:   policy.AuthorizationPolicySpec{Action: action, Rules: []policy.Rule{{}}},
			DryRun: true,
		}
	}
	rules, problems := buildRBAC([]*policy.AuthorizationPolicy{
		dry("a", policy.ActionAllow), dry("d", policy.ActionDeny), dry("l", policy.ActionAudit),
	}, authzScope{})
	if len(problems) != 0 {
		t.Fatalf("unexpected problems %v", problems)
	}
	type shadow struct {
		action rbacv3.RBAC_Action
		prefix string
	}
	var got []shadow
	for _, f := range HTTPRBACFilters(rules) {
		var cfg rbachttpv3.RBAC
		if err := f.GetTypedConfig().UnmarshalTo(&cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.Rules != nil {
			t.Errorf("a filter for dry-run policies enforces rules: %v", cfg.Rules)
		}
		if len(cfg.GetShadowRules().GetPolicies()) != 1 {
			t.Errorf("shadow rules %v, want the policy's one rule", cfg.GetShadowRules())
		}
		got = append(got, shadow{cfg.GetShadowRules().GetAction(), cfg.ShadowRulesStatPrefix})
	}
	want := []shadow{{rbacv3.RBAC_LOG, ""}, {rbacv3.RBAC_DENY, "istio_dry_run_deny_"}, {rbacv3.RBAC_ALLOW, "istio_dry_run_allow_"}}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(shadow{})); diff != "" {
		t.Errorf("shadow filters (-want +got):\n%s", diff)
	}
}
