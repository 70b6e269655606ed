package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// Service and method names; AuthorizationPolicies refer to these paths.
const (
	ProductService = "demo.v1.Product"
	StockService   = "demo.v1.Stock"
	GatewayService = "demo.v1.Gateway"
)

// identity is what a server reports about itself.
type identity struct {
	role, pod string
	bootstrap string // GRPC_XDS_BOOTSTRAP, to find the certificate file
}

// seen describes the caller and the server's own certificate, as the
// server saw them for this request.
func (id identity) seen(ctx context.Context, method string) map[string]any {
	out := map[string]any{
		"service":             id.role,
		"method":              method,
		"peer_seen_by_server": "",
		"server_cert_serial":  id.ownSerial(),
	}
	if id.pod != "" {
		out["pod"] = id.pod
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return out
	}
	if p.Addr != nil {
		out["peer_addr"] = p.Addr.String()
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
		out["peer_seen_by_server"] = spiffeOf(ti)
		if certs := ti.State.PeerCertificates; len(certs) > 0 {
			out["peer_cert_serial"] = certs[0].SerialNumber.Text(16)
		}
	}
	return out
}

// spiffeOf is the peer's SPIFFE ID, or its first URI SAN.
func spiffeOf(ti credentials.TLSInfo) string {
	if ti.SPIFFEID != nil {
		return ti.SPIFFEID.String()
	}
	if certs := ti.State.PeerCertificates; len(certs) > 0 && len(certs[0].URIs) > 0 {
		return certs[0].URIs[0].String()
	}
	return "tls-without-identity"
}

// ownSerial reads the server's current certificate from the file gRPC's
// file_watcher uses, so it changes when the agent writes a rotated one.
func (id identity) ownSerial() string {
	if id.bootstrap == "" {
		return ""
	}
	b, err := os.ReadFile(id.bootstrap)
	if err != nil {
		return ""
	}
	var bs struct {
		CertificateProviders map[string]struct {
			Config struct {
				CertificateFile string `json:"certificate_file"`
			} `json:"config"`
		} `json:"certificate_providers"`
	}
	if json.Unmarshal(b, &bs) != nil {
		return ""
	}
	pemBytes, err := os.ReadFile(bs.CertificateProviders["default"].Config.CertificateFile)
	if err != nil {
		return ""
	}
	blk, _ := pem.Decode(pemBytes)
	if blk == nil {
		return ""
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return ""
	}
	return c.SerialNumber.Text(16)
}

func toStruct(m map[string]any) (*structpb.Struct, error) {
	s, err := structpb.NewStruct(m)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "building the answer: %v", err)
	}
	return s, nil
}

func productID(req *structpb.Struct) string {
	if id := req.GetFields()["id"].GetStringValue(); id != "" {
		return id
	}
	return "1"
}

// unary adapts a Struct→Struct handler to grpc.MethodDesc.
func unary[S any](name string, h func(S, context.Context, *structpb.Struct) (*structpb.Struct, error)) grpc.MethodDesc {
	return grpc.MethodDesc{
		MethodName: name,
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := new(structpb.Struct)
			if err := dec(in); err != nil {
				return nil, err
			}
			call := func(ctx context.Context, req any) (any, error) { return h(srv.(S), ctx, req.(*structpb.Struct)) }
			if interceptor == nil {
				return call(ctx, in)
			}
			info := &grpc.UnaryServerInfo{Server: srv, FullMethod: "/" + name}
			return interceptor(ctx, in, info, call)
		},
	}
}

// product answers product details and accepts (pretend) updates.
type product struct{ who identity }

var productDesc = grpc.ServiceDesc{
	ServiceName: ProductService,
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{
		unary("GetProduct", func(p *product, ctx context.Context, req *structpb.Struct) (*structpb.Struct, error) {
			out := p.who.seen(ctx, ProductService+"/GetProduct")
			out["id"], out["name"], out["price"] = productID(req), "Mesh-ready widget", 42.5
			return toStruct(out)
		}),
		unary("UpdateProduct", func(p *product, ctx context.Context, req *structpb.Struct) (*structpb.Struct, error) {
			out := p.who.seen(ctx, ProductService+"/UpdateProduct")
			out["id"], out["updated"] = productID(req), true
			return toStruct(out)
		}),
	},
	Metadata: "demo.proto",
}

