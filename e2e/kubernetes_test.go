package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	kubesource "github.com/minimesh/minimesh/discovery/kubernetes"
	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/e2e/harness"
	"github.com/minimesh/minimesh/e2e/kubeenv"
	"github.com/minimesh/minimesh/xds/xdstest"
)

// tokenAudience is the audience meshd accepts (its default, Istio's).
const tokenAudience = "istio-ca"

// kpod is one pod of the Kubernetes e2e: an object in the API server and,
// once started, a process in a network namespace of its own.
type kpod struct {
	name, namespace, sa, app, role string
	host                           int // last octet of its IP
	ports                          []int32
	inMesh                         bool

	ip, netns, tokenFile string
}

// kubeMesh is meshd running against a real API server, with workloads in
// network namespaces.
type kubeMesh struct {
	t          *testing.T
	env        *kubeenv.Env
	admin      kubernetes.Interface
	net        *podNet
	dir        string
	xdsAddr    string
	monitoring string
	meshd      *kproc
}

// TestKubernetes runs meshd against a real kube-apiserver and etcd, with
// the demo workloads as proxyless gRPC processes under `meshctl agent` in
// network namespaces the test creates, and checks with real traffic what
// issue 6 asks: services and endpoints appear; scaling reaches clients; an
// invalid custom resource is reported on the object and disturbs nothing;
// an API server and etcd restart wipes no proxy's config and changes made
// around it arrive; STRICT and then an AuthorizationPolicy change
// behaviour live. Token checks (TokenRequest tokens, wrong audience,
// expired, another service account's secrets) use an Envoy-like ADS
// client, which shows the gRPC status codes.
//
// The product gateway of the seeds (a workload that is both an xDS server
// and an xDS client of two services) is not run here: direct calls from
// in-mesh clients cover the Kubernetes checks, and TestDemoScenarios runs
// the gateway under `meshctl agent` against the file source.
func TestKubernetes(t *testing.T) {
	pn := newPodNet(t)
	env := kubeenv.Start(t)
	ctx := t.Context()
	m := &kubeMesh{t: t, env: env, admin: env.Client(), net: pn}
	var err error
	if m.dir, err = os.MkdirTemp("", "minimesh-e2e-kube-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("work directory kept for inspection: %s (process logs in %s)", m.dir, filepath.Join(m.dir, "logs"))
			return
		}
		_ = os.RemoveAll(m.dir)
	})

	if err := env.Apply(ctx, kubesource.CRDs(), kubeenv.ApplyOptions{}); err != nil {
		t.Fatalf("apply the CRDs: %v", err)
	}
	for _, ns := range []string{"default", "test", "istio-system"} {
		if _, err := m.admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
			metav1.CreateOptions{}); err != nil && !strings.Contains(err.Error(), "already exists") {
			t.Fatal(err)
		}
	}
	product := &kpod{name: "product-0", namespace: "default", sa: "product", app: "product", role: "product", host: 12, ports: []int32{8080}, inMesh: true}
	stock := &kpod{name: "stock-0", namespace: "default", sa: "stock", app: "stock", role: "stock", host: 13, ports: []int32{8080, 8081}, inMesh: true}
	tester := &kpod{name: "tester", namespace: "default", sa: "tester", app: "tester", host: 14, inMesh: true}
	intruder := &kpod{name: "intruder", namespace: "default", sa: "intruder", app: "intruder", host: 17, inMesh: true}
	curl := &kpod{name: "curl", namespace: "test", sa: "default", app: "curl", host: 21}
	for _, p := range []*kpod{product, stock, tester, intruder, curl} {
		m.createPod(t, p)
	}
	m.service("product", 8080)
	m.service("stock", 8080, 8081)
	m.slice(t, "product", []int32{8080}, product)
	m.slice(t, "stock", []int32{8080, 8081}, stock)

	m.startMeshd()
	for _, p := range []*kpod{product, stock} {
		m.startWorkload(t, p)
	}

	const (
		productTarget = "xds:///product.default.svc.cluster.local:8080"
		stockTarget   = "xds:///stock.default.svc.cluster.local:8080"
	)
	testerID := spiffe("default", "tester")

	t.Run("services and endpoints appear", func(t *testing.T) {
		r := m.eventually(t, "tester → product", tester, productTarget, getProduct, func(r harness.Result) bool { return r.OK })
		if r.PeerSeenByServer != testerID || r.ServerSPIFFEID != spiffe("default", "product") {
			t.Errorf("tester → product: server saw %q and presented %q; want mTLS between %s and %s",
				r.PeerSeenByServer, r.ServerSPIFFEID, testerID, spiffe("default", "product"))
		}
		m.eventually(t, "tester → stock", tester, stockTarget, getStock, func(r harness.Result) bool {
			return r.OK && r.PeerSeenByServer == testerID
		})
		// PERMISSIVE by default: a pod outside the mesh reaches product in plaintext.
		m.eventually(t, "curl → product in plaintext", curl, product.ip+":8080", getProduct, func(r harness.Result) bool {
			return r.OK && r.PeerSeenByServer == ""
		})
	})

	t.Run("a token for one service account works and cannot fetch another's secrets", func(t *testing.T) {
		m.checkTokens(t, tester, product)
	})

	t.Run("scaling reaches clients", func(t *testing.T) {
		product1 := &kpod{name: "product-1", namespace: "default", sa: "product", app: "product", role: "product", host: 15, ports: []int32{8080}, inMesh: true}
		m.createPod(t, product1)
		m.startWorkload(t, product1)
		m.slice(t, "product", []int32{8080}, product, product1)
		m.eventually(t, "a call answered by product-1", tester, productTarget, getProduct, func(r harness.Result) bool {
			return r.OK && r.Answer["pod"] == "product-1"
		})
	})

	t.Run("an invalid custom resource is reported on the object and disturbs nothing", func(t *testing.T) {
		// Valid for the CRD schema, invalid for minimesh: * in the middle.
		// Were it applied in any form, tester would be refused.
		m.apply(t, `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad-principal, namespace: default}
spec:
  selector: {matchLabels: {app: product}}
  action: DENY
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/*/sa/tester"]
---
# A valid policy in the same change: once it is in force, so is whatever
# meshd made of the invalid one.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: canary, namespace: default}
spec:
  selector: {matchLabels: {app: product}}
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/demo.v1.Product/UpdateProduct"]
`)
		ev := m.waitEvent(t, "default", "bad-principal")
		if ev.Type != corev1.EventTypeWarning || ev.Reason != kubesource.ReasonInvalidPolicy || ev.Source.Component != "minimesh" ||
			!strings.Contains(ev.Message, "principals") {
			t.Errorf("event %s %s from %q: %q; want a Warning %s from minimesh naming the principals field",
				ev.Type, ev.Reason, ev.Source.Component, ev.Message, kubesource.ReasonInvalidPolicy)
		}
		m.eventually(t, "the canary policy in force", tester, productTarget, "demo.v1.Product/UpdateProduct", func(r harness.Result) bool {
			return r.Code == "PermissionDenied" && strings.Contains(r.Message, "canary")
		})
		if r := m.call(t, tester, productTarget, getProduct); !r.OK {
			t.Errorf("with an invalid DENY policy in the cluster, tester → product = %s %s; want OK (the invalid policy is skipped)", r.Code, r.Message)
		}
		m.delete(t, "authorizationpolicies", "security.istio.io", "default", "bad-principal")
		m.delete(t, "authorizationpolicies", "security.istio.io", "default", "canary")
	})

	t.Run("an API server and etcd restart wipes no proxy's config", func(t *testing.T) {
		// A long-lived agent, like a sidecar that was running before the
		// outage; the one-shot clients below talk xDS through it.
		agentDir := m.startAgent(t, tester)
		// Minted while the API server can still issue it.
		token := m.token(t, tester)
		env.StopAPIServer()
		env.StopEtcd()
		// Proxies keep their streams to meshd, and meshd its last
		// snapshot: listeners, clusters, endpoints and certificates stay.
		time.Sleep(2 * time.Second)
		for _, c := range []struct{ target, method string }{{productTarget, getProduct}, {stockTarget, getStock}} {
			r := m.callVia(t, tester, agentDir, c.target, c.method)
			if !r.OK || r.PeerSeenByServer != testerID {
				t.Errorf("during the outage, tester → %s = %s %s (peer %q); want OK over mTLS", c.target, r.Code, r.Message, r.PeerSeenByServer)
			}
		}
		if r := m.callPlain(t, curl, product.ip+":8080", getProduct); !r.OK {
			t.Errorf("during the outage, curl → product (PERMISSIVE) = %s %s; want OK", r.Code, r.Message)
		}
		// The calls above went through new upstream streams (the agent
		// opens one per workload connection), accepted on the strength of
		// the token's review before the outage. A token never reviewed
		// cannot be accepted meanwhile.
		code := m.adsStatus(t, tester, token)
		t.Logf("a new xDS stream with a token never reviewed, while the API server is down, ends with %s", code)
		if code == codes.OK {
			t.Errorf("a new stream was accepted although its token cannot be reviewed")
		}
		if err := env.StartEtcd(); err != nil {
			t.Fatal(err)
		}
		if err := env.StartAPIServer(); err != nil {
			t.Fatal(err)
		}
		// A change made once the API server is back arrives after the
		// informers reconnect: a new stock replica takes traffic, seen
		// by the agent that lived through the outage.
		stock1 := &kpod{name: "stock-1", namespace: "default", sa: "stock", app: "stock", role: "stock", host: 16, ports: []int32{8080, 8081}, inMesh: true}
		m.createPod(t, stock1)
		m.startWorkload(t, stock1)
		m.slice(t, "stock", []int32{8080, 8081}, stock, stock1)
		deadline := time.Now().Add(45 * time.Second)
		for {
			r := m.callVia(t, tester, agentDir, stockTarget, getStock)
			if r.OK && r.Answer["pod"] == "stock-1" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("stock-1 never answered through the agent that lived through the outage; last %+v\nmeshd log:\n%s", r, m.meshd.logTail())
			}
			time.Sleep(300 * time.Millisecond)
		}
	})

	t.Run("STRICT then an AuthorizationPolicy change behaviour live", func(t *testing.T) {
		m.apply(t, `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: STRICT}
`)
		m.eventually(t, "curl → product refused under STRICT", curl, product.ip+":8080", getProduct, func(r harness.Result) bool { return !r.OK })
		for _, from := range []*kpod{tester, intruder} {
			if r := m.call(t, from, productTarget, getProduct); !r.OK || r.PeerSeenByServer != spiffe("default", from.sa) {
				t.Errorf("under STRICT, %s → product = %s %s (peer %q); want OK over mTLS", from.name, r.Code, r.Message, r.PeerSeenByServer)
			}
		}

		m.apply(t, `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: product-from-tester, namespace: default}
spec:
  selector: {matchLabels: {app: product}}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/tester"]
`)
		m.eventually(t, "intruder → product denied", intruder, productTarget, getProduct, func(r harness.Result) bool {
			return !r.OK && r.Code == codes.PermissionDenied.String()
		})
		if r := m.call(t, tester, productTarget, getProduct); !r.OK || r.PeerSeenByServer != testerID {
			t.Errorf("with the AuthorizationPolicy, tester → product = %s %s; want OK", r.Code, r.Message)
		}
		// Stock has no policy: the intruder still reaches it.
		if r := m.call(t, intruder, stockTarget, getStock); !r.OK {
			t.Errorf("intruder → stock (no policy) = %s %s; want OK", r.Code, r.Message)
		}
	})
}

