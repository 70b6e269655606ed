package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
)

// The targets on a 2-core machine for 1,000 services × 4 endpoints
// and 1,000 proxies.
const (
	targetFullConfigSeconds = 5.0
	targetChangeP99Seconds  = 0.200 // after debounce
	targetPeakRSSBytes      = 500e6
)

// distribution is a sample's size and nearest-rank percentiles, in seconds.
type distribution struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// byType is a figure per xDS type, in subscription order.
type byType [numTypes]int64

func (b byType) MarshalJSON() ([]byte, error) {
	m := make(map[string]int64, numTypes)
	for t, v := range b {
		m[typeNames[t]] = v
	}
	return json.Marshal(m)
}

type meshdFigures struct {
	PeakRSS           int64   `json:"peakRSSBytes"`
	CPUSeconds        float64 `json:"cpuSeconds"`
	CPULoadSeconds    float64 `json:"cpuLoadSeconds"`    // start and loading the mesh, before any proxy
	CPUConnectSeconds float64 `json:"cpuConnectSeconds"` // proxies connecting until all are configured and quiet
	CPUChangesSeconds float64 `json:"cpuChangesSeconds"` // all endpoint changes
	// From meshd's own histograms over the endpoint changes: the upper
	// bounds of the buckets holding p50 and p99 (a histogram cannot say
	// more), and the number of ACKs observed.
	// nil when meshd observed nothing or p99 fell beyond the last bucket.
	EDSConvergenceP50Max *float64 `json:"edsConvergenceP50AtMost"`
	EDSConvergenceP99Max *float64 `json:"edsConvergenceP99AtMost"`
	EDSConvergenceCount  float64  `json:"edsConvergenceCount"`
	DebounceMean         float64  `json:"debounceMeanSeconds"`
	PushBuildMean        float64  `json:"pushBuildMeanSeconds"`
}

type harnessFigures struct {
	CPUSeconds        float64 `json:"cpuSeconds"`
	CPUConnectSeconds float64 `json:"cpuConnectSeconds"`
	CPUChangesSeconds float64 `json:"cpuChangesSeconds"`
	PeakRSS           int64   `json:"peakRSSBytes"`
}

// target is one of the targets against what was measured.
type target struct {
	Name     string  `json:"name"`
	Target   float64 `json:"target"`
	Measured float64 `json:"measured"`
	Unit     string  `json:"unit"`
	Met      bool    `json:"met"`
}

// report is everything one run measured.
type report struct {
	Command             string  `json:"command"`
	Services            int     `json:"services"`
	EndpointsPerService int     `json:"endpointsPerService"`
	Namespaces          int     `json:"namespaces"`
	Proxies             int     `json:"proxies"`
	Workloads           int     `json:"workloads"`
	Protocol            string  `json:"protocol"`
	Debounce            float64 `json:"debounceSeconds"`

	// FullConfig is, per proxy, the time from all proxies starting to
	// that proxy having ACKed a full configuration; Max is "all".
	FullConfig           distribution `json:"fullConfigSeconds"`
	FullConfigBytes      byType       `json:"fullConfigBytes"`
	FullConfigBytesTotal int64        `json:"fullConfigBytesTotal"`

	// Change is, per proxy and change, the time from the manifest's
	// rename to the proxy's ACK of the EDS response carrying it.
	Changes                   int          `json:"changes"`
	Change                    distribution `json:"changeSeconds"`
	ChangeAfterDebounce       distribution `json:"changeAfterDebounceSeconds"`
	ChangeBytesPerChange      byType       `json:"changeBytesPerChange"`
	ChangeBytesPerChangeTotal int64        `json:"changeBytesPerChangeTotal"`

	Meshd   meshdFigures   `json:"meshd"`
	Harness harnessFigures `json:"harness"`
	Targets []target       `json:"targets"`
}

// evaluate compares the figures with the targets.
func (r *report) evaluate() {
	r.Targets = []target{
		{Name: "full config to all proxies", Target: targetFullConfigSeconds, Measured: r.FullConfig.Max, Unit: "s"},
		{Name: "endpoint change p99 after debounce", Target: targetChangeP99Seconds, Measured: r.ChangeAfterDebounce.P99, Unit: "s"},
		{Name: "meshd peak RSS", Target: targetPeakRSSBytes, Measured: float64(r.Meshd.PeakRSS), Unit: "bytes"},
	}
	for i := range r.Targets {
		r.Targets[i].Met = r.Targets[i].Measured <= r.Targets[i].Target
	}
}

