// Command demo is the example mesh's workloads as one proxyless gRPC binary:
// the product and stock services, the product gateway that calls both in
// parallel and merges their answers, and a one-shot client.
//
// The services use hand-written grpc.ServiceDescs over well-known protobuf
// messages (structpb.Struct), so no code generation is needed. Method names
// matter because AuthorizationPolicies name them:
//
//	demo.v1.Product/GetProduct     read
//	demo.v1.Product/UpdateProduct  write
//	demo.v1.Stock/GetStock         read
//	demo.v1.Gateway/GetProduct     calls product and stock, merges
//	demo.v1.Gateway/Call           calls {target, method} as the gateway
//
// Servers use xDS server credentials with an insecure fallback: meshd's
// Listener decides whether a port speaks mTLS. Every answer says what the
// server saw: the peer's SPIFFE ID (empty for plaintext), the serial of the
// peer's certificate and of the server's own current certificate.
//
// In-mesh processes dial from their pod IP (a loopback 127.0.0.x address),
// because proxyless PERMISSIVE is expressed with source-IP filter-chain
// matches: gRPC cannot sniff TLS on a port the way Envoy does.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/xds"
)

func main() {
	os.Exit(run())
}

func run() int {
	var (
		role     = flag.String("role", "", "product, stock, gateway or client")
		ip       = flag.String("ip", "", "the pod IP: servers listen on it, clients dial from it")
		ports    = flag.String("ports", "8080", "comma-separated ports a server listens on")
		domain   = flag.String("cluster-domain", "cluster.local", "the DNS suffix of services")
		target   = flag.String("target", "", "client: xds:///host:port, or host:port with --plaintext")
		method   = flag.String("method", "", "client: full method, e.g. demo.v1.Product/GetProduct")
		plain    = flag.Bool("plaintext", false, "client: dial without xDS, in plaintext (a client outside the mesh)")
		useXDS   = flag.Bool("xds", false, "client: dial through xDS (the default when --target starts with xds:)")
		relayTo  = flag.String("relay-target", "", "client calling demo.v1.Gateway/Call: the target the gateway calls")
		relayM   = flag.String("relay-method", "", "client calling demo.v1.Gateway/Call: the method the gateway calls")
		relayNew = flag.Bool("relay-fresh", false, "client calling demo.v1.Gateway/Call: the gateway calls on a new connection (a new TLS handshake)")
		timeout  = flag.Duration("timeout", 5*time.Second, "client: deadline of the call")
		every    = flag.Duration("every", 0, "client: call again at this interval, each call on a new connection (a new TLS handshake), one JSON line per call; 0 calls once")
		callFor  = flag.Duration("for", time.Minute, "client with --every: how long to keep calling")
		logLevel = flag.String("log-level", "info", "debug, info, warn or error")
	)
	flag.Parse()
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "--log-level: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})).With("role", *role)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	switch *role {
	case "product", "stock", "gateway":
		if *ip == "" {
			fmt.Fprintln(os.Stderr, "--ip is required: servers listen on the pod IP")
			return 2
		}
		var ps []int
		for _, p := range strings.Split(*ports, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(p))
			if err != nil || n <= 0 || n > 65535 {
				fmt.Fprintf(os.Stderr, "--ports: %q is not a port number\n", p)
				return 2
			}
			ps = append(ps, n)
		}
		if err := serve(ctx, log, *role, *ip, *domain, ps); err != nil {
			log.Error("server failed", "error", err)
			return 1
		}
		return 0
	case "client":
		if *target == "" || *method == "" {
			fmt.Fprintln(os.Stderr, "--target and --method are required for --role client")
			return 2
		}
		viaXDS := *useXDS || strings.HasPrefix(*target, "xds:")
		if viaXDS && *plain {
			fmt.Fprintln(os.Stderr, "--xds and --plaintext exclude each other")
			return 2
		}
		o := callOptions{
			target: *target, method: *method, xds: viaXDS, sourceIP: *ip,
			relayTarget: *relayTo, relayMethod: *relayM, relayFresh: *relayNew, timeout: *timeout,
		}
		if *every > 0 {
			if err := callRepeatedly(ctx, o, *every, *callFor, os.Stdout); err != nil {
				log.Error("calls failed", "error", err)
				return 1
			}
			return 0
		}
		res := callOnce(ctx, o)
		printJSON(os.Stdout, res)
		if !res.OK {
			return 1
		}
		return 0
	default:
		fmt.Fprintf(os.Stderr, "--role must be product, stock, gateway or client, not %q\n", *role)
		return 2
	}
}

// serve runs one role's services on ip:port for every port until ctx ends.
func serve(ctx context.Context, log *slog.Logger, role, ip, domain string, ports []int) error {
	creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return fmt.Errorf("xDS server credentials: %w", err)
	}
	srv, err := xds.NewGRPCServer(
		grpc.Creds(creds),
		xds.ServingModeCallback(func(addr net.Addr, args xds.ServingModeChangeArgs) {
			if args.Mode == connectivity.ServingModeServing {
				log.Info("serving mode changed", "addr", addr.String(), "mode", args.Mode.String())
				return
			}
			log.Warn("serving mode changed", "addr", addr.String(), "mode", args.Mode.String(), "reason", args.Err)
		}),
	)
	if err != nil {
		return fmt.Errorf("creating the xDS gRPC server (is GRPC_XDS_BOOTSTRAP set? run it under `meshctl agent`): %w", err)
	}
	who := identity{role: role, pod: os.Getenv("POD_NAME"), bootstrap: os.Getenv("GRPC_XDS_BOOTSTRAP")}
	var closers []func()
	switch role {
	case "product":
		srv.RegisterService(&productDesc, &product{who: who})
	case "stock":
		srv.RegisterService(&stockDesc, &stock{who: who})
	case "gateway":
		gw, err := newGateway(who, ip, domain)
		if err != nil {
			return err
		}
		closers = append(closers, gw.close)
		srv.RegisterService(&gatewayDesc, gw)
	}
	errc := make(chan error, len(ports))
	for _, p := range ports {
		lis, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(p)))
		if err != nil {
			srv.Stop()
			return fmt.Errorf("listening on the pod IP: %w", err)
		}
		log.Info("listening", "addr", lis.Addr().String())
		go func() { errc <- srv.Serve(lis) }()
	}
	select {
	case <-ctx.Done():
		log.Info("stopping")
		srv.GracefulStop()
	case err = <-errc:
		srv.Stop()
	}
	for _, c := range closers {
		c()
	}
	return err
}
