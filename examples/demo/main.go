// Command demo is `make demo`: it builds meshd, meshctl and the example
// app, runs the example mesh as real proxyless gRPC processes on loopback
// addresses, walks through the seeds' mTLS and authorization story by
// writing policy files while everything runs, and prints what each call
// showed. It exits 0 only if every observation matches the expectation, and
// stops every process it started, also on Ctrl-C and on failure.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/minimesh/minimesh/e2e/harness"
)

func main() {
	os.Exit(run())
}

func run() int {
	verbose := flag.Bool("v", false, "show the output of every process")
	keep := flag.Bool("keep", false, "keep the work directory (logs, config, certificates) after the run")
	ttl := flag.Duration("workload-cert-ttl", 30*time.Second, "meshd's workload certificate lifetime; rotation happens at half of it")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	root, err := harness.RepoRoot()
	if err != nil {
		log.Error("cannot find the checkout", "error", err)
		return 1
	}
	work, err := os.MkdirTemp("", "minimesh-demo-")
	if err != nil {
		log.Error("cannot create a work directory", "error", err)
		return 1
	}
	if *keep {
		defer fmt.Printf("\nwork directory kept: %s (logs in %s)\n", work, filepath.Join(work, "logs"))
	} else {
		defer func() { _ = os.RemoveAll(work) }()
	}

	fmt.Println("building meshd, meshctl and the demo app ...")
	bins, err := harness.Build(ctx, root, filepath.Join(work, "bin"))
	if err != nil {
		log.Error("build failed", "error", err)
		return 1
	}
	var out io.Writer
	if *verbose {
		out = os.Stderr
	}
	fmt.Println("starting meshd on a copy of examples/mesh ...")
	mesh, err := harness.Start(ctx, harness.Options{
		Bins:       bins,
		ExampleDir: filepath.Join(root, "examples", "mesh"),
		WorkDir:    work,
		CertTTL:    *ttl,
		Output:     out,
	})
	if err != nil {
		log.Error("meshd did not start", "error", err, "logs", filepath.Join(work, "logs"))
		return 1
	}
	defer mesh.Close()

	fmt.Println("starting product, stock and product-gateway under `meshctl agent` ...")
	for _, w := range []harness.Workload{harness.Product, harness.Stock, harness.Gateway} {
		if _, err := mesh.StartWorkload(w); err != nil {
			log.Error("workload did not start", "pod", w.Pod, "error", err)
			return 1
		}
	}

	var rows []harness.Row
	allOK := true
	for _, s := range harness.DemoScenarios() {
		if ctx.Err() != nil {
			break
		}
		fmt.Printf("scenario %s ...\n", s.Name)
		got := mesh.RunScenario(ctx, s)
		for _, r := range got {
			allOK = allOK && r.OK
		}
		rows = append(rows, got...)
	}
	if ctx.Err() != nil {
		fmt.Println("interrupted; stopping everything")
		allOK = false
	}

	fmt.Println()
	harness.PrintTable(os.Stdout, rows)
	fmt.Printf(`
Where to look next (while a mesh runs, e.g. with -keep and the commands below):
  meshctl proxy-status --addr %[1]s
  meshctl proxy-config listeners product-0.default --addr %[1]s
  meshctl proxy-config clusters product-gateway-0.default --addr %[1]s
  metrics:  %[1]s/metrics
  syncz:    %[1]s/debug/syncz
  logs:     %[2]s
`, mesh.MonitoringURL(), filepath.Join(work, "logs"))
	if !allOK {
		fmt.Println("\nRESULT: some observations did not match the expectations (see FAIL rows).")
		return 1
	}
	fmt.Println("\nRESULT: every observation matched.")
	return 0
}
