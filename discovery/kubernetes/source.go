// Package kubernetes is minimesh's Kubernetes discovery source: it watches
// an API server with client-go informers and publishes the same model
// snapshot as discovery/file, so nothing downstream knows which source ran.
//
// It reads Namespaces, Services, Pods and EndpointSlices (discovery.k8s.io/v1;
// endpoints come only from slices, the EndpointSlice controller's view), and
// Istio's PeerAuthentication, AuthorizationPolicy, RequestAuthentication
// (security.istio.io) and DestinationRule (networking.istio.io) custom
// resources through the dynamic client. The CRDs for those kinds are in
// crds/ (see CRDs).
//
// Guarantees:
//   - The first snapshot is published only after every informer has listed
//     its kind, so meshd never serves an empty or partial mesh because a
//     list was slow or failed.
//   - Changes are coalesced (Options.Coalesce) and a snapshot is published
//     only when it differs from the last one. While the API server is
//     unreachable the informers keep their caches and nothing is published;
//     after reconnecting they resync, and only real changes are published.
//   - A policy object that fails validation is skipped, logged, counted and
//     reported as a Warning Event with reason InvalidPolicy on the object,
//     naming each field and reason; everything else keeps working.
//
// The source is read-only towards the API server apart from Events, so a
// second meshd watching the same cluster is safe. It needs the RBAC in
// rbac.yaml (see RBAC): get, list and watch on namespaces, services, pods,
// endpointslices and the four policy kinds; create and patch on events.
package kubernetes

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/minimesh/minimesh/discovery"
	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

// DefaultCoalesce is how long the source waits after a change for more
// changes before it builds a snapshot: long enough to fold a rollout's burst
// of pod, slice and policy events into one publish, short against the xDS
// layer's own debounce.
const DefaultCoalesce = 75 * time.Millisecond

// DefaultKindRecheck is how often missing policy kinds are looked for.
const DefaultKindRecheck = 10 * time.Second

// syncWarnInterval is how often Run names the informers that have not synced
// yet, typically because of missing RBAC or an unreachable API server.
const syncWarnInterval = 15 * time.Second

// EventComponent is the source component of the Events the source records.
const EventComponent = "minimesh"

// Options configure a Source. Config, or Client and Dynamic, are required.
type Options struct {
	// Config builds Client and Dynamic when they are nil.
	Config  *rest.Config
	Client  kubernetes.Interface
	Dynamic dynamic.Interface

	// Coalesce is the quiet period after a change before a snapshot is
	// built; DefaultCoalesce when zero.
	Coalesce time.Duration

	// KindRecheck is how often the source asks the API server again for
	// policy kinds it did not serve (their CRDs not installed yet), so
	// that they are watched as soon as they are; DefaultKindRecheck when
	// zero.
	KindRecheck time.Duration

	// Logger receives the source's logs; slog.Default() when nil.
	Logger *slog.Logger

	// InvalidObjects, when set, is incremented once per rejected version
	// of a policy object. It must have exactly one label, the object's kind.
	InvalidObjects *prometheus.CounterVec

	// EventRecorder records Events on invalid policy objects. When nil the
	// source records core/v1 Events through Client itself.
	EventRecorder record.EventRecorder

	// Observe is told of every informer event, when it arrives (see
	// discovery.Observer).
	Observe discovery.Observer

	// RootNamespace holds mesh-wide policy, as meshd's --root-namespace;
	// policy.DefaultRootNamespace when empty. Conflicts between mesh-wide
	// policies are decided when the snapshot is built, and it decides
	// which workloads a policy's selector may select, for the warning
	// about a selector that selects none.
	RootNamespace string
}

// Source watches one Kubernetes API server. Create it with New; Run it once.
type Source struct {
	client   kubernetes.Interface
	dynamic  dynamic.Interface
	coalesce time.Duration
	recheck  time.Duration
	log      *slog.Logger
	invalid  *prometheus.CounterVec
	recorder record.EventRecorder
	observe  discovery.Observer
	root     string
}

