package convert

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

// Warnings finds what is valid object by object but wrong together, or
// accepted but not acted on, for both sources to report alike: pods that
// share an IP (DuplicatePodIPs), policies whose selector selects no
// workload (policy.Set.UnmatchedSelectors), injection labels and
// annotations minimesh does not act on (NotActedOn) and, where endpoints
// come from selectors, services whose selector selects no pod
// (ServicesSelectingNoPod). Each is a warning: nothing is skipped. The
// problems name their objects and fields but no file; a source that knows
// where an object was read adds that. The order does not depend on the
// order of the inputs.
func Warnings(namespaces []model.Namespace, services []*corev1.Service, pods []*corev1.Pod, eps []*discoveryv1.EndpointSlice, policies *policy.Set, rootNamespace string, opts Options) []model.Problem {
	out := DuplicatePodIPs(pods)
	out = append(out, NotActedOn(namespaces, pods)...)
	workloads := make([]policy.Workload, len(pods))
	for i, p := range pods {
		workloads[i] = policy.Workload{Namespace: p.Namespace, Labels: p.Labels}
	}
	out = append(out, policies.UnmatchedSelectors(rootNamespace, workloads)...)
	if opts.DeriveFromSelectors {
		out = append(out, ServicesSelectingNoPod(services, pods, eps)...)
	}
	slices.SortStableFunc(out, func(a, b model.Problem) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// DuplicatePodIPs warns about pods that hold the same IP. minimesh knows
// one network, in which an IP belongs to one pod at a time, so two pods
// with one IP mean that a status is stale or hand-written wrongly, and
// what the mesh knows of that address (in the mesh or not, which
// identity) may be the other pod's. It is a warning and both pods are
// kept: Kubernetes accepts both, the pod that holds the IP still deserves
// its config, and which one is stale cannot be told from here. Pods that
// cannot clash are left out: those without an IP, those that have
// finished (Kubernetes may give their IP to a new pod while the finished
// pod is still listed), and those on the host network, which share their
// node's IP by design. The first pod by namespace and name is named in the
// warning about each other one.
func DuplicatePodIPs(pods []*corev1.Pod) []model.Problem {
	first := map[netip.Addr]*corev1.Pod{}
	var out []model.Problem
	for _, p := range sortedPods(pods) {
		if p.Spec.HostNetwork || finished(p) {
			continue
		}
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil {
			continue // no IP yet, or one the source reports itself
		}
		ip = ip.Unmap()
		f, seen := first[ip]
		if !seen {
			first[ip] = p
			continue
		}
		out = append(out, model.Problem{
			Severity: policy.SeverityWarning, Kind: "Pod", Namespace: p.Namespace, Name: p.Name, Field: "status.podIP",
			Message: fmt.Sprintf("%s is also the IP of pod %s/%s; one pod holds an IP at a time, so one of these statuses is stale "+
				"or wrong (both pods are kept, and what the mesh knows of this address may be the other pod's)",
				p.Status.PodIP, f.Namespace, f.Name),
		})
	}
	return out
}

// ServicesSelectingNoPod warns about every service whose endpoints come
// from its selector (see Endpoints: it has no EndpointSlice) and whose
// selector selects no pod of its namespace. Where endpoints are derived
// from selectors (Options.DeriveFromSelectors) such a service has no
// endpoints, and a typo in a label is the usual cause. A service without a
// selector has its endpoints managed elsewhere and is not checked.
func ServicesSelectingNoPod(services []*corev1.Service, pods []*corev1.Pod, eps []*discoveryv1.EndpointSlice) []model.Problem {
	hasSlices := map[[2]string]bool{}
	for _, s := range eps {
		if name, ok := SliceService(s); ok {
			hasSlices[[2]string{s.Namespace, name}] = true
		}
	}
	// A selector is tried on the pods that carry its first label only.
	byLabel := map[[3]string][]*corev1.Pod{}
	for _, p := range pods {
		for k, v := range p.Labels {
			byLabel[[3]string{p.Namespace, k, v}] = append(byLabel[[3]string{p.Namespace, k, v}], p)
		}
	}
	var out []model.Problem
	for _, svc := range services {
		if len(svc.Spec.Selector) == 0 || hasSlices[[2]string{svc.Namespace, svc.Name}] {
			continue
		}
		keys := slices.Sorted(maps.Keys(svc.Spec.Selector))
		if slices.ContainsFunc(byLabel[[3]string{svc.Namespace, keys[0], svc.Spec.Selector[keys[0]]}], func(p *corev1.Pod) bool {
			return Selects(svc.Spec.Selector, p.Labels)
		}) {
			continue
		}
		labels := make([]string, len(keys))
		for i, k := range keys {
			labels[i] = k + "=" + svc.Spec.Selector[k]
		}
		out = append(out, model.Problem{
			Severity: policy.SeverityWarning, Kind: "Service", Namespace: svc.Namespace, Name: svc.Name, Field: "spec.selector",
			Message: fmt.Sprintf("selects no pod: no pod in namespace %s has the labels %s, so the service has no endpoints "+
				"(check the labels' spelling)", svc.Namespace, strings.Join(labels, ",")),
		})
	}
	slices.SortFunc(out, func(a, b model.Problem) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// sortedPods returns pods ordered by namespace and name.
func sortedPods(pods []*corev1.Pod) []*corev1.Pod {
	pods = slices.Clone(pods)
	slices.SortFunc(pods, func(a, b *corev1.Pod) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return pods
}

// NotActedOn warns about the sidecar-injection labels and annotations Istio
// users set and minimesh reads but does not act on: the namespace labels
// istio-injection and istio.io/rev, and every sidecar.istio.io/ label or
// annotation of a pod (inject, proxyCPU, status…). minimesh injects no
// sidecar (issue 17 will), so a user who relies on them would otherwise
// see a pod without a proxy and no reason. One warning per object names
// every such key, so an object is reported once however many it carries;
// the field is the key's path when there is one, else "metadata".
func NotActedOn(namespaces []model.Namespace, pods []*corev1.Pod) []model.Problem {
	const reason = "not acted on by minimesh: it does not inject sidecars (issue 17 will); " +
		"give the workload an Envoy sidecar (meshctl bootstrap) or run it under meshctl agent yourself"
	var out []model.Problem
	report := func(kind, namespace, name string, keys []string) {
		if len(keys) == 0 {
			return
		}
		field := "metadata"
		if len(keys) == 1 {
			field, _, _ = strings.Cut(keys[0], "=")
		}
		out = append(out, model.Problem{
			Severity: policy.SeverityWarning, Kind: kind, Namespace: namespace, Name: name, Field: field,
			Message: strings.Join(keys, ", ") + " " + reason,
		})
	}
	for _, ns := range namespaces {
		var keys []string
		for _, k := range []string{"istio-injection", "istio.io/rev"} {
			if v, ok := ns.Labels[k]; ok {
				keys = append(keys, "metadata.labels."+k+"="+v)
			}
		}
		report("Namespace", "", ns.Name, keys)
	}
	for _, p := range sortedPods(pods) {
		var keys []string
		for _, k := range slices.Sorted(maps.Keys(p.Labels)) {
			if strings.HasPrefix(k, "sidecar.istio.io/") {
				keys = append(keys, "metadata.labels."+k+"="+p.Labels[k])
			}
		}
		// Annotation values can be long (sidecar.istio.io/status is a
		// JSON document), so only their keys are named.
		for _, k := range slices.Sorted(maps.Keys(p.Annotations)) {
			if strings.HasPrefix(k, "sidecar.istio.io/") {
				keys = append(keys, "metadata.annotations."+k)
			}
		}
		report("Pod", p.Namespace, p.Name, keys)
	}
	return out
}
