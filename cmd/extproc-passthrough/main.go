// Command extproc-passthrough serves internal/passthrough: an ext_proc
// server that changes nothing, the baseline `make loadtest` measures the
// firewall against.
package main

import (
	"flag"
	"log"
	"net"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"

	"github.com/aifirewall/aifirewall/internal/grpcbuf"
	"github.com/aifirewall/aifirewall/internal/passthrough"
)

// gRPC's buffer pool can only be replaced before any gRPC use.
func init() { grpcbuf.Install() }

func main() {
	addr := flag.String("addr", "127.0.0.1:50052", "listen address")
	flag.Parse()
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(16 << 20))
	extprocv3.RegisterExternalProcessorServer(gs, passthrough.Server{})
	log.Fatal(gs.Serve(lis))
}
