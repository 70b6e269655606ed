package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"
)

// BootstrapEnv is the environment variable gRPC reads the bootstrap file
// name from.
const BootstrapEnv = "GRPC_XDS_BOOTSTRAP"

// stopGrace is how long a command gets to exit after the agent's context
// ends before it is killed.
const stopGrace = 10 * time.Second

// IO is where the command's standard streams go; nil fields mean the
// agent's own.
type IO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// forwarded are the signals Run passes on to the command, as an init
// process such as tini does: termination requests, and the ones programs
// use for reloads, dumps and terminal resizes. The agent itself never acts
// on them; it ends when the command does.
var forwarded = []os.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH}

// terminating reports a signal that asks a process to stop.
func terminating(s os.Signal) bool {
	return s == syscall.SIGHUP || s == syscall.SIGINT || s == syscall.SIGQUIT || s == syscall.SIGTERM
}

// Run starts an agent, waits for the workload's first certificate (at most
// Options.CertTimeout), and runs command with GRPC_XDS_BOOTSTRAP set. It
// forwards the signals in forwarded to the command, so pass a ctx that
// those signals do not cancel; a terminating one that arrives before the
// command started stops the agent instead (exit status 128 plus the
// signal). When ctx ends the command gets SIGTERM and, after a grace
// period, SIGKILL. It returns the command's exit status (128 plus the
// signal number if a signal ended it); err is set only when the command
// could not be run at all.
func Run(ctx context.Context, opts Options, command []string, stdio IO) (exitCode int, err error) {
	if len(command) == 0 {
		return 1, errors.New("no command to run: give it after --")
	}
	// From the start: a signal while the agent waits for its first
	// certificate must stop it cleanly, not kill it with its files.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwarded...)
	defer signal.Stop(sigs)

	a, err := New(opts)
	if err != nil {
		return 1, err
	}
	defer func() { _ = a.Close() }()
	if err := a.Start(ctx); err != nil {
		return 1, err
	}
	waitCtx, cancelWait := context.WithCancel(ctx)
	defer cancelWait()
	waited := make(chan error, 1)
	go func() { waited <- a.waitFirst(waitCtx) }()
	for ready := false; !ready; {
		select {
		case err := <-waited:
			if err != nil {
				return 1, err
			}
			ready = true
		case s := <-sigs:
			if !terminating(s) {
				continue // nothing to pass it to yet
			}
			cancelWait()
			if err := <-waited; err != nil && !errors.Is(err, context.Canceled) {
				a.log.Warn("waiting for the first certificate ended badly", "error", err)
			}
			a.log.Info("stopping before the workload started", "signal", s.String())
			return 128 + int(s.(syscall.Signal)), nil
		}
	}

	cmd := exec.Command(command[0], command[1:]...)
	// The downward-API variables Istio's injector sets, so a workload can
	// report who it is without extra flags.
	cmd.Env = append(os.Environ(), BootstrapEnv+"="+a.BootstrapPath(),
		"POD_NAME="+a.opts.Pod, "POD_NAMESPACE="+a.opts.Namespace, "INSTANCE_IP="+a.opts.IP)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = orDefault(stdio)
	// The command stays in the agent's process group, so whoever stops
	// the group (a supervisor, a test harness) stops both, even with
	// SIGKILL. A terminal Ctrl-C may thus reach the command twice.
	if err := cmd.Start(); err != nil {
		return 127, fmt.Errorf("starting %s: %w", command[0], err)
	}
	a.log.Info("started the workload", "command", command[0], "pid", cmd.Process.Pid, BootstrapEnv, a.BootstrapPath())

	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var kill <-chan time.Time
	ctxDone := ctx.Done()
	for {
		select {
		case s := <-sigs:
			_ = cmd.Process.Signal(s)
		case <-ctxDone:
			ctxDone = nil
			_ = cmd.Process.Signal(syscall.SIGTERM)
			kill = time.After(stopGrace)
		case <-kill:
			_ = cmd.Process.Kill()
		case err := <-exited:
			return exitStatus(cmd, err)
		}
	}
}

func exitStatus(cmd *exec.Cmd, err error) (int, error) {
	st := cmd.ProcessState
	if st == nil {
		return 1, fmt.Errorf("waiting for the workload: %w", err)
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return st.ExitCode(), nil
}

func orDefault(s IO) (io.Reader, io.Writer, io.Writer) {
	var in io.Reader = os.Stdin
	var out, errw io.Writer = os.Stdout, os.Stderr
	if s.Stdin != nil {
		in = s.Stdin
	}
	if s.Stdout != nil {
		out = s.Stdout
	}
	if s.Stderr != nil {
		errw = s.Stderr
	}
	return in, out, errw
}

// Serve is `meshctl agent` without a command: it starts an agent, waits for
// the first certificate, prints the bootstrap to out, and keeps the
// certificates fresh and the xDS proxy running until ctx ends.
func Serve(ctx context.Context, opts Options, out io.Writer) error {
	a, err := New(opts)
	if err != nil {
		return err
	}
	defer func() { _ = a.Close() }()
	if err := a.Start(ctx); err != nil {
		return err
	}
	if err := a.waitFirst(ctx); err != nil {
		return err
	}
	if _, err := out.Write(a.Bootstrap()); err != nil {
		return fmt.Errorf("printing the bootstrap: %w", err)
	}
	a.log.Info("certificates are kept fresh until the agent is stopped", BootstrapEnv, a.BootstrapPath())
	<-ctx.Done()
	return nil
}

// waitFirst waits for the first certificate for at most CertTimeout.
func (a *Agent) waitFirst(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, a.opts.CertTimeout)
	defer cancel()
	if err := a.WaitForCertificate(wctx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("no workload certificate from meshd at %s within %s: check that meshd is running with a CA, "+
			"that it knows pod %s/%s (IP %s), and that the token is accepted; meshd's log says why it refused: %w",
			a.opts.XDSAddress, a.opts.CertTimeout, a.opts.Namespace, a.opts.Pod, a.opts.IP, err)
	}
	return nil
}
