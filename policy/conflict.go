package policy

import (
	"slices"
	"strings"
)

// NamedWorkload is a workload with its name, for messages that list pods.
type NamedWorkload struct {
	Name string
	Workload
}

// ResolvePeerAuthenticationConflicts finds PeerAuthentications that
// compete at the same scope and decides them the way Istio does: the
// oldest wins (olderFirst: creationTimestamp, then Meta.Admitted, then the
// name). Sources call it once per snapshot, so a conflict is reported
// where users look (the log, /debug/model, meshctl validate, an Event)
// rather than only inside translation.
//
//   - Mesh-wide (root namespace, no selector) and namespace-wide (no
//     selector) policies: only one can be in force per scope, so each
//     loser is refused: it is left out of the returned list and gets a
//     problem naming the winner. The problem is an error when the loser is
//     a newcomer (it arrived after the winner was in force, so refusing it
//     keeps what proxies have), and a warning when neither is older (both
//     were read at once, at startup or by meshctl validate, and the first
//     by name wins).
//   - Workload policies whose selectors both match a pod: the older one
//     decides that pod (ComposePeerAuthentication), the other still
//     applies to the pods it alone selects. The younger gets a warning
//     listing the pods it does not decide; it stays in the list.
//
// The returned list keeps the input's order.
func ResolvePeerAuthenticationConflicts(rootNamespace string, pas []*PeerAuthentication, workloads []NamedWorkload) ([]*PeerAuthentication, Problems) {
	var problems Problems
	refused := map[*PeerAuthentication]bool{}
	scopes := map[string][]*PeerAuthentication{} // "mesh" or "namespace ns" -> policies
	var withSelector []*PeerAuthentication
	for _, p := range pas {
		switch {
		case p == nil:
		case p.Spec.Selector.IsEmpty() && p.Namespace == rootNamespace:
			scopes["mesh-wide"] = append(scopes["mesh-wide"], p)
		case p.Spec.Selector.IsEmpty():
			key := "namespace-wide (" + p.Namespace + ")"
			scopes[key] = append(scopes[key], p)
		case p.Namespace != rootNamespace:
			withSelector = append(withSelector, p)
		}
	}
	for _, scope := range sortedScopeKeys(scopes) {
		ps := scopes[scope]
		if len(ps) < 2 {
			continue
		}
		winner := slices.MinFunc(ps, olderFirst)
		for _, loser := range ps {
			if loser == winner {
				continue
			}
			refused[loser] = true
			problems = append(problems, conflictProblem(winner, loser, scope))
		}
	}
	for i, a := range withSelector {
		for _, b := range withSelector[i+1:] {
			if a.Namespace != b.Namespace {
				continue
			}
			var both []string
			for _, w := range workloads {
				if w.Namespace == a.Namespace && a.Spec.Selector.Matches(w.Labels) && b.Spec.Selector.Matches(w.Labels) {
					both = append(both, w.Name)
				}
			}
			if len(both) == 0 {
				continue
			}
			winner, loser := a, b
			if olderFirst(b, a) < 0 {
				winner, loser = b, a
			}
			problems = append(problems, warnf(&loser.Meta, "spec.selector",
				"does not decide pods %s: %s selects them too and is older (creationTimestamp, then first served, then name), "+
					"and the oldest wins, as in Istio; this policy still applies to the pods only it selects",
				strings.Join(both, ", "), winner.Key()))
		}
	}
	if len(refused) == 0 {
		return pas, problems
	}
	kept := make([]*PeerAuthentication, 0, len(pas)-len(refused))
	for _, p := range pas {
		if !refused[p] {
			kept = append(kept, p)
		}
	}
	return kept, problems
}

// conflictProblem describes loser being refused in favour of winner at a
// scope where only one policy can be in force.
func conflictProblem(winner, loser *PeerAuthentication, scope string) Problem {
	newcomer := winner.CreationTimestamp.Before(loser.CreationTimestamp) || winner.Admitted.Before(loser.Admitted)
	if !newcomer {
		return warnf(&loser.Meta, "",
			"not applied: %s is at the same %s scope and only one policy can be in force there; neither is older "+
				"(both were read at once, e.g. at startup), so the first by name is in force. Remove one of them",
			winner.Key(), scope)
	}
	return errorf(&loser.Meta, "",
		"refused: %s was already in force at the same %s scope, only one policy can be in force there, "+
			"and the oldest wins, as in Istio. Remove one of them", winner.Key(), scope)
}

func sortedScopeKeys(m map[string][]*PeerAuthentication) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
