package provider

import "encoding/json"

// budgetError is the OpenAI error object of a stream ended at its budget.
func budgetError(message string) map[string]any {
	return map[string]any{"message": message, "type": "budget_exceeded", "param": nil, "code": "budget_exceeded"}
}

// sseEvent is one SSE event: its name, when not empty, and data as JSON
// (one line: encoding/json escapes newlines).
func sseEvent(name string, data any) []byte {
	b, _ := json.Marshal(data)
	var out []byte
	if name != "" {
		out = append(out, "event: "+name+"\n"...)
	}
	out = append(out, "data: "...)
	out = append(out, b...)
	return append(out, "\n\n"...)
}
