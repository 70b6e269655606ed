package policy

import (
	"maps"
	"slices"
	"strings"
)

// UnmatchedSelectors warns about every PeerAuthentication,
// AuthorizationPolicy and RequestAuthentication whose selector selects no
// workload. Such a policy is valid, but it protects nothing, and a typo in
// a label is the usual cause, so the user is told. Which workloads a
// selector may select follows the rules above:
//
//   - A policy selects workloads of its own namespace; an
//     AuthorizationPolicy or RequestAuthentication in rootNamespace selects
//     workloads of every namespace.
//   - A PeerAuthentication with a selector in rootNamespace applies to no
//     workload at all (see ComposePeerAuthentication), whatever it
//     matches, and gets a warning saying so.
//   - A policy without a selector (or with empty matchLabels) applies to
//     its whole namespace, or the mesh, by design: it is not checked.
//
// The result follows the order of the set.
func (s *Set) UnmatchedSelectors(rootNamespace string, workloads []Workload) Problems {
	ix := newLabelIndex(workloads)
	var out Problems
	for _, p := range s.PeerAuthentications {
		switch {
		case p == nil || p.Spec.Selector.IsEmpty():
		case p.Namespace == rootNamespace:
			out = append(out, warnf(&p.Meta, "spec.selector",
				"applies to no workload: a PeerAuthentication with a selector in the root namespace %q is ignored "+
					"(as in Istio); move it to the workload's namespace or remove the selector", rootNamespace))
		default:
			out = ix.check(out, &p.Meta, p.Spec.Selector, false)
		}
	}
	for _, p := range s.AuthorizationPolicies {
		if p != nil && !p.Spec.Selector.IsEmpty() {
			out = ix.check(out, &p.Meta, p.Spec.Selector, p.Namespace == rootNamespace)
		}
	}
	for _, p := range s.RequestAuthentications {
		if p != nil && !p.Spec.Selector.IsEmpty() {
			out = ix.check(out, &p.Meta, p.Spec.Selector, p.Namespace == rootNamespace)
		}
	}
	return out
}

// labelIndex finds the workloads carrying one label, so that a selector
// is tried on the workloads that have its first label rather than on all.
type labelIndex struct {
	workloads []Workload
	// byLabel maps namespace, key and value to workloads; the namespace
	// "" (never a real one) holds every namespace's.
	byLabel map[[3]string][]int
}

func newLabelIndex(ws []Workload) *labelIndex {
	ix := &labelIndex{workloads: ws, byLabel: map[[3]string][]int{}}
	for i, w := range ws {
		for k, v := range w.Labels {
			ix.byLabel[[3]string{w.Namespace, k, v}] = append(ix.byLabel[[3]string{w.Namespace, k, v}], i)
			ix.byLabel[[3]string{"", k, v}] = append(ix.byLabel[[3]string{"", k, v}], i)
		}
	}
	return ix
}

// check appends a warning about m unless sel selects a workload in m's
// namespace, or in any namespace when meshWide. sel is not empty.
func (ix *labelIndex) check(out Problems, m *Meta, sel *WorkloadSelector, meshWide bool) Problems {
	keys := slices.Sorted(maps.Keys(sel.MatchLabels))
	ns, where := m.Namespace, "in namespace "+m.Namespace
	if meshWide {
		ns, where = "", "in any namespace"
	}
	for _, i := range ix.byLabel[[3]string{ns, keys[0], sel.MatchLabels[keys[0]]}] {
		if sel.Matches(ix.workloads[i].Labels) {
			return out
		}
	}
	labels := make([]string, len(keys))
	for i, k := range keys {
		labels[i] = k + "=" + sel.MatchLabels[k]
	}
	return append(out, warnf(m, "spec.selector",
		"selects no workload: no pod %s has the labels %s, so the policy applies to nothing until one does "+
			"(check the labels' spelling)", where, strings.Join(labels, ",")))
}
