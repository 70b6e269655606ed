package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/minimesh/minimesh/discovery"
	"github.com/minimesh/minimesh/discovery/file"
	"github.com/minimesh/minimesh/discovery/jwks"
	"github.com/minimesh/minimesh/discovery/kubernetes/admission"
	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
	"github.com/minimesh/minimesh/translate"
	"github.com/minimesh/minimesh/xds"
	"github.com/minimesh/minimesh/xds/auth"
	"github.com/minimesh/minimesh/xds/ca"
	"github.com/minimesh/minimesh/xds/debugauth"
)

// serveConfig is everything `meshd serve` was told on its command line,
// checked. Later stages (translation, xDS, the CA) read their settings from
// here, never from the environment.
type serveConfig struct {
	// Exactly one source: ConfigDir (files), or Kubeconfig or InCluster
	// (an API server).
	ConfigDir     string
	Kubeconfig    string
	InCluster     bool
	RootNamespace string
	TrustDomain   string
	ClusterDomain string
	LogLevel      slog.Level
	LogFormat     string

	XDSAddr        string
	MonitoringAddr string
	// Pprof serves Go's profiler under /debug/pprof/ on MonitoringAddr.
	Pprof         bool
	DebounceAfter time.Duration
	DebounceMax   time.Duration

	CADir       string
	CACert      string
	CAKey       string
	CAChain     string
	WorkloadTTL time.Duration

	JWKSRefresh time.Duration

	// AccessLog is MeshConfig's accessLogFile / accessLogEncoding for
	// Envoy sidecars; off when its File is empty.
	AccessLog translate.AccessLog

	XDSAuth      string
	XDSTokenFile string
	// CSRRate and CSRBurst limit the certificate requests meshd signs
	// per identity (a token bucket).
	CSRRate  float64
	CSRBurst int
	// XDSTokenAudiences are the audiences TokenReview accepts with
	// --xds-auth=kubernetes.
	XDSTokenAudiences []string

	// WebhookAddr is where the admission webhook listens; empty when it
	// is off (always with --config-dir).
	WebhookAddr string
	// WebhookHosts are the DNS names and IPs of its serving certificate.
	WebhookHosts []string
	// WebhookConfigName is the ValidatingWebhookConfiguration whose
	// caBundle meshd keeps current; empty leaves it to someone else.
	WebhookConfigName string
	// DebugAuth is who may read /debug/* on MonitoringAddr: kubernetes,
	// token (DebugTokenFile) or none.
	DebugAuth      string
	DebugTokenFile string
}

