package harness

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// SPIFFE IDs of the example's identities.
const (
	GatewayID = "spiffe://cluster.local/ns/default/sa/product-gateway"
	TesterID  = "spiffe://cluster.local/ns/default/sa/tester"
)

// Targets of the example's services.
const (
	ProductXDS = "xds:///product.default.svc.cluster.local:8080"
	StockXDS   = "xds:///stock.default.svc.cluster.local:8080"
	GatewayXDS = "xds:///product-gateway.default.svc.cluster.local:8080"
)

// Policy manifests the scenarios write into the config dir.
const (
	PolicyStrict = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: default
spec:
  mtls:
    mode: STRICT
`
	PolicyStockLegacyPort = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: stock-legacy-port
  namespace: default
spec:
  selector:
    matchLabels:
      app: stock
  mtls:
    mode: STRICT
  portLevelMtls:
    8081:
      mode: DISABLE
`
	RuleProductPlaintext = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: product-plaintext
  namespace: default
spec:
  host: product.default.svc.cluster.local
  trafficPolicy:
    tls:
      mode: DISABLE
`
	// PolicyDenyAll is Istio's allow-nothing: an empty spec denies every
	// request to the namespace's workloads.
	PolicyDenyAll = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-nothing
  namespace: default
spec: {}
`
	// PolicyAuthz is deny-all plus the rules that open it up again.
	PolicyAuthz = PolicyDenyAll + "---\n" + `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-gateway-read-product
  namespace: default
spec:
  selector:
    matchLabels:
      app: product
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/product-gateway"]
    to:
    - operation:
        paths: ["/demo.v1.Product/GetProduct"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-product-writes
  namespace: default
spec:
  selector:
    matchLabels:
      app: product
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/demo.v1.Product/UpdateProduct"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-tester-to-gateway
  namespace: default
spec:
  selector:
    matchLabels:
      app: product-gateway
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/tester"]
`
)

// File names the scenarios use in the config dir.
const (
	FileStrict    = "demo-peer-authentication-strict.yaml"
	FilePortLevel = "demo-peer-authentication-stock.yaml"
	FileRule      = "demo-destination-rule.yaml"
	FileAuthz     = "demo-authorization.yaml"
)

// Row is one line of the demo's table.
type Row struct {
	Scenario, Check, Expected, Observed, Peer string
	OK                                        bool
}

// Check is one call and what it must show.
type Check struct {
	Name, Expected string
	Call           Call
	// Judge decides whether r is the expected outcome and describes it.
	Judge func(r Result) (observed, peer string, ok bool)
}

// Scenario changes the config dir, then runs its checks. Run, when set,
// replaces the checks (for scenarios that observe over time).
type Scenario struct {
	Name   string
	Write  map[string]string
	Remove []string
	Checks []Check
	Run    func(ctx context.Context, m *Mesh) []Row
	// Explain adds, to the row of the check of that name, a note from
	// meshd's view of the policies.
	Explain map[string]func(ctx context.Context, m *Mesh) string
}

// Converge bounds how long a check retries while a change propagates.
var Converge = 15 * time.Second

// RunScenario applies s and runs its checks, retrying each until it shows
// the expected outcome or Converge passes; the row holds the last
// observation either way.
func (m *Mesh) RunScenario(ctx context.Context, s Scenario) []Row {
	for _, name := range s.Remove {
		if err := m.RemoveFile(name); err != nil {
			return []Row{{Scenario: s.Name, Check: "remove " + name, Observed: err.Error()}}
		}
	}
	for name, content := range s.Write {
		if err := m.WriteFile(name, content); err != nil {
			return []Row{{Scenario: s.Name, Check: "write " + name, Observed: err.Error()}}
		}
	}
	if s.Run != nil {
		return s.Run(ctx, m)
	}
	var rows []Row
	for _, c := range s.Checks {
		row := m.runCheck(ctx, s.Name, c)
		if explain := s.Explain[c.Name]; explain != nil {
			row.Observed += " [" + explain(ctx, m) + "]"
		}
		rows = append(rows, row)
	}
	return rows
}

func (m *Mesh) runCheck(ctx context.Context, scenario string, c Check) Row {
	row := m.CheckUntil(ctx, c, Converge)
	row.Scenario = scenario
	return row
}

