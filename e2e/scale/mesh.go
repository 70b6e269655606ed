package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// meshSpec is the size of the generated mesh.
type meshSpec struct {
	Services   int // backend services, each with endpointsPerService pods
	Namespaces int // the services and clients are spread over ns-0..ns-N-1
	Proxies    int // simulated sidecars, one per client pod
	Workloads  int // client deployments the proxies are spread over (proxy groups)
}

// endpointsPerService is fixed by the issue: S services × 4 endpoints.
const endpointsPerService = 4

// servicePort is the one HTTP port every service exposes; HTTP rather than
// TCP so every proxy also needs its route configuration over RDS.
const servicePort = 8080

// pod is a generated pod a simulated proxy can claim.
type pod struct {
	Namespace, Name, IP string
}

// nodeID is the pod's Istio sidecar node ID.
func (p pod) nodeID() string {
	return fmt.Sprintf("sidecar~%s~%s.%s~%s.svc.cluster.local", p.IP, p.Name, p.Namespace, p.Namespace)
}

// generatedMesh is what was written, so the harness knows which pods its
// proxies run as and which addresses are still free.
type generatedMesh struct {
	spec    meshSpec
	clients []pod // one per proxy, in proxy order
	nextIP  int   // the next unused address index
}

// ipFor turns an address index into a distinct 10.x.y.z address, never
// using .0 or .255 in the last octet so nothing looks like a network or
// broadcast address.
func ipFor(n int) string {
	return fmt.Sprintf("10.%d.%d.%d", 1+n/(250*250)%250, n/250%250, 1+n%250)
}

func namespaceName(i int) string { return fmt.Sprintf("ns-%d", i) }

func serviceName(i int) string { return fmt.Sprintf("svc-%04d", i) }

// serviceNamespace is where service i lives: round robin, so every
// namespace has about the same share.
func (s meshSpec) serviceNamespace(i int) string { return namespaceName(i % s.Namespaces) }

// edsName is the EDS resource name of service i's port, Istio's form.
func (s meshSpec) edsName(i int) string {
	return fmt.Sprintf("outbound|%d||%s.%s.svc.cluster.local", servicePort, serviceName(i), s.serviceNamespace(i))
}

// writeMesh writes the mesh as manifests into dir, one file per namespace
// (its Namespace, Services and Pods) plus one for policies, the way a user
// would lay out a config directory.
//
// The mesh has Services backend services with 4 pods each, and Workloads
// client deployments whose pods (Proxies in total) the simulated proxies
// run as. Clients are not behind a service, so the service endpoint count
// is exactly Services × 4 whatever the proxy count; every client still
// receives the full outbound configuration (all services), which is what
// dominates a sidecar's config.
func writeMesh(dir string, s meshSpec) (*generatedMesh, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating the config directory: %w", err)
	}
	g := &generatedMesh{spec: s}
	files := make([]strings.Builder, s.Namespaces)
	for n := range s.Namespaces {
		writeNamespace(&files[n], namespaceName(n))
	}
	for i := range s.Services {
		b := &files[i%s.Namespaces]
		ns, name := s.serviceNamespace(i), serviceName(i)
		writeService(b, ns, name)
		for r := range endpointsPerService {
			writePod(b, pod{Namespace: ns, Name: fmt.Sprintf("%s-%d", name, r), IP: ipFor(g.nextIP)}, name, name)
			g.nextIP++
		}
	}
	// Spread the proxies over the client workloads as evenly as possible.
	for p := range s.Proxies {
		w := p % s.Workloads
		ns := namespaceName(w % s.Namespaces)
		app := fmt.Sprintf("client-%02d", w)
		c := pod{Namespace: ns, Name: fmt.Sprintf("%s-%04d", app, p/s.Workloads), IP: ipFor(g.nextIP)}
		g.nextIP++
		writePod(&files[w%s.Namespaces], c, app, app)
		g.clients = append(g.clients, c)
	}
	for n := range s.Namespaces {
		path := filepath.Join(dir, namespaceName(n)+".yaml")
		if err := os.WriteFile(path, []byte(files[n].String()), 0o644); err != nil {
			return nil, fmt.Errorf("writing %s: %w", path, err)
		}
	}
	path := filepath.Join(dir, "policies.yaml")
	if err := os.WriteFile(path, []byte(policies(s)), 0o644); err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	return g, nil
}

