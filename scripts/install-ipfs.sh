#!/usr/bin/env bash
# Builds the pinned Kubo and IPFS Cluster binaries from their Go modules into
# .tools/bin (git-ignored). Nothing prebuilt is downloaded: Go fetches module
# source through the module proxy and compiles it here.
#
# Each tool is built from a small wrapper module in scripts/go-tools/<name>
# whose go.mod/go.sum pin the exact versions, because `go install mod@version`
# does not work for either here:
#   - kubo v0.43.1's go.mod replaces go-libp2p with a fork the proxy does not
#     serve; the wrapper uses upstream go-libp2p v0.50.0 instead;
#   - the proxy refuses ipfs-cluster's version list, which `go install @v`
#     reads for deprecation notices.
#
# A binary is rebuilt only when the one present was not built from the pinned
# version (read back with `go version -m`). Built binaries are also kept in a
# per-user cache (~/.cache/medvault/tools) so a fresh clone on a warm machine
# copies them instead of compiling for minutes.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/.tools/bin"
cache="${MEDVAULT_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/medvault/tools}"
mkdir -p "$bin" "$cache"

command -v go >/dev/null || { echo "install-ipfs: Go >= 1.26.4 is required" >&2; exit 1; }

# pinned MODULE WRAPPER: the version of MODULE that WRAPPER's go.mod requires
pinned() { awk -v m="$1" '$1==m {print $2; exit} $1=="require" && $2==m {print $3; exit}' "$2/go.mod"; }

# built_from BINARY MODULE VERSION: BINARY was built with MODULE@VERSION
built_from() {
  [ -x "$1" ] || return 1
  go version -m "$1" 2>/dev/null | awk -v m="$2" -v v="$3" '($1=="dep"||$1=="mod") && $2==m && $3==v {found=1} END {exit !found}'
}

# install TOOLDIR MODULE PACKAGE...
install() {
  local wrapper="$root/scripts/go-tools/$1" module=$2; shift 2
  local version; version=$(pinned "$module" "$wrapper")
  local missing=()
  for package in "$@"; do
    local name=${package##*/} cached="$cache/${package##*/}-$version"
    if built_from "$bin/$name" "$module" "$version"; then
      echo "install-ipfs: $name $version already built"
      built_from "$cached" "$module" "$version" || { cp "$bin/$name" "$cached.tmp" && mv "$cached.tmp" "$cached"; }
    elif built_from "$cached" "$module" "$version"; then
      cp "$cached" "$bin/$name.tmp" && mv "$bin/$name.tmp" "$bin/$name"
      echo "install-ipfs: $name $version from $cache"
    else
      missing+=("$package")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return
  echo "install-ipfs: building ${missing[*]} at $version (a few minutes the first time)"
  (cd "$wrapper" && GOBIN="$bin" GOFLAGS="-mod=readonly -buildvcs=false" go install -trimpath "${missing[@]}")
  for package in "${missing[@]}"; do
    cp "$bin/${package##*/}" "$cache/${package##*/}-$version.tmp"
    mv "$cache/${package##*/}-$version.tmp" "$cache/${package##*/}-$version"
  done
}

install kubo github.com/ipfs/kubo github.com/ipfs/kubo/cmd/ipfs
install cluster github.com/ipfs-cluster/ipfs-cluster \
  github.com/ipfs-cluster/ipfs-cluster/cmd/ipfs-cluster-service \
  github.com/ipfs-cluster/ipfs-cluster/cmd/ipfs-cluster-ctl