func spiffe(ns, sa string) string { return "spiffe://cluster.local/ns/" + ns + "/sa/" + sa }

// createPod creates p's ServiceAccount and Pod and sets the pod's status to
// Running and Ready with its IP, as a kubelet would.
func (m *kubeMesh) createPod(t *testing.T, p *kpod) {
	t.Helper()
	ctx := t.Context()
	p.ip = m.net.IP(p.host)
	if _, err := m.admin.CoreV1().ServiceAccounts(p.namespace).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: p.sa},
	}, metav1.CreateOptions{}); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("create service account %s/%s: %v", p.namespace, p.sa, err)
	}
	labels := map[string]string{"app": p.app, "version": "v1"}
	if p.inMesh {
		labels[model.LabelTLSMode] = model.TLSModeIstio
	}
	c := corev1.Container{Name: "app", Image: "minimesh/example-" + p.app + ":dev"}
	for i, port := range p.ports {
		c.Ports = append(c.Ports, corev1.ContainerPort{Name: portName(i), ContainerPort: port})
	}
	pod, err := m.admin.CoreV1().Pods(p.namespace).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.name, Labels: labels},
		Spec:       corev1.PodSpec{ServiceAccountName: p.sa, Containers: []corev1.Container{c}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s/%s: %v", p.namespace, p.name, err)
	}
	pod.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: p.ip, PodIPs: []corev1.PodIP{{IP: p.ip}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
	}
	if _, err := m.admin.CoreV1().Pods(p.namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("set the status of pod %s/%s: %v", p.namespace, p.name, err)
	}
	p.netns = m.net.AddPod(t, p.ip)
	p.tokenFile = filepath.Join(m.dir, "token-"+p.name)
	if err := os.WriteFile(p.tokenFile, []byte(m.token(t, p)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// portName names container and service ports as examples/mesh does.
func portName(i int) string {
	if i == 0 {
		return "grpc"
	}
	return "grpc-legacy"
}

// token is a TokenRequest token of p's service account for meshd's audience.
func (m *kubeMesh) token(t *testing.T, p *kpod) string {
	t.Helper()
	exp := int64(3600)
	tr, err := m.admin.CoreV1().ServiceAccounts(p.namespace).CreateToken(t.Context(), p.sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{tokenAudience}, ExpirationSeconds: &exp},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("request a token for %s/%s: %v", p.namespace, p.sa, err)
	}
	return tr.Status.Token
}

// service creates default/name selecting app=name, one port per number.
func (m *kubeMesh) service(name string, ports ...int32) {
	m.t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": name}},
	}
	grpcProto := "grpc"
	for i, p := range ports {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{
			Name: portName(i), Port: p, TargetPort: intstr.FromString(portName(i)), AppProtocol: &grpcProto,
		})
	}
	if _, err := m.admin.CoreV1().Services("default").Create(m.t.Context(), svc, metav1.CreateOptions{}); err != nil {
		m.t.Fatalf("create service default/%s: %v", name, err)
	}
}

