// Package kubeenv starts a real etcd and kube-apiserver on loopback for
// tests, with their own ports and data directory, and stops them when the
// test ends.
//
// There is no container runtime on the machines minimesh is tested on, so
// kind and envtest images are out; the binaries are built from the Go module
// proxy by e2e/kube/build.sh and cached by version. Tests that need them
// call Start, which skips the test with the build command when they are
// missing (the Makefile's test target builds them first, so CI never skips).
//
// The API server runs with RBAC, a static admin token in system:masters, and
// a service-account issuer whose RSA signing key the test can read (to mint
// tokens the API server will judge, such as expired ones). There is no
// controller-manager and no kubelet: tests create EndpointSlices and set pod
// status themselves, and ServiceAccounts are not created automatically.
package kubeenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// KubeVersion is the Kubernetes release that e2e/kube/build.sh builds.
const KubeVersion = "v1.34.10"

// Issuer is the service-account token issuer the API server is started
// with; it is also its default API audience.
const Issuer = "https://kubernetes.default.svc.cluster.local"

// readyTimeout bounds how long Start and the restart methods wait for a
// process to become ready. A cold start takes a few seconds on two cores;
// the margin covers a machine busy with other builds.
const readyTimeout = 90 * time.Second

// stopTimeout is how long a process gets to exit after SIGTERM before it is
// killed.
const stopTimeout = 15 * time.Second

// BinDir returns the directory holding etcd and kube-apiserver: the
// environment variable MINIMESH_KUBE_BIN if set, otherwise the cache that
// e2e/kube/build.sh writes, ${MINIMESH_CACHE:-$HOME/.cache/minimesh}/kube-<version>.
func BinDir() string {
	if d := os.Getenv("MINIMESH_KUBE_BIN"); d != "" {
		return d
	}
	cache := os.Getenv("MINIMESH_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = os.TempDir()
		}
		cache = filepath.Join(home, ".cache", "minimesh")
	}
	return filepath.Join(cache, "kube-"+KubeVersion)
}

// Env is one running etcd + kube-apiserver pair.
type Env struct {
	t      testing.TB
	binDir string
	dir    string

	etcdPort, etcdPeerPort, apiPort int

	adminToken string
	saKey      *rsa.PrivateKey

	mu        sync.Mutex
	etcd      *process
	apiserver *process
	cfg       *rest.Config
	kubecfg   string
}

// Start starts etcd and kube-apiserver and waits until the API server
// reports /readyz. Both are stopped, and their data removed, when the test
// and its subtests finish. A test whose binaries are missing is skipped with
// the command that builds them.
func Start(t testing.TB) *Env {
	t.Helper()
	bin := BinDir()
	for _, name := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(bin, name)); err != nil {
			t.Skipf("kube-apiserver tests need %s; build it with `e2e/kube/build.sh` (or `make kube-bins`), "+
				"or point MINIMESH_KUBE_BIN at a directory holding etcd and kube-apiserver", filepath.Join(bin, name))
		}
	}

	// Not t.TempDir: the data must outlive a failed stop long enough for the
	// log tail to be printed, and etcd's directory must be 0700.
	dir, err := os.MkdirTemp("", "minimesh-kubeenv-")
	if err != nil {
		t.Fatalf("kubeenv: create a data directory: %v", err)
	}
	e := &Env{t: t, binDir: bin, dir: dir}
	t.Cleanup(e.cleanup)

	ports, err := freePorts(3)
	if err != nil {
		t.Fatalf("kubeenv: %v", err)
	}
	e.etcdPort, e.etcdPeerPort, e.apiPort = ports[0], ports[1], ports[2]

	if err := e.writeCredentials(); err != nil {
		t.Fatalf("kubeenv: %v", err)
	}
	if err := e.StartEtcd(); err != nil {
		t.Fatalf("kubeenv: %v", err)
	}
	if err := e.StartAPIServer(); err != nil {
		t.Fatalf("kubeenv: %v", err)
	}
	return e
}

// RESTConfig returns a copy of the admin client configuration (static token
// in system:masters, the API server's self-signed CA).
func (e *Env) RESTConfig() *rest.Config {
	e.mu.Lock()
	defer e.mu.Unlock()
	return rest.CopyConfig(e.cfg)
}

// Kubeconfig returns the path of a kubeconfig file for the admin user, for
// kubectl and for code that takes --kubeconfig.
func (e *Env) Kubeconfig() string { return e.kubecfg }

