// Package agent does for a proxyless gRPC workload what Istio's agent does
// for it: it makes the workload's private key (ECDSA P-256) itself, gets it
// certified by meshd with a certificate signing request (Istio's
// IstioCertificateService/CreateCertificate, with the workload's token),
// writes key, chain and trust bundle to files that gRPC's file_watcher
// certificate provider reads, renews them at half their lifetime, writes
// the gRPC xDS bootstrap, and runs the workload with GRPC_XDS_BOOTSTRAP
// pointing at it. The key never leaves the agent's certificate directory:
// meshd sees only the request, and the agent asks meshd for no secret over
// xDS. The bundle is the last entry of meshd's answer, as in Istio.
//
// The agent is also the workload's xDS proxy, as Istio's agent is. The
// bootstrap points gRPC at a local socket of the agent, and the agent relays
// each of the workload's ADS streams to meshd on a stream of its own:
//
//   - meshd authenticates every stream with a bearer token. gRPC-Go v1.85
//     can only send a token from its bootstrap (gRFC A97 call_creds,
//     jwt_token_file) behind GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS and
//     only over a TLS channel to the control plane; meshd's ADS port is
//     plaintext. The agent adds the token instead, re-reading the file on
//     every connection because projected tokens rotate.
//   - The workload never sees the token or asks for secrets itself.
//
// gRPC-Go opens one xDS stream per dial target and one for its server, so
// a workload that serves and dials two services holds three streams at
// once. Each is relayed 1:1 to its own upstream stream, opened and closed
// with it: a SOTW server ignores a request whose nonce it did not send, so
// a workload stream's requests only make sense on the upstream stream that
// sent the responses they answer. When an upstream stream fails, only its
// workload stream is ended, with Unavailable, and gRPC reconnects it while
// keeping the configuration it holds.
//
// Certificates do not depend on any of those streams: each is one unary
// call, made at start and at half the lifetime of the certificate in use.
// When a call fails (meshd down, rate limited) the files stay as they are,
// the workload keeps serving with its certificate and last configuration,
// and the call is retried with backoff.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
	securityv1alpha1 "istio.io/api/security/v1alpha1"

	"github.com/minimesh/minimesh/xds/auth"
)

// File names inside Options.CertDir. They are the names Istio's agent uses
// for proxyless workloads, so operators recognise them.
const (
	CertChainFile = "cert-chain.pem"
	KeyFile       = "key.pem"
	RootCertFile  = "root-cert.pem"
	BootstrapFile = "grpc-bootstrap.json"
	// ProxySocket is the agent's local xDS endpoint for the workload.
	ProxySocket = "xds.sock"
)

// Defaults.
const (
	DefaultXDSAddress      = "127.0.0.1:15010"
	DefaultClusterDomain   = "cluster.local"
	DefaultCertTimeout     = 30 * time.Second
	DefaultRefreshInterval = time.Second
	// CertificateProvider is the certificate provider instance name in the
	// bootstrap; proxyless translation refers to it by this name.
	CertificateProvider = "default"
	// ServerListenerTemplate names a gRPC server's Listener from its
	// listening address, as Istio does for proxyless servers.
	ServerListenerTemplate = "grpc/server?xds.resource.listening_address=%s"
	// MetadataAgent marks node metadata sent by minimesh's agent, so meshd
	// (and meshctl proxy-status) can tell it from a hand-written bootstrap.
	MetadataAgent = "minimesh.io/agent"
)

// Options configure an Agent.
type Options struct {
	// Pod, Namespace and IP identify the workload; they make up the node ID
	// sidecar~IP~Pod.Namespace~Namespace.svc.ClusterDomain.
	Pod, Namespace, IP string
	// XDSAddress is meshd's ADS address (default 127.0.0.1:15010).
	XDSAddress string
	// TokenFile, if set, holds the bearer token sent to meshd. It is read
	// again on every (re)connection.
	TokenFile string
	// CertDir receives the certificate files, the bootstrap and the proxy
	// socket. It is created with mode 0700. Empty means a temporary
	// directory that Close removes. The certificate files are links into
	// a generation directory that is replaced as a whole on rotation (see
	// secretSet.write).
	CertDir string
	// ClusterDomain is the DNS suffix (default cluster.local).
	ClusterDomain string
	// CertTimeout bounds the wait for the first certificate in Run and
	// Serve (default 30s).
	CertTimeout time.Duration
	// RefreshInterval is how often gRPC's file_watcher re-reads the
	// certificate files (default 1s). Certificates rotate at half their
	// lifetime, so this only needs to be small against that.
	RefreshInterval time.Duration
	// Locality is the workload's locality, if known.
	Locality *corev3.Locality
	// Log is the logger (default slog.Default()).
	Log *slog.Logger
}

