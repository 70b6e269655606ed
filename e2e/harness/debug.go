package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/minimesh/minimesh/policy"
	"github.com/minimesh/minimesh/xds"
)

// DebugJSON fetches one of meshd's debug endpoints (e.g. "/debug/syncz")
// and decodes its JSON body into v.
func (m *Mesh) DebugJSON(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.MonitoringURL()+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("asking meshd for %s: %w", path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading meshd's %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("meshd answered %s for %s: %s", resp.Status, path, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("meshd's %s is not the expected JSON: %w", path, err)
	}
	return nil
}

// SyncStatus is meshd's /debug/syncz.
func (m *Mesh) SyncStatus(ctx context.Context) (xds.SyncStatus, error) {
	var s xds.SyncStatus
	err := m.DebugJSON(ctx, "/debug/syncz", &s)
	return s, err
}

// ModelProblems are the problems of meshd's current model (/debug/model):
// the objects and files it skipped or accepted with warnings.
func (m *Mesh) ModelProblems(ctx context.Context) (policy.Problems, error) {
	var snap struct {
		Problems policy.Problems `json:"problems"`
	}
	err := m.DebugJSON(ctx, "/debug/model", &snap)
	return snap.Problems, err
}

// ExplainAllow says, from meshd's view, why a caller with SPIFFE ID
// caller matches no ALLOW rule of a workload ("namespace/pod"): it reads
// the workload's configuration from /debug/config_dump and lists its
// ALLOW rules with the principals each admits. gRPC names a DENY rule that
// matched in its status, but not the ALLOW rules that did not.
func (m *Mesh) ExplainAllow(ctx context.Context, workload, caller string) string {
	st, err := m.SyncStatus(ctx)
	if err != nil {
		return "meshd's view unavailable: " + err.Error()
	}
	node := ""
	for _, p := range st.Proxies {
		if p.Workload == workload {
			node = p.NodeID
		}
	}
	if node == "" {
		return "meshd's view unavailable: no proxy of " + workload + " is connected"
	}
	var dump any
	if err := m.DebugJSON(ctx, "/debug/config_dump?proxy="+url.QueryEscape(node), &dump); err != nil {
		return "meshd's view unavailable: " + err.Error()
	}
	allow := map[string][]principal{} // rule name → principals it admits
	collectAllowRules(dump, allow)
	if len(allow) == 0 {
		return "meshd sends " + workload + " no ALLOW rule"
	}
	var parts []string
	admitted := false
	for _, name := range slices.Sorted(maps.Keys(allow)) {
		ps := allow[name]
		var shown []string
		for _, p := range ps {
			admitted = admitted || p.matches(caller)
			shown = append(shown, p.String())
		}
		if len(ps) == 0 {
			shown = []string{"any caller"}
		}
		parts = append(parts, name+" admits "+strings.Join(shown, ", "))
	}
	verdict := "none admits " + caller
	if admitted {
		verdict = "one admits " + caller + " by identity (the request must have failed another condition)"
	}
	return "meshd's ALLOW rules for " + workload + ": " + strings.Join(parts, "; ") + "; " + verdict
}

// principal is one principal matcher of an RBAC policy: the SPIFFE IDs
// it admits, as Envoy's StringMatcher says.
type principal struct {
	kind  string // exact, prefix, suffix, contains, or safeRegex (not evaluated)
	value string
}

func (p principal) String() string {
	switch p.kind {
	case "exact":
		return p.value
	case "prefix":
		return p.value + "*"
	case "suffix":
		return "*" + p.value
	case "contains":
		return "*" + p.value + "*"
	}
	return p.kind + " " + p.value
}

func (p principal) matches(id string) bool {
	switch p.kind {
	case "exact":
		return id == p.value
	case "prefix":
		return strings.HasPrefix(id, p.value)
	case "suffix":
		return strings.HasSuffix(id, p.value)
	case "contains":
		return strings.Contains(id, p.value)
	}
	return false // a regular expression: not evaluated here
}

// collectAllowRules finds the RBAC configurations in a config dump (JSON)
// whose action is ALLOW and records, per policy name, the principal
// matchers of its rules.
func collectAllowRules(v any, out map[string][]principal) {
	switch t := v.(type) {
	case map[string]any:
		if policies, ok := t["policies"].(map[string]any); ok {
			if action, _ := t["action"].(string); action == "" || action == "ALLOW" {
				for name, p := range policies {
					var ps []principal
					collectPrincipals(p, &ps)
					slices.SortFunc(ps, func(a, b principal) int { return strings.Compare(a.String(), b.String()) })
					out[name] = slices.Compact(ps)
				}
			}
			return
		}
		for _, c := range t {
			collectAllowRules(c, out)
		}
	case []any:
		for _, c := range t {
			collectAllowRules(c, out)
		}
	}
}

// collectPrincipals appends the principal-name matchers of a policy.
func collectPrincipals(v any, out *[]principal) {
	switch t := v.(type) {
	case map[string]any:
		if pn, ok := t["principalName"].(map[string]any); ok {
			for _, kind := range []string{"exact", "prefix", "suffix", "contains"} {
				if value, ok := pn[kind].(string); ok {
					*out = append(*out, principal{kind, value})
				}
			}
			if re, ok := pn["safeRegex"].(map[string]any); ok {
				regex, _ := re["regex"].(string)
				*out = append(*out, principal{"safeRegex", regex})
			}
		}
		for _, c := range t {
			collectPrincipals(c, out)
		}
	case []any:
		for _, c := range t {
			collectPrincipals(c, out)
		}
	}
}
