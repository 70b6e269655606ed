package kubernetes

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/minimesh/minimesh/discovery/file"
	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

func ptr[T any](v T) *T { return &v }

func pod(ns, name, ip, sa string, ready bool, labels map[string]string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{
			Name: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		}}},
		Status: corev1.PodStatus{PodIP: ip},
	}
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}
	return p
}

func slice(ns, name, svc string, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       ports,
		Endpoints:   eps,
	}
}

func podEndpoint(ip, podName string, ready, serving, terminating *bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{
		Addresses:  []string{ip},
		Conditions: discoveryv1.EndpointConditions{Ready: ready, Serving: serving, Terminating: terminating},
		TargetRef:  &corev1.ObjectReference{Kind: "Pod", Name: podName},
	}
}

func TestBuildServicesWorkloadsEndpoints(t *testing.T) {
	meshed := map[string]string{"app": "product", model.LabelTLSMode: model.TLSModeIstio}
	in := inputs{
		namespaces: []*corev1.Namespace{
			{ObjectMeta: metav1.ObjectMeta{Name: "test"}},
			{ObjectMeta: metav1.ObjectMeta{Name: "default", Labels: map[string]string{"istio-injection": "enabled"}}},
		},
		services: []*corev1.Service{
			{
				ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "product"},
				Spec: corev1.ServiceSpec{
					ClusterIP: "10.96.0.10", Selector: map[string]string{"app": "product"},
					Ports: []corev1.ServicePort{
						{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), AppProtocol: ptr("http")},
						{Name: "grpc", Port: 9090, TargetPort: intstr.FromInt32(9091), Protocol: corev1.ProtocolTCP},
					},
				},
			},
			// A selector but no slices yet: entries exist, empty.
			{
				ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "stock"},
				Spec:       corev1.ServiceSpec{ClusterIP: "10.96.0.11", Selector: map[string]string{"app": "stock"}, Ports: []corev1.ServicePort{{Port: 80}}},
			},
			// No selector and no slices: no endpoint entries at all.
			{
				ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "manual"},
				Spec:       corev1.ServiceSpec{ClusterIP: "10.96.0.12", Ports: []corev1.ServicePort{{Port: 443}}},
			},
			{
				ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "external"},
				Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com"},
			},
		},
		pods: []*corev1.Pod{
			pod("default", "product-b", "10.0.0.2", "", false, map[string]string{"app": "product"}),
			pod("default", "product-a", "10.0.0.1", "product", true, meshed),
		},
		slices: []*discoveryv1.EndpointSlice{
			slice("default", "product-2", "product",
				[]discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr[int32](8080)}},
				// Listed by both slices: the first slice by name wins.
				podEndpoint("10.0.0.1", "product-a", ptr(false), nil, nil),
				// Not ready but serving and terminating, as during shutdown.
				podEndpoint("10.0.0.2", "product-b", ptr(false), ptr(true), ptr(true)),
			),
			slice("default", "product-1", "product",
				[]discoveryv1.EndpointPort{
					{Name: ptr("http"), Port: ptr[int32](8080)},
					{Name: ptr("grpc"), Port: ptr[int32](9091), Protocol: ptr(corev1.ProtocolTCP)},
					// Same name, other protocol: must not match the TCP port.
					{Name: ptr("grpc"), Port: ptr[int32](7777), Protocol: ptr(corev1.ProtocolUDP)},
				},
				podEndpoint("10.0.0.1", "product-a", nil, nil, nil),
				// A targetRef to a pod that is not (yet) known: no identity.
				podEndpoint("10.0.0.3", "product-c", ptr(true), nil, nil),
			),
			// Slices without the service label and FQDN slices are not endpoints.
			{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "orphan"}, AddressType: discoveryv1.AddressTypeIPv4},
			{
				ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: "fqdn", Labels: map[string]string{discoveryv1.LabelServiceName: "product"}},
				AddressType: discoveryv1.AddressTypeFQDN,
				Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr[int32](8080)}},
				Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"db.example.com"}}},
			},
		},
	}

	got := build(in)

	want := &model.Snapshot{
		Namespaces: []model.Namespace{{Name: "default", Labels: map[string]string{"istio-injection": "enabled"}}, {Name: "test"}},
		Services: []model.Service{
			{Namespace: "default", Name: "manual", ClusterIP: "10.96.0.12", Ports: []model.ServicePort{{Port: 443, TargetPort: 443, Protocol: "TCP"}}},
			{
				Namespace: "default", Name: "product", ClusterIP: "10.96.0.10", Selector: map[string]string{"app": "product"},
				Ports: []model.ServicePort{
					{Name: "http", Port: 80, TargetPortName: "http", Protocol: "TCP", AppProtocol: "http"},
					{Name: "grpc", Port: 9090, TargetPort: 9091, Protocol: "TCP"},
				},
			},
			{Namespace: "default", Name: "stock", ClusterIP: "10.96.0.11", Selector: map[string]string{"app": "stock"}, Ports: []model.ServicePort{{Port: 80, TargetPort: 80, Protocol: "TCP"}}},
		},
		Workloads: []model.Workload{
			{
				Namespace: "default", Name: "product-a", IP: "10.0.0.1", ServiceAccount: "product", Labels: meshed,
				InMesh: true, Ready: true, Ports: []model.ContainerPort{{Name: "http", Port: 8080, Protocol: "TCP"}},
			},
			{
				Namespace: "default", Name: "product-b", IP: "10.0.0.2", ServiceAccount: "default", Labels: map[string]string{"app": "product"},
				Ports: []model.ContainerPort{{Name: "http", Port: 8080, Protocol: "TCP"}},
			},
		},
		Endpoints: []model.ServiceEndpoints{
			{Namespace: "default", Service: "product", Port: 80, Endpoints: []model.Endpoint{
				{IP: "10.0.0.1", Port: 8080, Workload: "product-a", ServiceAccount: "product", InMesh: true, Ready: true, Serving: true},
				{IP: "10.0.0.2", Port: 8080, Workload: "product-b", ServiceAccount: "default", Serving: true, Terminating: true},
				{IP: "10.0.0.3", Port: 8080, Ready: true, Serving: true},
			}},
			{Namespace: "default", Service: "product", Port: 9090, Endpoints: []model.Endpoint{
				{IP: "10.0.0.1", Port: 9091, Workload: "product-a", ServiceAccount: "product", InMesh: true, Ready: true, Serving: true},
				{IP: "10.0.0.3", Port: 9091, Ready: true, Serving: true},
			}},
			{Namespace: "default", Service: "stock", Port: 80, Endpoints: []model.Endpoint{}},
		},
		Problems: []model.Problem{{
			Severity: policy.SeverityWarning, Kind: "Namespace", Name: "default", Field: "metadata.labels.istio-injection",
			Message: "metadata.labels.istio-injection=enabled not acted on by minimesh: it does not inject sidecars (issue 17 will); " +
				"give the workload an Envoy sidecar (meshctl bootstrap) or run it under meshctl agent yourself",
		}, {
			Severity: policy.SeverityWarning, Kind: "Service", Namespace: "default", Name: "external",
			Field: "spec.type", Message: "type ExternalName is not supported; the service is not part of the mesh",
		}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("snapshot mismatch (-want +got):\n%s", diff)
	}
}