// parseServeFlags parses and checks the flags of `meshd serve`. It returns
// flag.ErrHelp after printing the help for --help.
func parseServeFlags(args []string, stdout, stderr io.Writer) (serveConfig, error) {
	var cfg serveConfig
	var level, audiences, webhookHosts, accessLogEncoding string
	fs := flag.NewFlagSet("meshd serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.ConfigDir, "config-dir", "", "directory of Kubernetes-style YAML manifests to load and watch (or use --kubeconfig / --in-cluster)")
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig file of the Kubernetes API server to discover the mesh from (its current context)")
	fs.BoolVar(&cfg.InCluster, "in-cluster", false, "discover the mesh from the API server of the cluster meshd runs in, as its pod's service account")
	fs.StringVar(&cfg.RootNamespace, "root-namespace", "istio-system", "namespace whose policies apply mesh-wide")
	fs.StringVar(&cfg.TrustDomain, "trust-domain", "cluster.local", "SPIFFE trust domain of workload identities")
	fs.StringVar(&cfg.ClusterDomain, "cluster-domain", "cluster.local", "DNS suffix of services (name.namespace.svc.DOMAIN)")
	fs.StringVar(&level, "log-level", "info", "least severe log level shown: debug, info, warn or error")
	fs.StringVar(&cfg.LogFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&cfg.AccessLog.File, "access-log-file", "", "Envoy sidecars write an access log to this file, e.g. /dev/stdout "+
		"(Istio's MeshConfig accessLogFile); empty: no access log. Proxyless gRPC workloads have none")
	fs.StringVar(&accessLogEncoding, "access-log-encoding", "TEXT", "access log format: TEXT (Istio's default format) or JSON (Istio's accessLogEncoding)")
	fs.StringVar(&cfg.XDSAddr, "xds-addr", "127.0.0.1:15010", "address of the ADS (xDS) gRPC server")
	fs.StringVar(&cfg.MonitoringAddr, "monitoring-addr", "127.0.0.1:15014", "address of /metrics, /healthz, /readyz and /debug/*")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "also serve Go's profiler at /debug/pprof/ on --monitoring-addr (for performance work; keep that address private)")
	fs.DurationVar(&cfg.DebounceAfter, "debounce-after", 100*time.Millisecond, "quiet period after a change before pushing")
	fs.DurationVar(&cfg.DebounceMax, "debounce-max", time.Second, "longest a burst of changes can delay a push")
	fs.StringVar(&cfg.CADir, "ca-dir", defaultCADir(), "directory holding the self-signed root (created on first start, reused after)")
	fs.StringVar(&cfg.CACert, "ca-cert", "", "plug-in CA: signing (intermediate) certificate PEM; needs --ca-key and --ca-chain")
	fs.StringVar(&cfg.CAKey, "ca-key", "", "plug-in CA: private key PEM of --ca-cert")
	fs.StringVar(&cfg.CAChain, "ca-chain", "", "plug-in CA: chain PEM from --ca-cert up to and including the organisation root")
	fs.DurationVar(&cfg.JWKSRefresh, "jwks-refresh", 20*time.Minute, "how often key sets named by RequestAuthentication jwksUri are fetched again")
	fs.DurationVar(&cfg.WorkloadTTL, "workload-cert-ttl", 24*time.Hour, "lifetime of workload certificates (renewed at half)")
	fs.Float64Var(&cfg.CSRRate, "csr-rate", xds.DefaultCSRRate, "certificate requests (IstioCertificateService) meshd signs per identity and second, after --csr-burst")
	fs.IntVar(&cfg.CSRBurst, "csr-burst", xds.DefaultCSRBurst, "certificate requests meshd signs for one identity at once before --csr-rate applies")
	fs.StringVar(&cfg.XDSAuth, "xds-auth", "", "how xDS callers authenticate: kubernetes (service-account tokens checked with TokenReview; "+
		"the default with --kubeconfig/--in-cluster), static (bearer tokens from --xds-token-file; the default with --config-dir) or none (local use only)")
	fs.StringVar(&cfg.XDSTokenFile, "xds-token-file", "", "with --xds-auth=static: file of 'token,namespace,serviceaccount' lines")
	fs.StringVar(&audiences, "xds-token-audience", DefaultTokenAudience, "with --xds-auth=kubernetes: comma-separated audiences a token must be issued for")
	fs.StringVar(&cfg.WebhookAddr, "webhook-addr", "", "Kubernetes mode: address of the validating admission webhook for the policy kinds (HTTPS, path "+
		admission.Path+"; default "+defaultWebhookAddr+"; off to disable)")
	fs.StringVar(&webhookHosts, "webhook-hosts", defaultWebhookHosts, "comma-separated DNS names and IP addresses of the webhook's serving certificate, "+
		"issued by the mesh CA: SERVICE.NAMESPACE.svc of meshd's Service, or the host of a url clientConfig")
	fs.StringVar(&cfg.WebhookConfigName, "webhook-config-name", admission.DefaultConfigName, "ValidatingWebhookConfiguration whose caBundle meshd keeps equal to the mesh root "+
		"(empty: leave it to someone else)")
	fs.StringVar(&cfg.DebugAuth, "debug-auth", "", "who may read /debug/* on --monitoring-addr (it reveals the whole mesh; /metrics, /healthz and /readyz stay open): "+
		"kubernetes (a bearer token checked with TokenReview, authorised with a SubjectAccessReview for get on the path; the default with --kubeconfig/--in-cluster), "+
		"token (a bearer token listed in --debug-token-file) or none (anyone who can connect; the default with --config-dir, which then keeps --monitoring-addr on loopback)")
	fs.StringVar(&cfg.DebugTokenFile, "debug-token-file", "", "with --debug-auth=token: file of bearer tokens that may read /debug/*, one a line")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: meshd serve --config-dir DIR [flags]\n"+
			"       meshd serve --kubeconfig PATH | --in-cluster [flags]\n\n"+
			"Loads the mesh (Namespaces, Services, Pods, EndpointSlices and Istio security\n"+
			"policies) from the manifests in DIR or from a Kubernetes API server, logs what\n"+
			"it loaded and every problem found, serves it to proxies over xDS, and applies\n"+
			"every change live.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			// Asked for: help goes to stdout and is not an error.
			fs.SetOutput(stdout)
			fs.Usage()
			return cfg, flag.ErrHelp
		}
		return cfg, &usageError{msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return cfg, usagef("serve takes no arguments, got %q; pass the directory with --config-dir", strings.Join(fs.Args(), " "))
	}
	if err := checkSource(&cfg); err != nil {
		return cfg, err
	}
	if errs := validation.IsDNS1123Label(cfg.RootNamespace); len(errs) > 0 {
		return cfg, usagef("--root-namespace %q is not a namespace name: %s", cfg.RootNamespace, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(cfg.TrustDomain); len(errs) > 0 {
		return cfg, usagef("--trust-domain %q is not a valid trust domain (a DNS name such as cluster.local): %s",
			cfg.TrustDomain, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(cfg.ClusterDomain); len(errs) > 0 {
		return cfg, usagef("--cluster-domain %q is not a DNS name: %s", cfg.ClusterDomain, strings.Join(errs, "; "))
	}
	if err := cfg.LogLevel.UnmarshalText([]byte(level)); err != nil {
		return cfg, usagef("--log-level %q is not one of debug, info, warn, error", level)
	}
	encoding, err := translate.ParseAccessLogEncoding(accessLogEncoding)
	if err != nil {
		return cfg, usagef("--access-log-encoding %q is not one of TEXT, JSON", accessLogEncoding)
	}
	cfg.AccessLog.Encoding = encoding
	if cfg.LogFormat != "text" && cfg.LogFormat != "json" {
		return cfg, usagef("--log-format %q is not one of text, json", cfg.LogFormat)
	}
	for _, a := range []struct{ flag, addr string }{{"--xds-addr", cfg.XDSAddr}, {"--monitoring-addr", cfg.MonitoringAddr}} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return cfg, usagef("%s %q is not host:port: %v", a.flag, a.addr, err)
		}
	}
	if cfg.DebounceAfter <= 0 || cfg.DebounceMax < cfg.DebounceAfter {
		return cfg, usagef("--debounce-after (%s) must be positive and at most --debounce-max (%s)", cfg.DebounceAfter, cfg.DebounceMax)
	}
	plugin := cfg.CACert != "" || cfg.CAKey != "" || cfg.CAChain != ""
	if plugin && (cfg.CACert == "" || cfg.CAKey == "" || cfg.CAChain == "") {
		return cfg, usagef("a plug-in CA needs all of --ca-cert, --ca-key and --ca-chain")
	}
	if !plugin && cfg.CADir == "" {
		return cfg, usagef("--ca-dir is empty: name a directory for the CA root, or use --ca-cert/--ca-key/--ca-chain")
	}
	if cfg.CSRRate <= 0 || cfg.CSRBurst <= 0 {
		return cfg, usagef("--csr-rate (%g) and --csr-burst (%d) must be positive", cfg.CSRRate, cfg.CSRBurst)
	}
	if cfg.XDSAuth == "" {
		cfg.XDSAuth = "static"
		if cfg.kubeMode() {
			cfg.XDSAuth = "kubernetes"
		}
	}
	switch cfg.XDSAuth {
	case "none":
	case "static":
		if cfg.XDSTokenFile == "" {
			return cfg, usagef("--xds-auth=static needs --xds-token-file FILE (lines 'token,namespace,serviceaccount'); for local use only, pass --xds-auth=none")
		}
	case "kubernetes":
		if !cfg.kubeMode() {
			return cfg, usagef("%v", errNoKubeAuth)
		}
		for _, a := range strings.Split(audiences, ",") {
			if a = strings.TrimSpace(a); a != "" {
				cfg.XDSTokenAudiences = append(cfg.XDSTokenAudiences, a)
			}
		}
		if len(cfg.XDSTokenAudiences) == 0 {
			// An empty list would make TokenReview accept the API server's
			// own audience, i.e. every pod's default token: a token meant
			// for something else could then be replayed to meshd.
			return cfg, usagef("--xds-token-audience is empty; name the audience of the projected tokens (default %q)", DefaultTokenAudience)
		}
	default:
		return cfg, usagef("--xds-auth %q is not one of kubernetes, static, none", cfg.XDSAuth)
	}
	if cfg.XDSTokenFile != "" && cfg.XDSAuth != "static" {
		return cfg, usagef("--xds-token-file is only read with --xds-auth=static, not %s", cfg.XDSAuth)
	}
	if err := checkWebhook(&cfg, webhookHosts); err != nil {
		return cfg, err
	}
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "debug-auth" })
	if err := checkDebugAuth(&cfg, explicit); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// checkDebugAuth picks and checks who may read the debug API: in
