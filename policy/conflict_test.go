package policy

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestResolvePeerAuthenticationConflicts(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	pa := func(ns, name string, admitted time.Time, selector map[string]string) *PeerAuthentication {
		p := &PeerAuthentication{Meta: Meta{Kind: KindPeerAuthentication, Namespace: ns, Name: name, Admitted: admitted}}
		if selector != nil {
			p.Spec.Selector = &WorkloadSelector{MatchLabels: selector}
		}
		return p
	}
	pods := []NamedWorkload{
		{Name: "p1", Workload: Workload{Namespace: "default", Labels: map[string]string{"app": "a", "v": "1"}}},
		{Name: "p2", Workload: Workload{Namespace: "default", Labels: map[string]string{"app": "a", "v": "2"}}},
	}
	type want struct {
		kept     []string // "ns/name"
		problems []string // "severity ns/name: text"
	}
	for _, tc := range []struct {
		name string
		in   []*PeerAuthentication
		want want
	}{
		{"one per scope: no conflict",
			[]*PeerAuthentication{pa("istio-system", "mesh", t0, nil), pa("default", "ns", t0, nil), pa("default", "wl", t0, map[string]string{"app": "a"})},
			want{kept: []string{"istio-system/mesh", "default/ns", "default/wl"}}},
		{"two namespace-wide read together: first by name, warning",
			[]*PeerAuthentication{pa("default", "b", t0, nil), pa("default", "a", t0, nil)},
			want{kept: []string{"default/a"}, problems: []string{"warning default/b: neither is older"}}},
		{"namespace-wide newcomer refused whatever its name",
			[]*PeerAuthentication{pa("default", "z", t0, nil), pa("default", "a", t0.Add(time.Second), nil)},
			want{kept: []string{"default/z"}, problems: []string{"error default/a: refused: default/z was already in force"}}},
		{"creationTimestamp beats first served",
			[]*PeerAuthentication{
				{Meta: Meta{Namespace: "default", Name: "young", CreationTimestamp: t0.Add(time.Hour), Admitted: t0}},
				{Meta: Meta{Namespace: "default", Name: "old", CreationTimestamp: t0, Admitted: t0.Add(time.Minute)}}},
			want{kept: []string{"default/old"}, problems: []string{"error default/young: refused: default/old"}}},
		{"mesh-wide in the root namespace",
			[]*PeerAuthentication{pa("istio-system", "m1", t0, nil), pa("istio-system", "m2", t0.Add(time.Second), nil)},
			want{kept: []string{"istio-system/m1"}, problems: []string{"error istio-system/m2: refused"}}},
		{"namespace-wide in different namespaces do not conflict",
			[]*PeerAuthentication{pa("default", "a", t0, nil), pa("other", "a", t0.Add(time.Second), nil)},
			want{kept: []string{"default/a", "other/a"}}},
		{"workload policies overlapping on one pod: younger warned, kept",
			[]*PeerAuthentication{pa("default", "all", t0, map[string]string{"app": "a"}), pa("default", "v1", t0.Add(time.Second), map[string]string{"v": "1"})},
			want{kept: []string{"default/all", "default/v1"}, problems: []string{"warning default/v1: does not decide pods p1: default/all"}}},
		{"workload policies selecting disjoint pods do not conflict",
			[]*PeerAuthentication{pa("default", "v1", t0, map[string]string{"v": "1"}), pa("default", "v2", t0.Add(time.Second), map[string]string{"v": "2"})},
			want{kept: []string{"default/v1", "default/v2"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kept, problems := ResolvePeerAuthenticationConflicts("istio-system", tc.in, pods)
			var got []string
			for _, p := range kept {
				got = append(got, p.Key())
			}
			if !slices.Equal(got, tc.want.kept) {
				t.Errorf("kept %v, want %v", got, tc.want.kept)
			}
			if len(problems) != len(tc.want.problems) {
				t.Fatalf("problems %v, want %d", problems, len(tc.want.problems))
			}
			for i, w := range tc.want.problems {
				sev, rest, _ := strings.Cut(w, " ")
				key, text, _ := strings.Cut(rest, ": ")
				p := problems[i]
				if string(p.Severity) != sev || p.Namespace+"/"+p.Name != key || !strings.Contains(p.Message, text) {
					t.Errorf("problem %d = %s %s/%s: %s, want %s", i, p.Severity, p.Namespace, p.Name, p.Message, w)
				}
			}
		})
	}
}
