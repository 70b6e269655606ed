package convert

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

func ip(addr string) func(*corev1.Pod) { return func(p *corev1.Pod) { p.Status.PodIP = addr } }

func inNamespace(ns string) func(*corev1.Pod) { return func(p *corev1.Pod) { p.Namespace = ns } }

// brief renders a problem as "Kind ns/name field: message".
func brief(p model.Problem) string {
	return p.Kind + " " + p.Namespace + "/" + p.Name + " " + p.Field + ": " + p.Message
}

func TestDuplicatePodIPs(t *testing.T) {
	const clash = "one pod holds an IP at a time, so one of these statuses is stale or wrong " +
		"(both pods are kept, and what the mesh knows of this address may be the other pod's)"
	tests := []struct {
		name string
		pods []*corev1.Pod
		want []string
	}{{
		name: "distinct IPs",
		pods: []*corev1.Pod{testPod("a"), testPod("b", ip("10.0.0.2"))},
	}, {
		name: "two pods, one IP: the later one by name is reported, naming the first",
		pods: []*corev1.Pod{testPod("b"), testPod("a")},
		want: []string{"Pod default/b status.podIP: 10.0.0.1 is also the IP of pod default/a; " + clash},
	}, {
		name: "across namespaces too (one network)",
		pods: []*corev1.Pod{testPod("a"), testPod("a", inNamespace("shop"))},
		want: []string{"Pod shop/a status.podIP: 10.0.0.1 is also the IP of pod default/a; " + clash},
	}, {
		name: "three pods: each after the first",
		pods: []*corev1.Pod{testPod("c"), testPod("b"), testPod("a")},
		want: []string{
			"Pod default/b status.podIP: 10.0.0.1 is also the IP of pod default/a; " + clash,
			"Pod default/c status.podIP: 10.0.0.1 is also the IP of pod default/a; " + clash,
		},
	}, {
		name: "one address written two ways",
		pods: []*corev1.Pod{testPod("a", ip("fd00::1")), testPod("b", ip("fd00:0::1")), testPod("c", ip("::ffff:10.0.0.9")), testPod("d", ip("10.0.0.9"))},
		want: []string{
			"Pod default/b status.podIP: fd00:0::1 is also the IP of pod default/a; " + clash,
			"Pod default/d status.podIP: 10.0.0.9 is also the IP of pod default/c; " + clash,
		},
	}, {
		name: "finished pods gave their IP back",
		pods: []*corev1.Pod{
			testPod("a", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }),
			testPod("b", func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }),
			testPod("c", func(p *corev1.Pod) { p.Status.Phase = corev1.PodRunning }),
		},
	}, {
		name: "host-network pods share their node's IP",
		pods: []*corev1.Pod{
			testPod("a", func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
			testPod("b", func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
			testPod("c"),
		},
	}, {
		name: "no IP yet",
		pods: []*corev1.Pod{testPod("a", ip("")), testPod("b", ip(""))},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, p := range DuplicatePodIPs(tt.pods) {
				if p.Severity != policy.SeverityWarning {
					t.Errorf("%s is not a warning", brief(p))
				}
				got = append(got, brief(p))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
		})
	}
}

func TestServicesSelectingNoPod(t *testing.T) {
	svc := func(name string, selector map[string]string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}, Spec: corev1.ServiceSpec{Selector: selector}}
	}
	pods := []*corev1.Pod{testPod("web-0"), testPod("api-0", inNamespace("shop"), func(p *corev1.Pod) { p.Labels = map[string]string{"app": "api"} })}
	services := []*corev1.Service{
		svc("web", map[string]string{"app": "web"}),
		svc("typo", map[string]string{"app": "wbe"}),
		svc("elsewhere", map[string]string{"app": "api"}),
		svc("sliced", map[string]string{"app": "gone"}),
		svc("manual", nil),
	}
	slices := []*discoveryv1.EndpointSlice{endpointSlice("sliced-1", "sliced", nil)}
	var got []string
	for _, p := range ServicesSelectingNoPod(services, pods, slices) {
		got = append(got, brief(p))
	}
	want := []string{
		"Service default/elsewhere spec.selector: selects no pod: no pod in namespace default has the labels app=api, so the service has no endpoints (check the labels' spelling)",
		"Service default/typo spec.selector: selects no pod: no pod in namespace default has the labels app=wbe, so the service has no endpoints (check the labels' spelling)",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
}

