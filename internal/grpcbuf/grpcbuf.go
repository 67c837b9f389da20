// Package grpcbuf sizes gRPC's buffers for ext_proc messages that carry
// whole request bodies.
package grpcbuf

import (
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
)

// Install makes gRPC's default buffer pool, which the proto codec uses
// whatever a server's options say, one with a tier at every power of two
// from 4 KiB to 64 MiB. gRPC's own pool jumps from 32 KiB to 1 MiB and
// zeroes a buffer's whole capacity on every Get, so a 33 KiB buffered body
// (an agent's first turn) cleared 1 MiB when received and again when the
// changed body went back: 13 % of the sidecar's CPU at 32 KB prompts.
//
// gRPC allows this only during initialization: call it from main's init.
func Install() {
	exps := []uint8{8}
	for e := uint8(12); e <= 26; e++ {
		exps = append(exps, e)
	}
	pool, err := mem.NewBinaryTieredBufferPool(exps...)
	if err != nil {
		panic(err) // only for exponents past the word size
	}
	experimental.SetDefaultBufferPool(pool)
}
