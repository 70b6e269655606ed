package kubernetes_test

// These tests run the source against a real kube-apiserver and etcd
// (e2e/kubeenv). They are skipped, with the command that builds the
// binaries, when those are missing.

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/minimesh/minimesh/discovery/kubernetes"
	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/e2e/kubeenv"
	"github.com/minimesh/minimesh/policy"
)

const waitTimeout = 20 * time.Second

func ptr[T any](v T) *T { return &v }

// publisher records every snapshot the source publishes.
type publisher struct {
	mu    sync.Mutex
	snaps []*model.Snapshot
	ch    chan *model.Snapshot
}

func (p *publisher) publish(s *model.Snapshot) {
	p.mu.Lock()
	p.snaps = append(p.snaps, s)
	p.mu.Unlock()
	p.ch <- s
}

func (p *publisher) all() []*model.Snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.snaps)
}

// startSource runs a Source with cfg until the test ends.
func startSource(t *testing.T, cfg *rest.Config, invalid *prometheus.CounterVec) *publisher {
	t.Helper()
	return startSourceWith(t, kubernetes.Options{Config: cfg, InvalidObjects: invalid})
}

// startSourceWith runs a Source with opts (logging to the test) until the
// test ends.
func startSourceWith(t *testing.T, opts kubernetes.Options) *publisher {
	t.Helper()
	opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	src, err := kubernetes.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	p := &publisher{ch: make(chan *model.Snapshot, 100)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, p.publish) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v after cancel, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return within 10s of cancel")
		}
	})
	return p
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// waitSnapshot returns the first published snapshot for which ok is true,
// failing the test after waitTimeout.
func (p *publisher) waitSnapshot(t *testing.T, what string, ok func(*model.Snapshot) bool) *model.Snapshot {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case s := <-p.ch:
			if ok(s) {
				return s
			}
		case <-deadline:
			t.Fatalf("no snapshot with %s within %s", what, waitTimeout)
		}
	}
}

// expectQuiet fails if anything is published within d.
func (p *publisher) expectQuiet(t *testing.T, d time.Duration, why string) {
	t.Helper()
	select {
	case s := <-p.ch:
		t.Fatalf("published a snapshot although %s: services=%d workloads=%d", why, len(s.Services), len(s.Workloads))
	case <-time.After(d):
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// must(call(...))(t) returns call's value, failing the test on error.
func must[T any](v T, err error) func(*testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// runningPod creates a pod and sets its status as a kubelet would: an IP
// and the Ready condition.
func runningPod(t *testing.T, c clientset.Interface, ns, name, sa, ip string, labels map[string]string) {
	t.Helper()
	ctx := ctxT(t)
	p := must(c.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{
			Name: "app", Image: "example.invalid/app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		}}},
	}, metav1.CreateOptions{}))(t)
	p.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
	}
	must(c.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}))(t)
}

func endpoint(ip, podName string) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{
		Addresses:  []string{ip},
		Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)},
		TargetRef:  &corev1.ObjectReference{Kind: "Pod", Name: podName},
	}
}

func service(t *testing.T, c clientset.Interface, ns, name string) {
	t.Helper()
	must(c.CoreV1().Services(ns).Create(ctxT(t), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}, metav1.CreateOptions{}))(t)
}

// meshdConfig creates service account minimesh-system/meshd bound to the
// ClusterRole in rbac.yaml and returns a client configuration that uses its
// token, so the tests prove that the documented RBAC is enough.
func meshdConfig(t *testing.T, env *kubeenv.Env) *rest.Config {
	t.Helper()
	ctx := ctxT(t)
	binding := `
apiVersion: v1
kind: Namespace
metadata:
  name: minimesh-system
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: meshd
  namespace: minimesh-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: minimesh-meshd
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: minimesh-meshd
subjects:
- kind: ServiceAccount
  name: meshd
  namespace: minimesh-system
`
	if err := env.Apply(ctx, append(kubernetes.RBAC(), "\n---\n"+binding...), kubeenv.ApplyOptions{}); err != nil {
		t.Fatalf("apply meshd's RBAC: %v", err)
	}
	tok := must(env.Client().CoreV1().ServiceAccounts("minimesh-system").CreateToken(ctx, "meshd",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr[int64](3600)}},
		metav1.CreateOptions{}))(t)
	cfg := env.RESTConfig()
	cfg.BearerToken = tok.Status.Token
	return cfg
}

