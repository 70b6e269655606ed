// Package harness runs a whole minimesh on one machine: it builds meshd,
// meshctl and the demo app, starts meshd on a copy of examples/mesh, starts
// the example workloads as proxyless gRPC processes under `meshctl agent`,
// and makes calls between them. `make demo` (examples/demo) and the e2e
// tests drive the same harness, so the demo's table and the tests check the
// same behaviour.
//
// Every process is started in its own process group and stopped with it
// (SIGTERM, then SIGKILL after a grace period), so nothing outlives a run.
// meshd's ports are taken from the kernel (port 0). The workloads' pod IPs
// are the loopback addresses of examples/mesh (127.0.0.x) unless
// Options.Loopback moves them to another loopback /24: the e2e tests do,
// with FreeLoopback, so a test run and `make demo` (or two test runs) never
// fight over 127.0.0.12:8080.
package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Binaries are the programs the harness runs.
type Binaries struct {
	Meshd, Meshctl, App string
}

// Build compiles meshd, meshctl and the demo app from the module at
// repoRoot into outDir.
func Build(ctx context.Context, repoRoot, outDir string) (Binaries, error) {
	b := Binaries{
		Meshd:   filepath.Join(outDir, "meshd"),
		Meshctl: filepath.Join(outDir, "meshctl"),
		App:     filepath.Join(outDir, "demo-app"),
	}
	for _, p := range []struct{ out, pkg string }{
		{b.Meshd, "./cmd/meshd"}, {b.Meshctl, "./cmd/meshctl"}, {b.App, "./examples/apps/demo"},
	} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", p.out, p.pkg)
		cmd.Dir = repoRoot
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return b, fmt.Errorf("building %s: %w\n%s", p.pkg, err, out.String())
		}
	}
	return b, nil
}

// RepoRoot finds the module root by walking up from the working directory
// to the directory holding go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory: run from inside the minimesh checkout")
		}
		dir = parent
	}
}

// Workload is one example pod run as a process.
type Workload struct {
	Pod, Namespace, IP string
	Role               string // the app's --role
	Ports              []int
	// NoProxy marks a caller outside the mesh: no agent, plaintext.
	NoProxy bool
}

// The example mesh's workloads (examples/mesh) and callers.
var (
	Gateway = Workload{Pod: "product-gateway-0", Namespace: "default", IP: "127.0.0.11", Role: "gateway", Ports: []int{8080}}
	Product = Workload{Pod: "product-0", Namespace: "default", IP: "127.0.0.12", Role: "product", Ports: []int{8080}}
	Stock   = Workload{Pod: "stock-0", Namespace: "default", IP: "127.0.0.13", Role: "stock", Ports: []int{8080, 8081}}
	// Tester is an in-mesh pod with its own identity (examples/mesh/tester.yaml).
	Tester = Workload{Pod: "tester", Namespace: "default", IP: "127.0.0.14"}
	// Outside is the curl pod in `test`: no proxy, plaintext.
	Outside = Workload{Pod: "curl", Namespace: "test", IP: "127.0.0.21", NoProxy: true}
)

// Options configure a Mesh.
type Options struct {
	Bins Binaries
	// ExampleDir is copied into the config dir meshd watches.
	ExampleDir string
	// WorkDir holds the config dir, the CA, cert dirs and logs.
	WorkDir string
	// CertTTL is meshd's --workload-cert-ttl (default 30s).
	CertTTL time.Duration
	// Output receives every process's output, prefixed by its name;
	// nil discards it (it is still kept in WorkDir/logs).
	Output io.Writer
	// Loopback, when set (e.g. "127.42.7."), replaces the prefix
	// "127.0.0." of every pod IP: in the copied manifests, in the agents'
	// --ip, in callers' source addresses and in plaintext targets. Empty
	// keeps examples/mesh's addresses, which the README's commands use.
	Loopback string
}

// Mesh is a running meshd plus the processes started against it.
type Mesh struct {
	opts       Options
	configDir  string
	caDir      string
	xdsAddr    string
	monitoring string

	mu    sync.Mutex
	meshd *Proc
	procs []*Proc
}

