package file

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

// build runs Build on files given as name → YAML (leading newline dropped).
func build(files map[string]string) *model.Snapshot {
	var fs []File
	for name, data := range files {
		fs = append(fs, File{Path: name, Data: []byte(strings.TrimPrefix(data, "\n"))})
	}
	return Build(fs, Options{})
}

// brief renders a problem as "file:line severity field: message" for
// compact assertions.
func brief(p model.Problem) string {
	return fmt.Sprintf("%s %s %s: %s", p.Location, p.Severity, p.Field, p.Message)
}

func briefs(ps []model.Problem) []string {
	out := []string{}
	for _, p := range ps {
		out = append(out, brief(p))
	}
	return out
}

func TestBuildEveryKind(t *testing.T) {
	s := build(map[string]string{"mesh.yaml": `
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    istio-injection: enabled
---
apiVersion: v1
kind: Service
metadata:
  name: cart
  namespace: shop
spec:
  clusterIP: 10.0.0.7
  selector:
    app: cart
  ports:
  - name: grpc
    port: 80
    targetPort: grpc
    appProtocol: grpc
  - name: metrics
    port: 9090
---
apiVersion: v1
kind: Pod
metadata:
  name: cart-0
  namespace: shop
  labels:
    app: cart
    security.istio.io/tlsMode: istio
spec:
  serviceAccountName: cart
  containers:
  - name: app
    image: example/cart
    ports:
    - name: grpc
      containerPort: 8080
    - containerPort: 9090
      protocol: TCP
status:
  podIP: 127.0.0.5
  conditions:
  - type: Ready
    status: "False"
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: legacy-abc
  namespace: shop
  labels:
    kubernetes.io/service-name: legacy
addressType: IPv4
ports:
- name: ""
  port: 7000
endpoints:
- addresses: ["127.0.0.9"]
---
apiVersion: v1
kind: Service
metadata:
  name: legacy
  namespace: shop
spec:
  ports:
  - port: 7000
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: default
  namespace: shop
  creationTimestamp: "2024-05-01T10:00:00Z"
spec:
  mtls:
    mode: STRICT
  selector:
    matchLabels:
      app: cart
  portLevelMtls:
    9090:
      mode: PERMISSIVE
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: cart
  namespace: shop
spec:
  host: cart
  trafficPolicy:
    tls:
      mode: ISTIO_MUTUAL
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-nothing
  namespace: shop
spec: {}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: jwt
  namespace: shop
spec:
  jwtRules:
  - issuer: https://issuer.example
    jwksUri: https://issuer.example/keys
`})
	// The one problem: minimesh does not inject sidecars.
	if b := briefs(s.Problems); len(b) != 1 || !strings.Contains(b[0], "istio-injection=enabled not acted on by minimesh") {
		t.Fatalf("problems:\n%s\nwant only the istio-injection warning", strings.Join(b, "\n"))
	}
	s.Problems = nil
	want := &model.Snapshot{
		Namespaces: []model.Namespace{{Name: "shop", Labels: map[string]string{"istio-injection": "enabled"}}},
		Services: []model.Service{
			{Namespace: "shop", Name: "cart", ClusterIP: "10.0.0.7", Selector: map[string]string{"app": "cart"}, Ports: []model.ServicePort{
				{Name: "grpc", Port: 80, TargetPortName: "grpc", Protocol: "TCP", AppProtocol: "grpc"},
				{Name: "metrics", Port: 9090, TargetPort: 9090, Protocol: "TCP"},
			}},
			{Namespace: "shop", Name: "legacy", Ports: []model.ServicePort{{Port: 7000, TargetPort: 7000, Protocol: "TCP"}}},
		},
		Workloads: []model.Workload{{
			Namespace: "shop", Name: "cart-0", IP: "127.0.0.5", ServiceAccount: "cart",
			Labels: map[string]string{"app": "cart", model.LabelTLSMode: "istio"}, InMesh: true, Ready: false,
			Ports: []model.ContainerPort{{Name: "grpc", Port: 8080, Protocol: "TCP"}, {Port: 9090, Protocol: "TCP"}},
		}},
		Endpoints: []model.ServiceEndpoints{
			{Namespace: "shop", Service: "cart", Port: 80, Endpoints: []model.Endpoint{
				{IP: "127.0.0.5", Port: 8080, Workload: "cart-0", ServiceAccount: "cart", InMesh: true},
			}},
			{Namespace: "shop", Service: "cart", Port: 9090, Endpoints: []model.Endpoint{
				{IP: "127.0.0.5", Port: 9090, Workload: "cart-0", ServiceAccount: "cart", InMesh: true},
			}},
			{Namespace: "shop", Service: "legacy", Port: 7000, Endpoints: []model.Endpoint{
				{IP: "127.0.0.9", Port: 7000, Ready: true, Serving: true},
			}},
		},
	}
	if diff := cmp.Diff(want, s, cmp.FilterPath(func(p cmp.Path) bool { return p.String() == "Policies" }, cmp.Ignore())); diff != "" {
		t.Errorf("snapshot (-want +got):\n%s", diff)
	}

	ps := s.Policies
	if len(ps.PeerAuthentications) != 1 || len(ps.DestinationRules) != 1 || len(ps.AuthorizationPolicies) != 1 || len(ps.RequestAuthentications) != 1 {
		t.Fatalf("want one policy of each kind, got %+v", ps)
	}
	pa := ps.PeerAuthentications[0]
	wantMeta := policy.Meta{
		Kind: policy.KindPeerAuthentication, Namespace: "shop", Name: "default",
		CreationTimestamp: time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC),
		Origin:            policy.Location{File: "mesh.yaml", Line: 72},
	}
	if diff := cmp.Diff(wantMeta, pa.Meta); diff != "" {
		t.Errorf("PeerAuthentication meta (-want +got):\n%s", diff)
	}
	// Istio writes port-level keys as YAML integers; they must survive.
	if got := pa.Spec.PortLevelMTLS[9090].Mode; got != policy.ModePermissive {
		t.Errorf("portLevelMtls[9090] = %q, want PERMISSIVE", got)
	}
	if got := ps.DestinationRules[0].Spec.TrafficPolicy.TLS.Mode; got != policy.TLSIstioMutual {
		t.Errorf("DestinationRule tls mode = %q", got)
	}
	if got := ps.RequestAuthentications[0].Spec.JWTRules[0].JWKSURI; got != "https://issuer.example/keys" {
		t.Errorf("jwksUri = %q", got)
	}
}