// Agent keeps one workload's certificates fresh and proxies its xDS.
// Create it with New, then Start it; Close stops it.
type Agent struct {
	opts      Options
	log       *slog.Logger
	node      *corev3.Node
	tempDir   bool
	bootstrap []byte

	conn     *grpc.ClientConn
	ads      discoveryv3.AggregatedDiscoveryServiceClient
	ca       securityv1alpha1.IstioCertificateServiceClient
	lis      net.Listener
	proxyURI string
	server   *grpc.Server

	// ctx ends when the agent stops; relayed streams end with it.
	ctx context.Context

	streamsMu sync.Mutex
	streams   int            // workload streams being relayed
	stopping  bool           // set by Close: no new relays
	relays    sync.WaitGroup // their handlers, which Close waits for

	certMu   sync.Mutex
	cert     *Certificate
	certCond chan struct{}

	firstCert chan struct{}
	firstOnce sync.Once

	cancel context.CancelFunc
	done   chan struct{}
	closed chan struct{}
	closeO sync.Once
}

// New checks opts, prepares CertDir and the proxy socket, and writes the
// bootstrap. Nothing is contacted until Start.
func New(opts Options) (*Agent, error) {
	if opts.XDSAddress == "" {
		opts.XDSAddress = DefaultXDSAddress
	}
	if opts.ClusterDomain == "" {
		opts.ClusterDomain = DefaultClusterDomain
	}
	if opts.CertTimeout <= 0 {
		opts.CertTimeout = DefaultCertTimeout
	}
	if opts.RefreshInterval <= 0 {
		opts.RefreshInterval = DefaultRefreshInterval
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Pod == "" || opts.Namespace == "" || opts.IP == "" {
		return nil, errors.New("the agent needs the workload's pod name, namespace and IP (--pod, --namespace, --ip)")
	}
	id := auth.SidecarNodeID(opts.IP, opts.Pod, opts.Namespace, opts.ClusterDomain)
	if _, err := auth.ParseNodeID(id.String()); err != nil {
		return nil, fmt.Errorf("the workload's pod, namespace or IP cannot form a node ID: %w", err)
	}
	a := &Agent{
		opts:      opts,
		log:       opts.Log.With("node", id.String()),
		certCond:  make(chan struct{}),
		firstCert: make(chan struct{}),
		done:      make(chan struct{}),
		closed:    make(chan struct{}),
	}
	a.node = &corev3.Node{
		Id:       id.String(),
		Cluster:  opts.Pod + "." + opts.Namespace,
		Locality: opts.Locality,
		Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			"GENERATOR":   structpb.NewStringValue("grpc"),
			MetadataAgent: structpb.NewStringValue("true"),
			"NAMESPACE":   structpb.NewStringValue(opts.Namespace),
			"POD_NAME":    structpb.NewStringValue(opts.Pod),
			"INSTANCE_IP": structpb.NewStringValue(opts.IP),
		}},
		UserAgentName: "minimesh-agent",
	}

	if a.opts.CertDir == "" {
		dir, err := os.MkdirTemp("", "minimesh-agent-")
		if err != nil {
			return nil, fmt.Errorf("creating a temporary certificate directory: %w", err)
		}
		a.opts.CertDir, a.tempDir = dir, true
	} else {
		abs, err := filepath.Abs(a.opts.CertDir)
		if err != nil {
			return nil, fmt.Errorf("certificate directory %q: %w", a.opts.CertDir, err)
		}
		a.opts.CertDir = abs
		if err := os.MkdirAll(abs, 0o700); err != nil {
			return nil, fmt.Errorf("creating the certificate directory: %w", err)
		}
	}
	if err := a.listen(); err != nil {
		a.cleanup()
		return nil, err
	}
	b, err := a.buildBootstrap()
	if err != nil {
		a.cleanup()
		return nil, err
	}
	a.bootstrap = b
	if err := writeFileAtomic(a.BootstrapPath(), b, 0o644); err != nil {
		a.cleanup()
		return nil, fmt.Errorf("writing the gRPC bootstrap: %w", err)
	}
	return a, nil
}

// maxUnixPath leaves room under the 108-byte sun_path limit of Linux.
const maxUnixPath = 100

