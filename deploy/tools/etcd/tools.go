//go:build tools

// Package tools pins etcd for `make test-deploy`.
package tools

import _ "go.etcd.io/etcd/server/v3"
