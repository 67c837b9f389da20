package processor

import (
	"bytes"
	"compress/gzip"
	"strings"
	"testing"
)

func gz(t *testing.T, s string) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return b.Bytes()
}

func TestInflaterEverySplit(t *testing.T) {
	plain := strings.Repeat("data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n", 40)
	comp := gz(t, plain)
	for i := 0; i <= len(comp); i++ {
		z := newInflater()
		var got []byte
		for _, part := range [][]byte{comp[:i], comp[i:]} {
			out, err := z.Write(part)
			if err != nil {
				t.Fatalf("split %d: %v", i, err)
			}
			got = append(got, out...)
		}
		rest, err := z.Close()
		if err != nil {
			t.Fatalf("split %d close: %v", i, err)
		}
		if got = append(got, rest...); string(got) != plain {
			t.Fatalf("split %d: got %d bytes, want %d", i, len(got), len(plain))
		}
	}
}

// Each chunk's plain text comes out with that chunk, not at the end.
func TestInflaterIsIncremental(t *testing.T) {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write([]byte("first event\n\n"))
	w.Flush()
	first := append([]byte(nil), b.Bytes()...)
	b.Reset()
	w.Write([]byte("second\n\n"))
	w.Close()
	z := newInflater()
	out, err := z.Write(first)
	if err != nil || string(out) != "first event\n\n" {
		t.Fatalf("first chunk decoded to %q, %v", out, err)
	}
	out, _ = z.Write(b.Bytes())
	rest, err := z.Close()
	if string(out)+string(rest) != "second\n\n" || err != nil {
		t.Fatalf("second = %q+%q, %v", out, rest, err)
	}
}

func TestInflaterAbandonAndGarbage(t *testing.T) {
	z := newInflater()
	z.Write(gz(t, "abc")[:5])
	z.Abandon()
	bad := newInflater()
	if _, err := bad.Write([]byte("not gzip at all")); err == nil {
		if _, err := bad.Close(); err == nil {
			t.Fatal("garbage accepted")
		}
	}
}
