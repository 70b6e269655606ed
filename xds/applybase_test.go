package xds

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func bruteApply(old map[string]string, changed []*assignment, removed []string) map[string]string {
	out := maps.Clone(old)
	if out == nil {
		out = map[string]string{}
	}
	for _, a := range changed {
		out[a.name] = a.hash
	}
	for _, n := range removed {
		delete(out, n)
	}
	return out
}

// applyToBase, which looks for a live base without copying, agrees with
// applying the change to a copy, on random inputs of the kind respondDelta
// makes (changed and removed disjoint, unique and sorted; removed names
// held), and keeps each base's sum right.
func TestApplyToBaseMatchesAFreshMap(t *testing.T) {
	c := newAssignmentCache("p-")
	r := rand.New(rand.NewPCG(1, 2))
	var live []*heldBase
	live = append(live, nil)
	for iter := 0; iter < 20000; iter++ {
		from := live[r.IntN(len(live))]
		var old map[string]string
		if from != nil {
			old = from.versions
		}
		var changed []*assignment
		var removed []string
		for i := 0; i < 6; i++ {
			n := fmt.Sprintf("n%d", r.IntN(6))
			_, inOld := old[n]
			switch r.IntN(3) {
			case 0:
				if !slices.ContainsFunc(changed, func(a *assignment) bool { return a.name == n }) && !slices.Contains(removed, n) {
					changed = append(changed, &assignment{name: n, hash: fmt.Sprintf("v%d", r.IntN(3))})
				}
			case 1:
				if inOld && !slices.ContainsFunc(changed, func(a *assignment) bool { return a.name == n }) && !slices.Contains(removed, n) {
					removed = append(removed, n)
				}
			}
		}
		slices.SortFunc(changed, func(a, b *assignment) int { return strings.Compare(a.name, b.name) })
		slices.Sort(removed)
		b := c.applyToBase(from, changed, removed)
		want := bruteApply(old, changed, removed)
		if !maps.Equal(b.versions, want) {
			t.Fatalf("iter %d: from %v changed %v removed %v: got %v want %v", iter, old, changed, removed, b.versions, want)
		}
		if b.sum != heldSum(b.versions) {
			t.Fatalf("iter %d: sum mismatch", iter)
		}
		live = append(live, b)
		if len(live) > 200 {
			live = live[len(live)-200:]
		}
	}
}

// respondDelta never both changes and removes a name, but applyToBase
// reads such a name as removed rather than mistake another base for its
// result.
func TestApplyToBaseNameBothChangedAndRemoved(t *testing.T) {
	c := newAssignmentCache("p-")
	with := c.applyToBase(nil, []*assignment{{name: "a", hash: "1"}, {name: "x", hash: "1"}}, nil)
	from := c.applyToBase(nil, []*assignment{{name: "a", hash: "1"}}, nil)
	got := c.applyToBase(from, []*assignment{{name: "x", hash: "1"}}, []string{"x"})
	if got == with || !maps.Equal(got.versions, map[string]string{"a": "1"}) {
		t.Errorf("from {a}, x changed and removed: got %v, want {a}", got.versions)
	}
	if got.sum != heldSum(got.versions) {
		t.Errorf("the sum of %v is wrong", got.versions)
	}
}