func serviceNames(s *model.Snapshot, ns string) []string {
	var out []string
	for _, svc := range s.Services {
		if svc.Namespace == ns {
			out = append(out, svc.Name)
		}
	}
	return out
}

func TestSourceAgainstAPIServer(t *testing.T) {
	env := kubeenv.Start(t)
	ctx := ctxT(t)
	applyCRDs(t, env)
	admin := env.Client()
	const ns = "shop"
	must(admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"istio-injection": "enabled"}},
	}, metav1.CreateOptions{}))(t)
	meshed := map[string]string{"app": "product", model.LabelTLSMode: model.TLSModeIstio}

	// The cluster is populated before the source starts: its first
	// snapshot must already hold all of it.
	service(t, admin, ns, "product")
	runningPod(t, admin, ns, "product-1", "product", "10.1.0.1", meshed)
	sl := must(admin.DiscoveryV1().EndpointSlices(ns).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "product-abc", Labels: map[string]string{discoveryv1.LabelServiceName: "product"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr[int32](8080)}},
		Endpoints:   []discoveryv1.Endpoint{endpoint("10.1.0.1", "product-1")},
	}, metav1.CreateOptions{}))(t)

	invalid := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "invalid_total"}, []string{"kind"})
	var observedMu sync.Mutex
	var observed []time.Time
	pub := startSourceWith(t, kubernetes.Options{Config: meshdConfig(t, env), InvalidObjects: invalid, Observe: func(at time.Time) {
		observedMu.Lock()
		observed = append(observed, at)
		observedMu.Unlock()
	}})

	first := pub.waitSnapshot(t, "anything", func(*model.Snapshot) bool { return true })
	svc := first.Service(ns, "product")
	if svc == nil || svc.ClusterIP == "" || len(svc.Ports) != 1 || svc.Ports[0].TargetPort != 8080 {
		t.Fatalf("first snapshot: service shop/product = %+v, want it with a cluster IP and port 80->8080", svc)
	}
	if w := first.Workload(ns, "product-1"); w == nil || !w.InMesh || !w.Ready || w.ServiceAccount != "product" || w.IP != "10.1.0.1" {
		t.Fatalf("first snapshot: workload shop/product-1 = %+v, want in mesh, ready, sa product, ip 10.1.0.1", w)
	}
	want := []model.Endpoint{{IP: "10.1.0.1", Port: 8080, Workload: "product-1", ServiceAccount: "product", InMesh: true, Ready: true, Serving: true}}
	if eps := first.EndpointsFor(ns, "product", 80); eps == nil || !slices.Equal(eps.Endpoints, want) {
		t.Fatalf("first snapshot: endpoints of shop/product:80 = %+v, want %+v", eps, want)
	}
	if !slices.ContainsFunc(first.Namespaces, func(n model.Namespace) bool { return n.Name == ns && n.Labels["istio-injection"] == "enabled" }) {
		t.Errorf("first snapshot: namespaces %+v lack shop with its label", first.Namespaces)
	}

	t.Run("an irrelevant change publishes nothing", func(t *testing.T) {
		p := must(admin.CoreV1().Pods(ns).Get(ctx, "product-1", metav1.GetOptions{}))(t)
		p.Annotations = map[string]string{"touched": "yes"}
		must(admin.CoreV1().Pods(ns).Update(ctx, p, metav1.UpdateOptions{}))(t)
		pub.expectQuiet(t, time.Second, "only an annotation changed")
	})

	t.Run("scaling adds an endpoint", func(t *testing.T) {
		before := time.Now()
		runningPod(t, admin, ns, "product-2", "product", "10.1.0.2", meshed)
		sl.Endpoints = append(sl.Endpoints, endpoint("10.1.0.2", "product-2"))
		sl = must(admin.DiscoveryV1().EndpointSlices(ns).Update(ctx, sl, metav1.UpdateOptions{}))(t)
		s := pub.waitSnapshot(t, "two endpoints behind shop/product:80", func(s *model.Snapshot) bool {
			eps := s.EndpointsFor(ns, "product", 80)
			return eps != nil && len(eps.Endpoints) == 2 && eps.Endpoints[1].Workload == "product-2" && eps.Endpoints[1].InMesh
		})
		// The snapshot says when its first informer event came: after
		// the change began, before the snapshot was handed over. The
		// observer was told of that event then.
		if s.ObservedAt.Before(before) || s.ObservedAt.After(time.Now()) {
			t.Errorf("the snapshot says it was observed at %v; the change began at %v", s.ObservedAt, before)
		}
		observedMu.Lock()
		if !slices.ContainsFunc(observed, func(at time.Time) bool { return at.Equal(s.ObservedAt) }) {
			t.Errorf("the observer was not told of the change the snapshot says it saw at %v (told of %d changes)", s.ObservedAt, len(observed))
		}
		observedMu.Unlock()
	})

	t.Run("a burst of changes is coalesced", func(t *testing.T) {
		const n = 20
		before := len(pub.all())
		for i := range n {
			must(admin.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("burst-%d", i)},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/app"}}},
			}, metav1.CreateOptions{}))(t)
		}
		pub.waitSnapshot(t, "all burst pods", func(s *model.Snapshot) bool { return s.Workload(ns, fmt.Sprintf("burst-%d", n-1)) != nil })
		// Without coalescing each pod would be its own publish.
		if got := len(pub.all()) - before; got >= n/2 {
			t.Errorf("%d pods created back to back gave %d publishes, want far fewer", n, got)
		}
	})

	t.Run("a terminating endpoint keeps its conditions", func(t *testing.T) {
		sl.Endpoints[1].Conditions = discoveryv1.EndpointConditions{Ready: ptr(false), Serving: ptr(true), Terminating: ptr(true)}
		sl = must(admin.DiscoveryV1().EndpointSlices(ns).Update(ctx, sl, metav1.UpdateOptions{}))(t)
		pub.waitSnapshot(t, "product-2 terminating", func(s *model.Snapshot) bool {
			eps := s.EndpointsFor(ns, "product", 80)
			return eps != nil && len(eps.Endpoints) == 2 && !eps.Endpoints[1].Ready && eps.Endpoints[1].Serving && eps.Endpoints[1].Terminating
		})
	})

	t.Run("a policy appears, in every served version", func(t *testing.T) {
		err := env.Apply(ctx, []byte(`
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec:
  mtls: {mode: STRICT}
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: product, namespace: shop}
spec:
  host: product
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
`), kubeenv.ApplyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s := pub.waitSnapshot(t, "the PeerAuthentication and DestinationRule", func(s *model.Snapshot) bool {
			return len(s.Policies.PeerAuthentications) == 1 && len(s.Policies.DestinationRules) == 1
		})
		pa := s.Policies.PeerAuthentications[0]
		if pa.Namespace != ns || pa.Name != "default" || pa.Spec.MTLS == nil || pa.Spec.MTLS.Mode != policy.ModeStrict || pa.CreationTimestamp.IsZero() {
			t.Errorf("PeerAuthentication = %+v (spec %+v), want shop/default STRICT with a creation time", pa.Meta, pa.Spec)
		}
		if dr := s.Policies.DestinationRules[0]; dr.Spec.TrafficPolicy == nil || dr.Spec.TrafficPolicy.TLS.Mode != policy.TLSIstioMutual {
			t.Errorf("DestinationRule spec = %+v, want ISTIO_MUTUAL", dr.Spec)
		}
	})

	t.Run("the CRD schema rejects a bad enum", func(t *testing.T) {
		err := env.Apply(ctx, []byte(`
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: typo, namespace: shop}
spec:
  mtls: {mode: STRIKT}
`), kubeenv.ApplyOptions{})
		if err == nil || !strings.Contains(err.Error(), "STRIKT") {
			t.Fatalf("applying mode STRIKT: err = %v, want the API server to refuse it", err)
		}
	})

	t.Run("an invalid policy is skipped and reported on the object", func(t *testing.T) {
		// Valid for the CRD schema, invalid for minimesh: * in the middle.
		err := env.Apply(ctx, []byte(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad-principal, namespace: shop}
spec:
  rules:
  - from:
    - source:
        principals: ["a*b"]
---
# A misspelt field (notNamespace for notNamespaces) is kept by the CRD's schema, not pruned
# into a broader rule, so minimesh sees it and refuses the object.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: typo-field, namespace: shop}
spec:
  rules:
  - from:
    - source:
        notNamespace: ["other"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-get, namespace: shop}
spec:
  selector: {matchLabels: {app: product}}
  rules:
  - to:
    - operation:
        methods: [GET]
`), kubeenv.ApplyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s := pub.waitSnapshot(t, "allow-get", func(s *model.Snapshot) bool { return len(s.Policies.AuthorizationPolicies) > 0 })
		if names := policyNames(s.Policies.AuthorizationPolicies); !slices.Equal(names, []string{"shop/allow-get"}) {
			t.Errorf("AuthorizationPolicies in force = %v, want only shop/allow-get", names)
		}
		var problem *model.Problem
		for i, p := range s.Problems {
			if p.Kind == policy.KindAuthorizationPolicy && p.Name == "bad-principal" && p.Severity == policy.SeverityError {
				problem = &s.Problems[i]
			}
		}
		if problem == nil || !strings.Contains(problem.Field, "principals") {
			t.Fatalf("snapshot problems = %+v, want an error on bad-principal's principals", s.Problems)
		}
		if len(s.Policies.PeerAuthentications) != 1 || s.EndpointsFor(ns, "product", 80) == nil {
			t.Errorf("the rest of the mesh changed: %d PeerAuthentications, endpoints %+v", len(s.Policies.PeerAuthentications), s.EndpointsFor(ns, "product", 80))
		}

		ev := waitEvent(t, admin, ns, "bad-principal")
		if ev.Type != corev1.EventTypeWarning || ev.Reason != kubernetes.ReasonInvalidPolicy ||
			!strings.Contains(ev.Message, problem.Field) || ev.InvolvedObject.Kind != policy.KindAuthorizationPolicy {
			t.Errorf("event = %s %s %s on %s: %q; want Warning %s naming %s",
				ev.Type, ev.Reason, ev.Source.Component, ev.InvolvedObject.Kind, ev.Message, kubernetes.ReasonInvalidPolicy, problem.Field)
		}
		if ev := waitEvent(t, admin, ns, "typo-field"); ev.Type != corev1.EventTypeWarning || !strings.Contains(ev.Message, "notNamespace") {
			t.Errorf("event about the misspelt field = %s %q; want a Warning naming notNamespace", ev.Type, ev.Message)
		}
		var m dto.Metric
		if err := invalid.WithLabelValues(policy.KindAuthorizationPolicy).Write(&m); err != nil {
			t.Fatal(err)
		}
		if got := m.GetCounter().GetValue(); got != 2 {
			t.Errorf("invalid-objects counter for AuthorizationPolicy = %v, want 2", got)
		}
	})

	t.Run("an invalid edit keeps the last valid version until the object is deleted", func(t *testing.T) {
		all := pub.all()
		before := all[len(all)-1]
		if len(before.Policies.AuthorizationPolicies) != 1 || len(before.Policies.PeerAuthentications) != 1 {
			t.Fatalf("the latest snapshot has %d AuthorizationPolicies and %d PeerAuthentications, want allow-get and shop/default",
				len(before.Policies.AuthorizationPolicies), len(before.Policies.PeerAuthentications))
		}
		// Misspelt fields the CRD schema keeps (the API server accepts
		// them); with server-side apply the correct fields are removed.
		err := env.Apply(ctx, []byte(`
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec:
  mTLS: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-get, namespace: shop}
spec:
  selector: {matchLabels: {app: product}}
  rules:
  - to:
    - operation:
        method: [GET]
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: product, namespace: shop}
spec:
  host: product
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL, sniName: product}
`), kubeenv.ApplyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		held := pub.waitSnapshot(t, "three held objects", func(s *model.Snapshot) bool { return len(s.Held) == 3 })
		if diff := cmp.Diff(before.Policies, held.Policies); diff != "" {
			t.Errorf("an invalid edit changed the policies in force (-before +after):\n%s", diff)
		}
		for _, h := range held.Held {
			if !strings.HasPrefix(h.Refused, "resourceVersion ") || !strings.HasPrefix(h.Serving, "resourceVersion ") || h.Refused == h.Serving {
				t.Errorf("held %s %s/%s: refused %q, serving %q; want two different resourceVersions", h.Kind, h.Namespace, h.Name, h.Refused, h.Serving)
			}
		}
		if ev := waitEventWith(t, admin, ns, "default", "stays in force"); ev.Reason != kubernetes.ReasonInvalidPolicy || !strings.Contains(ev.Message, "mTLS") {
			t.Errorf("event on the held PeerAuthentication = %s %q; want %s naming mTLS", ev.Reason, ev.Message, kubernetes.ReasonInvalidPolicy)
		}

		// A second namespace-wide PeerAuthentication is a newcomer: it
		// is refused, with an Event, and changes nothing.
		if err := env.Apply(ctx, []byte(`
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: aaa-permissive, namespace: shop}
spec:
  mtls: {mode: PERMISSIVE}
