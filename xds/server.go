// Package xds serves minimesh's configuration to proxies over ADS, both
// state-of-the-world and delta. go-control-plane's server speaks the
// protocol (streams, nonces, subscriptions, ACKs and NACKs). What to send
// is decided by caches behind go-control-plane's Cache interface: its
// SnapshotCache for secrets, and two of minimesh's own for configuration
// and endpoints, built so that a thousand proxies cost little more than
// the fifty groups they form (see configCache and endpointCache). Those
// two keep some of their per-stream state in the returned-resources maps
// go-control-plane keeps per stream (reserved entries starting with a NUL,
// see deltaSynced and heldBaseKey: what a client holds is a base shared by
// its group, see heldBase), and the request codec shows
// go-control-plane a stand-in for the thousand endpoint names of a
// request, state-of-the-world or delta (see nameLists.endpointList); everything
// else of the protocol is go-control-plane's.
//
// Data flows one way. The discovery source calls Update with every new model
// snapshot; a debouncer merges bursts; each push translates the model once
// per proxy group (replicas of one workload share a translation), checks the
// result, and publishes it. A group whose new resources fail a check keeps
// serving its last good snapshot. Secrets are per proxy: each Envoy proxy
// (node ID) that asks gets its own certificate from the CA over SDS on the
// same stream, renewed at half its lifetime. Proxyless workloads make their
// own key and get it certified by CSR instead (certService).
//
// A proxy may hold several streams at once under one node ID: a proxyless
// workload under meshctl agent has one stream per gRPC xDS client, for
// hours. So the server keeps two levels of state: per stream the exchange (what was sent, ACKed, NACKed), per node the
// workload, group, snapshots and certificate. The certificate is issued
// when the first stream of a node asks for SDS, shared by all of them,
// renewed once per node, and kept for a short grace period after the last
// stream closes so that a reconnect gets the same one.
//
// Four go-control-plane caches sit behind one MuxCache. Two snapshot
// caches, one for listeners, routes and clusters and one for secrets, are
// keyed by node ID, not by group: a proxy's entry in the config cache
// points at its group's shared, immutable snapshot, so memory and
// translation are still per group. Keying by node keeps all of a proxy's
// open watches, on all its streams, in one place whatever happens to its
// group: a proxy whose pod is not known yet simply has no snapshot (its
// watches stay open, SOTW and delta alike), and a pod whose labels change
// moves to another group without any watch being stranded under the old
// group's key. Setting the same snapshot again is free: go-control-plane
// answers only watches whose version differs. Endpoints are the same for
// every proxy of a flavour, so they live in one LinearCache per flavour
// (see endpointCache), which sends each proxy only the assignments that
// changed.
package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	securityv1alpha1 "istio.io/api/security/v1alpha1"

	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/translate"
	"github.com/minimesh/minimesh/xds/auth"
	"github.com/minimesh/minimesh/xds/ca"
)

// Defaults, as meshd's flags document them.
const (
	DefaultAddr          = "127.0.0.1:15010"
	DefaultDebounceAfter = 100 * time.Millisecond
	DefaultDebounceMax   = time.Second
)

// Options configure a Server. Zero values take the defaults above.
type Options struct {
	// Addr is where Run listens for ADS (gRPC).
	Addr string
	// DebounceAfter is the quiet period before a push; DebounceMax caps how
	// long a burst of changes can postpone it.
	DebounceAfter, DebounceMax time.Duration
	// Translate are the mesh-wide translation settings.
	Translate translate.Options
	// CA issues workload certificates. Without one, no secrets are served
	// and SDS requests stay unanswered.
	CA *ca.CA
	// CSRRate and CSRBurst limit the certificate requests signed for one
	// identity: a token bucket of CSRBurst refilled at CSRRate a second
	// (defaults DefaultCSRRate, DefaultCSRBurst).
	CSRRate  float64
	CSRBurst int
	// Authenticator checks the bearer token of each stream and each
	// certificate request; nil means
	// auth.None (any caller, identity taken from the node ID and the pod).
	Authenticator auth.Authenticator
	// Registry receives the metrics; nil means a private registry. Handler
	// serves /metrics from it when it is also a prometheus.Gatherer.
	Registry prometheus.Registerer
	// Log is the logger (default slog.Default()).
	Log *slog.Logger
	// SendBudget bounds the bytes of responses sent to proxies and not
	// yet answered (default DefaultSendBudget); see sendBudget.
	SendBudget int64
	// Now is the clock for certificate renewal decisions and the
	// timestamps the debug API shows (default time.Now). Debounce and
	// latency metrics always use the monotonic wall clock.
	Now func() time.Time
}

