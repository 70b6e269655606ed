package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/config"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/minimesh/minimesh/translate"
	"github.com/minimesh/minimesh/xds/auth"
	"github.com/minimesh/minimesh/xds/ca"
)

// streamKey identifies a stream: go-control-plane numbers SOTW and delta
// streams independently, so the number alone is ambiguous.
type streamKey struct {
	delta bool
	id    int64
}

// proxy is what the server knows about one ADS stream. Fields are guarded
// by Server.mu.
type proxy struct {
	key      streamKey
	identity auth.Identity // what the stream's token proved
	peer     string
	openedAt time.Time // wall clock, for convergence
	shownAt  time.Time // Options.Now, for the debug API

	// Set by the first request.
	bound  bool
	nodeID string
	node   auth.NodeID
	flavor translate.Flavor
	// refused, once set, ends the stream at its next request.
	refused error

	// Set when publishing.
	published  bool   // its pod has been resolved and published to once
	workload   string // namespace/name, empty while waiting
	waiting    bool   // the pod is not (or no longer) known
	group      string
	configSnap *cachev3.Snapshot // what the config cache holds for this node
	secretSnap *cachev3.Snapshot
	cert       *ca.Certificate // without its key once published
	certFor    auth.Identity
	renewAt    time.Time // next certificate issue (renewal or retry)
	certErr    error

	types map[string]*typeState // by short type name
	sent  []sentResponse        // recent responses, for matching ACKs by nonce
}

// typeState tracks one type's exchange with one proxy.
type typeState struct {
	Sent, Acked, Nacked string
	NackError           string
	SentAt, AckedAt     time.Time
	NackedAt            time.Time
	// nackPending: the latest response of this type was NACKed and
	// nothing newer has been sent since, so it must not be re-sent.
	nackPending bool
	// reported holds the versions whose NACK was logged and counted.
	reported map[string]bool
	// converged is the last version whose convergence was measured.
	converged string
}

type sentResponse struct {
	nonce, typ, version string
}

// maxSentTracked bounds the nonce history per stream. A proxy answers each
// response promptly, so only the last few can still be ACKed or NACKed.
const maxSentTracked = 32

func (p *proxy) typeState(typ string) *typeState {
	ts := p.types[typ]
	if ts == nil {
		ts = &typeState{}
		p.types[typ] = ts
	}
	return ts
}

func (p *proxy) takeNonce(nonce string) (sentResponse, bool) {
	for i, r := range p.sent {
		if r.nonce == nonce {
			p.sent = append(p.sent[:i], p.sent[i+1:]...)
			return r, true
		}
	}
	return sentResponse{}, false
}

func (p *proxy) logAttrs() []any {
	attrs := []any{"node", p.nodeID}
	if p.key.delta {
		attrs = append(attrs, "delta", true)
	}
	return attrs
}

// identityKey carries the authenticated identity from the gRPC handler to
// the stream-open callback.
type identityKey struct{}

// adsService authenticates each stream before handing it to
// go-control-plane's server: the token is in the stream's metadata, which
// is known before the first request arrives.
type adsService struct {
	s   *Server
	xds serverv3.Server
}

func (a *adsService) StreamAggregatedResources(st grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	ctx, err := a.s.authenticate(st.Context())
	if err != nil {
		return err
	}
	return a.xds.StreamAggregatedResources(sotwStream{st, ctx})
}

func (a *adsService) DeltaAggregatedResources(st grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) error {
	ctx, err := a.s.authenticate(st.Context())
	if err != nil {
		return err
	}
	return a.xds.DeltaAggregatedResources(deltaStream{st, ctx})
}

type sotwStream struct {
	grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	ctx context.Context
}

func (s sotwStream) Context() context.Context { return s.ctx }

type deltaStream struct {
	grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]
	ctx context.Context
}

func (s deltaStream) Context() context.Context { return s.ctx }

