// Package budgets reads the budgets file: spending caps beyond the default
// per-user daily budget, each with a scope (identities, groups, providers,
// models), a calendar window (day, week, month in the budget time zone), a
// limit in USD, and an action (block: 402; audit: never refuses, warns).
//
// Every budget a request matches is enforced on it: the request is
// admitted only when each matching blocking budget has room, holds its
// reservation on each, and settles on each. A budget's counter is one
// key set of the budget store per window (per member with per: user), so
// the store's atomic check-and-reserve, its exactly-once settlement and
// the overshoot bound (limit plus one request's reservation) hold per
// budget, with Redis Cluster too: each counter lives in one hash slot,
// and no operation spans two.
package budgets

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/internal/glob"
	"github.com/aifirewall/aifirewall/internal/strictyaml"
)

// Budget is one budget of the file, checked.
type Budget struct {
	Name       string   `yaml:"name"`
	Identities []string `yaml:"identities"` // patterns ("*" matches any run)
	Groups     []string `yaml:"groups"`
	Providers  []string `yaml:"providers"`
	Models     []string `yaml:"models"` // patterns
	Window     Window   `yaml:"window"`
	// Per "user": each identity in scope has its own counter at the
	// limit; empty: one counter shared by everyone in scope.
	Per      string `yaml:"per"`
	LimitUSD string `yaml:"limit_usd"`
	Action   string `yaml:"action"` // block (default) or audit
	// Warn: utilisation percentages at which answers carry a warning.
	Warn []int `yaml:"warn"`
	// Cutoff false lets a stream this budget has no room for finish (the
	// budget then overshoots by up to one request); true ends the stream
	// when it would pass the budget; absent: as STREAM_CUTOFF says.
	Cutoff *bool `yaml:"cutoff"`

	Limit billing.Nanos `yaml:"-"`
}

// File is a parsed budgets file, or the budgets in force: the file's and
// then those made through the operator API.
type File struct {
	Budgets []Budget `yaml:"budgets"`
	// FromAPI marks the budgets made through the operator API, by name.
	FromAPI map[string]bool `yaml:"-"`
}

// ParseBudget checks one budget's definition (YAML or JSON, the file's
// fields), as the operator API receives it.
func ParseBudget(name string, raw []byte) (*Budget, error) {
	var b Budget
	fail, err := strictyaml.Decode(name, raw, &b)
	if err != nil {
		return nil, err
	}
	if err := b.check("$", fail); err != nil {
		return nil, err
	}
	return &b, nil
}

// Merge is the budgets in force: the file's (nil: none), then each
// definition made through the operator API whose name no file budget
// has, in name order. A definition that fails its check is left out and
// reported through skip.
func Merge(file *File, api map[string][]byte, skip func(name string, err error)) *File {
	out := &File{FromAPI: map[string]bool{}}
	names := map[string]bool{}
	if file != nil {
		out.Budgets = append(out.Budgets, file.Budgets...)
		for _, b := range file.Budgets {
			names[b.Name] = true
		}
	}
	for _, name := range slices.Sorted(maps.Keys(api)) {
		if names[name] {
			skip(name, errors.New("the budgets file has a budget of that name, which wins"))
			continue
		}
		b, err := ParseBudget("budget "+name, api[name])
		if err == nil && b.Name != name {
			err = fmt.Errorf("it is stored as %q but names itself %q", name, b.Name)
		}
		if err != nil {
			skip(name, err)
			continue
		}
		out.Budgets = append(out.Budgets, *b)
		out.FromAPI[name] = true
	}
	return out
}

// Load reads and checks the budgets file at path.
func Load(path string) (*File, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read budgets file: %w", err)
	}
	return Parse(path, raw)
}

