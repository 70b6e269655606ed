package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/minimesh/minimesh/xds/xdstest"
)

// TestDebugAuthFlags: in Kubernetes mode the API server decides who reads
// /debug/*; with the file source it stays on loopback unless --debug-auth
// says otherwise.
func TestDebugAuthFlags(t *testing.T) {
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	file := []string{"serve", "--config-dir", dir, "--xds-auth", "none"}
	kube := []string{"serve", "--kubeconfig", kubeconfig}
	for _, tc := range []struct {
		args    []string
		want    string // DebugAuth chosen, or
		wantErr string
	}{
		{args: file, want: "none"},
		{args: append(file, "--monitoring-addr", "[::1]:15014"), want: "none"},
		{args: append(file, "--monitoring-addr", "localhost:15014"), want: "none"},
		{args: append(file, "--monitoring-addr", "0.0.0.0:15014"), wantErr: "is not a loopback address"},
		{args: append(file, "--monitoring-addr", ":15014"), wantErr: "is not a loopback address"},
		{args: append(file, "--monitoring-addr", "meshd.example:15014"), wantErr: "is not a loopback address"},
		{args: append(file, "--monitoring-addr", "0.0.0.0:15014", "--debug-auth", "none"), want: "none"},
		{args: append(file, "--monitoring-addr", "0.0.0.0:15014", "--debug-auth", "token", "--debug-token-file", kubeconfig), want: "token"},
		{args: append(file, "--debug-auth", "token"), wantErr: "--debug-auth=token needs --debug-token-file"},
		{args: append(file, "--debug-auth", "kubernetes"), wantErr: "needs --kubeconfig or --in-cluster"},
		{args: append(file, "--debug-token-file", kubeconfig), wantErr: "--debug-token-file is only read with --debug-auth=token, not none"},
		{args: append(file, "--debug-auth", "open"), wantErr: `--debug-auth "open" is not one of`},
		{args: kube, want: "kubernetes"},
		{args: append(kube, "--monitoring-addr", "0.0.0.0:15014"), want: "kubernetes"},
		{args: append(kube, "--debug-auth", "none", "--monitoring-addr", "0.0.0.0:15014"), want: "none"},
	} {
		t.Run(strings.Join(tc.args[1:], " "), func(t *testing.T) {
			cfg, err := parseServeFlags(tc.args[1:], io.Discard, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.DebugAuth != tc.want {
				t.Errorf("--debug-auth is %q, want %q", cfg.DebugAuth, tc.want)
			}
		})
	}
}

// TestKindManifestKeepsDebugPrivate reads meshd's command line from the
// kind guide's Deployment: it listens on every interface, so the debug
// API must not be left without a check.
func TestKindManifestKeepsDebugPrivate(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "examples", "kind", "meshd.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var args []string
	for {
		var d appsv1.Deployment
		if err := dec.Decode(&d); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if d.Kind != "Deployment" {
			continue
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			if c.Name == "meshd" {
				args = c.Args
			}
		}
	}
	if len(args) == 0 || args[0] != "serve" {
		t.Fatalf("no meshd serve command in examples/kind/meshd.yaml (args %q)", args)
	}
	cfg, err := parseServeFlags(args[1:], io.Discard, io.Discard)
	if err != nil {
		t.Fatalf("meshd would not start with the guide's flags: %v", err)
	}
	if cfg.DebugAuth == "none" && !loopback(cfg.MonitoringAddr) {
		t.Errorf("the kind guide serves /debug/* without a check on %s", cfg.MonitoringAddr)
	}
}

// TestServeDebugAuthToken runs meshd with the file source and
// --debug-auth=token: /debug/* (and the profiler) need a listed token,
// metrics and probes do not.
func TestServeDebugAuthToken(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ns.yaml"), []byte("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tokens := filepath.Join(t.TempDir(), "debug-tokens")
	if err := os.WriteFile(tokens, []byte("reader-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mon := freeLocalAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr xdstest.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--config-dir", dir, "--log-format", "json", "--xds-auth", "none", "--pprof",
			"--debug-auth", "token", "--debug-token-file", tokens,
			"--ca-dir", t.TempDir(), "--xds-addr", "127.0.0.1:0", "--monitoring-addr", mon}, &stdout, &stderr)
	}()
	defer func() {
		cancel()
		waitServeStopped(t, done, 10*time.Second)
	}()
	waitFor(t, 10*time.Second, "/readyz", func() bool {
		code, _ := httpGet("http://" + mon + "/readyz")
		return code == http.StatusOK
	})
	get := func(path, token string) int {
		req, err := http.NewRequest(http.MethodGet, "http://"+mon+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		path, token string
		code        int
	}{
		{"/debug/syncz", "", http.StatusUnauthorized},
		{"/debug/syncz", "wrong", http.StatusUnauthorized},
		{"/debug/syncz", "reader-token", http.StatusOK},
		{"/debug/model", "reader-token", http.StatusOK},
		{"/debug/pprof/", "", http.StatusUnauthorized},
		{"/debug/pprof/", "reader-token", http.StatusOK},
		{"/metrics", "", http.StatusOK},
		{"/healthz", "", http.StatusOK},
	} {
		if got := get(tc.path, tc.token); got != tc.code {
			t.Errorf("%s with token %q: %d, want %d", tc.path, tc.token, got, tc.code)
		}
	}
}
