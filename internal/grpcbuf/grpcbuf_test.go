package grpcbuf

import (
	"testing"

	"google.golang.org/grpc/mem"
)

func init() { Install() }

// A message just over 32 KiB takes a 64 KiB buffer from the pool gRPC's
// codec uses, not gRPC's default 1 MiB one, and large bodies still fit.
func TestInstallTiers(t *testing.T) {
	pool := mem.DefaultBufferPool()
	for _, c := range []struct{ size, capacity int }{{33 << 10, 64 << 10}, {100, 256}, {5000, 8 << 10}, {9 << 20, 16 << 20}} {
		buf := pool.Get(c.size)
		if len(*buf) != c.size || cap(*buf) != c.capacity {
			t.Errorf("Get(%d): len %d cap %d, want cap %d", c.size, len(*buf), cap(*buf), c.capacity)
		}
		pool.Put(buf)
	}
}