// slice creates or replaces the EndpointSlice of default/svc with the
// given pods as ready endpoints, as the EndpointSlice controller would.
func (m *kubeMesh) slice(t *testing.T, svc string, ports []int32, pods ...*kpod) {
	t.Helper()
	ctx := t.Context()
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: svc + "-e2e", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for i, p := range ports {
		sl.Ports = append(sl.Ports, discoveryv1.EndpointPort{Name: ptr(portName(i)), Port: ptr(p)})
	}
	for _, p := range pods {
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{p.ip},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(true), Serving: ptr(true), Terminating: ptr(false)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: p.namespace, Name: p.name},
		})
	}
	slices := m.admin.DiscoveryV1().EndpointSlices("default")
	old, err := slices.Get(ctx, sl.Name, metav1.GetOptions{})
	if err == nil {
		sl.ResourceVersion = old.ResourceVersion
		_, err = slices.Update(ctx, sl, metav1.UpdateOptions{})
	} else {
		_, err = slices.Create(ctx, sl, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatalf("write the EndpointSlice of default/%s: %v", svc, err)
	}
}

func ptr[T any](v T) *T { return &v }

// apply applies a manifest as the admin.
func (m *kubeMesh) apply(t *testing.T, manifest string) {
	t.Helper()
	if err := m.env.Apply(t.Context(), []byte(manifest), kubeenv.ApplyOptions{}); err != nil {
		t.Fatalf("apply: %v\n%s", err, manifest)
	}
}