// stock answers how many of a product are in stock.
type stock struct{ who identity }

var stockDesc = grpc.ServiceDesc{
	ServiceName: StockService,
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{
		unary("GetStock", func(s *stock, ctx context.Context, req *structpb.Struct) (*structpb.Struct, error) {
			out := s.who.seen(ctx, StockService+"/GetStock")
			out["id"], out["in_stock"] = productID(req), 7.0
			return toStruct(out)
		}),
	},
	Metadata: "demo.proto",
}

// gateway calls product and stock through xDS, from its pod IP.
type gateway struct {
	who             identity
	ip              string
	product, stockT string

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn // by target; reused, as a real gateway would
}

func newGateway(who identity, ip, domain string) (*gateway, error) {
	if net.ParseIP(ip) == nil {
		return nil, fmt.Errorf("--ip %q is not an IP address", ip)
	}
	return &gateway{
		who:     who,
		ip:      ip,
		product: "xds:///product.default.svc." + domain + ":8080",
		stockT:  "xds:///stock.default.svc." + domain + ":8080",
		conns:   map[string]*grpc.ClientConn{},
	}, nil
}

func (g *gateway) conn(target string) (*grpc.ClientConn, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if cc := g.conns[target]; cc != nil {
		return cc, nil
	}
	cc, err := dial(target, true, g.ip)
	if err != nil {
		return nil, err
	}
	g.conns[target] = cc
	return cc, nil
}

func (g *gateway) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, cc := range g.conns {
		_ = cc.Close()
	}
}

// call makes one upstream call and reports it as a leg of the answer.
func (g *gateway) call(ctx context.Context, target, method string, req *structpb.Struct) map[string]any {
	cc, err := g.conn(target)
	if err != nil {
		return map[string]any{"ok": false, "code": codes.Internal.String(), "message": err.Error()}
	}
	r := invoke(ctx, cc, method, req)
	return r.asMap()
}

var gatewayDesc = grpc.ServiceDesc{
	ServiceName: GatewayService,
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{
		// GetProduct asks product and stock in parallel and merges the
		// answers, like the seeds' product gateway. A failing leg is
		// reported in the answer, not as the call's status, so a caller
		// sees which one failed and why.
		unary("GetProduct", func(g *gateway, ctx context.Context, req *structpb.Struct) (*structpb.Struct, error) {
			out := g.who.seen(ctx, GatewayService+"/GetProduct")
			var wg sync.WaitGroup
			var prod, stk map[string]any
			wg.Add(2)
			go func() { defer wg.Done(); prod = g.call(ctx, g.product, ProductService+"/GetProduct", req) }()
			go func() { defer wg.Done(); stk = g.call(ctx, g.stockT, StockService+"/GetStock", req) }()
			wg.Wait()
			out["product"], out["stock"] = prod, stk
			out["all_ok"] = prod["ok"] == true && stk["ok"] == true
			return toStruct(out)
		}),
		// Call makes any call as the gateway: {target, method, request}.
		// The demo uses it to show what the gateway's identity may do.
		unary("Call", func(g *gateway, ctx context.Context, req *structpb.Struct) (*structpb.Struct, error) {
			f := req.GetFields()
			target, method := f["target"].GetStringValue(), f["method"].GetStringValue()
			if target == "" || method == "" {
				return nil, status.Error(codes.InvalidArgument, "Call needs a target and a method")
			}
			inner := f["request"].GetStructValue()
			if inner == nil {
				inner = &structpb.Struct{}
			}
			out := g.who.seen(ctx, GatewayService+"/Call")
			if f["fresh"].GetBoolValue() {
				// A new connection: a new handshake with the gateway's
				// current certificate (pooled connections keep the one
				// they were made with).
				cc, err := dial(target, true, g.ip)
				if err != nil {
					return nil, status.Error(codes.Internal, err.Error())
				}
				defer func() { _ = cc.Close() }()
				out["call"] = invoke(ctx, cc, method, inner).asMap()
			} else {
				out["call"] = g.call(ctx, target, method, inner)
			}
			return toStruct(out)
		}),
	},
	Metadata: "demo.proto",
}
