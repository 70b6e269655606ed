package translate

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protopath"
	"google.golang.org/protobuf/reflect/protorange"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

// TestProxylessGRPCShapes checks every proxyless golden case against what
// gRPC-Go v1.85 accepts (../shared/notes/grpc-xds.md and gRPC's own
// parsers), so a golden file cannot be updated into something gRPC NACKs.
func TestProxylessGRPCShapes(t *testing.T) {
	dir := filepath.Join("testdata", "proxyless")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".yaml") || isOutputFile(e.Name()) {
			continue
		}
		n++
		t.Run(strings.TrimSuffix(e.Name(), ".yaml"), func(t *testing.T) {
			snap, proxy := loadCase(t, filepath.Join(dir, e.Name()), FlavorProxyless)
			res := Translate(snap, proxy, Options{JWKS: goldenJWKS})
			for _, v := range grpcShapeViolations(res) {
				t.Error(v)
			}
		})
	}
	if n == 0 {
		t.Fatal("no proxyless cases")
	}
}

// grpcShapeViolations lists what gRPC would NACK or silently ignore.
func grpcShapeViolations(res *Resources) []string {
	var out []string
	bad := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	unpackHCM := func(where string, a *anypb.Any) *hcmv3.HttpConnectionManager {
		m := &hcmv3.HttpConnectionManager{}
		if err := a.UnmarshalTo(m); err != nil {
			bad("%s: not an HTTP connection manager: %v", where, err)
			return nil
		}
		return m
	}
	checkHTTPFilters := func(where string, fs []*hcmv3.HttpFilter) {
		if len(fs) == 0 {
			bad("%s: empty HTTP filter list", where)
			return
		}
		seen := map[string]bool{}
		for i, f := range fs {
			if seen[f.GetName()] {
				bad("%s: duplicate HTTP filter name %q", where, f.GetName())
			}
			seen[f.GetName()] = true
			isRouter := f.GetName() == wellknown.Router
			if isRouter != (i == len(fs)-1) {
				bad("%s: the router must be the last filter and only there (filter %d is %q)", where, i, f.GetName())
			}
			rb := &rbachttpv3.RBAC{}
			if f.GetTypedConfig().MessageIs(rb) {
				if err := f.GetTypedConfig().UnmarshalTo(rb); err != nil {
					bad("%s: %v", where, err)
				} else if a := rb.GetRules().GetAction(); a != rbacv3.RBAC_ALLOW && a != rbacv3.RBAC_DENY {
					bad("%s: RBAC action %v is ignored by gRPC", where, a)
				}
			}
		}
	}
	checkCommon := func(where string, c *tlsv3.CommonTlsContext, server bool) {
		if c.GetTlsParams() != nil {
			bad("%s: tls_params is NACKed", where)
		}
		if len(c.GetTlsCertificateSdsSecretConfigs()) > 0 || c.GetCombinedValidationContext() != nil {
			bad("%s: SDS secret configs are NACKed", where)
		}
		if c.GetTlsCertificateProviderInstance().GetInstanceName() != CertificateProviderInstance {
			bad("%s: identity must come from certificate provider %q", where, CertificateProviderInstance)
		}
		vc := c.GetValidationContext()
		if vc.GetCaCertificateProviderInstance().GetInstanceName() != CertificateProviderInstance {
			bad("%s: trust bundle must come from certificate provider %q", where, CertificateProviderInstance)
		}
		typed, untyped := vc.GetMatchTypedSubjectAltNames(), vc.GetMatchSubjectAltNames() //nolint:staticcheck // gRFC A29's field
		if server && (len(typed) > 0 || len(untyped) > 0) {
			bad("%s: SAN matchers on the server are NACKed", where)
		}
		// Clients carry the typed matchers and, for gRFC A29 readers
		// such as gRPC-Go, the same matchers untyped.
		var fromTyped []*matcherv3.StringMatcher
		for _, m := range typed {
			fromTyped = append(fromTyped, m.GetMatcher())
		}
		if diff := cmp.Diff(untyped, fromTyped, protocmp.Transform()); diff != "" {
			bad("%s: match_subject_alt_names and match_typed_subject_alt_names differ (-untyped +typed):\n%s", where, diff)
		}
		for _, m := range typed {
			if m.GetSanType() == tlsv3.SubjectAltNameMatcher_SAN_TYPE_UNSPECIFIED {
				bad("%s: typed SAN matcher without a SAN type", where)
			}
		}
	}
	checkSocket := func(where string, ts *corev3.TransportSocket, server bool) {
		if ts == nil {
			return
		}
		if ts.GetName() != wellknown.TransportSocketTLS {
			bad("%s: transport socket named %q, gRPC requires %q", where, ts.GetName(), wellknown.TransportSocketTLS)
		}
		if server {
			d := &tlsv3.DownstreamTlsContext{}
			if err := ts.GetTypedConfig().UnmarshalTo(d); err != nil {
				bad("%s: %v", where, err)
				return
			}
			if !d.GetRequireClientCertificate().GetValue() {
				bad("%s: mesh mTLS must require a client certificate", where)
			}
			checkCommon(where, d.GetCommonTlsContext(), true)
			return
		}
		u := &tlsv3.UpstreamTlsContext{}
		if err := ts.GetTypedConfig().UnmarshalTo(u); err != nil {
			bad("%s: %v", where, err)
			return
		}
		checkCommon(where, u.GetCommonTlsContext(), false)
		if len(u.GetCommonTlsContext().GetValidationContext().GetMatchTypedSubjectAltNames()) == 0 {
			bad("%s: client mTLS without SAN matchers accepts any mesh identity", where)
		}
	}

	for _, l := range res.Listeners {
		name := l.GetName()
		if api := l.GetApiListener().GetApiListener(); api != nil {
			m := unpackHCM(name, api)
			if m == nil {
				continue
			}
			if m.GetRds().GetConfigSource().GetAds() == nil {
				bad("listener %s: RDS must come over ADS", name)
			}
			if fs := m.GetHttpFilters(); len(fs) != 1 || fs[0].GetName() != wellknown.Router {
				bad("listener %s: client filters must be the router alone", name)
			}
			continue
		}
		if !strings.HasPrefix(name, "grpc/server?xds.resource.listening_address=") {
			bad("listener %s: neither an API listener nor a server listener", name)
			continue
		}
		sa := l.GetAddress().GetSocketAddress()
		if want := ServerListenerName(sa.GetAddress(), sa.GetPortValue()); want != name {
			bad("listener %s: address %s:%d does not match its name (want %s)", name, sa.GetAddress(), sa.GetPortValue(), want)
		}
		if len(l.GetListenerFilters()) > 0 || l.GetUseOriginalDst().GetValue() {
			bad("listener %s: listener filters and use_original_dst are NACKed", name)
		}
		chains := slices.Clone(l.GetFilterChains())
		if l.GetDefaultFilterChain() != nil {
			chains = append(chains, l.GetDefaultFilterChain())
		}
		if len(chains) == 0 {
			bad("listener %s: no filter chain", name)
		}
		for _, fc := range chains {
			where := name + " chain " + fc.GetName()
			m := fc.GetFilterChainMatch()
			if m.GetDestinationPort() != nil || len(m.GetApplicationProtocols()) > 0 || len(m.GetServerNames()) > 0 ||
				(m.GetTransportProtocol() != "" && m.GetTransportProtocol() != "raw_buffer") {
				bad("%s: gRPC drops chains matching on destination_port, application_protocols, server_names or TLS", where)
			}
			// gRFC A36: transport_protocol matches only "raw_buffer"; some
			// implementations skip a chain that leaves it empty, and
			// gRPC-Go drops empty ones next to a "raw_buffer" one.
			if fc != l.GetDefaultFilterChain() && m.GetTransportProtocol() != "raw_buffer" {
				bad("%s: transport_protocol %q, want \"raw_buffer\" (gRFC A36)", where, m.GetTransportProtocol())
			}
			if len(fc.GetFilters()) != 1 {
				bad("%s: want exactly one HTTP connection manager", where)
				continue
			}
			hcm := unpackHCM(where, fc.GetFilters()[0].GetTypedConfig())
			if hcm == nil {
				continue
			}
			for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
				for _, r := range vh.GetRoutes() {
					if r.GetNonForwardingAction() == nil {
						bad("%s: server routes must use non_forwarding_action", where)
					}
				}
			}
			checkHTTPFilters(where, hcm.GetHttpFilters())
			checkSocket(where, fc.GetTransportSocket(), true)
		}
	}
	for _, c := range res.Clusters {
		where := "cluster " + c.GetName()
		if c.GetType() != clusterv3.Cluster_EDS || c.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil {
			bad("%s: must be EDS over ADS", where)
		}
		if c.GetLbPolicy() != clusterv3.Cluster_ROUND_ROBIN {
			bad("%s: lb policy %v", where, c.GetLbPolicy())
		}
		if len(c.GetTransportSocketMatches()) > 0 {
			bad("%s: transport_socket_matches is NACKed", where)
		}
		checkSocket(where, c.GetTransportSocket(), false)
	}
	for _, cla := range res.Endpoints {
		seen := map[string]bool{}
		for _, loc := range cla.GetEndpoints() {
			if loc.GetLocality() == nil || loc.GetLoadBalancingWeight().GetValue() == 0 {
				bad("endpoints %s: locality missing (NACKed) or weight zero (dropped)", cla.GetClusterName())
			}
			for _, e := range loc.GetLbEndpoints() {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				key := fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue())
				if seen[key] {
					bad("endpoints %s: duplicate address %s is NACKed", cla.GetClusterName(), key)
				}
				seen[key] = true
			}
		}
	}
	// gRPC's RBAC engine refuses sourced metadata and some header names.
	for _, l := range res.Listeners {
		_ = protorange.Range(l.ProtoReflect(), func(v protopath.Values) error {
			switch m := v.Index(-1).Value.Interface().(type) {
			case interface{ Interface() proto.Message }:
				switch x := m.Interface().(type) {
				case *rbacv3.Principal:
					if x.GetSourcedMetadata() != nil {
						bad("listener %s: sourced_metadata principals are NACKed", l.GetName())
					}
				case *routev3.HeaderMatcher:
					if n := strings.ToLower(x.GetName()); n == ":scheme" || strings.HasPrefix(n, "grpc-") {
						bad("listener %s: header matcher on %q is NACKed", l.GetName(), x.GetName())
					}
				}
			}
			return nil
		})
	}
	return out
}

