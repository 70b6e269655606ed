package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minimesh/minimesh/e2e/harness"
)

// TestServiceRemovedAndRestored deletes the stock Service while the
// gateway's long-lived gRPC-Go xDS client holds its listener, route,
// cluster and endpoints, then restores it. The client drops the stock
// names from its requests; meshd must take that without the client
// rejecting anything, and send stock's endpoints again when the service
// returns (a client that dropped an assignment no longer holds it). The
// tester's rows use a new client per call: they show that a client
// starting from nothing converges either way.
func TestServiceRemovedAndRestored(t *testing.T) {
	t.Parallel()
	m := startMesh(t, meshOptions{})
	ctx := t.Context()
	orig, err := os.ReadFile(filepath.Join(m.ConfigDir(), "stock.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(string(orig), "\n---\n")
	if len(docs) < 2 || !strings.Contains(docs[0], "kind: Service") {
		t.Fatalf("stock.yaml no longer starts with the stock Service; the test must be updated")
	}
	calls := []harness.Check{
		{Name: "gateway → stock", Call: asGateway(harness.StockXDS, getStock)},
		{Name: "tester → stock", Call: fromTester(harness.StockXDS, getStock)},
	}
	judge := map[bool]func(string) func(harness.Result) (string, string, bool){
		true: func(id string) func(harness.Result) (string, string, bool) { return harness.Succeeds(id) },
		// A client holding the listener loses it (Unavailable); a new
		// one waits for a listener that does not exist until its
		// deadline. Anything else (a policy refusal, Internal) is wrong.
		false: func(string) func(harness.Result) (string, string, bool) {
			return func(r harness.Result) (string, string, bool) {
				obs, peer, _ := harness.Fails("")(r)
				return obs, peer, !r.OK && (r.Code == "Unavailable" || r.Code == "DeadlineExceeded")
			}
		},
	}
	expect := func(up bool) {
		t.Helper()
		for i, c := range calls {
			id := harness.TesterID
			if i == 0 {
				id = harness.GatewayID
			}
			c.Judge = judge[up](id)
			if i == 0 {
				c.Judge = relayedBy(c.Judge)
			}
			if up {
				c.Expected = "OK"
			} else {
				c.Expected = "a failure: the service is gone"
			}
			requireRow(t, m.CheckUntil(ctx, c, 20*time.Second))
		}
	}

	expect(true)
	writeFile(t, m, "stock.yaml", strings.Join(docs[1:], "\n---\n"))
	expect(false)
	writeFile(t, m, "stock.yaml", string(orig))
	expect(true)

	status, err := m.SyncStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gateway := false
	for _, p := range status.Proxies {
		gateway = gateway || strings.HasPrefix(p.Workload, "default/product-gateway")
		for _, st := range p.Streams {
			for typ, ts := range st.Types {
				if ts.Nacked != "" {
					t.Errorf("%s stream %d rejected %s version %s: %s", p.NodeID, st.ID, typ, ts.Nacked, ts.NackError)
				}
			}
		}
	}
	if !gateway {
		t.Errorf("the gateway is not among the connected proxies (%d listed); its streams were not checked for NACKs", len(status.Proxies))
	}
}
