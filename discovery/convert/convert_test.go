package convert

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/minimesh/minimesh/discovery/model"
)

func ptr[T any](v T) *T { return &v }

func conditions(cs ...corev1.PodCondition) func(*corev1.Pod) {
	return func(p *corev1.Pod) { p.Status.Conditions = cs }
}

func ready(s corev1.ConditionStatus) corev1.PodCondition {
	return corev1.PodCondition{Type: corev1.PodReady, Status: s}
}

// testPod is a pod in namespace default with IP 10.0.0.1, a container port
// http/8080 and label app=web; edits adjust it.
func testPod(name string, edits ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		}}},
		Status: corev1.PodStatus{PodIP: "10.0.0.1"},
	}
	for _, e := range edits {
		e(p)
	}
	return p
}

func TestPodReady(t *testing.T) {
	tests := []struct {
		name       string
		conditions []corev1.PodCondition
		// want is the verdict without and with ReadyWithoutConditions.
		want, wantFile bool
	}{
		{name: "no conditions: not started in a cluster, running in a file", want: false, wantFile: true},
		{name: "Ready=True", conditions: []corev1.PodCondition{ready(corev1.ConditionTrue)}, want: true, wantFile: true},
		{name: "Ready=False", conditions: []corev1.PodCondition{ready(corev1.ConditionFalse)}},
		{name: "Ready=Unknown", conditions: []corev1.PodCondition{ready(corev1.ConditionUnknown)}},
		{
			name:       "conditions without Ready: not ready either way",
			conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}},
		},
		{
			name: "the first Ready condition decides",
			conditions: []corev1.PodCondition{
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue},
				ready(corev1.ConditionTrue), ready(corev1.ConditionFalse),
			},
			want: true, wantFile: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testPod("a", conditions(tt.conditions...))
			if got := PodReady(p, Options{}); got != tt.want {
				t.Errorf("PodReady(cluster rules) = %v, want %v", got, tt.want)
			}
			if got := PodReady(p, Options{ReadyWithoutConditions: true}); got != tt.wantFile {
				t.Errorf("PodReady(ReadyWithoutConditions) = %v, want %v", got, tt.wantFile)
			}
		})
	}
}

func TestWorkload(t *testing.T) {
	tests := []struct {
		name string
		pod  *corev1.Pod
		want model.Workload
	}{{
		name: "service account defaults to default; no mesh label is outside the mesh",
		pod:  testPod("a"),
		want: model.Workload{
			Namespace: "default", Name: "a", IP: "10.0.0.1", ServiceAccount: "default",
			Labels: map[string]string{"app": "web"}, Ports: []model.ContainerPort{{Name: "http", Port: 8080, Protocol: "TCP"}},
		},
	}, {
		name: "serviceAccountName wins over the deprecated serviceAccount",
		pod: testPod("a", func(p *corev1.Pod) {
			p.Spec.ServiceAccountName, p.Spec.DeprecatedServiceAccount = "product", "old"
		}),
		want: model.Workload{
			Namespace: "default", Name: "a", IP: "10.0.0.1", ServiceAccount: "product",
			Labels: map[string]string{"app": "web"}, Ports: []model.ContainerPort{{Name: "http", Port: 8080, Protocol: "TCP"}},
		},
	}, {
		name: "the deprecated serviceAccount is used when it is the only one",
		pod:  testPod("a", func(p *corev1.Pod) { p.Spec.DeprecatedServiceAccount = "old" }),
		want: model.Workload{
			Namespace: "default", Name: "a", IP: "10.0.0.1", ServiceAccount: "old",
			Labels: map[string]string{"app": "web"}, Ports: []model.ContainerPort{{Name: "http", Port: 8080, Protocol: "TCP"}},
		},
	}, {
		name: "tlsMode=istio is in the mesh; ports of every container keep their protocol",
		pod: testPod("a", conditions(ready(corev1.ConditionTrue)), func(p *corev1.Pod) {
			p.Labels[model.LabelTLSMode] = model.TLSModeIstio
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{
				Name: "dns", Ports: []corev1.ContainerPort{{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}},
			})
		}),
		want: model.Workload{
			Namespace: "default", Name: "a", IP: "10.0.0.1", ServiceAccount: "default",
			Labels: map[string]string{"app": "web", model.LabelTLSMode: model.TLSModeIstio}, InMesh: true, Ready: true,
			Ports: []model.ContainerPort{{Name: "http", Port: 8080, Protocol: "TCP"}, {Name: "dns", Port: 53, Protocol: "UDP"}},
		},
	}, {
		name: "another tlsMode value is outside the mesh; no labels and no ports stay nil",
		pod: &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "test", Name: "curl", Labels: map[string]string{}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "curl"}}},
		},
		want: model.Workload{Namespace: "test", Name: "curl", ServiceAccount: "default"},
	}, {
		name: "tlsMode=disabled is outside the mesh",
		pod:  testPod("a", func(p *corev1.Pod) { p.Labels = map[string]string{model.LabelTLSMode: "disabled"} }),
		want: model.Workload{
			Namespace: "default", Name: "a", IP: "10.0.0.1", ServiceAccount: "default",
			Labels: map[string]string{model.LabelTLSMode: "disabled"}, Ports: []model.ContainerPort{{Name: "http", Port: 8080, Protocol: "TCP"}},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Workload(tt.pod, Options{})); diff != "" {
				t.Errorf("Workload (-want +got):\n%s", diff)
			}
		})
	}
}

