package processor

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/billing"
)

// Shapes that agent clients redact from what they show a person: an error
// text that contains one arrives mangled.
var secretShapes = []*regexp.Regexp{
	regexp.MustCompile(`(?i)\bbearer\s+\S`),
	regexp.MustCompile(`\bsk-[A-Za-z0-9]`),
	regexp.MustCompile(`(?i)x-api-key\s*[:=]`),
	regexp.MustCompile(`(?i)authorization\s*[:=]`),
}

// Every error a client can meet says what to do in words that survive
// redaction.
func TestErrorTextsSurviveSecretRedaction(t *testing.T) {
	store := billing.NewMemStore()
	h := newHarness(t, store)
	store.Settle(context.Background(), billing.Settlement{User: "broke", Day: billing.Day(time.Now(), time.UTC), RequestID: "old", Amount: billing.NanosPerUSD})
	cases := []struct {
		name    string
		headers []string
		body    string
	}{
		{"no key", []string{":method", "POST", ":path", chatPath}, ""},
		{"wrong key", []string{":method", "POST", ":path", chatPath, "authorization", "Bearer sk-proj-provider-key"}, ""},
		{"provider key as x-api-key", []string{":method", "POST", ":path", chatPath, "x-api-key", "sk-ant-api03-xyz"}, ""},
		{"two keys", append(authed(), "x-api-key", "other"), ""},
		{"basic scheme", []string{":method", "POST", ":path", chatPath, "authorization", "Basic k"}, ""},
		{"unknown path", []string{":method", "POST", ":path", "/v1/nope", "authorization", "Bearer k"}, ""},
		{"over budget", authed("x-user-id", "broke"), `{"model":"gpt-4o","messages":[]}`},
		{"bad body", authed(), `{"model":"gpt-4o","model":"o1-pro","messages":[]}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			x := h.open(t)
			resp := x.requestHeaders(c.headers...)
			if c.body != "" {
				resp = x.requestBody(c.body)
			}
			st, body := immediateStatus(resp)
			if st == 0 {
				t.Fatal("not refused")
			}
			redactionSafe(t, body)
		})
	}
}

// redactionSafe fails when an answer holds a shape clients redact.
func redactionSafe(t *testing.T, body string) {
	t.Helper()
	for _, re := range secretShapes {
		if m := re.FindString(body); m != "" {
			t.Fatalf("answer %s contains %q, which clients redact", body, m)
		}
	}
}

// A 402 reads as a temporary daily limit, never as a billing failure that
// makes a client disable its key, and carries the budget headers.
func TestOverBudgetReadsAsADailyLimit(t *testing.T) {
	store := billing.NewMemStore()
	h := newHarness(t, store)
	store.Settle(context.Background(), billing.Settlement{User: "u", Day: billing.Day(time.Now(), time.UTC), RequestID: "old", Amount: 2 * billing.NanosPerUSD})
	x := h.open(t)
	x.requestHeaders(authed("x-user-id", "u")...)
	resp := x.requestBody(`{"model":"gpt-4o","messages":[]}`)
	st, body := immediateStatus(resp)
	if st != 402 {
		t.Fatalf("status %d", st)
	}
	msg := strings.ToLower(body)
	for _, want := range []string{"daily", "limit", "reset"} {
		if !strings.Contains(msg, want) {
			t.Errorf("402 message lacks %q: %s", want, body)
		}
	}
	for _, never := range []string{"insufficient", "credit", "top up", "upgrade", "plan", "payment", "billing"} {
		if strings.Contains(msg, never) {
			t.Errorf("402 message says %q, which clients read as a billing failure: %s", never, body)
		}
	}
	got := map[string]string{}
	for _, o := range resp.GetImmediateResponse().GetHeaders().GetSetHeaders() {
		got[o.GetHeader().GetKey()] = string(o.GetHeader().GetRawValue())
	}
	reset := billing.NextReset(time.Now(), time.UTC).Format(time.RFC3339)
	if got["x-aifirewall-budget-limit"] != "1" || got["x-aifirewall-budget-remaining"] != "0" ||
		got["x-aifirewall-budget-reset"] != reset || got["retry-after"] == "" {
		t.Fatalf("402 headers %v; want limit 1, remaining 0, reset %s and retry-after", got, reset)
	}
}
