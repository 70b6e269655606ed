package main

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/minimesh/minimesh/xds"
)

// TestProxyStatus lists the shop's four proxies: one in sync, one
// proxyless (no SDS requested), one NACKing its routes, one waiting.
func TestProxyStatus(t *testing.T) {
	m, _ := shop(t)
	code, stdout, stderr := m.meshctl("proxy-status")
	if code != exitOK || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	// Versions are content hashes of the translated config: any change to
	// translation changes them, which is not what this test is about (the
	// digest has its own table test). Mask them so the golden file only
	// pins the layout and the states.
	checkGolden(t, "proxystatus/shop.golden", versionRE.ReplaceAllString(stdout, "<version>"))
}

var versionRE = regexp.MustCompile(`\b[0-9a-f]{8,16}\b`)

// TestWriteProxyStatus covers what a live meshd rarely shows: no proxies,
// not ready, a refused stream, a group that kept its last good config.
func TestWriteProxyStatus(t *testing.T) {
	tests := []struct {
		name string
		st   xds.SyncStatus
		want string
	}{
		{name: "empty", st: xds.SyncStatus{Ready: true}, want: "no proxies are connected to meshd\n"},
		{name: "not ready", st: xds.SyncStatus{}, want: "meshd is not ready: it has not published its first configuration yet\nno proxies are connected to meshd\n"},
		{
			name: "refused and bad group",
			st: xds.SyncStatus{Ready: true,
				Proxies: []xds.ProxyStatus{
					{NodeID: "sidecar~10.0.0.1~a-0.shop~shop.svc.cluster.local", Flavor: "envoy", Refused: "node ID claims namespace shop, token proves other", ConnectedAt: time.Unix(0, 0)},
					{NodeID: "sidecar~10.0.0.2~b-0.shop~shop.svc.cluster.local", Workload: "shop/b-0", Flavor: "envoy", Group: "g1",
						Types: map[string]xds.TypeStatus{"cds": {State: xds.StateSynced, Current: "c1", Acked: "c1"}, "lds": {State: xds.StateStale, Current: "l2", Sent: "l2", Acked: "l1"}}},
				},
				Groups: []xds.GroupStatus{{Key: "g1", Proxies: 1, Error: "listener x: invalid", ErrorKind: "validation"}},
			},
			want: "NAME       FLAVOR   CDS       LDS       EDS       RDS       SDS       VERSION\n" +
				"a-0.shop   envoy    REFUSED   REFUSED   REFUSED   REFUSED   REFUSED   -\n" +
				"b-0.shop   envoy    SYNCED    STALE     -         -         -         " + configVersion(xds.ProxyStatus{Types: map[string]xds.TypeStatus{"cds": {Current: "c1"}, "lds": {Current: "l2"}}}) + "\n" +
				"\n" +
				"a-0.shop REFUSED: node ID claims namespace shop, token proves other\n" +
				"group g1 (1 proxies) keeps its last good configuration: validation: listener x: invalid\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			if err := writeProxyStatus(&b, tt.st); err != nil {
				t.Fatal(err)
			}
			if b.String() != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", b.String(), tt.want)
			}
		})
	}
}

func TestConfigVersion(t *testing.T) {
	a := xds.ProxyStatus{Types: map[string]xds.TypeStatus{"cds": {Current: "1"}, "lds": {Current: "2"}}}
	b := xds.ProxyStatus{Types: map[string]xds.TypeStatus{"cds": {Current: "1"}, "lds": {Current: "3"}}}
	// SDS differs per proxy (each has its own certificate); it must not
	// make two proxies with the same config look different.
	c := xds.ProxyStatus{Types: map[string]xds.TypeStatus{"cds": {Current: "1"}, "lds": {Current: "2"}, "sds": {Current: "x"}}}
	if configVersion(a) == configVersion(b) || configVersion(a) != configVersion(c) {
		t.Errorf("configVersion: a=%s b=%s c=%s; want a≠b and a=c", configVersion(a), configVersion(b), configVersion(c))
	}
	if got := configVersion(xds.ProxyStatus{}); got != "-" {
		t.Errorf("configVersion of a proxy with nothing = %q, want -", got)
	}
}

// TestNewCommandsHelp checks that each command answers --help on stdout
// with exit 0, and that they are listed in meshctl's usage.
func TestNewCommandsHelp(t *testing.T) {
	for cmd, want := range map[string]string{
		"bootstrap":    "Usage: meshctl bootstrap --pod NAME --namespace NS --ip IP",
		"proxy-config": "Usage: meshctl proxy-config listeners|clusters|routes|endpoints|secrets POD[.NAMESPACE]",
		"proxy-status": "Usage: meshctl proxy-status [--meshd URL]",
	} {
		var stdout, stderr strings.Builder
		if code := run([]string{cmd, "--help"}, &stdout, &stderr); code != exitOK || !strings.HasPrefix(stdout.String(), want) {
			t.Errorf("%s --help: exit %d, stdout starts %.80q; want 0 and %q", cmd, code, stdout.String(), want)
		}
		var usage strings.Builder
		run([]string{"help"}, &usage, &usage)
		if !strings.Contains(usage.String(), "\n  "+cmd+" ") {
			t.Errorf("meshctl help does not list %s:\n%s", cmd, usage.String())
		}
	}
}