func (r *report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func (r *report) writeTable(w io.Writer) error {
	fmt.Fprintf(w, "minimesh scale: %d services × %d endpoints in %d namespaces, %d proxies (%d workloads), %s ADS, debounce %s\n",
		r.Services, r.EndpointsPerService, r.Namespaces, r.Proxies, r.Workloads, strings.ToUpper(r.Protocol), seconds(r.Debounce))
	fmt.Fprintf(w, "command: %s\n\n", r.Command)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "measure\tvalue\ttarget\t")
	verdict := func(i int) string {
		t := r.Targets[i]
		unit := func(v float64) string {
			if t.Unit == "bytes" {
				return megabytes(int64(v))
			}
			return seconds(v)
		}
		mark := "met"
		if !t.Met {
			mark = "MISSED"
		}
		return fmt.Sprintf("≤ %s (%s)", unit(t.Target), mark)
	}
	rows := [][3]string{
		{"full config, all proxies", seconds(r.FullConfig.Max), verdict(0)},
		{"full config per proxy p50 / p99", seconds(r.FullConfig.P50) + " / " + seconds(r.FullConfig.P99), ""},
		{"full config bytes, all proxies", megabytes(r.FullConfigBytesTotal) + " (" + r.FullConfigBytes.String() + ")", ""},
		{fmt.Sprintf("endpoint change p50 / p99 (%d×%d ACKs)", r.Changes, r.Proxies), seconds(r.Change.P50) + " / " + seconds(r.Change.P99), ""},
		{"endpoint change p50 / p99 after debounce", seconds(r.ChangeAfterDebounce.P50) + " / " + seconds(r.ChangeAfterDebounce.P99), verdict(1)},
		{"endpoint change, last proxy", seconds(r.Change.Max), ""},
		{"bytes per endpoint change, all proxies", megabytes(r.ChangeBytesPerChangeTotal) + " (" + r.ChangeBytesPerChange.String() + ")", ""},
		{"meshd peak RSS (VmHWM)", megabytes(r.Meshd.PeakRSS), verdict(2)},
		{"meshd CPU: load / connect / changes", fmt.Sprintf("%s / %s / %s", cpu(r.Meshd.CPULoadSeconds), cpu(r.Meshd.CPUConnectSeconds), cpu(r.Meshd.CPUChangesSeconds)), ""},
		{"meshd EDS convergence p50 / p99 (own histogram)", bound(r.Meshd.EDSConvergenceP50Max) + " / " + bound(r.Meshd.EDSConvergenceP99Max), ""},
		{"meshd debounce / push build, mean", seconds(r.Meshd.DebounceMean) + " / " + seconds(r.Meshd.PushBuildMean), ""},
		{"harness CPU: connect / changes", cpu(r.Harness.CPUConnectSeconds) + " / " + cpu(r.Harness.CPUChangesSeconds), ""},
		{"harness peak RSS", megabytes(r.Harness.PeakRSS), ""},
	}
	for _, row := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t\n", row[0], row[1], row[2])
	}
	return tw.Flush()
}

// String lists the non-zero types, e.g. "eds 1.2 MB".
func (b byType) String() string {
	var parts []string
	for t, v := range b {
		if v != 0 {
			parts = append(parts, typeNames[t]+" "+megabytes(v))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// seconds prints a duration in seconds with a unit a reader expects.
func seconds(s float64) string {
	switch {
	case math.IsNaN(s):
		return "n/a"
	case math.IsInf(s, 1):
		return "∞"
	case math.Abs(s) < 1:
		return fmt.Sprintf("%.0f ms", s*1000)
	default:
		return fmt.Sprintf("%.2f s", s)
	}
}

// bound prints a histogram quantile's bucket bound.
func bound(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return "≤ " + seconds(*v)
}

func cpu(s float64) string { return fmt.Sprintf("%.1f s", s) }

// megabytes prints bytes in MB (10^6), the unit of the RSS target.
func megabytes(b int64) string {
	if b < 100_000 {
		return fmt.Sprintf("%.1f kB", float64(b)/1e3)
	}
	return fmt.Sprintf("%.1f MB", float64(b)/1e6)
}
