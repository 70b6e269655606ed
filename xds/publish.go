package xds

import (
	"context"
	"errors"
	"sync"
	"time"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"

	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
	"github.com/minimesh/minimesh/translate"
	"github.com/minimesh/minimesh/xds/auth"
)

// group is one proxy group: every proxy whose translate.Proxy has this key
// shares its snapshot. Guarded by Server.mu.
type group struct {
	key   string
	proxy translate.Proxy
	// snap is the last snapshot that passed every check; nil until one has.
	snap     *cachev3.Snapshot
	builtAt  time.Time
	problems policy.Problems
	// err is why the latest translation was not published.
	err   *configError
	errAt time.Time
	// triggers records, per type, which change produced the current
	// version, for the convergence metric.
	triggers map[string]trigger
}

type trigger struct {
	version string
	at      time.Time // zero when the version was not caused by a change
}

// target is one proxy to publish to, resolved against the model.
type target struct {
	p        *proxy
	workload *model.Workload
	key      string
	identity auth.Identity
}

// built is the outcome of translating one group.
type built struct {
	key      string
	proxy    translate.Proxy
	snap     *cachev3.Snapshot
	problems policy.Problems
	err      *configError
}

// connect publishes to proxies that have just sent their first request.
// When many connect at once (meshd restarts, a node boots) the first
// connect to get buildMu serves all of them, translating their groups in
// parallel; the others then find nothing left to do.
func (s *Server) connect() {
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	s.mu.Lock()
	m := s.model
	s.mu.Unlock()
	s.syncLocked(m, true, time.Time{})
}

// sync brings every bound proxy up to date with model m. changedAt is when
// the change being pushed happened.
func (s *Server) sync(m *model.Snapshot, changedAt time.Time) {
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	s.resources.nextGeneration()
	s.syncLocked(m, false, changedAt)
	s.resources.sweep()
}

// syncLocked publishes model m to every bound proxy, or with newOnly to
// those not published to yet (which reuse their group's snapshot when
// there is one). Called with buildMu held.
func (s *Server) syncLocked(m *model.Snapshot, newOnly bool, changedAt time.Time) {

	// 1. Resolve proxies to workloads and groups.
	s.mu.Lock()
	var targets []target
	need := map[string]translate.Proxy{}
	for _, p := range s.streams {
		if !p.bound || p.refused != nil || newOnly && p.published {
			continue
		}
		var w *model.Workload
		if m != nil {
			w = m.Workload(p.node.Namespace, p.node.Pod)
		}
		if w == nil {
			// Unknown pod: keep the stream open and whatever it already
			// has; the push that brings the pod will serve it.
			p.waiting = true
			continue
		}
		id, err := auth.Authorize(p.identity, p.node, w.ServiceAccount)
		if err != nil {
			p.refused = refusal(err)
			s.m.rejected.WithLabelValues("permission_denied").Inc()
			s.log.Warn("refusing configuration and secrets to a proxy whose token does not match its pod; its stream ends at its next request", append(p.logAttrs(), "error", err)...)
			continue
		}
		px := translate.ProxyFor(p.flavor, w)
		key := px.Key()
		targets = append(targets, target{p: p, workload: w, key: key, identity: id})
		if !newOnly || s.groups[key] == nil || s.groups[key].snap == nil {
			need[key] = px
		}
	}
	s.mu.Unlock()

	// 2. Translate each group once, in parallel; translation is pure.
	results := s.build(m, need)

	// 3. Install what passed; decide what each proxy gets.
	type setSnap struct {
		nodeID string
		snap   *cachev3.Snapshot
	}
	var sets []setSnap
	var issue []target
	s.mu.Lock()
	now := s.now()
	for _, r := range results {
		g := s.groups[r.key]
		if g == nil {
			g = &group{key: r.key, proxy: r.proxy, triggers: map[string]trigger{}}
			s.groups[r.key] = g
		}
		if r.err != nil {
			first := g.err == nil || g.err.Error() != r.err.Error()
			g.err, g.errAt = r.err, now
			s.m.configErrors.WithLabelValues(r.err.kind).Inc()
			if first {
				s.log.Error("not publishing the new configuration of a proxy group; its proxies keep the last good one",
					"group", r.key, "namespace", r.proxy.Namespace, "kind", r.err.kind, "error", r.err.err)
			}
			continue
		}
		for _, t := range configTypes {
			v := r.snap.GetVersion(t)
			typ := shortType(t)
			if g.triggers[typ].version != v {
				g.triggers[typ] = trigger{version: v, at: changedAt}
			}
		}
		g.snap, g.builtAt, g.problems, g.err = r.snap, now, r.problems, nil
	}
	for _, t := range targets {
		p := t.p
		if s.streams[p.key] != p {
			continue // closed meanwhile
		}
		p.waiting, p.published = false, true
		p.workload = t.workload.Namespace + "/" + t.workload.Name
		p.group = t.key
		if g := s.groups[t.key]; g != nil && g.snap != nil && p.configSnap != g.snap {
			p.configSnap = g.snap
			sets = append(sets, setSnap{p.nodeID, g.snap})
		}
		if s.opts.CA != nil && (p.cert == nil || p.certFor != t.identity) {
			issue = append(issue, t)
		}
	}
	if !newOnly {
		// Forget groups nobody uses any more.
		used := map[string]bool{}
		for _, p := range s.streams {
			used[p.group] = true
		}
		for k := range s.groups {
			if !used[k] {
				delete(s.groups, k)
			}
		}
	}
	s.mu.Unlock()

	// 4. Publish. Versions that did not change answer no watch.
	for _, set := range sets {
		if err := s.config.SetSnapshot(context.Background(), set.nodeID, set.snap); err != nil {
			s.log.Error("publishing a snapshot failed", "node", set.nodeID, "error", err)
		}
	}
	for _, t := range issue {
		s.issue(t.p, t.identity)
	}
}

