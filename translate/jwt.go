package translate

import (
	"github.com/minimesh/minimesh/discovery/model"

	"fmt"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/minimesh/minimesh/policy"
)

// jwtAuthnFilterName is Envoy's name for the JWT filter.
const jwtAuthnFilterName = "envoy.filters.http.jwt_authn"

// unusableJWKS is a key set whose only key is an RSA public key whose private
// half was discarded when minimesh was written, so no token verifies against
// it. A provider whose jwksUri meshd could not fetch gets it: tokens for
// that issuer are rejected (fail closed) while the rest of the
// configuration still loads.
const unusableJWKS = `{"keys":[{"kty":"RSA","kid":"minimesh-unusable","alg":"RS256","use":"sig","e":"AQAB",` +
	`"n":"ws258JxdKLfz3gjXYUwkO0UzKKeBPuKe7fPpGVKx-FGTQAkMdvHiowwmpFEpTxwKnS1tKVnKBNvTa669JbR9oZHarPhEvak02HsiiQXQ5tN6W2X3iVnuw4agsZBcF0U1X3ZD_kPuH4Sf5fwa_NmjQ2LOuFdvGDFq7r416zyMaL_dMwPhKCngGdGo0R_wKD5wWUHNT5Q-q6w_2VJ3UVQeybOb80YdWgKXGlOwoBx_wotkYwQSj8bVtwbdIoPZQRQDKb_erF9N-yWHM-nODBIPcMmQHbgw8-dMob1hq-WTUMG-8b8U0eGwgu9vi__8C0LPeL6Ftht21pGJzvupIRJRaw"}]}`

// JWTAuthn builds the jwt_authn filter for the RequestAuthentications that
// select a workload (nil when there are none), the issuers it accepts
// (sorted, for splitting requestPrincipals), and problems.
//
// Istio's semantics: a request with a token that fails verification against
// every provider is rejected with 401; a request without a token passes
// (allow_missing) and AuthorizationPolicy decides. Each provider stores the
// verified payload in dynamic metadata (payload_in_metadata) for RBAC.
func JWTAuthn(ras []*policy.RequestAuthentication, jwks map[string]string) (*hcmv3.HttpFilter, []string, policy.Problems) {
	var problems policy.Problems
	cfg := &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{}}
	var names, issuers []string
	for _, ra := range ras {
		for i, r := range ra.Spec.JWTRules {
			name := JWTProviderName(ra.Namespace, ra.Name, i)
			p := &jwtv3.JwtProvider{
				Issuer:               r.Issuer,
				Audiences:            r.Audiences,
				Forward:              r.ForwardOriginalToken,
				FromParams:           r.FromParams,
				FromCookies:          r.FromCookies,
				ForwardPayloadHeader: r.OutputPayloadToHeader,
				PayloadInMetadata:    jwtPayloadKey,
			}
			for _, h := range r.FromHeaders {
				p.FromHeaders = append(p.FromHeaders, &jwtv3.JwtHeader{Name: h.Name, ValuePrefix: h.Prefix})
			}
			if len(p.FromHeaders) == 0 && len(p.FromParams) == 0 && len(p.FromCookies) == 0 {
				// Istio's (and Envoy's) default locations, spelled out so
				// the configuration says where tokens are read from.
				p.FromHeaders = []*jwtv3.JwtHeader{{Name: "Authorization", ValuePrefix: "Bearer "}}
				p.FromParams = []string{"access_token"}
			}
			keys := r.JWKS
			if keys == "" && r.JWKSURI != "" {
				var ok bool
				if keys, ok = jwks[r.JWKSURI]; !ok || keys == "" {
					problems = append(problems, policy.Problem{
						Severity: policy.SeverityWarning, Kind: ra.Kind, Namespace: ra.Namespace, Name: ra.Name,
						Location: ra.Origin, Field: fmt.Sprintf("spec.jwtRules[%d].jwksUri", i),
						Message: fmt.Sprintf("keys from %q are not available (not fetched yet or the fetch failed); tokens from issuer %q are rejected until they are", r.JWKSURI, r.Issuer),
					})
					keys = unusableJWKS
				}
			}
			if keys == "" {
				problems = append(problems, policy.Problem{
					Severity: policy.SeverityWarning, Kind: ra.Kind, Namespace: ra.Namespace, Name: ra.Name,
					Location: ra.Origin, Field: fmt.Sprintf("spec.jwtRules[%d]", i),
					Message: fmt.Sprintf("neither jwks nor jwksUri is set; tokens from issuer %q are rejected", r.Issuer),
				})
				keys = unusableJWKS
			}
			p.JwksSourceSpecifier = &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{
				Specifier: &corev3.DataSource_InlineString{InlineString: keys},
			}}
			cfg.Providers[name] = p
			names = append(names, name)
			issuers = append(issuers, r.Issuer)
		}
	}
	if len(names) == 0 {
		return nil, nil, problems
	}
	slices.Sort(names)
	slices.Sort(issuers)
	issuers = slices.Compact(issuers)
	var reqs []*jwtv3.JwtRequirement
	for _, n := range names {
		reqs = append(reqs, &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: n}})
	}
	reqs = append(reqs, &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}})
	cfg.Rules = []*jwtv3.RequirementRule{{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		RequirementType: &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{
			RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: &jwtv3.JwtRequirementOrList{Requirements: reqs}},
		}},
	}}
	return &hcmv3.HttpFilter{
		Name:       jwtAuthnFilterName,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(cfg)},
	}, issuers, problems
}

// keySets is the jwksUri → key set map translation uses: the keys meshd
// fetched into the snapshot, then any given in Options (tests, overrides).
func keySets(snap *model.Snapshot, opts Options) map[string]string {
	if snap == nil || len(snap.JWKS) == 0 {
		return opts.JWKS
	}
	out := make(map[string]string, len(snap.JWKS)+len(opts.JWKS))
	for k, v := range opts.JWKS {
		out[k] = v
	}
	for k, v := range snap.JWKS {
		out[k] = v
	}
	return out
}
