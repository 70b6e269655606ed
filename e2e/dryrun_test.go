package e2e

import (
	"testing"
	"time"

	"github.com/minimesh/minimesh/e2e/harness"
)

// dryRunDeny is a DENY of product's UpdateProduct for every caller, with
// Istio's istio.io/dry-run annotation set to value, and in the same file
// an enforced DENY of GetProduct named after value: once a GetProduct call
// is denied naming it, product runs a configuration translated from this
// file, so UpdateProduct's outcome is not merely a push that has not
// arrived yet. (The marker needs a method product has: gRPC-Go answers an
// unknown method with Unimplemented before its RBAC runs.)
func dryRunDeny(value string) string {
	return denyProductPath("trial-deny-writes", "/demo.v1.Product/UpdateProduct",
		"  annotations:\n    istio.io/dry-run: \""+value+"\"\n") +
		"---\n" + denyProductPath("marker-"+value, "/demo.v1.Product/GetProduct", "")
}

// denyProductPath is a DENY AuthorizationPolicy for one path of product;
// metadata is extra lines under metadata (indented two spaces).
func denyProductPath(name, path, metadata string) string {
	return `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ` + name + `
  namespace: default
` + metadata + `spec:
  selector:
    matchLabels:
      app: product
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["` + path + `"]
`
}

// TestDryRunDenyNeverDenies: in Istio a DENY policy annotated
// istio.io/dry-run: "true" never affects traffic. Real gRPC calls to the
// method it names keep succeeding once the proxyless server runs the
// configuration that holds it; the same policy with "false" denies them,
// which shows the calls do match the rule.
func TestDryRunDenyNeverDenies(t *testing.T) {
	t.Parallel()
	m := startMesh(t, meshOptions{})
	ctx := t.Context()
	const file = "trial-deny.yaml"
	update := fromTester(harness.ProductXDS, "demo.v1.Product/UpdateProduct")
	marker := fromTester(harness.ProductXDS, getProduct)

	writeFile(t, m, file, dryRunDeny("true"))
	requireRow(t, m.CheckUntil(ctx, harness.Check{Name: "tester → product GetProduct (marker)", Expected: "PermissionDenied by marker-true",
		Call: marker, Judge: harness.FailsNaming("PermissionDenied", "marker-true")}, 20*time.Second))
	for range 5 {
		checkRow(t, m.CheckUntil(ctx, harness.Check{Name: "tester → product UpdateProduct (dry-run DENY)", Expected: "OK, tester identity",
			Call: update, Judge: harness.Succeeds(harness.TesterID)}, 0))
	}

	writeFile(t, m, file, dryRunDeny("false"))
	requireRow(t, m.CheckUntil(ctx, harness.Check{Name: "tester → product GetProduct (marker)", Expected: "PermissionDenied by marker-false",
		Call: marker, Judge: harness.FailsNaming("PermissionDenied", "marker-false")}, 20*time.Second))
	checkRow(t, m.CheckUntil(ctx, harness.Check{Name: "tester → product UpdateProduct (enforced DENY)", Expected: "PermissionDenied by trial-deny-writes",
		Call: update, Judge: harness.FailsNaming("PermissionDenied", "trial-deny-writes")}, 0))
}
