package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/minimesh/minimesh/discovery"
	"github.com/minimesh/minimesh/discovery/file"
	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

// serveConfig is everything `meshd serve` was told on its command line,
// checked. Later stages (translation, xDS, the CA) read their settings from
// here, never from the environment.
type serveConfig struct {
	ConfigDir     string
	RootNamespace string
	TrustDomain   string
	ClusterDomain string
	LogLevel      slog.Level
	LogFormat     string
}

// parseServeFlags parses and checks the flags of `meshd serve`. It returns
// flag.ErrHelp after printing the help for --help.
func parseServeFlags(args []string, stdout, stderr io.Writer) (serveConfig, error) {
	var cfg serveConfig
	var level string
	fs := flag.NewFlagSet("meshd serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.ConfigDir, "config-dir", "", "directory of Kubernetes-style YAML manifests to load and watch (required)")
	fs.StringVar(&cfg.RootNamespace, "root-namespace", "istio-system", "namespace whose policies apply mesh-wide")
	fs.StringVar(&cfg.TrustDomain, "trust-domain", "cluster.local", "SPIFFE trust domain of workload identities")
	fs.StringVar(&cfg.ClusterDomain, "cluster-domain", "cluster.local", "DNS suffix of services (name.namespace.svc.DOMAIN)")
	fs.StringVar(&level, "log-level", "info", "least severe log level shown: debug, info, warn or error")
	fs.StringVar(&cfg.LogFormat, "log-format", "text", "log format: text or json")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: meshd serve --config-dir DIR [flags]\n\n"+
			"Loads the mesh described in DIR (Namespaces, Services, Pods, EndpointSlices and\n"+
			"Istio security policies), logs what it loaded and every problem found, and\n"+
			"applies each change to the directory live.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			// Asked for: help goes to stdout and is not an error.
			fs.SetOutput(stdout)
			fs.Usage()
			return cfg, flag.ErrHelp
		}
		return cfg, &usageError{msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return cfg, usagef("serve takes no arguments, got %q; pass the directory with --config-dir", strings.Join(fs.Args(), " "))
	}
	if cfg.ConfigDir == "" {
		return cfg, usagef("--config-dir is required: the directory of manifests describing the mesh (try examples/mesh)")
	}
	if info, err := os.Stat(cfg.ConfigDir); err != nil {
		return cfg, usagef("--config-dir %s cannot be used: %v", cfg.ConfigDir, err)
	} else if !info.IsDir() {
		return cfg, usagef("--config-dir %s is a file, not a directory", cfg.ConfigDir)
	}
	if errs := validation.IsDNS1123Label(cfg.RootNamespace); len(errs) > 0 {
		return cfg, usagef("--root-namespace %q is not a namespace name: %s", cfg.RootNamespace, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(cfg.TrustDomain); len(errs) > 0 {
		return cfg, usagef("--trust-domain %q is not a valid trust domain (a DNS name such as cluster.local): %s",
			cfg.TrustDomain, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(cfg.ClusterDomain); len(errs) > 0 {
		return cfg, usagef("--cluster-domain %q is not a DNS name: %s", cfg.ClusterDomain, strings.Join(errs, "; "))
	}
	if err := cfg.LogLevel.UnmarshalText([]byte(level)); err != nil {
		return cfg, usagef("--log-level %q is not one of debug, info, warn, error", level)
	}
	if cfg.LogFormat != "text" && cfg.LogFormat != "json" {
		return cfg, usagef("--log-format %q is not one of text, json", cfg.LogFormat)
	}
	return cfg, nil
}

func newLogger(cfg serveConfig, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve runs `meshd serve` until ctx ends.
func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseServeFlags(args, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	log.Info("meshd starting", "configDir", cfg.ConfigDir, "rootNamespace", cfg.RootNamespace,
		"trustDomain", cfg.TrustDomain, "clusterDomain", cfg.ClusterDomain)

	var src discovery.Source = file.New(cfg.ConfigDir, file.Options{}, log.With("source", "file"))
	p := &pipeline{log: log}

	// Issue 4 starts the xDS server, CA and debug API here, before the
	// source runs, and has pipeline.publish hand every snapshot to it.

	if err := src.Run(ctx, p.publish); err != nil {
		return fmt.Errorf("loading the mesh: %w", err)
	}
	log.Info("meshd stopped")
	return nil
}

// pipeline receives every snapshot the source publishes.
type pipeline struct {
	log *slog.Logger
}

func (p *pipeline) publish(s *model.Snapshot) {
	logSnapshot(p.log, s)
}

// logSnapshot logs what a snapshot holds and every problem in it: errors
// (skipped objects or files) at ERROR, warnings at WARN.
func logSnapshot(log *slog.Logger, s *model.Snapshot) {
	endpoints, errs, warns := 0, 0, 0
	for _, se := range s.Endpoints {
		endpoints += len(se.Endpoints)
	}
	for _, pr := range s.Problems {
		attrs := []any{"at", pr.Location.String()}
		if pr.Kind != "" {
			attrs = append(attrs, "kind", pr.Kind, "object", strings.TrimPrefix(pr.Namespace+"/"+pr.Name, "/"))
		}
		if pr.Field != "" {
			attrs = append(attrs, "field", pr.Field)
		}
		attrs = append(attrs, "reason", pr.Message)
		if pr.Severity == policy.SeverityError {
			errs++
			log.Error("invalid configuration skipped", attrs...)
		} else {
			warns++
			log.Warn("configuration warning", attrs...)
		}
	}
	ps := s.Policies
	log.Info("mesh loaded",
		"namespaces", len(s.Namespaces), "services", len(s.Services), "workloads", len(s.Workloads),
		"endpoints", endpoints,
		"policies", len(ps.PeerAuthentications)+len(ps.DestinationRules)+len(ps.AuthorizationPolicies)+len(ps.RequestAuthentications),
		"errors", errs, "warnings", warns)
}