// Start copies the example, starts meshd and waits until it is ready.
func Start(ctx context.Context, opts Options) (*Mesh, error) {
	if opts.CertTTL == 0 {
		opts.CertTTL = 30 * time.Second
	}
	m := &Mesh{
		opts:      opts,
		configDir: filepath.Join(opts.WorkDir, "config"),
		caDir:     filepath.Join(opts.WorkDir, "ca"),
	}
	if err := copyDir(opts.ExampleDir, m.configDir, m.rewritePodIPs); err != nil {
		return nil, fmt.Errorf("copying the example mesh: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(opts.WorkDir, "logs"), 0o755); err != nil {
		return nil, err
	}
	var err error
	if m.xdsAddr, err = freeAddr(); err != nil {
		return nil, err
	}
	if m.monitoring, err = freeAddr(); err != nil {
		return nil, err
	}
	if err := m.StartMeshd(ctx); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// ConfigDir is the directory meshd watches; write policies into it.
func (m *Mesh) ConfigDir() string { return m.configDir }

// XDSAddr is meshd's ADS address.
func (m *Mesh) XDSAddr() string { return m.xdsAddr }

// MonitoringURL is meshd's metrics and debug base URL.
func (m *Mesh) MonitoringURL() string { return "http://" + m.monitoring }

// CADir is meshd's --ca-dir: the self-signed root (root-cert.pem, root-key.pem).
func (m *Mesh) CADir() string { return m.caDir }

// WorkDir is Options.WorkDir: config, CA, cert dirs and logs.
func (m *Mesh) WorkDir() string { return m.opts.WorkDir }

// examplePrefix is the pod-IP prefix of examples/mesh.
const examplePrefix = "127.0.0."

// Addr maps an address of the example (a pod IP, or a pod IP:port) to
// where this mesh runs it; see Options.Loopback. Anything else, such as an
// xds:/// target, is returned unchanged.
func (m *Mesh) Addr(a string) string {
	if m.opts.Loopback == "" || !strings.HasPrefix(a, examplePrefix) {
		return a
	}
	return m.opts.Loopback + strings.TrimPrefix(a, examplePrefix)
}

// IP is w's pod IP in this mesh.
func (m *Mesh) IP(w Workload) string { return m.Addr(w.IP) }

// rewritePodIPs moves the manifests' pod IPs to Options.Loopback. Only
// "podIP:" lines change, so comments and other addresses stay as written.
func (m *Mesh) rewritePodIPs(data []byte) []byte {
	if m.opts.Loopback == "" {
		return data
	}
	lines := strings.SplitAfter(string(data), "\n")
	for i, l := range lines {
		trimmed := strings.TrimLeft(l, " \t")
		if rest, ok := strings.CutPrefix(trimmed, "podIP: "+examplePrefix); ok {
			lines[i] = l[:len(l)-len(trimmed)] + "podIP: " + m.opts.Loopback + rest
		}
	}
	return []byte(strings.Join(lines, ""))
}

// FreeLoopback picks a loopback /24 prefix ("127.A.B.") on which every
// example workload's pod IP and port can be bound right now, so a mesh
// started with it does not collide with another one on this machine.
func FreeLoopback() (string, error) {
	var last error
	for range 50 {
		prefix := fmt.Sprintf("127.%d.%d.", 1+rand.IntN(254), 1+rand.IntN(254))
		if last = bindable(prefix); last == nil {
			return prefix, nil
		}
	}
	return "", fmt.Errorf("no free loopback /24 for the example workloads after 50 tries: %w", last)
}

// bindable checks that every example pod address under prefix is free.
func bindable(prefix string) error {
	var addrs []string
	for _, w := range []Workload{Gateway, Product, Stock, Tester, Outside} {
		ip := prefix + strings.TrimPrefix(w.IP, examplePrefix)
		if len(w.Ports) == 0 {
			addrs = append(addrs, net.JoinHostPort(ip, "0"))
		}
		for _, p := range w.Ports {
			addrs = append(addrs, net.JoinHostPort(ip, strconv.Itoa(p)))
		}
	}
	for _, a := range addrs {
		l, err := net.Listen("tcp", a)
		if err != nil {
			return err
		}
		_ = l.Close()
	}
	return nil
}

// StartMeshd starts meshd (again, after StopMeshd) with the same ports and
// CA directory, and waits for /readyz.
func (m *Mesh) StartMeshd(ctx context.Context) error {
	p, err := m.start("meshd", nil, m.opts.Bins.Meshd, "serve",
		"--config-dir", m.configDir,
		"--xds-auth=none",
		"--ca-dir", m.caDir,
		"--workload-cert-ttl", m.opts.CertTTL.String(),
		"--xds-addr", m.xdsAddr,
		"--monitoring-addr", m.monitoring,
	)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.meshd = p
	m.mu.Unlock()
	if err := m.waitReady(ctx, 30*time.Second); err != nil {
		return fmt.Errorf("meshd did not become ready (log: %s): %w", p.LogFile, err)
	}
	return nil
}

// StopMeshd stops meshd; the workloads keep running on what they have.
func (m *Mesh) StopMeshd() {
	m.mu.Lock()
	p := m.meshd
	m.meshd = nil
	m.mu.Unlock()
	if p != nil {
		p.Stop()
	}
}

func (m *Mesh) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, m.MonitoringURL()+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/readyz answered %s", resp.Status)
		}
		last = err
		m.mu.Lock()
		p := m.meshd
		m.mu.Unlock()
		if p != nil && p.Exited() {
			return fmt.Errorf("meshd exited: %w", p.Wait())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// agentArgs is `meshctl agent` for w, with a cert dir of its own.
func (m *Mesh) agentArgs(w Workload, certDir string) []string {
	return []string{"agent", "--pod", w.Pod, "--namespace", w.Namespace, "--ip", m.IP(w),
		"--xds-address", m.xdsAddr, "--cert-dir", certDir, "--"}
}

// StartWorkload runs w's role under `meshctl agent`.
func (m *Mesh) StartWorkload(w Workload) (*Proc, error) {
	certDir, err := os.MkdirTemp(m.opts.WorkDir, "certs-"+w.Pod+"-")
	if err != nil {
		return nil, err
	}
	ports := ""
	for i, p := range w.Ports {
		if i > 0 {
			ports += ","
		}
		ports += fmt.Sprint(p)
	}
	args := append(m.agentArgs(w, certDir), m.opts.Bins.App, "--role", w.Role, "--ip", m.IP(w), "--ports", ports)
	return m.start(w.Pod, nil, m.opts.Bins.Meshctl, args...)
}

// Close stops every process the mesh started, newest first.
func (m *Mesh) Close() {
	m.mu.Lock()
	procs := m.procs
	m.procs = nil
	m.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].Stop()
	}
}