// proxylessSnapshot is a small mesh for the table tests: service product
// (grpc port 8080) with the given endpoints, and the caller "client-0" in
// namespace default whose in-mesh flag is given.
func proxylessSnapshot(eps []model.Endpoint, workloads ...model.Workload) *model.Snapshot {
	s := &model.Snapshot{
		Services: []model.Service{{
			Namespace: "default", Name: "product", Selector: map[string]string{"app": "product"},
			Ports: []model.ServicePort{{Name: "grpc", Port: 8080, TargetPort: 8080}},
		}},
		Workloads: workloads,
		Endpoints: []model.ServiceEndpoints{{Namespace: "default", Service: "product", Port: 8080, Endpoints: eps}},
	}
	s.Sort()
	return s
}

func TestProxylessAutoMTLS(t *testing.T) {
	in := model.Endpoint{IP: "10.0.0.1", Port: 8080, ServiceAccount: "product", InMesh: true, Ready: true, Serving: true}
	in2 := model.Endpoint{IP: "10.0.0.2", Port: 8080, ServiceAccount: "product", InMesh: true, Ready: true, Serving: true}
	out := model.Endpoint{IP: "10.0.0.3", Port: 8080, ServiceAccount: "legacy", Ready: true, Serving: true}
	outNotReady := out
	outNotReady.Ready, outNotReady.IP = false, "10.0.0.4"
	cases := []struct {
		name        string
		eps         []model.Endpoint
		wantTLS     bool
		wantWarning string
	}{
		{"all in mesh", []model.Endpoint{in, in2}, true, ""},
		{"none in mesh", []model.Endpoint{out}, false, ""},
		{"mixed: mTLS and a warning naming the outsider", []model.Endpoint{in, out}, true, "10.0.0.3 (outside the mesh) fail"},
		{"outsider not ready: not sent, so all usable are in mesh", []model.Endpoint{in, outNotReady}, true, ""},
		{"no endpoints yet: mTLS", nil, true, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := Translate(proxylessSnapshot(c.eps), Proxy{Flavor: FlavorProxyless, Namespace: "default", IP: "10.0.9.9"}, Options{})
			if len(res.Clusters) != 1 {
				t.Fatalf("want 1 cluster, got %d", len(res.Clusters))
			}
			if got := res.Clusters[0].GetTransportSocket() != nil; got != c.wantTLS {
				t.Errorf("mTLS = %v, want %v", got, c.wantTLS)
			}
			var warnings []string
			for _, p := range res.Problems {
				warnings = append(warnings, p.Error())
			}
			joined := strings.Join(warnings, "\n")
			if c.wantWarning == "" && strings.Contains(joined, "outside the mesh") {
				t.Errorf("unexpected mixed-endpoint warning: %s", joined)
			}
			if c.wantWarning != "" && !strings.Contains(joined, c.wantWarning) {
				t.Errorf("want a warning containing %q, got %s", c.wantWarning, joined)
			}
		})
	}
}

