// Package model is the plain description of a mesh that every discovery
// source (files, Kubernetes) produces and translation consumes. It has no
// behaviour beyond lookups and ordering; it never says where data came from.
package model

import (
	"cmp"
	"reflect"
	"slices"
	"time"

	"github.com/minimesh/minimesh/policy"
)

// Labels Istio uses, which minimesh reads with the same meaning.
const (
	// LabelTLSMode marks a workload that has a proxy (sidecar or proxyless
	// agent) able to terminate Istio mTLS: value "istio".
	LabelTLSMode = "security.istio.io/tlsMode"
	// TLSModeIstio is the value of LabelTLSMode for meshed workloads.
	TLSModeIstio = "istio"
)

// Problem is a user mistake found while building a snapshot.
type Problem = policy.Problem

// Snapshot is one consistent view of the mesh. Every slice is sorted
// (namespace, then name, then port), so two snapshots built from the same
// input are deeply equal.
type Snapshot struct {
	Namespaces []Namespace `json:"namespaces"`
	Services   []Service   `json:"services"`
	Workloads  []Workload  `json:"workloads"`
	// Endpoints holds one entry per service port that has a target.
	Endpoints []ServiceEndpoints `json:"endpoints"`
	Policies  policy.Set         `json:"policies"`
	// Problems lists objects that were skipped (errors) or accepted with
	// warnings. Translation never reads them; the debug API shows them.
	Problems []Problem `json:"problems,omitempty"`
	// Held lists objects whose newest version was refused while an older,
	// valid version of the same object stays in force (see Held). Their
	// served versions are in the slices above; translation never reads
	// this list.
	Held []Held `json:"held,omitempty"`
	// JWKS holds the key sets fetched for RequestAuthentication jwksUri
	// values, keyed by URI. Sources never fill it: discovery/jwks does,
	// so translation can inline keys without doing I/O itself.
	JWKS map[string]string `json:"jwks,omitempty"`
	// ObservedAt is when the source first saw the change this snapshot
	// reflects (a file event, an informer event), or zero when it cannot
	// say. It is not part of the mesh: SameMesh ignores it. The xDS
	// server counts its debounce and its convergence times from it, so
	// the time a source takes to build the snapshot is not added to them.
	ObservedAt time.Time `json:"-"`
}

// SameMesh reports whether s and o describe the same mesh: deeply equal
// apart from ObservedAt. Sources use it to publish only real changes.
func (s *Snapshot) SameMesh(o *Snapshot) bool {
	if s == nil || o == nil {
		return s == o
	}
	a, b := *s, *o
	a.ObservedAt, b.ObservedAt = time.Time{}, time.Time{}
	return reflect.DeepEqual(a, b)
}

// Held is one object whose newest version was refused (it is invalid, or
// its file has a document minimesh cannot name) while the last valid
// version of the same object keeps serving: a mistake never removes what
// a proxy had. Only removing the object removes it.
type Held struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	// Refused says which version was refused: "file.yaml:12" or
	// "resourceVersion 812".
	Refused string `json:"refused"`
	// Serving says which version is served instead: where it was read
	// and when it was first served ("file.yaml:12 as loaded at
	// 2026-12-07T14:02:03Z") or "resourceVersion 790".
	Serving string `json:"serving"`
	// Reason is why the newest version was refused, in one line.
	Reason string `json:"reason"`
}

// Namespace is a Kubernetes namespace.
type Namespace struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
}

// Service is a Kubernetes Service.
type Service struct {
	Namespace string            `json:"namespace"`
	Name      string            `json:"name"`
	ClusterIP string            `json:"clusterIP,omitempty"`
	Ports     []ServicePort     `json:"ports"`
	Selector  map[string]string `json:"selector,omitempty"`
}

// ServicePort is one port of a Service.
type ServicePort struct {
	Name string `json:"name,omitempty"`
	Port int32  `json:"port"`
	// TargetPort is the numeric target port; when the Service names a
	// container port instead, TargetPortName is set and TargetPort is 0
	// (resolved per endpoint).
	TargetPort     int32  `json:"targetPort,omitempty"`
	TargetPortName string `json:"targetPortName,omitempty"`
	// Protocol is TCP, UDP or SCTP (default TCP).
	Protocol    string `json:"protocol"`
	AppProtocol string `json:"appProtocol,omitempty"`
}

