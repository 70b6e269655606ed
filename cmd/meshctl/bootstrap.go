package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"sigs.k8s.io/yaml"

	"github.com/minimesh/minimesh/xds/auth"
)

const bootstrapUsage = `Usage: meshctl bootstrap --pod NAME --namespace NS --ip IP [flags]

Prints an Envoy v3 bootstrap for a sidecar of pod NAME in namespace NS with
pod IP IP. Envoy started with it ('envoy -c bootstrap.yaml') identifies
itself with Istio's node ID sidecar~IP~NAME.NS~NS.svc.DOMAIN, connects to
meshd's ADS server over HTTP/2 (cluster "xds-grpc", with TCP keepalive and
HTTP/2 pings), gets listeners and clusters through ADS and, through the
same stream, the routes, endpoints and secrets (SDS) they reference. Its
admin interface listens on 127.0.0.1:15000.

The bootstrap is checked with Envoy's own validation rules before it is
printed; meshctl refuses to print one that fails them.

About --token-file: meshd's xDS port speaks plaintext gRPC, and Envoy can
only send a token it reads from a file through the Google gRPC client's
call credentials, which gRPC refuses to send over a plaintext channel. So
meshctl reads the token when it renders the bootstrap and puts it inline,
as "authorization: Bearer ..." initial metadata on the ADS stream. This
means the bootstrap is a secret: write it with --out (mode 0600) rather
than to a shared place, render it again whenever the token rotates and
restart Envoy, and keep Envoy's admin port local (its /config_dump shows the
bootstrap, token included). Istio avoids this with an agent that holds the
token and proxies xDS over a local socket; minimesh's 'meshctl agent' does
that for proxyless gRPC workloads only.

Flags:
`

// bootstrapOptions are meshctl bootstrap's flags.
type bootstrapOptions struct {
	pod, namespace, ip string
	app                string
	xdsAddress         string
	tokenFile          string
	clusterDomain      string
	adminPort          uint
	delta              bool
	output             string
	out                string
}

// xdsClusterName is the static cluster that reaches meshd, named as in Istio.
const xdsClusterName = "xds-grpc"

func runBootstrap(args []string, stdout, stderr io.Writer) int {
	var o bootstrapOptions
	fs := flag.NewFlagSet(programName+" bootstrap", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.pod, "pod", "", "the pod's name (required)")
	fs.StringVar(&o.namespace, "namespace", "", "the pod's namespace (required)")
	fs.StringVar(&o.ip, "ip", "", "the pod's IP address (required)")
	fs.StringVar(&o.app, "app", "", "the pod's app label; node.cluster is APP.NAMESPACE (default: the pod name)")
	fs.StringVar(&o.xdsAddress, "xds-address", "127.0.0.1:15010", "meshd's xDS address, HOST:PORT (an IP is used as is, a name is resolved by Envoy)")
	fs.StringVar(&o.tokenFile, "token-file", "", "file holding the bearer token for meshd; the token is copied into the bootstrap (see above)")
	fs.StringVar(&o.clusterDomain, "cluster-domain", "cluster.local", "DNS suffix of services, part of the node ID")
	fs.UintVar(&o.adminPort, "admin-port", 15000, "port of Envoy's admin interface on 127.0.0.1")
	fs.BoolVar(&o.delta, "delta", false, "use delta ADS instead of state of the world")
	fs.StringVar(&o.output, "o", formatYAML, "output format: yaml or json")
	fs.StringVar(&o.out, "out", "", "write the bootstrap to this file (mode 0600) instead of standard output")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), bootstrapUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return exitOK
		}
		return exitUsage
	}
	fail := func(code int, err error) int {
		fmt.Fprintf(stderr, "%s bootstrap: %v\n", programName, err)
		return code
	}
	if fs.NArg() > 0 {
		return fail(exitUsage, fmt.Errorf("unexpected argument %q; every input is a flag", fs.Arg(0)))
	}
	for _, f := range []struct{ name, v string }{{"--pod", o.pod}, {"--namespace", o.namespace}, {"--ip", o.ip}} {
		if f.v == "" {
			return fail(exitUsage, fmt.Errorf("%s is required", f.name))
		}
	}
	if err := checkFormat(o.output, formatYAML, formatJSON); err != nil {
		return fail(exitUsage, err)
	}
	var token string
	if o.tokenFile != "" {
		var err error
		if token, err = readToken(o.tokenFile); err != nil {
			return fail(exitFailed, err)
		}
	}
	b, err := buildBootstrap(o, token)
	if err != nil {
		return fail(exitUsage, err)
	}
	out, err := renderBootstrap(b, o.output)
	if err != nil {
		return fail(exitFailed, err)
	}
	if o.out != "" {
		// Create it 0600 from the start: with a token it is a secret, and
		// chmod after writing would leave a window.
		if err := writePrivate(o.out, out); err != nil {
			return fail(exitFailed, err)
		}
	} else if _, err := stdout.Write(out); err != nil {
		return fail(exitFailed, err)
	}
	if token != "" {
		fmt.Fprintf(stderr, "note: the token from %s is copied into the bootstrap; keep the bootstrap private and render it again when the token rotates\n", o.tokenFile)
	}
	return exitOK
}

// readToken reads a bearer token file: one token, surrounding whitespace
// ignored (Kubernetes token files end without a newline, hand-made ones
// usually with one).
func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cannot read the token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("token file %s is empty; it should hold the bearer token meshd expects", path)
	}
	for _, r := range tok {
		// Header values cannot carry control characters or spaces inside
		// a bearer token; a file with several lines is not a token file.
		if r < 0x21 || r == 0x7f {
			return "", fmt.Errorf("token file %s holds more than one token (or control characters); it should hold exactly one bearer token", path)
		}
	}
	return tok, nil
}

