package convert

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/minimesh/minimesh/discovery/model"
)

func endpointSlice(name, svc string, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       ports,
		Endpoints:   eps,
	}
}

func endpoint(pod string, c discoveryv1.EndpointConditions, ips ...string) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{Addresses: ips, Conditions: c}
	if pod != "" {
		e.TargetRef = &corev1.ObjectReference{Kind: "Pod", Name: pod}
	}
	return e
}

func TestSlicePort(t *testing.T) {
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	tests := []struct {
		name  string
		ports []discoveryv1.EndpointPort
		sp    model.ServicePort
		want  int32
		found bool
	}{
		{"same name and protocol", []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr[int32](8080), Protocol: &tcp}},
			model.ServicePort{Name: "http", Protocol: "TCP"}, 8080, true},
		{"an unset protocol is TCP", []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr[int32](8080)}},
			model.ServicePort{Name: "http", Protocol: "TCP"}, 8080, true},
		{"an empty protocol is TCP", []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr[int32](8080), Protocol: ptr(corev1.Protocol(""))}},
			model.ServicePort{Name: "http", Protocol: "TCP"}, 8080, true},
		{"same name, other protocol does not match", []discoveryv1.EndpointPort{{Name: ptr("dns"), Port: ptr[int32](53), Protocol: &udp}},
			model.ServicePort{Name: "dns", Protocol: "TCP"}, 0, false},
		{"the port with the right protocol is found after one with the wrong", []discoveryv1.EndpointPort{
			{Name: ptr("dns"), Port: ptr[int32](5353), Protocol: &udp}, {Name: ptr("dns"), Port: ptr[int32](53), Protocol: &tcp}},
			model.ServicePort{Name: "dns", Protocol: "TCP"}, 53, true},
		{"a single unnamed port matches an unset name", []discoveryv1.EndpointPort{{Port: ptr[int32](80)}},
			model.ServicePort{Protocol: "TCP"}, 80, true},
		{"a single unnamed port matches an empty name", []discoveryv1.EndpointPort{{Name: ptr(""), Port: ptr[int32](80)}},
			model.ServicePort{Protocol: "TCP"}, 80, true},
		{"names differ", []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr[int32](8080)}},
			model.ServicePort{Name: "grpc", Protocol: "TCP"}, 0, false},
		{"no port number is no match", []discoveryv1.EndpointPort{{Name: ptr("http")}},
			model.ServicePort{Name: "http", Protocol: "TCP"}, 0, false},
		{"no ports", nil, model.ServicePort{Name: "http", Protocol: "TCP"}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, found := SlicePort(endpointSlice("s", "web", tt.ports), tt.sp)
			if got != tt.want || found != tt.found {
				t.Errorf("SlicePort = %d, %v; want %d, %v", got, found, tt.want, tt.found)
			}
		})
	}
}

