package policy

import "testing"

func TestProblemLine(t *testing.T) {
	tests := []struct {
		p    Problem
		want string
	}{
		{
			p: Problem{Severity: SeverityError, Kind: KindPeerAuthentication, Namespace: "shop", Name: "strict",
				Location: Location{File: "pa.yaml", Line: 7}, Field: "spec.mtls.mode", Message: "is wrong"},
			want: "pa.yaml:7: error: PeerAuthentication shop/strict: spec.mtls.mode: is wrong",
		},
		{
			// A Kubernetes object has no file: the line starts with the severity.
			p: Problem{Severity: SeverityWarning, Kind: KindDestinationRule, Namespace: "shop", Name: "web",
				Field: "spec.trafficPolicy.loadBalancer", Message: "is ignored"},
			want: "warning: DestinationRule shop/web: spec.trafficPolicy.loadBalancer: is ignored",
		},
		{
			p:    Problem{Severity: SeverityError, Location: Location{File: "broken.yaml"}, Message: "does not parse"},
			want: "broken.yaml: error: does not parse",
		},
	}
	for _, tt := range tests {
		if got := tt.p.Line(); got != tt.want {
			t.Errorf("Line() = %q, want %q", got, tt.want)
		}
	}
}
