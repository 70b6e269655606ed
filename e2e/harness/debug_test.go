package harness

import (
	"encoding/json"
	"testing"
)

func TestCollectAllowRules(t *testing.T) {
	const dump = `{"configs": [{"typedConfig": {"rules": {"action": "ALLOW", "policies": {
		"allow-gateway": {"principals": [
			{"authenticated": {"principalName": {"exact": "spiffe://cluster.local/ns/default/sa/gateway"}}},
			{"orIds": {"ids": [{"authenticated": {"principalName": {"prefix": "spiffe://cluster.local/ns/prod/"}}}]}}
		]},
		"allow-suffix": {"principals": [{"authenticated": {"principalName": {"suffix": "/sa/batch"}}}]},
		"allow-regex": {"principals": [{"authenticated": {"principalName": {"safeRegex": {"regex": ".*/sa/x"}}}}]}
	}}}}, {"typedConfig": {"rules": {"action": "DENY", "policies": {
		"deny-all": {"principals": [{"authenticated": {"principalName": {"exact": "spiffe://cluster.local/ns/default/sa/tester"}}}]}
	}}}}]}`
	var v any
	if err := json.Unmarshal([]byte(dump), &v); err != nil {
		t.Fatal(err)
	}
	allow := map[string][]principal{}
	collectAllowRules(v, allow)
	if _, ok := allow["deny-all"]; ok {
		t.Error("a DENY policy was read as an ALLOW rule")
	}
	for _, tt := range []struct {
		rule, caller string
		want         bool
	}{
		{"allow-gateway", "spiffe://cluster.local/ns/default/sa/gateway", true},
		{"allow-gateway", "spiffe://cluster.local/ns/prod/sa/anything", true},
		{"allow-gateway", "spiffe://cluster.local/ns/default/sa/tester", false},
		{"allow-suffix", "spiffe://cluster.local/ns/jobs/sa/batch", true},
		{"allow-suffix", "spiffe://cluster.local/ns/jobs/sa/batcher", false},
		{"allow-regex", "spiffe://cluster.local/ns/a/sa/x", false}, // not evaluated: never claimed
	} {
		admitted := false
		for _, p := range allow[tt.rule] {
			admitted = admitted || p.matches(tt.caller)
		}
		if admitted != tt.want {
			t.Errorf("%s admits %s: %v, want %v (principals %v)", tt.rule, tt.caller, admitted, tt.want, allow[tt.rule])
		}
	}
	var shown []string
	for _, p := range allow["allow-gateway"] {
		shown = append(shown, p.String())
	}
	if want := []string{"spiffe://cluster.local/ns/default/sa/gateway", "spiffe://cluster.local/ns/prod/*"}; len(shown) != 2 || shown[0] != want[0] || shown[1] != want[1] {
		t.Errorf("allow-gateway shows %q, want %q", shown, want)
	}
}
