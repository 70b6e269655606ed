// Command scale is minimesh's scale benchmark (`make scale`). It generates
// a mesh of S services × 4 endpoints as manifests, starts the real `meshd
// serve` on them (the file source, as meshd really runs), connects P
// simulated Envoy sidecars from this one process over ADS (SOTW, or delta
// with -delta), and measures:
//
//   - how long until every proxy has ACKed a full configuration: clusters,
//     listeners, and every endpoint assignment, route configuration and
//     secret they reference;
//   - for an endpoint change (a pod added behind one service, written into
//     the config directory), the time from the file's rename to each
//     proxy's ACK of the EDS response carrying it: p50 and p99, raw and
//     after subtracting meshd's --debounce-after; and the bytes all proxies
//     received for it, by type (an endpoint change should be EDS only);
//   - meshd's peak RSS and CPU seconds, read from /proc for meshd alone,
//     and the harness's own CPU and RSS so readers can judge how much of
//     the two shared cores the harness took.
//
// It prints a table (or JSON with -json) with the targets beside
// the figures. Missing a target is a result, not a failure: the exit status
// is non-zero only when the benchmark itself could not run.
//
// The simulated proxies keep no decoded configuration: see state.go.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// config is the benchmark's command line.
type config struct {
	mesh     meshSpec
	delta    bool
	changes  int
	debounce time.Duration
	timeout  time.Duration
	json     bool
	keep     bool
	pprof    bool
	memLimit string
	// cpuProfile: write the harness's own CPU profile here.
	cpuProfile string
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("scale", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&c.mesh.Services, "services", 1000, "services in the generated mesh, each with 4 endpoints (pods)")
	fs.IntVar(&c.mesh.Proxies, "proxies", 1000, "simulated sidecars, each an ADS stream on its own connection")
	fs.IntVar(&c.mesh.Workloads, "workloads", 50, "client deployments the proxies are replicas of (proxy groups meshd translates for)")
	fs.IntVar(&c.mesh.Namespaces, "namespaces", 10, "namespaces the services and clients are spread over")
	fs.BoolVar(&c.delta, "delta", false, "use delta (incremental) ADS instead of state of the world")
	fs.IntVar(&c.changes, "changes", 3, "endpoint changes to measure, one after the other")
	fs.DurationVar(&c.debounce, "debounce", 100*time.Millisecond, "meshd's --debounce-after, subtracted from the endpoint-change figures")
	fs.DurationVar(&c.timeout, "timeout", 3*time.Minute, "longest to wait for any one phase (start, full config, one change)")
	fs.BoolVar(&c.json, "json", false, "print the results as JSON instead of a table")
	fs.StringVar(&c.memLimit, "meshd-gomemlimit", "", "run meshd with this GOMEMLIMIT (Go's soft memory limit, e.g. 400MiB), as a deployment that sets it from its memory limit does")
	fs.BoolVar(&c.pprof, "pprof", false, "run meshd with --pprof and log its profiler URL, to profile it while the benchmark runs")
	fs.StringVar(&c.cpuProfile, "harness-cpuprofile", "", "write the harness's own CPU profile (the simulated proxies, not meshd) to this file")
	fs.BoolVar(&c.keep, "keep", false, "keep the work directory (manifests, meshd's log and CA) and print where it is")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: go run ./e2e/scale [flags]\n\n"+
			"Starts meshd on a generated mesh, connects simulated Envoy sidecars and reports\n"+
			"config convergence, endpoint-change latency, bytes pushed, and meshd's RSS and CPU.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("scale takes no arguments, got %q", strings.Join(fs.Args(), " "))
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"-services", c.mesh.Services}, {"-proxies", c.mesh.Proxies}, {"-workloads", c.mesh.Workloads}, {"-namespaces", c.mesh.Namespaces}} {
		if f.v < 1 {
			return c, fmt.Errorf("%s is %d; it must be at least 1", f.name, f.v)
		}
	}
	if c.mesh.Workloads > c.mesh.Proxies {
		return c, fmt.Errorf("-workloads (%d) is more than -proxies (%d): every workload needs at least one proxy", c.mesh.Workloads, c.mesh.Proxies)
	}
	if c.changes < 1 {
		return c, fmt.Errorf("-changes is %d; measure at least one endpoint change", c.changes)
	}
	if c.debounce <= 0 || c.timeout <= 0 {
		return c, errors.New("-debounce and -timeout must be positive")
	}
	return c, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "scale: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "scale: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "scale: profiling the harness: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := benchmark(ctx, cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "scale: %v\n", err)
		return 1
	}
	rep.Command = "go run ./e2e/scale " + strings.Join(args, " ")
	if cfg.json {
		err = rep.writeJSON(stdout)
	} else {
		err = rep.writeTable(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "scale: writing the results: %v\n", err)
		return 1
	}
	return 0
}

