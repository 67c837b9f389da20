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
	srv := &http.Server{Addr: *addr, Handler: &fakellm.Server{}, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