// Server is minimesh's ADS server. Create it with New, feed it with Update,
// serve it with Run (or Serve), and mount Handler for metrics and debug.
type Server struct {
	opts     Options
	log      *slog.Logger
	now      func() time.Time
	m        *metrics
	gatherer prometheus.Gatherer
	// translate, when set, replaces translation: tests use it to produce
	// resources translation itself never would (invalid, inconsistent).
	// Unset, each push translates its groups in one translate.Batch.
	translate func(*model.Snapshot, translate.Proxy, translate.Options) *translate.Resources
	resources *resourceTable // validated, shared resource contents

	config  *configCache          // LDS, RDS, CDS by node ID
	secrets cachev3.SnapshotCache // SDS by node ID
	eds     *endpointCache        // EDS, one shared collection per flavour
	cache   cachev3.Cache         // what the xDS server watches

	budget *sendBudget

	events    chan event
	renewKick chan struct{}
	ready     atomic.Bool
	served    atomic.Bool
	// connectQueued is set while a connect waits for buildMu.
	connectQueued atomic.Bool
	// pushesDone counts completed pushes, so tests can wait for one.
	pushesDone atomic.Uint64
	// lastPushed is the model of the last push; only push uses it,
	// on the debounce goroutine.
	lastPushed *model.Snapshot

	// buildMu serialises every write to the caches (pushes, first
	// connects, renewals, cleanup), so that what a proxy ends up with is
	// always the outcome of the latest decision. It is never taken while
	// holding mu.
	buildMu sync.Mutex
	// edsFrom is, per flavour, the model the endpoint cache was last
	// brought up to date with, and edsErr the last error that update
	// logged. Guarded by buildMu.
	edsFrom map[translate.Flavor]*model.Snapshot
	edsErr  map[translate.Flavor]string
	// edsBuilt keeps, per flavour, the assignments last built and what
	// they were built from (see checkAssignments).
	edsBuilt map[translate.Flavor]map[string]builtAssignment

	// mu guards the fields below. It is never held while calling into the
	// caches: go-control-plane delivers responses to stream goroutines
	// that call our callbacks, which take mu.
	mu      sync.Mutex
	model   *model.Snapshot
	groups  map[string]*group
	streams map[streamKey]*stream
	// nodes holds every node with an open stream, and for a grace period
	// the certificate of nodes whose last stream closed.
	nodes map[string]*nodeState
}

