package agent_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	grpcxds "google.golang.org/grpc/xds"
	"google.golang.org/protobuf/proto"
	securityv1alpha1 "istio.io/api/security/v1alpha1"

	"github.com/minimesh/minimesh/discovery/file"
	"github.com/minimesh/minimesh/xds"
	"github.com/minimesh/minimesh/xds/agent"
	"github.com/minimesh/minimesh/xds/auth"
	"github.com/minimesh/minimesh/xds/ca"
)

// recordingRelay sits between the agent and meshd and forwards every ADS
// stream and certificate request, keeping each message in both
// directions as it went over the wire.
type recordingRelay struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	securityv1alpha1.UnimplementedIstioCertificateServiceServer
	ads discoveryv3.AggregatedDiscoveryServiceClient
	ca  securityv1alpha1.IstioCertificateServiceClient

	mu   sync.Mutex
	up   []proto.Message // agent → meshd
	down []proto.Message // meshd → agent
}

func (r *recordingRelay) record(up bool, m proto.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if up {
		r.up = append(r.up, proto.Clone(m))
	} else {
		r.down = append(r.down, proto.Clone(m))
	}
}

func (r *recordingRelay) messages() (up, down []proto.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]proto.Message(nil), r.up...), append([]proto.Message(nil), r.down...)
}

// forward passes the caller's authorization on to meshd.
func forward(ctx context.Context) context.Context {
	md, _ := metadata.FromIncomingContext(ctx)
	return metadata.NewOutgoingContext(ctx, metadata.MD{"authorization": md.Get("authorization")})
}

func (r *recordingRelay) CreateCertificate(ctx context.Context, req *securityv1alpha1.IstioCertificateRequest) (*securityv1alpha1.IstioCertificateResponse, error) {
	r.record(true, req)
	resp, err := r.ca.CreateCertificate(forward(ctx), req)
	if err == nil {
		r.record(false, resp)
	}
	return resp, err
}

func (r *recordingRelay) StreamAggregatedResources(down discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	up, err := r.ads.StreamAggregatedResources(forward(down.Context()))
	if err != nil {
		return err
	}
	errc := make(chan error, 2)
	go func() {
		for {
			req, err := down.Recv()
			if err != nil {
				errc <- err
				return
			}
			r.record(true, req)
			if err := up.Send(req); err != nil {
				errc <- err
				return
			}
		}
	}()
	go func() {
		for {
			resp, err := up.Recv()
			if err != nil {
				errc <- err
				return
			}
			r.record(false, resp)
			if err := down.Send(resp); err != nil {
				errc <- err
				return
			}
		}
	}()
	if err := <-errc; !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

func serve(t *testing.T, register func(*grpc.Server)) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	register(s)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

const productMesh = `
apiVersion: v1
kind: Service
metadata: {name: product, namespace: default}
spec:
  clusterIP: 10.96.0.11
  selector: {app: product}
  ports: [{name: grpc, port: 8080, targetPort: 8080, appProtocol: grpc}]
---
apiVersion: v1
kind: Pod
metadata:
  name: product-0
  namespace: default
  labels: {app: product, security.istio.io/tlsMode: istio}
spec:
  serviceAccountName: product
  containers: [{name: app, image: example/product, ports: [{containerPort: 8080}]}]
status:
  podIP: 127.0.0.12
  conditions: [{type: Ready, status: "True"}]
`

// keyMaterial reports why a message carries private key material: a PEM
// private key, a Secret with a private key, or the DER of key (the
// agent's own key, as it is on disk) anywhere in its encoding.
func keyMaterial(t *testing.T, m proto.Message, key []byte) string {
	t.Helper()
	wire, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case bytes.Contains(wire, []byte("PRIVATE KEY")):
		return "a PEM private key"
	case len(key) > 0 && bytes.Contains(wire, key):
		return "the agent's private key"
	}
	if resp, ok := m.(*discoveryv3.DiscoveryResponse); ok {
		for _, a := range resp.GetResources() {
			var s tlsv3.Secret
			if a.MessageIs(&s) && a.UnmarshalTo(&s) == nil && s.GetTlsCertificate().GetPrivateKey() != nil {
				return "a Secret with a private key"
			}
		}
	}
	return ""
}

