package billing

// Usage is what one request consumed, normalised across providers: every
// token is counted in exactly one field, so pricing is a plain sum.
type Usage struct {
	Input      int64 // prompt tokens billed at the input price
	CacheRead  int64 // prompt tokens read from the provider's cache
	CacheWrite int64 // prompt tokens written to the provider's cache
	Output     int64 // completion tokens other than reasoning
	Reasoning  int64 // reasoning ("thinking") tokens

	// ReportedCost is the provider's own charge when it states one
	// (OpenRouter's usage.cost); it overrides the price table.
	ReportedCost *Nanos
}

// PromptTokens is every prompt token, cached or not.
func (u Usage) PromptTokens() int64 { return u.Input + u.CacheRead + u.CacheWrite }

// CompletionTokens is every generated token, reasoning included.
func (u Usage) CompletionTokens() int64 { return u.Output + u.Reasoning }
