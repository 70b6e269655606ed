package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minimesh/minimesh/e2e/harness"
)

// bins are built once per test binary run, in TestMain.
var bins harness.Binaries

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root, err := harness.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "minimesh-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: cannot create a directory for the binaries:", err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	if bins, err = harness.Build(ctx, root, dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "e2e: built meshd, meshctl and the demo app in %s\n", time.Since(start).Round(100*time.Millisecond))
	return m.Run()
}

// meshOptions tune startMesh.
type meshOptions struct {
	certTTL time.Duration // meshd's --workload-cert-ttl; 0 = the harness default
}

// startMesh starts meshd on a copy of examples/mesh, on a loopback /24 no
// other mesh on this machine uses, plus product, stock and product-gateway
// under `meshctl agent`, and waits until the gateway reaches product and
// stock over mTLS. Everything is stopped when the test ends. The work
// directory (config, CA, logs) is kept, and its path logged, if the test
// failed.
func startMesh(t *testing.T, o meshOptions) *harness.Mesh {
	t.Helper()
	ctx := t.Context()
	work, err := os.MkdirTemp("", "minimesh-e2e-")
	if err != nil {
		t.Fatalf("creating a work directory: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("work directory kept for inspection: %s (process logs in %s)", work, filepath.Join(work, "logs"))
			return
		}
		_ = os.RemoveAll(work)
	})
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	loopback, err := harness.FreeLoopback()
	if err != nil {
		t.Fatal(err)
	}
	m, err := harness.Start(ctx, harness.Options{
		Bins:       bins,
		ExampleDir: filepath.Join(root, "examples", "mesh"),
		WorkDir:    work,
		CertTTL:    o.certTTL,
		Loopback:   loopback,
	})
	if err != nil {
		t.Fatalf("starting meshd: %v", err)
	}
	// Registered after the work directory's cleanup, so it runs first:
	// processes stop before their logs are judged or removed.
	t.Cleanup(m.Close)
	// Runs before Close: on failure, show what meshd thought of each
	// proxy while it still runs.
	t.Cleanup(func() {
		if t.Failed() {
			logSyncStatus(t, m)
		}
	})
	for _, w := range []harness.Workload{harness.Product, harness.Stock, harness.Gateway} {
		if _, err := m.StartWorkload(w); err != nil {
			t.Fatalf("starting %s: %v", w.Pod, err)
		}
	}
	// The workloads are up once the gateway's fan-out works: that needs
	// all three serving with configuration and certificates from meshd.
	var last harness.Result
	up := m.CheckUntil(ctx, harness.Check{
		Name: "tester → gateway → product, stock",
		Call: harness.Call{From: harness.Tester, Target: harness.GatewayXDS, Method: "demo.v1.Gateway/GetProduct"},
		Judge: func(r harness.Result) (string, string, bool) {
			last = r
			return harness.GatewayFanOut(r)
		},
	}, 30*time.Second)
	if !up.OK {
		raw, _ := json.Marshal(last)
		t.Fatalf("the example workloads did not come up within 30s: %s\nlast result: %s", up.Observed, raw)
	}
	t.Logf("mesh on %sx is up (meshd %s)", loopback, m.MonitoringURL())
	return m
}

// writeFile writes a manifest into meshd's config dir or fails the test.
func writeFile(t *testing.T, m *harness.Mesh, name, content string) {
	t.Helper()
	if err := m.WriteFile(name, content); err != nil {
		t.Fatalf("writing %s: %v", name, err)
	}
}

// requireRow fails the test with the row's expectation and observation
// unless it passed.
func requireRow(t *testing.T, r harness.Row) {
	t.Helper()
	if !r.OK {
		t.Fatalf("%s: expected %s; observed %s (peer seen by server: %s)", r.Check, r.Expected, r.Observed, r.Peer)
	}
}

// checkRow is requireRow without stopping the test.
func checkRow(t *testing.T, r harness.Row) {
	t.Helper()
	if !r.OK {
		t.Errorf("%s: expected %s; observed %s (peer seen by server: %s)", r.Check, r.Expected, r.Observed, r.Peer)
	}
}

// logSyncStatus logs one line per proxy connected to meshd: when its
// stream started and the state of each type, which shows a proxy stuck on
// an old version or reconnecting over and over.
func logSyncStatus(t *testing.T, m *harness.Mesh) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := m.SyncStatus(ctx)
	if err != nil {
		t.Logf("meshd's /debug/syncz is not available: %v", err)
		return
	}
	for _, p := range s.Proxies {
		types := make([]string, 0, len(p.Types))
		for _, typ := range slices.Sorted(maps.Keys(p.Types)) {
			types = append(types, typ+"="+p.Types[typ].State)
		}
		t.Logf("syncz: %s connected %s ago: %s", p.NodeID, time.Since(p.ConnectedAt).Round(100*time.Millisecond), strings.Join(types, " "))
	}
}