// TestNoPrivateKeyTravels runs meshd, a recording relay and the agent
// with a gRPC xDS client behind it through a first certificate, a renewal
// and the client's configuration, and finds no private key material in
// any message either way: only certificate requests go up, only
// certificates and configuration come down.
func TestNoPrivateKeyTravels(t *testing.T) {
	dir := t.TempDir()
	quiet := slog.New(slog.DiscardHandler)
	tokens := filepath.Join(dir, "xds-tokens")
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokens, []byte("product-token,default,product\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte("product-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	authn, err := auth.LoadStaticTokens(tokens)
	if err != nil {
		t.Fatal(err)
	}
	authority, err := ca.New(ca.Options{Dir: filepath.Join(dir, "ca"), WorkloadTTL: 10 * time.Second}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	meshd, err := xds.New(xds.Options{CA: authority, Authenticator: authn, Log: quiet,
		DebounceAfter: 5 * time.Millisecond, DebounceMax: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	meshd.Update(file.Build([]file.File{{Path: "mesh.yaml", Data: []byte(productMesh)}}, file.Options{}))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- meshd.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("meshd: %v", err)
		}
	})

	meshConn := dial(t, lis.Addr().String())
	relay := &recordingRelay{
		ads: discoveryv3.NewAggregatedDiscoveryServiceClient(meshConn),
		ca:  securityv1alpha1.NewIstioCertificateServiceClient(meshConn),
	}
	relayAddr := serve(t, func(s *grpc.Server) {
		discoveryv3.RegisterAggregatedDiscoveryServiceServer(s, relay)
		securityv1alpha1.RegisterIstioCertificateServiceServer(s, relay)
	})

	a, err := agent.New(agent.Options{Pod: "product-0", Namespace: "default", IP: "127.0.0.12",
		XDSAddress: relayAddr, TokenFile: tokenFile, CertDir: filepath.Join(dir, "certs"), Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	wait, stop := context.WithTimeout(ctx, 20*time.Second)
	defer stop()
	if err := a.WaitForCertificate(wait); err != nil {
		t.Fatal(err)
	}
	first, _ := a.Certificate()

	// A gRPC xDS client behind the agent: its LDS, RDS, CDS and EDS go
	// through the agent and the relay.
	resolver, err := grpcxds.NewXDSResolverWithConfigForTesting(a.Bootstrap())
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///product.default.svc.cluster.local:8080", grpc.WithResolvers(resolver),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cc.Close() }()
	cc.Connect()

	if _, err := a.WaitForNewCertificate(wait, first.Serial); err != nil {
		t.Fatalf("no renewal: %v", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(a.CertDir(), agent.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		t.Fatal("the key file holds no PEM")
	}

	up, down := relay.messages()
	var csrs, certs int
	types := map[string]bool{}
	for _, m := range up {
		if why := keyMaterial(t, m, block.Bytes); why != "" {
			t.Errorf("the agent sent meshd %s in a %T", why, m)
		}
		switch m := m.(type) {
		case *securityv1alpha1.IstioCertificateRequest:
			b, _ := pem.Decode([]byte(m.GetCsr()))
			if b == nil || b.Type != "CERTIFICATE REQUEST" {
				t.Errorf("a certificate request carries no PEM CSR")
			} else if _, err := x509.ParseCertificateRequest(b.Bytes); err != nil {
				t.Errorf("a certificate request's CSR does not parse: %v", err)
			}
			csrs++
		case *discoveryv3.DiscoveryRequest:
			if m.GetTypeUrl() == resourcev3.SecretType {
				t.Errorf("the agent asked meshd for secrets %v", m.GetResourceNames())
			}
		}
	}
	for _, m := range down {
		if why := keyMaterial(t, m, block.Bytes); why != "" {
			t.Errorf("meshd sent the agent %s in a %T", why, m)
		}
		switch m := m.(type) {
		case *securityv1alpha1.IstioCertificateResponse:
			for _, p := range m.GetCertChain() {
				for rest := []byte(p); ; {
					var b *pem.Block
					if b, rest = pem.Decode(rest); b == nil {
						break
					}
					if b.Type != "CERTIFICATE" {
						t.Errorf("a certificate response holds a %q block", b.Type)
					}
				}
			}
			certs++
		case *discoveryv3.DiscoveryResponse:
			types[m.GetTypeUrl()] = true
		}
	}
	if csrs < 2 || certs < 2 {
		t.Errorf("the relay saw %d certificate requests and %d answers; want the first and a renewal", csrs, certs)
	}
	for _, typ := range []string{resourcev3.ListenerType, resourcev3.ClusterType} {
		if !types[typ] {
			t.Errorf("the relay saw no %s response; the workload's xDS did not go through it (saw %v)", typ, types)
		}
	}

	// The check itself finds a key where there is one: an Envoy-style SDS
	// request through the relay gets meshd's "default" secret, key and all.
	sdsCtx := metadata.AppendToOutgoingContext(wait, "authorization", "Bearer product-token")
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(dial(t, relayAddr)).StreamAggregatedResources(sdsCtx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: a.NodeID()}, TypeUrl: resourcev3.SecretType, ResourceNames: []string{"default"}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if why := keyMaterial(t, resp, nil); !strings.Contains(why, "private key") {
		t.Errorf("an SDS response with meshd's key was not recognised as key material (%q)", why)
	}
}
