package xds

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the control plane's Prometheus series. Names follow
// Prometheus conventions (base units, _total for counters) under the
// minimesh_ prefix.
type metrics struct {
	connected      prometheus.Gauge
	streams        prometheus.Gauge
	pushes         *prometheus.CounterVec
	pushBuild      prometheus.Histogram
	debounce       prometheus.Histogram
	convergence    *prometheus.HistogramVec
	nacks          *prometheus.CounterVec
	configErrors   *prometheus.CounterVec
	rejected       *prometheus.CounterVec
	csrs           *prometheus.CounterVec
	certsIssued    prometheus.Counter
	rootExpiry     prometheus.Gauge
	workloadExpiry prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	// Push and convergence times on loopback are milliseconds; a slow CPU
	// or a large mesh stretches them to seconds.
	fast := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "minimesh_xds_connected_proxies",
			Help: "Proxies (distinct node IDs) with at least one open ADS stream whose node ID has been accepted.",
		}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "minimesh_xds_streams",
			Help: "Open ADS streams, accepted or not; a proxyless workload under meshctl agent holds several.",
		}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "minimesh_xds_pushes_total",
			Help: "xDS responses sent to proxies, by type (lds, rds, cds, eds, sds).",
		}, []string{"type"}),
		pushBuild: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "minimesh_xds_push_build_seconds",
			Help:    "Time to translate, validate and publish the snapshots of every connected proxy group for one push.",
			Buckets: fast,
		}),
		debounce: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "minimesh_xds_debounce_seconds",
			Help:    "Time from the first change of a burst until its push starts.",
			Buckets: fast,
		}),
		convergence: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "minimesh_xds_convergence_seconds",
			Help:    "Time from the change that produced a configuration version until a proxy ACKed it, by type.",
			Buckets: fast,
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "minimesh_xds_nacks_total",
			Help: "Configuration versions a proxy rejected, counted once per proxy, type and version.",
		}, []string{"type"}),
		configErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "minimesh_xds_config_errors_total",
			Help: "Snapshots that were not published because they failed a check, by kind (invalid_resource, inconsistent, certificate).",
		}, []string{"kind"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "minimesh_xds_rejected_streams_total",
			Help: "ADS streams refused, by reason (node_id, unauthenticated, auth_unavailable, permission_denied, too_many_names, unknown_type).",
		}, []string{"reason"}),
		csrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "minimesh_ca_csr_requests_total",
			Help: "CreateCertificate calls, by result (signed, unauthenticated, auth_unavailable, invalid, rate_limited, error).",
		}, []string{"result"}),
		certsIssued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "minimesh_ca_certificates_issued_total",
			Help: "Workload certificates issued, first issues and renewals.",
		}),
		rootExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "minimesh_ca_root_expiry_timestamp_seconds",
			Help: "When the CA's root certificate expires (Unix time).",
		}),
		workloadExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "minimesh_ca_workload_cert_expiry_timestamp_seconds",
			Help: "When the earliest-expiring workload certificate currently served expires (Unix time); 0 when none is served.",
		}),
	}
	for _, c := range []prometheus.Collector{
		m.connected, m.streams, m.pushes, m.pushBuild, m.debounce, m.convergence, m.nacks,
		m.configErrors, m.rejected, m.csrs, m.certsIssued, m.rootExpiry, m.workloadExpiry,
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
