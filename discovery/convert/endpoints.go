package convert

import (
	"cmp"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/minimesh/minimesh/discovery/model"
)

// Endpoints computes the endpoints of every port of the given services.
//
// Callers pass only the services they put in the snapshot (both sources
// leave out ExternalName services). The rules:
//
//   - An EndpointSlice belongs to the service named by its
//     kubernetes.io/service-name label in its own namespace. Slices without
//     that label, and FQDN slices (no address a proxy can dial), belong to
//     no service.
//   - When any slice belongs to a service, the slices are the whole truth
//     for it, as they are for kube-proxy (SliceEndpoints).
//   - Otherwise, with Options.DeriveFromSelectors, endpoints come from the
//     service's selector and the pods (SelectorEndpoints); without it the
//     service has no endpoints yet.
//   - A service with neither slices nor a selector has no entry. Otherwise
//     every port has an entry, possibly with no endpoints, so translation
//     can tell "no healthy backend" from "not a service with backends".
//
// The result does not depend on the order of the inputs.
func Endpoints(services []*corev1.Service, pods []*corev1.Pod, eps []*discoveryv1.EndpointSlice, opts Options) []model.ServiceEndpoints {
	index := NewPodIndex(pods)
	// Pods by namespace and label, so that a service's selector looks at
	// the pods carrying one of its labels, not at every pod of its
	// namespace. Each list keeps the order of pods.
	byLabel := map[[3]string][]*corev1.Pod{}
	for _, p := range pods {
		for k, v := range p.Labels {
			key := [3]string{p.Namespace, k, v}
			byLabel[key] = append(byLabel[key], p)
		}
	}
	candidates := func(svc *corev1.Service) []*corev1.Pod {
		var best []*corev1.Pod
		for i, k := range slices.Sorted(maps.Keys(svc.Spec.Selector)) {
			l := byLabel[[3]string{svc.Namespace, k, svc.Spec.Selector[k]}]
			if i == 0 || len(l) < len(best) {
				best = l
			}
		}
		return best
	}
	bySvc := map[[2]string][]*discoveryv1.EndpointSlice{}
	for _, s := range eps {
		name, ok := SliceService(s)
		if !ok {
			continue
		}
		k := [2]string{s.Namespace, name}
		bySvc[k] = append(bySvc[k], s)
	}

	out := []model.ServiceEndpoints{}
	for _, svc := range services {
		sl, hasSlices := bySvc[[2]string{svc.Namespace, svc.Name}]
		if !hasSlices && len(svc.Spec.Selector) == 0 {
			continue
		}
		for _, sp := range Service(svc).Ports {
			se := model.ServiceEndpoints{Namespace: svc.Namespace, Service: svc.Name, Port: sp.Port, Endpoints: []model.Endpoint{}}
			switch {
			case hasSlices:
				se.Endpoints = SliceEndpoints(sl, sp, index)
			case opts.DeriveFromSelectors:
				se.Endpoints = SelectorEndpoints(svc, sp, candidates(svc), opts)
			}
			out = append(out, se)
		}
	}
	return out
}

// SliceService returns the name of the service an EndpointSlice belongs
// to, and false when it belongs to none: no kubernetes.io/service-name
// label, or addressType FQDN.
func SliceService(s *discoveryv1.EndpointSlice) (string, bool) {
	name := s.Labels[discoveryv1.LabelServiceName]
	if name == "" || s.AddressType == discoveryv1.AddressTypeFQDN {
		return "", false
	}
	return name, true
}

// PodIndex finds pods by namespace and name, for EndpointSlice targetRefs.
type PodIndex map[[2]string]*corev1.Pod

// NewPodIndex indexes pods by namespace and name.
func NewPodIndex(pods []*corev1.Pod) PodIndex {
	ix := make(PodIndex, len(pods))
	for _, p := range pods {
		ix[[2]string{p.Namespace, p.Name}] = p
	}
	return ix
}

// Get returns the pod namespace/name, or nil.
func (ix PodIndex) Get(namespace, name string) *corev1.Pod { return ix[[2]string{namespace, name}] }

// TargetPod returns the pod behind a slice endpoint: its targetRef must be
// of kind Pod (a targetRef without a namespace means the slice's). It is
// nil when there is no such reference or the pod is not known; such an
// endpoint has no identity and counts as outside the mesh.
func TargetPod(s *discoveryv1.EndpointSlice, e *discoveryv1.Endpoint, pods PodIndex) *corev1.Pod {
	r := e.TargetRef
	if r == nil || r.Kind != "Pod" {
		return nil
	}
	return pods.Get(cmp.Or(r.Namespace, s.Namespace), r.Name)
}

