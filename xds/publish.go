package xds

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

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
	// snap is the last snapshot that passed every check, nil until one
	// has, and pub the same ready to send.
	snap     *cachev3.Snapshot
	pub      *published
	builtAt  time.Time
	problems policy.Problems
	// err is why the latest translation was not published.
	err   *configError
	errAt time.Time
	// triggers records, per type, which change produced the current
	// version, for the convergence metric.
	triggers map[string]trigger
	// from is the model snap was translated from (its listeners, routes
	// and clusters; endpoints may be newer), and used the table digests
	// of those resources: what an endpoint-only change needs to keep them.
	from *model.Snapshot
	used []digest
	// edsNames are the assignments its clusters use, sorted; the
	// endpointCache serves them.
	edsNames []string
}

type trigger struct {
	version string
	at      time.Time // zero when the version was not caused by a change
}

// target is one node to publish to, resolved against the model.
type target struct {
	n        *nodeState
	workload *model.Workload
	key      string
	identity auth.Identity
}

// built is the outcome of translating one group.
type built struct {
	key      string
	proxy    translate.Proxy
	snap     *cachev3.Snapshot
	pub      *published
	problems policy.Problems
	err      *configError
	from     *model.Snapshot
	used     []digest
	edsNames []string
}

// reusable is what an endpoint-only change keeps of a group's last
// published snapshot.
type reusable struct {
	snap     *cachev3.Snapshot
	pub      *published
	from     *model.Snapshot
	used     []digest
	edsNames []string
	problems policy.Problems
}

// connect publishes to nodes that have just sent their first request, or
// have just asked for secrets. When many connect at once (meshd restarts, a
// node boots) the first connect to get buildMu serves all of them,
// translating their groups in parallel; the others then find nothing left
// to do.
func (s *Server) connect() {
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	// From here on a new request needs a new connect: this one may have
	// read the nodes already.
	s.connectQueued.Store(false)
	s.mu.Lock()
	m := s.model
	s.mu.Unlock()
	s.syncLocked(m, true, time.Time{})
}

// requestConnect runs connect in the background unless one is already
// waiting for buildMu, which will serve this request too. When a thousand
// proxies connect at once (meshd restarted) this turns a thousand connects,
// each scanning every node, into a handful.
func (s *Server) requestConnect() {
	if s.connectQueued.CompareAndSwap(false, true) {
		go s.connect()
	}
}

// sync brings every node up to date with model m. changedAt is when the
// change being pushed happened.
func (s *Server) sync(m *model.Snapshot, changedAt time.Time) {
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	s.resources.nextGeneration()
	s.syncLocked(m, false, changedAt)
	s.resources.sweep()
}

