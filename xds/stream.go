package xds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/config"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/translate"
	"github.com/minimesh/minimesh/xds/auth"
	"github.com/minimesh/minimesh/xds/ca"
	"github.com/minimesh/minimesh/xds/internal/clip"
)

// streamKey identifies a stream: go-control-plane numbers SOTW and delta
// streams independently, so the number alone is ambiguous.
type streamKey struct {
	delta bool
	id    int64
}

// stream is what the server knows about one ADS stream. A node may have
// several at once (a proxyless workload under meshctl agent has one per
// gRPC xDS client), so everything that belongs to
// the proxy rather than to the exchange lives in its nodeState. Fields are
// guarded by Server.mu.
type stream struct {
	key      streamKey
	identity auth.Identity // what the stream's token proved
	peer     string
	openedAt time.Time // wall clock, for convergence
	shownAt  time.Time // Options.Now, for the debug API

	// Set by the first request.
	bound bool
	node  *nodeState
	// refused, once set, ends the stream at its next request or response.
	refused error
	// authorized is set once auth.Authorize accepted this stream's token
	// for its node's pod; authorizedAs is the identity it returned. Only
	// such a stream may receive the node's secrets.
	authorized   bool
	authorizedAs auth.Identity

	types map[string]*typeState // by short type name
	sent  []sentResponse        // recent responses, for matching ACKs by nonce
}

// nodeState is one proxy: every stream with one node ID. Configuration and
// secrets are cached per node, and the workload certificate is issued per
// node, so N streams of a proxy share one snapshot and one key pair.
// Guarded by Server.mu, except where noted.
type nodeState struct {
	id     string
	parsed auth.NodeID
	flavor translate.Flavor
	// streams are the node's open, bound streams. When the last one
	// closes the node is forgotten, except its certificate, which is kept
	// until keepUntil so that a quick reconnect gets the same one.
	streams   map[streamKey]*stream
	keepUntil time.Time // zero while streams are open

	// wantsSecrets is set by the first SDS request of any of its streams:
	// a certificate is issued only for a node that asks for one.
	wantsSecrets bool

	// Set when publishing.
	published  bool   // its pod has been resolved and published to once
	workload   string // namespace/name, empty while waiting
	waiting    bool   // the pod is not (or no longer) known
	waitReason string // why, while waiting (see waitReason)
	group      string
	configSnap *cachev3.Snapshot // the versions of what the config cache holds for this node
	configPub  *published        // and its resources
	secretSnap *cachev3.Snapshot // its secrets; in the secrets cache when secretsSet
	secretsSet bool
	cert       *ca.Certificate // without its key once published
	certFor    auth.Identity
	renewAt    time.Time // next certificate issue (renewal or retry)
	certErr    error
}

// live reports whether the node has an open stream.
func (n *nodeState) live() bool { return len(n.streams) > 0 }

// authorizedIdentity is the identity the node's streams proved for its pod,
// and whether any did. Authorize returns the same identity for every token
// it accepts for one pod, so the first is as good as any.
func (n *nodeState) authorizedIdentity() (auth.Identity, bool) {
	for _, st := range n.streams {
		if st.authorized && st.refused == nil {
			return st.authorizedAs, true
		}
	}
	return auth.Identity{}, false
}

// needsWork reports whether connect has something to do for a node: publish
// to it for the first time, or give it secrets it asked for.
func (s *Server) needsWork(n *nodeState) bool {
	if !n.live() {
		return false
	}
	if !n.published {
		return true
	}
	return s.opts.CA != nil && n.wantsSecrets && !n.secretsSet && n.certErr == nil
}

// typeState tracks one type's exchange with one stream.
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
	// claim is what a delta stream said it already holds when it first
	// subscribed (initial_resource_versions, after a reconnect or a meshd
	// restart), until something is sent. When it matches what the node is
	// served the cache sends nothing, so the match itself is the ACK.
	claim *deltaClaim
}

