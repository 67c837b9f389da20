// Command genprices derives billing/prices.json, the price table the sidecar
// embeds, from LiteLLM's model_prices_and_context_window.json. It keeps the
// models of the providers the firewall fronts (OpenAI, Anthropic, OpenRouter)
// and only the fields billing reads, in the same format, so PRICING_FILE can
// override or extend the table with a file of the upstream format.
//
//	go run ./cmd/genprices -in ../shared/data/model_prices.json -out billing/prices.json
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
)

var (
	providers = map[string]bool{"openai": true, "anthropic": true, "openrouter": true, "text-completion-openai": true}
	modes     = map[string]bool{"chat": true, "responses": true, "embedding": true, "completion": true}
	fields    = []string{
		"litellm_provider", "mode",
		"input_cost_per_token", "output_cost_per_token", "output_cost_per_reasoning_token",
		"cache_read_input_token_cost", "cache_creation_input_token_cost",
		"max_output_tokens", // bounds the reservation of a request without max_tokens
	}
)

func main() {
	in := flag.String("in", "../shared/data/model_prices.json", "LiteLLM price file to read")
	out := flag.String("out", "billing/prices.json", "price table to write")
	flag.Parse()
	if err := run(*in, *out); err != nil {
		log.Fatal(err)
	}
}

func run(in, out string) error {
	raw, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	var all map[string]map[string]any
	if err := json.Unmarshal(raw, &all); err != nil {
		return fmt.Errorf("parse %s: %w", in, err)
	}
	kept := map[string]map[string]any{}
	for model, entry := range all {
		p, _ := entry["litellm_provider"].(string)
		m, _ := entry["mode"].(string)
		if !providers[p] || !modes[m] {
			continue
		}
		if _, ok := entry["input_cost_per_token"]; !ok {
			continue
		}
		row := map[string]any{}
		for _, f := range fields {
			if v, ok := entry[f]; ok {
				row[f] = v
			}
		}
		kept[model] = row
	}
	// encoding/json sorts map keys, so the output is stable across runs.
	data, err := json.MarshalIndent(kept, "", " ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(out, append(data, '\n'), 0o644); err != nil {
		return err
	}
	log.Printf("wrote %d models to %s", len(kept), out)
	return nil
}
