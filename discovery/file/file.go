// Package file is minimesh's embedded discovery source: a directory of
// Kubernetes-style YAML manifests (Namespaces, Services, Pods,
// EndpointSlices and Istio's security policies) stands in for an API server.
//
// Build turns files into a model snapshot without any I/O, so translation
// tests and `meshctl validate` use exactly the code meshd runs. Source adds
// the I/O: it reads a directory, watches it with fsnotify, and publishes a
// new snapshot after every change that matters.
//
// Manifests are read the way `kubectl apply --validate=strict` would: an
// unknown field, an unknown kind or an invalid value is an error naming the
// file, the line of the field and what is allowed. A bad object is skipped
// and everything else loads; a file that is not valid YAML is skipped as a
// whole, and while watching, its last valid version stays in force.
//
// Valid objects become model types through discovery/convert, the code the
// Kubernetes source uses too, so one mesh gives the same snapshot from
// either. The file source differs in two stated rules only (see
// convertOptions): a pod without status conditions is ready, and a service
// without EndpointSlices gets endpoints derived from its selector.
package file

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ReadPaths reads manifest files for Build. A directory contributes every
// *.yaml and *.yml file below it (hidden files and directories are
// skipped, as Source does); a file named explicitly is read whatever its
// extension. It fails on the first path that cannot be read, because a
// missing input would make the result misleading.
func ReadPaths(paths ...string) ([]File, error) {
	var files []File
	for _, root := range paths {
		info, err := os.Stat(root)
		if err != nil {
			return nil, fmt.Errorf("cannot read %s: %w", root, err)
		}
		if !info.IsDir() {
			data, err := os.ReadFile(root)
			if err != nil {
				return nil, fmt.Errorf("cannot read %s: %w", root, err)
			}
			files = append(files, File{Path: root, Data: data})
			continue
		}
		err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if path != root && strings.HasPrefix(d.Name(), ".") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if d.IsDir() || !isManifest(path) {
				return nil
			}
			data, err := os.ReadFile(path)
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			files = append(files, File{Path: path, Data: data})
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("cannot read directory %s: %w", root, err)
		}
	}
	return files, nil
}