func TestBuildDefaults(t *testing.T) {
	s := build(map[string]string{"a.yaml": `
apiVersion: v1
kind: Pod
metadata:
  name: plain
spec:
  containers:
  - name: app
    image: x
`})
	if len(s.Problems) > 0 {
		t.Fatalf("unexpected problems: %v", briefs(s.Problems))
	}
	want := []model.Workload{{Namespace: "default", Name: "plain", ServiceAccount: "default", Ready: true}}
	if diff := cmp.Diff(want, s.Workloads); diff != "" {
		t.Errorf("workloads (-want +got):\n%s", diff)
	}
	s = Build([]File{{Path: "a.yaml", Data: []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x}]}\n")}},
		Options{DefaultNamespace: "shop"})
	if len(s.Workloads) != 1 || s.Workloads[0].Namespace != "shop" {
		t.Errorf("DefaultNamespace not applied: %+v", s.Workloads)
	}
}

// TestBuildProblems checks that each kind of mistake is reported at the
// line of the offending field, that only the bad object is skipped, and
// that every problem in an object is reported at once.
func TestBuildProblems(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  []string
		// loaded lists "Kind ns/name" of objects that must still load.
		loaded []string
	}{{
		name: "bad YAML skips the file, not the directory",
		files: map[string]string{
			"a.yaml": "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  ports:\n    - port: 1\n   - port: 2\n",
			"b.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ok\n",
		},
		want: []string{"a.yaml:8 error : the file is not valid YAML: did not find expected key (in the block that starts at line 6); " +
			"no object in this file was loaded"},
		loaded: []string{"Namespace ok"},
	}, {
		name:  "YAML error on the first line",
		files: map[string]string{"a.yaml": "a: b: c\n"},
		want:  []string{"a.yaml:1 error : the file is not valid YAML: mapping values are not allowed in this context; no object in this file was loaded"},
	}, {
		name: "unknown field in a Kubernetes kind names its line; the next document still loads",
		files: map[string]string{"a.yaml": `
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  ports:
  - port: 80
    targetPrt: 8080
---
apiVersion: v1
kind: Namespace
metadata:
  name: ok
`},
		want:   []string{"a.yaml:8 error spec.ports[0].targetPrt: unknown field (not part of a v1 Service); check the spelling and indentation"},
		loaded: []string{"Namespace ok"},
	}, {
		name: "wrong types and unknown fields are all reported",
		files: map[string]string{"a.yaml": `
apiVersion: v1
kind: Pod
metadata:
  name: p
spec:
  containers:
  - name: a
    image: x
    ports:
    - containerPort: http
    - containerPort: [1]
  serviceAcount: x
status:
  podIP: 10.0.0.1
`},
		want: []string{
			"a.yaml:10 error spec.containers[0].ports[0].containerPort: must be a whole number, not a string",
			"a.yaml:11 error spec.containers[0].ports[1].containerPort: must be a whole number, not a list",
			"a.yaml:12 error spec.serviceAcount: unknown field (not part of a v1 Pod); check the spelling and indentation",
		},
	}, {
		name: "unknown field in a policy names its line",
		files: map[string]string{"p.yaml": `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: strict
  namespace: default
spec:
  mtls:
    mode: STRICT
    mood: happy
`},
		want: []string{"p.yaml:9 error spec.mtls.mood: unknown field; allowed: mode"},
	}, {
		name: "invalid policy value names its line, deep in a list",
		files: map[string]string{"p.yaml": `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: a
spec:
  rules:
  - to:
    - operation:
        methods:
        - GET
        - 42
`},
		want: []string{"p.yaml:11 error spec.rules[0].to[0].operation.methods[1]: must be a string, not a number (quote it)"},
	}, {
		name: "unknown kind lists the supported ones",
		files: map[string]string{"a.yaml": `
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
`},
		want: []string{"a.yaml:2 error kind: apps/v1 Deployment is not supported; minimesh reads " + supportedKinds},
	}, {
		name: "a known kind at an unknown version is unsupported",
		files: map[string]string{"a.yaml": `
apiVersion: discovery.k8s.io/v1beta1
kind: EndpointSlice
metadata:
  name: web
`},
		want: []string{"a.yaml:2 error kind: discovery.k8s.io/v1beta1 EndpointSlice is not supported; minimesh reads " + supportedKinds},
	}, {
		name: "duplicates across files: first by path wins, whatever the input order",
		files: map[string]string{
			"z.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: dup\n  labels: {from: z}\n",
			"a.yaml": "# comment\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: dup\n  labels: {from: a}\n",
		},
		want:   []string{"z.yaml:4 error : already defined at a.yaml:2; this copy is skipped (the first in path order wins)"},
		loaded: []string{"Namespace dup from=a"},
	}, {
		name: "same name in another namespace or kind is no duplicate",
		files: map[string]string{"a.yaml": `
apiVersion: v1
kind: Service
metadata: {name: web, namespace: a}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: b}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: a}
spec: {containers: [{name: a, image: x}]}
`},
		want: []string{
			`a.yaml:3 warning metadata.namespace: namespace "a" is not declared by any Namespace document; check the spelling or add one`,
			`a.yaml:8 warning metadata.namespace: namespace "b" is not declared by any Namespace document; check the spelling or add one`,
			`a.yaml:13 warning metadata.namespace: namespace "a" is not declared by any Namespace document; check the spelling or add one`,
		},
		loaded: []string{"Service a/web", "Service b/web", "Pod a/web"},
	}, {
		name: "missing kind, list document, bad name",
		files: map[string]string{"a.yaml": `
metadata:
  name: x
---
- a
- b
---
apiVersion: v1
kind: Namespace
metadata:
  name: Not_Valid
---
apiVersion: v1
kind: Namespace
metadata: {}
`},
		want: []string{
			"a.yaml:1 error : every document needs apiVersion and kind (for example apiVersion: v1, kind: Service)",
			"a.yaml:4 error : a document must be a mapping with apiVersion, kind, metadata and spec, not a list or a single value",
			`a.yaml:10 error metadata.name: "Not_Valid" is not a valid Namespace name: Kubernetes requires a DNS-1123 label: ` +
				`at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit`,
			"a.yaml:14 error metadata.name: every object needs a name",
		},
	}, {
		name: "repeated key and self-referencing alias",
		files: map[string]string{"a.yaml": `
apiVersion: v1
kind: Namespace
metadata:
  name: a
  name: b
---
apiVersion: v1
kind: Namespace
metadata: &m
  name: c
  labels: *m
`},
		want: []string{
			`a.yaml:5 error metadata.name: field "name" appears twice in one mapping (first at line 4); remove one`,
			"a.yaml:11 error metadata.labels: alias *m refers to a value that contains itself",
		},
	}, {
		name:   "empty documents are skipped silently",
		files:  map[string]string{"a.yaml": "---\n# only a comment\n---\n---\nnull\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ok}\n---\n"},
		loaded: []string{"Namespace ok"},
	}, {
		name: "service checks",
		files: map[string]string{"a.yaml": `
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: ExternalName
  clusterIP: 10.0.0.300
  ports:
  - port: 0
    protocol: HTTP
  - name: b
    port: 80
    targetPort: 70000
`},
		want: []string{
			"a.yaml:6 error spec.type: type ExternalName is not supported; use ClusterIP (the default), NodePort or LoadBalancer",
			`a.yaml:7 error spec.clusterIP: "10.0.0.300" is not an IP address (or "None" for a headless service)`,
			"a.yaml:9 error spec.ports[0].port: 0 is not a port number from 1 to 65535",
			"a.yaml:9 error spec.ports[0].name: a service with more than one port must name each port",
			`a.yaml:10 error spec.ports[0].protocol: "HTTP" is not one of TCP, UDP, SCTP`,
			"a.yaml:13 error spec.ports[1].targetPort: 70000 is not a port number from 1 to 65535",
		},
	}, {
		name: "pod and slice checks",
		files: map[string]string{"a.yaml": `
apiVersion: v1
kind: Pod
metadata:
  name: p
spec:
  containers:
  - name: a
    image: x
status:
  podIP: 10.0.0.999
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: s
addressType: IPv4
endpoints:
- addresses: ["fd00::1"]
`},
		want: []string{
			`a.yaml:10 error status.podIP: "10.0.0.999" is not an IP address`,
			"a.yaml:14 error metadata.labels: an EndpointSlice needs the label kubernetes.io/service-name naming its service",
			`a.yaml:18 error endpoints[0].addresses[0]: "fd00::1" is not an IPv4 address`,
		},
	}, {
		name: "policy status is ignored with a warning; the policy loads",
		files: map[string]string{"a.yaml": `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-all
  namespace: default
spec: {}
status:
  validationMessages: []
`},
		want:   []string{"a.yaml:7 warning status: status is written by a control plane, not read from manifests; it is ignored"},
		loaded: []string{"AuthorizationPolicy default/deny-all"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := build(tt.files)
			if diff := cmp.Diff(append([]string{}, tt.want...), briefs(s.Problems)); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
			got := loadedObjects(s)
			for _, l := range tt.loaded {
				if !got[l] {
					t.Errorf("%s was not loaded; loaded: %v", l, got)
				}
			}
		})
	}
}

