package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Result is the demo client's JSON line (see examples/apps/demo).
type Result struct {
	OK               bool           `json:"ok"`
	Code             string         `json:"code"`
	Message          string         `json:"message"`
	Target           string         `json:"target"`
	Method           string         `json:"method"`
	PeerSeenByServer string         `json:"peer_seen_by_server"`
	ServerSPIFFEID   string         `json:"server_spiffe_id"`
	ServerCertSerial string         `json:"server_cert_serial"`
	Answer           map[string]any `json:"answer"`
}

// Leg is one upstream call the gateway made, as its answer reports it.
func (r Result) Leg(name string) Result {
	var leg Result
	m, _ := r.Answer[name].(map[string]any)
	b, _ := json.Marshal(m)
	_ = json.Unmarshal(b, &leg)
	return leg
}

// Call is one call from a caller to a target.
type Call struct {
	// From is Tester (in-mesh, under `meshctl agent`) or Outside
	// (plaintext, no agent).
	From Workload
	// Target is xds:///host:port for in-mesh callers, IP:port otherwise.
	Target string
	Method string
	// RelayTarget and RelayMethod make the call demo.v1.Gateway/Call: the
	// gateway calls them with its own identity.
	RelayTarget, RelayMethod string
	// RelayFresh makes the gateway call on a new connection.
	RelayFresh bool
	Timeout    time.Duration
}

// Call makes c once. An in-mesh caller runs under a fresh `meshctl agent`
// (its own certificate, its own connection), so every call shows the
// current configuration and certificates. err is set only when the client
// could not run or printed no result; a refused call is a Result.
func (m *Mesh) Call(ctx context.Context, c Call) (Result, error) {
	cmd, done, err := m.clientCommand(ctx, c)
	if err != nil {
		return Result{}, err
	}
	defer done()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	_ = cmd.Run() // exit 1 is a refused call; the JSON line says why
	line := lastLine(stdout.String())
	if line == "" {
		return Result{}, fmt.Errorf("the client printed no result (%s): %s", cmd.ProcessState, strings.TrimSpace(stderr.String()))
	}
	var r Result
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		return Result{}, fmt.Errorf("the client printed %q, not a JSON result: %w", line, err)
	}
	return r, nil
}

// CallEvery makes c every interval, each call on a new connection, from
// one client process under one `meshctl agent` (whose certificate rotates
// like any workload's), for at most d. Each result goes to each as it
// arrives; returning false stops the calls. It returns the number of
// results; err is set only when the client could not run or printed
// something that is not a result.
func (m *Mesh) CallEvery(ctx context.Context, c Call, every, d time.Duration, each func(Result) bool) (int, error) {
	cmd, done, err := m.clientCommand(ctx, c, "--every", every.String(), "--for", d.String())
	if err != nil {
		return 0, err
	}
	defer done()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	n := 0
	var bad error
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var r Result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			bad = fmt.Errorf("the client printed %q, not a JSON result: %w", line, err)
			break
		}
		n++
		if !each(r) {
			break
		}
	}
	// Stopping early (or a bad line) ends the client and its agent; the
	// rest of its output is not wanted.
	_ = cmd.Cancel()
	_ = cmd.Wait()
	if bad != nil {
		return n, bad
	}
	if n == 0 {
		return 0, fmt.Errorf("the client printed no result (%s): %s", cmd.ProcessState, strings.TrimSpace(stderr.String()))
	}
	return n, nil
}

// clientCommand is the demo client for c with extra arguments, under a
// fresh `meshctl agent` for an in-mesh caller; done removes what it made.
func (m *Mesh) clientCommand(ctx context.Context, c Call, extra ...string) (*exec.Cmd, func(), error) {
	if c.Timeout == 0 {
		c.Timeout = 3 * time.Second
	}
	client := []string{m.opts.Bins.App, "--role", "client", "--ip", m.IP(c.From),
		"--target", m.Addr(c.Target), "--method", c.Method, "--timeout", c.Timeout.String(), "--log-level", "error"}
	if c.RelayTarget != "" {
		client = append(client, "--relay-target", m.Addr(c.RelayTarget), "--relay-method", c.RelayMethod)
		if c.RelayFresh {
			client = append(client, "--relay-fresh")
		}
	}
	client = append(client, extra...)
	var cmd *exec.Cmd
	done := func() {}
	if c.From.NoProxy {
		cmd = exec.CommandContext(ctx, client[0], append(client[1:], "--plaintext")...)
	} else {
		certDir, err := os.MkdirTemp(m.opts.WorkDir, "certs-"+c.From.Pod+"-")
		if err != nil {
			return nil, nil, err
		}
		done = func() { _ = os.RemoveAll(certDir) }
		args := append(m.agentArgs(c.From, certDir), client...)
		cmd = exec.CommandContext(ctx, m.opts.Bins.Meshctl, args...)
	}
	// The agent and the client it runs form one process group, so a
	// cancelled call leaves neither behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd, done, nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); strings.HasPrefix(l, "{") {
			return l
		}
	}
	return ""
}
