#!/usr/bin/env bash
# Builds the pinned Kubo and IPFS Cluster binaries from their Go modules into
# .tools/bin (git-ignored). Nothing prebuilt is downloaded: `go install` fetches
# module source through the Go module proxy and compiles it here.
#
# A binary is rebuilt only when the one present does not carry the pinned
# module version (read back with `go version -m`). Built binaries are also
# kept in a per-user cache (~/.cache/medvault/tools) so that a fresh clone on a
# warm machine copies them instead of compiling for minutes.
set -euo pipefail

KUBO_VERSION="${KUBO_VERSION:-v0.43.1}"
CLUSTER_VERSION="${CLUSTER_VERSION:-v1.1.6}"

root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/.tools/bin"
cache="${MEDVAULT_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/medvault/tools}"
mkdir -p "$bin" "$cache"

command -v go >/dev/null || { echo "install-ipfs: Go is required (go >= 1.26.4)" >&2; exit 1; }

# has_version BINARY MODULE VERSION: the binary exists and was built from MODULE@VERSION
has_version() {
  [ -x "$1" ] && go version -m "$1" 2>/dev/null | awk '$1=="mod"{print $2, $3}' | grep -qx "$2 $3"
}

# install_one NAME MODULE PACKAGE VERSION
install_one() {
  local name=$1 module=$2 package=$3 version=$4
  local target="$bin/$name" cached="$cache/$name-$version"
  if has_version "$target" "$module" "$version"; then
    echo "install-ipfs: $name $version already built"
    return
  fi
  if has_version "$cached" "$module" "$version"; then
    cp "$cached" "$target.tmp" && mv "$target.tmp" "$target"
    echo "install-ipfs: $name $version from cache"
    return
  fi
  echo "install-ipfs: building $package@$version (takes a few minutes the first time)"
  GOBIN="$bin" GOFLAGS="${GOFLAGS:--buildvcs=false}" go install "$package@$version"
  cp "$target" "$cached.tmp" && mv "$cached.tmp" "$cached"
}

install_one ipfs github.com/ipfs/kubo github.com/ipfs/kubo/cmd/ipfs "$KUBO_VERSION"
install_one ipfs-cluster-service github.com/ipfs-cluster/ipfs-cluster \
  github.com/ipfs-cluster/ipfs-cluster/cmd/ipfs-cluster-service "$CLUSTER_VERSION"
install_one ipfs-cluster-ctl github.com/ipfs-cluster/ipfs-cluster \
  github.com/ipfs-cluster/ipfs-cluster/cmd/ipfs-cluster-ctl "$CLUSTER_VERSION"