// TestWarnings: the combined warnings do not depend on the order of the
// inputs, and the service check follows Options.DeriveFromSelectors.
func TestWarnings(t *testing.T) {
	services := []*corev1.Service{{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "typo"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "wbe"}}}}
	pods := []*corev1.Pod{testPod("b"), testPod("a"), testPod("c", ip("10.0.0.3"))}
	set := &policy.Set{AuthorizationPolicies: []*policy.AuthorizationPolicy{{
		Meta: policy.Meta{Kind: policy.KindAuthorizationPolicy, Namespace: "default", Name: "none"},
		Spec: policy.AuthorizationPolicySpec{Selector: &policy.WorkloadSelector{MatchLabels: map[string]string{"app": "none"}}},
	}}}
	render := func(ps []model.Problem) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.Kind+" "+p.Namespace+"/"+p.Name)
		}
		return out
	}
	derived := render(Warnings(nil, services, pods, nil, set, "istio-system", Options{DeriveFromSelectors: true}))
	if want := []string{"AuthorizationPolicy default/none", "Pod default/b", "Service default/typo"}; !slices.Equal(derived, want) {
		t.Errorf("with DeriveFromSelectors: %v, want %v", derived, want)
	}
	reversed := slices.Clone(pods)
	slices.Reverse(reversed)
	if again := render(Warnings(nil, services, reversed, nil, set, "istio-system", Options{DeriveFromSelectors: true})); !slices.Equal(again, derived) {
		t.Errorf("with the pods in reverse order: %v, want %v", again, derived)
	}
	if sliced := render(Warnings(nil, services, pods, nil, set, "istio-system", Options{})); !slices.Equal(sliced, []string{"AuthorizationPolicy default/none", "Pod default/b"}) {
		t.Errorf("without DeriveFromSelectors: %v, want no service warning", sliced)
	}
}

// TestNotActedOn: Istio's injection labels and annotations are reported,
// one warning per object naming every key; other istio.io keys that
// minimesh acts on (security.istio.io/tlsMode) are not.
func TestNotActedOn(t *testing.T) {
	const reason = " not acted on by minimesh: it does not inject sidecars (issue 17 will); " +
		"give the workload an Envoy sidecar (meshctl bootstrap) or run it under meshctl agent yourself"
	namespaces := []model.Namespace{
		{Name: "back-end", Labels: map[string]string{"istio-injection": "enabled"}},
		{Name: "canary", Labels: map[string]string{"istio.io/rev": "1-22", "istio-injection": "disabled"}},
		{Name: "plain", Labels: map[string]string{"team": "a"}},
	}
	pod := func(name string, labels, annotations map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Labels: labels, Annotations: annotations}}
	}
	pods := []*corev1.Pod{
		pod("meshed", map[string]string{"security.istio.io/tlsMode": "istio", "app": "x"}, nil),
		pod("tuned", map[string]string{"sidecar.istio.io/inject": "true"},
			map[string]string{"sidecar.istio.io/proxyCPU": "100m", "sidecar.istio.io/status": `{"containers":["istio-proxy"]}`, "prometheus.io/scrape": "true"}),
		pod("annotated", nil, map[string]string{"sidecar.istio.io/inject": "false"}),
	}
	var got []string
	for _, p := range NotActedOn(namespaces, pods) {
		if p.Severity != policy.SeverityWarning {
			t.Errorf("%s: severity %s, want a warning", brief(p), p.Severity)
		}
		got = append(got, brief(p))
	}
	want := []string{
		"Namespace /back-end metadata.labels.istio-injection: metadata.labels.istio-injection=enabled" + reason,
		"Namespace /canary metadata: metadata.labels.istio-injection=disabled, metadata.labels.istio.io/rev=1-22" + reason,
		"Pod default/annotated metadata.annotations.sidecar.istio.io/inject: metadata.annotations.sidecar.istio.io/inject" + reason,
		"Pod default/tuned metadata: metadata.labels.sidecar.istio.io/inject=true, metadata.annotations.sidecar.istio.io/proxyCPU, metadata.annotations.sidecar.istio.io/status" + reason,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
}
