package policy

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestUnmatchedSelectors(t *testing.T) {
	workloads := []Workload{
		{Namespace: "shop", Labels: map[string]string{"app": "cart", "version": "v1"}},
		{Namespace: "shop", Labels: map[string]string{"app": "web"}},
		{Namespace: "test", Labels: map[string]string{"app": "curl"}},
	}
	reqAuthn := func(ns, name string, s *WorkloadSelector) *RequestAuthentication {
		return &RequestAuthentication{Meta: meta(ns, name, 0), Spec: RequestAuthenticationSpec{Selector: s}}
	}
	tests := []struct {
		name string
		set  Set
		want []string // "namespace/name: message"
	}{{
		name: "selectors that select a workload of their namespace",
		set: Set{
			PeerAuthentications:    []*PeerAuthentication{peer("shop", "cart", 0, sel("app", "cart"), ModeStrict, nil)},
			AuthorizationPolicies:  []*AuthorizationPolicy{authz("shop", "cart-v1", sel("app", "cart", "version", "v1"))},
			RequestAuthentications: []*RequestAuthentication{reqAuthn("test", "curl", sel("app", "curl"))},
		},
	}, {
		name: "no selector, or empty matchLabels, is not checked",
		set: Set{
			PeerAuthentications:   []*PeerAuthentication{peer("empty", "default", 0, nil, ModeStrict, nil), peer(root, "mesh", 0, sel(), ModeStrict, nil)},
			AuthorizationPolicies: []*AuthorizationPolicy{authz("empty", "deny-all", nil)},
		},
	}, {
		name: "a typo in a label",
		set: Set{
			PeerAuthentications:    []*PeerAuthentication{peer("shop", "kart", 0, sel("app", "kart"), ModeStrict, nil)},
			AuthorizationPolicies:  []*AuthorizationPolicy{authz("shop", "cart-v2", sel("app", "cart", "version", "v2"))},
			RequestAuthentications: []*RequestAuthentication{reqAuthn("shop", "curl", sel("ap", "curl"))},
		},
		want: []string{
			"shop/kart: selects no workload: no pod in namespace shop has the labels app=kart, so the policy applies to nothing until one does (check the labels' spelling)",
			"shop/cart-v2: selects no workload: no pod in namespace shop has the labels app=cart,version=v2, so the policy applies to nothing until one does (check the labels' spelling)",
			"shop/curl: selects no workload: no pod in namespace shop has the labels ap=curl, so the policy applies to nothing until one does (check the labels' spelling)",
		},
	}, {
		name: "the workload is in another namespace",
		set: Set{
			PeerAuthentications:   []*PeerAuthentication{peer("test", "cart", 0, sel("app", "cart"), ModeStrict, nil)},
			AuthorizationPolicies: []*AuthorizationPolicy{authz("test", "cart", sel("app", "cart"))},
		},
		want: []string{
			"test/cart: selects no workload: no pod in namespace test has the labels app=cart, so the policy applies to nothing until one does (check the labels' spelling)",
			"test/cart: selects no workload: no pod in namespace test has the labels app=cart, so the policy applies to nothing until one does (check the labels' spelling)",
		},
	}, {
		name: "root namespace: authorization selects across the mesh",
		set: Set{
			AuthorizationPolicies:  []*AuthorizationPolicy{authz(root, "cart", sel("app", "cart")), authz(root, "none", sel("app", "none"))},
			RequestAuthentications: []*RequestAuthentication{reqAuthn(root, "curl", sel("app", "curl"))},
		},
		want: []string{
			"istio-system/none: selects no workload: no pod in any namespace has the labels app=none, so the policy applies to nothing until one does (check the labels' spelling)",
		},
	}, {
		name: "root namespace: a PeerAuthentication with a selector applies to nothing",
		set:  Set{PeerAuthentications: []*PeerAuthentication{peer(root, "cart", 0, sel("app", "cart"), ModeStrict, nil)}},
		want: []string{
			`istio-system/cart: applies to no workload: a PeerAuthentication with a selector in the root namespace "istio-system" is ignored (as in Istio); move it to the workload's namespace or remove the selector`,
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, p := range tt.set.UnmatchedSelectors(root, workloads) {
				if p.Severity != SeverityWarning || p.Field != "spec.selector" {
					t.Errorf("problem %v is not a warning about spec.selector", p)
				}
				got = append(got, p.Namespace+"/"+p.Name+": "+p.Message)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
		})
	}
}