// Kubernetes mode the API server decides, with the file source nobody is
// asked but the API stays on loopback unless --debug-auth says otherwise.
func checkDebugAuth(cfg *serveConfig, explicit bool) error {
	if cfg.DebugAuth == "" {
		cfg.DebugAuth = "none"
		if cfg.kubeMode() {
			cfg.DebugAuth = "kubernetes"
		}
	}
	switch cfg.DebugAuth {
	case "kubernetes":
		if !cfg.kubeMode() {
			return usagef("--debug-auth=kubernetes reviews tokens with the API server, so it needs --kubeconfig or --in-cluster; with --config-dir use --debug-auth=token")
		}
	case "token":
		if cfg.DebugTokenFile == "" {
			return usagef("--debug-auth=token needs --debug-token-file FILE (bearer tokens, one a line)")
		}
	case "none":
		if !explicit && !loopback(cfg.MonitoringAddr) {
			return usagef("--monitoring-addr %s is not a loopback address, and /debug/* on it reveals the whole mesh: "+
				"pass --debug-auth=token with --debug-token-file FILE, or --debug-auth=none to serve it to anyone who can connect", cfg.MonitoringAddr)
		}
	default:
		return usagef("--debug-auth %q is not one of kubernetes, token, none", cfg.DebugAuth)
	}
	if cfg.DebugTokenFile != "" && cfg.DebugAuth != "token" {
		return usagef("--debug-token-file is only read with --debug-auth=token, not %s", cfg.DebugAuth)
	}
	return nil
}