// New checks the options and returns a Source. It does not contact the API
// server; Run does.
func New(opts Options) (*Source, error) {
	s := &Source{
		client:   opts.Client,
		dynamic:  opts.Dynamic,
		coalesce: opts.Coalesce,
		recheck:  opts.KindRecheck,
		log:      opts.Logger,
		invalid:  opts.InvalidObjects,
		recorder: opts.EventRecorder,
		observe:  opts.Observe,
		root:     cmp.Or(opts.RootNamespace, policy.DefaultRootNamespace),
	}
	if s.recheck <= 0 {
		s.recheck = DefaultKindRecheck
	}
	if s.coalesce <= 0 {
		s.coalesce = DefaultCoalesce
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.client == nil || s.dynamic == nil {
		if opts.Config == nil {
			return nil, errors.New("kubernetes discovery needs a client configuration: pass --kubeconfig or run in a cluster")
		}
		var err error
		if s.client == nil {
			if s.client, err = kubernetes.NewForConfig(opts.Config); err != nil {
				return nil, fmt.Errorf("cannot build a Kubernetes client from the configuration: %w", err)
			}
		}
		if s.dynamic == nil {
			if s.dynamic, err = dynamic.NewForConfig(opts.Config); err != nil {
				return nil, fmt.Errorf("cannot build a Kubernetes dynamic client from the configuration: %w", err)
			}
		}
	}
	return s, nil
}

// watched is the set of informers of one Run.
type watched struct {
	namespaces, services, pods, slices cache.SharedIndexInformer
	policies                           []cache.SharedIndexInformer
	names                              []string // for sync diagnostics, parallel to all()
}

func (w *watched) all() []cache.SharedIndexInformer {
	return append([]cache.SharedIndexInformer{w.namespaces, w.services, w.pods, w.slices}, w.policies...)
}

// Run watches the API server until ctx ends, publishing a snapshot once
// every informer has synced and after every change that alters it. It
// returns nil when ctx ends, and an error only if the source cannot start.
func (s *Source) Run(ctx context.Context, publish func(*model.Snapshot)) error {
	kinds, err := s.servedPolicyKinds(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}

	recorder := s.recorder
	if recorder == nil {
		b := record.NewBroadcaster(record.WithContext(ctx))
		b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: s.client.CoreV1().Events("")})
		defer b.Shutdown()
		recorder = b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: EventComponent})
	}
	rep := &reporter{log: s.log, recorder: recorder, count: s.countInvalid}

	// Resync 0: a periodic resync would only re-deliver cached objects,
	// which cannot change a snapshot.
	factory := informers.NewSharedInformerFactoryWithOptions(s.client, 0,
		informers.WithTransform(stripManagedFields))
	dynFactory := dynamicinformer.NewDynamicSharedInformerFactory(s.dynamic, 0)
	w := &watched{
		namespaces: factory.Core().V1().Namespaces().Informer(),
		services:   factory.Core().V1().Services().Informer(),
		pods:       factory.Core().V1().Pods().Informer(),
		slices:     factory.Discovery().V1().EndpointSlices().Informer(),
		names:      []string{"namespaces", "services", "pods", "endpointslices.discovery.k8s.io"},
	}
	watching := map[schema.GroupVersionResource]bool{}
	for _, k := range kinds {
		w.policies = append(w.policies, dynFactory.ForResource(k.gvr).Informer())
		w.names = append(w.names, k.resourceName())
		watching[k.gvr] = true
	}

	changed := make(chan struct{}, 1)
	// firstChange is when the first event not yet in a published
	// snapshot came (nil when none): the snapshot's ObservedAt. It keeps
	// the monotonic clock reading, so a wall-clock step cannot skew it.
	var firstChange atomic.Pointer[time.Time]
	notify := func() {
		now := time.Now()
		s.observe.Observe(now)
		firstChange.CompareAndSwap(nil, &now)
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify() },
		UpdateFunc: func(any, any) { notify() },
		DeleteFunc: func(any) { notify() },
	}
	for _, inf := range w.all() {
		if _, err := inf.AddEventHandler(handler); err != nil {
			return fmt.Errorf("cannot watch the API server: %w", err)
		}
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		factory.Shutdown()
		dynFactory.Shutdown()
	}()
	factory.Start(runCtx.Done())
	dynFactory.Start(runCtx.Done())

	if !s.waitForSync(runCtx, w) {
		return nil // ctx ended before the first full list
	}
	s.log.Info("kubernetes discovery synced", "policyKinds", len(kinds))

	dc := newDecodeCache(rep.report)
	var last *model.Snapshot
	publishIfChanged := func() {
		observed := firstChange.Swap(nil)
		snap, conflicts := buildReportingConflicts(s.collect(w, dc))
		rep.reportConflicts(conflicts)
		if last != nil && last.SameMesh(snap) {
			return
		}
		if observed != nil {
			snap.ObservedAt = *observed
		}
		last = snap
		publish(snap)
	}
	// Events delivered during the initial list are part of the first build.
	select {
	case <-changed:
	default:
	}
	firstChange.Store(nil)
	publishIfChanged()

	// Policy kinds whose CRDs are not installed yet are looked for again
	// until all are watched: a meshd started before its CRDs must not
	// ignore AuthorizationPolicies forever. A new kind's informer joins the
	// snapshot once its first list is complete (so that it is not
	// published object by object); until then it is polled, never waited
	// for, so a kind that cannot be listed (RBAC, a CRD removed again)
	// holds up nothing else.
	var recheck <-chan time.Time
	if len(watching) < len(policyKinds) {
		t := time.NewTicker(s.recheck)
		defer t.Stop()
		recheck = t.C
	}
	type joining struct {
		inf    cache.SharedIndexInformer
		kind   policyKind
		since  time.Time
		warned bool
	}
	var pendingKinds []joining
	syncPoll := time.NewTicker(newKindPoll)
	defer syncPoll.Stop()

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	pending := false
	for {
		var polling <-chan time.Time
		if len(pendingKinds) > 0 {
			polling = syncPoll.C
		}
		select {
		case <-ctx.Done():
			return nil
		case <-recheck:
			served, err := s.servedOnce(false)
			if err != nil {
				continue // the API server is away; ask again next time
			}
			added := false
			for _, k := range served {
				if watching[k.gvr] {
					continue
				}
				inf := dynFactory.ForResource(k.gvr).Informer()
				if _, err := inf.AddEventHandler(handler); err != nil {
					s.log.Error("cannot watch a policy kind", "kind", k.kind, "error", err)
					continue
				}
				watching[k.gvr] = true
				pendingKinds = append(pendingKinds, joining{inf: inf, kind: k, since: time.Now()})
				added = true
				s.log.Info("the API server now serves a policy kind; watching it", "kind", k.kind, "resource", k.resourceName())
			}
			if added {
				dynFactory.Start(runCtx.Done())
			}
			if len(watching) == len(policyKinds) {
				recheck = nil
			}
		case <-polling:
			still := pendingKinds[:0]
			for _, j := range pendingKinds {
				switch {
				case j.inf.HasSynced():
					w.policies = append(w.policies, j.inf)
					w.names = append(w.names, j.kind.resourceName())
					notify()
				case !j.warned && time.Since(j.since) > syncWarnAfter:
					j.warned = true
					s.log.Warn("a newly served policy kind has not been listed yet; its objects are not enforced until it is (check meshd's RBAC for it)",
						"kind", j.kind.kind, "resource", j.kind.resourceName(), "waited", time.Since(j.since).Round(time.Second))
					still = append(still, j)
				default:
					still = append(still, j)
				}
			}
			pendingKinds = still
		case <-changed:
			// The window starts at the first change and is not extended,
			// so a steady stream of changes still publishes every Coalesce.
			if !pending {
				pending = true
				timer.Reset(s.coalesce)
			}
		case <-timer.C:
			pending = false
			publishIfChanged()
		}
	}
}