`), kubeenv.ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
		conflict := pub.waitSnapshot(t, "the conflict reported", func(s *model.Snapshot) bool {
			return slices.ContainsFunc(s.Problems, func(p model.Problem) bool {
				return p.Name == "aaa-permissive" && p.Severity == policy.SeverityError && strings.Contains(p.Message, "shop/default")
			})
		})
		if got := conflict.Policies.PeerAuthentications; len(got) != 1 || got[0].Name != "default" || got[0].Spec.MTLS.Mode != policy.ModeStrict {
			t.Errorf("PeerAuthentications in force after a conflicting newcomer: %+v, want only shop/default STRICT", got)
		}
		if ev := waitEventWith(t, admin, ns, "aaa-permissive", "shop/default"); ev.Reason != kubernetes.ReasonPolicyConflict {
			t.Errorf("event on the newcomer = %s %q; want %s", ev.Reason, ev.Message, kubernetes.ReasonPolicyConflict)
		}

		// Deleting the held object removes it; the other one applies.
		dyn := must(dynamic.NewForConfig(env.RESTConfig()))(t)
		gvr := schema.GroupVersionResource{Group: policy.GroupSecurity, Version: "v1", Resource: "peerauthentications"}
		if err := dyn.Resource(gvr).Namespace(ns).Delete(ctx, "default", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		after := pub.waitSnapshot(t, "the deleted PeerAuthentication gone", func(s *model.Snapshot) bool {
			return len(s.Held) == 2 && len(s.Policies.PeerAuthentications) == 1 && s.Policies.PeerAuthentications[0].Name == "aaa-permissive"
		})
		if after.Policies.PeerAuthentications[0].Spec.MTLS.Mode != policy.ModePermissive {
			t.Errorf("after deleting shop/default, in force: %+v", after.Policies.PeerAuthentications[0])
		}
		// Restore what later subtests expect.
		if err := dyn.Resource(gvr).Namespace(ns).Delete(ctx, "aaa-permissive", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("deleting a service removes it and its endpoints", func(t *testing.T) {
		if err := admin.CoreV1().Services(ns).Delete(ctx, "product", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		pub.waitSnapshot(t, "no shop/product", func(s *model.Snapshot) bool {
			return s.Service(ns, "product") == nil && s.EndpointsFor(ns, "product", 80) == nil
		})
	})

	// No snapshot, ever, may have been partial: every one holds the
	// objects that existed before the source started.
	for i, s := range pub.all() {
		if s.Workload(ns, "product-1") == nil || !slices.Contains(serviceNames(s, "default"), "kubernetes") {
			t.Errorf("snapshot %d is partial: it lacks shop/product-1 or default/kubernetes", i)
		}
	}
}

// applyPolicy applies a security.istio.io/v1 object in namespace default.
func applyPolicy(t *testing.T, env *kubeenv.Env, kind, name, spec string) {
	t.Helper()
	doc := fmt.Sprintf(`{"apiVersion": "security.istio.io/v1", "kind": %q, "metadata": {"name": %q, "namespace": "default"}, "spec": %s}`, kind, name, spec)
	if err := env.Apply(ctxT(t), []byte(doc), kubeenv.ApplyOptions{}); err != nil {
		t.Fatalf("apply %s %s: %v", kind, name, err)
	}
}

func policyNames(aps []*policy.AuthorizationPolicy) []string {
	var out []string
	for _, ap := range aps {
		out = append(out, ap.Key())
	}
	return out
}

// waitEvent waits for an Event about the named object; the recorder sends
// Events asynchronously.
func waitEvent(t *testing.T, c clientset.Interface, ns, name string) corev1.Event {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		list, err := c.CoreV1().Events(ns).List(ctxT(t), metav1.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("involvedObject.name", name).String(),
		})
		if err == nil && len(list.Items) > 0 {
			return list.Items[0]
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no Event about %s/%s within %s", ns, name, waitTimeout)
	return corev1.Event{}
}

// waitEventWith waits for an Event about the named object whose message
// contains text.
func waitEventWith(t *testing.T, c clientset.Interface, ns, name, text string) corev1.Event {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		list, err := c.CoreV1().Events(ns).List(ctxT(t), metav1.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("involvedObject.name", name).String(),
		})
		for _, ev := range list.Items {
			if err == nil && strings.Contains(ev.Message, text) {
				return ev
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no Event about %s/%s saying %q within %s", ns, name, text, waitTimeout)
	return corev1.Event{}
}

// TestAPIServerRestart: while the API server and etcd are down nothing is
// published (proxies keep their config); after they return, changes made
// just before the outage and after it arrive, and nothing is lost.
func TestAPIServerRestart(t *testing.T) {
	env := kubeenv.Start(t)
	applyCRDs(t, env)
	admin := env.Client()
	service(t, admin, "default", "stable")
	pub := startSource(t, env.RESTConfig(), nil)
	pub.waitSnapshot(t, "default/stable", func(s *model.Snapshot) bool { return s.Service("default", "stable") != nil })

	// A change made just before the outage may or may not reach the
	// source before the API server goes; either way it must arrive.
	service(t, admin, "default", "before")
	applyPolicy(t, env, "PeerAuthentication", "before", `{"mtls": {"mode": "STRICT"}}`)
	env.StopAPIServer()
	env.StopEtcd()
	// Let a publish of "before" that was already under way finish.
	time.Sleep(300 * time.Millisecond)
	for len(pub.ch) > 0 {
		<-pub.ch
	}
	pub.expectQuiet(t, 3*time.Second, "the API server is down")

	if err := env.StartEtcd(); err != nil {
		t.Fatal(err)
	}
	if err := env.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	service(t, admin, "default", "after")
	applyPolicy(t, env, "AuthorizationPolicy", "after", `{"action": "DENY", "rules": [{}]}`)
	pub.waitSnapshot(t, "the services and policies made before and after", func(s *model.Snapshot) bool {
		return s.Service("default", "before") != nil && s.Service("default", "after") != nil &&
			len(s.Policies.PeerAuthentications) == 1 && len(s.Policies.AuthorizationPolicies) == 1
	})
	for i, s := range pub.all() {
		if s.Service("default", "stable") == nil {
			t.Errorf("snapshot %d lost default/stable: %v", i, serviceNames(s, "default"))
		}
	}
	// Once resynced, nothing more is published without a change.
	pub.expectQuiet(t, 2*time.Second, "nothing changed after the reconnect")
}

// TestPolicyKindsInstalledLater: a meshd started before minimesh's CRDs
// watches the policy kinds as soon as they are installed, without a
// restart, and their objects take effect.
func TestPolicyKindsInstalledLater(t *testing.T) {
	env := kubeenv.Start(t)
	admin := env.Client()
	service(t, admin, "default", "early")
	pub := startSourceWith(t, kubernetes.Options{Config: env.RESTConfig(), KindRecheck: 200 * time.Millisecond})
	pub.waitSnapshot(t, "default/early", func(s *model.Snapshot) bool { return s.Service("default", "early") != nil })

	applyCRDs(t, env)
	applyPolicy(t, env, "AuthorizationPolicy", "deny-all", `{}`)
	applyPolicy(t, env, "PeerAuthentication", "strict", `{"mtls": {"mode": "STRICT"}}`)
	s := pub.waitSnapshot(t, "the policies of the CRDs installed later", func(s *model.Snapshot) bool {
		return len(s.Policies.AuthorizationPolicies) == 1 && len(s.Policies.PeerAuthentications) == 1
	})
	if s.Service("default", "early") == nil {
		t.Error("the snapshot with the new policies lost default/early")
	}
}

// applyCRDs installs minimesh's policy CRDs in env.
func applyCRDs(t *testing.T, env *kubeenv.Env) {
	t.Helper()
	if err := env.Apply(ctxT(t), kubernetes.CRDs(), kubeenv.ApplyOptions{}); err != nil {
		t.Fatalf("apply the CRDs: %v", err)
	}
}
