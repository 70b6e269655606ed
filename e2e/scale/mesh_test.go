package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/minimesh/minimesh/discovery/file"
	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

var smallMesh = meshSpec{Services: 7, Namespaces: 3, Proxies: 10, Workloads: 4}

// loadMesh writes a mesh and reads it back with the file source's own
// Build, exactly as meshd will.
func loadMesh(t *testing.T, s meshSpec) (*generatedMesh, string, *model.Snapshot) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "config")
	g, err := writeMesh(dir, s)
	if err != nil {
		t.Fatal(err)
	}
	return g, dir, build(t, dir)
}

func build(t *testing.T, dir string) *model.Snapshot {
	t.Helper()
	files, err := file.ReadPaths(dir)
	if err != nil {
		t.Fatal(err)
	}
	snap := file.Build(files, file.Options{})
	for _, p := range snap.Problems {
		t.Errorf("generated manifests have a problem: %s", p.Error())
	}
	return snap
}

func TestWriteMeshLoadsCleanly(t *testing.T) {
	g, _, snap := loadMesh(t, smallMesh)

	if got, want := len(snap.Services), smallMesh.Services; got != want {
		t.Errorf("services = %d, want %d", got, want)
	}
	// Every service has exactly 4 ready, meshed endpoints.
	for i := range smallMesh.Services {
		se := snap.EndpointsFor(smallMesh.serviceNamespace(i), serviceName(i), servicePort)
		if se == nil {
			t.Errorf("service %s has no endpoints", serviceName(i))
			continue
		}
		if len(se.Endpoints) != endpointsPerService {
			t.Errorf("service %s has %d endpoints, want %d", serviceName(i), len(se.Endpoints), endpointsPerService)
		}
		for _, e := range se.Endpoints {
			if !e.Ready || !e.InMesh {
				t.Errorf("endpoint %s of %s: ready=%v inMesh=%v, want both", e.IP, serviceName(i), e.Ready, e.InMesh)
			}
		}
	}
	if got, want := len(snap.Workloads), smallMesh.Services*endpointsPerService+smallMesh.Proxies; got != want {
		t.Errorf("workloads = %d, want %d (service pods + one client pod per proxy)", got, want)
	}

	// Each proxy runs as a distinct pod that exists with the IP its node ID
	// claims, and the proxies are spread over exactly Workloads groups.
	if len(g.clients) != smallMesh.Proxies {
		t.Fatalf("clients = %d, want %d", len(g.clients), smallMesh.Proxies)
	}
	seen := map[string]bool{}
	apps := map[string]int{}
	for _, c := range g.clients {
		if seen[c.nodeID()] {
			t.Errorf("node ID %s is used twice", c.nodeID())
		}
		seen[c.nodeID()] = true
		w := snap.Workload(c.Namespace, c.Name)
		if w == nil {
			t.Errorf("client pod %s/%s is not in the mesh", c.Namespace, c.Name)
			continue
		}
		if w.IP != c.IP || !w.InMesh {
			t.Errorf("client pod %s/%s: ip=%s inMesh=%v, want ip=%s and in the mesh", c.Namespace, c.Name, w.IP, w.InMesh, c.IP)
		}
		if want := "sidecar~" + c.IP + "~" + c.Name + "." + c.Namespace + "~" + c.Namespace + ".svc.cluster.local"; c.nodeID() != want {
			t.Errorf("node ID = %s, want %s", c.nodeID(), want)
		}
		apps[w.Labels["app"]]++
	}
	if len(apps) != smallMesh.Workloads {
		t.Errorf("proxies are spread over %d workloads %v, want %d", len(apps), apps, smallMesh.Workloads)
	}
	for app, n := range apps {
		if n < smallMesh.Proxies/smallMesh.Workloads || n > smallMesh.Proxies/smallMesh.Workloads+1 {
			t.Errorf("workload %s has %d proxies; the spread should be even", app, n)
		}
	}

	// The policies the issue names: STRICT per namespace and an
	// AuthorizationPolicy, all accepted.
	if got := len(snap.Policies.PeerAuthentications); got != smallMesh.Namespaces+1 {
		t.Errorf("PeerAuthentications = %d, want %d (one per namespace plus mesh-wide)", got, smallMesh.Namespaces+1)
	}
	if got := len(snap.Policies.AuthorizationPolicies); got != smallMesh.Namespaces+1 {
		t.Errorf("AuthorizationPolicies = %d, want %d", got, smallMesh.Namespaces+1)
	}
	for _, pa := range snap.Policies.PeerAuthentications {
		want := policy.ModeStrict
		if pa.Namespace == "istio-system" {
			want = policy.ModePermissive
		}
		if pa.Spec.MTLS == nil || pa.Spec.MTLS.Mode != want {
			t.Errorf("PeerAuthentication %s/%s mtls = %+v, want mode %s", pa.Namespace, pa.Name, pa.Spec.MTLS, want)
		}
	}
}

func TestEndpointChangeAddsOneEndpoint(t *testing.T) {
	g, dir, before := loadMesh(t, smallMesh)
	ch := g.newEndpointChange(1, 5)
	if _, err := ch.apply(dir); err != nil {
		t.Fatal(err)
	}
	// The temporary file is gone: only the complete manifest is visible.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temporary file %s left in the config dir", e.Name())
		}
	}
	after := build(t, dir)

	ns := smallMesh.serviceNamespace(5)
	ips := func(s *model.Snapshot, svc int) []string {
		var out []string
		for _, e := range s.EndpointsFor(smallMesh.serviceNamespace(svc), serviceName(svc), servicePort).Endpoints {
			out = append(out, e.IP)
		}
		return out
	}
	want := append(ips(before, 5), ch.Pod.IP)
	slices.Sort(want)
	if diff := cmp.Diff(want, ips(after, 5)); diff != "" {
		t.Errorf("endpoints of %s/%s after the change (-want +got):\n%s", ns, serviceName(5), diff)
	}
	// Nothing else changed.
	for i := range smallMesh.Services {
		if i != 5 && !slices.Equal(ips(before, i), ips(after, i)) {
			t.Errorf("service %s changed too", serviceName(i))
		}
	}
	// The new address is unused.
	used := map[string]bool{}
	for _, w := range before.Workloads {
		used[w.IP] = true
	}
	if used[ch.Pod.IP] {
		t.Errorf("the change reuses address %s", ch.Pod.IP)
	}
}

func TestIPForIsDistinct(t *testing.T) {
	seen := map[string]int{}
	for n := range 200_000 {
		ip := ipFor(n)
		if prev, dup := seen[ip]; dup {
			t.Fatalf("ipFor(%d) = ipFor(%d) = %s", n, prev, ip)
		}
		seen[ip] = n
		if strings.HasSuffix(ip, ".0") || strings.HasSuffix(ip, ".255") {
			t.Fatalf("ipFor(%d) = %s ends in .0 or .255", n, ip)
		}
	}
}
