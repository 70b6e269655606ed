package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/minimesh/minimesh/xds"
	"github.com/minimesh/minimesh/xds/auth"

	// The config dump carries every resource as an Any; decoding it needs
	// the Go types of every filter, transport socket and extension meshd
	// can send. translate builds all of them, so linking it registers them.
	_ "github.com/minimesh/minimesh/translate"
)

// defaultMeshd is meshd's default --monitoring-addr as a URL.
const defaultMeshd = "http://127.0.0.1:15014"

// debugTimeout bounds one request to meshd: the debug API answers from
// memory, so a slow answer means meshd is not there.
const debugTimeout = 15 * time.Second

// maxDebugBody bounds what meshctl reads from meshd, so a wrong --meshd
// pointing at something that streams forever cannot exhaust memory.
const maxDebugBody = 256 << 20

// tokenEnv names the environment variable that may hold the bearer token
// for meshd's debug API, when --token-file is not given.
const tokenEnv = "MESHCTL_TOKEN"

// debugFlags are the flags of every command that reads meshd's debug API.
type debugFlags struct {
	meshd, tokenFile string
}

func (d *debugFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.meshd, "meshd", defaultMeshd, "meshd's monitoring address (its --monitoring-addr)")
	fs.StringVar(&d.tokenFile, "token-file", "", "file holding a bearer token for meshd's debug API, needed when meshd checks who reads it "+
		"(--debug-auth; in Kubernetes: kubectl create token ..., for an account bound to minimesh-debug-reader); default: $"+tokenEnv)
}

// client returns a debug client with the token of --token-file, or of
// $MESHCTL_TOKEN, if either is set.
func (d *debugFlags) client() (*debugClient, error) {
	token := os.Getenv(tokenEnv)
	if d.tokenFile != "" {
		b, err := os.ReadFile(d.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			return nil, fmt.Errorf("--token-file %s is empty", d.tokenFile)
		}
	}
	return newDebugClient(d.meshd, strings.TrimSpace(token))
}

// debugClient reads meshd's debug API (see xds/debug.go).
type debugClient struct {
	base  *url.URL
	http  *http.Client
	token string // sent as a bearer token when not empty
}

// newDebugClient accepts "http://host:port", "host:port" or a URL with a
// path prefix (when meshd sits behind a proxy), and the bearer token to
// send, if any.
func newDebugClient(raw, token string) (*debugClient, error) {
	if raw == "" {
		return nil, errors.New("--meshd is empty; pass meshd's monitoring address, e.g. " + defaultMeshd)
	}
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("--meshd %q is not a URL: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("--meshd %q: scheme %q is not http or https", raw, u.Scheme)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("--meshd %q names no host; pass e.g. %s", raw, defaultMeshd)
	}
	return &debugClient{base: u, http: &http.Client{Timeout: debugTimeout}, token: token}, nil
}

// get fetches one debug path and returns the body of a 200 answer.
func (c *debugClient) get(ctx context.Context, path string, query url.Values) ([]byte, error) {
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("building the request for %s: %w", u.String(), err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach meshd's debug API at %s (is meshd running, and is --meshd its --monitoring-addr?): %w", c.base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDebugBody))
	if err != nil {
		return nil, fmt.Errorf("reading %s from meshd: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		msg := strings.TrimSpace(string(body))
		if len(msg) > 500 {
			msg = msg[:500] + "..."
		}
		hint := ""
		switch {
		case resp.StatusCode == http.StatusUnauthorized && c.token == "":
			hint = "; meshd checks who reads its debug API: pass a token with --token-file or $" + tokenEnv
		case resp.StatusCode == http.StatusForbidden:
			hint = "; the token's user needs get on /debug/* (ClusterRole minimesh-debug-reader)"
		}
		return nil, fmt.Errorf("meshd answered %s for %s: %s%s", resp.Status, path, msg, hint)
	}
	return body, nil
}

// syncz reads /debug/syncz.
func (c *debugClient) syncz(ctx context.Context) (xds.SyncStatus, error) {
	var st xds.SyncStatus
	body, err := c.get(ctx, "/debug/syncz", nil)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("meshd's /debug/syncz is not the sync status this meshctl understands (is meshctl older than meshd?): %w", err)
	}
	return st, nil
}

// configDump reads /debug/config_dump for one node ID.
func (c *debugClient) configDump(ctx context.Context, nodeID string) (*adminv3.ConfigDump, error) {
	body, err := c.get(ctx, "/debug/config_dump", url.Values{"proxy": {nodeID}})
	if err != nil {
		return nil, err
	}
	dump := &adminv3.ConfigDump{}
	if err := protojson.Unmarshal(body, dump); err != nil {
		return nil, fmt.Errorf("meshd's config dump for %s cannot be decoded (a type this meshctl does not know means meshctl is older than meshd): %w", nodeID, err)
	}
	return dump, nil
}

// proxyName is how meshctl names a proxy: pod.namespace, as istioctl does.
// It is read from the node ID so that waiting proxies have a name too.
func proxyName(p xds.ProxyStatus) string {
	if id, err := auth.ParseNodeID(p.NodeID); err == nil {
		return id.Pod + "." + id.Namespace
	}
	if p.Workload != "" {
		if ns, pod, ok := strings.Cut(p.Workload, "/"); ok {
			return pod + "." + ns
		}
	}
	return p.NodeID
}

// splitPodArg reads "<pod>[.<namespace>]". Pod names may contain dots;
// like istioctl, the part after the last dot is the namespace unless
// --namespace is given, in which case the whole argument is the pod.
func splitPodArg(arg, namespace string) (pod, ns string) {
	if namespace != "" {
		return arg, namespace
	}
	if i := strings.LastIndexByte(arg, '.'); i > 0 && i < len(arg)-1 {
		return arg[:i], arg[i+1:]
	}
	return arg, "default"
}

// findProxy picks the proxy of pod in ns from the sync status. Several
// streams for one pod (a reconnect racing the old stream's cleanup) are
// resolved in favour of the newest.
func findProxy(st xds.SyncStatus, pod, ns string) (xds.ProxyStatus, error) {
	var found []xds.ProxyStatus
	for _, p := range st.Proxies {
		if proxyName(p) == pod+"."+ns {
			found = append(found, p)
		}
	}
	if len(found) > 0 {
		return slices.MaxFunc(found, func(a, b xds.ProxyStatus) int { return a.ConnectedAt.Compare(b.ConnectedAt) }), nil
	}
	names := make([]string, 0, len(st.Proxies))
	for _, p := range st.Proxies {
		names = append(names, proxyName(p))
	}
	slices.Sort(names)
	names = slices.Compact(names)
	if len(names) == 0 {
		return xds.ProxyStatus{}, fmt.Errorf("no proxy for pod %s in namespace %s is connected to meshd; no proxy is connected at all", pod, ns)
	}
	return xds.ProxyStatus{}, fmt.Errorf("no proxy for pod %s in namespace %s is connected to meshd; connected proxies: %s", pod, ns, strings.Join(names, ", "))
}

// groupOf returns the proxy's group status, if meshd reports one.
func groupOf(st xds.SyncStatus, p xds.ProxyStatus) (xds.GroupStatus, bool) {
	for _, g := range st.Groups {
		if g.Key == p.Group && p.Group != "" {
			return g, true
		}
	}
	return xds.GroupStatus{}, false
}