func TestSliceEndpoints(t *testing.T) {
	http := []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr[int32](8443)}}
	sp := model.ServicePort{Name: "http", Port: 80, TargetPortName: "http", Protocol: "TCP"}
	meshed := testPod("a", func(p *corev1.Pod) {
		p.Spec.ServiceAccountName = "sa-a"
		p.Labels[model.LabelTLSMode] = model.TLSModeIstio
	})
	other := testPod("b", func(p *corev1.Pod) { p.Namespace = "other" })
	pods := NewPodIndex([]*corev1.Pod{meshed, other})
	tests := []struct {
		name   string
		slices []*discoveryv1.EndpointSlice
		want   []model.Endpoint
	}{{
		name: "unset conditions: ready and serving, not terminating",
		slices: []*discoveryv1.EndpointSlice{
			endpointSlice("web-1", "web", http, endpoint("", discoveryv1.EndpointConditions{}, "10.0.1.1")),
		},
		want: []model.Endpoint{{IP: "10.0.1.1", Port: 8443, Ready: true, Serving: true}},
	}, {
		name: "set conditions are copied; each address is one endpoint",
		slices: []*discoveryv1.EndpointSlice{endpointSlice("web-1", "web", http,
			endpoint("", discoveryv1.EndpointConditions{Ready: ptr(false), Serving: ptr(true), Terminating: ptr(true)}, "10.0.1.2", "10.0.1.3"),
			endpoint("", discoveryv1.EndpointConditions{Ready: ptr(false), Serving: ptr(false), Terminating: ptr(false)}, "10.0.1.4"),
		)},
		want: []model.Endpoint{
			{IP: "10.0.1.2", Port: 8443, Serving: true, Terminating: true},
			{IP: "10.0.1.3", Port: 8443, Serving: true, Terminating: true},
			{IP: "10.0.1.4", Port: 8443},
		},
	}, {
		name: "a targetRef to a known pod supplies workload, service account and mesh membership",
		slices: []*discoveryv1.EndpointSlice{
			endpointSlice("web-1", "web", http, endpoint("a", discoveryv1.EndpointConditions{}, "10.0.0.1")),
		},
		want: []model.Endpoint{{IP: "10.0.0.1", Port: 8443, Workload: "a", ServiceAccount: "sa-a", InMesh: true, Ready: true, Serving: true}},
	}, {
		name: "a targetRef to an unknown pod, to another kind, or to a pod in another namespace by default gives no identity",
		slices: []*discoveryv1.EndpointSlice{endpointSlice("web-1", "web", http,
			endpoint("missing", discoveryv1.EndpointConditions{}, "10.0.1.1"),
			discoveryv1.Endpoint{Addresses: []string{"10.0.1.2"}, TargetRef: &corev1.ObjectReference{Kind: "Node", Name: "a"}},
			endpoint("b", discoveryv1.EndpointConditions{}, "10.0.1.3"),
		)},
		want: []model.Endpoint{
			{IP: "10.0.1.1", Port: 8443, Ready: true, Serving: true},
			{IP: "10.0.1.2", Port: 8443, Ready: true, Serving: true},
			{IP: "10.0.1.3", Port: 8443, Ready: true, Serving: true},
		},
	}, {
		name: "a targetRef naming the pod's namespace finds it",
		slices: []*discoveryv1.EndpointSlice{endpointSlice("web-1", "web", http, discoveryv1.Endpoint{
			Addresses: []string{"10.0.0.2"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "other", Name: "b"},
		})},
		want: []model.Endpoint{{IP: "10.0.0.2", Port: 8443, Workload: "b", ServiceAccount: "default", Ready: true, Serving: true}},
	}, {
		name: "a slice without the service port contributes nothing",
		slices: []*discoveryv1.EndpointSlice{
			endpointSlice("web-1", "web", []discoveryv1.EndpointPort{{Name: ptr("admin"), Port: ptr[int32](9000)}},
				endpoint("a", discoveryv1.EndpointConditions{}, "10.0.0.1")),
		},
		want: []model.Endpoint{},
	}, {
		name: "an address in two slices: the slice whose name sorts first wins, whatever the list order",
		slices: []*discoveryv1.EndpointSlice{
			endpointSlice("web-2", "web", http, endpoint("", discoveryv1.EndpointConditions{Ready: ptr(false)}, "10.0.1.1", "10.0.1.5")),
			endpointSlice("web-1", "web", http, endpoint("a", discoveryv1.EndpointConditions{}, "10.0.1.1")),
		},
		want: []model.Endpoint{
			{IP: "10.0.1.1", Port: 8443, Workload: "a", ServiceAccount: "sa-a", InMesh: true, Ready: true, Serving: true},
			{IP: "10.0.1.5", Port: 8443, Serving: true},
		},
	}, {
		name: "one address on two target ports is two endpoints",
		slices: []*discoveryv1.EndpointSlice{
			endpointSlice("web-1", "web", http, endpoint("", discoveryv1.EndpointConditions{}, "10.0.1.1")),
			endpointSlice("web-2", "web", []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr[int32](8444)}},
				endpoint("", discoveryv1.EndpointConditions{}, "10.0.1.1")),
		},
		want: []model.Endpoint{{IP: "10.0.1.1", Port: 8443, Ready: true, Serving: true}, {IP: "10.0.1.1", Port: 8444, Ready: true, Serving: true}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(tt.slices)
			if diff := cmp.Diff(tt.want, SliceEndpoints(tt.slices, sp, pods)); diff != "" {
				t.Errorf("SliceEndpoints (-want +got):\n%s", diff)
			}
			if !slices.Equal(in, tt.slices) {
				t.Errorf("SliceEndpoints reordered its argument")
			}
		})
	}
}

