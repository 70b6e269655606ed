#!/usr/bin/env bash
# build.sh builds the kube-apiserver, kube-controller-manager and etcd binaries
# that the Kubernetes tests run against, from the pinned versions in
# e2e/kube/tools/go.mod. There is no container runtime and no binary download
# here, so the binaries come from the Go module proxy like any other module.
#
# The result is cached by version under
#   ${MINIMESH_CACHE:-$HOME/.cache/minimesh}/kube-v1.34.10/
# and a binary that is already there is not rebuilt, so a second run is
# instant. A cold build takes about ten minutes on two cores.
#
# Usage: e2e/kube/build.sh          build what is missing
#        e2e/kube/build.sh --print  print the binary directory and exit
set -euo pipefail

KUBE_VERSION=v1.34.10
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="${here}/tools"
cache="${MINIMESH_CACHE:-${HOME}/.cache/minimesh}"
out="${cache}/kube-${KUBE_VERSION}"

if [[ "${1:-}" == "--print" ]]; then
	echo "${out}"
	exit 0
fi

mkdir -p "${out}"

# The gitVersion stamp makes /version report a real release, which clients
# such as kubectl use for their skew checks.
minor="${KUBE_VERSION#v1.}"
minor="${minor%%.*}"
ldflags="-s -w"
ldflags+=" -X k8s.io/component-base/version.gitVersion=${KUBE_VERSION}"
ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
ldflags+=" -X k8s.io/component-base/version.gitMinor=${minor}"
ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"

build() {
	local name="$1" pkg="$2"
	if [[ -x "${out}/${name}" ]]; then
		echo "build.sh: ${name} already built: ${out}/${name}"
		return
	fi
	echo "build.sh: building ${name} from ${pkg} (this takes minutes on a cold cache)"
	local start=${SECONDS}
	# Build to a temporary name and rename, so an interrupted build never
	# leaves a truncated binary that a later run would take as cached.
	(cd "${tools}" && go build -trimpath -ldflags "${ldflags}" -o "${out}/${name}.tmp" "${pkg}")
	mv "${out}/${name}.tmp" "${out}/${name}"
	echo "build.sh: built ${out}/${name} in $((SECONDS - start))s"
}

build etcd go.etcd.io/etcd/server/v3
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
# The tests write EndpointSlices and pod status themselves, so the
# controller-manager (five more minutes cold) is built only on request.
if [[ "${KUBE_CONTROLLER_MANAGER:-0}" == "1" ]]; then
	build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
fi

echo "build.sh: binaries are in ${out}"
