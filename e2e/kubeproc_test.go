package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minimesh/minimesh/e2e/harness"
)

// kproc is a long-lived process of the Kubernetes e2e, in its own process
// group so that stopping it also stops what it started (an agent's app).
type kproc struct {
	name, logFile string
	cmd           *exec.Cmd
	done          chan struct{}
	err           error
}

// startProc runs bin with args, inside network namespace netns unless it
// is empty, logging to dir/logs/name.log. Failures go to t; the process is
// stopped when owner ends (the whole test, for workloads a subtest starts).
func startProc(t, owner *testing.T, dir, name, netns, bin string, args ...string) *kproc {
	t.Helper()
	if netns != "" {
		args = append([]string{"netns", "exec", netns, bin}, args...)
		bin = "ip"
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := &kproc{name: name, logFile: filepath.Join(dir, "logs", name+".log"), done: make(chan struct{})}
	f, err := os.Create(p.logFile)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		_ = f.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		_ = f.Close()
		close(p.done)
	}()
	owner.Cleanup(p.stop)
	return p
}

func (p *kproc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the group, then SIGKILL after a grace period.
func (p *kproc) stop() {
	if p.exited() {
		return
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
}

// logTail is the end of the process's log, for failure messages.
func (p *kproc) logTail() string {
	b, _ := os.ReadFile(p.logFile)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 25 {
		lines = lines[len(lines)-25:]
	}
	return strings.Join(lines, "\n")
}

// runCall runs a one-shot demo client (with its agent, if any) and parses
// the JSON line it prints. A refused call is a Result, not an error.
func runCall(ctx context.Context, netns string, argv []string) (harness.Result, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", netns}, argv...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	_ = cmd.Run()
	var line string
	for _, l := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "{") {
			line = l
		}
	}
	if line == "" {
		return harness.Result{}, stderr.String(), fmt.Errorf("the client printed no result (%s): %s", cmd.ProcessState, strings.TrimSpace(stderr.String()))
	}
	var r harness.Result
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		return r, stderr.String(), fmt.Errorf("the client printed %q, not a JSON result: %w", line, err)
	}
	return r, stderr.String(), nil
}
