package file

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzBuild feeds arbitrary bytes to Build: bad input must become problems,
// never a panic. The seeds are the example manifests, so mutations stay
// close to real YAML. `go test -fuzz FuzzBuild ./discovery/file` explores.
func FuzzBuild(f *testing.F) {
	for _, dir := range []string{"../../examples/mesh", "../../examples/policies", "../../examples/bad"} {
		paths, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
		for _, p := range paths {
			data, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 1e400}]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := Build([]File{{Path: "f.yaml", Data: data}}, Options{})
		if s == nil {
			t.Fatal("Build returned nil")
		}
	})
}