// Parse checks raw strictly; errors name the file, line and field.
func Parse(name string, raw []byte) (*File, error) {
	var f File
	fail, err := strictyaml.Decode(name, raw, &f)
	if err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for i := range f.Budgets {
		b := &f.Budgets[i]
		at := fmt.Sprintf("$.budgets[%d]", i)
		if err := b.check(at, fail); err != nil {
			return nil, err
		}
		if names[b.Name] {
			return nil, fail(at+".name", "budget %q is listed twice", b.Name)
		}
		names[b.Name] = true
	}
	return &f, nil
}

var (
	// Budget names appear in Redis keys, metric labels and headers.
	nameRE  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	groupRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$`)
)

func (b *Budget) check(at string, fail strictyaml.Fail) error {
	if !nameRE.MatchString(b.Name) {
		return fail(at+".name", "%q must be lower-case letters, digits and dashes, at most 63", b.Name)
	}
	switch b.Window {
	case Day, Week, Month:
	case "":
		return fail(at+".window", "set the window: day, week or month, or a rolling one (24h, 7d, 30d)")
	default:
		if _, _, err := b.Window.rolling(); err != nil {
			return fail(at+".window", "%q is not a window: day, week or month, or a rolling one: %v", b.Window, err)
		}
	}
	switch b.Per {
	case "", "user":
	default:
		return fail(at+".per", "%q: per is \"user\" (a counter per identity) or absent (one shared counter)", b.Per)
	}
	switch b.Action {
	case "":
		b.Action = "block"
	case "block", "audit":
	default:
		return fail(at+".action", "%q: the action is block (refuse with 402) or audit (never refuse; warn)", b.Action)
	}
	limit, err := billing.ParseUSD(b.LimitUSD)
	if err != nil || limit <= 0 {
		return fail(at+".limit_usd", "%q is not a positive amount of US dollars (e.g. \"250\" or \"12.50\")", b.LimitUSD)
	}
	b.Limit = limit
	for j, g := range b.Groups {
		if !groupRE.MatchString(g) {
			return fail(fmt.Sprintf("%s.groups[%d]", at, j), "%q is not a group name", g)
		}
	}
	for _, list := range []struct {
		field string
		v     []string
	}{{"identities", b.Identities}, {"providers", b.Providers}, {"models", b.Models}} {
		for j, v := range list.v {
			if v == "" || len(v) > 256 {
				return fail(fmt.Sprintf("%s.%s[%d]", at, list.field, j), "%q: give a non-empty name or pattern of at most 256 characters", v)
			}
		}
	}
	for j, w := range b.Warn {
		if w < 1 || w > 100 {
			return fail(fmt.Sprintf("%s.warn[%d]", at, j), "%d: a warning threshold is a percentage from 1 to 100", w)
		}
	}
	slices.Sort(b.Warn)
	return nil
}

// Audit says whether the budget only warns.
func (b *Budget) Audit() bool { return b.Action == "audit" }

// CutsOff says whether a stream is ended when it would pass the budget:
// a blocking budget, as its cutoff says, else as dflt (STREAM_CUTOFF).
func (b *Budget) CutsOff(dflt bool) bool {
	if b.Audit() {
		return false
	}
	if b.Cutoff != nil {
		return *b.Cutoff
	}
	return dflt
}

// Matches says whether a request of user (a member of groups) to provider
// for model counts against b. A budget naming neither identities nor
// groups applies to everyone.
func (b *Budget) Matches(user string, groups []string, provider, model string) bool {
	return b.AppliesTo(user, groups) &&
		(len(b.Providers) == 0 || slices.Contains(b.Providers, provider)) &&
		(len(b.Models) == 0 || slices.ContainsFunc(b.Models, func(p string) bool { return glob.Match(p, model) }))
}

// AppliesTo says whether user (a member of groups) is in b's scope of
// identities and groups, whatever the provider and model.
func (b *Budget) AppliesTo(user string, groups []string) bool {
	if len(b.Identities) == 0 && len(b.Groups) == 0 {
		return true
	}
	return slices.ContainsFunc(b.Identities, func(p string) bool { return glob.Match(p, user) }) ||
		slices.ContainsFunc(b.Groups, func(g string) bool { return slices.Contains(groups, g) })
}

// Counter is the budget store's name for the counter a request of user
// counts against: the budget's, or with per: user the user's own in it.
// It is the store's "user" (one Redis hash slot), never a real identity's:
// the prefix cannot start an identity (see processor validUser).
func (b *Budget) Counter(user string) string {
	if b.Per == "user" {
		return "budget=" + b.Name + "=" + user
	}
	return "budget=" + b.Name
}

// Window is a calendar period in the budget time zone (day, week, month)
// or a rolling one ("24h", "7d", "30d").
//
// A rolling window keeps its spend in buckets: an hour for windows up to
// 48 hours, six hours (UTC-aligned) beyond, up to 31 days. It counts the
// current bucket and the D/B before it, so spend counts for at least the
// window's length and at most one bucket more (its resolution); it never
// ages out early. Reservations are kept apart from the buckets, for as
// long as their requests run, so a request spanning a bucket's end is
// still counted.
type Window string

const (
	Day   Window = "day"
	Week  Window = "week" // ISO weeks: Monday to Sunday
	Month Window = "month"
)

// rolling is a rolling window's length and bucket size.
func (w Window) rolling() (d, bucket time.Duration, err error) {
	s := string(w)
	unit := time.Hour
	if n, ok := strings.CutSuffix(s, "d"); ok {
		s, unit = n, 24*time.Hour
	} else if n, ok := strings.CutSuffix(s, "h"); ok {
		s = n
	} else {
		return 0, 0, errors.New("write a number of hours (h) or days (d)")
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, 0, errors.New("write a positive whole number of hours (h) or days (d)")
	}
	d = time.Duration(n) * unit
	bucket = time.Hour
	if d > 48*time.Hour {
		bucket = 6 * time.Hour
	}
	switch {
	case d > 31*24*time.Hour:
		return 0, 0, errors.New("at most 31 days")
	case d%bucket != 0:
		return 0, 0, fmt.Errorf("beyond 48 hours, a multiple of %s (its resolution)", bucket)
	}
	return d, bucket, nil
}

// Rolling says whether w is a rolling window.
func (w Window) Rolling() bool {
	_, _, err := w.rolling()
	return err == nil
}

// Buckets are the spend buckets a rolling window counts at t, the current
// one first; nil for a calendar window.
func (w Window) Buckets(t time.Time) []string {
	d, b, err := w.rolling()
	if err != nil {
		return nil
	}
	start := t.UTC().Truncate(b)
	out := make([]string, 0, d/b+1)
	for i := time.Duration(0); i <= d/b; i++ {
		out = append(out, start.Add(-i*b).Format("2006-01-02T15"))
	}
	return out
}

// Period names the window holding t ("2026-12-01", "2026-W49",
// "2026-12") and when it ends. A rolling window's name is fixed
// ("rolling-24h": its reservations'), and its "end" is when its oldest
// counted bucket leaves it, freeing room.
func (w Window) Period(t time.Time, loc *time.Location) (string, time.Time) {
	if _, b, err := w.rolling(); err == nil {
		return "rolling-" + string(w), t.UTC().Truncate(b).Add(b)
	}
	l := t.In(loc)
	switch w {
	case Week:
		y, wk := l.ISOWeek()
		// Back to this week's Monday, then on seven days.
		back := (int(l.Weekday()) + 6) % 7
		return fmt.Sprintf("%04d-W%02d", y, wk), time.Date(l.Year(), l.Month(), l.Day()-back+7, 0, 0, 0, 0, loc)
	case Month:
		return l.Format("2006-01"), time.Date(l.Year(), l.Month()+1, 1, 0, 0, 0, 0, loc)
	default:
		return billing.Day(t, loc), billing.NextReset(t, loc)
	}
}
