package main

import (
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
)

func TestParseStatCPU(t *testing.T) {
	// Fields 14 and 15 (utime, stime) are 250 and 50 ticks; the command
	// name holds spaces and a ')' to trip naive parsing.
	stat := "4242 (mesh d) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 12 0 100 0 0\n"
	got, err := parseStatCPU([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if got != 3.0 {
		t.Errorf("CPU = %v s, want 3 (300 ticks at 100 Hz)", got)
	}
	for _, bad := range []string{"", "4242 (meshd S 1", "4242 (meshd) S 1 2 3", "4242 (meshd) S 1 2 3 4 5 6 7 8 9 10 x 50 0"} {
		if _, err := parseStatCPU([]byte(bad)); err == nil {
			t.Errorf("parseStatCPU(%q) succeeded, want an error", bad)
		}
	}
}

func TestParseStatusKB(t *testing.T) {
	status := "Name:\tmeshd\nVmPeak:\t  900000 kB\nVmHWM:\t  123456 kB\nVmRSS:\t  100000 kB\n"
	got, err := parseStatusKB([]byte(status), "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	if got != 123456*1024 {
		t.Errorf("VmHWM = %d, want %d", got, 123456*1024)
	}
	if _, err := parseStatusKB([]byte(status), "VmSwap"); err == nil {
		t.Error("a missing line gave no error")
	}
	if _, err := parseStatusKB([]byte("VmHWM: lots\n"), "VmHWM"); err == nil {
		t.Error("a malformed line gave no error")
	}
}

func TestReadProcUsageOfThisProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc on this system; the benchmark needs Linux")
	}
	u, err := readProcUsage(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if u.PeakRSS < 1<<20 {
		t.Errorf("peak RSS of a running Go test = %d bytes, want at least 1 MiB", u.PeakRSS)
	}
	if u.CPUSeconds < 0 {
		t.Errorf("CPU = %v, want ≥ 0", u.CPUSeconds)
	}
}

const exposition = `# HELP minimesh_xds_convergence_seconds Time from the change ...
# TYPE minimesh_xds_convergence_seconds histogram
minimesh_xds_convergence_seconds_bucket{type="cds",le="0.1"} 7
minimesh_xds_convergence_seconds_bucket{type="eds",le="0.1"} %d
minimesh_xds_convergence_seconds_bucket{type="eds",le="0.25"} %d
minimesh_xds_convergence_seconds_bucket{type="eds",le="0.5"} %d
minimesh_xds_convergence_seconds_bucket{type="eds",le="+Inf"} %d
minimesh_xds_convergence_seconds_sum{type="eds"} %g
minimesh_xds_convergence_seconds_count{type="eds"} %d
minimesh_xds_debounce_seconds_count 3
`

func scrapeOf(t *testing.T, b1, b2, b3, inf int, sum float64) metrics {
	t.Helper()
	text := fmt.Sprintf(exposition, b1, b2, b3, inf, sum, inf)
	m, err := parseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestHistogramDeltaQuantiles(t *testing.T) {
	before := scrapeOf(t, 10, 10, 10, 10, 0.5)
	// 100 new observations: 50 ≤ 0.1s, 45 in (0.1, 0.25], 4 in (0.25, 0.5], 1 above.
	after := scrapeOf(t, 60, 105, 109, 110, 20.5)
	h := histogram(before, after, "minimesh_xds_convergence_seconds", `type="eds"`)
	if h.Count != 100 || h.Sum != 20 {
		t.Errorf("count, sum = %v, %v; want 100, 20", h.Count, h.Sum)
	}
	for _, tc := range []struct {
		q    float64
		want float64
	}{
		{0.5, 0.1},
		{0.51, 0.25},
		{0.95, 0.25},
		{0.99, 0.5},
		{1, math.Inf(1)},
	} {
		if got := h.quantileBound(tc.q); got != tc.want {
			t.Errorf("quantile %v ≤ %v, want ≤ %v", tc.q, got, tc.want)
		}
	}
	empty := histogram(after, after, "minimesh_xds_convergence_seconds", `type="eds"`)
	if !math.IsNaN(empty.quantileBound(0.5)) {
		t.Errorf("a histogram with no new observations gave a quantile")
	}
	if got := histogram(before, after, "minimesh_xds_debounce_seconds", "").Count; got != 0 {
		t.Errorf("unlabelled histogram count delta = %v, want 0", got)
	}
}

func TestParseMetricsRejectsGarbage(t *testing.T) {
	if _, err := parseMetrics(strings.NewReader("novalue\n")); err == nil {
		t.Error("a line without a value was accepted")
	}
	if _, err := parseMetrics(strings.NewReader("x{a=\"b\"} notanumber\n")); err == nil {
		t.Error("a non-numeric value was accepted")
	}
}