// listen opens the local xDS endpoint: a Unix socket in CertDir, whose
// directory mode keeps other users out, or loopback TCP when the path is too
// long for a socket address.
func (a *Agent) listen() error {
	path := filepath.Join(a.opts.CertDir, ProxySocket)
	if len(path) <= maxUnixPath {
		_ = os.Remove(path) // a socket left by an agent that was killed
		lis, err := net.Listen("unix", path)
		if err == nil {
			a.lis, a.proxyURI = lis, "unix://"+path
			return nil
		}
		a.log.Warn("cannot listen on a Unix socket for the workload's xDS; using loopback TCP", "path", path, "error", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("opening the agent's local xDS endpoint: %w", err)
	}
	a.lis, a.proxyURI = lis, lis.Addr().String()
	return nil
}

// NodeID is the node ID the agent and the workload present to meshd.
func (a *Agent) NodeID() string { return a.node.GetId() }

// CertDir is the directory holding the certificate files and the bootstrap.
func (a *Agent) CertDir() string { return a.opts.CertDir }

// BootstrapPath is the bootstrap file; run the workload with
// GRPC_XDS_BOOTSTRAP set to it.
func (a *Agent) BootstrapPath() string { return filepath.Join(a.opts.CertDir, BootstrapFile) }

// Bootstrap is the gRPC bootstrap JSON the agent wrote.
func (a *Agent) Bootstrap() []byte { return append([]byte(nil), a.bootstrap...) }

// ProxyURI is the server_uri in the bootstrap: the agent's local endpoint.
func (a *Agent) ProxyURI() string { return a.proxyURI }

// Start connects to meshd and serves the workload's xDS until ctx ends or
// Close is called. It returns at once; connection failures are retried
// with backoff and logged.
func (a *Agent) Start(ctx context.Context) error {
	conn, err := grpc.NewClient(a.opts.XDSAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("meshd address %q: %w", a.opts.XDSAddress, err)
	}
	a.conn = conn
	a.ads = discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	a.ca = securityv1alpha1.NewIstioCertificateServiceClient(conn)
	// The context exists before the endpoint serves: relays derive theirs
	// from it.
	a.ctx, a.cancel = context.WithCancel(ctx)
	a.server = grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(a.server, &proxyService{a: a})
	go func() {
		if err := a.server.Serve(a.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			a.log.Error("the agent's local xDS endpoint stopped", "error", err)
		}
	}()
	go func() {
		defer close(a.done)
		a.certLoop(a.ctx)
	}()
	a.log.Info("agent started", "meshd", a.opts.XDSAddress, "cert_dir", a.opts.CertDir, "xds_proxy", a.proxyURI)
	return nil
}

// Close stops the agent. The certificate files stay (unless CertDir was a
// temporary directory), so a workload restarted later can reuse them until
// they expire.
func (a *Agent) Close() error {
	a.closeO.Do(func() {
		close(a.closed)
		if a.cancel != nil {
			a.cancel()
			<-a.done
		}
		if a.server != nil {
			a.server.Stop()
		}
		// Stop ends the relays' streams without waiting for their
		// handlers; they must be gone before the connection to meshd is.
		a.streamsMu.Lock()
		a.stopping = true
		a.streamsMu.Unlock()
		a.relays.Wait()
		if a.conn != nil {
			_ = a.conn.Close()
		}
		a.cleanup()
	})
	return nil
}

func (a *Agent) cleanup() {
	if a.lis != nil {
		_ = a.lis.Close()
	}
	if a.tempDir {
		_ = os.RemoveAll(a.opts.CertDir)
	}
}

// WaitForCertificate blocks until the first certificate is on disk, ctx
// ends, or the agent stops.
func (a *Agent) WaitForCertificate(ctx context.Context) error {
	select {
	case <-a.firstCert:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-a.closed:
		return errors.New("the agent stopped before it received a certificate")
	}
}

// Certificate is the workload certificate the agent last wrote.
func (a *Agent) Certificate() (Certificate, bool) {
	a.certMu.Lock()
	defer a.certMu.Unlock()
	if a.cert == nil {
		return Certificate{}, false
	}
	return *a.cert, true
}

// WaitForNewCertificate blocks until a certificate other than the one with
// serial old is on disk, and returns it.
func (a *Agent) WaitForNewCertificate(ctx context.Context, old string) (Certificate, error) {
	for {
		a.certMu.Lock()
		c, ch := a.cert, a.certCond
		a.certMu.Unlock()
		if c != nil && c.Serial != old {
			return *c, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return Certificate{}, ctx.Err()
		case <-a.closed:
			return Certificate{}, errors.New("the agent stopped")
		}
	}
}

func (a *Agent) setCertificate(c *Certificate) {
	a.certMu.Lock()
	a.cert = c
	close(a.certCond)
	a.certCond = make(chan struct{})
	a.certMu.Unlock()
	a.firstOnce.Do(func() { close(a.firstCert) })
}
