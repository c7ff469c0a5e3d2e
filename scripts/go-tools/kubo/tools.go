//go:build tools

// Package tools pins the Kubo command medvault runs.
package tools

import _ "github.com/ipfs/kubo/cmd/ipfs"
