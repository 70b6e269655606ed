// Command meshctl is minimesh's operator CLI: it validates manifests offline
// (validate), renders Envoy bootstraps (bootstrap), reads meshd's debug API
// the way istioctl reads istiod's (proxy-config, proxy-status), and runs
// proxyless gRPC workloads with certificates from meshd (agent).
package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// Exit statuses shared by every subcommand.
const (
	exitOK      = 0
	exitFailed  = 1 // the command ran and found a problem (or failed)
	exitUsage   = 2 // the command line itself is wrong
	programName = "meshctl"
)

// command is one meshctl subcommand. New subcommands (bootstrap,
// proxy-config, proxy-status, agent) add an entry to commands.
type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

var commands []command

func init() {
	// Assigned in init because validate's help refers back to the table.
	commands = []command{
		{name: "validate", summary: "check manifests offline and print every problem", run: runValidate},
		{name: "agent", summary: "run a proxyless gRPC workload with certificates and bootstrap from meshd", run: runAgent},
		{name: "bootstrap", summary: "print an Envoy bootstrap for a sidecar that gets its config from meshd", run: runBootstrap},
		{name: "proxy-config", summary: "show the listeners, clusters, routes, endpoints or secrets meshd serves a proxy", run: runProxyConfig},
		{name: "proxy-status", summary: "list every proxy connected to meshd and whether it is in sync", run: runProxyStatus},
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "%s is the minimesh operator CLI.\n\nUsage:\n  %s COMMAND [flags]\n\nCommands:\n", programName, programName)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-14s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun '%s COMMAND --help' for the flags of a command.\n", programName)
}

// run is main without the process, so tests can call it.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return exitOK
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "%s: unknown command %q\n\n", programName, args[0])
	usage(stderr)
	return exitUsage
}