// syncLocked publishes model m to every node with an open stream, or with
// newOnly to those that need it (see needsWork; they reuse their group's
// snapshot when there is one). Called with buildMu held.
func (s *Server) syncLocked(m *model.Snapshot, newOnly bool, changedAt time.Time) {

	// 1. Resolve nodes to workloads and groups, and check every stream's
	// token against the pod before anything is published to the node.
	s.mu.Lock()
	var targets []target
	need := map[string]translate.Proxy{}
	prev := map[string]reusable{}
	for _, n := range s.nodes {
		if !n.live() || newOnly && !s.needsWork(n) {
			continue
		}
		var w *model.Workload
		if m != nil {
			w = m.Workload(n.parsed.Namespace, n.parsed.Pod)
		}
		if w == nil {
			// Unknown pod: keep the streams open and whatever they
			// already have; the push that brings the pod will serve it.
			n.waiting, n.waitReason = true, waitReason(m, n.parsed)
			continue
		}
		for _, st := range n.streams {
			if st.refused != nil {
				continue
			}
			id, err := auth.Authorize(st.identity, n.parsed, w.ServiceAccount)
			if err != nil {
				st.refused = refusal(err)
				st.authorized = false
				s.m.rejected.WithLabelValues("permission_denied").Inc()
				s.log.Warn("refusing configuration and secrets to a proxy stream whose token does not match its pod; the stream ends at its next request", append(st.logAttrs(), "error", err)...)
				continue
			}
			st.authorized, st.authorizedAs = true, id
		}
		id, ok := n.authorizedIdentity()
		if !ok {
			continue
		}
		px := translate.ProxyFor(n.flavor, w)
		key := px.Key()
		targets = append(targets, target{n: n, workload: w, key: key, identity: id})
		g := s.groups[key]
		if !newOnly || g == nil || g.snap == nil {
			need[key] = px
			// A group whose last translation failed is translated
			// again: only that can clear (or update) its error.
			if g != nil && g.snap != nil && g.err == nil && g.from != nil {
				prev[key] = reusable{snap: g.snap, pub: g.pub, from: g.from, used: g.used, edsNames: g.edsNames, problems: g.problems}
			}
		}
	}
	s.mu.Unlock()

	// 2. Translate each group once, in parallel; translation is pure.
	// A group for which the change touches only endpoints keeps its
	// listeners, routes and clusters and gets new assignments instead.
	results := s.build(m, need, prev)

	// 3. Endpoints first, so that a new cluster finds its assignment
	// already there; then check that every group's clusters have theirs.
	gone := s.publishEndpoints(m, changedAt)
	s.resources.forgetObjects()
	for i, r := range results {
		if r.err != nil {
			continue
		}
		if err := s.eds.flavor(r.proxy.Flavor).missing(r.edsNames); err != nil {
			results[i].err = &configError{kind: errInconsistent, err: fmt.Errorf("a cluster refers to a load assignment that is not published: %w", err)}
		}
	}

	// 4. Install what passed; decide what each node gets.
	type setSnap struct {
		nodeID string
		snap   *cachev3.Snapshot
	}
	type setPub struct {
		nodeID string
		pub    *published
	}
	var sets []setPub
	var secretSets []setSnap
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
		g.snap, g.pub, g.builtAt, g.problems, g.err = r.snap, r.pub, now, r.problems, nil
		g.from, g.used, g.edsNames = r.from, r.used, r.edsNames
	}
	for _, t := range targets {
		n := t.n
		if !n.live() || s.nodes[n.id] != n {
			continue // gone meanwhile
		}
		n.waiting, n.waitReason, n.published = false, "", true
		n.workload = t.workload.Namespace + "/" + t.workload.Name
		n.group = t.key
		if g := s.groups[t.key]; g != nil && g.snap != nil && n.configSnap != g.snap {
			n.configSnap, n.configPub = g.snap, g.pub
			sets = append(sets, setPub{n.id, g.pub})
		}
		if s.opts.CA == nil || !n.wantsSecrets {
			continue
		}
		switch {
		case n.cert == nil || n.certFor != t.identity || !now.Before(n.renewAt):
			issue = append(issue, t)
		case !n.secretsSet:
			// A node back within its grace period: serve the
			// certificate it had.
			n.secretsSet = true
			secretSets = append(secretSets, setSnap{n.id, n.secretSnap})
		}
	}
	if !newOnly {
		// Forget groups nobody uses any more.
		used := map[string]bool{}
		for _, n := range s.nodes {
			if n.live() {
				used[n.group] = true
			}
		}
		for k := range s.groups {
			if !used[k] {
				delete(s.groups, k)
			}
		}
	}
	s.mu.Unlock()

	// 5. Publish. Versions that did not change answer no watch.
	for _, set := range sets {
		s.config.SetSnapshot(set.nodeID, set.pub)
	}
	for _, set := range secretSets {
		if err := s.secrets.SetSnapshot(context.Background(), set.nodeID, set.snap); err != nil {
			s.log.Error("publishing secrets failed", "node", set.nodeID, "error", err)
		}
	}
	if len(sets)+len(secretSets) > 0 {
		// A resuming delta proxy may already hold what was just set.
		s.mu.Lock()
		for _, t := range targets {
			for _, st := range t.n.streams {
				s.resyncLocked(st)
			}
		}
		s.mu.Unlock()
	}
	for _, t := range issue {
		s.issue(t.n, t.identity)
	}
	// 6. Withdraw the assignments that no published cluster uses any more.
	s.removeUnusedEndpoints(gone)
}