// deltaClaim is a delta stream's initial subscription of one type.
type deltaClaim struct {
	names    []string          // subscribed names; nil means wildcard
	versions map[string]string // initial_resource_versions
}

type sentResponse struct {
	nonce, typ, version string
}

// maxNackError bounds what is kept, shown and logged of the message of a
// proxy's NACK: Envoy's validation errors are a few hundred bytes, and a
// client can send megabytes.
const maxNackError = 1024

// maxSentTracked bounds the nonce history per stream. A proxy answers each
// response promptly, so only the last few can still be ACKed or NACKed.
const maxSentTracked = 32

func (st *stream) typeState(typ string) *typeState {
	ts := st.types[typ]
	if ts == nil {
		ts = &typeState{}
		st.types[typ] = ts
	}
	return ts
}

func (st *stream) takeNonce(nonce string) (sentResponse, bool) {
	for i, r := range st.sent {
		if r.nonce == nonce {
			st.sent = append(st.sent[:i], st.sent[i+1:]...)
			return r, true
		}
	}
	return sentResponse{}, false
}

func (st *stream) nodeID() string {
	if st.node == nil {
		return ""
	}
	return st.node.id
}

// logAttrs are the attributes of a stream's log lines. The node ID is the
// client's, so it is clipped (see clip).
func (st *stream) logAttrs() []any {
	attrs := []any{"node", clip.String(st.nodeID())}
	if st.key.delta {
		attrs = append(attrs, "delta", true)
	}
	return attrs
}

// identityKey carries the authenticated identity and the stream's gate from
// the gRPC handler to the stream-open callback.
type identityKey struct{}

type streamContext struct {
	identity auth.Identity
	gate     *streamGate
}

// streamGate sits between go-control-plane and the gRPC stream and checks
// every response just before it is written. The caches are keyed by node
// ID, so a watch of one stream is answered with what another stream of the
// same node caused; the gate makes sure that a refused stream gets nothing
// more, and that secrets go only to a stream whose own token was accepted
// for the node's pod.
type streamGate struct {
	s  *Server
	st *stream // set by openStream; guarded by Server.mu
}

// errNotAuthorizedYet ends a stream that would receive secrets before
// meshd has matched its token to its pod. It can only happen in a race
// (the pod vanished from discovery as the stream connected); the client
// reconnects and is checked afresh.
var errNotAuthorizedYet = status.Error(codes.Unavailable, "minimesh has not yet matched this stream's token to its pod, so it may not receive the pod's secrets; reconnect")

func (g *streamGate) check(typeURL string) error {
	g.s.mu.Lock()
	defer g.s.mu.Unlock()
	st := g.st
	if st == nil {
		return status.Error(codes.Internal, "minimesh lost track of this stream; reconnect")
	}
	if st.refused != nil {
		return st.refused
	}
	if typeURL == resourcev3.SecretType {
		if n := st.node; n == nil || !st.authorized || st.authorizedAs != n.certFor {
			return errNotAuthorizedYet
		}
	}
	return nil
}

// adsService authenticates each stream before handing it to
// go-control-plane's server: the token is in the stream's metadata, which
// is known before the first request arrives.
type adsService struct {
	s   *Server
	xds serverv3.Server
}

func (a *adsService) StreamAggregatedResources(st grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	ctx, gate, err := a.s.authenticate(st.Context())
	if err != nil {
		return err
	}
	budget := a.s.budget.stream()
	defer budget.close()
	// requestCodec has already shared the request's names.
	reqs := readAhead(ctx, st.Recv, func(r *discoveryv3.DiscoveryRequest) int {
		budget.answered(r.GetTypeUrl(), r.GetResponseNonce())
		return a.s.eds.lists.requestWeight(r, r.GetResourceNames())
	})
	return a.xds.StreamAggregatedResources(sotwStream{st, ctx, gate, budget, reqs})
}

