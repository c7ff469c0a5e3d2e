#!/usr/bin/env bash
# Creates what the compose deployment needs and git must never hold: the
# Cluster secret, the private swarm key, the three Cluster identities
# (so every peer can name the others in CLUSTER_PEERADDRESSES/--bootstrap)
# and each medvault node's master-key passphrase (secrets/, handed to the
# containers as Docker secrets; keep a copy: without it a node cannot open).
# Uses the ipfs-cluster-service built by `make ipfs`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
service="${IPFS_CLUSTER_SERVICE:-$here/../.tools/bin/ipfs-cluster-service}"
[ -e "$here/.env" ] && { echo "make-env: $here/.env exists; refusing to overwrite" >&2; exit 1; }
umask 077
{
  echo "CLUSTER_SECRET=$(od -vN 32 -An -tx1 /dev/urandom | tr -d ' \n')"
  # Compose expands \n inside double quotes: Kubo gets the three-line key file.
  echo "SWARM_KEY=\"/key/swarm/psk/1.0.0/\\n/base16/\\n$(od -vN 32 -An -tx1 /dev/urandom | tr -d ' \n')\""
  for i in 0 1 2; do
    dir="$here/identities/cluster$i"
    mkdir -p "$dir"
    IPFS_CLUSTER_PATH="$dir" "$service" init --consensus crdt >/dev/null 2>&1
    rm -f "$dir/service.json" "$dir/peerstore"
    id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$dir/identity.json")
    echo "CLUSTER${i}_PEER_ID=$id"
  done
} > "$here/.env"
mkdir -p "$here/secrets"
for i in 0 1 2; do
  od -vN 32 -An -tx1 /dev/urandom | tr -d ' \n' > "$here/secrets/medvault$i.passphrase"
done
# Compose bind-mounts file secrets with the host file's owner and mode: the
# image's medvault user must be able to read them.
chmod 0644 "$here/secrets/"*.passphrase
chmod 0700 "$here/secrets"
echo "make-env: wrote $here/.env, $here/identities/ and $here/secrets/"