func writePrivate(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("cannot write the bootstrap: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing the bootstrap to %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing the bootstrap to %s: %w", path, err)
	}
	return nil
}

// buildBootstrap assembles and validates the bootstrap. Errors are about
// the flags and say which one is wrong.
func buildBootstrap(o bootstrapOptions, token string) (*bootstrapv3.Bootstrap, error) {
	ip, err := netip.ParseAddr(o.ip)
	if err != nil || ip.Zone() != "" {
		return nil, fmt.Errorf("--ip %q is not an IP address", o.ip)
	}
	id := auth.SidecarNodeID(ip.String(), o.pod, o.namespace, o.clusterDomain)
	// Parse what we built, so that a pod or namespace meshd would refuse
	// is caught here rather than as a refused stream.
	if _, err := auth.ParseNodeID(id.String()); err != nil {
		return nil, fmt.Errorf("--pod, --namespace and --cluster-domain do not make a valid node ID: %w", err)
	}
	host, portText, err := net.SplitHostPort(o.xdsAddress)
	if err != nil {
		return nil, fmt.Errorf("--xds-address %q is not HOST:PORT: %w", o.xdsAddress, err)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("--xds-address %q: %q is not a port number (1-65535)", o.xdsAddress, portText)
	}
	if host == "" {
		return nil, fmt.Errorf("--xds-address %q names no host; use e.g. 127.0.0.1:15010", o.xdsAddress)
	}
	if o.adminPort == 0 || o.adminPort > 65535 {
		return nil, fmt.Errorf("--admin-port %d is not a port number (1-65535)", o.adminPort)
	}
	app := o.app
	if app == "" {
		app = o.pod
	}

	metadata := map[string]*structpb.Value{
		// The names Istio's agent uses, so tools that read them work.
		"NAMESPACE":    structpb.NewStringValue(o.namespace),
		"NAME":         structpb.NewStringValue(o.pod),
		"INSTANCE_IPS": structpb.NewStringValue(ip.String()),
	}
	if o.app != "" {
		metadata["LABELS"] = structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"app": structpb.NewStringValue(o.app)}})
	}

	adsSource := func() *corev3.ConfigSource {
		return &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			ResourceApiVersion:    corev3.ApiVersion_V3,
		}
	}
	grpcService := &corev3.GrpcService{
		TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: xdsClusterName}},
	}
	if token != "" {
		grpcService.InitialMetadata = []*corev3.HeaderValue{{Key: "authorization", Value: "Bearer " + token}}
	}
	apiType := corev3.ApiConfigSource_GRPC
	if o.delta {
		apiType = corev3.ApiConfigSource_DELTA_GRPC
	}

	// HTTP/2 with pings: gRPC needs HTTP/2, and pings notice a dead meshd
	// (or a NAT that forgot the connection) long before TCP would. meshd
	// allows pings down to every 10s; 30s is well above that.
	h2, err := anypb.New(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{
						ConnectionKeepalive: &corev3.KeepaliveSettings{
							Interval: durationpb.New(30 * time.Second),
							Timeout:  durationpb.New(10 * time.Second),
						},
					},
				},
			},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("encoding the HTTP/2 options: %w", err)
	}
	discovery := clusterv3.Cluster_STATIC
	if _, err := netip.ParseAddr(host); err != nil {
		discovery = clusterv3.Cluster_STRICT_DNS
	}
	xdsCluster := &clusterv3.Cluster{
		Name:                 xdsClusterName,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: discovery},
		ConnectTimeout:       durationpb.New(time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: xdsClusterName,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{{
					HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
						Address: socketAddress(host, uint32(port)),
					}},
				}},
			}},
		},
		TypedExtensionProtocolOptions: map[string]*anypb.Any{
			"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": h2,
		},
		UpstreamConnectionOptions: &clusterv3.UpstreamConnectionOptions{
			TcpKeepalive: &corev3.TcpKeepalive{
				KeepaliveTime:     wrapperspb.UInt32(300),
				KeepaliveInterval: wrapperspb.UInt32(30),
				KeepaliveProbes:   wrapperspb.UInt32(3),
			},
		},
	}

	b := &bootstrapv3.Bootstrap{
		Node: &corev3.Node{
			Id:       id.String(),
			Cluster:  app + "." + o.namespace,
			Metadata: &structpb.Struct{Fields: metadata},
		},
		Admin: &bootstrapv3.Admin{Address: socketAddress("127.0.0.1", uint32(o.adminPort))},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:                   apiType,
				TransportApiVersion:       corev3.ApiVersion_V3,
				SetNodeOnFirstMessageOnly: true,
				GrpcServices:              []*corev3.GrpcService{grpcService},
			},
			LdsConfig: adsSource(),
			CdsConfig: adsSource(),
		},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Clusters: []*clusterv3.Cluster{xdsCluster},
		},
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("the bootstrap fails Envoy's validation, so it is not printed: %w", err)
	}
	return b, nil
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// renderBootstrap prints the bootstrap with proto field names
// (snake_case), as Envoy's documentation writes bootstraps.
func renderBootstrap(b *bootstrapv3.Bootstrap, format string) ([]byte, error) {
	raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("rendering the bootstrap: %w", err)
	}
	// protojson's spacing is deliberately unstable; normalise it.
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return nil, fmt.Errorf("formatting the bootstrap: %w", err)
	}
	out.WriteByte('\n')
	if format == formatJSON {
		return out.Bytes(), nil
	}
	y, err := yaml.JSONToYAML(out.Bytes())
	if err != nil {
		return nil, fmt.Errorf("converting the bootstrap to YAML: %w", err)
	}
	return y, nil
}
