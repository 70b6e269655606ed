package main

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestPlaintextRoundTrip serves product and the gateway without xDS and
// checks what the answers report: a plaintext caller is seen with an empty
// identity, and the client's source address is its --ip.
func TestPlaintextRoundTrip(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	srv.RegisterService(&productDesc, &product{who: identity{role: "product", pod: "product-0"}})
	gw, err := newGateway(identity{role: "gateway"}, "127.0.0.1", "cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	defer gw.close()
	srv.RegisterService(&gatewayDesc, gw)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res := callOnce(ctx, callOptions{target: lis.Addr().String(), method: "demo.v1.Product/GetProduct", sourceIP: "127.0.0.1", timeout: 5 * time.Second})
	if !res.OK || res.Code != codes.OK.String() {
		t.Fatalf("GetProduct = %+v, want OK", res)
	}
	if res.PeerSeenByServer != "" {
		t.Errorf("peer_seen_by_server = %q, want empty for plaintext", res.PeerSeenByServer)
	}
	if res.Answer["service"] != "product" || res.Answer["id"] != "1" || res.Answer["pod"] != "product-0" {
		t.Errorf("answer = %v", res.Answer)
	}
	if host, _, _ := net.SplitHostPort(res.Answer["peer_addr"].(string)); host != "127.0.0.1" {
		t.Errorf("peer_addr = %v, want the source IP 127.0.0.1", res.Answer["peer_addr"])
	}

	// Unknown methods fail with UNIMPLEMENTED, and Call validates its input.
	if res := callOnce(ctx, callOptions{target: lis.Addr().String(), method: "demo.v1.Product/DeleteProduct", timeout: time.Second}); res.OK || res.Code != codes.Unimplemented.String() {
		t.Errorf("unknown method = %+v, want Unimplemented", res)
	}
	cc, err := dial(lis.Addr().String(), false, "")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cc.Close() }()
	if res := invoke(ctx, cc, "demo.v1.Gateway/Call", &structpb.Struct{}); res.Code != codes.InvalidArgument.String() {
		t.Errorf("Call without target = %+v, want InvalidArgument", res)
	}
}