// loopback reports whether host:port addr listens on loopback only. An
// empty host (every interface) or a name other than localhost is not.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// checkSource checks that exactly one discovery source was chosen.
func checkSource(cfg *serveConfig) error {
	var chosen []string
	if cfg.ConfigDir != "" {
		chosen = append(chosen, "--config-dir")
	}
	if cfg.Kubeconfig != "" {
		chosen = append(chosen, "--kubeconfig")
	}
	if cfg.InCluster {
		chosen = append(chosen, "--in-cluster")
	}
	switch len(chosen) {
	case 0:
		return usagef("--config-dir is required, or --kubeconfig/--in-cluster: say where the mesh is described " +
			"(a directory of manifests such as examples/mesh, or a Kubernetes API server)")
	case 1:
	default:
		return usagef("%s are mutually exclusive: meshd reads the mesh from one source", strings.Join(chosen, " and "))
	}
	if cfg.Kubeconfig != "" {
		if _, err := os.Stat(cfg.Kubeconfig); err != nil {
			return usagef("--kubeconfig %s cannot be used: %v", cfg.Kubeconfig, err)
		}
	}
	if cfg.ConfigDir != "" {
		if info, err := os.Stat(cfg.ConfigDir); err != nil {
			return usagef("--config-dir %s cannot be used: %v", cfg.ConfigDir, err)
		} else if !info.IsDir() {
			return usagef("--config-dir %s is a file, not a directory", cfg.ConfigDir)
		}
	}
	return nil
}