// publishEndpoints brings the endpoint cache of every flavour up to date
// with model m, unless it already is, whether or not a proxy of that
// flavour is connected: a proxy that connects later then finds them ready.
// It returns, per flavour, the assignments the model no longer has, to be
// withdrawn once no group refers to them (removeUnusedEndpoints). Called
// with buildMu held.
func (s *Server) publishEndpoints(m *model.Snapshot, changedAt time.Time) map[translate.Flavor][]string {
	if m == nil {
		return nil
	}
	gone := map[translate.Flavor][]string{}
	defer s.eds.refreshNames()
	for _, f := range []translate.Flavor{translate.FlavorEnvoy, translate.FlavorProxyless} {
		if s.edsFrom[f] == m {
			continue
		}
		names, err := s.eds.flavor(f).update(s.checkAssignments(m, f), changedAt)
		s.edsFrom[f] = m
		if len(names) > 0 {
			gone[f] = names
		}
		if err == nil {
			s.edsErr[f] = ""
			continue
		}
		s.m.configErrors.WithLabelValues(errInvalid).Inc()
		if s.edsErr[f] != err.Error() {
			s.edsErr[f] = err.Error()
			s.log.Error("not publishing invalid endpoints; proxies keep the last valid assignment of those clusters",
				"flavor", f, "error", err)
		}
	}
	return gone
}

// removeUnusedEndpoints withdraws the assignments in gone that no group's
// published clusters use. One still in use (its group's new configuration
// was refused, so the group serves its last good one) stays until it is
// not. Called with buildMu held.
func (s *Server) removeUnusedEndpoints(gone map[translate.Flavor][]string) {
	if len(gone) == 0 {
		return
	}
	s.mu.Lock()
	used := map[translate.Flavor]map[string]bool{}
	for _, g := range s.groups {
		if g.snap == nil {
			continue
		}
		u := used[g.proxy.Flavor]
		if u == nil {
			u = map[string]bool{}
			used[g.proxy.Flavor] = u
		}
		for _, n := range g.edsNames {
			u[n] = true
		}
	}
	s.mu.Unlock()
	for f, names := range gone {
		var drop []string
		for _, n := range names {
			if !used[f][n] {
				drop = append(drop, n)
			}
		}
		s.eds.flavor(f).remove(drop)
		if len(drop) > 0 {
			s.eds.refreshNames()
		}
		// Still-used ones are offered again next time.
		if len(drop) < len(names) {
			delete(s.edsFrom, f)
		}
	}
}