// TestProxylessPermissiveChains checks the chain layout per mode, and that
// PERMISSIVE lists exactly the in-mesh workload addresses (both families,
// out-of-mesh and address-less workloads left out).
func TestProxylessPermissiveChains(t *testing.T) {
	workloads := []model.Workload{
		{Namespace: "default", Name: "product-0", IP: "10.0.0.1", InMesh: true, Labels: map[string]string{"app": "product"}},
		{Namespace: "default", Name: "v6", IP: "fd00::5", InMesh: true},
		{Namespace: "default", Name: "pending", InMesh: true},
		{Namespace: "test", Name: "outside", IP: "10.0.1.5"},
	}
	proxy := Proxy{Flavor: FlavorProxyless, Namespace: "default", Labels: map[string]string{"app": "product"}, IP: "10.0.0.1"}
	strict := &policy.PeerAuthentication{Meta: policy.Meta{Kind: "PeerAuthentication", Namespace: "default", Name: "default"},
		Spec: policy.PeerAuthenticationSpec{MTLS: &policy.MutualTLS{Mode: policy.ModeStrict}}}
	disable := &policy.PeerAuthentication{Meta: policy.Meta{Kind: "PeerAuthentication", Namespace: "default", Name: "default"},
		Spec: policy.PeerAuthenticationSpec{MTLS: &policy.MutualTLS{Mode: policy.ModeDisable}}}
	type chains struct {
		Chains  []string
		Sources []string
		Default string
	}
	cases := []struct {
		name      string
		workloads []model.Workload
		pa        *policy.PeerAuthentication
		want      chains
		warning   string
	}{
		{"permissive", workloads, nil, chains{[]string{"inbound|8080||mtls"}, []string{"10.0.0.1/32", "fd00::5/128"}, "inbound|8080||plaintext"}, "2 in-mesh workload address(es)"},
		{"permissive without in-mesh workloads", workloads[3:], nil, chains{Default: "inbound|8080||plaintext"}, "every caller is served in plaintext"},
		{"strict", workloads, strict, chains{Chains: []string{"inbound|8080||mtls"}}, ""},
		{"disable", workloads, disable, chains{Chains: []string{"inbound|8080||plaintext"}}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			snap := proxylessSnapshot(nil, c.workloads...)
			if c.pa != nil {
				snap.Policies.PeerAuthentications = []*policy.PeerAuthentication{c.pa}
			}
			res := Translate(snap, proxy, Options{})
			var server *listenerv3.Listener
			for _, l := range res.Listeners {
				if l.GetName() == ServerListenerName("10.0.0.1", 8080) {
					server = l
				}
			}
			if server == nil {
				t.Fatal("no server listener for 10.0.0.1:8080")
			}
			var got chains
			for _, fc := range server.GetFilterChains() {
				got.Chains = append(got.Chains, fc.GetName())
				for _, r := range fc.GetFilterChainMatch().GetSourcePrefixRanges() {
					got.Sources = append(got.Sources, fmt.Sprintf("%s/%d", r.GetAddressPrefix(), r.GetPrefixLen().GetValue()))
				}
			}
			got.Default = server.GetDefaultFilterChain().GetName()
			if diff := cmp.Diff(c.want, got); diff != "" {
				t.Errorf("chains (-want +got):\n%s", diff)
			}
			hasWarning := slices.ContainsFunc(res.Problems, func(p policy.Problem) bool { return strings.Contains(p.Message, "PERMISSIVE") })
			if hasWarning != (c.warning != "") {
				t.Errorf("PERMISSIVE warning present = %v, want %v: %v", hasWarning, c.warning != "", res.Problems)
			}
			if c.warning != "" && !slices.ContainsFunc(res.Problems, func(p policy.Problem) bool { return strings.Contains(p.Message, c.warning) }) {
				t.Errorf("want a warning containing %q, got %v", c.warning, res.Problems)
			}
			if err := res.Validate(); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestProxylessWithoutIP(t *testing.T) {
	snap := proxylessSnapshot(nil)
	res := Translate(snap, Proxy{Flavor: FlavorProxyless, Namespace: "default", Labels: map[string]string{"app": "product"}}, Options{})
	for _, l := range res.Listeners {
		if l.GetApiListener() == nil {
			t.Errorf("server listener %s generated without an address", l.GetName())
		}
	}
	if len(res.Listeners) == 0 {
		t.Error("client listeners must not depend on the workload's own address")
	}
	if !slices.ContainsFunc(res.Problems, func(p policy.Problem) bool { return strings.Contains(p.Message, "has no IP address yet") }) {
		t.Errorf("want a warning about the missing address, got %v", res.Problems)
	}
	if err := res.CheckReferences(); err != nil {
		t.Error(err)
	}
}

func TestProxylessClusterLoadAssignment(t *testing.T) {
	eps := []model.Endpoint{
		{IP: "10.0.0.2", Port: 8080, Ready: true},
		{IP: "10.0.0.2", Port: 8080, Ready: true}, // duplicate: gRPC NACKs it
		{IP: "10.0.0.3", Port: 0, Ready: true},    // port from the target port
		{IP: "not-an-ip", Port: 8080, Ready: true},
		{IP: "10.0.0.4", Port: 8080, Ready: false, Serving: true, Terminating: true}, // draining, ready ones exist
	}
	got := ProxylessClusterLoadAssignment("c", eps, 9090)
	ep := func(ip string, port uint32) *endpointv3.LbEndpoint {
		return &endpointv3.LbEndpoint{
			HostIdentifier:      &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(ip, port)}},
			LoadBalancingWeight: wrapperspb.UInt32(1),
		}
	}
	want := &endpointv3.ClusterLoadAssignment{ClusterName: "c", Endpoints: []*endpointv3.LocalityLbEndpoints{{
		Locality:            &corev3.Locality{},
		LbEndpoints:         []*endpointv3.LbEndpoint{ep("10.0.0.2", 8080), ep("10.0.0.3", 9090)},
		LoadBalancingWeight: wrapperspb.UInt32(2),
	}}}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if empty := ProxylessClusterLoadAssignment("c", nil, 0); len(empty.GetEndpoints()) != 0 {
		t.Errorf("no endpoints must give no locality (a zero weight would be dropped anyway), got %v", empty)
	}
}

// TestGRPCRBACScope is the table of fields gRPC cannot check: each fails
// closed (ALLOW rule dropped, DENY field widened) for gRPC and compiles
// normally for Envoy.
func TestGRPCRBACScope(t *testing.T) {
	cases := []struct {
		name string
		rule policy.Rule
	}{
		{"requestPrincipals", policy.Rule{From: []policy.RuleFrom{{Source: &policy.Source{RequestPrincipals: []string{"iss/sub"}}}}}},
		{"notRequestPrincipals", policy.Rule{From: []policy.RuleFrom{{Source: &policy.Source{NotRequestPrincipals: []string{"*"}}}}}},
		{"request.auth.claims", policy.Rule{When: []policy.Condition{{Key: "request.auth.claims[groups]", Values: []string{"admin"}}}}},
		{"request.auth.principal", policy.Rule{When: []policy.Condition{{Key: "request.auth.principal", Values: []string{"iss/sub"}}}}},
		{"connection.sni", policy.Rule{When: []policy.Condition{{Key: "connection.sni", Values: []string{"product.example.com"}}}}},
		{"grpc- header", policy.Rule{When: []policy.Condition{{Key: "request.headers[grpc-timeout]", Values: []string{"1S"}}}}},
	}
	for _, c := range cases {
		for _, action := range []policy.Action{policy.ActionAllow, policy.ActionDeny} {
			t.Run(c.name+"/"+string(action), func(t *testing.T) {
				ap := &policy.AuthorizationPolicy{
					Meta: policy.Meta{Kind: "AuthorizationPolicy", Namespace: "default", Name: "p"},
					Spec: policy.AuthorizationPolicySpec{Action: action, Rules: []policy.Rule{c.rule}},
				}
				rules, problems := buildRBAC([]*policy.AuthorizationPolicy{ap}, authzScope{grpc: true, issuers: []string{"iss"}})
				if len(problems) != 1 {
					t.Fatalf("want one problem, got %v", problems)
				}
				name := RBACPolicyName("default", "p", 0)
				switch action {
				case policy.ActionAllow:
					if _, ok := rules.allow.GetPolicies()[name]; ok || rules.allow == nil {
						t.Errorf("the ALLOW rule must be dropped and the filter kept, got %v", rules.allow)
					}
				case policy.ActionDeny:
					got := rules.deny.GetPolicies()[name]
					want := anyPolicy()
					if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
						t.Errorf("the DENY rule must be widened to everything (-want +got):\n%s", diff)
					}
				}
				envoyRules, envoyProblems := buildRBAC([]*policy.AuthorizationPolicy{ap}, authzScope{issuers: []string{"iss"}})
				if len(envoyProblems) != 0 {
					t.Errorf("Envoy can check %s, got problems %v", c.name, envoyProblems)
				}
				if envoyRules.allow.GetPolicies()[name] == nil && envoyRules.deny.GetPolicies()[name] == nil {
					t.Errorf("Envoy must compile the rule")
				}
			})
		}
	}
}

