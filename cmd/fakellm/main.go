// Command fakellm serves the fake LLM provider of internal/fakellm, for
// `make demo` and manual tests: no API key, deterministic streamed answers.
package main

import (
	"flag"
	"log"
	"net/http"
	"time"

	"github.com/aifirewall/aifirewall/internal/fakellm"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18080", "listen address")
	flag.Parse()
	log.Printf("fake LLM upstream on http://%s", *addr)
	// Nothing reads what it received: keep no copy (load tests hold
	// thousands of streams).
	srv := &http.Server{Addr: *addr, Handler: &fakellm.Server{NoRecord: true}, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
