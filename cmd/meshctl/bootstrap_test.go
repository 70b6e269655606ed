package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"
	"sigs.k8s.io/yaml"
)

// TestBootstrapGolden renders bootstraps and compares them with golden
// files; each output must also parse back into a bootstrap that passes
// Envoy's validation and equals the one the command built.
func TestBootstrapGolden(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("s3cr3t-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		golden   string
		args     []string
		wantNote bool
	}{
		{golden: "sidecar.yaml", args: []string{"--pod", "product-0", "--namespace", "default", "--ip", "10.0.0.11", "--app", "product"}},
		{golden: "sidecar.json", args: []string{"--pod", "product-0", "--namespace", "default", "--ip", "10.0.0.11", "-o", "json"}},
		{golden: "dns-delta-token.yaml", args: []string{"--pod", "stock-0", "--namespace", "shop", "--ip", "fd00::12", "--xds-address", "meshd.minimesh.svc:15010",
			"--cluster-domain", "example.org", "--delta", "--token-file", tokenFile, "--admin-port", "15100"}, wantNote: true},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(append([]string{"bootstrap"}, tt.args...), &stdout, &stderr); code != exitOK {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			if got := strings.Contains(stderr.String(), "token from "+tokenFile+" is copied into the bootstrap"); got != tt.wantNote {
				t.Errorf("stderr %q: token note shown = %v, want %v", stderr.String(), got, tt.wantNote)
			}
			checkGolden(t, "bootstrap/"+tt.golden, stdout.String())

			js := stdout.Bytes()
			if strings.HasSuffix(tt.golden, ".yaml") {
				var err error
				if js, err = yaml.YAMLToJSON(js); err != nil {
					t.Fatalf("output is not YAML: %v", err)
				}
			}
			var parsed bootstrapv3.Bootstrap
			if err := protojson.Unmarshal(js, &parsed); err != nil {
				t.Fatalf("output is not an Envoy bootstrap: %v", err)
			}
			if err := parsed.ValidateAll(); err != nil {
				t.Errorf("printed bootstrap fails validation: %v", err)
			}
			o := parseBootstrapArgs(t, tt.args)
			token := ""
			if o.tokenFile != "" {
				token = "s3cr3t-token"
			}
			want, err := buildBootstrap(o, token)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, &parsed, protocmp.Transform()); diff != "" {
				t.Errorf("printed bootstrap differs from the built one (-built +printed):\n%s", diff)
			}
		})
	}
}

// parseBootstrapArgs reads the flags the way runBootstrap does, for
// comparing with buildBootstrap directly.
func parseBootstrapArgs(t *testing.T, args []string) bootstrapOptions {
	t.Helper()
	o := bootstrapOptions{xdsAddress: "127.0.0.1:15010", clusterDomain: "cluster.local", adminPort: 15000}
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "--delta":
			o.delta = true
			continue
		case "--admin-port":
			o.adminPort = 15100
		}
		v := args[i+1]
		switch args[i] {
		case "--pod":
			o.pod = v
		case "--namespace":
			o.namespace = v
		case "--ip":
			o.ip = v
		case "--app":
			o.app = v
		case "--xds-address":
			o.xdsAddress = v
		case "--cluster-domain":
			o.clusterDomain = v
		case "--token-file":
			o.tokenFile = v
		}
		i++
	}
	return o
}

func TestBootstrapOut(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("tok"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "envoy.yaml")
	var stdout, stderr bytes.Buffer
	code := run([]string{"bootstrap", "--pod", "a-0", "--namespace", "default", "--ip", "10.0.0.1", "--token-file", tokenFile, "--out", out}, &stdout, &stderr)
	if code != exitOK || stdout.Len() != 0 {
		t.Fatalf("exit %d, stdout %q, stderr %s; want 0 and nothing on stdout", code, stdout.String(), stderr.String())
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("bootstrap file mode %v, want 0600: it holds the token", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(out)
	if !strings.Contains(string(b), "value: Bearer tok") {
		t.Errorf("bootstrap file lacks the token metadata:\n%s", b)
	}
}

func TestBootstrapErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	multi := filepath.Join(dir, "multi")
	for path, data := range map[string]string{empty: " \n", multi: "one\ntwo\n"} {
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	base := []string{"bootstrap", "--pod", "a-0", "--namespace", "default", "--ip", "10.0.0.1"}
	tests := []struct {
		args     []string
		wantCode int
		wantErr  string
	}{
		{[]string{"bootstrap", "--namespace", "default", "--ip", "10.0.0.1"}, exitUsage, "--pod is required"},
		{[]string{"bootstrap", "--pod", "a-0", "--ip", "10.0.0.1"}, exitUsage, "--namespace is required"},
		{[]string{"bootstrap", "--pod", "a-0", "--namespace", "default"}, exitUsage, "--ip is required"},
		{append(base[:6:6], "10.0.0"), exitUsage, `--ip "10.0.0" is not an IP address`},
		{[]string{"bootstrap", "--pod", "A_0", "--namespace", "default", "--ip", "10.0.0.1"}, exitUsage, `pod name "A_0" contains 'A'`},
		{append(base, "--xds-address", "meshd"), exitUsage, `--xds-address "meshd" is not HOST:PORT`},
		{append(base, "--xds-address", "meshd:http"), exitUsage, `"http" is not a port number`},
		{append(base, "--xds-address", ":15010"), exitUsage, "names no host"},
		{append(base, "--admin-port", "0"), exitUsage, "--admin-port 0 is not a port number"},
		{append(base, "-o", "toml"), exitUsage, `-o "toml" is not one of yaml, json`},
		{append(base, "--token-file", filepath.Join(dir, "missing")), exitFailed, "cannot read the token file"},
		{append(base, "--token-file", empty), exitFailed, "is empty"},
		{append(base, "--token-file", multi), exitFailed, "holds more than one token"},
		{append(base, "extra"), exitUsage, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args[1:], " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr)
			if code != tt.wantCode || !strings.Contains(stderr.String(), tt.wantErr) || stdout.Len() != 0 {
				t.Errorf("exit %d, stderr %q, stdout %d bytes; want %d, %q, nothing printed", code, stderr.String(), stdout.Len(), tt.wantCode, tt.wantErr)
			}
		})
	}
}
