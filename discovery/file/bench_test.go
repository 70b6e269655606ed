package file

import (
	"fmt"
	"strings"
	"testing"
)

// BenchmarkReassemble measures what a reload costs after one file of a
// large directory changed: every other file's documents are already
// parsed and decoded, and the model is assembled again from all of them.
//
//	go test -run '^$' -bench Reassemble -benchmem ./discovery/file/
func BenchmarkReassemble(b *testing.B) {
	var y strings.Builder
	for s := range 1000 {
		ns := fmt.Sprintf("ns-%d", s%10)
		if s < 10 {
			fmt.Fprintf(&y, "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n", ns)
		}
		fmt.Fprintf(&y, "---\napiVersion: v1\nkind: Service\nmetadata: {name: svc-%d, namespace: %s}\nspec:\n  selector: {app: svc-%d}\n  ports: [{name: http, port: 8080, targetPort: 8080}]\n", s, ns, s)
		for p := range 4 {
			fmt.Fprintf(&y, "---\napiVersion: v1\nkind: Pod\nmetadata: {name: svc-%d-%d, namespace: %s, labels: {app: svc-%d, security.istio.io/tlsMode: istio}}\n"+
				"spec: {serviceAccountName: svc-%d, containers: [{name: app, image: app}]}\n"+
				"status: {podIP: 10.%d.%d.%d, conditions: [{type: Ready, status: \"True\"}]}\n", s, p, ns, s, s, s/250, s%250, p+1)
		}
	}
	docs, prob := parseFile(File{Path: "mesh.yaml", Data: []byte(y.String())})
	if prob != nil {
		b.Fatal(prob)
	}
	first := assemble(docs, nil, Options{}, nil)
	if len(first.Services) != 1000 || len(first.Workloads) != 4000 {
		b.Fatalf("generated mesh: %d services, %d workloads", len(first.Services), len(first.Workloads))
	}
	b.ReportAllocs()
	for b.Loop() {
		assemble(docs, nil, Options{}, nil)
	}
}