// WriteFile writes a manifest into the watched config dir atomically, so
// meshd never reads half a file.
func (m *Mesh) WriteFile(name, content string) error {
	tmp := filepath.Join(m.opts.WorkDir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(m.configDir, name))
}

// RemoveFile removes a manifest from the config dir; a missing file is fine.
func (m *Mesh) RemoveFile(name string) error {
	err := os.Remove(filepath.Join(m.configDir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String(), nil
}

// copyDir copies src to dst, passing every file's content through edit.
func copyDir(src, dst string, edit func([]byte) []byte) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, edit(b), 0o644)
	})
}

// Proc is a process the harness started, in its own process group.
type Proc struct {
	Name    string
	LogFile string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
	stopO   sync.Once
}

// start runs a long-lived process whose output goes to its log file (and
// to Options.Output).
func (m *Mesh) start(name string, env []string, bin string, args ...string) (*Proc, error) {
	logFile := filepath.Join(m.opts.WorkDir, "logs", name+".log")
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var w io.Writer = f
	if m.opts.Output != nil {
		w = io.MultiWriter(f, &prefixWriter{prefix: name + " | ", w: m.opts.Output})
	}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Proc{Name: name, LogFile: logFile, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = f.Close()
		close(p.done)
	}()
	m.mu.Lock()
	m.procs = append(m.procs, p)
	m.mu.Unlock()
	return p, nil
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits for the process and returns its error.
func (p *Proc) Wait() error {
	<-p.done
	return p.err
}

// stopGrace is how long a process group gets between SIGTERM and SIGKILL.
const stopGrace = 5 * time.Second

// Stop ends the process group: SIGTERM, then SIGKILL after a grace period.
func (p *Proc) Stop() {
	p.stopO.Do(func() {
		if p.Exited() {
			return
		}
		pgid := p.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(stopGrace):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
	})
}

// prefixWriter prefixes each line, so interleaved logs stay readable.
type prefixWriter struct {
	mu     sync.Mutex
	prefix string
	w      io.Writer
	buf    []byte
}

func (pw *prefixWriter) Write(b []byte) (int, error) {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	pw.buf = append(pw.buf, b...)
	for {
		i := bytes.IndexByte(pw.buf, '\n')
		if i < 0 {
			break
		}
		if _, err := fmt.Fprintf(pw.w, "%s%s\n", pw.prefix, pw.buf[:i]); err != nil {
			return len(b), err
		}
		pw.buf = pw.buf[i+1:]
	}
	return len(b), nil
}
