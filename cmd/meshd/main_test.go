package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minimesh/minimesh/translate"
	"github.com/minimesh/minimesh/xds/xdstest"
)

// logLines decodes JSON log lines.
func logLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		lines = append(lines, m)
	}
	return lines
}

// waitLog polls the log until a line satisfies ok.
func waitLog(t *testing.T, buf *xdstest.Buffer, what string, ok func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, l := range logLines(t, buf.String()) {
			if ok(l) {
				return l
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s; log:\n%s", what, buf.String())
	return nil
}

func TestServeLoadsAndWatches(t *testing.T) {
	dir := t.TempDir()
	ns := "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n"
	if err := os.WriteFile(filepath.Join(dir, "ns.yaml"), []byte(ns), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr xdstest.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--config-dir", dir, "--log-format", "json", "--log-level", "debug",
			"--xds-auth", "none", "--ca-dir", t.TempDir(), "--xds-addr", "127.0.0.1:0", "--monitoring-addr", "127.0.0.1:0"}, &stdout, &stderr)
	}()

	waitLog(t, &stderr, "the first load", func(l map[string]any) bool {
		return l["msg"] == "mesh loaded" && l["namespaces"] == 1.0 && l["errors"] == 0.0
	})

	bad := "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  ports:\n  - port: 80\n    portocol: TCP\n"
	if err := os.WriteFile(filepath.Join(dir, "svc.yaml"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	l := waitLog(t, &stderr, "the bad service to be logged", func(l map[string]any) bool {
		return l["level"] == "ERROR" && l["msg"] == "invalid configuration skipped"
	})
	want := map[string]any{
		"at": filepath.Join(dir, "svc.yaml") + ":9", "kind": "Service", "object": "shop/web",
		"field": "spec.ports[0].portocol",
	}
	for k, v := range want {
		if l[k] != v {
			t.Errorf("log attribute %s = %v, want %v", k, l[k], v)
		}
	}
	waitLog(t, &stderr, "a summary counting the error", func(l map[string]any) bool {
		return l["msg"] == "mesh loaded" && l["errors"] == 1.0 && l["services"] == 0.0
	})

	cancel()
	waitServeStopped(t, done, 10*time.Second)
}

func TestCommandLine(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "a.yaml")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args     []string
		wantCode int
		// wantOut is expected in stdout, wantErr in stderr.
		wantOut, wantErr string
	}{
		{args: nil, wantCode: 2, wantErr: "no command given"},
		{args: []string{"--help"}, wantCode: 0, wantOut: "meshd serve --config-dir DIR"},
		{args: []string{"help"}, wantCode: 0, wantOut: "meshd serve --config-dir DIR"},
		{args: []string{"frobnicate"}, wantCode: 2, wantErr: `unknown command "frobnicate"`},
		{args: []string{"serve", "--help"}, wantCode: 0, wantOut: "-root-namespace string"},
		{args: []string{"serve"}, wantCode: 2, wantErr: "--config-dir is required"},
		{args: []string{"serve", "--config-dir", filepath.Join(dir, "nope")}, wantCode: 2, wantErr: "no such file or directory"},
		{args: []string{"serve", "--config-dir", file}, wantCode: 2, wantErr: "is a file, not a directory"},
		{args: []string{"serve", "--config-dir", dir, "extra"}, wantCode: 2, wantErr: `serve takes no arguments, got "extra"`},
		{args: []string{"serve", "--config-dir", dir, "--bogus"}, wantCode: 2, wantErr: "flag provided but not defined: -bogus"},
		{args: []string{"serve", "--config-dir", dir, "--log-level", "loud"}, wantCode: 2, wantErr: `--log-level "loud" is not one of`},
		{args: []string{"serve", "--config-dir", dir, "--log-format", "xml"}, wantCode: 2, wantErr: `--log-format "xml" is not one of text, json`},
		{args: []string{"serve", "--config-dir", dir, "--access-log-encoding", "yaml"}, wantCode: 2, wantErr: `--access-log-encoding "yaml" is not one of TEXT, JSON`},
		{args: []string{"serve", "--config-dir", dir, "--root-namespace", "Istio_System"}, wantCode: 2, wantErr: "is not a namespace name"},
		{args: []string{"serve", "--config-dir", dir, "--trust-domain", "a/b"}, wantCode: 2, wantErr: "is not a valid trust domain"},
		{args: []string{"serve", "--config-dir", dir, "--cluster-domain", ""}, wantCode: 2, wantErr: "is not a DNS name"},
		{args: []string{"serve", "--config-dir", dir}, wantCode: 2, wantErr: "--xds-auth=static needs --xds-token-file"},
		{args: []string{"serve", "--config-dir", dir, "--xds-auth", "trust-me"}, wantCode: 2, wantErr: `--xds-auth "trust-me" is not one of kubernetes, static, none`},
		{args: []string{"serve", "--config-dir", dir, "--xds-auth", "none", "--xds-addr", "15010"}, wantCode: 2, wantErr: `--xds-addr "15010" is not host:port`},
		{args: []string{"serve", "--config-dir", dir, "--xds-auth", "none", "--ca-cert", "x.pem"}, wantCode: 2, wantErr: "needs all of --ca-cert, --ca-key and --ca-chain"},
		{args: []string{"serve", "--config-dir", dir, "--kubeconfig", file}, wantCode: 2, wantErr: "--config-dir and --kubeconfig are mutually exclusive"},
		{args: []string{"serve", "--kubeconfig", file, "--in-cluster"}, wantCode: 2, wantErr: "--kubeconfig and --in-cluster are mutually exclusive"},
		{args: []string{"serve", "--kubeconfig", filepath.Join(dir, "nope")}, wantCode: 2, wantErr: "--kubeconfig " + filepath.Join(dir, "nope") + " cannot be used"},
		{args: []string{"serve", "--config-dir", dir, "--xds-auth", "kubernetes"}, wantCode: 2, wantErr: "--xds-auth=kubernetes reviews tokens with the API server, so it needs --kubeconfig or --in-cluster"},
		{args: []string{"serve", "--kubeconfig", file, "--xds-token-audience", " , "}, wantCode: 2, wantErr: "--xds-token-audience is empty"},
		{args: []string{"serve", "--kubeconfig", file, "--xds-token-file", file}, wantCode: 2, wantErr: "--xds-token-file is only read with --xds-auth=static, not kubernetes"},
		{args: []string{"serve", "--config-dir", dir, "--xds-auth", "none", "--csr-burst", "0"}, wantCode: 2, wantErr: "--csr-rate (10) and --csr-burst (0) must be positive"},
		{args: []string{"serve", "--config-dir", dir, "--xds-auth", "none", "--debounce-after", "2s"}, wantCode: 2, wantErr: "--debounce-after (2s) must be positive and at most --debounce-max (1s)"},
		{args: []string{"serve", "--config-dir", dir, "--xds-auth", "none", "--webhook-addr", ":15017"}, wantCode: 2,
			wantErr: "--webhook-addr serves the Kubernetes API server's admission requests, so it needs --kubeconfig or --in-cluster"},
		{args: []string{"serve", "--kubeconfig", file, "--webhook-addr", "15017"}, wantCode: 2, wantErr: `--webhook-addr "15017" is not host:port or off`},
		{args: []string{"serve", "--kubeconfig", file, "--webhook-hosts", " , "}, wantCode: 2, wantErr: "--webhook-hosts is empty"},
		{args: []string{"serve", "--kubeconfig", file, "--webhook-hosts", "meshd.minimesh-system.svc,Meshd_1"}, wantCode: 2,
			wantErr: `--webhook-hosts: serving certificate host "Meshd_1" is neither an IP address nor a DNS name`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tt.args, &stdout, &stderr)
			code := exitCode(err, &stderr)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d (err %v)", code, tt.wantCode, err)
			}
			if !strings.Contains(stdout.String(), tt.wantOut) {
				t.Errorf("stdout %q does not contain %q", stdout.String(), tt.wantOut)
			}
			if !strings.Contains(stderr.String(), tt.wantErr) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tt.wantErr)
			}
		})
	}
}

