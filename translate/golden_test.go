package translate

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/minimesh/minimesh/discovery/file"
	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

var update = flag.Bool("update", false, "rewrite the expected files under testdata/ from the current output")

// goldenJWKS stands in for the key sets meshd fetches for jwksUri: one URI
// is "fetched", any other is not (and must fail closed).
var goldenJWKS = map[string]string{
	"https://issuer.example.com/.well-known/jwks.json": `{"keys":[{"kty":"EC","crv":"P-256","kid":"fetched","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}`,
}

// outputKinds are the files each case produces, in this order.
var outputKinds = []string{"listeners", "routes", "clusters", "endpoints", "problems"}

// TestGoldenEnvoy translates every testdata/envoy/<case>.yaml for the proxy
// its first line names ("# proxy: <namespace>/<pod>") and compares the
// result with <case>.<kind>.yaml. Every case also has to pass ValidateAll,
// CheckReferences and go-control-plane's snapshot consistency check, as the
// xDS layer requires before publishing.
func TestGoldenEnvoy(t *testing.T) { runGolden(t, FlavorEnvoy, "envoy") }

// TestGoldenProxyless does the same for proxyless gRPC workloads under
// testdata/proxyless, whose proxy is ProxyFor(FlavorProxyless, pod).
// go-control-plane's consistency check reports client API listeners' route
// names as missing, so CheckReferences alone stands in for it.
func TestGoldenProxyless(t *testing.T) { runGolden(t, FlavorProxyless, "proxyless") }

// runGolden is the one harness for both flavours' golden cases.
func runGolden(t *testing.T, flavor Flavor, subdir string) {
	dir := filepath.Join("testdata", subdir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	expected := map[string]bool{}
	var cases []string
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".yaml") {
			continue
		}
		if isOutputFile(name) {
			expected[name] = true
			continue
		}
		cases = append(cases, strings.TrimSuffix(name, ".yaml"))
	}
	if len(cases) == 0 {
		t.Fatalf("no cases under %s", dir)
	}
	used := map[string]bool{}
	for _, c := range cases {
		t.Run(c, func(t *testing.T) {
			outputs := translateCase(t, filepath.Join(dir, c+".yaml"), flavor)
			for _, kind := range outputKinds {
				name := c + "." + kind + ".yaml"
				got, ok := outputs[kind]
				if !ok {
					continue // e.g. no problems: no file
				}
				used[name] = true
				compareGolden(t, filepath.Join(dir, name), got)
			}
		})
	}
	// Expected files that no case produces any more are stale: -update
	// deletes them, otherwise they fail the test so they cannot linger.
	for name := range expected {
		if used[name] {
			continue
		}
		if *update {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				t.Error(err)
			}
			continue
		}
		t.Errorf("%s is not produced by any case; run go test ./translate/... -update to delete it", name)
	}
}

func isOutputFile(name string) bool {
	for _, kind := range outputKinds {
		if strings.HasSuffix(name, "."+kind+".yaml") {
			return true
		}
	}
	return false
}

// translateCase builds the snapshot, translates, checks validity and
// consistency, and renders every output as YAML.
func translateCase(t *testing.T, path string, flavor Flavor) map[string][]byte {
	t.Helper()
	snap, proxy := loadCase(t, path, flavor)
	res := Translate(snap, proxy, caseOptions(t, path))
	if err := res.Validate(); err != nil {
		t.Errorf("generated resources are invalid:\n%v", err)
	}
	if err := checkConsistency(res, flavor); err != nil {
		t.Errorf("generated resources are not a consistent snapshot: %v", err)
	}
	out := map[string][]byte{
		"listeners": renderYAML(t, res.Listeners),
		"routes":    renderYAML(t, res.Routes),
		"clusters":  renderYAML(t, res.Clusters),
		"endpoints": renderYAML(t, res.Endpoints),
	}
	if len(res.Problems) > 0 {
		var lines []string
		for _, p := range res.Problems {
			lines = append(lines, p.Error())
		}
		b, err := yaml.Marshal(lines)
		if err != nil {
			t.Fatal(err)
		}
		out["problems"] = b
	}
	return out
}

// caseOptions are the translation options of a case: goldenJWKS, and the
// mesh settings its header comment names, one per line
// ("# accessLogFile: /dev/stdout", "# accessLogEncoding: JSON").
func caseOptions(t *testing.T, path string) Options {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{JWKS: goldenJWKS}
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "#") {
			break
		}
		key, value, _ := strings.Cut(strings.TrimSpace(strings.TrimPrefix(line, "#")), ": ")
		switch key {
		case "accessLogFile":
			opts.AccessLog.File = value
		case "accessLogEncoding":
			if opts.AccessLog.Encoding, err = ParseAccessLogEncoding(value); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
		}
	}
	return opts
}

