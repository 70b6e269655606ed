package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/minimesh/minimesh/discovery/file"
	"github.com/minimesh/minimesh/xds"
	"github.com/minimesh/minimesh/xds/auth"
	"github.com/minimesh/minimesh/xds/ca"
	"github.com/minimesh/minimesh/xds/xdstest"
)

// waitBound bounds every wait; passing tests finish far sooner.
const waitBound = 10 * time.Second

// testMeshd is a real xds.Server serving ADS on loopback and its debug API
// through httptest, loaded with a manifest directory.
type testMeshd struct {
	t    *testing.T
	srv  *xds.Server
	url  string
	conn *grpc.ClientConn
	ctx  context.Context
}

func startMeshd(t *testing.T, manifest string) *testMeshd {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	authority, err := ca.New(ca.Options{Dir: t.TempDir()}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := xds.New(xds.Options{DebounceAfter: 5 * time.Millisecond, DebounceMax: 50 * time.Millisecond, CA: authority, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	m := file.Build([]file.File{{Path: filepath.Base(manifest), Data: data}}, file.Options{})
	for _, p := range m.Problems {
		if p.Severity == "error" {
			t.Fatalf("test manifest problem: %v", p)
		}
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis) }()
	web := httptest.NewServer(srv.Handler())
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		web.Close()
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	md := &testMeshd{t: t, srv: srv, url: web.URL, conn: conn, ctx: ctx}
	srv.Update(m)
	md.eventually("meshd ready", srv.Ready)
	return md
}

func (m *testMeshd) eventually(what string, cond func() bool) {
	m.t.Helper()
	deadline := time.Now().Add(waitBound)
	for !cond() {
		if time.Now().After(deadline) {
			m.t.Fatalf("timed out waiting for %s; syncz: %+v", what, m.srv.SyncStatus())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// connect starts an Envoy-like (or, with GENERATOR=grpc metadata,
// proxyless) ADS client for a pod.
func (m *testMeshd) connect(pod, ns, ip string, tweak func(*xdstest.Options)) (*xdstest.Client, string) {
	m.t.Helper()
	node := auth.SidecarNodeID(ip, pod, ns, "cluster.local").String()
	opts := xdstest.Options{NodeID: node}
	if tweak != nil {
		tweak(&opts)
	}
	ctx, cancel := context.WithCancel(m.ctx)
	m.t.Cleanup(cancel)
	return xdstest.Start(ctx, m.conn, opts), node
}

// waitStates waits until meshd reports these states for the node.
func (m *testMeshd) waitStates(node string, want map[string]string) {
	m.t.Helper()
	m.eventually(node+" to reach "+cmp.Diff(nil, want), func() bool {
		for _, p := range m.srv.SyncStatus().Proxies {
			if p.NodeID != node {
				continue
			}
			for typ, state := range want {
				if p.Types[typ].State != state {
					return false
				}
			}
			return true
		}
		return false
	})
}

// meshctl runs a command line against the test meshd.
func (m *testMeshd) meshctl(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(append(args, "--meshd", m.url), &out, &errOut)
	return code, out.String(), errOut.String()
}

// checkGolden compares got with testdata/NAME, rewriting it with -update.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s (-want +got):\n%s", name, diff)
	}
}

func TestSplitPodArg(t *testing.T) {
	tests := []struct {
		arg, namespace, wantPod, wantNS string
	}{
		{"product-0", "", "product-0", "default"},
		{"product-0.shop", "", "product-0", "shop"},
		{"web.v1-0.shop", "", "web.v1-0", "shop"},
		{"web.v1-0", "shop", "web.v1-0", "shop"},
		{"trailing.", "", "trailing.", "default"},
		{".leading", "", ".leading", "default"},
	}
	for _, tt := range tests {
		pod, ns := splitPodArg(tt.arg, tt.namespace)
		if pod != tt.wantPod || ns != tt.wantNS {
			t.Errorf("splitPodArg(%q, %q) = %q, %q; want %q, %q", tt.arg, tt.namespace, pod, ns, tt.wantPod, tt.wantNS)
		}
	}
}

func TestNewDebugClient(t *testing.T) {
	tests := []struct {
		in, want, wantErr string
	}{
		{in: "127.0.0.1:15014", want: "http://127.0.0.1:15014"},
		{in: "https://meshd.example:443/prefix", want: "https://meshd.example:443/prefix"},
		{in: "", wantErr: "--meshd is empty"},
		{in: "ftp://x", wantErr: `scheme "ftp" is not http or https`},
		{in: "http://", wantErr: "names no host"},
	}
	for _, tt := range tests {
		c, err := newDebugClient(tt.in, "")
		switch {
		case tt.wantErr != "":
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tt.wantErr)) {
				t.Errorf("newDebugClient(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
			}
		case err != nil:
			t.Errorf("newDebugClient(%q): %v", tt.in, err)
		case c.base.String() != tt.want:
			t.Errorf("newDebugClient(%q) base = %s, want %s", tt.in, c.base, tt.want)
		}
	}
}
