//go:build tools

// Package tools pins the Kubernetes and etcd server binaries that the
// minimesh end-to-end tests run against. It is never compiled: the blank
// imports only make `go mod tidy` keep the right versions in go.mod, and
// e2e/kube/build.sh builds the packages named here.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