func TestSelectorEndpoints(t *testing.T) {
	named := model.ServicePort{Name: "http", Port: 80, TargetPortName: "http", Protocol: "TCP"}
	numeric := model.ServicePort{Name: "raw", Port: 82, TargetPort: 7000, Protocol: "TCP"}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "web"}},
	}
	publish := svc.DeepCopy()
	publish.Spec.PublishNotReadyAddresses = true
	notReady := conditions(ready(corev1.ConditionFalse))
	isReady := conditions(ready(corev1.ConditionTrue))
	deleting := func(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{} }
	tests := []struct {
		name string
		svc  *corev1.Service
		sp   model.ServicePort
		pods []*corev1.Pod
		opts Options
		want []model.Endpoint
	}{{
		name: "a named target port resolves on the pod; identity comes from the pod",
		svc:  svc, sp: named,
		pods: []*corev1.Pod{testPod("a", isReady, func(p *corev1.Pod) {
			p.Spec.ServiceAccountName = "sa-a"
			p.Labels[model.LabelTLSMode] = model.TLSModeIstio
		})},
		want: []model.Endpoint{{IP: "10.0.0.1", Port: 8080, Workload: "a", ServiceAccount: "sa-a", InMesh: true, Ready: true, Serving: true}},
	}, {
		name: "a pod without the named port is left out of that port",
		svc:  svc, sp: model.ServicePort{Name: "admin", Port: 81, TargetPortName: "admin", Protocol: "TCP"},
		pods: []*corev1.Pod{testPod("a", isReady)},
		want: []model.Endpoint{},
	}, {
		name: "a numeric target port passes through",
		svc:  svc, sp: numeric,
		pods: []*corev1.Pod{testPod("a", isReady)},
		want: []model.Endpoint{{IP: "10.0.0.1", Port: 7000, Workload: "a", ServiceAccount: "default", Ready: true, Serving: true}},
	}, {
		name: "a named port must match the protocol too (unset container protocol is TCP)",
		svc:  svc, sp: model.ServicePort{Name: "dns", Port: 53, TargetPortName: "http", Protocol: "UDP"},
		pods: []*corev1.Pod{testPod("a", isReady)},
		want: []model.Endpoint{},
	}, {
		name: "not ready pods are neither ready nor serving",
		svc:  svc, sp: numeric,
		pods: []*corev1.Pod{testPod("a", notReady)},
		want: []model.Endpoint{{IP: "10.0.0.1", Port: 7000, Workload: "a", ServiceAccount: "default"}},
	}, {
		name: "a pod without conditions follows ReadyWithoutConditions",
		svc:  svc, sp: numeric,
		pods: []*corev1.Pod{testPod("a")},
		opts: Options{ReadyWithoutConditions: true},
		want: []model.Endpoint{{IP: "10.0.0.1", Port: 7000, Workload: "a", ServiceAccount: "default", Ready: true, Serving: true}},
	}, {
		name: "a pod without conditions under cluster rules is not ready",
		svc:  svc, sp: numeric,
		pods: []*corev1.Pod{testPod("a")},
		want: []model.Endpoint{{IP: "10.0.0.1", Port: 7000, Workload: "a", ServiceAccount: "default"}},
	}, {
		name: "a terminating ready pod serves but is not ready",
		svc:  svc, sp: numeric,
		pods: []*corev1.Pod{testPod("a", isReady, deleting)},
		want: []model.Endpoint{{IP: "10.0.0.1", Port: 7000, Workload: "a", ServiceAccount: "default", Serving: true, Terminating: true}},
	}, {
		name: "publishNotReadyAddresses makes every pod ready, terminating too",
		svc:  publish, sp: numeric,
		pods: []*corev1.Pod{testPod("a", notReady), testPod("b", isReady, deleting, func(p *corev1.Pod) { p.Status.PodIP = "10.0.0.2" })},
		want: []model.Endpoint{
			{IP: "10.0.0.1", Port: 7000, Workload: "a", ServiceAccount: "default", Ready: true},
			{IP: "10.0.0.2", Port: 7000, Workload: "b", ServiceAccount: "default", Ready: true, Serving: true, Terminating: true},
		},
	}, {
		name: "finished pods, pods without an IP, other labels and other namespaces are no endpoints",
		svc:  svc, sp: numeric,
		pods: []*corev1.Pod{
			testPod("succeeded", isReady, func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }),
			testPod("failed", func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }),
			testPod("pending", func(p *corev1.Pod) { p.Status.PodIP, p.Status.Phase = "", corev1.PodPending }),
			testPod("db", func(p *corev1.Pod) { p.Labels["app"] = "db" }),
			testPod("elsewhere", func(p *corev1.Pod) { p.Namespace = "other" }),
		},
		want: []model.Endpoint{},
	}, {
		name: "a service with an empty selector selects no pod",
		svc:  &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}}, sp: numeric,
		pods: []*corev1.Pod{testPod("a", isReady)},
		want: []model.Endpoint{},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, SelectorEndpoints(tt.svc, tt.sp, tt.pods, tt.opts)); diff != "" {
				t.Errorf("SelectorEndpoints (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEndpoints(t *testing.T) {
	service := func(name string, selector map[string]string, ports ...corev1.ServicePort) *corev1.Service {
		return &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec:       corev1.ServiceSpec{Selector: selector, Ports: ports},
		}
	}
	web := service("web", map[string]string{"app": "web"},
		corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http")},
		corev1.ServicePort{Name: "raw", Port: 82, TargetPort: intstr.FromInt32(7000)})
	manual := service("manual", nil, corev1.ServicePort{Port: 443})
	pods := []*corev1.Pod{testPod("a", conditions(ready(corev1.ConditionTrue)))}
	fromPod := func(port int32) model.Endpoint {
		return model.Endpoint{IP: "10.0.0.1", Port: port, Workload: "a", ServiceAccount: "default", Ready: true, Serving: true}
	}
	webSlice := endpointSlice("web-1", "web", []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr[int32](8443)}},
		endpoint("", discoveryv1.EndpointConditions{}, "10.0.1.1"))
	fqdn := endpointSlice("fqdn", "manual", []discoveryv1.EndpointPort{{Port: ptr[int32](443)}},
		endpoint("", discoveryv1.EndpointConditions{}, "db.example.com"))
	fqdn.AddressType = discoveryv1.AddressTypeFQDN
	unlabelled := endpointSlice("orphan", "", []discoveryv1.EndpointPort{{Port: ptr[int32](443)}},
		endpoint("", discoveryv1.EndpointConditions{}, "10.0.9.9"))
	otherNS := endpointSlice("manual-1", "manual", []discoveryv1.EndpointPort{{Port: ptr[int32](443)}},
		endpoint("", discoveryv1.EndpointConditions{}, "10.0.9.8"))
	otherNS.Namespace = "other"

	tests := []struct {
		name     string
		services []*corev1.Service
		slices   []*discoveryv1.EndpointSlice
		opts     Options
		want     []model.ServiceEndpoints
	}{{
		name:     "selector, no slices, deriving: endpoints from pods on every port",
		services: []*corev1.Service{web}, opts: Options{DeriveFromSelectors: true},
		want: []model.ServiceEndpoints{
			{Namespace: "default", Service: "web", Port: 80, Endpoints: []model.Endpoint{fromPod(8080)}},
			{Namespace: "default", Service: "web", Port: 82, Endpoints: []model.Endpoint{fromPod(7000)}},
		},
	}, {
		name:     "selector, no slices, cluster rules: every port has an empty entry",
		services: []*corev1.Service{web},
		want: []model.ServiceEndpoints{
			{Namespace: "default", Service: "web", Port: 80, Endpoints: []model.Endpoint{}},
			{Namespace: "default", Service: "web", Port: 82, Endpoints: []model.Endpoint{}},
		},
	}, {
		name:     "slices win over the selector; a port no slice lists is empty",
		services: []*corev1.Service{web}, slices: []*discoveryv1.EndpointSlice{webSlice}, opts: Options{DeriveFromSelectors: true},
		want: []model.ServiceEndpoints{
			{Namespace: "default", Service: "web", Port: 80, Endpoints: []model.Endpoint{{IP: "10.0.1.1", Port: 8443, Ready: true, Serving: true}}},
			{Namespace: "default", Service: "web", Port: 82, Endpoints: []model.Endpoint{}},
		},
	}, {
		name:     "no selector and no slice: no entry; FQDN, unlabelled and other-namespace slices are not the service's",
		services: []*corev1.Service{manual}, slices: []*discoveryv1.EndpointSlice{fqdn, unlabelled, otherNS}, opts: Options{DeriveFromSelectors: true},
		want: []model.ServiceEndpoints{},
	}, {
		name:     "no selector, with a slice: the slice's endpoints",
		services: []*corev1.Service{manual}, slices: []*discoveryv1.EndpointSlice{webSlice, func() *discoveryv1.EndpointSlice {
			s := otherNS.DeepCopy()
			s.Namespace = "default"
			return s
		}()},
		want: []model.ServiceEndpoints{
			{Namespace: "default", Service: "manual", Port: 443, Endpoints: []model.Endpoint{{IP: "10.0.9.8", Port: 443, Ready: true, Serving: true}}},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Endpoints(tt.services, pods, tt.slices, tt.opts)); diff != "" {
				t.Errorf("Endpoints (-want +got):\n%s", diff)
			}
		})
	}
}