// TestCheckReferences breaks a consistent result in each way the check
// must catch.
func TestCheckReferences(t *testing.T) {
	base := func() *Resources {
		snap := proxylessSnapshot([]model.Endpoint{{IP: "10.0.0.1", Port: 8080, InMesh: true, Ready: true}})
		return Translate(snap, Proxy{Flavor: FlavorProxyless, Namespace: "test"}, Options{})
	}
	if err := base().CheckReferences(); err != nil {
		t.Fatalf("the base case must be consistent: %v", err)
	}
	cases := []struct {
		name   string
		break_ func(r *Resources)
		want   string
	}{
		{"missing route", func(r *Resources) { r.Routes = nil }, "which is not generated"},
		{"missing cluster", func(r *Resources) { r.Clusters = nil }, `sends to cluster "outbound|8080||product.default.svc.cluster.local", which is not generated`},
		{"missing assignment", func(r *Resources) { r.Endpoints = nil }, "has no cluster load assignment"},
		{"unused route", func(r *Resources) {
			r.Routes = append(r.Routes, &routev3.RouteConfiguration{Name: "orphan"})
		}, `route configuration "orphan" is not used`},
		{"unused assignment", func(r *Resources) {
			r.Endpoints = append(r.Endpoints, &endpointv3.ClusterLoadAssignment{ClusterName: "orphan"})
		}, `"orphan" is not read by any EDS cluster`},
		{"duplicate listener", func(r *Resources) { r.Listeners = append(r.Listeners, r.Listeners[0]) }, "is generated twice"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := base()
			c.break_(r)
			err := r.CheckReferences()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("want an error containing %q, got %v", c.want, err)
			}
		})
	}
}

