package provider

import (
	"strings"

	"github.com/tidwall/gjson"
)

// object is a request body's top-level members, read in one pass. Each
// gjson Get scans the body from its start, past every member before the
// one asked for (or all of them, for one that is absent): for a 32 KB
// prompt the dozen lookups of a request cost half as much as counting its
// tokens. checkStrict has refused repeated names in request bodies; were
// one repeated, the first would be read, as gjson reads it.
type object struct {
	root    gjson.Result
	members map[string]gjson.Result
}

func newObject(root gjson.Result) object {
	o := object{root: root, members: make(map[string]gjson.Result, 16)}
	if !root.IsObject() {
		return o // no members: Get finds nothing, as gjson would
	}
	root.ForEach(func(k, v gjson.Result) bool {
		if _, seen := o.members[k.String()]; !seen {
			o.members[k.String()] = v // the first, as gjson's Get reads
		}
		return true
	})
	return o
}

// Get is root.Get(path): a member by name, or a deeper path through it.
func (o object) Get(path string) gjson.Result {
	name, rest, deep := strings.Cut(path, ".")
	if strings.ContainsAny(name, `*?|#@\!`) {
		return o.root.Get(path) // gjson path syntax: not a plain name
	}
	v := o.members[name]
	if deep {
		return v.Get(rest)
	}
	return v
}