func (m *kubeMesh) delete(t *testing.T, resource, group, ns, name string) {
	t.Helper()
	path := fmt.Sprintf("/apis/%s/v1/namespaces/%s/%s/%s", group, ns, resource, name)
	if err := m.admin.CoreV1().RESTClient().Delete().AbsPath(path).Do(t.Context()).Error(); err != nil {
		t.Fatalf("delete %s: %v", path, err)
	}
}

// startMeshd runs `meshd serve --kubeconfig` as service account
// minimesh-system/meshd bound to the ClusterRole of rbac.yaml (so the
// test proves that RBAC is enough), listening for xDS on the pod
// network's gateway address, and waits for /readyz.
func (m *kubeMesh) startMeshd() {
	t, ctx := m.t, m.t.Context()
	t.Helper()
	m.apply(t, string(kubesource.RBAC())+kubeenv.MeshdAccount+kubeenv.MeshdBinding)
	exp := int64(3600)
	tr, err := m.admin.CoreV1().ServiceAccounts("minimesh-system").CreateToken(ctx, "meshd",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rc := m.env.RESTConfig()
	kubeconfig := filepath.Join(m.dir, "meshd.kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q, certificate-authority: %q}}]
users: [{name: meshd, user: {token: %q}}]
contexts: [{name: c, context: {cluster: c, user: meshd}}]
current-context: c
`, rc.Host, rc.CAFile, tr.Status.Token)
	if err := os.WriteFile(kubeconfig, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	m.xdsAddr = freeAddrOn(t, m.net.Gateway())
	m.monitoring = freeAddrOn(t, "127.0.0.1")
	m.meshd = startProc(t, t, m.dir, "meshd", "", bins.Meshd, "serve",
		"--kubeconfig", kubeconfig,
		"--ca-dir", filepath.Join(m.dir, "ca"),
		"--xds-addr", m.xdsAddr,
		"--monitoring-addr", m.monitoring,
		// No ValidatingWebhookConfiguration points here: this test is
		// about discovery (TestKubernetesWebhook covers the webhook).
		"--webhook-addr", "127.0.0.1:0",
		"--debounce-after", "50ms", "--debounce-max", "500ms",
	)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if code, _ := httpGet("http://" + m.monitoring + "/readyz"); code == http.StatusOK {
			return
		}
		if m.meshd.exited() || time.Now().After(deadline) {
			t.Fatalf("meshd did not become ready:\n%s", m.meshd.logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freeAddrOn(t *testing.T, host string) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("finding a free port on %s: %v", host, err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}

func httpGet(url string) (int, string) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// agentArgs is `meshctl agent` for p in its namespace, authenticating with
// its service-account token.
func (m *kubeMesh) agentArgs(p *kpod, certDir string) []string {
	return []string{bins.Meshctl, "agent", "--pod", p.name, "--namespace", p.namespace, "--ip", p.ip,
		"--xds-address", m.xdsAddr, "--token-file", p.tokenFile, "--cert-dir", certDir, "--log-level", "warn", "--"}
}

// startWorkload runs p's demo role under `meshctl agent` in p's namespace.
func (m *kubeMesh) startWorkload(t *testing.T, p *kpod) {
	t.Helper()
	certDir, err := os.MkdirTemp(m.dir, "certs-"+p.name+"-")
	if err != nil {
		t.Fatal(err)
	}
	var ports []string
	for _, port := range p.ports {
		ports = append(ports, strconv.Itoa(int(port)))
	}
	argv := append(m.agentArgs(p, certDir), bins.App, "--role", p.role, "--ip", p.ip, "--ports", strings.Join(ports, ","))
	startProc(t, m.t, m.dir, p.name, p.netns, argv[0], argv[1:]...)
}

// call makes one call from p: through a fresh agent when p is in the mesh,
// in plaintext otherwise.
func (m *kubeMesh) call(t *testing.T, from *kpod, target, method string) harness.Result {
	t.Helper()
	if !from.inMesh {
		return m.callPlain(t, from, target, method)
	}
	certDir, err := os.MkdirTemp(m.dir, "certs-"+from.name+"-")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(certDir) }()
	return m.run(t, from, target, method, append(m.agentArgs(from, certDir), m.client(from, target, method)...))
}

// callPlain calls from p in plaintext, as a pod without a proxy.
func (m *kubeMesh) callPlain(t *testing.T, from *kpod, target, method string) harness.Result {
	t.Helper()
	return m.run(t, from, target, method, append(m.client(from, target, method), "--plaintext"))
}

// callVia calls from p through the long-lived agent whose cert dir (and
// bootstrap) is agentDir.
func (m *kubeMesh) callVia(t *testing.T, from *kpod, agentDir, target, method string) harness.Result {
	t.Helper()
	argv := append([]string{"env", "GRPC_XDS_BOOTSTRAP=" + filepath.Join(agentDir, "grpc-bootstrap.json")}, m.client(from, target, method)...)
	return m.run(t, from, target, method, argv)
}

func (m *kubeMesh) client(from *kpod, target, method string) []string {
	return []string{bins.App, "--role", "client", "--ip", from.ip, "--target", target, "--method", method,
		"--timeout", "3s", "--log-level", "error"}
}

func (m *kubeMesh) run(t *testing.T, from *kpod, target, method string, argv []string) harness.Result {
	t.Helper()
	r, stderr, err := runCall(t.Context(), from.netns, argv)
	if err != nil {
		t.Fatalf("%s → %s %s: %v\nmeshd log:\n%s", from.name, target, method, err, m.meshd.logTail())
	}
	if !r.OK {
		t.Logf("%s → %s %s: %s %s (client stderr: %s)", from.name, target, method, r.Code, r.Message, strings.TrimSpace(stderr))
	}
	return r
}

// startAgent runs a long-lived `meshctl agent` for p (no command: it keeps
// p's certificates and relays xDS for workloads pointed at its bootstrap)
// and returns its cert dir once the bootstrap is written.
func (m *kubeMesh) startAgent(t *testing.T, p *kpod) string {
	t.Helper()
	certDir, err := os.MkdirTemp(m.dir, "agent-"+p.name+"-")
	if err != nil {
		t.Fatal(err)
	}
	args := m.agentArgs(p, certDir)
	args = args[:len(args)-1] // no "--": no command
	proc := startProc(t, t, m.dir, p.name+"-agent", p.netns, args[0], args[1:]...)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(certDir, "grpc-bootstrap.json")); err == nil {
			if _, err := os.Stat(filepath.Join(certDir, "cert-chain.pem")); err == nil {
				return certDir
			}
		}
		if proc.exited() || time.Now().After(deadline) {
			t.Fatalf("the agent of %s did not write its bootstrap and certificate:\n%s", p.name, proc.logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// eventually repeats a call until ok holds: configuration changes reach
// workloads after a debounce and an xDS push.
func (m *kubeMesh) eventually(t *testing.T, what string, from *kpod, target, method string, ok func(harness.Result) bool) harness.Result {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		r := m.call(t, from, target, method)
		if ok(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last result %+v\nmeshd log:\n%s", what, r, m.meshd.logTail())
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func (m *kubeMesh) waitEvent(t *testing.T, ns, name string) corev1.Event {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		evs, err := m.admin.CoreV1().Events(ns).List(t.Context(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
		if err == nil && len(evs.Items) > 0 {
			return evs.Items[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Event on %s/%s after 30s (last error %v)\nmeshd log:\n%s", ns, name, err, m.meshd.logTail())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// nodeID is the Istio-style node ID a sidecar of p sends.
func nodeID(p *kpod) string {
	return fmt.Sprintf("sidecar~%s~%s.%s~%s.svc.cluster.local", p.ip, p.name, p.namespace, p.namespace)
}

// ads opens an Envoy-like ADS stream to meshd as node p with token.
func (m *kubeMesh) ads(t *testing.T, ctx context.Context, p *kpod, token string) *xdstest.Client {
	t.Helper()
	conn, err := grpc.NewClient(m.xdsAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return xdstest.Start(ctx, conn, xdstest.Options{NodeID: nodeID(p), Token: token})
}

// adsStatus is the gRPC code a stream as p with token ends with, or OK if
// it is still open and holds a complete configuration after a while.
func (m *kubeMesh) adsStatus(t *testing.T, p *kpod, token string) codes.Code {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c := m.ads(t, ctx, p, token)
	_ = c.WaitFor(ctx, func() bool { return c.Complete() == nil })
	select {
	case <-c.Done():
		return status.Code(c.Err())
	default:
		if c.Complete() == nil {
			return codes.OK
		}
		return codes.DeadlineExceeded
	}
}

// checkTokens checks TokenReview authentication with tokens the API
// server issued (and one it would issue, but expired).
func (m *kubeMesh) checkTokens(t *testing.T, self, other *kpod) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	own := m.token(t, self)

	c := m.ads(t, ctx, self, own)
	if err := c.WaitFor(ctx, func() bool { return c.Complete() == nil && len(c.Resources(xdstest.SDS)) > 0 }); err != nil {
		t.Fatalf("as %s with its own token: %v (stream error %v)\nmeshd log:\n%s", self.name, err, c.Err(), m.meshd.logTail())
	}
	for name, res := range c.Resources(xdstest.SDS) {
		if name != "default" {
			continue
		}
		cert := res.(*tlsv3.Secret).GetTlsCertificate().GetCertificateChain().GetInlineBytes()
		if !certHasURI(t, cert, spiffe(self.namespace, self.sa)) {
			t.Errorf("secret default for %s does not carry %s", self.name, spiffe(self.namespace, self.sa))
		}
	}

	wrongAudience := func() string {
		exp := int64(3600)
		tr, err := m.admin.CoreV1().ServiceAccounts(self.namespace).CreateToken(ctx, self.sa, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}, // the API server's own audience
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}()
	tests := []struct {
		name  string
		as    *kpod
		token string
		want  codes.Code
	}{
		{"another service account's pod, with this token", other, own, codes.PermissionDenied},
		{"no token", self, "", codes.Unauthenticated},
		{"a token for the API server's audience, not istio-ca", self, wrongAudience, codes.Unauthenticated},
		{"an expired token", self, expiredToken(t, m.env, self), codes.Unauthenticated},
		{"a token that is not a JWT", self, "not-a-token", codes.Unauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := m.adsStatus(t, tt.as, tt.token); got != tt.want {
				t.Errorf("stream as %s ended with %s, want %s", tt.as.name, got, tt.want)
			}
		})
	}
}
