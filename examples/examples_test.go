package examples

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/minimesh/minimesh/discovery/file"
	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

func load(t *testing.T, paths ...string) *model.Snapshot {
	t.Helper()
	files, err := file.ReadPaths(paths...)
	if err != nil {
		t.Fatal(err)
	}
	s := file.Build(files, file.Options{})
	for _, p := range s.Problems {
		t.Errorf("example problem: %s", p.Error())
	}
	return s
}

// TestMeshIsTheSeedScenario checks that examples/mesh describes what the
// README and the demo promise.
func TestMeshIsTheSeedScenario(t *testing.T) {
	s := load(t, "mesh")
	if n := len(s.Policies.PeerAuthentications) + len(s.Policies.AuthorizationPolicies) +
		len(s.Policies.RequestAuthentications) + len(s.Policies.DestinationRules); n != 0 {
		t.Errorf("examples/mesh has %d policies; it must stay policy-free so the default is PERMISSIVE", n)
	}
	for _, ns := range []string{"default", "test", "istio-system"} {
		found := false
		for _, n := range s.Namespaces {
			found = found || n.Name == ns
		}
		if !found {
			t.Errorf("namespace %s missing", ns)
		}
	}
	pods := []struct {
		ns, name, ip, sa string
		inMesh           bool
	}{
		{"default", "product-gateway-0", "127.0.0.11", "product-gateway", true},
		{"default", "product-0", "127.0.0.12", "product", true},
		{"default", "stock-0", "127.0.0.13", "stock", true},
		{"test", "curl", "127.0.0.21", "default", false},
	}
	for _, p := range pods {
		w := s.Workload(p.ns, p.name)
		if w == nil {
			t.Errorf("pod %s/%s missing", p.ns, p.name)
			continue
		}
		if w.IP != p.ip || w.ServiceAccount != p.sa || w.InMesh != p.inMesh || !w.Ready {
			t.Errorf("pod %s/%s = ip %s sa %s inMesh %v ready %v, want ip %s sa %s inMesh %v ready",
				p.ns, p.name, w.IP, w.ServiceAccount, w.InMesh, w.Ready, p.ip, p.sa, p.inMesh)
		}
	}
	// Every service port is gRPC and reaches exactly its one pod.
	for _, svc := range []string{"product-gateway", "product", "stock"} {
		sv := s.Service("default", svc)
		if sv == nil {
			t.Errorf("service %s missing", svc)
			continue
		}
		for _, sp := range sv.Ports {
			if sp.AppProtocol != "grpc" || !strings.HasPrefix(sp.Name, "grpc") {
				t.Errorf("service %s port %d: name %q appProtocol %q, want grpc*", svc, sp.Port, sp.Name, sp.AppProtocol)
			}
			eps := s.EndpointsFor("default", svc, sp.Port)
			if eps == nil || len(eps.Endpoints) != 1 || !eps.Endpoints[0].InMesh {
				t.Errorf("service %s port %d: endpoints %+v, want one in-mesh endpoint", svc, sp.Port, eps)
			}
		}
	}
}

// TestPolicies checks the policies are the walk-throughs' and that the
// port-level exception names a port stock really has.
func TestPolicies(t *testing.T) {
	s := load(t, "mesh", "policies")
	ps := s.Policies
	var strictNS, exception *policy.PeerAuthentication
	for _, pa := range ps.PeerAuthentications {
		switch {
		case pa.Namespace == "default" && pa.Name == "default":
			strictNS = pa
		case pa.Spec.Selector != nil:
			exception = pa
		}
	}
	if strictNS == nil || strictNS.Spec.MTLS == nil || strictNS.Spec.MTLS.Mode != policy.ModeStrict || !strictNS.Spec.Selector.IsEmpty() {
		t.Errorf("want a namespace-wide STRICT PeerAuthentication default/default, got %+v", strictNS)
	}
	if exception == nil {
		t.Fatal("want a workload-level PeerAuthentication with a port exception")
	}
	stock := s.Workload("default", "stock-0")
	if !exception.Spec.Selector.Matches(stock.Labels) {
		t.Errorf("the port exception does not select stock-0")
	}
	for port, m := range exception.Spec.PortLevelMTLS {
		found := false
		for _, cp := range stock.Ports {
			found = found || uint32(cp.Port) == port
		}
		if !found || m.Mode != policy.ModeDisable {
			t.Errorf("portLevelMtls %d: %s; stock-0 has that port: %v", port, m.Mode, found)
		}
	}

	var denyAll, allowGateway bool
	for _, ap := range ps.AuthorizationPolicies {
		if ap.Spec.Selector.IsEmpty() && len(ap.Spec.Rules) == 0 && ap.Spec.EffectiveAction() == policy.ActionAllow {
			denyAll = true
		}
		for _, r := range ap.Spec.Rules {
			for _, f := range r.From {
				for _, p := range f.Source.Principals {
					if p != "cluster.local/ns/default/sa/product-gateway" {
						continue
					}
					for _, to := range r.To {
						if to.Operation != nil && slices.Equal(to.Operation.Methods, []string{"GET"}) {
							allowGateway = true
						}
					}
				}
			}
		}
	}
	if !denyAll || !allowGateway {
		t.Errorf("want allow-nothing (%v) and an ALLOW for GET by the gateway's principal (%v)", denyAll, allowGateway)
	}
}

// TestDemoJWTKey checks that the inline JWKS, the demo key files and the
// demo token belong together.
func TestDemoJWTKey(t *testing.T) {
	s := load(t, "mesh", "policies")
	if len(s.Policies.RequestAuthentications) != 1 {
		t.Fatalf("want one RequestAuthentication, got %d", len(s.Policies.RequestAuthentications))
	}
	rule := s.Policies.RequestAuthentications[0].Spec.JWTRules[0]
	jwksFile, err := os.ReadFile("policies/jwt/demo-jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(rule.JWKS) != strings.TrimSpace(string(jwksFile)) {
		t.Errorf("the inline jwks differs from policies/jwt/demo-jwks.json")
	}
	var jwks struct {
		Keys []struct{ Kty, Kid, N, E string }
	}
	if err := json.Unmarshal([]byte(rule.JWKS), &jwks); err != nil || len(jwks.Keys) != 1 {
		t.Fatalf("inline jwks: %v (%d keys)", err, len(jwks.Keys))
	}
	n, _ := base64.RawURLEncoding.DecodeString(jwks.Keys[0].N)
	e, _ := base64.RawURLEncoding.DecodeString(jwks.Keys[0].E)
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}

	pemData, err := os.ReadFile("policies/jwt/demo-private-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pemData)
	if block == nil {
		t.Fatal("demo-private-key.pem holds no PEM block")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !key.(*rsa.PrivateKey).PublicKey.Equal(pub) {
		t.Errorf("the private key does not match the inline jwks")
	}

	token, err := os.ReadFile("policies/jwt/demo-token.jwt")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(strings.TrimSpace(string(token)), ".")
	if len(parts) != 3 {
		t.Fatalf("demo token has %d parts", len(parts))
	}
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig); err != nil {
		t.Errorf("demo token does not verify with the inline jwks: %v", err)
	}
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims struct {
		Iss, Aud string
		Exp      int64
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	if claims.Iss != rule.Issuer || len(rule.Audiences) != 1 || claims.Aud != rule.Audiences[0] {
		t.Errorf("token iss %q aud %q, rule issuer %q audiences %v", claims.Iss, claims.Aud, rule.Issuer, rule.Audiences)
	}
}
