package sse

import (
	"fmt"
	"reflect"
	"testing"
)

type got struct {
	Name, Data string
}

func parseChunks(chunks ...string) []got {
	var p Parser
	var out []got
	emit := func(e Event) { out = append(out, got{e.Name, string(e.Data)}) }
	for _, c := range chunks {
		p.Feed([]byte(c), emit)
	}
	p.Flush(emit)
	return out
}

func TestParserFormats(t *testing.T) {
	cases := []struct {
		name, in string
		want     []got
	}{
		{"lf", "data: a\n\ndata: b\n\n", []got{{"", "a"}, {"", "b"}}},
		{"crlf", "data: a\r\n\r\ndata: b\r\n\r\n", []got{{"", "a"}, {"", "b"}}},
		{"cr", "data: a\r\rdata: b\r\r", []got{{"", "a"}, {"", "b"}}},
		{"named", "event: message_start\ndata: {}\n\n", []got{{"message_start", "{}"}}},
		{"multiline", "data: a\ndata: b\n\n", []got{{"", "a\nb"}}},
		{"comments", ": OPENROUTER PROCESSING\n\n: ping\ndata: x\n\n", []got{{"", "x"}}},
		{"no space", "data:x\n\n", []got{{"", "x"}}},
		{"done", "data: [DONE]\n\n", []got{{"", "[DONE]"}}},
		{"unterminated", "data: last", []got{{"", "last"}}},
		{"event without data", "event: ping\n\n", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if out := parseChunks(c.in); !reflect.DeepEqual(out, c.want) {
				t.Fatalf("got %q, want %q", out, c.want)
			}
		})
	}
}

// Every split of a stream into two or three chunks yields the same events.
func TestParserEverySplit(t *testing.T) {
	stream := "event: a\r\ndata: {\"x\":1}\r\n\r\n: keep-alive\n\ndata: héllo\ndata: wörld\n\ndata: [DONE]\n\n"
	want := parseChunks(stream)
	if len(want) != 3 {
		t.Fatalf("baseline = %q", want)
	}
	for i := 0; i <= len(stream); i++ {
		for j := i; j <= len(stream); j++ {
			if out := parseChunks(stream[:i], stream[i:j], stream[j:]); !reflect.DeepEqual(out, want) {
				t.Fatalf("split %d,%d: got %q", i, j, out)
			}
		}
	}
}

func TestEventEndOffsets(t *testing.T) {
	var p Parser
	var ends []int
	p.Feed([]byte("data: a\n\ndata: b\n\ndata: c"), func(e Event) { ends = append(ends, e.End) })
	if fmt.Sprint(ends) != "[9 18]" {
		t.Fatalf("ends = %v", ends)
	}
	if !p.Pending() {
		t.Fatal("partial event not pending")
	}
}

func FuzzParser(f *testing.F) {
	f.Add([]byte("data: a\r\n\r\ndata: b\n\n"), 3)
	f.Add([]byte("event: message_delta\ndata: {\"usage\":{}}\n\n"), 10)
	f.Fuzz(func(t *testing.T, stream []byte, cut int) {
		whole := parseChunks(string(stream))
		if cut < 0 {
			cut = -cut
		}
		if len(stream) > 0 {
			cut %= len(stream) + 1
		} else {
			cut = 0
		}
		split := parseChunks(string(stream[:cut]), string(stream[cut:]))
		if !reflect.DeepEqual(whole, split) {
			t.Fatalf("split at %d changed events: %q vs %q", cut, whole, split)
		}
	})
}
