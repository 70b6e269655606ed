package auth

import (
	"context"
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"
)

func TestBearerToken(t *testing.T) {
	tests := []struct {
		name    string
		ctx     context.Context
		want    string
		wantErr string
	}{
		{"bearer", incoming("authorization", "Bearer abc.def-ghi"), "abc.def-ghi", ""},
		{"scheme is case-insensitive", incoming("authorization", "bearer tok"), "tok", ""},
		{"surrounding spaces", incoming("authorization", "  Bearer   tok  "), "tok", ""},
		{"header name case", incoming("Authorization", "Bearer tok"), "tok", ""},
		{"no metadata", context.Background(), "", "carries no metadata"},
		{"no header", incoming("x-other", "1"), "", "no authorization header"},
		{"two headers", incoming("authorization", "Bearer a", "authorization", "Bearer b"), "", "2 authorization headers"},
		{"basic scheme", incoming("authorization", "Basic dXNlcjpwYXNz"), "", `uses scheme "Basic"`},
		{"token only", incoming("authorization", "s3cret"), "", "has no scheme"},
		{"no token", incoming("authorization", "Bearer"), "", "no token after Bearer"},
		{"empty token", incoming("authorization", "Bearer    "), "", "no token after Bearer"},
		{"token with space", incoming("authorization", "Bearer a b"), "", "contains whitespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := BearerToken(tt.ctx)
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Fatalf("BearerToken = %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("BearerToken = %q, want an error containing %q", got, tt.wantErr)
			}
			if !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %q: want ErrUnauthenticated and %q", err, tt.wantErr)
			}
			for _, secret := range []string{"s3cret", "dXNlcjpwYXNz"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q shows the credential", err)
				}
			}
		})
	}
}

func incoming(kv ...string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs(kv...))
}

func TestNoneAcceptsAnyone(t *testing.T) {
	for _, token := range []string{"", "anything"} {
		id, err := None{}.Authenticate(context.Background(), token)
		if err != nil || !id.Anonymous {
			t.Fatalf("None.Authenticate(%q) = %+v, %v; want an anonymous identity", token, id, err)
		}
	}
}

func TestAuthorize(t *testing.T) {
	node := SidecarNodeID("10.0.0.1", "web-0", "default", "cluster.local")
	tokenFor := func(ns, sa string) Identity { return Identity{Namespace: ns, ServiceAccount: sa} }
	tests := []struct {
		name    string
		id      Identity
		podSA   string
		want    Identity
		wantErr error
		// mentions are fragments the error must contain.
		mentions []string
	}{
		{name: "token matches", id: tokenFor("default", "web"), podSA: "web", want: tokenFor("default", "web")},
		{name: "other namespace", id: tokenFor("prod", "web"), podSA: "web", wantErr: ErrPermissionDenied,
			mentions: []string{`claims namespace "default"`, "prod/web", node.String()}},
		{name: "other namespace, pod unknown", id: tokenFor("prod", "web"), podSA: "", wantErr: ErrPermissionDenied,
			mentions: []string{"prod/web"}},
		{name: "other service account", id: tokenFor("default", "db"), podSA: "web", wantErr: ErrPermissionDenied,
			mentions: []string{"runs as service account default/web", "is for default/db", "default/web-0"}},
		{name: "pod unknown", id: tokenFor("default", "web"), podSA: "", wantErr: ErrPodUnknown, mentions: []string{"default/web-0"}},
		{name: "incomplete identity", id: Identity{Namespace: "default"}, podSA: "web", wantErr: ErrPermissionDenied,
			mentions: []string{"incomplete identity"}},
		{name: "zero identity", id: Identity{}, podSA: "web", wantErr: ErrPermissionDenied},
		{name: "anonymous takes the pod's identity", id: Identity{Anonymous: true}, podSA: "web", want: tokenFor("default", "web")},
		{name: "anonymous, pod unknown", id: Identity{Anonymous: true}, podSA: "", wantErr: ErrPodUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Authorize(tt.id, node, tt.podSA)
			if tt.wantErr == nil {
				if err != nil || got != tt.want {
					t.Fatalf("Authorize = %+v, %v; want %+v", got, err, tt.want)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Authorize = %+v, %v; want an error wrapping %v", got, err, tt.wantErr)
			}
			if got != (Identity{}) {
				t.Errorf("Authorize returned identity %+v with an error", got)
			}
			for _, m := range tt.mentions {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
		})
	}
}
