// Package strictyaml reads the operator's YAML files one way: unknown or
// repeated keys and wrong types are errors, and every error names the
// file and line, so a typo is found at start, not in production.
package strictyaml

import (
	"errors"
	"fmt"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// Fail makes the error of a check: the file and line of the node at path
// ($.budgets[1].limit_usd, or its nearest ancestor in the file), the
// field, and the message.
type Fail func(path, format string, args ...any) error

// Decode unmarshals raw (from file name) into v strictly and returns the
// Fail for the checks that follow.
func Decode(name string, raw []byte, v any) (Fail, error) {
	if err := yaml.UnmarshalWithOptions(raw, v, yaml.Strict()); err != nil {
		var ye yaml.Error
		if errors.As(err, &ye) {
			return nil, fmt.Errorf("%s:%d: %s", name, ye.GetToken().Position.Line, ye.GetMessage())
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	tree, err := parser.ParseBytes(raw, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return func(path, format string, args ...any) error {
		return fmt.Errorf("%s:%d: %s: %s", name, lineOf(tree, path), strings.TrimPrefix(path, "$."), fmt.Sprintf(format, args...))
	}, nil
}

// lineOf finds the line of the node at path, or of its nearest ancestor
// present in the file.
func lineOf(tree *ast.File, path string) int {
	for p := path; p != "$"; {
		if yp, err := yaml.PathString(p); err == nil {
			if n, err := yp.FilterFile(tree); err == nil && n != nil {
				return n.GetToken().Position.Line
			}
		}
		i := strings.LastIndexAny(p, ".[")
		if i <= 0 {
			break
		}
		p = p[:i]
	}
	return 1
}
