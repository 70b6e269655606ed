package file

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/minimesh/minimesh/discovery/model"
)

// largeAuthorizationPolicy is one AuthorizationPolicy with n rules and no
// YAML aliases, each rule naming its own caller and path, as a generated
// policy for many clients would.
func largeAuthorizationPolicy(n int) []byte {
	var b strings.Builder
	b.WriteString("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n" +
		"metadata: {name: many-callers, namespace: default}\nspec:\n  action: ALLOW\n  rules:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - from:\n    - source:\n        principals: [cluster.local/ns/clients/sa/client-%d]\n"+
			"    to:\n    - operation:\n        methods: [GET, HEAD]\n        paths: [/api/v1/items/%d/*]\n", i, i)
	}
	return []byte(b.String())
}

// TestLargeAuthorizationPolicyLoads: the alias guard counts what aliases
// add, so a large policy without aliases is not mistaken for an alias
// bomb, however many values it holds.
func TestLargeAuthorizationPolicyLoads(t *testing.T) {
	const rules = 10_000
	data := largeAuthorizationPolicy(rules)
	if len(data) > MaxFileSize {
		t.Fatalf("the policy is %d bytes, over MaxFileSize; the test would not test the alias guard", len(data))
	}
	s := Build([]File{{Path: "big.yaml", Data: data}}, Options{})
	for _, p := range s.Problems {
		t.Errorf("problem: %s", brief(p))
	}
	if n := len(s.Policies.AuthorizationPolicies); n != 1 {
		t.Fatalf("%d AuthorizationPolicies loaded, want 1", n)
	}
	got := s.Policies.AuthorizationPolicies[0].Spec.Rules
	if len(got) != rules {
		t.Fatalf("%d rules loaded, want %d", len(got), rules)
	}
	if p := got[rules-1].To[0].Operation.Paths[0]; p != fmt.Sprintf("/api/v1/items/%d/*", rules-1) {
		t.Errorf("last rule's path = %q", p)
	}
}

// TestAliasGuard: what aliases expand to is bounded by values and by
// bytes; aliases that stay within both load.
func TestAliasGuard(t *testing.T) {
	ns := "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n  annotations:\n"
	// repeat lists n aliases to anchor a under annotation keys k0, k1, ...
	repeat := func(n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "    k%d: *a\n", i)
		}
		return b.String()
	}
	// principals is a policy whose n rules alias one list of 40 principals.
	principals := func(n int) string {
		var b strings.Builder
		b.WriteString("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec:\n  rules:\n" +
			"  - from: [{source: {principals: &a [" + strings.Repeat("x, ", 39) + "x]}}]\n")
		for range n {
			b.WriteString("  - from: [{source: {principals: *a}}]\n")
		}
		return b.String()
	}
	big := strings.Repeat("x", 1<<20)
	shared := "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: shared}\nspec:\n  rules:\n" +
		"  - from: &callers [{source: {principals: [a, b, c, d, e, f, g, h]}}]\n"
	for range 5000 {
		shared += "  - from: *callers\n"
	}
	tests := []struct {
		name    string
		yaml    string
		refused bool
	}{
		{name: "an anchor shared by 5,000 rules", yaml: shared},
		{name: "a 1 MiB value aliased 7 times", yaml: ns + "    a: &a " + big + "\n" + repeat(7)},
		{name: "a 1 MiB value aliased 9 times", yaml: ns + "    a: &a " + big + "\n" + repeat(9), refused: true},
		{name: "a list of 40 principals aliased by 2,400 rules (98,400 values)", yaml: principals(2400)},
		{name: "a list of 40 principals aliased by 2,500 rules (102,500 values)", yaml: principals(2500), refused: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Build([]File{{Path: "a.yaml", Data: []byte(tt.yaml)}}, Options{})
			refused := slices.ContainsFunc(s.Problems, func(p model.Problem) bool {
				return strings.Contains(p.Message, "the YAML aliases of this document expand to more than")
			})
			if refused != tt.refused {
				t.Errorf("refused = %v, want %v; problems: %v", refused, tt.refused, briefs(s.Problems))
			}
			if !tt.refused && len(s.Problems) > 0 {
				t.Errorf("problems: %v", briefs(s.Problems))
			}
		})
	}
}

// BenchmarkBuildLargeAuthorizationPolicy measures reading one
// 10,000-rule AuthorizationPolicy from scratch (parse, convert, decode,
// validate), as meshd does when that file changes.
//
//	go test -run '^$' -bench BuildLargeAuthorizationPolicy -benchmem ./discovery/file/
func BenchmarkBuildLargeAuthorizationPolicy(b *testing.B) {
	files := []File{{Path: "big.yaml", Data: largeAuthorizationPolicy(10_000)}}
	b.ReportAllocs()
	for b.Loop() {
		if s := Build(files, Options{}); len(s.Problems) > 0 {
			b.Fatal(s.Problems[0])
		}
	}
}