// TestProxylessTokenDeny checks the RequestAuthentication fallback: header
// names lowercased, default location, reserved names skipped, and query
// parameters needing nothing.
func TestProxylessTokenDeny(t *testing.T) {
	ra := &policy.RequestAuthentication{
		Meta: policy.Meta{Kind: "RequestAuthentication", Namespace: "default", Name: "jwt"},
		Spec: policy.RequestAuthenticationSpec{JWTRules: []policy.JWTRule{
			{Issuer: "a"},
			{Issuer: "b", FromHeaders: []policy.JWTHeader{{Name: "X-Token", Prefix: "Bearer "}, {Name: "grpc-token"}}},
			{Issuer: "c", FromParams: []string{"access_token"}},
		}},
	}
	policies, problems := jwtTokenDenyPolicies([]*policy.RequestAuthentication{ra})
	header := func(name string) *rbacv3.Policy {
		return &rbacv3.Policy{
			Permissions: []*rbacv3.Permission{anyPermission()},
			Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Header{Header: &routev3.HeaderMatcher{
				Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true},
			}}}},
		}
	}
	want := map[string]*rbacv3.Policy{
		JWTProviderName("default", "jwt", 0): header("authorization"),
		JWTProviderName("default", "jwt", 1): header("x-token"),
	}
	if diff := cmp.Diff(want, policies, protocmp.Transform()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	// One warning per rule, plus one for the reserved header.
	if len(problems) != 4 {
		t.Errorf("want 4 problems, got %d: %v", len(problems), problems)
	}
}