// writeNamespace writes a plain namespace: the simulated proxies are the
// mesh, so no injection label (which minimesh would report as not acted
// on) is needed.
func writeNamespace(b *strings.Builder, name string) {
	fmt.Fprintf(b, `apiVersion: v1
kind: Namespace
metadata:
  name: %s
`, name)
}

func writeService(b *strings.Builder, ns, name string) {
	fmt.Fprintf(b, `---
apiVersion: v1
kind: Service
metadata:
  name: %s
  namespace: %s
spec:
  selector:
    app: %s
  ports:
  - name: http
    port: %d
    targetPort: %d
`, name, ns, name, servicePort, servicePort)
}

// writePod writes a meshed, ready pod of app running as serviceAccount.
func writePod(b *strings.Builder, p pod, app, serviceAccount string) {
	fmt.Fprintf(b, `---
apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: %s
  labels:
    app: %s
    version: v1
    security.istio.io/tlsMode: istio
spec:
  serviceAccountName: %s
  containers:
  - name: app
    image: minimesh/scale:dev
    ports:
    - name: http
      containerPort: %d
status:
  podIP: %s
  conditions:
  - type: Ready
    status: "True"
`, p.Name, p.Namespace, app, serviceAccount, servicePort, p.IP)
}

// policies are the few a real mesh has: STRICT mTLS in every namespace
// (PERMISSIVE mesh-wide), an ALLOW policy per namespace that lets in only
// GETs from meshed callers of the same namespace, and one DENY on a single
// service. They make every proxy's inbound side carry RBAC filters.
func policies(s meshSpec) string {
	var b strings.Builder
	b.WriteString(`apiVersion: v1
kind: Namespace
metadata:
  name: istio-system
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
spec:
  mtls:
    mode: PERMISSIVE
`)
	for n := range s.Namespaces {
		ns := namespaceName(n)
		fmt.Fprintf(&b, `---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: %s
spec:
  mtls:
    mode: STRICT
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-same-namespace-get
  namespace: %s
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        namespaces: ["%s"]
    to:
    - operation:
        methods: ["GET", "HEAD"]
`, ns, ns, ns)
	}
	fmt.Fprintf(&b, `---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-delete
  namespace: %s
spec:
  selector:
    matchLabels:
      app: %s
  action: DENY
  rules:
  - to:
    - operation:
        methods: ["DELETE"]
`, s.serviceNamespace(0), serviceName(0))
	return b.String()
}

// endpointChange is one added pod behind an existing service: the
// smallest change that alters exactly one EDS resource.
type endpointChange struct {
	Service int
	File    string // the manifest's file name in the config dir
	Pod     pod
}

// newEndpointChange allocates a new pod behind service svc for round.
func (g *generatedMesh) newEndpointChange(round, svc int) endpointChange {
	c := endpointChange{
		Service: svc,
		File:    fmt.Sprintf("scale-change-%d.yaml", round),
		Pod: pod{
			Namespace: g.spec.serviceNamespace(svc),
			Name:      fmt.Sprintf("%s-added-%d", serviceName(svc), round),
			IP:        ipFor(g.nextIP),
		},
	}
	g.nextIP++
	return c
}

// manifest is the change's file content.
func (c endpointChange) manifest() []byte {
	var b strings.Builder
	writePod(&b, c.Pod, serviceName(c.Service), serviceName(c.Service))
	return []byte(b.String())
}

// apply writes the change into dir atomically: meshd's file source skips
// hidden files, so it only ever sees the complete file after the rename.
// It returns the moment of the rename, from which convergence is measured.
func (c endpointChange) apply(dir string) (renamedAt int64, err error) {
	tmp := filepath.Join(dir, "."+c.File+".tmp")
	if err := os.WriteFile(tmp, c.manifest(), 0o644); err != nil {
		return 0, fmt.Errorf("writing the endpoint change: %w", err)
	}
	renamedAt = nowNanos()
	if err := os.Rename(tmp, filepath.Join(dir, c.File)); err != nil {
		return 0, fmt.Errorf("publishing the endpoint change: %w", err)
	}
	return renamedAt, nil
}
