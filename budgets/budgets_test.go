package budgets

import (
	"strings"
	"testing"
	"time"
)

func TestParseRefusesWithFileAndLine(t *testing.T) {
	for _, c := range []struct{ file, want string }{
		{"budgets:\n  - {name: a, window: month, limit_usd: \"5\", windw: day}\n", "b.yaml:2:"},
		{"budgets:\n  - name: a\n    window: fortnight\n    limit_usd: \"5\"\n", "b.yaml:3: budgets[0].window: \"fortnight\" is not a window"},
		{"budgets:\n  - name: a\n    window: day\n    limit_usd: \"-1\"\n", "b.yaml:4: budgets[0].limit_usd"},
		{"budgets:\n  - name: a\n    window: day\n    limit_usd: \"1e3\"\n", "budgets[0].limit_usd"},
		{"budgets:\n  - name: A_B\n    window: day\n    limit_usd: \"1\"\n", "budgets[0].name"},
		{"budgets:\n  - {name: a, window: day, limit_usd: \"1\", action: deny}\n", "budgets[0].action"},
		{"budgets:\n  - {name: a, window: day, limit_usd: \"1\", per: team}\n", "budgets[0].per"},
		{"budgets:\n  - {name: a, window: day, limit_usd: \"1\", warn: [0]}\n", "budgets[0].warn[0]"},
		{"budgets:\n  - {name: a, window: day, limit_usd: \"1\"}\n  - {name: a, window: month, limit_usd: \"2\"}\n", "b.yaml:3: budgets[1].name: budget \"a\" is listed twice"},
		{"budgets:\n  - {name: a, window: day, limit_usd: \"1\", groups: [\"\"]}\n", "budgets[0].groups[0]"},
	} {
		_, err := Parse("b.yaml", []byte(c.file))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.file, err, c.want)
		}
	}
	f, err := Parse("b.yaml", []byte("budgets:\n  - {name: team, groups: [payments], window: month, limit_usd: \"250\", warn: [80, 50]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	b := f.Budgets[0]
	if b.Limit != 250_000_000_000 || b.Action != "block" || b.Warn[0] != 50 || b.Audit() {
		t.Fatalf("%+v", b)
	}
}

func TestPeriods(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	at := func(s string) time.Time { v, _ := time.Parse(time.RFC3339, s); return v }
	for _, c := range []struct {
		w         Window
		t         string
		loc       *time.Location
		id, reset string
	}{
		{Day, "2026-12-01T23:30:00Z", time.UTC, "2026-12-01", "2026-12-02T00:00:00Z"},
		// 23:30 UTC is already the next day in Berlin.
		{Day, "2026-12-01T23:30:00Z", berlin, "2026-12-02", "2026-12-02T23:00:00Z"},
		{Week, "2026-12-06T12:00:00Z", time.UTC, "2026-W49", "2026-12-07T00:00:00Z"}, // a Sunday
		{Week, "2026-12-07T00:00:00Z", time.UTC, "2026-W50", "2026-12-14T00:00:00Z"}, // the Monday after
		{Week, "2027-01-01T10:00:00Z", time.UTC, "2026-W53", "2027-01-04T00:00:00Z"}, // ISO year differs
		{Month, "2026-12-31T23:59:59Z", time.UTC, "2026-12", "2027-01-01T00:00:00Z"},
		// Berlin's month ends an hour earlier in UTC; across DST in March.
		{Month, "2027-03-15T00:00:00Z", berlin, "2027-03", "2027-03-31T22:00:00Z"},
	} {
		id, reset := c.w.Period(at(c.t), c.loc)
		if id != c.id || !reset.Equal(at(c.reset)) {
			t.Errorf("%s at %s in %s: %s until %s, want %s until %s", c.w, c.t, c.loc, id, reset.UTC().Format(time.RFC3339), c.id, c.reset)
		}
	}
}

func TestMatches(t *testing.T) {
	b := Budget{Name: "x", Groups: []string{"payments"}, Identities: []string{"spiffe://cluster.local/ns/ci/sa/*"},
		Providers: []string{"anthropic"}, Models: []string{"claude-*"}}
	for _, c := range []struct {
		user            string
		groups          []string
		provider, model string
		want            bool
	}{
		{"alice", []string{"payments"}, "anthropic", "claude-haiku-4-5", true},
		{"alice", []string{"risk"}, "anthropic", "claude-haiku-4-5", false},
		{"spiffe://cluster.local/ns/ci/sa/runner", nil, "anthropic", "claude-opus-4", true},
		{"alice", []string{"payments"}, "openai", "claude-haiku-4-5", false},
		{"alice", []string{"payments"}, "anthropic", "gpt-4o", false},
	} {
		if got := b.Matches(c.user, c.groups, c.provider, c.model); got != c.want {
			t.Errorf("%+v: %v", c, got)
		}
	}
	everyone := Budget{Name: "org", Window: Month}
	if !everyone.Matches("anyone", nil, "openai", "gpt-4o") || everyone.Counter("bob") != "budget=org" {
		t.Fatal("a budget without identities or groups applies to everyone, one counter")
	}
	per := Budget{Name: "each", Per: "user"}
	if per.Counter("bob") == per.Counter("carol") {
		t.Fatal("per: user gives each identity its own counter")
	}
}

func TestRollingWindows(t *testing.T) {
	for _, w := range []string{"0h", "32d", "50h", "24", "1w", "-3h", "h"} {
		if _, err := Parse("b.yaml", []byte("budgets:\n  - {name: a, window: \""+w+"\", limit_usd: \"1\"}\n")); err == nil {
			t.Errorf("window %q accepted", w)
		}
	}
	at, _ := time.Parse(time.RFC3339, "2026-12-01T13:20:00Z")
	for _, c := range []struct {
		w           Window
		n           int
		first, last string
		resetsAt    string
	}{
		{"24h", 25, "2026-12-01T13", "2026-11-30T13", "2026-12-01T14:00:00Z"},
		{"1h", 2, "2026-12-01T13", "2026-12-01T12", "2026-12-01T14:00:00Z"},
		{"7d", 29, "2026-12-01T12", "2026-11-24T12", "2026-12-01T18:00:00Z"},
		{"30d", 121, "2026-12-01T12", "2026-11-01T12", "2026-12-01T18:00:00Z"},
	} {
		if !c.w.Rolling() {
			t.Fatalf("%s is not rolling", c.w)
		}
		b := c.w.Buckets(at)
		id, reset := c.w.Period(at, time.UTC)
		if len(b) != c.n || b[0] != c.first || b[len(b)-1] != c.last || id != "rolling-"+string(c.w) || reset.Format(time.RFC3339) != c.resetsAt {
			t.Errorf("%s: %d buckets %s..%s, %s until %s", c.w, len(b), b[0], b[len(b)-1], id, reset.Format(time.RFC3339))
		}
	}
	if Month.Rolling() || Month.Buckets(at) != nil {
		t.Fatal("a calendar window has no buckets")
	}
}

func TestCutoffIsPerBudget(t *testing.T) {
	for def, want := range map[string]bool{
		`{"name":"a","window":"day","limit_usd":"1"}`:                  true,
		`{"name":"a","window":"day","limit_usd":"1","cutoff":null}`:    true,
		`{"name":"a","window":"day","limit_usd":"1","cutoff":true}`:    true,
		`{"name":"a","window":"day","limit_usd":"1","cutoff":false}`:   false,
		`{"name":"a","window":"day","limit_usd":"1","action":"audit"}`: false,
		"name: a\nwindow: month\nlimit_usd: \"5\"\ncutoff: false\n":    false,
	} {
		b, err := ParseBudget("b", []byte(def))
		if err != nil || b.CutsOff(true) != want {
			t.Errorf("%s: cuts off %v (%v), want %v", def, b != nil && b.CutsOff(true), err, want)
		}
		// STREAM_CUTOFF=false: only an explicit cutoff: true cuts off.
		if explicit := strings.Contains(def, "cutoff: true") || strings.Contains(def, `"cutoff":true`); b.CutsOff(false) != explicit {
			t.Errorf("%s with STREAM_CUTOFF=false: cuts off %v", def, b.CutsOff(false))
		}
	}
	if _, err := ParseBudget("b", []byte(`{"name":"a","window":"day","limit_usd":"1","cutoff":"no"}`)); err == nil {
		t.Error("cutoff: \"no\" was taken for a boolean")
	}
}
