package provider

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/go-json-experiment/json/jsontext"
)

// A request body has one reading only: the one the provider will use.
// Providers decode with parsers that keep the last of repeated member names
// (Go's encoding/json, Python's json, JavaScript's JSON.parse), some match
// names without regard to case (encoding/json), and they disagree on lone
// surrogates, a byte-order mark and numbers out of range. Any body on which
// two such readers could decide differently is refused before the sidecar
// reads a value from it, so the request it prices is the request that runs.

// jsontext rejects repeated names (compared after unescaping), invalid
// UTF-8 and unpaired surrogate escapes, and keeps a JSON pointer of where.
var decoders = sync.Pool{New: func() any { return jsontext.NewDecoder(bytes.NewBuffer(nil)) }}

// decided lists the member names whose value the sidecar decides on, at
// the top level and (nested) in stream_options and metadata. A name equal
// to one of them under case folding, but not byte for byte, is refused: a
// case-insensitive reader takes it for the field, a case-sensitive one
// ignores it.
var (
	decidedTop = []string{"model", "stream", "stream_options", "max_tokens", "max_completion_tokens",
		"max_output_tokens", "n", "best_of", "user", "metadata", "messages", "input", "instructions", "system", "tools",
		"models", "fallbacks", "preset", "route"}
	decidedNested = map[string]string{"include_usage": "/stream_options", "user_id": "/metadata"}
)

// checkStrict reports the first construct in body that parsers of the
// request could read in two ways, as a BadRequest naming where it is.
func checkStrict(body []byte) error {
	if bytes.HasPrefix(body, []byte("\xef\xbb\xbf")) {
		return badRequest("", "the request body starts with a byte-order mark; send plain UTF-8 JSON without one")
	}
	d := decoders.Get().(*jsontext.Decoder)
	d.Reset(bytes.NewBuffer(body)) // a bytes.Buffer is parsed in place, not copied
	defer func() { d.Reset(bytes.NewBuffer(nil)); decoders.Put(d) }()
	for {
		tok, err := d.ReadToken()
		if err != nil {
			return strictError(err)
		}
		switch tok.Kind() {
		case '0':
			if err := checkNumber(tok.String()); err != nil {
				p := param(d.StackPointer())
				return badRequest(p, "'%s' is %s; send a number that fits a 64-bit integer or a double", p, err)
			}
		case '"':
			if err := checkName(d, tok); err != nil {
				return err
			}
		}
		if d.StackDepth() == 0 {
			break
		}
	}
	if _, err := d.ReadToken(); err != io.EOF {
		return badRequest("", "the request body holds more than one JSON value; send exactly one JSON object")
	}
	return nil
}

// checkName refuses a case variant of a decided name, when the token just
// read is a member name.
func checkName(d *jsontext.Decoder, tok jsontext.Token) error {
	depth := d.StackDepth()
	if depth == 0 || depth > 2 {
		return nil
	}
	if k, n := d.StackIndex(depth); k != '{' || n%2 == 0 {
		return nil // a string value, not a name
	}
	name := tok.String() // unquoted only here: values can be long prompts
	want := ""
	if depth == 1 {
		for _, w := range decidedTop {
			if strings.EqualFold(name, w) {
				want = w
			}
		}
	} else {
		for w, parent := range decidedNested {
			if strings.EqualFold(name, w) && string(d.StackPointer().Parent()) == parent {
				want = w
			}
		}
	}
	if want == "" || name == want {
		return nil
	}
	p := param(d.StackPointer())
	return badRequest(p, "'%s' differs from '%s' only in letter case, and providers disagree on whether that is the same field; send '%s'", p, want, want)
}

// checkNumber refuses integers beyond int64 and numbers beyond float64:
// some parsers keep them exactly, others fail or round to infinity.
func checkNumber(raw string) error {
	if !strings.ContainsAny(raw, ".eE") {
		if _, err := strconv.ParseInt(raw, 10, 64); err != nil {
			return errors.New("an integer out of the 64-bit range")
		}
		return nil
	}
	if _, err := strconv.ParseFloat(raw, 64); err != nil {
		return errors.New("a number out of the double-precision range")
	}
	return nil
}

func strictError(err error) error {
	var se *jsontext.SyntacticError
	if !errors.As(err, &se) {
		return badRequest("", "the request body is not valid JSON; send a JSON object")
	}
	p := param(se.JSONPointer)
	switch msg := se.Err.Error(); {
	case errors.Is(se.Err, jsontext.ErrDuplicateName):
		return badRequest(p, "'%s' appears more than once in one object; providers read the last one, so send it once", p)
	case strings.Contains(msg, "surrogate"):
		return badRequest(p, "%s holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff), which parsers read differently; send valid Unicode", where(p))
	case strings.Contains(msg, "UTF-8"):
		return badRequest(p, "the request body is not valid UTF-8; send UTF-8 encoded JSON")
	}
	return badRequest("", "the request body is not valid JSON (at byte %d); send a JSON object", se.ByteOffset)
}

func where(p string) string {
	if p == "" {
		return "a member name"
	}
	return fmt.Sprintf("'%s'", p)
}

// param turns a JSON pointer (/messages/1/role) into the dotted form of
// the OpenAI error's param (messages[1].role).
func param(ptr jsontext.Pointer) string {
	var b strings.Builder
	for tok := range ptr.Tokens() {
		if _, err := strconv.Atoi(tok); err == nil && b.Len() > 0 {
			b.WriteString("[" + tok + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(tok)
	}
	return b.String()
}