func newLogger(cfg serveConfig, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve runs `meshd serve` until ctx ends.
func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseServeFlags(args, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	log.Info("meshd starting", "configDir", cfg.ConfigDir, "kubeconfig", cfg.Kubeconfig, "inCluster", cfg.InCluster,
		"rootNamespace", cfg.RootNamespace, "trustDomain", cfg.TrustDomain, "clusterDomain", cfg.ClusterDomain)
	if cfg.AccessLog.File != "" {
		log.Info("sidecar access log on; proxyless gRPC workloads write none (gRPC has no access log)",
			"accessLogFile", cfg.AccessLog.File, "accessLogEncoding", cfg.AccessLog.Encoding)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	var src discovery.Source
	var kube *kubeParts
	var authn auth.Authenticator = auth.None{}
	var debugClient kubernetes.Interface
	// The source reports changes as it sees them to the xDS server's
	// debounce; the server is made below, and a change seen before that
	// (none is: sources start in Run) would find nobody to tell.
	var observer atomic.Pointer[xds.Server]
	observe := discovery.Observer(func(at time.Time) {
		if srv := observer.Load(); srv != nil {
			srv.Observe(at)
		}
	})
	if cfg.kubeMode() {
		kube, err = newKubeParts(ctx, cfg, registry, log, observe)
		if err != nil {
			return err
		}
		defer kube.stop()
		src, debugClient = kube.source, kube.client
		if kube.authn != nil {
			authn = kube.authn
		}
	} else {
		src = file.New(cfg.ConfigDir, file.Options{RootNamespace: cfg.RootNamespace, Observe: observe}, log.With("source", "file"))
	}
	// Key sets named by jwksUri are fetched here, so proxies need no egress
	// and translation does no I/O.
	src = jwks.Wrap(src, jwks.Options{Refresh: cfg.JWKSRefresh, Log: log.With("component", "jwks")})

	authority, err := ca.New(ca.Options{
		Dir: cfg.CADir, CertFile: cfg.CACert, KeyFile: cfg.CAKey, ChainFile: cfg.CAChain,
		TrustDomain: cfg.TrustDomain, WorkloadTTL: cfg.WorkloadTTL,
	}, log.With("component", "ca"))
	if err != nil {
		return fmt.Errorf("starting the CA: %w", err)
	}
	if cfg.XDSAuth == "static" {
		tokens, err := auth.LoadStaticTokens(cfg.XDSTokenFile)
		if err != nil {
			return fmt.Errorf("loading --xds-token-file: %w", err)
		}
		authn = tokens
	}
	srv, err := xds.New(xds.Options{
		Addr:          cfg.XDSAddr,
		DebounceAfter: cfg.DebounceAfter,
		DebounceMax:   cfg.DebounceMax,
		Translate: translate.Options{
			TrustDomain: cfg.TrustDomain, ClusterDomain: cfg.ClusterDomain, RootNamespace: cfg.RootNamespace,
			AccessLog: cfg.AccessLog,
		},
		CA:            authority,
		CSRRate:       cfg.CSRRate,
		CSRBurst:      cfg.CSRBurst,
		Authenticator: authn,
		Registry:      registry,
		Log:           log, // the server adds component=xds itself
	})
	if err != nil {
		return fmt.Errorf("starting the xDS server: %w", err)
	}
	observer.Store(srv)
	// Listen before anything runs, so a port in use is a clear start-up
	// error rather than a log line after the mesh loaded.
	xdsLis, err := net.Listen("tcp", cfg.XDSAddr)
	if err != nil {
		return fmt.Errorf("--xds-addr %s: %w", cfg.XDSAddr, err)
	}
	monLis, err := net.Listen("tcp", cfg.MonitoringAddr)
	if err != nil {
		xdsLis.Close()
		return fmt.Errorf("--monitoring-addr %s: %w", cfg.MonitoringAddr, err)
	}
	var hook *webhook
	if cfg.WebhookAddr != "" {
		hook, err = newWebhook(cfg, kube.client, authority, log.With("component", "webhook"))
		if err != nil {
			xdsLis.Close()
			monLis.Close()
			return err
		}
	}
	log.Info("monitoring", "addr", monLis.Addr().String(), "metrics", "/metrics", "debug", "/debug/syncz")

	handler := srv.Handler()
	if cfg.Pprof {
		handler = withPprof(handler)
		log.Warn("serving Go's profiler at /debug/pprof/; it exposes memory contents, keep --monitoring-addr private")
	}
	handler, err = guardDebug(handler, cfg, debugClient, log)
	if err != nil {
		xdsLis.Close()
		monLis.Close()
		return err
	}
	mon := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	workers := 3
	errs := make(chan error, 4)
	go func() {
		if err := mon.Serve(monLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("serving monitoring on %s: %w", cfg.MonitoringAddr, err)
			return
		}
		errs <- nil
	}()
	go func() { errs <- srv.Serve(ctx, xdsLis) }()
	if hook != nil {
		workers++
		go func() { errs <- hook.run(ctx) }()
	}
	held := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "minimesh_discovery_held_objects",
		Help: "Objects whose newest version was refused while their last valid version stays in force, by kind.",
	}, []string{"kind"})
	if err := registry.Register(held); err != nil {
		return fmt.Errorf("registering the held-objects metric: %w", err)
	}
	p := &pipeline{log: log, xds: srv, held: held}
	go func() {
		if err := src.Run(ctx, p.publish); err != nil {
			errs <- fmt.Errorf("loading the mesh: %w", err)
			return
		}
		errs <- nil
	}()

	// The first error (or ctx) stops everything; then wait for the rest.
	var first error
	for range workers {
		err := <-errs
		if first == nil && err != nil {
			first = err
			log.Error("stopping", "err", err)
		}
		cancel()
		shutdownCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
		_ = mon.Shutdown(shutdownCtx)
		done()
	}
	log.Info("meshd stopped")
	return first
}

