package tokenreview_test

// Against a real kube-apiserver (e2e/kubeenv): tokens from the TokenRequest
// API, and tokens minted with the API server's own signing key to reach the
// cases a real token only reaches with time (expiry).

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/minimesh/minimesh/e2e/kubeenv"
	"github.com/minimesh/minimesh/xds/auth"
	"github.com/minimesh/minimesh/xds/auth/tokenreview"
)

const audience = "istio-ca"

func requestToken(t *testing.T, c kubernetes.Interface, ns, sa string, audiences ...string) string {
	t.Helper()
	tr, err := c.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: ptr[int64](3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s/%s: %v", ns, sa, err)
	}
	return tr.Status.Token
}

func ptr[T any](v T) *T { return &v }

// signJWT makes an RS256 JWT with the API server's service-account key.
func signJWT(t *testing.T, key *rsa.PrivateKey, claims map[string]any) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signing := enc(map[string]string{"alg": "RS256", "typ": "JWT"}) + "." + enc(claims)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func TestTokenReviewAgainstAPIServer(t *testing.T) {
	env := kubeenv.Start(t)
	ctx := context.Background()
	admin := env.Client()
	for _, ns := range []string{"shop", "other"} {
		if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	sas := map[string]*corev1.ServiceAccount{}
	for _, id := range [][2]string{{"shop", "product"}, {"other", "stock"}, {"shop", "gone"}} {
		sa, err := admin.CoreV1().ServiceAccounts(id[0]).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: id[1]}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sas[id[0]+"/"+id[1]] = sa
	}

	// meshd reviews with its own (admin here) credentials and audience.
	reviewer := tokenreview.New(admin, tokenreview.Options{Audiences: []string{audience}})

	t.Run("each token proves its own service account", func(t *testing.T) {
		for _, want := range []auth.Identity{{Namespace: "shop", ServiceAccount: "product"}, {Namespace: "other", ServiceAccount: "stock"}} {
			tok := requestToken(t, admin, want.Namespace, want.ServiceAccount, audience)
			got, err := reviewer.Authenticate(ctx, tok)
			if err != nil {
				t.Fatalf("token of %s: %v", want, err)
			}
			if got != want {
				t.Errorf("token of %s authenticated as %s", want, got)
			}
			// Combined with auth.Authorize, it cannot claim another's pod.
			node := auth.NodeID{Namespace: "shop", Pod: "product-1"}
			if _, err := auth.Authorize(got, node, "product"); (got.ServiceAccount == "product") != (err == nil) {
				t.Errorf("Authorize(%s, pod shop/product-1 running as product) = %v", got, err)
			}
		}
	})

	t.Run("a token for another audience is refused", func(t *testing.T) {
		tok := requestToken(t, admin, "shop", "product", "some-other-service")
		_, err := reviewer.Authenticate(ctx, tok)
		if !errors.Is(err, tokenreview.ErrWrongAudience) {
			t.Fatalf("err = %v, want ErrWrongAudience", err)
		}
		// The ordinary pod token (the API server's audience) is foreign too.
		if _, err := reviewer.Authenticate(ctx, requestToken(t, admin, "shop", "product")); !errors.Is(err, tokenreview.ErrWrongAudience) {
			t.Errorf("default-audience token: err = %v, want ErrWrongAudience", err)
		}
	})

	t.Run("an expired token is refused", func(t *testing.T) {
		sa := sas["shop/product"]
		now := time.Now()
		tok := signJWT(t, env.ServiceAccountSigningKey(), map[string]any{
			"iss": kubeenv.Issuer, "sub": "system:serviceaccount:shop:product", "aud": []string{audience},
			"iat": now.Add(-2 * time.Hour).Unix(), "nbf": now.Add(-2 * time.Hour).Unix(), "exp": now.Add(-time.Hour).Unix(),
			"kubernetes.io": map[string]any{"namespace": "shop", "serviceaccount": map[string]any{"name": "product", "uid": string(sa.UID)}},
		})
		if _, err := reviewer.Authenticate(ctx, tok); !errors.Is(err, tokenreview.ErrExpiredToken) {
			t.Fatalf("err = %v, want ErrExpiredToken", err)
		}
	})

	t.Run("a token whose service account was deleted is refused", func(t *testing.T) {
		tok := requestToken(t, admin, "shop", "gone", audience)
		if _, err := reviewer.Authenticate(ctx, tok); err != nil {
			t.Fatalf("before deletion: %v", err)
		}
		if err := admin.CoreV1().ServiceAccounts("shop").Delete(ctx, "gone", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		// The API server caches successful authentications for ten
		// seconds, so revocation takes up to that long.
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err := reviewer.Authenticate(ctx, tok)
			if errors.Is(err, tokenreview.ErrInvalidToken) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("30s after deletion: err = %v, want ErrInvalidToken", err)
			}
			time.Sleep(500 * time.Millisecond)
		}
	})

	t.Run("a forged or garbage token is refused", func(t *testing.T) {
		tok := requestToken(t, admin, "shop", "product", audience)
		forged := tok[:len(tok)-4] + "AAAA"
		for name, tok := range map[string]string{"forged": forged, "garbage": "not-a-jwt"} {
			if _, err := reviewer.Authenticate(ctx, tok); !errors.Is(err, tokenreview.ErrInvalidToken) {
				t.Errorf("%s token: err = %v, want ErrInvalidToken", name, err)
			}
		}
	})

	t.Run("a user token is not a service account", func(t *testing.T) {
		// Without an audience restriction the static admin token is
		// authenticated, as user "admin".
		open := tokenreview.New(admin, tokenreview.Options{})
		cfg := env.RESTConfig()
		if _, err := open.Authenticate(ctx, cfg.BearerToken); !errors.Is(err, tokenreview.ErrNotServiceAccount) {
			t.Fatalf("err = %v, want ErrNotServiceAccount", err)
		}
	})

	t.Run("an unreachable API server is not a refusal", func(t *testing.T) {
		// A fresh environment would cost seconds; a closed port does it.
		cfg := env.RESTConfig()
		cfg.Host = "https://127.0.0.1:1"
		c, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = tokenreview.New(c, tokenreview.Options{Timeout: 2 * time.Second}).Authenticate(ctx, "x")
		if err == nil || !tokenreview.IsUnavailable(err) {
			t.Fatalf("err = %v, want an availability error", err)
		}
	})
}
