#!/bin/sh
# First start: create the data dir for the cluster backend; then run the daemon.
set -e
if [ ! -f "$MEDVAULT_DATA_DIR/config.json" ]; then
  medvault init --data-dir "$MEDVAULT_DATA_DIR" --backend cluster \
    --ipfs-api "$MEDVAULT_IPFS_API" --cluster-api "$MEDVAULT_CLUSTER_API"
fi
exec medvault daemon --data-dir "$MEDVAULT_DATA_DIR" --listen 0.0.0.0:7420
