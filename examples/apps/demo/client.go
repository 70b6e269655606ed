package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// result is the client's JSON line; the demo and e2e tests parse it.
type result struct {
	OK      bool   `json:"ok"`
	Code    string `json:"code"`
	Message string `json:"message,omitempty"`
	Target  string `json:"target,omitempty"`
	Method  string `json:"method,omitempty"`
	// PeerSeenByServer is the caller's SPIFFE ID as the server reported
	// it; empty means the server saw a plaintext connection.
	PeerSeenByServer string `json:"peer_seen_by_server"`
	// ServerSPIFFEID and ServerCertSerial are the server's certificate as
	// this client saw it in the TLS handshake (empty for plaintext).
	ServerSPIFFEID   string         `json:"server_spiffe_id,omitempty"`
	ServerCertSerial string         `json:"server_cert_serial,omitempty"`
	Answer           map[string]any `json:"answer,omitempty"`
}

func (r result) asMap() map[string]any {
	b, _ := json.Marshal(r)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

type callOptions struct {
	target, method           string
	xds                      bool
	sourceIP                 string
	relayTarget, relayMethod string
	// relayFresh asks the gateway to call on a new connection, so that
	// its upstream sees the gateway's current certificate.
	relayFresh bool
	timeout    time.Duration
}

// dial makes a client connection. With viaXDS the security of each
// connection comes from meshd (xDS client credentials, plaintext fallback);
// otherwise it is plaintext, like a client outside the mesh. Connections
// leave from sourceIP when set, the pod IP meshd matches chains on.
func dial(target string, viaXDS bool, sourceIP string) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if viaXDS {
		c, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
		if err != nil {
			return nil, fmt.Errorf("xDS client credentials: %w", err)
		}
		creds = c
	} else if !strings.Contains(target, ":///") {
		target = "passthrough:///" + target
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if sourceIP != "" {
		local := net.ParseIP(sourceIP)
		if local == nil {
			return nil, fmt.Errorf("source IP %q is not an IP address", sourceIP)
		}
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: local}}
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}))
	}
	cc, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("target %q: %w", target, err)
	}
	return cc, nil
}

// invoke makes one unary call and describes its outcome.
func invoke(ctx context.Context, cc *grpc.ClientConn, method string, req *structpb.Struct) result {
	res := result{Target: cc.Target(), Method: method}
	var p peer.Peer
	resp := new(structpb.Struct)
	err := cc.Invoke(ctx, "/"+strings.TrimPrefix(method, "/"), req, resp, grpc.Peer(&p))
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
		res.ServerSPIFFEID = spiffeOf(ti)
		if certs := ti.State.PeerCertificates; len(certs) > 0 {
			res.ServerCertSerial = certs[0].SerialNumber.Text(16)
		}
	}
	st := status.Convert(err)
	res.Code, res.Message = st.Code().String(), st.Message()
	if err != nil {
		return res
	}
	res.OK = true
	res.Answer = resp.AsMap()
	res.PeerSeenByServer, _ = res.Answer["peer_seen_by_server"].(string)
	return res
}

func callOnce(ctx context.Context, o callOptions) result {
	cc, err := dial(o.target, o.xds, o.sourceIP)
	if err != nil {
		return result{Code: "Internal", Message: err.Error(), Target: o.target, Method: o.method}
	}
	defer func() { _ = cc.Close() }()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	req := map[string]any{"id": "1"}
	if o.relayTarget != "" {
		req = map[string]any{"target": o.relayTarget, "method": o.relayMethod, "fresh": o.relayFresh, "request": map[string]any{"id": "1"}}
	}
	s, err := structpb.NewStruct(req)
	if err != nil {
		return result{Code: "Internal", Message: err.Error()}
	}
	return invoke(ctx, cc, o.method, s)
}

// callRepeatedly starts a call every interval until d has passed or ctx
// ends, each on a new connection, and prints one line per call. A call
// that outlasts the interval delays the next one; calls never overlap.
// The error counts the failed calls.
func callRepeatedly(ctx context.Context, o callOptions, every, d time.Duration, w io.Writer) error {
	// An idle channel to the same target holds gRPC's xDS client, so the
	// per-call channels share its configuration instead of each fetching
	// it again: what changes from call to call is only the connection.
	if o.xds {
		anchor, err := dial(o.target, o.xds, o.sourceIP)
		if err != nil {
			return err
		}
		defer func() { _ = anchor.Close() }()
		anchor.Connect() // a new channel stays idle, without a resolver, until then
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	tick := time.NewTicker(every)
	defer tick.Stop()
	calls, failed := 0, 0
	for {
		r := callOnce(ctx, o)
		if ctx.Err() != nil {
			break // cut short by the end of the run, not a failure
		}
		calls++
		if !r.OK {
			failed++
		}
		printJSON(w, r)
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
		if ctx.Err() != nil {
			break
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d calls failed", failed, calls)
	}
	return nil
}

func printJSON(w io.Writer, r result) {
	b, err := json.Marshal(r)
	if err != nil {
		b = []byte(fmt.Sprintf(`{"ok":false,"code":"Internal","message":%q}`, err.Error()))
	}
	fmt.Fprintln(w, string(b))
}
