// Package e2e holds minimesh's end-to-end tests for proxyless gRPC
// workloads. They build meshd, meshctl and the demo app once, then run the
// example mesh as real processes (meshd, workloads under `meshctl agent`,
// one-shot callers) on a loopback /24 of their own, and check with real
// calls that policies do what Istio users expect: the demo's walk-through,
// convergence of a live change, a meshd restart, a bad policy file, and a
// certificate from another CA.
//
// The tests live in _test.go files; the process and call machinery is in
// e2e/harness, shared with `make demo`.
package e2e
