// Package provider knows the wire formats of the LLM APIs the firewall
// fronts: how to read a request (model, prompt, limits) and how to meter a
// response (provider-reported usage, or the text to count when none comes).
// One file per format; each implements Endpoint.
package provider

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/processor/sse"
)

// Endpoint reads one API's requests and meters its responses.
type Endpoint interface {
	// ParseRequest validates body and extracts what billing needs. It may
	// return a rewritten body in Request.Body.
	ParseRequest(body []byte, tk *billing.Tokenizer) (*Request, error)
	// NewMeter returns a meter for the response to req.
	NewMeter(req *Request, tk *billing.Tokenizer) Meter
	// StreamError is the last event of a stream the firewall ends, in the
	// API's own error shape, which its official SDKs raise as an error
	// carrying message.
	StreamError(message string) []byte
}

// Meter accumulates what a response consumed.
type Meter interface {
	// Event takes one SSE event; drop tells the caller not to pass the
	// event on (it exists only because the firewall asked for usage).
	Event(ev sse.Event) (drop bool)
	// Body takes a complete non-streamed response body.
	Body(body []byte)
	// Usage is the request's consumption: what the provider reported,
	// completed by counting for whatever it did not report.
	Usage() billing.Usage
	// Model is the model the provider said it ran, "" if it named none.
	Model() string
	// Distrusted says why (part of) the provider's usage report was set
	// aside as out of range, "" when nothing was.
	Distrusted() string
	// Counted is the local count so far: the prompt counted before
	// forwarding and the output text seen, counted now.
	Counted() billing.Usage
	// Bound is at least Counted, without counting: the text not counted
	// yet taken at a token a byte.
	Bound() billing.Usage
}

// Request is what the firewall needs to know of a request.
type Request struct {
	Model string
	// Alternatives are other models the provider may run (fallbacks);
	// OpenChoice names the field that lets it pick any model ("model" for
	// "openrouter/auto"), "" when none does.
	Alternatives []Alternative
	OpenChoice   string
	Stream       bool
	User         string // the body's "user" field, if any
	MaxOutput    int64  // max_tokens & co.; 0 when not given
	N            int64  // completions asked for (chat's n), at least 1
	PromptTokens int64  // counted locally, before forwarding
	// Body is the rewritten request body, nil when it is unchanged.
	Body []byte
	// UsageInjected says the firewall asked for a usage report the client
	// did not; the report must be removed from what the client receives.
	UsageInjected bool
}

// BadRequest is a client error in a request body; its message is safe to
// return to the client.
type BadRequest struct {
	Param, Msg string
}

func (e *BadRequest) Error() string { return e.Msg }

func badRequest(param, format string, args ...any) error {
	return &BadRequest{Param: param, Msg: fmt.Sprintf(format, args...)}
}

// IsBadRequest reports whether err is the client's fault.
func IsBadRequest(err error) bool {
	var b *BadRequest
	return errors.As(err, &b)
}

// Kind is an upstream provider.
type Kind string

const (
	OpenAI     Kind = "openai"
	OpenRouter Kind = "openrouter"
	Anthropic  Kind = "anthropic"
	// OpenAICompatible is a host speaking OpenAI's API (vLLM, an internal
	// gateway): metered as OpenAI, and a cost it reports is not believed.
	OpenAICompatible Kind = "openai-compatible"
)

// ParseKind reads UPSTREAM_PROVIDER; empty means "from the base URL".
func ParseKind(explicit, baseURL string) (Kind, error) {
	switch k := Kind(strings.ToLower(strings.TrimSpace(explicit))); k {
	case OpenAI, OpenRouter, Anthropic, OpenAICompatible:
		return k, nil
	case "":
	default:
		return "", fmt.Errorf("unknown provider %q (want openai, openrouter, anthropic or openai-compatible)", explicit)
	}
	u, err := url.Parse(baseURL)
	if err != nil {
		return "", errors.New("the base URL is not a URL")
	}
	host := strings.ToLower(u.Hostname())
	switch {
	case host == "api.anthropic.com" || strings.HasSuffix(host, ".anthropic.com"):
		return Anthropic, nil
	case host == "api.openai.com" || strings.HasSuffix(host, ".openai.com"):
		return OpenAI, nil
	default:
		// OpenRouter's format is OpenAI's plus extras, so it is the safe
		// reading of an unknown OpenAI-compatible host too.
		return OpenRouter, nil
	}
}

// AuthHeaders are the headers that carry the upstream credential.
func (k Kind) AuthHeaders(apiKey string) map[string]string {
	if k == Anthropic {
		return map[string]string{"x-api-key": apiKey}
	}
	return map[string]string{"authorization": "Bearer " + apiKey}
}

// DefaultHeaders are set when the client did not send them.
func (k Kind) DefaultHeaders() map[string]string {
	if k == Anthropic {
		return map[string]string{"anthropic-version": "2023-06-01"}
	}
	return nil
}

// Paths lists what Route serves, for error messages.
const Paths = "POST /v1/chat/completions, POST /v1/responses, POST /v1/messages, POST /v1/embeddings, GET /v1/models"

// Route is what the firewall does with a method and path.
type Route struct {
	Endpoint Endpoint // nil for requests that are forwarded unmetered
	Path     string   // the canonical path, for logs and metrics
}

// Route finds the endpoint for method and path (query string stripped).
// Unlisted paths are denied by the caller.
func (k Kind) Route(method, path string) (Route, bool) {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	switch {
	case method == "POST" && path == "/v1/chat/completions":
		return Route{Endpoint: Chat{OpenRouterCost: k == OpenRouter}, Path: path}, true
	case method == "POST" && path == "/v1/responses":
		return Route{Endpoint: Responses{}, Path: path}, true
	case method == "POST" && path == "/v1/messages":
		return Route{Endpoint: Messages{}, Path: path}, true
	case method == "POST" && path == "/v1/embeddings":
		return Route{Endpoint: Embeddings{}, Path: path}, true
	case method == "GET" && path == "/v1/models":
		return Route{Path: path}, true
	}
	return Route{}, false
}