// New checks opts and builds a Server; nothing is served until Run.
func New(opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = DefaultAddr
	}
	if opts.DebounceAfter == 0 {
		opts.DebounceAfter = DefaultDebounceAfter
	}
	if opts.DebounceMax == 0 {
		opts.DebounceMax = DefaultDebounceMax
	}
	if opts.DebounceAfter < 0 || opts.DebounceMax < 0 {
		return nil, fmt.Errorf("debounce durations must not be negative (after %s, max %s)", opts.DebounceAfter, opts.DebounceMax)
	}
	if opts.DebounceMax < opts.DebounceAfter {
		return nil, fmt.Errorf("debounce maximum %s is shorter than the quiet period %s; set the maximum at least as long", opts.DebounceMax, opts.DebounceAfter)
	}
	if opts.SendBudget < 0 {
		return nil, fmt.Errorf("the send budget must not be negative (%d bytes)", opts.SendBudget)
	}
	if opts.SendBudget == 0 {
		opts.SendBudget = DefaultSendBudget
	}
	if opts.CSRRate < 0 || opts.CSRBurst < 0 {
		return nil, fmt.Errorf("the certificate request rate limit must not be negative (%g a second, burst %d)", opts.CSRRate, opts.CSRBurst)
	}
	if opts.CSRRate == 0 {
		opts.CSRRate = DefaultCSRRate
	}
	if opts.CSRBurst == 0 {
		opts.CSRBurst = DefaultCSRBurst
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Authenticator == nil {
		opts.Authenticator = auth.None{}
	}
	opts.Translate = opts.Translate.WithDefaults()
	reg := opts.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("registering xDS metrics: %w", err)
	}
	gatherer, ok := reg.(prometheus.Gatherer)
	if !ok {
		gatherer = prometheus.DefaultGatherer
	}
	s := &Server{
		opts:      opts,
		log:       opts.Log.With("component", "xds"),
		now:       opts.Now,
		m:         m,
		gatherer:  gatherer,
		resources: newResourceTable(),
		budget:    newSendBudget(opts.SendBudget, budgetMaxWait),
		edsFrom:   map[translate.Flavor]*model.Snapshot{},
		edsErr:    map[translate.Flavor]string{},
		edsBuilt:  map[translate.Flavor]map[string]builtAssignment{},
		events:    make(chan event, 64),
		renewKick: make(chan struct{}, 1),
		groups:    map[string]*group{},
		streams:   map[streamKey]*stream{},
		nodes:     map[string]*nodeState{},
	}
	// ads=false on purpose: in ADS mode the snapshot cache only answers a
	// request that names every resource of the type, which suits Envoy but
	// leaves proxyless gRPC (which asks for just the names it uses)
	// waiting forever. Without it, a named request gets exactly the named
	// resources.
	cacheLog := goControlPlaneLogger{s.log}
	nodeHash := cachev3.IDHash{}
	s.config = newConfigCache()
	s.secrets = cachev3.NewSnapshotCache(false, nodeHash, cacheLog)
	s.eds = newEndpointCache()
	classify := func(typeURL string, node *corev3.Node) string {
		switch typeURL {
		case resourcev3.SecretType:
			return typeSDS
		case resourcev3.EndpointType:
			return edsMuxKey(s.flavorOfNode(node))
		}
		return "config"
	}
	caches := s.eds.caches()
	caches["config"], caches[typeSDS] = s.config, s.secrets
	mux := &cachev3.MuxCache{
		Classify:      func(r *cachev3.Request) string { return classify(r.GetTypeUrl(), r.GetNode()) },
		ClassifyDelta: func(r *cachev3.DeltaRequest) string { return classify(r.GetTypeUrl(), r.GetNode()) },
		Caches:        caches,
	}
	s.cache = limitedCache{mux}
	if opts.CA != nil {
		m.rootExpiry.Set(float64(opts.CA.RootExpiry().Unix()))
	}
	if _, anonymous := opts.Authenticator.(auth.None); anonymous {
		s.log.Warn("xDS authentication is off (none): any local process can obtain any workload's certificate; use it only for local development")
	}
	return s, nil
}

// flavorOfNode is the flavour a request's node is served as: its node's,
// once bound (a node keeps the flavour of its first stream), or what its
// metadata declares.
func (s *Server) flavorOfNode(node *corev3.Node) translate.Flavor {
	s.mu.Lock()
	n := s.nodes[node.GetId()]
	s.mu.Unlock()
	if n != nil {
		return n.flavor
	}
	return flavorOf(node)
}

// maxRequestSize bounds one request from a proxy. A state-of-the-world
// EDS request names every cluster it uses: 100 bytes a name is 160,000
// clusters.
const maxRequestSize = 16 << 20

// budgetMaxWait is the longest a response waits for send budget before it
// goes out anyway (see sendBudget).
const budgetMaxWait = 5 * time.Second

// Update hands the server a new model snapshot. It is cheap and never
// blocks: the snapshot is stored and a debounced push is requested. The
// server keeps the pointer; callers must not modify the snapshot afterwards.
//
// The change counts from snap.ObservedAt, when the source saw it, if that
// is set and not in the future: the debounce window and the convergence
// times then include the time the source took to build the snapshot, as
// they do in Istio, where events are debounced before anything is built.
// A source that sets ObservedAt must also report each change as it sees it
// (Observe), so that the quiet period also waits for changes it is still
// building.
func (s *Server) Update(snap *model.Snapshot) {
	at := time.Now()
	if snap != nil && !snap.ObservedAt.IsZero() && snap.ObservedAt.Before(at) {
		at = snap.ObservedAt
	}
	s.mu.Lock()
	s.model = snap
	s.mu.Unlock()
	s.enqueue(event{first: at, last: at, published: at, count: 1})
}