// build translates and checks each needed group.
func (s *Server) build(m *model.Snapshot, need map[string]translate.Proxy) []built {
	if len(need) == 0 {
		return nil
	}
	if m == nil {
		m = &model.Snapshot{}
	}
	jobs := make(chan built, len(need))
	for k, px := range need {
		jobs <- built{key: k, proxy: px}
	}
	close(jobs)
	out := make([]built, 0, len(need))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range min(workers(), len(need)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range jobs {
				b = s.buildGroup(m, b)
				mu.Lock()
				out = append(out, b)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

func (s *Server) buildGroup(m *model.Snapshot, b built) built {
	res := s.translate(m, b.proxy, s.opts.Translate)
	if res == nil {
		res = &translate.Resources{}
	}
	b.problems = res.Problems
	snap, err := groupSnapshot(res, s.resources)
	if err != nil {
		var ce *configError
		if !errors.As(err, &ce) {
			ce = &configError{kind: errInvalid, err: err}
		}
		b.err = ce
		return b
	}
	b.snap = snap
	return b
}

// issue gives a proxy a fresh certificate for id and publishes its secrets.
// Called with buildMu held.
func (s *Server) issue(p *proxy, id auth.Identity) {
	cert, err := s.opts.CA.Issue(id.Namespace, id.ServiceAccount)
	var snap *cachev3.Snapshot
	if err == nil {
		snap, err = versionedSnapshot(secretResources(cert.ChainPEM, cert.KeyPEM, s.opts.CA.RootPEM()),
			(*resourceTable)(nil).check) // secrets are per proxy: nothing to share
	}
	s.mu.Lock()
	live := s.streams[p.key] == p
	if err != nil {
		p.certErr, p.certFor = err, id
		// Try again soon; a CA error is usually a file being replaced.
		p.renewAt = s.now().Add(certRetry)
		s.mu.Unlock()
		s.m.configErrors.WithLabelValues(errCertificate).Inc()
		s.log.Error("issuing a workload certificate failed; retrying", append(p.logAttrs(), "identity", id.String(), "error", err)...)
		s.kickRenewal()
		return
	}
	if !live {
		s.mu.Unlock()
		return
	}
	meta := *cert
	meta.KeyPEM = nil // the debug API never needs it; the cache holds the secret
	p.cert, p.certFor, p.certErr, p.secretSnap = &meta, id, nil, snap
	p.renewAt = cert.RenewAt()
	nodeID := p.nodeID
	s.mu.Unlock()
	if err := s.secrets.SetSnapshot(context.Background(), nodeID, snap); err != nil {
		s.log.Error("publishing secrets failed", "node", nodeID, "error", err)
	}
	s.m.certsIssued.Inc()
	s.log.Info("issued workload certificate", append(p.logAttrs(), "spiffe_id", cert.SPIFFEID, "serial", cert.Serial, "not_after", cert.NotAfter)...)
	s.updateWorkloadExpiry()
	s.kickRenewal()
}

// certRetry is how long to wait after a failed certificate issue.
const certRetry = 10 * time.Second

func (s *Server) kickRenewal() {
	select {
	case s.renewKick <- struct{}{}:
	default:
	}
}

// renewLoop renews certificates when they are due. Renewal pushes only the
// new secret: listeners and clusters reference it by name, so connections
// continue and new handshakes use the new certificate.
func (s *Server) renewLoop(ctx context.Context) {
	for {
		next := s.renewDue()
		wait := time.Minute // also bounds the effect of wall-clock jumps
		if !next.IsZero() {
			wait = min(wait, max(0, next.Sub(s.now())))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-s.renewKick:
			t.Stop()
		}
	}
}

// renewDue re-issues every certificate whose renewal time has come and
// returns the earliest renewal time still ahead (zero if none).
func (s *Server) renewDue() time.Time {
	if s.opts.CA == nil {
		return time.Time{}
	}
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	s.mu.Lock()
	now := s.now()
	var due []target
	for _, p := range s.streams {
		if p.renewAt.IsZero() || now.Before(p.renewAt) || p.refused != nil {
			continue
		}
		// Renewal, or a retry after a failed issue.
		due = append(due, target{p: p, identity: p.certFor})
	}
	s.mu.Unlock()
	for _, t := range due {
		s.issue(t.p, t.identity)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var next time.Time
	for _, p := range s.streams {
		if !p.renewAt.IsZero() && (next.IsZero() || p.renewAt.Before(next)) {
			next = p.renewAt
		}
	}
	return next
}

// updateWorkloadExpiry sets the gauge to the earliest expiry served.
func (s *Server) updateWorkloadExpiry() {
	s.mu.Lock()
	var first time.Time
	for _, p := range s.streams {
		if p.cert != nil && (first.IsZero() || p.cert.NotAfter.Before(first)) {
			first = p.cert.NotAfter
		}
	}
	s.mu.Unlock()
	if first.IsZero() {
		s.m.workloadExpiry.Set(0)
		return
	}
	s.m.workloadExpiry.Set(float64(first.Unix()))
}
