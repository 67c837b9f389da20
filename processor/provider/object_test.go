package provider

import (
	"testing"

	"github.com/tidwall/gjson"
)

// object.Get reads what gjson's Get reads, for members, absent members,
// deeper paths and escaped names.
func TestObjectGetEqualsGjson(t *testing.T) {
	body := `{"model":"m","messages":[{"role":"user","content":"hi"}],"stre\u0061m":true,` +
		`"metadata":{"user_id":"u"},"n":null,"tools":[1,2],"dup":1,"dup":2}`
	root := gjson.Parse(body)
	o := newObject(root)
	for _, path := range []string{"model", "messages", "stream", "metadata", "metadata.user_id",
		"metadata.absent", "n", "tools", "tools.1", "absent", "messages.0.content", "tools.#", "dup"} {
		got, want := o.Get(path), root.Get(path)
		if got.Raw != want.Raw || got.Type != want.Type || got.Exists() != want.Exists() {
			t.Errorf("Get(%q) = %q (%v), gjson %q (%v)", path, got.Raw, got.Type, want.Raw, want.Type)
		}
	}
}

// The injected include_usage is read as true, by gjson and by a strict
// JSON parser, and every member of the client's body is kept.
func TestWithIncludeUsage(t *testing.T) {
	for _, body := range []string{`{}`, `{"model":"m"}`, "{\"model\":\"m\" }\n\t", `{"model":"m","stream_options":{}}`,
		`{"model":"m","stream_options":{"include_usage":false}}`, `{"model":"m","stream_options":null}`} {
		root, err := parseObject([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		out, err := withIncludeUsage([]byte(body), root)
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if err := checkStrict(out); err != nil {
			t.Errorf("%s: injected body %s is not strict JSON: %v", body, out, err)
		}
		if got := gjson.GetBytes(out, "stream_options.include_usage"); got.Type != gjson.True {
			t.Errorf("%s: injected body %s: include_usage %s", body, out, got.Raw)
		}
		if m := root.Get("model"); m.Exists() && gjson.GetBytes(out, "model").String() != m.String() {
			t.Errorf("%s: model lost in %s", body, out)
		}
	}
}