// loadCase parses a case file with the file discovery builder and returns
// the snapshot and the proxy its "# proxy: ns/pod" line names. Any error
// in the input fails the test: a case must say what it means.
func loadCase(t *testing.T, path string, flavor Flavor) (*model.Snapshot, Proxy) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := bufio.NewReader(bytes.NewReader(data)).ReadLine()
	ref, ok := strings.CutPrefix(string(line), "# proxy: ")
	ns, pod, ok2 := strings.Cut(strings.TrimSpace(ref), "/")
	if !ok || !ok2 {
		t.Fatalf("%s: the first line must be \"# proxy: <namespace>/<pod>\", got %q", path, line)
	}
	snap := file.Build([]file.File{{Path: path, Data: data}}, file.Options{})
	for _, p := range snap.Problems {
		if p.Severity == policy.SeverityError {
			t.Errorf("input problem: %v", p)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	w := snap.Workload(ns, pod)
	if w == nil {
		t.Fatalf("%s: pod %s/%s is not in the input", path, ns, pod)
	}
	return snap, ProxyFor(flavor, w)
}

// checkConsistency is what the xDS layer checks before publishing:
// CheckReferences for both flavours, and go-control-plane's own check too
// for Envoy (it cannot judge proxyless API listeners).
func checkConsistency(res *Resources, flavor Flavor) error {
	if err := res.CheckReferences(); err != nil {
		return err
	}
	if flavor == FlavorEnvoy {
		return consistent(res)
	}
	return nil
}

// consistent checks what go-control-plane's ADS snapshot cache checks:
// every EDS cluster has its ClusterLoadAssignment and every RDS name its
// route configuration, with nothing left over.
func consistent(res *Resources) error {
	snap, err := cachev3.NewSnapshot("1", map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: toResources(res.Listeners),
		resourcev3.RouteType:    toResources(res.Routes),
		resourcev3.ClusterType:  toResources(res.Clusters),
		resourcev3.EndpointType: toResources(res.Endpoints),
		resourcev3.SecretType:   {},
	})
	if err != nil {
		return err
	}
	return snap.Consistent()
}

func toResources[T types.Resource](in []T) []types.Resource {
	out := make([]types.Resource, 0, len(in))
	for _, r := range in {
		out = append(out, r)
	}
	return out
}

// renderYAML renders resources as protojson (field names as Envoy's docs
// and istioctl print them) converted to YAML, which also normalises
// protojson's deliberately unstable whitespace.
func renderYAML[T proto.Message](t *testing.T, msgs []T) []byte {
	t.Helper()
	list := make([]json.RawMessage, 0, len(msgs))
	for _, m := range msgs {
		b, err := protojson.MarshalOptions{UseProtoNames: false}.Marshal(m)
		if err != nil {
			t.Fatalf("marshal %T: %v", m, err)
		}
		list = append(list, b)
	}
	j, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	y, err := yaml.JSONToYAML(j)
	if err != nil {
		t.Fatal(err)
	}
	return y
}

func compareGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./translate/... -update to create it)", err)
	}
	if diff := cmp.Diff(strings.Split(string(want), "\n"), strings.Split(string(got), "\n")); diff != "" {
		t.Errorf("%s differs from the output (-want +got); if the change is intended, run go test ./translate/... -update:\n%s", path, diff)
	}
}

// TestDeterministic translates the same input twice, from two separately
// built snapshots, and requires byte-identical deterministic encodings.
func TestDeterministic(t *testing.T) {
	for _, c := range []struct {
		flavor Flavor
		path   string
	}{
		{FlavorEnvoy, filepath.Join("testdata", "envoy", "jwt-request-principals.yaml")},
		{FlavorProxyless, filepath.Join("testdata", "proxyless", "jwt-token-deny.yaml")},
		{FlavorProxyless, filepath.Join("testdata", "proxyless", "no-policy.yaml")},
	} {
		t.Run(string(c.flavor)+"/"+filepath.Base(c.path), func(t *testing.T) { testDeterministic(t, c.flavor, c.path) })
	}
}

func testDeterministic(t *testing.T, flavor Flavor, path string) {
	encode := func() []byte {
		snap, proxy := loadCase(t, path, flavor)
		res := Translate(snap, proxy, Options{JWKS: goldenJWKS})
		var buf bytes.Buffer
		opts := proto.MarshalOptions{Deterministic: true}
		for _, group := range [][]proto.Message{toMessages(res.Listeners), toMessages(res.Routes), toMessages(res.Clusters), toMessages(res.Endpoints)} {
			for _, m := range group {
				b, err := opts.Marshal(m)
				if err != nil {
					t.Fatal(err)
				}
				buf.Write(b)
			}
		}
		return buf.Bytes()
	}
	first := encode()
	for range 5 {
		if !bytes.Equal(first, encode()) {
			t.Fatal("two translations of the same input differ")
		}
	}
}

func toMessages[T proto.Message](in []T) []proto.Message {
	out := make([]proto.Message, 0, len(in))
	for _, m := range in {
		out = append(out, m)
	}
	return out
}

// TestCasesCoverIssue keeps the list of golden cases the issue asks for
// from shrinking unnoticed.
func TestCasesCoverIssue(t *testing.T) {
	for _, c := range []string{
		"no-policy", "namespace-strict", "workload-override", "port-disable-in-strict",
		"mesh-strict-namespace-permissive", "dr-disable", "dr-simple", "dr-mutual", "dr-istio-mutual",
		"dr-port-level", "auto-mtls-mixed", "deny-all", "allow-principal-method-path",
		"deny-beats-allow", "when-conditions", "jwt-request-principals", "tcp-l4-rbac", "tcp-l7-rule",
		"dry-run", "access-log-audit", "access-log-json",
	} {
		if _, err := os.Stat(filepath.Join("testdata", "envoy", c+".yaml")); err != nil {
			t.Errorf("golden case %s is missing: %v", c, err)
		}
	}
	for _, c := range []string{
		"no-policy", "namespace-strict", "port-disable-in-strict", "dr-disable-to-strict", "deny-all",
		"allow-principal-method-path", "deny-beats-allow", "jwt-token-deny", "auto-mtls-mixed", "dry-run",
		"access-log-audit",
	} {
		if _, err := os.Stat(filepath.Join("testdata", "proxyless", c+".yaml")); err != nil {
			t.Errorf("proxyless golden case %s is missing: %v", c, err)
		}
	}
}