// build translates and checks each needed group, or for those in prev
// that the change from their model to m touches only in endpoints, swaps
// in the new assignments (see reuse).
func (s *Server) build(m *model.Snapshot, need map[string]translate.Proxy, prev map[string]reusable) []built {
	if len(need) == 0 {
		return nil
	}
	if m == nil {
		m = &model.Snapshot{}
	}
	var out []built
	if len(prev) > 0 {
		out, need = s.reuse(m, need, prev)
		if len(need) == 0 {
			return out
		}
	}
	jobs := make(chan built, len(need))
	for k, px := range need {
		jobs <- built{key: k, proxy: px}
	}
	close(jobs)
	// The endpoint cache builds and serves the assignments; groups need
	// only their names.
	opts := s.opts.Translate
	opts.AssignmentNamesOnly = true
	batch := translate.NewBatch(m, opts)
	out = slices.Grow(out, len(need))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range min(workers(), len(need)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range jobs {
				b = s.buildGroup(m, batch, b)
				mu.Lock()
				out = append(out, b)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

func (s *Server) buildGroup(m *model.Snapshot, batch *translate.Batch, b built) built {
	var res *translate.Resources
	if s.translate != nil {
		res = s.translate(m, b.proxy, s.opts.Translate)
	} else {
		res = batch.Translate(b.proxy)
	}
	if res == nil {
		res = &translate.Resources{}
	}
	b.problems, b.from = res.Problems, m
	for _, cla := range res.Endpoints {
		b.edsNames = append(b.edsNames, cla.GetClusterName())
	}
	slices.Sort(b.edsNames)
	snap, err := groupSnapshotUsing(res, s.resources, &b.used)
	if err != nil {
		var ce *configError
		if !errors.As(err, &ce) {
			ce = &configError{kind: errInvalid, err: err}
		}
		b.err = ce
		return b
	}
	pub, err := publish(snap, s.resources)
	if err != nil {
		b.err = &configError{kind: errInvalid, err: err}
		return b
	}
	// The snapshot keeps its versions; its resources are in pub.
	for i := range snap.Resources {
		snap.Resources[i].Items = nil
	}
	b.snap, b.pub = snap, pub
	return b
}

// reuse serves the groups of need that have a snapshot in prev and for
// which the change from the model of that snapshot to m touches only
// endpoints (translate.OnlyEndpointsDiffer): each keeps its snapshot of
// listeners, routes and clusters as it is, so its proxies are not even
// asked, and the endpoint cache sends them the changed assignments. The
// groups it cannot serve are returned for translation.
func (s *Server) reuse(m *model.Snapshot, need map[string]translate.Proxy, prev map[string]reusable) ([]built, map[string]translate.Proxy) {
	type comparison struct {
		from   *model.Snapshot
		flavor translate.Flavor
	}
	same := map[comparison]bool{}
	rest := make(map[string]translate.Proxy, len(need))
	var out []built
	for key, px := range need {
		p, ok := prev[key]
		if !ok {
			rest[key] = px
			continue
		}
		c := comparison{p.from, px.Flavor}
		eq, known := same[c]
		if !known {
			eq = translate.OnlyEndpointsDiffer(p.from, m, px.Flavor, s.opts.Translate)
			same[c] = eq
		}
		if !eq {
			rest[key] = px
			continue
		}
		s.resources.keep(p.used)
		out = append(out, built{key: key, proxy: px, snap: p.snap, pub: p.pub, problems: p.problems, from: m, used: p.used, edsNames: p.edsNames})
	}
	if len(out) > 0 {
		s.log.Debug("endpoint-only change: groups keep their listeners, routes and clusters", "groups", len(out), "translated", len(rest))
	}
	return out, rest
}

// checkedAssignment is one ClusterLoadAssignment after the table's check:
// the shared copy and its version, or why it is invalid.
type checkedAssignment struct {
	res     types.Resource
	version string
	err     error
}

// checkAssignments builds m's assignments for flavour f and checks each.
// An assignment whose input is the same as in the previous call is not
// built again: an endpoint change rebuilds one assignment, not all.
// Called with buildMu held.
func (s *Server) checkAssignments(m *model.Snapshot, f translate.Flavor) map[string]checkedAssignment {
	inputs := translate.AssignmentInputs(m, f, s.opts.Translate)
	prev := s.edsBuilt[f]
	built := make(map[string]builtAssignment, len(inputs))
	out := make(map[string]checkedAssignment, len(inputs))
	for name, in := range inputs {
		if p, ok := prev[name]; ok && p.in.Equal(in) {
			built[name] = p
			out[name] = p.checked
			continue
		}
		cla := translate.Assignment(f, name, in)
		var c checkedAssignment
		encoded, err := cachev3.MarshalResource(cla)
		if err != nil {
			c.err = fmt.Errorf("marshalling eds resource %q: %w", name, err)
		} else {
			c.res, c.version, c.err = s.resources.check(resourcev3.EndpointType, cla, encoded)
			if c.version == "" {
				c.version = cachev3.HashResource(encoded)
			}
		}
		out[name] = c
		if c.err == nil {
			built[name] = builtAssignment{in: in, checked: c}
		}
	}
	s.edsBuilt[f] = built
	return out
}

// builtAssignment is an assignment checkAssignments built, with its input.
type builtAssignment struct {
	in      translate.AssignmentInput
	checked checkedAssignment
}

// issue gives a node a fresh certificate for id and publishes its secrets
// to every stream of the node watching them. Called with buildMu held.
func (s *Server) issue(n *nodeState, id auth.Identity) {
	cert, err := s.opts.CA.Issue(id.Namespace, id.ServiceAccount)
	var snap *cachev3.Snapshot
	if err == nil {
		snap, err = versionedSnapshot(secretResources(cert.ChainPEM, cert.KeyPEM, s.opts.CA.RootPEM()),
			(*resourceTable)(nil).check, nil) // secrets are per node: nothing to share
	}
	s.mu.Lock()
	live := n.live() && s.nodes[n.id] == n
	if err != nil {
		n.certErr, n.certFor = err, id
		// Try again soon; a CA error is usually a file being replaced.
		n.renewAt = s.now().Add(certRetry)
		attrs := []any{"node", n.id, "identity", id.String(), "error", err}
		s.mu.Unlock()
		s.m.configErrors.WithLabelValues(errCertificate).Inc()
		s.log.Error("issuing a workload certificate failed; retrying", attrs...)
		s.kickRenewal()
		return
	}
	if !live {
		s.mu.Unlock()
		return
	}
	meta := *cert
	meta.KeyPEM = nil // the debug API never needs it; the cache holds the secret
	n.cert, n.certFor, n.certErr, n.secretSnap, n.secretsSet = &meta, id, nil, snap, true
	n.renewAt = cert.RenewAt()
	s.mu.Unlock()
	if err := s.secrets.SetSnapshot(context.Background(), n.id, snap); err != nil {
		s.log.Error("publishing secrets failed", "node", n.id, "error", err)
	}
	s.m.certsIssued.Inc()
	s.log.Info("issued workload certificate", "node", n.id, "spiffe_id", cert.SPIFFEID, "serial", cert.Serial, "not_after", cert.NotAfter)
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

// renewDue re-issues every certificate whose renewal time has come, once
// per node whatever its number of streams, drops the certificates of nodes
// gone longer than their grace period, and returns the earliest of those
// times still ahead (zero if none).
func (s *Server) renewDue() time.Time {
	if s.opts.CA == nil {
		return time.Time{}
	}
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	s.mu.Lock()
	now := s.now()
	var due []target
	for id, n := range s.nodes {
		if !n.live() {
			if !n.keepUntil.IsZero() && !now.Before(n.keepUntil) {
				delete(s.nodes, id)
			}
			continue
		}
		if n.renewAt.IsZero() || now.Before(n.renewAt) {
			continue
		}
		if _, ok := n.authorizedIdentity(); !ok {
			continue // every stream refused: nothing to renew for
		}
		// Renewal, or a retry after a failed issue.
		due = append(due, target{n: n, identity: n.certFor})
	}
	s.mu.Unlock()
	for _, t := range due {
		s.issue(t.n, t.identity)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var next time.Time
	for _, n := range s.nodes {
		at := n.renewAt
		if !n.live() {
			at = n.keepUntil
		}
		if !at.IsZero() && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	return next
}

// updateWorkloadExpiry sets the gauge to the earliest expiry served.
func (s *Server) updateWorkloadExpiry() {
	s.mu.Lock()
	var first time.Time
	for _, n := range s.nodes {
		if n.live() && n.cert != nil && (first.IsZero() || n.cert.NotAfter.Before(first)) {
			first = n.cert.NotAfter
		}
	}
	s.mu.Unlock()
	if first.IsZero() {
		s.m.workloadExpiry.Set(0)
		return
	}
	s.m.workloadExpiry.Set(float64(first.Unix()))
}