// Client returns a clientset for the admin user.
func (e *Env) Client() kubernetes.Interface {
	c, err := kubernetes.NewForConfig(e.RESTConfig())
	if err != nil {
		e.t.Fatalf("kubeenv: build a clientset: %v", err)
	}
	return c
}

// ServiceAccountSigningKey returns the key the API server signs and checks
// service-account tokens with, so tests can mint tokens it must judge
// (expired, wrong audience) without waiting for real ones to age.
func (e *Env) ServiceAccountSigningKey() *rsa.PrivateKey { return e.saKey }

// Dir returns the data directory (logs are in Dir()/etcd.log and
// Dir()/kube-apiserver.log).
func (e *Env) Dir() string { return e.dir }

// StartEtcd starts etcd on the environment's ports and data directory,
// keeping any data from a previous run, and waits until it serves.
func (e *Env) StartEtcd() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.etcd != nil {
		return errors.New("etcd is already running")
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", e.etcdPort)
	peer := fmt.Sprintf("http://127.0.0.1:%d", e.etcdPeerPort)
	p, err := startProcess(filepath.Join(e.binDir, "etcd"), filepath.Join(e.dir, "etcd.log"),
		"--name=kubeenv",
		"--data-dir="+filepath.Join(e.dir, "etcd"),
		"--listen-client-urls="+client,
		"--advertise-client-urls="+client,
		"--listen-peer-urls="+peer,
		"--initial-advertise-peer-urls="+peer,
		"--initial-cluster=kubeenv="+peer,
		// Tests do not need durability, and fsync on a shared disk is the
		// slowest part of etcd.
		"--unsafe-no-fsync",
		"--log-level=warn",
	)
	if err != nil {
		return err
	}
	e.etcd = p
	health := &http.Client{Timeout: 2 * time.Second}
	if err := waitFor(p, readyTimeout, func() error {
		resp, err := health.Get(client + "/health")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/health: %s: %s", resp.Status, body)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("etcd did not become healthy: %w\n%s", err, p.logTail())
	}
	return nil
}

// StopEtcd stops etcd (SIGTERM, then SIGKILL); its data stays for StartEtcd.
func (e *Env) StopEtcd() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.etcd != nil {
		e.etcd.stop(e.t)
		e.etcd = nil
	}
}

// StartAPIServer starts kube-apiserver on the environment's port and waits
// until /readyz succeeds. After StopAPIServer it comes back on the same port
// with the same serving certificate and signing key, so existing clients and
// tokens keep working.
func (e *Env) StartAPIServer() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.apiserver != nil {
		return errors.New("kube-apiserver is already running")
	}
	certDir := filepath.Join(e.dir, "certs")
	p, err := startProcess(filepath.Join(e.binDir, "kube-apiserver"), filepath.Join(e.dir, "kube-apiserver.log"),
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", e.etcdPort),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(e.apiPort),
		"--cert-dir="+certDir,
		"--service-cluster-ip-range=10.96.0.0/16",
		"--service-account-issuer="+Issuer,
		"--api-audiences="+Issuer,
		"--service-account-key-file="+filepath.Join(e.dir, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(e.dir, "sa.key"),
		"--token-auth-file="+filepath.Join(e.dir, "tokens.csv"),
		"--authorization-mode=RBAC",
		// No controller-manager creates default ServiceAccounts, so the
		// admission plugin that requires them would refuse every pod.
		"--disable-admission-plugins=ServiceAccount",
		// Nothing runs behind the kubernetes Service; do not advertise.
		"--endpoint-reconciler-type=none",
		// Open watches (such as a discovery source under test) would
		// otherwise hold up a graceful stop until it is killed.
		"--shutdown-watch-termination-grace-period=1s",
		"--v=1",
	)
	if err != nil {
		return err
	}
	e.apiserver = p

	caFile := filepath.Join(certDir, "apiserver.crt")
	e.cfg = &rest.Config{
		Host:            fmt.Sprintf("https://127.0.0.1:%d", e.apiPort),
		BearerToken:     e.adminToken,
		TLSClientConfig: rest.TLSClientConfig{CAFile: caFile},
		// Tests create objects in bursts; the client-side default (5 qps)
		// would make them slow without protecting anything.
		QPS:   200,
		Burst: 400,
	}
	var hc *http.Client
	if err := waitFor(p, readyTimeout, func() error {
		if hc == nil {
			// The serving certificate is written by the API server on its
			// first start; until then there is nothing to trust.
			if _, err := os.Stat(caFile); err != nil {
				return fmt.Errorf("waiting for %s", caFile)
			}
			c, err := rest.HTTPClientFor(e.cfg)
			if err != nil {
				return err
			}
			c.Timeout = 5 * time.Second
			hc = c
		}
		resp, err := hc.Get(e.cfg.Host + "/readyz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s: %s", resp.Status, lastLines(string(body), 5))
		}
		return nil
	}); err != nil {
		return fmt.Errorf("kube-apiserver did not become ready: %w\n%s", err, p.logTail())
	}
	if e.kubecfg == "" {
		path, err := e.writeKubeconfig(caFile)
		if err != nil {
			return err
		}
		e.kubecfg = path
	}
	return nil
}