// TestBuildIsDeterministic: the same cluster state in another list order
// (informer caches are maps) must give a deeply equal snapshot, or the
// source would publish on every resync.
func TestBuildIsDeterministic(t *testing.T) {
	a := pod("default", "a", "10.0.0.1", "sa", true, map[string]string{"app": "x"})
	b := pod("default", "b", "10.0.0.2", "sa", true, map[string]string{"app": "x"})
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "x"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "x"}, Ports: []corev1.ServicePort{{Port: 80}}},
	}
	ports := []discoveryv1.EndpointPort{{Name: ptr(""), Port: ptr[int32](80)}}
	s1 := slice("default", "x-1", "x", ports, podEndpoint("10.0.0.1", "a", nil, nil, nil))
	s2 := slice("default", "x-2", "x", ports, podEndpoint("10.0.0.2", "b", nil, nil, nil), podEndpoint("10.0.0.1", "a", ptr(false), nil, nil))

	one := build(inputs{services: []*corev1.Service{svc}, pods: []*corev1.Pod{a, b}, slices: []*discoveryv1.EndpointSlice{s1, s2}})
	two := build(inputs{services: []*corev1.Service{svc}, pods: []*corev1.Pod{b, a}, slices: []*discoveryv1.EndpointSlice{s2, s1}})
	if diff := cmp.Diff(one, two); diff != "" {
		t.Errorf("list order changed the snapshot (-first +second):\n%s", diff)
	}
	if eps := one.EndpointsFor("default", "x", 80); eps == nil || len(eps.Endpoints) != 2 || !eps.Endpoints[0].Ready {
		t.Errorf("endpoints of x:80 = %+v, want 10.0.0.1 (ready, from slice x-1) and 10.0.0.2", eps)
	}
}

