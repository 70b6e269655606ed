// Package discovery is where the mesh's inputs enter minimesh. A source (a
// directory of manifests in discovery/file, a Kubernetes API server later)
// watches its inputs and publishes complete model snapshots; it never
// publishes deltas. Everything downstream (policy resolution, translation,
// the xDS server) reads only those snapshots, so no later stage knows or
// cares where the mesh was described.
package discovery

import (
	"context"

	"github.com/minimesh/minimesh/discovery/model"
)

// Source publishes complete model snapshots. Run blocks until ctx ends; it calls
// publish with a fresh *model.Snapshot (sorted, never mutated afterwards) after the
// first full load and after every change.
type Source interface {
	Run(ctx context.Context, publish func(*model.Snapshot)) error
}
