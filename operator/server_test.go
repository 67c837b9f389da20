package operator

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/identity"
	operatorv1 "github.com/aifirewall/aifirewall/proto-gen/aifirewall/operator/v1"
)

const token = "0123456789abcdef-token"

func client(t *testing.T, store *billing.MemStore, keyWarning ...string) operatorv1.OperatorServiceClient {
	t.Helper()
	unary, stream := TokenAuth(token)
	gs := grpc.NewServer(grpc.UnaryInterceptor(unary), grpc.StreamInterceptor(stream))
	now := func() time.Time { return time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC) }
	srv := &Server{Store: store, Keys: store, Limit: 5 * billing.NanosPerUSD, Location: time.UTC,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: now}
	if len(keyWarning) > 0 {
		srv.KeyWarning = keyWarning[0]
	}
	return serve(t, gs, srv)
}

// serve serves srv on gs, in memory, and returns a client of it.
func serve(t *testing.T, gs *grpc.Server, srv *Server) operatorv1.OperatorServiceClient {
	t.Helper()
	srv.Register(gs)
	lis := bufconn.Listen(1 << 16)
	go gs.Serve(lis)
	conn, err := grpc.NewClient("passthrough:///buf", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); gs.Stop() })
	return operatorv1.NewOperatorServiceClient(conn)
}

func authed(tok string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
}

func TestTokenRequired(t *testing.T) {
	c := client(t, billing.NewMemStore())
	for _, ctx := range []context.Context{context.Background(), authed("wrong"), authed("")} {
		if _, err := c.ListUsers(ctx, &operatorv1.ListUsersRequest{}); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("err = %v", err)
		}
	}
}

func TestUsageLimitsAndKeys(t *testing.T) {
	store := billing.NewMemStore()
	c := client(t, store)
	ctx := authed(token)
	store.Settle(ctx, billing.Settlement{User: "alice", Day: "2026-11-27", RequestID: "r", Amount: 1500})

	u, err := c.GetUsage(ctx, &operatorv1.GetUsageRequest{User: "alice"})
	if err != nil || u.GetSpentNanos() != 1500 || u.GetDay() != "2026-11-27" || u.GetLimitUsd() != "5" || u.GetLimitOverridden() {
		t.Fatalf("usage = %v, %v", u, err)
	}
	list, err := c.ListUsers(ctx, &operatorv1.ListUsersRequest{Day: "2026-11-27"})
	if err != nil || len(list.GetUsers()) != 1 || list.GetUsers()[0].GetUser() != "alice" {
		t.Fatalf("users = %v, %v", list, err)
	}
	set, err := c.SetLimit(ctx, &operatorv1.SetLimitRequest{User: "alice", DailyLimitUsd: "12.50"})
	if err != nil || set.GetUsage().GetLimitNanos() != 12_500_000_000 || !set.GetUsage().GetLimitOverridden() {
		t.Fatalf("set-limit = %v, %v", set, err)
	}
	key, err := c.AddKey(ctx, &operatorv1.AddKeyRequest{User: "bob", DailyLimitUsd: "1", Groups: []string{"payments"}})
	if err != nil || key.GetSha256() != identity.HashKey(key.GetKey()) {
		t.Fatalf("add-key = %v, %v", key, err)
	}
	added, _, _ := store.Keys(ctx)
	if k := added[key.GetSha256()]; k.User != "bob" || k.Limit != billing.NanosPerUSD || len(k.Groups) != 1 || k.Groups[0] != "payments" {
		t.Fatalf("stored key = %+v", added)
	}
	if _, err := c.AddKey(ctx, &operatorv1.AddKeyRequest{User: "bob", Groups: []string{"bad\x00group"}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a group with a control character: %v", err)
	}
	if _, err := c.RevokeKey(ctx, &operatorv1.RevokeKeyRequest{Sha256: key.GetSha256()}); err != nil {
		t.Fatal(err)
	}
	if _, revoked, _ := store.Keys(ctx); !revoked[key.GetSha256()] {
		t.Fatal("key not revoked")
	}
	for name, call := range map[string]func() error{
		"bad day": func() error {
			_, err := c.GetUsage(ctx, &operatorv1.GetUsageRequest{User: "a", Day: "yesterday"})
			return err
		},
		"no user": func() error { _, err := c.GetUsage(ctx, &operatorv1.GetUsageRequest{}); return err },
		"bad limit": func() error {
			_, err := c.SetLimit(ctx, &operatorv1.SetLimitRequest{User: "a", DailyLimitUsd: "lots"})
			return err
		},
		"bad sha": func() error { _, err := c.RevokeKey(ctx, &operatorv1.RevokeKeyRequest{Sha256: "xyz"}); return err },
	} {
		if err := call(); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

// A key the running configuration would refuse is still made, and the
// answer says so; one it accepts comes with no warning.
func TestAddKeySaysWhenKeysAreNotAccepted(t *testing.T) {
	for _, warning := range []string{"", "IDENTITY_MODE=mesh accepts no API keys"} {
		c := client(t, billing.NewMemStore(), warning)
		key, err := c.AddKey(authed(token), &operatorv1.AddKeyRequest{User: "mona", DailyLimitUsd: "0.01"})
		if err != nil || key.GetKey() == "" || key.GetWarning() != warning {
			t.Fatalf("add-key = %v, %v; want warning %q", key, err, warning)
		}
	}
}