// StopAPIServer stops kube-apiserver (SIGTERM, then SIGKILL). Clients see
// connection errors until StartAPIServer.
func (e *Env) StopAPIServer() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.apiserver != nil {
		e.apiserver.stop(e.t)
		e.apiserver = nil
	}
}

func (e *Env) cleanup() {
	e.StopAPIServer()
	e.StopEtcd()
	if e.t.Failed() {
		for _, name := range []string{"etcd.log", "kube-apiserver.log"} {
			if b, err := os.ReadFile(filepath.Join(e.dir, name)); err == nil {
				e.t.Logf("kubeenv: last lines of %s:\n%s", name, lastLines(string(b), 30))
			}
		}
	}
	if err := os.RemoveAll(e.dir); err != nil {
		e.t.Logf("kubeenv: remove %s: %v", e.dir, err)
	}
}

// writeCredentials creates the service-account key pair and the static
// token file the API server reads.
func (e *Env) writeCredentials() error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("generate the service-account signing key: %w", err)
	}
	e.saKey = key
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return fmt.Errorf("encode the service-account public key: %w", err)
	}
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		return fmt.Errorf("generate the admin token: %w", err)
	}
	e.adminToken = hex.EncodeToString(tok)

	files := map[string][]byte{
		"sa.key": pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
		"sa.pub": pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}),
		// token,user,uid,"group1,group2"
		"tokens.csv": fmt.Appendf(nil, "%s,admin,admin,\"system:masters\"\n", e.adminToken),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(e.dir, name), data, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}

// writeKubeconfig writes a kubeconfig by hand rather than with clientcmd,
// which would pull a flag library into the module for one file.
func (e *Env) writeKubeconfig(caFile string) (string, error) {
	const tmpl = `apiVersion: v1
kind: Config
clusters:
- name: kubeenv
  cluster:
    server: %q
    certificate-authority: %q
users:
- name: admin
  user:
    token: %q
contexts:
- name: kubeenv
  context:
    cluster: kubeenv
    user: admin
current-context: kubeenv
`
	path := filepath.Join(e.dir, "kubeconfig")
	if err := os.WriteFile(path, fmt.Appendf(nil, tmpl, e.cfg.Host, caFile, e.adminToken), 0o600); err != nil {
		return "", fmt.Errorf("write kubeconfig: %w", err)
	}
	return path, nil
}

// process is one child process with its log file.
type process struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // valid after done is closed
}

func startProcess(bin, logPath string, args ...string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", logPath, err)
	}
	fmt.Fprintf(logf, "\n==== %s %s\n", time.Now().Format(time.RFC3339), strings.Join(append([]string{bin}, args...), " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Should the test binary die (a package timeout), the server goes too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", filepath.Base(bin), err)
	}
	p := &process{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// stop sends SIGTERM to the process's PID and kills it if it has not exited
// within stopTimeout.
func (p *process) stop(t testing.TB) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		t.Logf("kubeenv: %s (pid %d) ignored SIGTERM for %s; killing it. %s",
			filepath.Base(p.cmd.Path), p.cmd.Process.Pid, stopTimeout, p.logTail())
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *process) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("last lines of %s:\n%s", p.logPath, lastLines(string(b), 20))
}

// waitFor polls check until it succeeds, the process exits, or timeout.
func waitFor(p *process, timeout time.Duration, check func() error) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		select {
		case <-p.done:
			exit := p.err
			if exit == nil {
				exit = errors.New("exit status 0")
			}
			return fmt.Errorf("%s exited: %w (last check: %w)", filepath.Base(p.cmd.Path), exit, last)
		case <-ctx.Done():
			return fmt.Errorf("gave up after %s: %w", timeout, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// freePorts asks the kernel for n distinct free loopback ports. They are
// released before the servers bind them; a collision is possible but rare,
// and shows as a clear start failure.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free loopback port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func lastLines(s string, n int) string {
	lines := bytes.Split(bytes.TrimRight([]byte(s), "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
