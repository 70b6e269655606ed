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
// unknown field, an unknown kind, an invalid value, a name the API server
// would refuse or a YAML tag outside the core ones is an error naming the
// file, the line of the field and what is allowed. A bad object is skipped
// and everything else loads; a file that is not valid YAML is skipped as a
// whole. While watching, a mistake never removes what was served: a file
// that stops parsing keeps its last valid version, and an object whose new
// version is refused keeps its last valid one (history.go); only removing
// an object removes it.
// Directories are read by one function (readTree) for meshd and `meshctl
// validate` alike: every entry that cannot be used (a named pipe, a device,
// a dangling or looping link, an unreadable file, one over MaxFileSize, one
// saved as UTF-16) is reported the same way, never skipped silently.
//
// Valid objects become model types through discovery/convert, the code the
// Kubernetes source uses too, so one mesh gives the same snapshot, with the
// same warnings about objects that clash, from either. The file source
// differs in two stated rules only (see convertOptions): a pod without
// status conditions is ready, and a service without EndpointSlices gets
// endpoints derived from its selector.
package file