func nowNanos() int64 { return time.Now().UnixNano() }

// benchmark runs one measurement end to end and stops everything it
// started, whatever happens.
func benchmark(ctx context.Context, cfg config, log *slog.Logger) (rep *report, err error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "minimesh-scale-")
	if err != nil {
		return nil, fmt.Errorf("creating a work directory: %w", err)
	}
	defer func() {
		// A failed run keeps its directory: meshd's log explains it.
		if cfg.keep || err != nil {
			log.Info("work directory kept", "dir", work)
			return
		}
		_ = os.RemoveAll(work)
	}()
	configDir := filepath.Join(work, "config")
	gen, err := writeMesh(configDir, cfg.mesh)
	if err != nil {
		return nil, err
	}
	log.Info("generated mesh", "dir", configDir, "services", cfg.mesh.Services,
		"endpoints", cfg.mesh.Services*endpointsPerService, "proxies", cfg.mesh.Proxies, "workloads", cfg.mesh.Workloads)

	log.Info("building meshd")
	bin, err := buildMeshd(ctx, root, work)
	if err != nil {
		return nil, err
	}
	var extra []string
	if cfg.pprof {
		extra = append(extra, "--pprof")
	}
	var env []string
	if cfg.memLimit != "" {
		env = append(env, "GOMEMLIMIT="+cfg.memLimit)
	}
	m, err := startMeshd(bin, configDir, filepath.Join(work, "ca"), filepath.Join(work, "meshd.log"), cfg.debounce, env, extra...)
	if err != nil {
		return nil, err
	}
	if cfg.pprof {
		log.Info("meshd's profiler", "url", m.monitoring+"/debug/pprof/")
	}
	defer m.stop()
	if err := m.waitReady(ctx, cfg.timeout); err != nil {
		return nil, err
	}
	loaded, err := readProcUsage(m.pid())
	if err != nil {
		return nil, err
	}
	log.Info("meshd ready", "pid", m.pid(), "xds", m.xdsAddr, "log", m.log, "cpuSeconds", loaded.CPUSeconds)

	rep = &report{
		Services: cfg.mesh.Services, EndpointsPerService: endpointsPerService, Namespaces: cfg.mesh.Namespaces,
		Proxies: cfg.mesh.Proxies, Workloads: cfg.mesh.Workloads, Protocol: "sotw", Debounce: cfg.debounce.Seconds(),
	}
	if cfg.delta {
		rep.Protocol = "delta"
	}

	// Phase 1: every proxy connects at once, as after a meshd restart.
	self0 := selfUsage()
	f := newFleet(gen.clients, cfg.delta)
	pctx, cancelProxies := context.WithCancel(ctx)
	defer cancelProxies()
	start := nowNanos()
	err = f.run(pctx, func() (*grpc.ClientConn, error) {
		return grpc.NewClient(m.xdsAddr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			// Envoy accepts configuration of any size; gRPC's default 4 MiB
			// limit would fail at a few thousand services. HTTP/2 windows
			// stay at gRPC's defaults: wider ones only let meshd dump every
			// response into this process at once, which costs the harness
			// memory without making meshd any faster.
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)),
		)
	})
	if err != nil {
		return nil, err
	}
	if err := waitPhase(ctx, f, m, f.allComplete, cfg.timeout, func() string {
		return fmt.Sprintf("%d of %d proxies have a full configuration", f.completed.Load(), len(f.proxies))
	}); err != nil {
		return nil, fmt.Errorf("waiting for every proxy's full configuration: %w", err)
	}
	full := make([]float64, len(f.proxies))
	for i, p := range f.proxies {
		full[i] = time.Duration(p.completeAt.Load() - start).Seconds()
	}
	rep.FullConfig = summarize(full)
	rep.FullConfigBytes, _ = f.counters()
	rep.FullConfigBytesTotal = sum(rep.FullConfigBytes[:])
	log.Info("every proxy has a full configuration", "seconds", rep.FullConfig.Max)
	settle(ctx, f, time.Second, 30*time.Second)
	connected, err := readProcUsage(m.pid())
	if err != nil {
		return nil, err
	}
	self1 := selfUsage()

	// Phase 2: endpoint changes, one at a time, each measured to the last
	// proxy's ACK and then allowed to settle so late bytes are counted.
	metricsBefore, err := m.scrape(ctx)
	if err != nil {
		return nil, err
	}
	var latencies []float64
	var changeBytes [numTypes]int64
	for round := 1; round <= cfg.changes; round++ {
		svc := round * cfg.mesh.Services / (cfg.changes + 1) % cfg.mesh.Services
		ch := gen.newEndpointChange(round, svc)
		mk := newMarker(round, cfg.mesh.edsName(svc), ch.Pod.IP, len(f.proxies))
		f.marker.Store(mk)
		b0, _ := f.counters()
		at, err := ch.apply(configDir)
		if err != nil {
			return nil, err
		}
		if err := waitPhase(ctx, f, m, mk.done, cfg.timeout, func() string {
			return fmt.Sprintf("%d of %d proxies ACKed the new endpoint %s of %s", mk.count.Load(), len(f.proxies), ch.Pod.IP, mk.cluster)
		}); err != nil {
			return nil, fmt.Errorf("endpoint change %d: %w", round, err)
		}
		var last float64
		for i := range f.proxies {
			d := time.Duration(mk.acked[i].Load() - at).Seconds()
			latencies = append(latencies, d)
			last = max(last, d)
		}
		settle(ctx, f, 500*time.Millisecond, 10*time.Second)
		b1, _ := f.counters()
		for t := range numTypes {
			changeBytes[t] += b1[t] - b0[t]
		}
		log.Info("endpoint change converged", "round", round, "service", mk.cluster, "lastProxySeconds", last)
	}
	metricsAfter, err := m.scrape(ctx)
	if err != nil {
		return nil, err
	}
	final, err := readProcUsage(m.pid())
	if err != nil {
		return nil, err
	}
	self2 := selfUsage()

	rep.Changes = cfg.changes
	rep.Change = summarize(latencies)
	adjusted := make([]float64, len(latencies))
	for i, l := range latencies {
		adjusted[i] = l - cfg.debounce.Seconds()
	}
	rep.ChangeAfterDebounce = summarize(adjusted)
	for t := range numTypes {
		rep.ChangeBytesPerChange[t] = changeBytes[t] / int64(cfg.changes)
	}
	rep.ChangeBytesPerChangeTotal = sum(rep.ChangeBytesPerChange[:])

	eds := histogram(metricsBefore, metricsAfter, "minimesh_xds_convergence_seconds", `type="eds"`)
	deb := histogram(metricsBefore, metricsAfter, "minimesh_xds_debounce_seconds", "")
	build := histogram(metricsBefore, metricsAfter, "minimesh_xds_push_build_seconds", "")
	rep.Meshd = meshdFigures{
		PeakRSS:              final.PeakRSS,
		CPUSeconds:           final.CPUSeconds,
		CPULoadSeconds:       loaded.CPUSeconds,
		CPUConnectSeconds:    connected.CPUSeconds - loaded.CPUSeconds,
		CPUChangesSeconds:    final.CPUSeconds - connected.CPUSeconds,
		EDSConvergenceP50Max: finite(eds.quantileBound(0.5)),
		EDSConvergenceP99Max: finite(eds.quantileBound(0.99)),
		EDSConvergenceCount:  eds.Count,
		DebounceMean:         mean(deb),
		PushBuildMean:        mean(build),
	}
	rep.Harness = harnessFigures{
		CPUSeconds:        self2.CPUSeconds - self0.CPUSeconds,
		CPUConnectSeconds: self1.CPUSeconds - self0.CPUSeconds,
		CPUChangesSeconds: self2.CPUSeconds - self1.CPUSeconds,
		PeakRSS:           self2.PeakRSS,
	}
	rep.evaluate()

	cancelProxies()
	m.stop()
	return rep, nil
}