// CheckUntil makes c's call until c.Judge accepts the result or within
// passes; the row holds the last observation either way. within 0 makes
// the call exactly once.
func (m *Mesh) CheckUntil(ctx context.Context, c Check, within time.Duration) Row {
	row := Row{Check: c.Name, Expected: c.Expected}
	deadline := time.Now().Add(within)
	for {
		r, err := m.Call(ctx, c.Call)
		if err != nil {
			row.Observed, row.Peer, row.OK = "client error: "+err.Error(), "", false
		} else {
			row.Observed, row.Peer, row.OK = c.Judge(r)
		}
		if row.OK || time.Now().After(deadline) || ctx.Err() != nil {
			return row
		}
		select {
		case <-ctx.Done():
			return row
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// outcome renders a call's result in a few words.
func outcome(r Result) string {
	if r.OK {
		return "OK"
	}
	msg := r.Message
	if len(msg) > 90 {
		msg = msg[:87] + "..."
	}
	return r.Code + ": " + msg
}

func peerText(p string) string {
	if p == "" {
		return "(plaintext)"
	}
	return p
}

// Succeeds expects an OK call whose server saw peer ("" = plaintext).
func Succeeds(peer string) func(Result) (string, string, bool) {
	return func(r Result) (string, string, bool) {
		if !r.OK {
			return outcome(r), "", false
		}
		return "OK", peerText(r.PeerSeenByServer), r.PeerSeenByServer == peer
	}
}

// Fails expects a refused call: code, or any failure when code is "".
func Fails(code string) func(Result) (string, string, bool) {
	return func(r Result) (string, string, bool) {
		if r.OK {
			return "OK (should have failed)", peerText(r.PeerSeenByServer), false
		}
		return outcome(r), "", code == "" || r.Code == code
	}
}

// FailsNaming expects code with msg in the status message.
func FailsNaming(code, msg string) func(Result) (string, string, bool) {
	return func(r Result) (string, string, bool) {
		obs, peer, ok := Fails(code)(r)
		return obs, peer, ok && strings.Contains(r.Message, msg)
	}
}

// Annotated adds a note to the observation (e.g. which policy decided).
func Annotated(note string, j func(Result) (string, string, bool)) func(Result) (string, string, bool) {
	return func(r Result) (string, string, bool) {
		obs, peer, ok := j(r)
		return obs + " [" + note + "]", peer, ok
	}
}

// ViaGateway judges what the gateway's own call (demo.v1.Gateway/Call)
// returned, after checking that the call to the gateway itself succeeded.
func ViaGateway(j func(Result) (string, string, bool)) func(Result) (string, string, bool) {
	return func(r Result) (string, string, bool) {
		if !r.OK {
			return "calling the gateway: " + outcome(r), "", false
		}
		return j(r.Leg("call"))
	}
}

// GatewayFanOut expects demo.v1.Gateway/GetProduct to reach product and
// stock, both seeing the gateway's identity.
func GatewayFanOut(r Result) (string, string, bool) {
	if !r.OK {
		return "calling the gateway: " + outcome(r), "", false
	}
	p, s := r.Leg("product"), r.Leg("stock")
	obs := fmt.Sprintf("product %s, stock %s", outcome(p), outcome(s))
	return obs, peerText(p.PeerSeenByServer), p.OK && s.OK && p.PeerSeenByServer == GatewayID && s.PeerSeenByServer == GatewayID
}

// DemoScenarios are the seeds' walk-through, scenarios 1-6 of issue 5.
func DemoScenarios() []Scenario {
	fromTester := func(target, method string) Call { return Call{From: Tester, Target: target, Method: method} }
	fromOutside := func(target, method string) Call { return Call{From: Outside, Target: target, Method: method} }
	asGateway := func(target, method string) Call {
		return Call{From: Tester, Target: GatewayXDS, Method: "demo.v1.Gateway/Call", RelayTarget: target, RelayMethod: method}
	}
	gatewayGet := fromTester(GatewayXDS, "demo.v1.Gateway/GetProduct")
	return []Scenario{
		{
			Name: "1 PERMISSIVE (no policy)",
			Checks: []Check{
				{"gateway → product, stock (in mesh)", "OK over mTLS", gatewayGet, GatewayFanOut},
				{"curl (test, no proxy) → product", "OK in plaintext", fromOutside(Product.IP+":8080", "demo.v1.Product/GetProduct"), Succeeds("")},
			},
		},
		{
			Name:  "2 namespace STRICT (live)",
			Write: map[string]string{FileStrict: PolicyStrict},
			Checks: []Check{
				// The check that must change goes first: once it holds,
				// the new policy has arrived.
				{"curl (test, no proxy) → product", "refused", fromOutside(Product.IP+":8080", "demo.v1.Product/GetProduct"), Fails("Unavailable")},
				{"gateway → product, stock (in mesh)", "OK over mTLS", gatewayGet, GatewayFanOut},
				// The caller scenario 4's DestinationRule changes works
				// before it: the failure there is the rule's doing.
				{"tester → product (in mesh)", "OK over mTLS", fromTester(ProductXDS, "demo.v1.Product/GetProduct"), Succeeds(TesterID)},
			},
		},
		{
			Name:  "3 port 8081 DISABLE in STRICT",
			Write: map[string]string{FilePortLevel: PolicyStockLegacyPort},
			Checks: []Check{
				{"curl → stock:8081", "OK in plaintext", fromOutside(Stock.IP+":8081", "demo.v1.Stock/GetStock"), Succeeds("")},
				{"curl → stock:8080", "refused", fromOutside(Stock.IP+":8080", "demo.v1.Stock/GetStock"), Fails("Unavailable")},
			},
		},
		{
			Name:  "4 DestinationRule tls DISABLE → STRICT",
			Write: map[string]string{FileRule: RuleProductPlaintext},
			Checks: []Check{
				{"tester → product (client sends plaintext)", "refused", fromTester(ProductXDS, "demo.v1.Product/GetProduct"), Fails("Unavailable")},
			},
		},
		{
			Name:   "5a deny-all",
			Remove: []string{FileRule},
			Write:  map[string]string{FileAuthz: PolicyDenyAll},
			Checks: []Check{
				{"tester → product GetProduct", "PermissionDenied", fromTester(ProductXDS, "demo.v1.Product/GetProduct"), Fails("PermissionDenied")},
				{"tester → gateway GetProduct", "PermissionDenied", gatewayGet, Fails("PermissionDenied")},
			},
		},
		{
			Name:  "5b + ALLOW gateway read",
			Write: map[string]string{FileAuthz: PolicyAuthz},
			Checks: []Check{
				{"gateway → product GetProduct", "OK, gateway identity", asGateway(ProductXDS, "demo.v1.Product/GetProduct"), ViaGateway(Succeeds(GatewayID))},
				{"tester → product GetProduct", "PermissionDenied", fromTester(ProductXDS, "demo.v1.Product/GetProduct"), Fails("PermissionDenied")},
				{"gateway → product UpdateProduct", "PermissionDenied by deny-product-writes", asGateway(ProductXDS, "demo.v1.Product/UpdateProduct"),
					ViaGateway(FailsNaming("PermissionDenied", "deny-product-writes"))},
			},
			// gRPC names a DENY policy that matched, but not the ALLOW
			// policies that did not: say which, from meshd's view.
			Explain: map[string]func(context.Context, *Mesh) string{
				"tester → product GetProduct": func(ctx context.Context, m *Mesh) string {
					return m.ExplainAllow(ctx, "default/product-0", TesterID)
				},
			},
		},
		{
			Name:   "6 certificate rotation",
			Remove: []string{FileAuthz},
			Run:    rotation,
		},
	}
}

// rotation calls the gateway repeatedly until its certificate has rotated
// twice. Each call is a new connection, so the serial the client sees in
// the handshake is the certificate the gateway serves at that moment. The
// other direction is checked too: the gateway calls product on a new
// connection each time, and product reports the serial of the client
// certificate it saw, which must rotate as well.
func rotation(ctx context.Context, m *Mesh) []Row {
	const name = "6 certificate rotation"
	row := Row{Scenario: name, Check: "tester → gateway → product, stock, over time", Expected: "all OK across ≥2 rotations"}
	// Let the authorization removal converge first.
	first := m.runCheck(ctx, name, Check{Call: Call{From: Tester, Target: GatewayXDS, Method: "demo.v1.Gateway/GetProduct"}, Judge: GatewayFanOut})
	if !first.OK {
		row.Observed = "before rotation: " + first.Observed
		return []Row{row}
	}
	var gwSerials, prodSerials, seenByProduct []string
	var changedAt []time.Time // when each new gateway serial was first seen
	calls, failures := 0, 0
	var lastFailure string
	deadline := time.Now().Add(2*m.opts.CertTTL + 10*time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil && (len(gwSerials) < 3 || len(seenByProduct) < 3) {
		r, err := m.Call(ctx, Call{From: Tester, Target: GatewayXDS, Method: "demo.v1.Gateway/GetProduct"})
		calls++
		obs, peer, ok := "", "", false
		if err == nil {
			obs, peer, ok = GatewayFanOut(r)
		} else {
			obs = err.Error()
		}
		if !ok {
			failures++
			lastFailure = obs
		} else {
			row.Peer = peer
			if n := len(gwSerials); len(appendNew(gwSerials, r.ServerCertSerial)) > n {
				changedAt = append(changedAt, time.Now())
			}
			gwSerials = appendNew(gwSerials, r.ServerCertSerial)
			ps, _ := r.Leg("product").Answer["server_cert_serial"].(string)
			prodSerials = appendNew(prodSerials, ps)
		}
		fresh, err := m.Call(ctx, Call{From: Tester, Target: GatewayXDS, Method: "demo.v1.Gateway/Call",
			RelayTarget: ProductXDS, RelayMethod: "demo.v1.Product/GetProduct", RelayFresh: true})
		calls++
		leg := fresh.Leg("call")
		if err != nil || !fresh.OK || !leg.OK || leg.PeerSeenByServer != GatewayID {
			failures++
			if err != nil {
				lastFailure = err.Error()
			} else {
				lastFailure = "gateway → product on a new connection: " + outcome(leg)
			}
		} else {
			s, _ := leg.Answer["peer_cert_serial"].(string)
			seenByProduct = appendNew(seenByProduct, s)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	row.Observed = fmt.Sprintf("%d/%d calls OK; gateway cert %s; product cert %s; gateway's client cert as product saw it %s",
		calls-failures, calls, short(gwSerials), short(prodSerials), short(seenByProduct))
	if failures > 0 {
		row.Observed += "; last failure: " + lastFailure
	}
	// Renewal happens at half the lifetime. Changes much faster than that
	// are not rotation but a renewal loop, which must not pass.
	tooFast := false
	for i := 2; i < len(changedAt); i++ {
		gap := changedAt[i].Sub(changedAt[i-1])
		row.Observed += fmt.Sprintf("; rotation after %s", gap.Round(time.Second))
		if gap < m.opts.CertTTL/4 {
			tooFast = true
		}
	}
	if tooFast {
		row.Observed += fmt.Sprintf(" (faster than a quarter of the %s lifetime: a renewal loop, not rotation)", m.opts.CertTTL)
	}
	row.OK = failures == 0 && len(gwSerials) >= 3 && len(seenByProduct) >= 3 && !tooFast
	return []Row{row}
}

func appendNew(list []string, s string) []string {
	if s == "" || (len(list) > 0 && list[len(list)-1] == s) {
		return list
	}
	return append(list, s)
}

// short renders serials abbreviated, oldest first.
func short(serials []string) string {
	out := make([]string, len(serials))
	for i, s := range serials {
		if len(s) > 8 {
			s = s[:8]
		}
		out[i] = s
	}
	return strings.Join(out, " → ")
}

// PrintTable writes rows as an aligned table.
func PrintTable(w io.Writer, rows []Row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tCHECK\tEXPECTED\tOBSERVED\tPEER SEEN BY SERVER\tOK")
	for _, r := range rows {
		ok := "FAIL"
		if r.OK {
			ok = "ok"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Scenario, r.Check, r.Expected, r.Observed, r.Peer, ok)
	}
	_ = tw.Flush()
}