// authenticate checks the stream's bearer token and returns a context
// carrying the identity it proves.
func (s *Server) authenticate(ctx context.Context) (context.Context, error) {
	a := s.opts.Authenticator
	var id auth.Identity
	var err error
	switch a.(type) {
	case auth.None, *auth.None:
		id = auth.Identity{Anonymous: true}
	default:
		var token string
		token, err = auth.BearerToken(ctx)
		if err == nil {
			id, err = a.Authenticate(ctx, token)
		}
	}
	if err != nil {
		s.m.rejected.WithLabelValues("unauthenticated").Inc()
		s.log.Warn("refused an xDS stream", "peer", peerAddr(ctx), "error", err)
		return nil, refusal(err)
	}
	return context.WithValue(ctx, identityKey{}, id), nil
}

// refusal is the gRPC status a refused stream ends with.
func refusal(err error) error {
	return status.Errorf(grpcCode(err), "minimesh refused the xDS stream: %v", err)
}

// grpcCode maps auth's error classes to gRPC status codes.
func grpcCode(err error) codes.Code {
	switch {
	case errors.Is(err, auth.ErrBadNodeID):
		return codes.InvalidArgument
	case errors.Is(err, auth.ErrPermissionDenied):
		return codes.PermissionDenied
	default:
		return codes.Unauthenticated
	}
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// callbacks connects go-control-plane's stream events to the server.
func (s *Server) callbacks() serverv3.CallbackFuncs {
	return serverv3.CallbackFuncs{
		StreamOpenFunc: func(ctx context.Context, id int64, _ string) error {
			s.openStream(ctx, streamKey{id: id})
			return nil
		},
		DeltaStreamOpenFunc: func(ctx context.Context, id int64, _ string) error {
			s.openStream(ctx, streamKey{delta: true, id: id})
			return nil
		},
		StreamClosedFunc:      func(id int64, _ *corev3.Node) { s.closeStream(streamKey{id: id}) },
		DeltaStreamClosedFunc: func(id int64, _ *corev3.Node) { s.closeStream(streamKey{delta: true, id: id}) },
		StreamRequestFunc: func(id int64, r *discoveryv3.DiscoveryRequest) error {
			return s.onRequest(streamKey{id: id}, r.GetNode(), r.GetTypeUrl(), r.GetResponseNonce(), r.GetErrorDetail())
		},
		StreamDeltaRequestFunc: func(id int64, r *discoveryv3.DeltaDiscoveryRequest) error {
			return s.onRequest(streamKey{delta: true, id: id}, r.GetNode(), r.GetTypeUrl(), r.GetResponseNonce(), r.GetErrorDetail())
		},
		StreamResponseFunc: func(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, r *discoveryv3.DiscoveryResponse) {
			s.onResponse(streamKey{id: id}, r.GetTypeUrl(), r.GetNonce(), r.GetVersionInfo())
		},
		StreamDeltaResponseFunc: func(id int64, _ *discoveryv3.DeltaDiscoveryRequest, r *discoveryv3.DeltaDiscoveryResponse) {
			s.onResponse(streamKey{delta: true, id: id}, r.GetTypeUrl(), r.GetNonce(), r.GetSystemVersionInfo())
		},
		FetchRequestFunc: func(context.Context, *discoveryv3.DiscoveryRequest) error {
			return status.Error(codes.Unimplemented, "minimesh serves xDS over ADS streams only")
		},
	}
}

func (s *Server) openStream(ctx context.Context, key streamKey) {
	id, _ := ctx.Value(identityKey{}).(auth.Identity)
	p := &proxy{
		key:      key,
		identity: id,
		peer:     peerAddr(ctx),
		openedAt: time.Now(),
		shownAt:  s.now(),
		types:    map[string]*typeState{},
	}
	s.mu.Lock()
	s.streams[key] = p
	s.mu.Unlock()
}

// onRequest runs for every request before go-control-plane acts on it. The
// first request binds the stream to a node; later ones ACK or NACK what
// was sent. A returned error ends the stream with that status.
func (s *Server) onRequest(key streamKey, node *corev3.Node, typeURL, nonce string, nack *statuspb.Status) error {
	s.mu.Lock()
	p := s.streams[key]
	if p == nil {
		s.mu.Unlock()
		return status.Error(codes.Internal, "minimesh lost track of this stream; reconnect")
	}
	if p.refused != nil {
		err := p.refused
		s.mu.Unlock()
		return err
	}
	if !p.bound {
		if err := s.bind(p, node); err != nil {
			s.mu.Unlock()
			return err
		}
		p.typeState(shortType(typeURL))
		s.mu.Unlock()
		// Publishing needs buildMu and may translate: do it off the
		// stream's goroutine. Until it is done the watches simply wait.
		go s.connect()
		return nil
	}
	// Every type the proxy asks for is listed in syncz, even before a
	// response exists for it.
	p.typeState(shortType(typeURL))
	if nonce == "" {
		s.mu.Unlock()
		return nil
	}
	sent, ok := p.takeNonce(nonce)
	if !ok {
		// A nonce from before a restart, or one already answered.
		s.mu.Unlock()
		return nil
	}
	ts := p.typeState(sent.typ)
	now := s.now()
	if nack != nil {
		ts.Nacked, ts.NackError, ts.NackedAt = sent.version, nack.GetMessage(), now
		ts.nackPending = ts.Sent == sent.version
		if ts.reported == nil {
			ts.reported = map[string]bool{}
		}
		first := !ts.reported[sent.version]
		if first {
			if len(ts.reported) >= maxSentTracked {
				clear(ts.reported)
			}
			ts.reported[sent.version] = true
		}
		attrs := append(p.logAttrs(), "type", sent.typ, "version", sent.version, "error", nack.GetMessage())
		s.mu.Unlock()
		if first {
			s.m.nacks.WithLabelValues(sent.typ).Inc()
			s.log.Warn("proxy rejected configuration (NACK); it keeps its last accepted version, and this version is not sent again", attrs...)
		}
		return nil
	}
	ts.Acked, ts.AckedAt = sent.version, now
	if ts.Sent == sent.version {
		ts.nackPending = false
	}
	var converged time.Duration
	if g := s.groups[p.group]; g != nil && ts.converged != sent.version {
		if tr, ok := g.triggers[sent.typ]; ok && tr.version == sent.version && tr.at.After(p.openedAt) {
			converged = time.Since(tr.at)
			ts.converged = sent.version
		}
	}
	s.mu.Unlock()
	if converged > 0 {
		s.m.convergence.WithLabelValues(sent.typ).Observe(converged.Seconds())
	}
	return nil
}

// bind reads the node from a stream's first request: its ID, flavour, and
// whether the stream's identity may speak for it. Called with mu held.
func (s *Server) bind(p *proxy, node *corev3.Node) error {
	refuse := func(reason string, err error) error {
		p.refused = refusal(err)
		s.m.rejected.WithLabelValues(reason).Inc()
		s.log.Warn("refused an xDS stream", "peer", p.peer, "node", node.GetId(), "error", err)
		return p.refused
	}
	if node.GetId() == "" {
		return refuse("node_id", fmt.Errorf("%w: the first request carries no node ID; set node.id to sidecar~<pod IP>~<pod>.<namespace>~<namespace>.svc.cluster.local", auth.ErrBadNodeID))
	}
	id, err := auth.ParseNodeID(node.GetId())
	if err != nil {
		return refuse("node_id", err)
	}
	// Check as much as is known now, so a mismatch ends the stream at its
	// first request: the namespace always, the service account when
	// discovery already knows the pod. A pod that appears later is checked
	// when it does (sync).
	var podSA string
	if s.model != nil {
		if w := s.model.Workload(id.Namespace, id.Pod); w != nil {
			podSA = w.ServiceAccount
		}
	}
	if _, err := auth.Authorize(p.identity, id, podSA); err != nil && !errors.Is(err, auth.ErrPodUnknown) {
		return refuse("permission_denied", err)
	}
	p.bound = true
	p.nodeID = node.GetId()
	p.node = id
	p.flavor = flavorOf(node)
	p.waiting = true
	s.nodes[p.nodeID] = p
	s.m.connected.Inc()
	s.log.Info("proxy connected", append(p.logAttrs(), "peer", p.peer, "flavor", p.flavor, "identity", p.identity.String())...)
	return nil
}

// flavorOf reads the data-plane flavour from node metadata, as Istio does:
// GENERATOR=grpc marks a proxyless gRPC workload.
func flavorOf(node *corev3.Node) translate.Flavor {
	if node.GetMetadata().GetFields()["GENERATOR"].GetStringValue() == "grpc" {
		return translate.FlavorProxyless
	}
	return translate.FlavorEnvoy
}

func (s *Server) onResponse(key streamKey, typeURL, nonce, version string) {
	typ := shortType(typeURL)
	s.m.pushes.WithLabelValues(typ).Inc()
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.streams[key]
	if p == nil {
		return
	}
	ts := p.typeState(typ)
	if ts.Sent != version {
		ts.nackPending = false
	}
	ts.Sent, ts.SentAt = version, s.now()
	if len(p.sent) >= maxSentTracked {
		p.sent = p.sent[1:]
	}
	p.sent = append(p.sent, sentResponse{nonce: nonce, typ: typ, version: version})
}

func (s *Server) closeStream(key streamKey) {
	s.mu.Lock()
	p := s.streams[key]
	delete(s.streams, key)
	if p == nil || !p.bound {
		s.mu.Unlock()
		return
	}
	s.m.connected.Dec()
	last := s.nodes[p.nodeID] == p
	if last {
		delete(s.nodes, p.nodeID)
	}
	s.mu.Unlock()
	s.log.Info("proxy disconnected", p.logAttrs()...)
	if last {
		go s.forget(p.nodeID)
	}
}

// forget drops a node's cache entries once no stream of it is left, so a
// long-running meshd does not accumulate snapshots of departed proxies.
func (s *Server) forget(nodeID string) {
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	s.mu.Lock()
	_, back := s.nodes[nodeID]
	s.mu.Unlock()
	if back {
		return // reconnected meanwhile; its new stream uses the entries
	}
	s.config.ClearSnapshot(nodeID)
	s.secrets.ClearSnapshot(nodeID)
	s.updateWorkloadExpiry()
}

// nackGuard stops go-control-plane's snapshot cache from re-sending a
// version a proxy has just rejected. A SOTW NACK carries the last version
// the proxy accepted; the cache sees that it differs from the snapshot and
// answers at once with the same rejected version, which the proxy NACKs
// again, in a tight loop. The guard presents such a request as if it
// carried the rejected version, so the cache waits until the snapshot
// actually changes. Delta needs no guard: the server records what it sent
// when it sends it, so a NACK finds nothing new to send.
type nackGuard struct {
	cachev3.Cache
	s *Server
}

func (g *nackGuard) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, ch chan cachev3.Response) (func(), error) {
	if v := g.s.rejectedVersion(req.GetNode().GetId(), req.GetTypeUrl()); v != "" && v != req.GetVersionInfo() {
		req = &discoveryv3.DiscoveryRequest{
			VersionInfo:      v,
			Node:             req.GetNode(),
			ResourceNames:    req.GetResourceNames(),
			ResourceLocators: req.GetResourceLocators(),
			TypeUrl:          req.GetTypeUrl(),
			ResponseNonce:    req.GetResponseNonce(),
			ErrorDetail:      req.GetErrorDetail(),
		}
	}
	return g.Cache.CreateWatch(req, sub, ch)
}

