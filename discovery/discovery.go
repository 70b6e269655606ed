// Package discovery is where the mesh's inputs enter minimesh. A source (a
// directory of manifests in discovery/file, a Kubernetes API server in
// discovery/kubernetes) watches its inputs and publishes complete model
// snapshots; it never publishes deltas. Both keep an object's last valid
// version in force when a newer one is refused (model.Held). Everything downstream (policy resolution, translation,
// the xDS server) reads only those snapshots, so no later stage knows or
// cares where the mesh was described.
package discovery

import (
	"context"
	"time"

	"github.com/minimesh/minimesh/discovery/model"
)

// Source publishes complete model snapshots. Run blocks until ctx ends; it calls
// publish with a fresh *model.Snapshot (sorted, never mutated afterwards) after the
// first full load and after every change.
type Source interface {
	Run(ctx context.Context, publish func(*model.Snapshot)) error
}

// Observer is told when a source sees a change, at the time it saw it,
// before the source builds the snapshot that reflects it (which may turn
// out to be the same mesh, and then is not published). The xDS server
// debounces pushes on these, as Istio debounces events before it builds
// anything: a push waits for quiet since the latest change seen, not since
// the latest snapshot built. It must not block. Sources that stamp
// Snapshot.ObservedAt call it; nil means nobody listens.
type Observer func(at time.Time)

// Observe calls o if it is set.
func (o Observer) Observe(at time.Time) {
	if o != nil {
		o(at)
	}
}