// TestAccessLogFlags: the access log is off unless --access-log-file is
// given, and the flags reach translation as MeshConfig would set them.
func TestAccessLogFlags(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want translate.AccessLog
	}{
		{nil, translate.AccessLog{Encoding: translate.AccessLogText}},
		{[]string{"--access-log-file", "/dev/stdout"}, translate.AccessLog{File: "/dev/stdout", Encoding: translate.AccessLogText}},
		{[]string{"--access-log-file", "/var/log/envoy.log", "--access-log-encoding", "json"}, translate.AccessLog{File: "/var/log/envoy.log", Encoding: translate.AccessLogJSON}},
	} {
		args := append([]string{"--config-dir", dir, "--xds-auth", "none"}, c.args...)
		cfg, err := parseServeFlags(args, io.Discard, io.Discard)
		if err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		if cfg.AccessLog != c.want {
			t.Errorf("%q: access log %+v, want %+v", args, cfg.AccessLog, c.want)
		}
	}
}

// waitServeStopped waits for a `meshd serve` whose context was cancelled
// to return, and fails the test if it returns an error or takes longer
// than within.
func waitServeStopped(t *testing.T, done <-chan error, within time.Duration) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve returned %v after cancel, want nil", err)
		}
	case <-time.After(within):
		t.Error("serve did not stop after its context ended")
	}
}
