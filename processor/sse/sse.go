// Package sse reads a server-sent-events stream incrementally: bytes arrive
// in chunks split at any place (inside a line, between CR and LF, inside a
// UTF-8 sequence) and whole events come out.
package sse

// Event is one dispatched event.
type Event struct {
	Name string // the "event:" field; empty for unnamed events
	Data []byte // "data:" lines joined by "\n"; only valid during the callback
	// End is the offset in the chunk just past the blank line that ended
	// the event (0 for an event flushed at end of stream).
	End int
}

// maxLine bounds one line; a longer line is dropped rather than grown
// without limit (no provider sends one).
const maxLine = 4 << 20

// Parser is the incremental reader. The zero value is ready.
type Parser struct {
	line     []byte // the current, unterminated line
	data     []byte
	name     string
	hasData  bool
	afterCR  bool // the last byte seen was CR: a following LF belongs to it
	tooLong  bool
	sawField bool // the event has at least one field line (data, event, ...)
}

// Feed parses chunk and calls emit for each event it completes.
func (p *Parser) Feed(chunk []byte, emit func(Event)) {
	start := 0
	for i := 0; i < len(chunk); i++ {
		b := chunk[i]
		if p.afterCR {
			p.afterCR = false
			if b == '\n' {
				start = i + 1
				continue
			}
		}
		if b != '\n' && b != '\r' {
			continue
		}
		p.appendLine(chunk[start:i])
		p.afterCR = b == '\r'
		p.endLine(i+1, emit)
		start = i + 1
	}
	p.appendLine(chunk[start:])
}

// Flush dispatches an event left unterminated at end of stream. The SSE
// spec discards it, but providers that close without the final blank line
// still sent a complete payload, and billing needs it.
func (p *Parser) Flush(emit func(Event)) {
	if len(p.line) > 0 || p.tooLong {
		p.endLine(0, emit)
	}
	p.endLine(0, emit) // an empty line dispatches
}

func (p *Parser) appendLine(b []byte) {
	if p.tooLong || len(b) == 0 {
		return
	}
	if len(p.line)+len(b) > maxLine {
		p.tooLong, p.line = true, p.line[:0]
		return
	}
	p.line = append(p.line, b...)
}

func (p *Parser) endLine(end int, emit func(Event)) {
	line := p.line
	p.line = p.line[:0]
	if p.tooLong {
		p.tooLong = false
		return
	}
	if len(line) == 0 {
		if p.hasData {
			emit(Event{Name: p.name, Data: p.data, End: end})
		}
		p.data, p.name, p.hasData, p.sawField = p.data[:0], "", false, false
		return
	}
	if line[0] == ':' {
		return // comment or keep-alive (": OPENROUTER PROCESSING")
	}
	field, value := line, []byte(nil)
	for i, c := range line {
		if c == ':' {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
			break
		}
	}
	p.sawField = true
	switch string(field) {
	case "data":
		if p.hasData {
			p.data = append(p.data, '\n')
		}
		p.data = append(p.data, value...)
		p.hasData = true
	case "event":
		p.name = string(value)
	}
}

// Pending reports whether an event has started but not yet been dispatched.
func (p *Parser) Pending() bool { return p.sawField || len(p.line) > 0 }
