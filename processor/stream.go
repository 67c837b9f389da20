package processor

import "github.com/aifirewall/aifirewall/processor/sse"

// meterSSE feeds an SSE chunk to the meter. With strip it also returns the
// chunk as the client must see it: the events the meter dropped are cut
// out, and an incomplete trailing event is held back until it completes,
// since it cannot be judged before; with near too, the stream is held to
// its room at every event. Without strip it returns nil.
func (r *request) meterSSE(chunk []byte, eos, strip, near bool) []byte {
	if !strip {
		r.parser.Feed(chunk, func(ev sse.Event) { r.event(ev, false) })
		if eos {
			r.parser.Flush(func(ev sse.Event) { r.event(ev, false) })
		}
		r.crPending = false // what ended on CR passed whole
		return nil
	}
	prev := len(r.held)
	r.held = append(r.held, chunk...)
	out := make([]byte, 0, len(r.held))
	start := 0
	if r.crPending && len(chunk) > 0 {
		// The previous chunk ended an event on CR; this LF completes it and
		// goes wherever that event went.
		r.crPending = false
		if r.held[0] == '\n' {
			if !r.crDropped {
				out = append(out, '\n')
			}
			start = 1
		}
	}
	emit := func(end int, drop bool) {
		end = max(end, start)
		// An event that ended on CR owns the LF after it, if there is one.
		if end > 0 && r.held[end-1] == '\r' {
			if end < len(r.held) {
				if r.held[end] == '\n' {
					end++
				}
			} else {
				r.crPending, r.crDropped = true, drop
			}
		}
		if !drop {
			out = append(out, r.held[start:end]...)
		}
		start = end
	}
	r.parser.Feed(chunk, func(ev sse.Event) { emit(prev+ev.End, r.event(ev, near)) })
	if eos {
		drop := false
		r.parser.Flush(func(ev sse.Event) { drop = r.event(ev, near) })
		emit(len(r.held), drop)
		r.held = nil
		return out
	}
	r.held = append(r.held[:0], r.held[start:]...)
	return out
}

// inflate decodes a gzip chunk; at the end of the stream it also returns
// what the decompressor still held.
func (r *request) inflate(chunk []byte, eos bool) []byte {
	plain, err := r.gz.Write(chunk)
	if err == nil && eos {
		var rest []byte
		rest, err = r.gz.Close()
		plain = append(plain, rest...)
	}
	if err != nil {
		r.log.Warn("gzip response body could not be decoded; metering what was decoded", "err", err)
	}
	return plain
}

// collect keeps a JSON response body for metering at its end.
func (r *request) collect(chunk []byte, eos bool) {
	if !r.overflow {
		if len(r.body)+len(chunk) > maxJSONResponse {
			r.overflow, r.body = true, nil
			r.log.Warn("response body too large to meter; billing the prompt count only")
		} else {
			r.body = append(r.body, chunk...)
		}
	}
	if eos {
		if !r.overflow {
			r.meter.Body(r.body)
		}
		r.body = nil
	}
}