// waitForSync waits until every informer has listed its kind, logging the
// ones that have not every syncWarnInterval. It reports false if ctx ended.
func (s *Source) waitForSync(ctx context.Context, w *watched) bool {
	all := w.all()
	start := time.Now()
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	nextWarn := start.Add(syncWarnInterval)
	for {
		var pending []string
		for i, inf := range all {
			if !inf.HasSynced() {
				pending = append(pending, w.names[i])
			}
		}
		if len(pending) == 0 {
			return true
		}
		if now := time.Now(); now.After(nextWarn) {
			nextWarn = now.Add(syncWarnInterval)
			s.log.Warn("waiting for the first list from the API server; nothing is published until every kind is listed "+
				"(check connectivity and that meshd's service account has the RBAC in discovery/kubernetes/rbac.yaml)",
				"pending", pending, "waited", now.Sub(start).Round(time.Second))
		}
		select {
		case <-ctx.Done():
			return false
		case <-ticker.C:
		}
	}
}

// collect reads the informer caches into build's inputs.
func (s *Source) collect(w *watched, dc *decodeCache) inputs {
	in := inputs{rootNamespace: s.root}
	in.namespaces = listAs[*corev1.Namespace](w.namespaces)
	in.services = listAs[*corev1.Service](w.services)
	in.pods = listAs[*corev1.Pod](w.pods)
	in.slices = listAs[*discoveryv1.EndpointSlice](w.slices)
	var objs []*unstructured.Unstructured
	for _, inf := range w.policies {
		objs = append(objs, listAs[*unstructured.Unstructured](inf)...)
	}
	// Decode in a stable order so Events and logs come out in one order.
	slices.SortFunc(objs, func(a, b *unstructured.Unstructured) int {
		return cmp.Or(cmp.Compare(a.GetKind(), b.GetKind()),
			cmp.Compare(a.GetNamespace(), b.GetNamespace()), cmp.Compare(a.GetName(), b.GetName()))
	})
	in.policies = dc.decodeAll(objs, time.Now())
	in.rootNamespace = s.root
	return in
}

