// Command meshd is minimesh's control plane. `meshd serve` loads the mesh
// from a directory of manifests or from a Kubernetes API server, watches it,
// and serves the translated configuration to proxies over xDS.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// usageError is a mistake in the command line: exit status 2, as for Go's
// own flag errors, so scripts can tell it from a failure at run time.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{msg: fmt.Sprintf(format, args...)} }

// exitCode prints err and maps it to meshd's exit status.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "meshd: %v\n", err)
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(stderr, "Run 'meshd --help' for usage.")
		return 2
	}
	return 1
}

const usage = `meshd is the minimesh control plane.

Usage:
  meshd serve --config-dir DIR [flags]   load and watch a mesh described in DIR
  meshd serve --kubeconfig PATH [flags]  discover the mesh from a Kubernetes API server
                                         (--in-cluster instead, when running in a pod)
  meshd help                             show this help

Run 'meshd serve --help' for the flags of serve.
`

// run is main without the process: it reads args (without the program
// name), writes to stdout and stderr, and returns when ctx ends or on error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usagef("no command given")
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		return usagef("unknown command %q; the only command is serve", args[0])
	}
}
