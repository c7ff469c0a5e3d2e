#!/bin/sh
# Runs once in each Kubo container before the daemon (the image's
# /container-init.d hook): a private swarm with no public bootstrap peers,
# no DHT and no public announcements; the RPC API reachable only on the
# compose network (never published to the host); no gateway.
set -e
ipfs bootstrap rm --all
ipfs config Routing.Type none
ipfs config --json Discovery.MDNS.Enabled false
ipfs config --json Swarm.RelayClient.Enabled false
ipfs config --json AutoNAT '{"ServiceMode": "disabled"}'
ipfs config Addresses.API /ip4/0.0.0.0/tcp/5001
ipfs config --json Addresses.Gateway '[]'
ipfs config --json Addresses.Announce '[]'
