package file

import (
	"strings"
	"testing"
)

// TestNameRules checks metadata.name and metadata.namespace against the
// rule the API server applies to each kind minimesh reads.
func TestNameRules(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	docs := map[string]string{
		"Namespace":           "apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n",
		"Service":             "apiVersion: v1\nkind: Service\nmetadata: {name: %s, namespace: %s}\nspec: {ports: [{port: 80}]}\n",
		"Pod":                 "apiVersion: v1\nkind: Pod\nmetadata: {name: %s, namespace: %s}\nspec: {containers: [{name: app, image: app}]}\n",
		"EndpointSlice":       "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: %s, namespace: %s, labels: {kubernetes.io/service-name: s}}\naddressType: IPv4\nendpoints: []\n",
		"AuthorizationPolicy": "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: %s, namespace: %s}\n",
	}
	tests := []struct {
		kind, name, namespace string
		want                  string // "" when the name is valid
	}{
		{kind: "Namespace", name: "shop"},
		{kind: "Namespace", name: long(63)},
		{kind: "Namespace", name: "a.b", want: `"a.b" is not a valid Namespace name: Kubernetes requires a DNS-1123 label: ` +
			`at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit`},
		{kind: "Namespace", name: long(64), want: "is not a valid Namespace name: Kubernetes requires a DNS-1123 label: at most 63 lowercase " +
			"letters, digits and '-', starting and ending with a letter or digit (this one has 64)"},
		{kind: "Service", name: long(63)},
		{kind: "Service", name: long(64), want: "is not a valid Service name: Kubernetes requires a DNS-1035 label"},
		{kind: "Service", name: "1st", want: `"1st" is not a valid Service name: Kubernetes requires a DNS-1035 label: ` +
			`at most 63 lowercase letters, digits and '-', starting with a letter and ending with a letter or digit`},
		{kind: "Service", name: "a.b", want: `"a.b" is not a valid Service name: Kubernetes requires a DNS-1035 label`},
		{kind: "Pod", name: "1st"},
		{kind: "Pod", name: "web.v2"},
		{kind: "Pod", name: long(253)},
		{kind: "Pod", name: long(254), want: "is not a valid Pod name: Kubernetes requires a DNS-1123 subdomain: at most 253 lowercase " +
			"letters, digits, '-' and '.', starting and ending with a letter or digit (this one has 254)"},
		{kind: "Pod", name: "Web", want: `"Web" is not a valid Pod name: Kubernetes requires a DNS-1123 subdomain`},
		{kind: "Pod", name: "web", namespace: "a.b", want: `"a.b" is not a valid namespace name: Kubernetes requires a DNS-1123 label`},
		{kind: "Pod", name: "web", namespace: long(64), want: "is not a valid namespace name: Kubernetes requires a DNS-1123 label"},
		{kind: "EndpointSlice", name: "web.abc"},
		{kind: "EndpointSlice", name: "web_abc", want: `"web_abc" is not a valid EndpointSlice name: Kubernetes requires a DNS-1123 subdomain`},
		{kind: "AuthorizationPolicy", name: "allow.read"},
		{kind: "AuthorizationPolicy", name: "Allow", want: `"Allow" is not a valid AuthorizationPolicy name: Kubernetes requires a DNS-1123 subdomain`},
	}
	for _, tt := range tests {
		ns := tt.namespace
		if ns == "" {
			ns = "default"
		}
		t.Run(tt.kind+"/"+tt.name[:min(len(tt.name), 12)]+"/"+ns[:min(len(ns), 12)], func(t *testing.T) {
			doc := docs[tt.kind]
			if tt.kind == "Namespace" {
				doc = strings.Replace(doc, "%s", tt.name, 1)
			} else {
				doc = strings.Replace(strings.Replace(doc, "%s", tt.name, 1), "%s", ns, 1)
			}
			s := Build([]File{{Path: "a.yaml", Data: []byte(doc)}}, Options{})
			var got []string
			for _, p := range s.Problems {
				if p.Field == "metadata.name" || p.Field == "metadata.namespace" {
					got = append(got, p.Message)
				}
			}
			switch {
			case tt.want == "" && len(got) > 0:
				t.Errorf("refused: %v", got)
			case tt.want != "" && (len(got) != 1 || !strings.Contains(got[0], tt.want)):
				t.Errorf("problems about the name = %v, want one containing %q", got, tt.want)
			}
		})
	}
}
