package file

import (
	"fmt"

	"k8s.io/apimachinery/pkg/util/validation"
)

// nameRule is what the API server requires of an object's name. Kubernetes
// refuses an object whose name breaks its kind's rule, so minimesh does
// too, naming the rule.
type nameRule struct {
	// rule is the rule's name and what it allows, as the error says it.
	rule   string
	maxLen int
	valid  func(string) []string
}

var (
	dns1123Label = nameRule{
		rule:   "a DNS-1123 label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit",
		maxLen: validation.DNS1123LabelMaxLength,
		valid:  validation.IsDNS1123Label,
	}
	dns1035Label = nameRule{
		rule:   "a DNS-1035 label: at most 63 lowercase letters, digits and '-', starting with a letter and ending with a letter or digit",
		maxLen: validation.DNS1035LabelMaxLength,
		valid:  validation.IsDNS1035Label,
	}
	dns1123Subdomain = nameRule{
		rule:   "a DNS-1123 subdomain: at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
		maxLen: validation.DNS1123SubdomainMaxLength,
		valid:  validation.IsDNS1123Subdomain,
	}
)

// nameRuleFor returns the rule the API server applies to metadata.name of
// a kind minimesh reads: a Namespace name is a DNS-1123 label (a namespace
// is one label of a service's DNS name), a Service name a DNS-1035 label
// (it is a DNS label that must not start with a digit), and every other
// kind (Pod, EndpointSlice, and custom resources such as Istio's policies)
// a DNS-1123 subdomain.
func nameRuleFor(apiVersion, kind string) nameRule {
	switch {
	case apiVersion == "v1" && kind == "Namespace":
		return dns1123Label
	case apiVersion == "v1" && kind == "Service":
		return dns1035Label
	default:
		return dns1123Subdomain
	}
}

// check returns why name breaks the rule, or "" if it does not. what
// names the name ("Service name", "namespace name").
func (r nameRule) check(what, name string) string {
	if len(r.valid(name)) == 0 {
		return ""
	}
	msg := fmt.Sprintf("%q is not a valid %s: Kubernetes requires %s", name, what, r.rule)
	if len(name) > r.maxLen {
		msg += fmt.Sprintf(" (this one has %d)", len(name))
	}
	return msg
}
