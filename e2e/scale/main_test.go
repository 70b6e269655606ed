package main

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr string
		check   func(config) bool
	}{
		{args: nil, check: func(c config) bool {
			return c.mesh == meshSpec{Services: 1000, Namespaces: 10, Proxies: 1000, Workloads: 50} && !c.delta && c.changes == 3
		}},
		{args: []string{"-services", "100", "-proxies", "100", "-workloads", "10", "-delta"}, check: func(c config) bool {
			return c.mesh.Services == 100 && c.mesh.Proxies == 100 && c.mesh.Workloads == 10 && c.delta
		}},
		{args: []string{"-services", "0"}, wantErr: "-services is 0"},
		{args: []string{"-proxies", "5", "-workloads", "6"}, wantErr: "-workloads (6) is more than -proxies (5)"},
		{args: []string{"-changes", "0"}, wantErr: "at least one endpoint change"},
		{args: []string{"-debounce", "0s"}, wantErr: "must be positive"},
		{args: []string{"extra"}, wantErr: "takes no arguments"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			c, err := parseFlags(tc.args, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Errorf("parsed %+v", c)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	hundred := make([]float64, 100)
	for i := range hundred {
		hundred[i] = float64(i + 1)
	}
	for _, tc := range []struct {
		name   string
		sorted []float64
		q      float64
		want   float64
	}{
		{"p50 of 1..100", hundred, 0.50, 50},
		{"p99 of 1..100", hundred, 0.99, 99},
		{"p100 of 1..100", hundred, 1, 100},
		{"p99 of one", []float64{7}, 0.99, 7},
		{"p50 of two", []float64{1, 2}, 0.5, 1},
		{"p0 is the minimum", []float64{3, 4}, 0, 3},
		{"empty", nil, 0.5, 0},
	} {
		if got := percentile(tc.sorted, tc.q); got != tc.want {
			t.Errorf("%s: percentile = %v, want %v", tc.name, got, tc.want)
		}
	}
	got := summarize([]float64{3, 1, 2})
	if diff := cmp.Diff(distribution{N: 3, P50: 2, P99: 3, Max: 3}, got); diff != "" {
		t.Errorf("summarize (-want +got):\n%s", diff)
	}
}

func sampleReport() *report {
	p50 := 0.25
	r := &report{
		Command: "go run ./e2e/scale", Services: 10, EndpointsPerService: 4, Namespaces: 2, Proxies: 20, Workloads: 4,
		Protocol: "sotw", Debounce: 0.1,
		FullConfig:          distribution{N: 20, P50: 1, P99: 2, Max: 6},
		Change:              distribution{N: 60, P50: 0.2, P99: 0.25, Max: 0.3},
		ChangeAfterDebounce: distribution{N: 60, P50: 0.1, P99: 0.15, Max: 0.2},
		Meshd:               meshdFigures{PeakRSS: 600e6, EDSConvergenceP50Max: &p50},
	}
	r.ChangeBytesPerChange[tEDS] = 12345
	r.evaluate()
	return r
}

func TestEvaluateAgainstTargets(t *testing.T) {
	r := sampleReport()
	met := map[string]bool{}
	for _, tg := range r.Targets {
		met[tg.Name] = tg.Met
	}
	want := map[string]bool{
		"full config to all proxies":         false, // 6 s > 5 s
		"endpoint change p99 after debounce": true,  // 150 ms ≤ 200 ms
		"meshd peak RSS":                     false, // 600 MB > 500 MB
	}
	if diff := cmp.Diff(want, met); diff != "" {
		t.Errorf("targets met (-want +got):\n%s", diff)
	}
}

func TestReportOutput(t *testing.T) {
	r := sampleReport()
	var table bytes.Buffer
	if err := r.writeTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"≤ 5.00 s (MISSED)", "≤ 200 ms (met)", "600.0 MB", "eds 12.3 kB", "≤ 250 ms / n/a"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	var js bytes.Buffer
	if err := r.writeJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("JSON output does not parse: %v", err)
	}
	if got := back["changeBytesPerChange"].(map[string]any)["eds"]; got != float64(12345) {
		t.Errorf("changeBytesPerChange.eds = %v, want 12345", got)
	}
	if back["meshd"].(map[string]any)["edsConvergenceP99AtMost"] != nil {
		t.Errorf("an unknown quantile should be null in JSON")
	}
}
