//go:build tools

// Package tools pins the IPFS Cluster commands medvault's tests run.
package tools

import (
	_ "github.com/ipfs-cluster/ipfs-cluster/cmd/ipfs-cluster-ctl"
	_ "github.com/ipfs-cluster/ipfs-cluster/cmd/ipfs-cluster-service"
)
