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
	hold := flag.Bool("hold", false, "after the scenarios, keep the mesh running until Ctrl-C so meshctl can inspect it")
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
	meshctl := filepath.Join(work, "bin", "meshctl")
	if !*hold {
		meshctl = "bin/meshctl"
	}
	fmt.Printf(`
Where to look next%[3]s:
  %[4]s proxy-status --meshd %[1]s
  %[4]s proxy-config listeners product-0.default --port 8080 --meshd %[1]s
  %[4]s proxy-config clusters product-gateway-0.default --meshd %[1]s
  %[4]s proxy-config secrets product-0.default --meshd %[1]s
  metrics:  %[1]s/metrics
  syncz:    %[1]s/debug/syncz
  logs:     %[2]s
`, mesh.MonitoringURL(), filepath.Join(work, "logs"), holdNote(*hold), meshctl)
	result := 0
	if !allOK {
		fmt.Println("\nRESULT: some observations did not match the expectations (see FAIL rows).")
		result = 1
	} else {
		fmt.Println("\nRESULT: every observation matched.")
	}
	if *hold && ctx.Err() == nil {
		fmt.Println("\nThe mesh keeps running; press Ctrl-C to stop it.")
		<-ctx.Done()
	}
	return result
}

// holdNote says whether the mesh is still there to be inspected.
func holdNote(hold bool) string {
	if hold {
		return " (the mesh is still running)"
	}
	return " (everything has stopped: run `go run ./examples/demo -hold` to keep the mesh\nrunning, or start bin/meshd serve --config-dir examples/mesh --xds-auth=none yourself)"
}