// SliceEndpoints collects the endpoints of one service port from the
// service's EndpointSlices.
//
//   - A slice port matches the service port by name (both empty for a
//     single unnamed port) and protocol (unset means TCP); a slice without
//     a matching port contributes nothing to this service port.
//   - Unset ready and serving conditions mean true, unset terminating
//     false, as the EndpointSlice API documents.
//   - A targetRef to a known Pod supplies the workload, service account and
//     mesh membership (TargetPod).
//   - During a controller's update two slices may list one address and
//     port; the slice whose name sorts first wins, so the result does not
//     depend on the order slices were listed in.
func SliceEndpoints(eps []*discoveryv1.EndpointSlice, sp model.ServicePort, pods PodIndex) []model.Endpoint {
	eps = slices.Clone(eps)
	slices.SortStableFunc(eps, func(a, b *discoveryv1.EndpointSlice) int { return cmp.Compare(a.Name, b.Name) })
	out := []model.Endpoint{}
	type key struct {
		ip   string
		port int32
	}
	seen := map[key]bool{}
	for _, s := range eps {
		port, ok := SlicePort(s, sp)
		if !ok {
			continue
		}
		for i := range s.Endpoints {
			e := &s.Endpoints[i]
			ep := model.Endpoint{
				Port:        port,
				Ready:       e.Conditions.Ready == nil || *e.Conditions.Ready,
				Serving:     e.Conditions.Serving == nil || *e.Conditions.Serving,
				Terminating: e.Conditions.Terminating != nil && *e.Conditions.Terminating,
			}
			if p := TargetPod(s, e, pods); p != nil {
				ep.Workload, ep.ServiceAccount, ep.InMesh = p.Name, ServiceAccount(p), InMesh(p)
			}
			for _, a := range e.Addresses {
				k := key{a, port}
				if seen[k] {
					continue
				}
				seen[k] = true
				ep.IP = a
				out = append(out, ep)
			}
		}
	}
	return out
}

// SlicePort finds the slice's port for a service port: same name (both
// empty for a single unnamed port) and protocol, with a port number set.
func SlicePort(s *discoveryv1.EndpointSlice, sp model.ServicePort) (int32, bool) {
	for _, p := range s.Ports {
		name := ""
		if p.Name != nil {
			name = *p.Name
		}
		proto := string(corev1.ProtocolTCP)
		if p.Protocol != nil {
			proto = protocol(*p.Protocol)
		}
		if name == sp.Name && proto == sp.Protocol && p.Port != nil {
			return *p.Port, true
		}
	}
	return 0, false
}

// SelectorEndpoints derives the endpoints of one service port from the
// service's selector and the pods in its namespace, the way the
// EndpointSlice controller would:
//
//   - a pod is an endpoint when the selector (non-empty) matches its
//     labels, it has an IP, and it has not finished (phase Succeeded or
//     Failed);
//   - a named target port is looked up among the pod's container ports by
//     name and protocol; a pod without it is left out of this port only;
//   - serving is the pod's readiness (PodReady, so Options apply),
//     terminating is a set deletionTimestamp, and ready is serving and not
//     terminating, or always with publishNotReadyAddresses.
//
// Pods in other namespaces are ignored, so callers may pass all pods.
func SelectorEndpoints(svc *corev1.Service, sp model.ServicePort, pods []*corev1.Pod, opts Options) []model.Endpoint {
	out := []model.Endpoint{}
	for _, p := range pods {
		if p.Namespace != svc.Namespace || p.Status.PodIP == "" || finished(p) || !Selects(svc.Spec.Selector, p.Labels) {
			continue
		}
		port, ok := targetPort(p, sp)
		if !ok {
			continue
		}
		serving := PodReady(p, opts)
		terminating := p.DeletionTimestamp != nil
		out = append(out, model.Endpoint{
			IP: p.Status.PodIP, Port: port,
			Workload: p.Name, ServiceAccount: ServiceAccount(p), InMesh: InMesh(p),
			Ready:       svc.Spec.PublishNotReadyAddresses || (serving && !terminating),
			Serving:     serving,
			Terminating: terminating,
		})
	}
	return out
}

// finished reports a pod that has run to completion and will never serve.
func finished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// targetPort resolves a service port's target on one pod.
func targetPort(p *corev1.Pod, sp model.ServicePort) (int32, bool) {
	if sp.TargetPortName == "" {
		return sp.TargetPort, true
	}
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == sp.TargetPortName && protocol(cp.Protocol) == sp.Protocol {
				return cp.ContainerPort, true
			}
		}
	}
	return 0, false
}

// Selects reports whether a Service selector matches a pod's labels: every
// key must be present with its value. An empty selector selects nothing
// (Kubernetes then leaves endpoints to whoever manages them).
func Selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
