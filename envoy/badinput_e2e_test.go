package envoy_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/envoy"
	"github.com/aifirewall/aifirewall/internal/testenv"
)

// Each malformed request gets a clear OpenAI-shaped error, from the sidecar
// or from Envoy, never a crash, a hang or a forwarded request.
func TestBadInputGetsClearErrors(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	huge := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + strings.Repeat("a", 10<<20) + `"}]}`
	cases := []struct {
		name    string
		body    string
		headers map[string]string
		path    string
		status  int
		code    string
	}{
		{"malformed json", `{"model": "gpt-4o-mini", "messages": [`, nil, "", 400, "invalid_request"},
		{"messages not an array", `{"model":"gpt-4o-mini","messages":{"role":"user"}}`, nil, "", 400, "invalid_request"},
		{"model not a string", `{"model":["gpt-4o"],"messages":[]}`, nil, "", 400, "invalid_request"},
		{"missing model", `{"messages":[{"role":"user","content":"hi"}]}`, nil, "", 400, "invalid_request"},
		{"invalid utf-8", "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"\xc3\x28\"}]}", nil, "", 400, "invalid_request"},
		{"form content type", `model=gpt-4o`, map[string]string{"content-type": "application/x-www-form-urlencoded"}, "", 415, "unsupported_media_type"},
		{"10 MB single-token prompt over the 1 MiB limit", huge, nil, "", 413, "request_too_large"},
		{"unknown path", `{}`, nil, "/v1/fine_tuning/jobs", 404, "unknown_url"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := c.path
			if path == "" {
				path = "/v1/chat/completions"
			}
			resp := post(t, s, path, testenv.ClientKey, c.body, c.headers)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, c.status)
			}
			e := decodeError(t, resp)
			if e.Error.Code != c.code || e.Error.Message == "" {
				t.Fatalf("error %+v", e.Error)
			}
		})
	}
	// A second Authorization header is refused, whichever comes first.
	req, _ := http.NewRequest("POST", s.Envoy.URL()+"/v1/chat/completions", strings.NewReader(seedBody))
	req.Header.Set("content-type", "application/json")
	req.Header.Add("authorization", "Bearer "+testenv.ClientKey)
	req.Header.Add("authorization", "Bearer someone-elses-key")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("two Authorization headers: %d", resp.StatusCode)
	}
	if n := len(s.Upstream.Requests()); n != 0 {
		t.Fatalf("%d bad requests reached the upstream", n)
	}
	// The sidecar survived all of it.
	if r := post(t, s, "/v1/chat/completions", testenv.ClientKey, seedBody, nil); r.StatusCode != 200 {
		t.Fatalf("valid request afterwards: %d", r.StatusCode)
	}
}

// With the body limit raised above it, a 10 MB prompt of one repeated
// character is counted (in linear time) and forwarded.
func TestTenMegabytePromptIsCounted(t *testing.T) {
	const limit = 12 << 20
	s := testenv.StartStack(t, testenv.StackOptions{
		Env: []string{"MAX_REQUEST_BODY_BYTES=12582912"},
		// Generous: under the race detector counting runs several times slower.
		Envoy: envoy.Options{MaxBodyBytes: limit, MessageTimeout: time.Minute},
	})
	huge := `{"model":"gpt-4o-mini","max_tokens":5,"messages":[{"role":"user","content":"` + strings.Repeat("a", 10<<20) + `"}]}`
	client := &http.Client{Timeout: 60 * time.Second}
	req, _ := http.NewRequest("POST", s.Envoy.URL()+"/v1/chat/completions", strings.NewReader(huge))
	req.Header.Set("content-type", "application/json")
	req.Header.Set("authorization", "Bearer "+testenv.ClientKey)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := len(s.Upstream.Requests()[0].Body); got != len(huge) {
		t.Fatalf("upstream got %d bytes of %d", got, len(huge))
	}
}

// When the sidecar is down, Envoy refuses (failure_mode_allow: false), in
// the same error shape.
func TestSidecarDownIsAJSON503(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	s.Sidecar.Kill()
	resp := post(t, s, "/v1/chat/completions", testenv.ClientKey, seedBody, nil)
	if resp.StatusCode != 503 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if e := decodeError(t, resp); e.Error.Code != "firewall_unavailable" {
		t.Fatalf("error %+v", e.Error)
	}
	if n := len(s.Upstream.Requests()); n != 0 {
		t.Fatal("forwarded without the sidecar")
	}
}