// TestWorkloadOwnsItsMaps: a snapshot must stay as it was when the informer
// cache (or anyone else) changes the object it was built from.
func TestWorkloadOwnsItsMaps(t *testing.T) {
	p := testPod("a")
	w := Workload(p, Options{})
	p.Labels["app"] = "changed"
	if w.Labels["app"] != "web" {
		t.Errorf("workload label app = %q after the pod changed, want web", w.Labels["app"])
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x", Labels: map[string]string{"a": "b"}}}
	mns := Namespace(ns)
	ns.Labels["a"] = "changed"
	if diff := cmp.Diff(model.Namespace{Name: "x", Labels: map[string]string{"a": "b"}}, mns); diff != "" {
		t.Errorf("Namespace (-want +got):\n%s", diff)
	}
	svc := &corev1.Service{Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}}}
	ms := Service(svc)
	svc.Spec.Selector["app"] = "changed"
	if ms.Selector["app"] != "web" {
		t.Errorf("service selector app = %q after the service changed, want web", ms.Selector["app"])
	}
}

func TestService(t *testing.T) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "product"},
		Spec: corev1.ServiceSpec{
			ClusterIP: "10.96.0.10", Selector: map[string]string{"app": "product"},
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), AppProtocol: ptr("http")},
				{Name: "grpc", Port: 9090, TargetPort: intstr.FromInt32(9091), Protocol: corev1.ProtocolTCP},
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
			},
		},
	}
	want := model.Service{
		Namespace: "default", Name: "product", ClusterIP: "10.96.0.10", Selector: map[string]string{"app": "product"},
		Ports: []model.ServicePort{
			{Name: "http", Port: 80, TargetPortName: "http", Protocol: "TCP", AppProtocol: "http"},
			{Name: "grpc", Port: 9090, TargetPort: 9091, Protocol: "TCP"},
			{Name: "dns", Port: 53, TargetPort: 53, Protocol: "UDP"},
		},
	}
	if diff := cmp.Diff(want, Service(svc)); diff != "" {
		t.Errorf("Service (-want +got):\n%s", diff)
	}
	// A headless service without ports has an empty list, not a missing one.
	headless := Service(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "h"}, Spec: corev1.ServiceSpec{ClusterIP: "None"}})
	if headless.Ports == nil || len(headless.Ports) != 0 {
		t.Errorf("ports of a service without ports = %#v, want an empty list", headless.Ports)
	}
}

func TestSelects(t *testing.T) {
	tests := []struct {
		name             string
		selector, labels map[string]string
		want             bool
	}{
		{"every key with its value", map[string]string{"app": "web", "v": "1"}, map[string]string{"app": "web", "v": "1", "x": "y"}, true},
		{"a value differs", map[string]string{"app": "web"}, map[string]string{"app": "db"}, false},
		{"a key is missing", map[string]string{"app": "web", "v": "1"}, map[string]string{"app": "web"}, false},
		{"an empty value must be present", map[string]string{"canary": ""}, map[string]string{}, false},
		{"an empty value matches an empty label", map[string]string{"canary": ""}, map[string]string{"canary": ""}, true},
		{"an empty selector selects nothing", map[string]string{}, map[string]string{"app": "web"}, false},
		{"a nil selector selects nothing", nil, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Selects(tt.selector, tt.labels); got != tt.want {
				t.Errorf("Selects(%v, %v) = %v, want %v", tt.selector, tt.labels, got, tt.want)
			}
		})
	}
}