func listAs[T any](inf cache.SharedIndexInformer) []T {
	items := inf.GetStore().List()
	out := make([]T, 0, len(items))
	for _, it := range items {
		if v, ok := it.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// servedPolicyKinds asks the API server which policy kinds it serves. A
// kind whose CRD is not installed cannot have objects yet, so it is left
// out with a warning (rather than waiting forever for a list that fails)
// and looked for again while Run runs. An unreachable API server is
// retried until ctx ends.
func (s *Source) servedPolicyKinds(ctx context.Context) ([]policyKind, error) {
	var served []policyKind
	backoff := wait.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 1 << 30, Cap: 10 * time.Second}
	err := wait.ExponentialBackoffWithContext(ctx, backoff, func(context.Context) (bool, error) {
		var err error
		served, err = s.servedOnce(true)
		if err != nil {
			s.log.Warn("cannot ask the API server which policy kinds it serves; retrying", "error", err)
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("cannot reach the Kubernetes API server: %w", err)
	}
	return served, nil
}

// servedOnce asks the API server once which policy kinds it serves,
// warning about each missing one when warn is set.
func (s *Source) servedOnce(warn bool) ([]policyKind, error) {
	var served []policyKind
	byGV := map[string]map[string]bool{}
	for _, k := range policyKinds {
		gv := k.gvr.GroupVersion().String()
		if _, ok := byGV[gv]; !ok {
			list, err := s.client.Discovery().ServerResourcesForGroupVersion(gv)
			switch {
			case apierrors.IsNotFound(err):
				byGV[gv] = map[string]bool{}
			case err != nil:
				return nil, fmt.Errorf("%s: %w", gv, err)
			default:
				byGV[gv] = map[string]bool{}
				for _, r := range list.APIResources {
					byGV[gv][r.Name] = true
				}
			}
		}
		if byGV[gv][k.gvr.Resource] {
			served = append(served, k)
		} else if warn {
			s.log.Warn("the API server does not serve this policy kind, so such policies cannot exist yet; "+
				"meshd watches it as soon as minimesh's CRDs (discovery/kubernetes/crds) are installed",
				"kind", k.kind, "resource", k.gvr.Resource+"."+k.gvr.Group, "version", k.gvr.Version)
		}
	}
	return served, nil
}

// newKindPoll is how often a newly watched policy kind is checked for its
// first complete list; syncWarnAfter is when a kind still not listed is
// reported.
const (
	newKindPoll   = 100 * time.Millisecond
	syncWarnAfter = 30 * time.Second
)

// resourceName is the kind's resource as kubectl names it
// ("authorizationpolicies.security.istio.io").
func (k policyKind) resourceName() string { return k.gvr.Resource + "." + k.gvr.Group }

func (s *Source) countInvalid(kind string) {
	if s.invalid == nil {
		return
	}
	c, err := s.invalid.GetMetricWithLabelValues(kind)
	if err != nil {
		s.log.Error("the invalid-objects counter does not take one label (the kind); not counting", "error", err)
		return
	}
	c.Inc()
}

// stripManagedFields drops server-side-apply bookkeeping from cached
// objects: it is often the largest part of a pod and minimesh never reads it.
func stripManagedFields(obj any) (any, error) {
	if m, ok := obj.(interface {
		SetManagedFields([]metav1.ManagedFieldsEntry)
	}); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}
