package auth

import (
	"errors"
	"strings"
	"testing"
)

func TestParseNodeID(t *testing.T) {
	tests := []struct {
		id   string
		want NodeID
		// wantErr is a fragment of the error; "" means the ID is valid.
		wantErr string
	}{
		{id: "sidecar~10.1.2.3~hello-world-rest-api-7d9f8-abcde.back-end~back-end.svc.cluster.local",
			want: NodeID{"sidecar", "10.1.2.3", "hello-world-rest-api-7d9f8-abcde", "back-end", "back-end.svc.cluster.local"}},
		{id: "sidecar~fd00::1~web-0.default~default.svc.cluster.local",
			want: NodeID{"sidecar", "fd00::1", "web-0", "default", "default.svc.cluster.local"}},
		{id: "sidecar~FD00:0:0::1~web-0.default~default.svc.cluster.local",
			want: NodeID{"sidecar", "fd00::1", "web-0", "default", "default.svc.cluster.local"}},
		// Pod names may contain dots; the namespace follows the last one.
		{id: "sidecar~10.0.0.1~web.v1.default~default.svc.example.org",
			want: NodeID{"sidecar", "10.0.0.1", "web.v1", "default", "default.svc.example.org"}},

		{id: "", wantErr: "it is empty"},
		{id: "sidecar~10.0.0.1~web.default", wantErr: "3 '~'-separated parts instead of 4"},
		{id: "sidecar~10.0.0.1~web.default~default.svc.cluster.local~x", wantErr: "5 '~'-separated parts"},
		{id: "router~10.0.0.1~gw.istio-system~istio-system.svc.cluster.local", wantErr: `node type "router" is not supported`},
		{id: "Sidecar~10.0.0.1~web.default~default.svc.cluster.local", wantErr: `node type "Sidecar"`},
		{id: "sidecar~10.0.0~web.default~default.svc.cluster.local", wantErr: `"10.0.0" is not an IP address`},
		{id: "sidecar~~web.default~default.svc.cluster.local", wantErr: `"" is not an IP address`},
		{id: "sidecar~fe80::1%eth0~web.default~default.svc.cluster.local", wantErr: "has a zone"},
		{id: "sidecar~10.0.0.1~web~default.svc.cluster.local", wantErr: `"web" is not <pod>.<namespace>`},
		{id: "sidecar~10.0.0.1~.default~default.svc.cluster.local", wantErr: "the pod name before \".default\" is empty"},
		{id: "sidecar~10.0.0.1~web.~default.svc.cluster.local", wantErr: `namespace "" is empty`},
		{id: "sidecar~10.0.0.1~web.Default~default.svc.cluster.local", wantErr: `namespace "Default" has 'D'`},
		{id: "sidecar~10.0.0.1~we/b.default~default.svc.cluster.local", wantErr: `pod name "we/b" contains '/'`},
		{id: "sidecar~10.0.0.1~web.default~", wantErr: "DNS domain after the last '~' is empty"},
		{id: "sidecar~10.0.0.1~web.default~default svc", wantErr: `DNS domain "default svc" contains ' '`},
		{id: "sidecar~10.0.0.1~" + strings.Repeat("a", 2000) + ".default~d", wantErr: "bytes long"},
		// The domain is the namespace's, in some cluster domain.
		{id: "sidecar~10.0.0.1~web.default~other.svc.cluster.local", wantErr: `DNS domain "other.svc.cluster.local" is not default.svc.<cluster domain>`},
		{id: "sidecar~10.0.0.1~web.default~default.cluster.local", wantErr: `is not default.svc.<cluster domain>`},
		{id: "sidecar~10.0.0.1~web.default~default.svc.", wantErr: `is not default.svc.<cluster domain>`},
		{id: "sidecar~10.0.0.1~web.default~default.svc", wantErr: `is not default.svc.<cluster domain>`},
		{id: "sidecar~10.0.0.1~web.default~default.svc..local", wantErr: `is not default.svc.<cluster domain>`},
	}
	for _, tt := range tests {
		name := tt.id
		if len(name) > 80 {
			name = name[:80]
		}
		t.Run(name, func(t *testing.T) {
			got, err := ParseNodeID(tt.id)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseNodeID succeeded with %+v, want an error containing %q", got, tt.wantErr)
				}
				if !errors.Is(err, ErrBadNodeID) {
					t.Errorf("error %q does not wrap ErrBadNodeID", err)
				}
				if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), nodeIDForm) {
					t.Errorf("error %q should contain %q and the expected form", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseNodeID: %v", err)
			}
			if got != tt.want {
				t.Fatalf("ParseNodeID = %+v, want %+v", got, tt.want)
			}
			// String round-trips through the parser.
			again, err := ParseNodeID(got.String())
			if err != nil || again != got {
				t.Errorf("ParseNodeID(%q) = %+v, %v; want %+v", got.String(), again, err, got)
			}
		})
	}
}

func TestSidecarNodeID(t *testing.T) {
	n := SidecarNodeID("10.1.2.3", "nginx-0", "front-end", "cluster.local")
	const want = "sidecar~10.1.2.3~nginx-0.front-end~front-end.svc.cluster.local"
	if n.String() != want {
		t.Fatalf("String = %q, want %q", n.String(), want)
	}
	if parsed, err := ParseNodeID(want); err != nil || parsed != n {
		t.Fatalf("ParseNodeID(%q) = %+v, %v; want %+v", want, parsed, err, n)
	}
	if got := n.ClusterDomain(); got != "cluster.local" {
		t.Errorf("ClusterDomain = %q, want cluster.local", got)
	}
}
