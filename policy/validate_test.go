package policy

import (
	"testing"
)

// TestValidate runs every field rule through Decode, so the paths are those
// a user sees. Each case lists all problems expected, in order.
func TestValidate(t *testing.T) {
	const (
		pa = KindPeerAuthentication
		dr = KindDestinationRule
		ap = KindAuthorizationPolicy
		ra = KindRequestAuthentication
	)
	tests := []struct {
		name string
		kind string
		spec string
		want []want
	}{
		// PeerAuthentication
		{"pa strict namespace-wide", pa, `{mtls: {mode: STRICT}}`, nil},
		{"pa all modes", pa, `{selector: {matchLabels: {app: a}}, mtls: {mode: UNSET},
			portLevelMtls: {"1": {mode: DISABLE}, "2": {mode: PERMISSIVE}, "65535": {mode: STRICT}}}`, nil},
		{"pa bad mode", pa, `{mtls: {mode: strict}}`, []want{e("spec.mtls.mode", `"strict" is not one of`)}},
		{"pa port level needs selector", pa, `{portLevelMtls: {"8080": {mode: DISABLE}}}`,
			[]want{e("spec.portLevelMtls", "needs a workload selector")}},
		{"pa port level with empty matchLabels", pa, `{selector: {}, portLevelMtls: {"8080": {mode: DISABLE}}}`,
			[]want{e("spec.portLevelMtls", "needs a workload selector")}},
		{"pa port range and mode", pa, `{selector: {matchLabels: {app: a}}, portLevelMtls: {"0": {mode: STRICT}, "70000": {mode: NOPE}}}`,
			[]want{
				e("spec.portLevelMtls[0]", "port 0 is not in 1-65535"),
				e("spec.portLevelMtls[70000]", "port 70000 is not in 1-65535"),
				e("spec.portLevelMtls[70000].mode", `"NOPE" is not one of`),
			}},
		{"pa selector wildcard and bad value", pa, `{selector: {matchLabels: {app: "*", ver: "-x"}}}`,
			[]want{
				e("spec.selector.matchLabels[app]", "wildcards are not supported"),
				e("spec.selector.matchLabels[ver]", `"-x" is not a valid label value`),
			}},

		// DestinationRule
		{"dr short host", dr, `{host: product, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}`, nil},
		{"dr fqdn and wildcard hosts", dr, `{host: "*.default.svc.cluster.local", exportTo: [".", other]}`, nil},
		{"dr star host", dr, `{host: "*", exportTo: ["*"]}`, nil},
		{"dr host required", dr, `{}`, []want{e("spec.host", "is required")}},
		{"dr wildcard in the middle", dr, `{host: "product.*.svc.cluster.local"}`,
			[]want{e("spec.host", "a wildcard is only allowed as the whole first label")}},
		{"dr partial wildcard label", dr, `{host: "*product.default"}`,
			[]want{e("spec.host", "a wildcard is only allowed")}},
		{"dr bad label", dr, `{host: "product_.default"}`, []want{e("spec.host", `label "product_"`)}},
		{"dr workloadSelector refused", dr, `{host: a, workloadSelector: {matchLabels: {app: a}}}`,
			[]want{e("spec.workloadSelector", "is not supported")}},
		{"dr exportTo", dr, `{host: a, exportTo: ["Bad", ".", "."]}`, []want{
			e("spec.exportTo[0]", `"Bad" is not "."`),
			e("spec.exportTo[2]", `"." is listed twice`),
		}},
		{"dr exportTo star with others", dr, `{host: a, exportTo: ["*", "default"]}`,
			[]want{e("spec.exportTo", "cannot be combined")}},
		{"dr tls mode enum", dr, `{host: a, trafficPolicy: {tls: {mode: STRICT}}}`,
			[]want{e("spec.trafficPolicy.tls.mode", `"STRICT" is not one of DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL`)}},
		{"dr simple with ca", dr, `{host: a, trafficPolicy: {tls: {mode: SIMPLE, caCertificates: /ca.pem, sni: a.example}}}`, nil},
		{"dr simple without ca warns", dr, `{host: a, trafficPolicy: {tls: {mode: SIMPLE}}}`,
			[]want{w("spec.trafficPolicy.tls.caCertificates", "cannot verify the server's certificate")}},
		{"dr simple insecureSkipVerify accepted knowingly", dr, `{host: a, trafficPolicy: {tls: {mode: SIMPLE, insecureSkipVerify: true}}}`, nil},
		{"dr simple with client cert warns", dr, `{host: a, trafficPolicy: {tls: {mode: SIMPLE, caCertificates: /ca, clientCertificate: /c, privateKey: /k}}}`,
			[]want{
				w("spec.trafficPolicy.tls.clientCertificate", "ignored with SIMPLE"),
				w("spec.trafficPolicy.tls.privateKey", "ignored with SIMPLE"),
			}},
		{"dr mutual complete", dr, `{host: a, trafficPolicy: {tls: {mode: MUTUAL, clientCertificate: /c, privateKey: /k, caCertificates: /ca, subjectAltNames: [a]}}}`, nil},
		{"dr mutual needs cert and key", dr, `{host: a, trafficPolicy: {tls: {mode: MUTUAL, caCertificates: /ca}}}`,
			[]want{
				e("spec.trafficPolicy.tls.clientCertificate", "is required with MUTUAL"),
				e("spec.trafficPolicy.tls.privateKey", "is required with MUTUAL"),
			}},
		{"dr credentialName refused", dr, `{host: a, trafficPolicy: {tls: {mode: MUTUAL, credentialName: my-secret}}}`,
			[]want{e("spec.trafficPolicy.tls.credentialName", "no secret store")}},
		{"dr istio mutual refuses own certs", dr, `{host: a, trafficPolicy: {tls: {mode: ISTIO_MUTUAL, caCertificates: /ca, privateKey: /k, subjectAltNames: [""]}}}`,
			[]want{
				e("spec.trafficPolicy.tls.subjectAltNames[0]", "must not be empty"),
				e("spec.trafficPolicy.tls.caCertificates", "must not be set with ISTIO_MUTUAL"),
				e("spec.trafficPolicy.tls.privateKey", "must not be set with ISTIO_MUTUAL"),
			}},
		{"dr disable with settings warns", dr, `{host: a, trafficPolicy: {tls: {mode: DISABLE, sni: x}}}`,
			[]want{w("spec.trafficPolicy.tls.sni", "ignored because mode is DISABLE")}},
		{"dr ignored traffic fields warn", dr, `{host: a, subsets: [{name: v1}], trafficPolicy: {
			loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {}, outlierDetection: {}, tunnel: {}, proxyProtocol: {}, retryBudget: {},
			portLevelSettings: [{port: {number: 80}, loadBalancer: {}, connectionPool: {}, outlierDetection: {}}]}}`,
			[]want{
				w("spec.subsets", "ignored by minimesh"),
				w("spec.trafficPolicy.connectionPool", "ignored by minimesh"),
				w("spec.trafficPolicy.loadBalancer", "ignored by minimesh"),
				w("spec.trafficPolicy.outlierDetection", "ignored by minimesh"),
				w("spec.trafficPolicy.proxyProtocol", "ignored by minimesh"),
				w("spec.trafficPolicy.retryBudget", "ignored by minimesh"),
				w("spec.trafficPolicy.tunnel", "ignored by minimesh"),
				w("spec.trafficPolicy.portLevelSettings[0].connectionPool", "ignored by minimesh"),
				w("spec.trafficPolicy.portLevelSettings[0].loadBalancer", "ignored by minimesh"),
				w("spec.trafficPolicy.portLevelSettings[0].outlierDetection", "ignored by minimesh"),
			}},
		{"dr port level settings", dr, `{host: a, trafficPolicy: {portLevelSettings: [
			{tls: {mode: ISTIO_MUTUAL}}, {port: {number: 0}}, {port: {number: 80}, tls: {mode: BAD}}, {port: {number: 80}}]}}`,
			[]want{
				e("spec.trafficPolicy.portLevelSettings[0].port", "is required"),
				e("spec.trafficPolicy.portLevelSettings[1].port.number", "port 0 is not in 1-65535"),
				e("spec.trafficPolicy.portLevelSettings[2].tls.mode", `"BAD" is not one of`),
				e("spec.trafficPolicy.portLevelSettings[3].port.number", "already configured by portLevelSettings[2]"),
			}},

		// AuthorizationPolicy
		{"ap allow nothing", ap, `{}`, nil},
		{"ap seed allow GET from gateway", ap, `{selector: {matchLabels: {app: product}}, action: ALLOW, rules: [{
			from: [{source: {principals: ["cluster.local/ns/default/sa/product-gateway"]}}],
			to: [{operation: {methods: [GET], paths: ["/products/*"], ports: ["8080"]}}]}]}`, nil},
		{"ap every source and operation field", ap, `{action: DENY, rules: [{
			from: [{source: {principals: ["*"], notPrincipals: ["*/sa/x"], requestPrincipals: ["iss/*"], notRequestPrincipals: [a],
				namespaces: [test], notNamespaces: ["kube-*"], ipBlocks: ["10.0.0.1", "10.0.0.0/8", "::1"], notIpBlocks: ["fd00::/8"]}}],
			to: [{operation: {hosts: ["*.example.com"], notHosts: [a], ports: ["1"], notPorts: ["65535"], methods: ["*"], notMethods: [DELETE],
				paths: ["/a", "/b*"], notPaths: ["*.js"]}}]}]}`, nil},
		{"ap custom refused", ap, `{action: CUSTOM, provider: {name: ext}}`, []want{
			e("spec.action", "CUSTOM (external authorization) is not supported by minimesh; use ALLOW, DENY or AUDIT"),
			e("spec.provider", "is not supported"),
		}},
		{"ap bad action", ap, `{action: allow}`, []want{e("spec.action", `"allow" is not one of ALLOW, DENY, AUDIT`)}},
		{"ap targetRefs refused", ap, `{targetRef: {kind: Gateway}, targetRefs: [{kind: Service}]}`, []want{
			e("spec.targetRef", "use spec.selector"),
			e("spec.targetRefs", "use spec.selector"),
		}},
		{"ap deny without rules warns", ap, `{action: DENY}`, []want{w("spec.rules", "has no effect")}},
		{"ap empty source and operation", ap, `{rules: [{from: [{}, {source: {}}], to: [{operation: {}}]}]}`, []want{
			e("spec.rules[0].from[0].source", "must set at least one field"),
			e("spec.rules[0].from[1].source", "must set at least one field"),
			e("spec.rules[0].to[0].operation", "must set at least one field"),
		}},
		{"ap refused source fields", ap, `{rules: [{from: [{source: {remoteIpBlocks: ["1.2.3.4"], notRemoteIpBlocks: ["1.2.3.4"],
			serviceAccounts: [a], notServiceAccounts: [b]}}]}]}`, []want{
			e("spec.rules[0].from[0].source.remoteIpBlocks", "X-Forwarded-For"),
			e("spec.rules[0].from[0].source.notRemoteIpBlocks", "use ipBlocks"),
			e("spec.rules[0].from[0].source.serviceAccounts", "cluster.local/ns/NAMESPACE/sa/NAME"),
			e("spec.rules[0].from[0].source.notServiceAccounts", "use principals"),
		}},
		{"ap bad ip blocks", ap, `{rules: [{from: [{source: {ipBlocks: ["10.0.0.0/33", "host"], notIpBlocks: ["1.2.3"]}}]}]}`, []want{
			e("spec.rules[0].from[0].source.ipBlocks[0]", "not a valid CIDR"),
			e("spec.rules[0].from[0].source.ipBlocks[1]", "not an IP address or CIDR"),
			e("spec.rules[0].from[0].source.notIpBlocks[0]", "not an IP address or CIDR"),
		}},
		{"ap bad patterns", ap, `{rules: [{from: [{source: {principals: ["cluster.local/*/sa/x", ""]}}],
			to: [{operation: {paths: ["/api/{*}/x"], hosts: ["a*b*"]}}]}]}`, []want{
			e("spec.rules[0].from[0].source.principals[0]", `has a "*" that is not at the start or the end`),
			e("spec.rules[0].from[0].source.principals[1]", "must not be empty"),
			e("spec.rules[0].to[0].operation.hosts[0]", `"a*b*"`),
			e("spec.rules[0].to[0].operation.paths[0]", "path templates"),
		}},
		{"ap ports and methods", ap, `{rules: [{to: [{operation: {ports: ["0", "http", "65536"], methods: ["get", ""]}}]}]}`, []want{
			e("spec.rules[0].to[0].operation.ports[0]", `"0" is not a port number in 1-65535`),
			e("spec.rules[0].to[0].operation.ports[1]", `"http" is not a port number`),
			e("spec.rules[0].to[0].operation.ports[2]", `"65536" is not a port number`),
			w("spec.rules[0].to[0].operation.methods[0]", `"get" never matches`),
			e("spec.rules[0].to[0].operation.methods[1]", "must not be empty"),
		}},
		{"ap supported when keys", ap, `{rules: [{when: [
			{key: "request.headers[x-user]", values: ["a*"]},
			{key: source.ip, values: ["10.0.0.0/8"]},
			{key: source.namespace, notValues: [test]},
			{key: source.principal, values: ["*"]},
			{key: request.auth.principal, values: ["iss/sub"]},
			{key: request.auth.audiences, values: [aud]},
			{key: request.auth.presenter, values: [p]},
			{key: "request.auth.claims[groups]", values: [admin]},
			{key: "request.auth.claims[a][b]", values: [c]},
			{key: destination.ip, values: ["127.0.0.1"]},
			{key: destination.port, values: ["8080"]},
			{key: connection.sni, values: ["*.local"]}]}]}`, nil},
		{"ap bad when", ap, `{rules: [{when: [
			{key: request.method, values: [GET]},
			{key: "request.headers[]", values: [a]},
			{key: "request.auth.claims", values: [a]},
			{key: remote.ip, values: ["1.1.1.1"]},
			{key: source.ip},
			{values: [a]},
			{key: destination.port, values: ["x"], notValues: ["70000"]},
			{key: source.ip, values: ["nope"]}]}]}`, []want{
			e("spec.rules[0].when[0].key", `"request.method" is not a supported key; supported keys: request.headers[NAME], source.ip`),
			e("spec.rules[0].when[1].key", "must name one header"),
			e("spec.rules[0].when[2].key", "must name a claim"),
			e("spec.rules[0].when[3].key", "remote.ip is not supported"),
			e("spec.rules[0].when[4]", "needs values or notValues"),
			e("spec.rules[0].when[5].key", "is required"),
			e("spec.rules[0].when[6].values[0]", `"x" is not a port number`),
			e("spec.rules[0].when[6].notValues[0]", `"70000" is not a port number`),
			e("spec.rules[0].when[7].values[0]", `"nope" is not an IP address or CIDR`),
		}},

		// RequestAuthentication
		{"ra complete", ra, `{selector: {matchLabels: {app: a}}, jwtRules: [{issuer: "https://issuer", audiences: [a],
			jwksUri: "https://issuer/jwks", fromHeaders: [{name: Authorization, prefix: "Bearer "}], fromParams: [token],
			fromCookies: [session], outputPayloadToHeader: x-jwt, forwardOriginalToken: true}]}`, nil},
		{"ra inline jwks", ra, `{jwtRules: [{issuer: a, jwks: '{"keys": [{"kty": "RSA"}]}'}]}`, nil},
		{"ra issuer required and unique", ra, `{jwtRules: [{jwks: '{"keys":[{}]}'}, {issuer: a, jwks: '{"keys":[{}]}'}, {issuer: a, jwks: '{"keys":[{}]}'}]}`, []want{
			e("spec.jwtRules[0].issuer", "is required"),
			e("spec.jwtRules[2].issuer", `"a" is already configured by jwtRules[1]`),
		}},
		{"ra no keys source refused", ra, `{jwtRules: [{issuer: a}]}`,
			[]want{e("spec.jwtRules[0]", "OpenID Connect")}},
		{"ra jwks and jwksUri", ra, `{jwtRules: [{issuer: a, jwks: '{"keys":[{}]}', jwksUri: "https://a/jwks"}]}`,
			[]want{w("spec.jwtRules[0].jwksUri", "ignored because jwks is set inline")}},
		{"ra bad jwks", ra, `{jwtRules: [{issuer: a, jwks: "{not json"}, {issuer: b, jwks: '{"key": []}'}, {issuer: c, jwks: '{"keys": {}}'}, {issuer: d, jwks: '{"keys": []}'}]}`, []want{
			e("spec.jwtRules[0].jwks", "is not valid JSON"),
			e("spec.jwtRules[1].jwks", `with a "keys" list`),
			e("spec.jwtRules[2].jwks", `with a "keys" list`),
			w("spec.jwtRules[3].jwks", "has no keys"),
		}},
		{"ra bad jwksUri", ra, `{jwtRules: [{issuer: a, jwksUri: "file:///jwks"}, {issuer: b, jwksUri: "https://"}, {issuer: c, jwksUri: "issuer/jwks"}]}`, []want{
			e("spec.jwtRules[0].jwksUri", "not an http:// or https:// URL"),
			e("spec.jwtRules[1].jwksUri", "not an http:// or https:// URL"),
			e("spec.jwtRules[2].jwksUri", "not an http:// or https:// URL"),
		}},
		{"ra header and param names", ra, `{jwtRules: [{issuer: a, jwksUri: "https://a", audiences: [""], fromHeaders: [{name: ""}, {name: "bad header"}],
			fromParams: [""], fromCookies: [""], outputPayloadToHeader: "x y"}]}`, []want{
			e("spec.jwtRules[0].audiences[0]", "must not be empty"),
			e("spec.jwtRules[0].fromHeaders[0].name", "is required"),
			e("spec.jwtRules[0].fromHeaders[1].name", `"bad header" is not a valid HTTP header name`),
			e("spec.jwtRules[0].fromParams[0]", "must not be empty"),
			e("spec.jwtRules[0].fromCookies[0]", "must not be empty"),
			e("spec.jwtRules[0].outputPayloadToHeader", "not a valid HTTP header name"),
		}},
		{"ra refused fields", ra, `{targetRef: {kind: Gateway}, jwtRules: [{issuer: a, jwksUri: "https://a", outputClaimToHeaders: [{header: x, claim: y}], timeout: 5s}]}`, []want{
			e("spec.targetRef", "use spec.selector"),
			e("spec.jwtRules[0].outputClaimToHeaders", "is not supported"),
			e("spec.jwtRules[0].timeout", "is not supported"),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj, ps := decodeYAML(t, acceptedVersions[tt.kind][0], tt.kind, tt.spec)
			checkProblems(t, ps, tt.want)
			if gotObj, wantObj := obj != nil, !ps.HasErrors(); gotObj != wantObj {
				t.Errorf("Decode returned object=%v with errors=%v; want an object exactly when there is no error", gotObj, ps.HasErrors())
			}
		})
	}
}

func TestValidateMeta(t *testing.T) {
	ps := Validate(&PeerAuthentication{Meta: Meta{Kind: KindPeerAuthentication}})
	checkProblems(t, ps, []want{e("metadata.name", "is required"), e("metadata.namespace", "is required")})
}
