package testenv

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcmd "google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// Relay sits on the ext_proc channel between Envoy and the sidecar, passes
// every message on unchanged (gRPC metadata and health checks included),
// and fails the test when a reply carries a provider key: no ext_proc reply
// may hold a secret. (Envoy's messages carry what the client sent, which
// may be anything, a provider key included.)
type Relay struct {
	extprocv3.UnimplementedExternalProcessorServer
	healthpb.UnimplementedHealthServer

	Addr    string // where Envoy connects: host:port, or unix:/path
	t       testing.TB
	conn    *grpc.ClientConn
	secrets [][]byte

	mu   sync.Mutex
	seen int // messages checked
}

// StartRelay listens like target (TCP on loopback, or a Unix socket) and
// relays to it; secrets are the provider keys to look for.
func StartRelay(t testing.TB, target string, secrets []string) *Relay {
	t.Helper()
	r := &Relay{t: t}
	for _, s := range secrets {
		if s != "" {
			r.secrets = append(r.secrets, []byte(s))
		}
	}
	dial := target
	if path, ok := strings.CutPrefix(target, "unix:"); ok {
		dial = "unix://" + path
	}
	conn, err := grpc.NewClient(dial, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	r.conn = conn
	var lis net.Listener
	if strings.HasPrefix(target, "unix:") {
		path := filepath.Join(t.TempDir(), "relay.sock")
		lis, err = net.Listen("unix", path)
		r.Addr = "unix:" + path
	} else {
		lis, err = net.Listen("tcp", "127.0.0.1:0")
		if err == nil {
			r.Addr = lis.Addr().String()
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(64 << 20))
	extprocv3.RegisterExternalProcessorServer(gs, r)
	healthpb.RegisterHealthServer(gs, r)
	go gs.Serve(lis)
	t.Cleanup(func() {
		gs.Stop()
		conn.Close()
		os.Remove(strings.TrimPrefix(r.Addr, "unix:"))
	})
	return r
}

// Checked is how many replies the relay has looked at.
func (r *Relay) Checked() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen
}

// Check passes Envoy's health check on to the sidecar.
func (r *Relay) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	return healthpb.NewHealthClient(r.conn).Check(ctx, req)
}

// Process relays one HTTP request's stream.
func (r *Relay) Process(down extprocv3.ExternalProcessor_ProcessServer) error {
	md, _ := grpcmd.FromIncomingContext(down.Context())
	ctx, cancel := context.WithCancel(grpcmd.NewOutgoingContext(down.Context(), md.Copy()))
	defer cancel()
	up, err := extprocv3.NewExternalProcessorClient(r.conn).Process(ctx)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		for {
			resp, err := up.Recv()
			if err != nil {
				errc <- err
				return
			}
			r.inspect(resp)
			if err := down.Send(resp); err != nil {
				errc <- err
				return
			}
		}
	}()
	go func() {
		for {
			req, err := down.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					_ = up.CloseSend()
					return
				}
				errc <- err
				return
			}
			if err := up.Send(req); err != nil {
				errc <- err
				return
			}
		}
	}()
	if err := <-errc; !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

func (r *Relay) inspect(m proto.Message) {
	b, _ := proto.Marshal(m)
	r.mu.Lock()
	r.seen++
	r.mu.Unlock()
	for _, s := range r.secrets {
		if bytes.Contains(b, s) {
			r.t.Errorf("an ext_proc reply carries a provider key (%d bytes of it)", len(s))
		}
	}
}