// waitPhase waits for done, failing early when a proxy's stream breaks or
// meshd exits, and on timeout with progress saying how far it got.
func waitPhase(ctx context.Context, f *fleet, m *meshdProc, done <-chan struct{}, timeout time.Duration, progress func() string) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-done:
		return nil
	case err := <-f.errs:
		return fmt.Errorf("%w (meshd's log: %s)", err, m.log)
	case <-m.done:
		return m.exitError()
	case <-timer.C:
		return fmt.Errorf("timed out after %s: %s (meshd's log: %s)", timeout, progress(), m.log)
	case <-ctx.Done():
		return fmt.Errorf("interrupted: %s: %w", progress(), ctx.Err())
	}
}

// settle waits until no proxy has received anything for quiet (at most
// limit), so the next phase starts from silence.
func settle(ctx context.Context, f *fleet, quiet, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if time.Duration(nowNanos()-f.lastResponse.Load()) >= quiet {
			return
		}
		time.Sleep(quiet / 10)
	}
}

// finite is v, or nil when the histogram could not bound it.
func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

func sum(v []int64) int64 {
	var s int64
	for _, x := range v {
		s += x
	}
	return s
}

func mean(h histogramDelta) float64 {
	if h.Count <= 0 {
		return 0
	}
	return h.Sum / h.Count
}

// summarize gives the nearest-rank percentiles of a sample.
func summarize(v []float64) distribution {
	if len(v) == 0 {
		return distribution{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return distribution{N: len(s), P50: percentile(s, 0.50), P99: percentile(s, 0.99), Max: s[len(s)-1]}
}

// percentile is the nearest-rank percentile of sorted: the smallest value
// with at least q of the sample at or below it.
func percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}
