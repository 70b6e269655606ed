package e2e

import (
	"strings"
	"testing"

	"github.com/minimesh/minimesh/e2e/harness"
)

// TestAutoMTLSFollowsServerMode is issue 14's first item with real gRPC
// traffic: a client in the mesh, with no DestinationRule, sends plaintext
// to a server whose effective PeerAuthentication for the port is DISABLE,
// whichever level says so, and mTLS where the server accepts it. Before,
// in-mesh clients kept sending mTLS to such a server, whose listener only
// had a plaintext chain, and every call failed.
func TestAutoMTLSFollowsServerMode(t *testing.T) {
	t.Parallel()
	m := startMesh(t, meshOptions{})
	fromTester := func(target, method string) harness.Call {
		return harness.Call{From: harness.Tester, Target: target, Method: method}
	}
	const (
		fileNamespace = "automtls-namespace.yaml"
		stockLegacy   = "xds:///stock.default.svc.cluster.local:8081"
	)
	namespaceDisable := strings.Replace(harness.PolicyStrict, "mode: STRICT", "mode: DISABLE", 1)
	for _, s := range []harness.Scenario{
		{
			Name:  "namespace DISABLE",
			Write: map[string]string{fileNamespace: namespaceDisable},
			Checks: []harness.Check{
				{Name: "tester → product", Expected: "OK in plaintext",
					Call: fromTester(harness.ProductXDS, "demo.v1.Product/GetProduct"), Judge: harness.Succeeds("")},
				{Name: "gateway → product, stock", Expected: "OK in plaintext",
					Call: fromTester(harness.GatewayXDS, "demo.v1.Gateway/GetProduct"), Judge: plaintextFanOut},
			},
		},
		{
			Name:  "namespace STRICT, stock port 8081 DISABLE",
			Write: map[string]string{fileNamespace: harness.PolicyStrict, harness.FilePortLevel: harness.PolicyStockLegacyPort},
			Checks: []harness.Check{
				// The check that must change goes first.
				{Name: "tester → product", Expected: "OK over mTLS",
					Call: fromTester(harness.ProductXDS, "demo.v1.Product/GetProduct"), Judge: harness.Succeeds(harness.TesterID)},
				{Name: "tester → stock:8081", Expected: "OK in plaintext",
					Call: fromTester(stockLegacy, "demo.v1.Stock/GetStock"), Judge: harness.Succeeds("")},
				{Name: "tester → stock:8080", Expected: "OK over mTLS",
					Call: fromTester(harness.StockXDS, "demo.v1.Stock/GetStock"), Judge: harness.Succeeds(harness.TesterID)},
			},
		},
	} {
		t.Run(s.Name, func(t *testing.T) {
			for _, r := range m.RunScenario(t.Context(), s) {
				t.Logf("%-28s expected %-18s observed %s, peer %s", r.Check, r.Expected, r.Observed, r.Peer)
				checkRow(t, r)
			}
		})
	}
}

// plaintextFanOut expects the gateway's fan-out to reach product and
// stock in plaintext (neither server sees a peer identity).
func plaintextFanOut(r harness.Result) (string, string, bool) {
	if !r.OK {
		return "calling the gateway: " + r.Code + " " + r.Message, "", false
	}
	p, s := r.Leg("product"), r.Leg("stock")
	ok := p.OK && s.OK && p.PeerSeenByServer == "" && s.PeerSeenByServer == ""
	return "product " + legText(p) + ", stock " + legText(s), "", ok
}

func legText(r harness.Result) string {
	if !r.OK {
		return r.Code
	}
	if r.PeerSeenByServer == "" {
		return "OK (plaintext)"
	}
	return "OK as " + r.PeerSeenByServer
}
