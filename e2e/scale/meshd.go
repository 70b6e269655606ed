package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// repoRoot finds the module root by walking up from the working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory: run the benchmark from inside the minimesh checkout")
		}
		dir = parent
	}
}

// buildMeshd compiles meshd from the checkout at root into dir, so the
// benchmark measures the code as it is, not an old bin/meshd.
func buildMeshd(ctx context.Context, root, dir string) (string, error) {
	bin := filepath.Join(dir, "meshd")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/meshd")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building meshd: %w\n%s", err, out)
	}
	return bin, nil
}

// freeAddr asks the kernel for a free loopback port.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// meshdProc is a running `meshd serve`.
type meshdProc struct {
	cmd        *exec.Cmd
	log        string
	xdsAddr    string
	monitoring string
	done       chan struct{}
	err        error
}

// startMeshd runs meshd serve on configDir, in its own process group, with
// its log in logFile.
func startMeshd(bin, configDir, caDir, logFile string, debounce time.Duration, env []string, extra ...string) (*meshdProc, error) {
	xdsAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	mon, err := freeAddr()
	if err != nil {
		return nil, err
	}
	f, err := os.Create(logFile)
	if err != nil {
		return nil, fmt.Errorf("creating meshd's log: %w", err)
	}
	args := []string{"serve",
		"--config-dir", configDir,
		"--xds-auth=none",
		"--ca-dir", caDir,
		"--xds-addr", xdsAddr,
		"--monitoring-addr", mon,
		"--debounce-after", debounce.String(),
	}
	cmd := exec.Command(bin, append(args, extra...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting meshd: %w", err)
	}
	m := &meshdProc{cmd: cmd, log: logFile, xdsAddr: xdsAddr, monitoring: "http://" + mon, done: make(chan struct{})}
	go func() {
		m.err = cmd.Wait()
		f.Close()
		close(m.done)
	}()
	return m, nil
}

// exitError says that meshd ended early, and why. Call it after done.
func (m *meshdProc) exitError() error {
	if m.err == nil {
		return fmt.Errorf("meshd exited early with status 0; see its log %s", m.log)
	}
	return fmt.Errorf("meshd exited early (%w); see its log %s", m.err, m.log)
}

func (m *meshdProc) pid() int { return m.cmd.Process.Pid }

// waitReady polls /readyz until meshd has loaded the mesh.
func (m *meshdProc) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, m.monitoring+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/readyz answered %s", resp.Status)
		}
		last = err
		select {
		case <-m.done:
			return m.exitError()
		case <-ctx.Done():
			return fmt.Errorf("meshd was not ready after %s (last: %w); see its log %s", timeout, last, m.log)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop ends meshd's process group: SIGTERM, then SIGKILL after 5s.
func (m *meshdProc) stop() {
	select {
	case <-m.done:
		return
	default:
	}
	pgid := m.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-m.done
	}
}

// procUsage is one reading of a process's resource use.
type procUsage struct {
	CPUSeconds float64 // user + system
	PeakRSS    int64   // bytes, VmHWM
}

// clockTicks is USER_HZ, which Linux fixes at 100 for /proc/<pid>/stat.
const clockTicks = 100

// readProcUsage reads CPU time and peak RSS of pid from /proc.
func readProcUsage(pid int) (procUsage, error) {
	var u procUsage
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, fmt.Errorf("reading meshd's CPU time: %w", err)
	}
	if u.CPUSeconds, err = parseStatCPU(stat); err != nil {
		return u, err
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, fmt.Errorf("reading meshd's memory use: %w", err)
	}
	if u.PeakRSS, err = parseStatusKB(status, "VmHWM"); err != nil {
		return u, err
	}
	return u, nil
}

// parseStatCPU returns utime+stime in seconds from /proc/<pid>/stat. The
// command name (field 2) may contain spaces and parentheses, so fields are
// counted from the last ')'.
func parseStatCPU(stat []byte) (float64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("/proc stat has no command name")
	}
	// After ')' come field 3 (state) onwards; utime and stime are 14 and 15.
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc stat has %d fields after the command name, want at least 13", len(fields))
	}
	var ticks uint64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc stat CPU time %q: %w", f, err)
		}
		ticks += n
	}
	return float64(ticks) / clockTicks, nil
}

// parseStatusKB returns a "Key:   N kB" line of /proc/<pid>/status in bytes.
func parseStatusKB(status []byte, key string) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), key+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("/proc status line %q is not \"%s: N kB\"", sc.Text(), key)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc status %s: %w", key, err)
		}
		return n * 1024, nil
	}
	return 0, fmt.Errorf("/proc status has no %s line", key)
}

// selfUsage is the harness's own CPU time and peak RSS.
func selfUsage() procUsage {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return procUsage{}
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return procUsage{CPUSeconds: tv(ru.Utime) + tv(ru.Stime), PeakRSS: ru.Maxrss * 1024}
}

// metrics is one scrape of meshd's /metrics: value by series, where a
// series is written exactly as in the exposition text (name{labels}).
type metrics map[string]float64

func (m *meshdProc) scrape(ctx context.Context) (metrics, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, m.monitoring+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading meshd's metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("reading meshd's metrics: %s", resp.Status)
	}
	return parseMetrics(resp.Body)
}

// parseMetrics reads Prometheus text exposition (no timestamps, as
// client_golang writes it).
func parseMetrics(r io.Reader) (metrics, error) {
	out := metrics{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("metrics line %q has no value", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// histogramDelta is one histogram's observations between two scrapes.
type histogramDelta struct {
	Count   float64
	Sum     float64
	buckets []bucket // cumulative, by upper bound
}

type bucket struct {
	le    float64
	count float64
}

// histogram extracts the change of histogram name (with label selector
// sel, e.g. `type="eds"`, or "" for none) from before to after.
func histogram(before, after metrics, name, sel string) histogramDelta {
	var h histogramDelta
	series := func(suffix, labels string) string {
		if labels == "" {
			return name + suffix
		}
		return name + suffix + "{" + labels + "}"
	}
	h.Count = after[series("_count", sel)] - before[series("_count", sel)]
	h.Sum = after[series("_sum", sel)] - before[series("_sum", sel)]
	prefix := name + "_bucket{"
	if sel != "" {
		prefix += sel + ","
	}
	for k, v := range after {
		rest, ok := strings.CutPrefix(k, prefix+`le="`)
		if !ok {
			continue
		}
		le, err := strconv.ParseFloat(strings.TrimSuffix(rest, `"}`), 64)
		if err != nil {
			continue // +Inf parses; anything else is not a bucket of ours
		}
		h.buckets = append(h.buckets, bucket{le: le, count: v - before[k]})
	}
	slices.SortFunc(h.buckets, func(a, b bucket) int {
		switch {
		case a.le < b.le:
			return -1
		case a.le > b.le:
			return 1
		}
		return 0
	})
	return h
}

// quantileBound is the upper bound of the bucket holding quantile q: the
// histogram says "at most this", which is all it can say honestly.
func (h histogramDelta) quantileBound(q float64) float64 {
	if h.Count <= 0 {
		return math.NaN()
	}
	rank := q * h.Count
	for _, b := range h.buckets {
		if b.count >= rank {
			return b.le
		}
	}
	return math.Inf(1)
}