func policyObject(apiVersion, kind, ns, name, rv string, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": apiVersion, "kind": kind}}
	u.SetNamespace(ns)
	u.SetName(name)
	u.SetUID(types.UID("uid-" + ns + "-" + name))
	u.SetResourceVersion(rv)
	u.SetCreationTimestamp(metav1.NewTime(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)))
	if spec != nil {
		u.Object["spec"] = spec
	}
	return u
}

func TestDecodeCache(t *testing.T) {
	var decodedVersions []string
	c := newDecodeCache(func(u *unstructured.Unstructured, d decoded) {
		decodedVersions = append(decodedVersions, u.GetName()+"@"+u.GetResourceVersion())
	})
	strict := policyObject("security.istio.io/v1", policy.KindPeerAuthentication, "default", "default", "1",
		map[string]any{"mtls": map[string]any{"mode": "STRICT"}})
	bad := policyObject("security.istio.io/v1", policy.KindAuthorizationPolicy, "default", "bad", "1",
		map[string]any{"rules": []any{map[string]any{"from": []any{map[string]any{"source": map[string]any{"principals": []any{"a*b"}}}}}}})
	empty := policyObject("security.istio.io/v1", policy.KindAuthorizationPolicy, "default", "deny-all", "1", nil)

	got := c.decodeAll([]*unstructured.Unstructured{strict, bad, empty}, time.Time{})
	if len(got) != 3 {
		t.Fatalf("decodeAll returned %d results, want 3", len(got))
	}
	pa, ok := got[0].obj.(*policy.PeerAuthentication)
	if !ok || pa.Spec.MTLS == nil || pa.Spec.MTLS.Mode != policy.ModeStrict {
		t.Errorf("PeerAuthentication decoded as %#v, want mode STRICT", got[0].obj)
	} else if want := (policy.Meta{Kind: policy.KindPeerAuthentication, Namespace: "default", Name: "default",
		CreationTimestamp: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}); !cmp.Equal(pa.Meta, want) {
		t.Errorf("meta = %+v, want %+v", pa.Meta, want)
	}
	if got[1].obj != nil || !got[1].problems.HasErrors() {
		t.Errorf("policy with principal a*b: obj=%v problems=%v, want rejected with an error", got[1].obj, got[1].problems)
	}
	if ap, ok := got[2].obj.(*policy.AuthorizationPolicy); !ok || len(ap.Spec.Rules) != 0 {
		t.Errorf("spec-less AuthorizationPolicy decoded as %#v, want an empty (deny-all) policy", got[2].obj)
	}

	// Unchanged versions are not decoded (or reported) again; a new version is.
	bad2 := bad.DeepCopy()
	bad2.SetResourceVersion("2")
	c.decodeAll([]*unstructured.Unstructured{strict, bad2, empty}, time.Time{})
	// A deleted object is forgotten: if it comes back it is reported again.
	c.decodeAll([]*unstructured.Unstructured{bad2}, time.Time{})
	c.decodeAll([]*unstructured.Unstructured{strict, bad2}, time.Time{})
	want := []string{"default@1", "bad@1", "deny-all@1", "bad@2", "default@1"}
	if diff := cmp.Diff(want, decodedVersions); diff != "" {
		t.Errorf("decoded versions (-want +got):\n%s", diff)
	}
}

