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
	cert := flag.String("tls-cert", "", "serve HTTPS (and HTTP/2) with this certificate (PEM)")
	key := flag.String("tls-key", "", "the certificate's key (PEM)")
	flag.Parse()
	// Nothing reads what it received: keep no copy (load tests hold
	// thousands of streams).
	srv := &http.Server{Addr: *addr, Handler: &fakellm.Server{NoRecord: true}, ReadHeaderTimeout: 5 * time.Second}
	if *cert != "" {
		log.Printf("fake LLM upstream on https://%s (HTTP/2 and HTTP/1.1)", *addr)
		log.Fatal(srv.ListenAndServeTLS(*cert, *key))
	}
	log.Printf("fake LLM upstream on http://%s", *addr)
	log.Fatal(srv.ListenAndServe())
}
