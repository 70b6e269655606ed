// Package convert turns Kubernetes objects (Namespaces, Pods, Services,
// EndpointSlices) into discovery/model types, and finds the objects that
// are valid alone but clash together (Warnings).
//
// It exists so that there is exactly one answer to "what is this workload's
// identity, is it in the mesh, is it ready, which endpoints does this service
// port have and which pod is behind each", and one list of warnings about
// what makes those answers doubtful (two pods with one IP, a selector that
// selects nothing). The file source and the
// Kubernetes source both call it; a mesh described in a directory and the
// same mesh in a cluster must give the same snapshot, and two copies of
// these rules would drift apart. Where the sources truly differ (a
// hand-written pod has no status, a directory has no EndpointSlice
// controller) the difference is an explicit Options field, not a second
// implementation.
//
// Everything here is a pure function of its arguments: no I/O, no clock,
// and the result never shares a map with the input, so a snapshot stays
// valid when an informer cache replaces its objects.
package convert

import (
	"cmp"
	"maps"

	corev1 "k8s.io/api/core/v1"

	"github.com/minimesh/minimesh/discovery/model"
)

// Options are the few rules that differ between sources, each stated
// explicitly so that a reader sees every difference in one place.
type Options struct {
	// ReadyWithoutConditions counts a pod whose status lists no conditions
	// at all as ready. Hand-written manifests rarely have a status, and a
	// file describes pods its author means to be running, so the file
	// source sets it. In a cluster the kubelet always writes conditions; a
	// pod without them has not been started yet and is not ready, so the
	// Kubernetes source leaves it unset. Once any condition is listed, the
	// Ready condition decides either way.
	ReadyWithoutConditions bool
	// DeriveFromSelectors computes the endpoints of a service that no
	// EndpointSlice names from its selector and the pods, the way the
	// EndpointSlice controller would. The file source sets it, because no
	// controller runs over a directory. The Kubernetes source leaves it
	// unset: there the controller writes the slices (and knows about
	// readiness gates and more), so a service without slices yet simply
	// has no endpoints yet.
	DeriveFromSelectors bool
}

// Namespace converts a Namespace.
func Namespace(ns *corev1.Namespace) model.Namespace {
	return model.Namespace{Name: ns.Name, Labels: copyLabels(ns.Labels)}
}

// Workload converts a Pod.
//
//   - The service account is spec.serviceAccountName, else the deprecated
//     spec.serviceAccount, else "default", as the API server defaults it.
//   - The pod is in the mesh when it has the label
//     security.istio.io/tlsMode=istio, as in Istio.
//   - Ready follows PodReady.
//   - Container ports keep their names so that named target ports can be
//     resolved; an unset protocol is TCP.
func Workload(p *corev1.Pod, opts Options) model.Workload {
	w := model.Workload{
		Namespace:      p.Namespace,
		Name:           p.Name,
		IP:             p.Status.PodIP,
		ServiceAccount: ServiceAccount(p),
		Labels:         copyLabels(p.Labels),
		InMesh:         InMesh(p),
		Ready:          PodReady(p, opts),
	}
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			w.Ports = append(w.Ports, model.ContainerPort{
				Name: cp.Name, Port: cp.ContainerPort, Protocol: protocol(cp.Protocol),
			})
		}
	}
	return w
}

// ServiceAccount is the pod's service account, the name its SPIFFE
// identity is built from.
func ServiceAccount(p *corev1.Pod) string {
	return cmp.Or(p.Spec.ServiceAccountName, p.Spec.DeprecatedServiceAccount, "default")
}

// InMesh reports whether the pod has a proxy that speaks Istio mTLS
// (label security.istio.io/tlsMode=istio).
func InMesh(p *corev1.Pod) bool {
	return p.Labels[model.LabelTLSMode] == model.TLSModeIstio
}

// PodReady mirrors the pod's Ready condition: the first condition of type
// Ready decides, as in Kubernetes' own helpers. A pod with conditions but
// none of type Ready is not ready; a pod with no conditions at all is ready
// only with Options.ReadyWithoutConditions.
func PodReady(p *corev1.Pod, opts Options) bool {
	if len(p.Status.Conditions) == 0 {
		return opts.ReadyWithoutConditions
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Service converts a Service. An unset protocol is TCP; an unset target
// port is the port (as the API server defaults it); a named target port is
// kept as a name and resolved per endpoint.
func Service(svc *corev1.Service) model.Service {
	ms := model.Service{
		Namespace: svc.Namespace,
		Name:      svc.Name,
		ClusterIP: svc.Spec.ClusterIP,
		Selector:  copyLabels(svc.Spec.Selector),
		Ports:     make([]model.ServicePort, 0, len(svc.Spec.Ports)),
	}
	for _, p := range svc.Spec.Ports {
		mp := model.ServicePort{Name: p.Name, Port: p.Port, Protocol: protocol(p.Protocol)}
		if p.AppProtocol != nil {
			mp.AppProtocol = *p.AppProtocol
		}
		switch {
		case p.TargetPort.StrVal != "":
			mp.TargetPortName = p.TargetPort.StrVal
		case p.TargetPort.IntVal != 0:
			mp.TargetPort = p.TargetPort.IntVal
		default:
			mp.TargetPort = p.Port
		}
		ms.Ports = append(ms.Ports, mp)
	}
	return ms
}

// protocol defaults an unset protocol to TCP, as the API server does.
func protocol(p corev1.Protocol) string {
	return cmp.Or(string(p), string(corev1.ProtocolTCP))
}

// copyLabels returns a copy (nil for none), so a snapshot never shares a
// map with an informer cache, which client-go may replace at any time.
func copyLabels(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return maps.Clone(m)
}