// TestGRPCShapeCheckCanFail runs the shape check on Envoy sidecar output,
// which uses everything gRPC refuses, so the check is known to bite.
func TestGRPCShapeCheckCanFail(t *testing.T) {
	snap, proxy := loadCase(t, filepath.Join("testdata", "envoy", "jwt-request-principals.yaml"), FlavorEnvoy)
	got := strings.Join(grpcShapeViolations(Translate(snap, proxy, Options{JWKS: goldenJWKS})), "\n")
	for _, want := range []string{
		"neither an API listener nor a server listener",
		"transport_socket_matches is NACKed",
		"sourced_metadata principals are NACKed",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the check missed %q in Envoy output; it reported:\n%s", want, got)
		}
	}
	res := Translate(snap, ProxyFor(FlavorProxyless, snap.Workload("default", "stock-0")), Options{})
	res.Listeners[0].ListenerFilters = []*listenerv3.ListenerFilter{{Name: "x"}}
	res.Listeners[0].GetFilterChains()[0].TransportSocket = DownstreamMTLS("cluster.local", true)
	got = strings.Join(grpcShapeViolations(res), "\n")
	for _, want := range []string{"listener filters and use_original_dst are NACKed", "tls_params is NACKed", "SDS secret configs are NACKed"} {
		if !strings.Contains(got, want) {
			t.Errorf("the check missed %q; it reported:\n%s", want, got)
		}
	}
}