// guardDebug puts the --debug-auth check in front of the monitoring
// handler (see debugauth.Guard: everything but /metrics, /healthz and
// /readyz). client is the Kubernetes client, in Kubernetes mode.
func guardDebug(h http.Handler, cfg serveConfig, client kubernetes.Interface, log *slog.Logger) (http.Handler, error) {
	log = log.With("component", "debug-auth")
	switch cfg.DebugAuth {
	case "kubernetes":
		log.Info("the debug API needs a bearer token whose user may get /debug/* (ClusterRole minimesh-debug-reader)")
		return debugauth.Guard(h, debugauth.NewKubernetes(client), log), nil
	case "token":
		tokens, err := debugauth.LoadTokens(cfg.DebugTokenFile)
		if err != nil {
			return nil, fmt.Errorf("loading --debug-token-file: %w", err)
		}
		log.Info("the debug API needs a bearer token from --debug-token-file", "file", cfg.DebugTokenFile)
		return debugauth.Guard(h, tokens, log), nil
	}
	if loopback(cfg.MonitoringAddr) {
		log.Info("the debug API is open to local processes (--debug-auth=none on a loopback address)", "addr", cfg.MonitoringAddr)
	} else {
		log.Warn("the debug API is open to anyone who can connect (--debug-auth=none on a non-loopback address): it reveals the whole mesh", "addr", cfg.MonitoringAddr)
	}
	return h, nil
}

// defaultCADir is where the root lives when --ca-dir is not given: stable
// across restarts, so workload identities survive them.
func defaultCADir() string {
	if dir, err := os.UserConfigDir(); err == nil {
		return filepath.Join(dir, "minimesh", "ca")
	}
	return ""
}

// pipeline receives every snapshot the source publishes and hands it on.
type pipeline struct {
	log  *slog.Logger
	xds  *xds.Server
	held *prometheus.GaugeVec
}

func (p *pipeline) publish(s *model.Snapshot) {
	logSnapshot(p.log, s)
	if p.held != nil {
		p.held.Reset()
		for _, h := range s.Held {
			p.held.WithLabelValues(h.Kind).Inc()
		}
	}
	if p.xds != nil {
		p.xds.Update(s)
	}
}

// logSnapshot logs what a snapshot holds and every problem in it: errors
// (skipped objects or files) at ERROR, warnings at WARN.
func logSnapshot(log *slog.Logger, s *model.Snapshot) {
	endpoints, errs, warns := 0, 0, 0
	for _, se := range s.Endpoints {
		endpoints += len(se.Endpoints)
	}
	for _, h := range s.Held {
		log.Warn("invalid version refused; the last valid version stays in force",
			"kind", h.Kind, "object", strings.TrimPrefix(h.Namespace+"/"+h.Name, "/"),
			"refused", h.Refused, "serving", h.Serving, "reason", h.Reason)
	}
	for _, pr := range s.Problems {
		attrs := []any{"at", pr.Location.String()}
		if pr.Kind != "" {
			attrs = append(attrs, "kind", pr.Kind, "object", strings.TrimPrefix(pr.Namespace+"/"+pr.Name, "/"))
		}
		if pr.Field != "" {
			attrs = append(attrs, "field", pr.Field)
		}
		attrs = append(attrs, "reason", pr.Message)
		if pr.Severity == policy.SeverityError {
			errs++
			log.Error("invalid configuration skipped", attrs...)
		} else {
			warns++
			log.Warn("configuration warning", attrs...)
		}
	}
	ps := s.Policies
	log.Info("mesh loaded",
		"namespaces", len(s.Namespaces), "services", len(s.Services), "workloads", len(s.Workloads),
		"endpoints", endpoints,
		"policies", len(ps.PeerAuthentications)+len(ps.DestinationRules)+len(ps.AuthorizationPolicies)+len(ps.RequestAuthentications),
		"errors", errs, "warnings", warns, "held", len(s.Held))
}

// withPprof adds Go's profiler under /debug/pprof/ in front of h.
func withPprof(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.Handle("/", h)
	return mux
}