func (a *adsService) DeltaAggregatedResources(st grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) error {
	ctx, gate, err := a.s.authenticate(st.Context())
	if err != nil {
		return err
	}
	budget := a.s.budget.stream()
	defer budget.close()
	reqs := readAhead(ctx, st.Recv, func(r *discoveryv3.DeltaDiscoveryRequest) int {
		budget.answered(r.GetTypeUrl(), r.GetResponseNonce())
		return a.s.eds.lists.requestWeight(r, r.GetResourceNamesSubscribe())
	})
	return a.xds.DeltaAggregatedResources(deltaStream{st, ctx, gate, budget, reqs})
}

// received is one outcome of a stream's Recv, and its weight (see
// readAhead).
type received[T any] struct {
	req    T
	err    error
	weight int
}

// readQueue is the requests read ahead of go-control-plane.
type readQueue[T any] struct {
	ch     chan received[T]
	mu     sync.Mutex
	weight int           // of the requests in ch
	taken  chan struct{} // signalled when a request leaves ch
}

// readAhead reads a stream's requests in a goroutine of its own, calling
// seen on each as soon as it arrives, and queues them for go-control-plane.
// go-control-plane reads a request only when its stream goroutine is free
// to take it, and that goroutine may be waiting in Send for send budget:
// the ACKs that give budget back must not queue behind it. seen returns
// the request's weight, roughly the memory it holds: the queue holds at
// most readAheadCount requests and readAheadBytes of weight (and always
// one), so a client flooding requests only stalls its own stream.
func readAhead[T any](ctx context.Context, recv func() (T, error), seen func(T) int) *readQueue[T] {
	q := &readQueue[T]{ch: make(chan received[T], readAheadCount), taken: make(chan struct{}, 1)}
	go func() {
		defer close(q.ch)
		for {
			for q.full() {
				select {
				case <-q.taken:
				case <-ctx.Done():
					return
				}
			}
			r, err := recv()
			w := 0
			if err == nil {
				w = seen(r)
			}
			q.mu.Lock()
			q.weight += w
			q.mu.Unlock()
			select {
			case q.ch <- received[T]{r, err, w}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return q
}

func (q *readQueue[T]) full() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.weight >= readAheadBytes
}

// next returns the next request read ahead, or io.EOF once there is none.
func (q *readQueue[T]) next() (T, error) {
	r, ok := <-q.ch
	if !ok {
		var zero T
		return zero, io.EOF
	}
	q.mu.Lock()
	q.weight -= r.weight
	q.mu.Unlock()
	select {
	case q.taken <- struct{}{}:
	default:
	}
	return r.req, r.err
}

// sotwStream and deltaStream stand between go-control-plane's server and
// the gRPC stream: each response passes the stream's gate and takes its
// share of the send budget, which each request naming a response gives
// back (see sendBudget).
type sotwStream struct {
	grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	ctx    context.Context
	gate   *streamGate
	budget *streamBudget
	reqs   *readQueue[*discoveryv3.DiscoveryRequest]
}

func (s sotwStream) Context() context.Context { return s.ctx }

func (s sotwStream) Send(r *discoveryv3.DiscoveryResponse) error {
	if err := s.gate.check(r.GetTypeUrl()); err != nil {
		return err
	}
	if err := s.budget.acquire(s.ctx, r.GetTypeUrl(), r.GetNonce(), r); err != nil {
		return err
	}
	if err := s.BidiStreamingServer.Send(r); err != nil {
		s.budget.unsent(r.GetNonce())
		return err
	}
	return nil
}

func (s sotwStream) Recv() (*discoveryv3.DiscoveryRequest, error) { return s.reqs.next() }

type deltaStream struct {
	grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]
	ctx    context.Context
	gate   *streamGate
	budget *streamBudget
	reqs   *readQueue[*discoveryv3.DeltaDiscoveryRequest]
}

func (s deltaStream) Context() context.Context { return s.ctx }

func (s deltaStream) Send(r *discoveryv3.DeltaDiscoveryResponse) error {
	if err := s.gate.check(r.GetTypeUrl()); err != nil {
		return err
	}
	if err := s.budget.acquire(s.ctx, r.GetTypeUrl(), r.GetNonce(), r); err != nil {
		return err
	}
	if err := s.BidiStreamingServer.Send(r); err != nil {
		s.budget.unsent(r.GetNonce())
		return err
	}
	return nil
}

func (s deltaStream) Recv() (*discoveryv3.DeltaDiscoveryRequest, error) { return s.reqs.next() }

// authenticate checks the stream's bearer token and returns a context
// carrying the identity it proves, and the stream's gate.
func (s *Server) authenticate(ctx context.Context) (context.Context, *streamGate, error) {
	id, err := s.caller(ctx)
	if err != nil {
		reason := "unauthenticated"
		if errors.Is(err, auth.ErrUnavailable) {
			reason = "auth_unavailable"
		}
		s.m.rejected.WithLabelValues(reason).Inc()
		s.log.Warn("refused an xDS stream", "peer", peerAddr(ctx), "error", err)
		return nil, nil, refusal(err)
	}
	gate := &streamGate{s: s}
	return context.WithValue(ctx, identityKey{}, streamContext{identity: id, gate: gate}), gate, nil
}

// caller is the identity the bearer token of an incoming call proves, or
// the anonymous identity when authentication is off. Errors wrap auth's
// classes (ErrUnauthenticated, ErrUnavailable).
func (s *Server) caller(ctx context.Context) (auth.Identity, error) {
	a := s.opts.Authenticator
	switch a.(type) {
	case auth.None, *auth.None:
		return auth.Identity{Anonymous: true}, nil
	}
	token, err := auth.BearerToken(ctx)
	if err != nil {
		return auth.Identity{}, err
	}
	return a.Authenticate(ctx, token)
}

// refusal is the gRPC status a refused stream ends with.
func refusal(err error) error {
	if errors.Is(err, auth.ErrUnavailable) {
		// Not err: it says how meshd reaches its authenticator (an
		// address, a file), which is meshd's business; the log has it.
		return status.Error(codes.Unavailable, "minimesh cannot check the xDS stream's credentials right now; retry")
	}
	return status.Errorf(grpcCode(err), "minimesh refused the xDS stream: %v", err)
}

// grpcCode maps auth's error classes to gRPC status codes. Unavailable
// comes first: an authenticator that could not decide has refused nothing,
// and the client must retry.
func grpcCode(err error) codes.Code {
	switch {
	case errors.Is(err, auth.ErrUnavailable):
		return codes.Unavailable
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
			return s.onRequest(streamKey{id: id}, r.GetNode(), request{
				typeURL: r.GetTypeUrl(), nonce: r.GetResponseNonce(), nack: r.GetErrorDetail(), sotw: r,
			})
		},
		StreamDeltaRequestFunc: func(id int64, r *discoveryv3.DeltaDiscoveryRequest) error {
			return s.onRequest(streamKey{delta: true, id: id}, r.GetNode(), request{
				typeURL: r.GetTypeUrl(), nonce: r.GetResponseNonce(), nack: r.GetErrorDetail(), delta: r,
			})
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
	sc, _ := ctx.Value(identityKey{}).(streamContext)
	st := &stream{
		key:      key,
		identity: sc.identity,
		peer:     peerAddr(ctx),
		openedAt: time.Now(),
		shownAt:  s.now(),
		types:    map[string]*typeState{},
	}
	s.mu.Lock()
	s.streams[key] = st
	if sc.gate != nil {
		sc.gate.st = st
	}
	s.mu.Unlock()
	s.m.streams.Inc()
}

// request is what onRequest needs of a SOTW or delta request; exactly one
// of sotw and delta is set.
type request struct {
	typeURL, nonce string
	nack           *statuspb.Status
	sotw           *discoveryv3.DiscoveryRequest
	delta          *discoveryv3.DeltaDiscoveryRequest
}

// onRequest runs for every request before go-control-plane acts on it. The
// first request binds the stream to a node; later ones ACK or NACK what
// was sent. A returned error ends the stream with that status.
func (s *Server) onRequest(key streamKey, node *corev3.Node, req request) error {
	s.mu.Lock()
	st := s.streams[key]
	if st == nil {
		s.mu.Unlock()
		return status.Error(codes.Internal, "minimesh lost track of this stream; reconnect")
	}
	if st.refused != nil {
		err := st.refused
		s.mu.Unlock()
		return err
	}
	if err := s.checkRequest(st, req); err != nil {
		s.mu.Unlock()
		return err
	}
	kick := false
	if !st.bound {
		if err := s.bind(st, node); err != nil {
			s.mu.Unlock()
			return err
		}
		kick = true
	}
	n := st.node
	typ := shortType(req.typeURL)
	// Every type the proxy asks for is listed in syncz, even before a
	// response exists for it.
	ts := st.typeState(typ)
	if req.typeURL == resourcev3.SecretType && !n.wantsSecrets {
		n.wantsSecrets = true
		kick = true
	}
	s.noteClaim(st, ts, req)
	if kick {
		s.mu.Unlock()
		// Publishing needs buildMu and may translate or issue a
		// certificate: do it off the stream's goroutine. Until it is
		// done the watches simply wait.
		s.requestConnect()
		return nil
	}
	if req.nonce == "" {
		s.mu.Unlock()
		return nil
	}
	sent, ok := st.takeNonce(req.nonce)
	if !ok {
		// A nonce from before a restart, or one already answered.
		s.mu.Unlock()
		return nil
	}
	ts = st.typeState(sent.typ)
	now := s.now()
	if req.nack != nil {
		ts.Nacked, ts.NackError, ts.NackedAt = sent.version, clip.To(req.nack.GetMessage(), maxNackError), now
		ts.nackPending = ts.Sent == sent.version
		if ts.nackPending && req.sotw != nil {
			guardNack(req.sotw, sent.version)
		}
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
		attrs := append(st.logAttrs(), "type", sent.typ, "version", sent.version, "error", ts.NackError)
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
	if g := s.groups[n.group]; g != nil && ts.converged != sent.version {
		switch sent.typ {
		case typeEDS:
			// Endpoint versions count up across every proxy of the
			// flavour: the ACK completes the newest change among the
			// group's assignments since this stream's last ACK.
			if at, ok := s.eds.flavor(n.flavor).converged(g.edsNames, sent.version, ts.converged, st.openedAt); ok {
				converged = time.Since(at)
			}
			ts.converged = sent.version
		default:
			if tr, ok := g.triggers[sent.typ]; ok && tr.version == sent.version && tr.at.After(st.openedAt) {
				converged = time.Since(tr.at)
				ts.converged = sent.version
			}
		}
	}
	s.mu.Unlock()
	if converged > 0 {
		s.m.convergence.WithLabelValues(sent.typ).Observe(converged.Seconds())
	}
	return nil
}

// checkRequest refuses, and ends the stream of, a request for a type
// meshd does not serve or with more names than a stream may hold (see
// limits.go). Called with mu held.
func (s *Server) checkRequest(st *stream, req request) error {
	var err error
	reason := "too_many_names"
	switch {
	case req.carriesTooMany():
		err = errTooManyNames
	case shortTypes[req.typeURL] == "":
		reason = "unknown_type"
		err = status.Errorf(codes.InvalidArgument, "minimesh does not serve type %q; it serves %s", clip.String(req.typeURL), servedTypes)
	default:
		return nil
	}
	st.refused = err
	s.m.rejected.WithLabelValues(reason).Inc()
	s.log.Warn("refused an xDS stream", append(st.logAttrs(), "peer", st.peer, "type", clip.String(req.typeURL), "error", err)...)
	return err
}

// servedTypes lists the type URLs meshd serves, for errors.
var servedTypes = strings.Join(slices.Sorted(maps.Keys(shortTypes)), ", ")

// noteClaim records what a request says the proxy already holds, so that a
// proxy resuming after a reconnect or a meshd restart shows as SYNCED when
// it already has the current version (the cache then rightly sends
// nothing). A SOTW request's version_info is by definition the last
// version the proxy accepted on this stream, so it is an ACK of that
// version whatever the nonce. A delta stream's first request of a type
// lists the resource versions it holds; whether they add up to the current
// version is decided against the node's snapshot (resyncLocked). It also
// keeps a NACKed version from being re-sent on a later request of the type.
// Called with mu held.
func (s *Server) noteClaim(st *stream, ts *typeState, req request) {
	switch {
	case req.sotw != nil:
		if v := req.sotw.GetVersionInfo(); v != "" && ts.Acked != v {
			ts.Acked, ts.AckedAt = v, s.now()
		}
		if ts.nackPending && ts.Nacked != "" {
			guardNack(req.sotw, ts.Nacked)
		}
	case req.delta != nil:
		if req.nonce != "" || ts.Sent != "" || len(req.delta.GetInitialResourceVersions()) == 0 {
			return
		}
		var names []string
		if sub := req.delta.GetResourceNamesSubscribe(); len(sub) > 0 && !slices.Contains(sub, "*") {
			// An endpoint request's names may be a stand-in.
			if real, err := s.eds.lists.deltaNames(sub); err == nil {
				sub = real
			}
			names = slices.Clone(sub)
		}
		ts.claim = &deltaClaim{names: names, versions: maps.Clone(req.delta.GetInitialResourceVersions())}
		s.resyncLocked(st)
	}
}

// guardNack stops go-control-plane's snapshot cache from re-sending a
// version a SOTW proxy has just rejected. A NACK carries the last version
// the proxy accepted; the cache sees that it differs from the snapshot and
// answers at once with the same rejected version, which the proxy NACKs
// again, in a tight loop. Presenting the request as if it carried the
// rejected version makes the cache wait until the snapshot actually
// changes. The request is the one go-control-plane passes to the cache
// right after this callback, per stream, so one stream's NACK never holds
// back another stream of the same node. Delta needs no guard: the server
// records what it sent when it sends it, so a NACK finds nothing new to
// send.
func guardNack(r *discoveryv3.DiscoveryRequest, rejected string) {
	r.VersionInfo = rejected
}

// resyncLocked turns matching delta claims of a stream into ACKs. Called
// with mu held, whenever a claim is made or the node's snapshots change.
func (s *Server) resyncLocked(st *stream) {
	n := st.node
	if n == nil {
		return
	}
	for typ, ts := range st.types {
		if ts.claim == nil || ts.Sent != "" {
			ts.claim = nil
			continue
		}
		current, versions := s.servedVersions(n, typ)
		if current == "" {
			continue
		}
		if ts.claim.holds(versions) {
			ts.Acked, ts.AckedAt = current, s.now()
			ts.claim = nil
		}
	}
}

// servedVersions is what meshd serves a node of one type: the version the
// debug API calls current, and the per-resource versions a delta client
// compares. Both are empty while nothing is served. Called with mu held.
func (s *Server) servedVersions(n *nodeState, typ string) (string, map[string]string) {
	switch typ {
	case typeEDS:
		g := s.groups[n.group]
		if n.configSnap == nil || g == nil {
			return "", nil
		}
		ac := s.eds.flavor(n.flavor)
		current, ok := ac.required(g.edsNames)
		if !ok {
			return "", nil
		}
		return current, ac.hashes(g.edsNames)
	case typeSDS:
		if !n.secretsSet || n.secretSnap == nil {
			return "", nil
		}
		return n.secretSnap.GetVersion(resourcev3.SecretType), n.secretSnap.VersionMap[resourcev3.SecretType]
	}
	typeURL := typeURLOf(typ)
	if n.configSnap == nil || typeURL == "" {
		return "", nil
	}
	return n.configSnap.GetVersion(typeURL), n.configSnap.VersionMap[typeURL]
}

// holds reports whether a delta client holding c.versions needs nothing
// from a snapshot whose resources have these versions: it has every
// resource it subscribes to at its current version, and nothing the
// server would tell it to remove.
func (c *deltaClaim) holds(current map[string]string) bool {
	want := 0
	for name, v := range current {
		if c.names != nil && !slices.Contains(c.names, name) {
			continue
		}
		if c.versions[name] != v {
			return false
		}
		want++
	}
	return want == len(c.versions)
}

// bind reads the node from a stream's first request: its ID, flavour, and
// whether the stream's identity may speak for it. Called with mu held.
func (s *Server) bind(st *stream, node *corev3.Node) error {
	refuse := func(reason string, err error) error {
		st.refused = refusal(err)
		s.m.rejected.WithLabelValues(reason).Inc()
		s.log.Warn("refused an xDS stream", "peer", st.peer, "node", clip.String(node.GetId()), "error", err)
		return st.refused
	}
	if node.GetId() == "" {
		return refuse("node_id", fmt.Errorf("%w: the first request carries no node ID; set node.id to sidecar~<pod IP>~<pod>.<namespace>~<namespace>.svc.cluster.local", auth.ErrBadNodeID))
	}
	id, err := auth.ParseNodeID(node.GetId())
	if err != nil {
		return refuse("node_id", err)
	}
	if cd := s.opts.Translate.ClusterDomain; id.ClusterDomain() != cd {
		return refuse("node_id", fmt.Errorf("%w %q: its DNS domain %q is in cluster domain %q, but this mesh's cluster domain is %q; set the node ID's last part to %s.svc.%s",
			auth.ErrBadNodeID, clip.String(node.GetId()), clip.String(id.DNSDomain), clip.String(id.ClusterDomain()), cd, id.Namespace, cd))
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
	reason := waitReason(s.model, id)
	as, err := auth.Authorize(st.identity, id, podSA)
	if err != nil && !errors.Is(err, auth.ErrPodUnknown) {
		return refuse("permission_denied", err)
	}
	if err == nil {
		st.authorized, st.authorizedAs = true, as
	}
	flavor := flavorOf(node)
	n := s.nodes[node.GetId()]
	switch {
	case n == nil:
		n = &nodeState{id: node.GetId(), parsed: id, flavor: flavor, streams: map[streamKey]*stream{}, waiting: true, waitReason: reason}
		s.nodes[n.id] = n
	case !n.live():
		// Back within the grace period: only the certificate survived.
		n.keepUntil = time.Time{}
		n.flavor = flavor
		n.waiting, n.waitReason = true, reason
	case n.flavor != flavor:
		s.log.Warn("a stream declares another flavour than the node's other streams; the node keeps its first flavour",
			"node", n.id, "flavor", n.flavor, "stream_flavor", flavor)
	}
	if !n.live() {
		s.m.connected.Inc()
	}
	n.streams[st.key] = st
	st.bound = true
	st.node = n
	s.log.Info("proxy stream connected", append(st.logAttrs(), "peer", st.peer, "flavor", n.flavor, "identity", st.identity.String(), "streams", len(n.streams))...)
	return nil
}

// waitReason says why a node of pod id has no configuration yet, as
// syncz and meshctl proxy-status show it: discovery has delivered no model
// yet, or its model has no such pod. When the pod is there, the node
// waits only for the publish that is about to serve it.
func waitReason(m *model.Snapshot, id auth.NodeID) string {
	switch {
	case m == nil:
		return "meshd has no model of the mesh yet: discovery has not delivered its first snapshot"
	case m.Workload(id.Namespace, id.Pod) == nil:
		return fmt.Sprintf("pod %s/%s not found in the mesh", id.Namespace, id.Pod)
	default:
		return fmt.Sprintf("pod %s/%s found; its configuration is being published", id.Namespace, id.Pod)
	}
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
	st := s.streams[key]
	if st == nil {
		return
	}
	ts := st.typeState(typ)
	if ts.Sent != version {
		ts.nackPending = false
	}
	ts.Sent, ts.SentAt = version, s.now()
	ts.claim = nil
	if len(st.sent) >= maxSentTracked {
		st.sent = st.sent[1:]
	}
	st.sent = append(st.sent, sentResponse{nonce: nonce, typ: typ, version: version})
}

// certGrace is how long a node's certificate outlives its last stream, so
// that a proxy reconnecting (a network blip, a gRPC client redialling)
// gets the same certificate instead of a new one each time. It never
// extends past the certificate's renewal time.
const certGrace = time.Minute

func (s *Server) closeStream(key streamKey) {
	s.m.streams.Dec()
	s.mu.Lock()
	st := s.streams[key]
	delete(s.streams, key)
	if st == nil || !st.bound {
		s.mu.Unlock()
		return
	}
	n := st.node
	delete(n.streams, key)
	last := !n.live()
	attrs := append(st.logAttrs(), "streams_left", len(n.streams))
	if last {
		s.m.connected.Dec()
		n.keepUntil = s.now().Add(certGrace)
		if n.cert != nil && n.renewAt.Before(n.keepUntil) {
			n.keepUntil = n.renewAt
		}
	}
	s.mu.Unlock()
	s.log.Info("proxy stream disconnected", attrs...)
	if last {
		go s.forget(n)
	}
}

// forget drops a node's cache entries once no stream of it is left, so a
// long-running meshd does not accumulate snapshots of departed proxies.
// Its certificate stays in memory until keepUntil (see renewDue).
func (s *Server) forget(n *nodeState) {
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	s.mu.Lock()
	if n.live() || s.nodes[n.id] != n {
		s.mu.Unlock()
		return // reconnected meanwhile; its new stream uses the entries
	}
	n.published, n.configSnap, n.configPub, n.secretsSet = false, nil, nil, false
	n.workload, n.group = "", ""
	if n.cert == nil {
		delete(s.nodes, n.id)
	}
	s.mu.Unlock()
	s.config.ClearSnapshot(n.id)
	s.secrets.ClearSnapshot(n.id)
	s.updateWorkloadExpiry()
	s.kickRenewal() // to drop the certificate at keepUntil
}

// goControlPlaneLogger sends go-control-plane's logs to slog. Its Info
// lines are per-watch chatter, so they go to Debug.
type goControlPlaneLogger struct{ log *slog.Logger }

func (l goControlPlaneLogger) Debugf(f string, a ...any) { l.debug(f, a) }
func (l goControlPlaneLogger) Infof(f string, a ...any)  { l.debug(f, a) }

// Its lines may quote a request's names and node ID, which the client
// chose: they are clipped to maxNackError.
func (l goControlPlaneLogger) Warnf(f string, a ...any) {
	l.log.Warn(clip.To(fmt.Sprintf(f, a...), maxNackError))
}

func (l goControlPlaneLogger) Errorf(f string, a ...any) {
	l.log.Error(clip.To(fmt.Sprintf(f, a...), maxNackError))
}

// debug formats only when Debug is on: go-control-plane logs a line per
// watch it answers, and formatting a thousand of them cost a tenth of a
// second of CPU on every push to a thousand proxies.
func (l goControlPlaneLogger) debug(f string, a []any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug(clip.To(fmt.Sprintf(f, a...), maxNackError))
	}
}

func serverOption(log *slog.Logger) config.XDSOption {
	return func(o *config.Opts) { o.Logger = goControlPlaneLogger{log.With("component", "go-control-plane")} }
}
