package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/minimesh/minimesh/xds/agent"
)

const agentUsage = `Usage: meshctl agent --pod NAME --namespace NS --ip IP [flags] [-- COMMAND ARGS...]

Does for a proxyless gRPC workload what Istio's agent does: makes the
workload's private key, has meshd sign a certificate request for it
(Istio's CreateCertificate, authenticated like a proxy), writes key, chain
and trust bundle to --cert-dir and renews them at half their lifetime,
writes a gRPC xDS bootstrap, and runs COMMAND with GRPC_XDS_BOOTSTRAP
set. The key never leaves --cert-dir. Signals are forwarded; the agent exits with the command's status.

Without "-- COMMAND", it prints the bootstrap and keeps the certificates
fresh until interrupted.

Flags:
`

func runAgent(args []string, stdout, stderr io.Writer) int {
	var opts agent.Options
	var logLevel string
	fs := flag.NewFlagSet("meshctl agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&opts.Pod, "pod", "", "the workload's pod name (required)")
	fs.StringVar(&opts.Namespace, "namespace", "", "the workload's namespace (required)")
	fs.StringVar(&opts.IP, "ip", "", "the workload's pod IP (required)")
	fs.StringVar(&opts.XDSAddress, "xds-address", "127.0.0.1:15010", "meshd's xDS address")
	fs.StringVar(&opts.TokenFile, "token-file", "", "file holding the bearer token for meshd (re-read on every connection)")
	fs.StringVar(&opts.CertDir, "cert-dir", "", "directory for the certificates and bootstrap (default: a temporary directory)")
	fs.StringVar(&opts.ClusterDomain, "cluster-domain", "cluster.local", "DNS suffix of services")
	fs.DurationVar(&opts.CertTimeout, "cert-timeout", 30*time.Second, "how long to wait for the first certificate")
	fs.StringVar(&logLevel, "log-level", "info", "least severe log level shown: debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), agentUsage)
		fs.PrintDefaults()
	}
	// Everything after "--" is the command; the flag package stops there.
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return exitOK
		}
		return exitUsage
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		fmt.Fprintf(stderr, "meshctl agent: --log-level %q is not one of debug, info, warn, error\n", logLevel)
		return exitUsage
	}
	for _, f := range []struct{ name, v string }{{"--pod", opts.Pod}, {"--namespace", opts.Namespace}, {"--ip", opts.IP}} {
		if f.v == "" {
			fmt.Fprintf(stderr, "meshctl agent: %s is required\n", f.name)
			return exitUsage
		}
	}
	opts.Log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})).With("agent", opts.Pod+"."+opts.Namespace)
	command := fs.Args()

	if len(command) == 0 {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := agent.Serve(ctx, opts, stdout); err != nil && !errors.Is(err, context.Canceled) {
			fmt.Fprintf(stderr, "meshctl agent: %v\n", err)
			return exitFailed
		}
		return exitOK
	}
	// Run forwards SIGINT/SIGTERM to the command itself and returns when it
	// exits, so its context is not tied to those signals.
	code, err := agent.Run(context.Background(), opts, command, agent.IO{})
	if err != nil {
		fmt.Fprintf(stderr, "meshctl agent: %v\n", err)
	}
	return code
}
