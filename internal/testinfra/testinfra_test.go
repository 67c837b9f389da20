package testinfra

import (
	"fmt"
	"os"
	"testing"
)

// The ports handed out must never be ones the kernel could give an
// outgoing connection, and never the same twice in one process.
func TestFreePortIsOutsideTheEphemeralRange(t *testing.T) {
	lo, hi := 32768, 60999
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		fmt.Sscan(string(b), &lo, &hi)
	}
	seen := map[int]bool{}
	for range 200 {
		p := FreePort(t)
		if p >= lo && p <= hi {
			t.Fatalf("port %d is in the ephemeral range %d-%d", p, lo, hi)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
}