// Workload is a Pod.
type Workload struct {
	Namespace      string            `json:"namespace"`
	Name           string            `json:"name"`
	IP             string            `json:"ip,omitempty"`
	ServiceAccount string            `json:"serviceAccount"`
	Labels         map[string]string `json:"labels,omitempty"`
	// InMesh is true when the pod has a proxy that speaks Istio mTLS
	// (label security.istio.io/tlsMode=istio).
	InMesh bool `json:"inMesh"`
	// Ready mirrors the pod's Ready condition.
	Ready bool            `json:"ready"`
	Ports []ContainerPort `json:"ports,omitempty"`
}

// ContainerPort is a named container port, used to resolve named target ports.
type ContainerPort struct {
	Name     string `json:"name,omitempty"`
	Port     int32  `json:"port"`
	Protocol string `json:"protocol"`
}

// ServiceEndpoints are the endpoints behind one service port.
type ServiceEndpoints struct {
	Namespace string     `json:"namespace"`
	Service   string     `json:"service"`
	Port      int32      `json:"port"` // the service port
	Endpoints []Endpoint `json:"endpoints"`
}

// Endpoint is one address behind a service port. Identity fields are copied
// from the workload so translation needs no joins.
type Endpoint struct {
	IP   string `json:"ip"`
	Port int32  `json:"port"` // the target port on this endpoint
	// Workload is the pod's name (namespace is the service's), empty for
	// endpoints with no pod behind them.
	Workload       string `json:"workload,omitempty"`
	ServiceAccount string `json:"serviceAccount,omitempty"`
	InMesh         bool   `json:"inMesh"`
	Ready          bool   `json:"ready"`
	Serving        bool   `json:"serving"`
	Terminating    bool   `json:"terminating"`
}

// Sort puts every slice in the canonical order.
func (s *Snapshot) Sort() {
	slices.SortFunc(s.Namespaces, func(a, b Namespace) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(s.Services, func(a, b Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	for i := range s.Services {
		slices.SortFunc(s.Services[i].Ports, func(a, b ServicePort) int {
			return cmp.Or(cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol))
		})
	}
	slices.SortFunc(s.Workloads, func(a, b Workload) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	slices.SortFunc(s.Endpoints, func(a, b ServiceEndpoints) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Service, b.Service), cmp.Compare(a.Port, b.Port))
	})
	for i := range s.Endpoints {
		slices.SortFunc(s.Endpoints[i].Endpoints, func(a, b Endpoint) int {
			return cmp.Or(cmp.Compare(a.IP, b.IP), cmp.Compare(a.Port, b.Port))
		})
	}
	s.Policies.Sort()
	slices.SortFunc(s.Held, func(a, b Held) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
}

// Service returns the service namespace/name, or nil.
func (s *Snapshot) Service(namespace, name string) *Service {
	i, ok := slices.BinarySearchFunc(s.Services, [2]string{namespace, name}, func(e Service, k [2]string) int {
		return cmp.Or(cmp.Compare(e.Namespace, k[0]), cmp.Compare(e.Name, k[1]))
	})
	if !ok {
		return nil
	}
	return &s.Services[i]
}

// Workload returns the pod namespace/name, or nil.
func (s *Snapshot) Workload(namespace, name string) *Workload {
	i, ok := slices.BinarySearchFunc(s.Workloads, [2]string{namespace, name}, func(e Workload, k [2]string) int {
		return cmp.Or(cmp.Compare(e.Namespace, k[0]), cmp.Compare(e.Name, k[1]))
	})
	if !ok {
		return nil
	}
	return &s.Workloads[i]
}

// EndpointsFor returns the endpoints of one service port, or nil.
func (s *Snapshot) EndpointsFor(namespace, service string, port int32) *ServiceEndpoints {
	i, ok := slices.BinarySearchFunc(s.Endpoints, ServiceEndpoints{Namespace: namespace, Service: service, Port: port},
		func(e, k ServiceEndpoints) int {
			return cmp.Or(cmp.Compare(e.Namespace, k.Namespace), cmp.Compare(e.Service, k.Service), cmp.Compare(e.Port, k.Port))
		})
	if !ok {
		return nil
	}
	return &s.Endpoints[i]
}