func TestEventMessage(t *testing.T) {
	ps := policy.Problems{
		{Severity: policy.SeverityError, Field: "spec.rules[0].from[0].source.principals[0]", Message: `"a*b" has * in the middle`},
		{Severity: policy.SeverityWarning, Field: "spec.x", Message: "ignored"},
		{Severity: policy.SeverityError, Message: "no field"},
	}
	got := eventMessage("policy is not applied: ", ps, policy.SeverityError)
	want := `policy is not applied: spec.rules[0].from[0].source.principals[0]: "a*b" has * in the middle; no field`
	if got != want {
		t.Errorf("eventMessage = %q, want %q", got, want)
	}
	long := policy.Problems{{Severity: policy.SeverityError, Message: string(make([]byte, 5000))}}
	if n := len(eventMessage("p: ", long, policy.SeverityError)); n > maxEventMessage {
		t.Errorf("message is %d bytes, want at most %d", n, maxEventMessage)
	}
}

// sameMesh is one mesh written as manifests. Every pod lists its
// conditions and every service with a selector has slices, which is what a
// cluster always has; with that, both sources must give the same snapshot.
const sameMesh = `apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: test}
---
apiVersion: v1
kind: Service
metadata: {name: product, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  selector: {app: product}
  ports:
  - {name: http, port: 80, targetPort: http, appProtocol: http}
  - {name: grpc, port: 9090, targetPort: 9091}
  - {name: dns, port: 53, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: stock, namespace: shop}
spec:
  selector: {app: stock}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: manual, namespace: shop}
spec:
  ports: [{port: 443, targetPort: 8443}]
---
apiVersion: v1
kind: Pod
metadata: {name: product-a, namespace: shop, labels: {app: product, security.istio.io/tlsMode: istio}}
spec:
  serviceAccountName: product
  containers:
  - name: app
    image: product
    ports: [{name: http, containerPort: 8080}, {name: grpc, containerPort: 9091}]
status:
  podIP: 10.0.0.1
  conditions: [{type: Ready, status: "True"}]
---
apiVersion: v1
kind: Pod
metadata: {name: product-b, namespace: shop, labels: {app: product}}
spec:
  serviceAccount: legacy
  containers: [{name: app, image: product}]
status:
  podIP: 10.0.0.2
  conditions: [{type: PodScheduled, status: "True"}]
---
apiVersion: v1
kind: Pod
metadata: {name: curl, namespace: test}
spec:
  containers: [{name: curl, image: curl}]
status:
  podIP: 10.0.9.1
  conditions: [{type: Ready, status: "False"}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: product-2, namespace: shop, labels: {kubernetes.io/service-name: product}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.0.0.1]
  conditions: {ready: false}
  targetRef: {kind: Pod, name: product-a}
- addresses: [10.0.0.2]
  conditions: {ready: false, serving: true, terminating: true}
  targetRef: {kind: Pod, name: product-b}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: product-1, namespace: shop, labels: {kubernetes.io/service-name: product}}
addressType: IPv4
ports:
- {name: http, port: 8080}
- {name: grpc, port: 9091, protocol: TCP}
- {name: grpc, port: 7777, protocol: UDP}
endpoints:
- addresses: [10.0.0.1]
  targetRef: {kind: Pod, namespace: shop, name: product-a}
- addresses: [10.0.1.1]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: stock-1, namespace: shop, labels: {kubernetes.io/service-name: stock}}
addressType: IPv4
ports: [{port: 80}]
endpoints: []
`