// Observe is told that a source saw a change at the given time (see
// discovery.Observer): the change extends the debounce window, and the
// push reads whatever snapshot is the latest then. It is cheap and never
// blocks.
func (s *Server) Observe(at time.Time) {
	if now := time.Now(); at.IsZero() || at.After(now) {
		at = now
	}
	s.enqueue(event{first: at, last: at, count: 1})
}

func (s *Server) enqueue(e event) {
	select {
	case s.events <- e:
	default:
		// The queue is full of earlier changes; their push reads the
		// latest model, which includes this one.
	}
}

// Ready reports whether the first model snapshot has been translated and
// published, so proxies connecting now get a full configuration.
func (s *Server) Ready() bool { return s.ready.Load() }

// Run listens on Options.Addr and serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	lis, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("listening for xDS on %s: %w", s.opts.Addr, err)
	}
	return s.Serve(ctx, lis)
}

// Serve serves ADS, and with a CA Istio's certificate service
// (certService), on lis until ctx ends, then closes lis and every stream.
// It may be called once per Server.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	if !s.served.CompareAndSwap(false, true) {
		lis.Close()
		return errors.New("this xDS server is already serving; create another Server to serve twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	gs := grpc.NewServer(
		// Envoy's bootstrap (meshctl bootstrap) pings every 30s; allow it,
		// and keep half-dead connections from holding proxies' state.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		// A state-of-the-world EDS request names every cluster a sidecar
		// uses; beyond a few tens of thousands that is more than gRPC's
		// default limit of 4 MiB.
		grpc.MaxRecvMsgSize(maxRequestSize),
		grpc.ForceServerCodecV2(newRequestCodec(s.eds.lists)),
	)
	xs := serverv3.NewServer(ctx, s.cache, s.callbacks(), serverOption(s.log))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, &adsService{s: s, xds: xs})
	if s.opts.CA != nil {
		securityv1alpha1.RegisterIstioCertificateServiceServer(gs, &certService{s: s, limiter: newIdentityLimiter(s.opts.CSRRate, s.opts.CSRBurst)})
	}

	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		debounce(s.events, ctx.Done(), s.opts.DebounceAfter, s.opts.DebounceMax, realClock{}, s.push)
	}()
	go func() {
		defer wg.Done()
		s.renewLoop(ctx)
	}()

	s.log.Info("serving xDS", "addr", lis.Addr().String(), "debounce_after", s.opts.DebounceAfter, "debounce_max", s.opts.DebounceMax)
	serveErr := make(chan error, 1)
	go func() { serveErr <- gs.Serve(lis) }()
	var err error
	select {
	case <-ctx.Done():
		// Stop, not GracefulStop: ADS streams never end on their own.
		gs.Stop()
		if serr := <-serveErr; serr != nil && !errors.Is(serr, grpc.ErrServerStopped) {
			err = fmt.Errorf("serving xDS on %s: %w", lis.Addr(), serr)
		}
	case err = <-serveErr:
		err = fmt.Errorf("serving xDS on %s: %w", lis.Addr(), err)
		cancel()
	}
	wg.Wait()
	return err
}

// Handler serves /metrics, /healthz, /readyz and the debug API.
func (s *Server) Handler() http.Handler { return s.debugHandler() }

// push is one debounced push: translate every group that has proxies,
// publish what passed the checks.
func (s *Server) push(e event) {
	start := time.Now()
	s.mu.Lock()
	m := s.model
	s.mu.Unlock()
	if m == nil {
		// Changes observed before the source's first snapshot (the
		// events of its initial list): nothing to push, and not ready.
		return
	}
	if m == s.lastPushed {
		// Only observed changes that did not alter the mesh: the
		// sources published nothing new.
		s.pushesDone.Add(1)
		return
	}
	s.lastPushed = m
	changedAt := e.published
	if changedAt.IsZero() {
		changedAt = e.first
	}
	s.m.debounce.Observe(start.Sub(e.first).Seconds())
	s.sync(m, changedAt)
	s.m.pushBuild.Observe(time.Since(start).Seconds())
	s.ready.Store(true)
	s.pushesDone.Add(1)
}

// workers bounds parallel translations: translation is CPU-bound.
func workers() int { return max(1, runtime.GOMAXPROCS(0)) }