// loadedObjects names every object in a snapshot ("Kind ns/name"; for
// namespaces also "Namespace name k=v" per label).
func loadedObjects(s *model.Snapshot) map[string]bool {
	got := map[string]bool{}
	for _, n := range s.Namespaces {
		got["Namespace "+n.Name] = true
		for k, v := range n.Labels {
			got["Namespace "+n.Name+" "+k+"="+v] = true
		}
	}
	for _, x := range s.Services {
		got["Service "+x.Namespace+"/"+x.Name] = true
	}
	for _, x := range s.Workloads {
		got["Pod "+x.Namespace+"/"+x.Name] = true
	}
	for _, x := range s.Policies.AuthorizationPolicies {
		got["AuthorizationPolicy "+x.Key()] = true
	}
	for _, x := range s.Policies.PeerAuthentications {
		got["PeerAuthentication "+x.Key()] = true
	}
	return got
}

// TestBuildDeterministic checks that the input order of files does not
// change the snapshot.
func TestBuildDeterministic(t *testing.T) {
	a := File{Path: "a.yaml", Data: []byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n")}
	b := File{Path: "b.yaml", Data: []byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {b: y}}\n")}
	c := File{Path: "c.yaml", Data: []byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: w}\n")}
	first := Build([]File{a, b, c}, Options{})
	second := Build([]File{c, b, a}, Options{})
	if diff := cmp.Diff(first, second); diff != "" {
		t.Errorf("input order changed the snapshot (-abc +cba):\n%s", diff)
	}
}