// clusterInputs turns a multi-document manifest into build's inputs, as
// the informers would list them. Every document names its namespace.
func clusterInputs(t *testing.T, manifest string) inputs {
	t.Helper()
	in := inputs{rootNamespace: "istio-system"}
	for i, doc := range strings.Split(manifest, "\n---\n") {
		var h struct{ APIVersion, Kind string }
		if err := yaml.Unmarshal([]byte(doc), &h); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		var obj any
		switch {
		case h.Kind == "Namespace":
			ns := &corev1.Namespace{}
			in.namespaces, obj = append(in.namespaces, ns), ns
		case h.Kind == "Service":
			svc := &corev1.Service{}
			in.services, obj = append(in.services, svc), svc
		case h.Kind == "Pod":
			p := &corev1.Pod{}
			in.pods, obj = append(in.pods, p), p
		case h.Kind == "EndpointSlice":
			s := &discoveryv1.EndpointSlice{}
			in.slices, obj = append(in.slices, s), s
		case policy.IsPolicyKind(h.APIVersion, h.Kind):
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
				t.Fatalf("document %d: %v", i, err)
			}
			in.policies = append(in.policies, decodeObject(u))
			continue
		default:
			t.Fatalf("document %d: kind %q is not handled by this test", i, h.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
	}
	return in
}

// TestBuildWarningsMatchFileSource: objects that clash (two pods with one
// IP, a policy selector that selects nothing) are reported alike by both
// sources; only the file source knows file and line.
func TestBuildWarningsMatchFileSource(t *testing.T) {
	const mesh = `apiVersion: v1
kind: Pod
metadata: {name: cart-0, namespace: shop, labels: {app: cart}}
spec: {containers: [{name: app, image: cart}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: stale, namespace: shop, labels: {app: old}}
spec: {containers: [{name: app, image: old}]}
status: {podIP: 10.0.0.1}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: kart, namespace: shop}
spec:
  selector: {matchLabels: {app: kart}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: everywhere, namespace: istio-system}
spec:
  selector: {matchLabels: {app: cart}}`
	fromFiles := file.Build([]file.File{{Path: "mesh.yaml", Data: []byte(mesh + "\n")}}, file.Options{})
	fromCluster := build(clusterInputs(t, mesh))
	render := func(ps []model.Problem) []string {
		var out []string
		for _, p := range ps {
			if p.Severity == policy.SeverityWarning && (p.Field == "status.podIP" || p.Field == "spec.selector") {
				out = append(out, p.Kind+" "+p.Namespace+"/"+p.Name+" "+p.Field+": "+p.Message)
			}
		}
		slices.Sort(out)
		return out
	}
	files, cluster := render(fromFiles.Problems), render(fromCluster.Problems)
	if len(files) != 2 {
		t.Errorf("the file source reports %d clashes, want 2: %v", len(files), files)
	}
	if diff := cmp.Diff(files, cluster); diff != "" {
		t.Errorf("file source and Kubernetes source disagree (-file +kubernetes):\n%s", diff)
	}
}

// TestBuildMatchesFileSource is the promise of discovery/convert: one mesh
// read from files or from a cluster gives deeply equal snapshots, with the
// same warnings (here: istio-injection is not acted on).
func TestBuildMatchesFileSource(t *testing.T) {
	fromFiles := file.Build([]file.File{{Path: "mesh.yaml", Data: []byte(sameMesh)}}, file.Options{})
	if len(fromFiles.Problems) != 1 || !strings.Contains(fromFiles.Problems[0].Message, "istio-injection=enabled not acted on") {
		t.Fatalf("the file source reports %v, want only the istio-injection warning; the test mesh is wrong", fromFiles.Problems)
	}
	// Only the file source knows where an object was written.
	fromFiles.Problems[0].Location = policy.Location{}

	fromCluster := build(clusterInputs(t, sameMesh))

	if diff := cmp.Diff(fromFiles, fromCluster); diff != "" {
		t.Errorf("file source and Kubernetes source disagree (-file +kubernetes):\n%s", diff)
	}
	// Guard against both agreeing on nothing.
	if eps := fromCluster.EndpointsFor("shop", "product", 80); eps == nil || len(eps.Endpoints) != 3 {
		t.Errorf("endpoints of shop/product:80 = %+v, want 3", eps)
	}
}

func TestDecodeCacheKeepsLastValidVersion(t *testing.T) {
	var events []string
	c := newDecodeCache(func(u *unstructured.Unstructured, d decoded) {
		if d.held != nil {
			events = append(events, u.GetResourceVersion()+" held "+d.held.Serving)
		}
	})
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	strict := policyObject("security.istio.io/v1", policy.KindPeerAuthentication, "default", "default", "1",
		map[string]any{"mtls": map[string]any{"mode": "STRICT"}})
	typo := strict.DeepCopy()
	typo.SetResourceVersion("2")
	typo.Object["spec"] = map[string]any{"mtls": map[string]any{"mode": "STRICTT"}}

	first := c.decodeAll([]*unstructured.Unstructured{strict}, t0)
	pa := first[0].obj.(*policy.PeerAuthentication)
	if !pa.Admitted.Equal(t0) {
		t.Errorf("admitted = %v, want %v", pa.Admitted, t0)
	}

	held := c.decodeAll([]*unstructured.Unstructured{typo}, t0.Add(time.Minute))
	if held[0].obj != first[0].obj {
		t.Errorf("the invalid version replaced the valid one: obj = %#v", held[0].obj)
	}
	if !held[0].problems.HasErrors() {
		t.Errorf("the invalid version's errors are not reported: %v", held[0].problems)
	}
	want := &model.Held{Kind: policy.KindPeerAuthentication, Namespace: "default", Name: "default",
		Refused: "resourceVersion 2", Serving: "resourceVersion 1"}
	if h := held[0].held; h == nil || h.Refused != want.Refused || h.Serving != want.Serving || !strings.Contains(h.Reason, "STRICTT") {
		t.Errorf("held = %+v, want %+v with the reason naming STRICTT", h, want)
	}
	if diff := cmp.Diff([]string{"2 held resourceVersion 1"}, events); diff != "" {
		t.Errorf("reports (-want +got):\n%s", diff)
	}

	// A fixed version is served (and keeps when it was first admitted).
	fixed := strict.DeepCopy()
	fixed.SetResourceVersion("3")
	fixed.Object["spec"] = map[string]any{"mtls": map[string]any{"mode": "PERMISSIVE"}}
	got := c.decodeAll([]*unstructured.Unstructured{fixed}, t0.Add(2*time.Minute))
	if p := got[0].obj.(*policy.PeerAuthentication); p.Spec.MTLS.Mode != policy.ModePermissive || !p.Admitted.Equal(t0) || got[0].held != nil {
		t.Errorf("fixed version: mode %s admitted %v held %v, want PERMISSIVE admitted %v, not held", p.Spec.MTLS.Mode, p.Admitted, got[0].held, t0)
	}

	// Deleting the object forgets it: re-created invalid, nothing is served.
	c.decodeAll(nil, t0.Add(3*time.Minute))
	again := c.decodeAll([]*unstructured.Unstructured{typo}, t0.Add(4*time.Minute))
	if again[0].obj != nil || again[0].held != nil {
		t.Errorf("a re-created invalid object was served: %+v", again[0])
	}
}
