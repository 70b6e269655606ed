package file

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/minimesh/minimesh/discovery/model"
)

// pod renders a Pod manifest for endpoint tests.
func podYAML(name, ip, extra string) string {
	return `apiVersion: v1
kind: Pod
metadata:
  name: ` + name + `
  labels: {app: web` + extra + `}
spec:
  serviceAccountName: sa-` + name + `
  containers:
  - name: app
    image: x
    ports:
    - {name: http, containerPort: 8080}
    - {name: admin, containerPort: 9000}
status:
  podIP: ` + ip + `
`
}

const webService = `apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: admin, port: 81, targetPort: admin}
  - {name: raw, port: 82, targetPort: 7000}
`

// rawService has one numeric port, for tests about readiness rather than
// ports.
const rawService = `apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {name: raw, port: 82, targetPort: 7000}
`

func TestEndpoints(t *testing.T) {
	const inMesh = ", security.istio.io/tlsMode: istio"
	tests := []struct {
		name string
		docs []string
		// want maps a service port to its endpoints; ports not listed
		// must have an entry with no endpoints, unless noEntry is set.
		want    map[int32][]model.Endpoint
		noEntry bool
	}{{
		name: "selector: named ports resolve per pod, numeric ports pass through",
		docs: []string{webService, podYAML("a", "10.0.0.1", inMesh)},
		want: map[int32][]model.Endpoint{
			80: {{IP: "10.0.0.1", Port: 8080, Workload: "a", ServiceAccount: "sa-a", InMesh: true, Ready: true, Serving: true}},
			81: {{IP: "10.0.0.1", Port: 9000, Workload: "a", ServiceAccount: "sa-a", InMesh: true, Ready: true, Serving: true}},
			82: {{IP: "10.0.0.1", Port: 7000, Workload: "a", ServiceAccount: "sa-a", InMesh: true, Ready: true, Serving: true}},
		},
	}, {
		name: "a pod without the named port is left out of that port only",
		docs: []string{webService, `apiVersion: v1
kind: Pod
metadata: {name: b, labels: {app: web}}
spec:
  containers:
  - {name: app, image: x, ports: [{name: http, containerPort: 8081}]}
status: {podIP: 10.0.0.2}
`},
		want: map[int32][]model.Endpoint{
			80: {{IP: "10.0.0.2", Port: 8081, Workload: "b", ServiceAccount: "default", Ready: true, Serving: true}},
			82: {{IP: "10.0.0.2", Port: 7000, Workload: "b", ServiceAccount: "default", Ready: true, Serving: true}},
		},
	}, {
		name: "named port must match protocol too",
		docs: []string{`apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: dns, port: 53, protocol: UDP, targetPort: dns}]
`, `apiVersion: v1
kind: Pod
metadata: {name: c, labels: {app: web}}
spec:
  containers:
  - {name: app, image: x, ports: [{name: dns, containerPort: 5353, protocol: TCP}]}
status: {podIP: 10.0.0.3}
`},
		want: map[int32][]model.Endpoint{},
	}, {
		name: "readiness: Ready=False is not ready; no conditions counts as ready; not in mesh without the label",
		docs: []string{rawService,
			podYAML("a", "10.0.0.1", "") + "  conditions: [{type: Ready, status: \"False\"}]\n",
			podYAML("b", "10.0.0.2", "") + "  conditions: [{type: PodScheduled, status: \"True\"}]\n",
			podYAML("c", "10.0.0.3", ""),
		},
		want: map[int32][]model.Endpoint{
			82: {
				{IP: "10.0.0.1", Port: 7000, Workload: "a", ServiceAccount: "sa-a"},
				{IP: "10.0.0.2", Port: 7000, Workload: "b", ServiceAccount: "sa-b"},
				{IP: "10.0.0.3", Port: 7000, Workload: "c", ServiceAccount: "sa-c", Ready: true, Serving: true},
			},
		},
	}, {
		name: "terminating pods serve but are not ready; finished pods, pods without IP and other labels are no endpoints",
		docs: []string{rawService,
			strings.Replace(podYAML("a", "10.0.0.1", ""), "metadata:\n", "metadata:\n  deletionTimestamp: \"2024-01-01T00:00:00Z\"\n", 1),
			podYAML("b", "10.0.0.2", "") + "  phase: Succeeded\n",
			strings.Replace(podYAML("c", "10.0.0.3", ""), "  podIP: 10.0.0.3\n", "  phase: Pending\n", 1),
			strings.Replace(podYAML("d", "10.0.0.4", ""), "app: web", "app: other", 1),
		},
		want: map[int32][]model.Endpoint{
			82: {{IP: "10.0.0.1", Port: 7000, Workload: "a", ServiceAccount: "sa-a", Serving: true, Terminating: true}},
		},
	}, {
		name: "publishNotReadyAddresses makes every pod ready",
		docs: []string{strings.Replace(rawService, "  selector:", "  publishNotReadyAddresses: true\n  selector:", 1),
			podYAML("a", "10.0.0.1", "") + "  conditions: [{type: Ready, status: \"False\"}]\n"},
		want: map[int32][]model.Endpoint{
			82: {{IP: "10.0.0.1", Port: 7000, Workload: "a", ServiceAccount: "sa-a", Ready: true}},
		},
	}, {
		name: "slices win over the selector; conditions, targetRefs and port names are honoured",
		docs: []string{webService, podYAML("a", "10.0.0.1", inMesh), `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
- {name: http, port: 8443}
- {name: raw, port: 7001, protocol: UDP}
endpoints:
- addresses: ["10.0.1.1"]
  targetRef: {kind: Pod, name: a}
- addresses: ["10.0.1.2", "10.0.1.3"]
  conditions: {ready: false, serving: true, terminating: true}
- addresses: ["10.0.1.4"]
  conditions: {ready: false, serving: false}
`, `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-2
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
- {name: http, port: 8443}
endpoints:
- addresses: ["10.0.1.1", "10.0.1.5"]
`},
		want: map[int32][]model.Endpoint{
			80: {
				{IP: "10.0.1.1", Port: 8443, Workload: "a", ServiceAccount: "sa-a", InMesh: true, Ready: true, Serving: true},
				{IP: "10.0.1.2", Port: 8443, Serving: true, Terminating: true},
				{IP: "10.0.1.3", Port: 8443, Serving: true, Terminating: true},
				{IP: "10.0.1.4", Port: 8443},
				{IP: "10.0.1.5", Port: 8443, Ready: true, Serving: true},
			},
		},
	}, {
		name:    "a service with neither selector nor slices has no entry",
		docs:    []string{"apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n", podYAML("a", "10.0.0.1", "")},
		noEntry: true,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := build(map[string]string{"a.yaml": strings.Join(tt.docs, "---\n")})
			for _, p := range s.Problems {
				t.Errorf("unexpected problem: %s", brief(p))
			}
			svc := s.Service("default", "web")
			if svc == nil {
				t.Fatal("service default/web not loaded")
			}
			for _, sp := range svc.Ports {
				got := s.EndpointsFor("default", "web", sp.Port)
				if tt.noEntry {
					if got != nil {
						t.Errorf("port %d: want no entry, got %+v", sp.Port, got)
					}
					continue
				}
				if got == nil {
					t.Errorf("port %d: no entry", sp.Port)
					continue
				}
				want := tt.want[sp.Port]
				if want == nil {
					want = []model.Endpoint{}
				}
				if diff := cmp.Diff(want, got.Endpoints); diff != "" {
					t.Errorf("port %d endpoints (-want +got):\n%s", sp.Port, diff)
				}
			}
		})
	}
}

func TestEndpointSliceWarnings(t *testing.T) {
	s := build(map[string]string{"a.yaml": `
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: orphan
  labels: {kubernetes.io/service-name: gone}
addressType: IPv4
endpoints:
- addresses: ["10.0.0.1"]
  targetRef: {kind: Pod, name: missing}
`})
	want := []string{
		`a.yaml:5 warning metadata.labels: names service "gone", which is not defined in namespace default; the slice is unused`,
		`a.yaml:9 warning endpoints[0].targetRef.name: pod "missing" is not defined; the endpoint is treated as outside the mesh`,
	}
	if diff := cmp.Diff(want, briefs(s.Problems)); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
}
