// Package examples holds minimesh's example meshes as manifests:
//
//   - mesh/: the seeds' scenario — a product gateway calling product and
//     stock services in namespace default, and a client outside the mesh
//     in namespace test, on loopback pod addresses. With no policy the
//     mesh is PERMISSIVE.
//   - policies/: the walk-throughs' policies, applied by copying them into
//     the watched directory: namespace STRICT mTLS with a port-level
//     exception, deny-all plus allow rules, and JWT authentication with a
//     demo key.
//   - bad/: deliberately broken manifests that show what validation reports.
//
// The Go code here is only the test that keeps them loadable and coherent.
package examples