// rejectedVersion is the version of typeURL the node NACKed, if that is
// still the latest it was sent.
func (s *Server) rejectedVersion(nodeID, typeURL string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.nodes[nodeID]
	if p == nil || p.key.delta {
		return ""
	}
	ts := p.types[shortType(typeURL)]
	if ts == nil || !ts.nackPending {
		return ""
	}
	return ts.Nacked
}

// goControlPlaneLogger sends go-control-plane's logs to slog. Its Info
// lines are per-watch chatter, so they go to Debug.
type goControlPlaneLogger struct{ log *slog.Logger }

func (l goControlPlaneLogger) Debugf(f string, a ...any) { l.log.Debug(fmt.Sprintf(f, a...)) }
func (l goControlPlaneLogger) Infof(f string, a ...any)  { l.log.Debug(fmt.Sprintf(f, a...)) }
func (l goControlPlaneLogger) Warnf(f string, a ...any)  { l.log.Warn(fmt.Sprintf(f, a...)) }
func (l goControlPlaneLogger) Errorf(f string, a ...any) { l.log.Error(fmt.Sprintf(f, a...)) }

func serverOption(log *slog.Logger) config.XDSOption {
	return func(o *config.Opts) { o.Logger = goControlPlaneLogger{log.With("component", "go-control-plane")} }
}
