// Package operator serves the operator API of proto-gen (usage, limits,
// keys) over gRPC, behind a bearer token, and holds its CLI client.
package operator

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"log/slog"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"time"
	"unicode"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/budgets"
	"github.com/aifirewall/aifirewall/identity"
	"github.com/aifirewall/aifirewall/ledger"
	operatorv1 "github.com/aifirewall/aifirewall/proto-gen/aifirewall/operator/v1"
)

// Server implements OperatorService.
type Server struct {
	operatorv1.UnimplementedOperatorServiceServer

	Store    billing.Store
	Keys     billing.KeyStore
	Limit    billing.Nanos // the default daily limit
	Location *time.Location
	Log      *slog.Logger
	Now      func() time.Time
	// KeyWarning, when set, says why keys made with AddKey are not
	// accepted by the running configuration.
	KeyWarning string
	// Budgets are the budgets in force; Defs keeps those made here.
	Budgets *budgets.Source
	Defs    billing.BudgetDefStore
	// Ledger, when set, answers GetReport.
	Ledger interface {
		Report(ctx context.Context, q ledger.Query) ([]ledger.Row, error)
	}
}

// Register serves s on gs.
func (s *Server) Register(gs *grpc.Server) { operatorv1.RegisterOperatorServiceServer(gs, s) }

// TokenAuth is a gRPC interceptor pair that requires
// "authorization: Bearer <token>", compared in constant time.
func TokenAuth(token string) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	want := sha256.Sum256([]byte(token))
	check := func(ctx context.Context) error {
		md, _ := metadata.FromIncomingContext(ctx)
		got := ""
		if v := md.Get("authorization"); len(v) == 1 {
			got, _ = strings.CutPrefix(v[0], "Bearer ")
		}
		h := sha256.Sum256([]byte(got))
		if got == "" || subtle.ConstantTimeCompare(h[:], want[:]) != 1 {
			return status.Error(codes.Unauthenticated, "missing or wrong admin token: send 'authorization: Bearer <ADMIN_TOKEN>'")
		}
		return nil
	}
	unary := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if err := check(ctx); err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if err := check(ss.Context()); err != nil {
			return err
		}
		return h(srv, ss)
	}
	return unary, stream
}

var dayPattern = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}$`)

func (s *Server) day(d string) (string, error) {
	if d == "" {
		return billing.Day(s.Now(), s.Location), nil
	}
	if !dayPattern.MatchString(d) {
		return "", status.Errorf(codes.InvalidArgument, "day %q is not YYYY-MM-DD", d)
	}
	return d, nil
}

func (s *Server) usage(ctx context.Context, user, day string) (*operatorv1.Usage, error) {
	b, err := s.Store.Budget(ctx, user, day, s.Limit)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "budget store: %v", err)
	}
	return &operatorv1.Usage{User: user, Day: day,
		LimitNanos: int64(b.Limit), SpentNanos: int64(b.Spent), ReservedNanos: int64(b.Reserved),
		LimitUsd: b.Limit.Decimal(), SpentUsd: b.Spent.Decimal(), ReservedUsd: b.Reserved.Decimal(),
		LimitOverridden: b.Limit != s.Limit}, nil
}

func needUser(u string) error {
	if u == "" || len(u) > 256 || strings.ContainsAny(u, "{}") {
		return status.Error(codes.InvalidArgument, "user must be 1-256 bytes without braces")
	}
	return nil
}

func (s *Server) GetUsage(ctx context.Context, req *operatorv1.GetUsageRequest) (*operatorv1.Usage, error) {
	if err := needUser(req.GetUser()); err != nil {
		return nil, err
	}
	day, err := s.day(req.GetDay())
	if err != nil {
		return nil, err
	}
	return s.usage(ctx, req.GetUser(), day)
}

func (s *Server) ListUsers(ctx context.Context, req *operatorv1.ListUsersRequest) (*operatorv1.ListUsersResponse, error) {
	day, err := s.day(req.GetDay())
	if err != nil {
		return nil, err
	}
	users, err := s.Store.Users(ctx, day)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "budget store: %v", err)
	}
	sort.Strings(users)
	resp := &operatorv1.ListUsersResponse{}
	for _, u := range users {
		us, err := s.usage(ctx, u, day)
		if err != nil {
			return nil, err
		}
		resp.Users = append(resp.Users, us)
	}
	return resp, nil
}

func parseLimit(s string) (billing.Nanos, error) {
	if s == "" {
		return 0, nil
	}
	n, err := billing.ParseUSD(s)
	if err != nil {
		return 0, status.Errorf(codes.InvalidArgument, "daily_limit_usd: %v", err)
	}
	return n, nil
}

func (s *Server) SetLimit(ctx context.Context, req *operatorv1.SetLimitRequest) (*operatorv1.SetLimitResponse, error) {
	if err := needUser(req.GetUser()); err != nil {
		return nil, err
	}
	limit, err := parseLimit(req.GetDailyLimitUsd())
	if err != nil {
		return nil, err
	}
	if err := s.Store.SetLimit(ctx, req.GetUser(), limit); err != nil {
		return nil, status.Errorf(codes.Unavailable, "budget store: %v", err)
	}
	s.Log.Info("operator set a limit", "user", req.GetUser(), "limit", limit.String())
	u, err := s.usage(ctx, req.GetUser(), billing.Day(s.Now(), s.Location))
	if err != nil {
		return nil, err
	}
	return &operatorv1.SetLimitResponse{Usage: u}, nil
}

func (s *Server) AddKey(ctx context.Context, req *operatorv1.AddKeyRequest) (*operatorv1.AddKeyResponse, error) {
	if err := needUser(req.GetUser()); err != nil {
		return nil, err
	}
	limit, err := parseLimit(req.GetDailyLimitUsd())
	if err != nil {
		return nil, err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, status.Errorf(codes.Internal, "generate key: %v", err)
	}
	key := "aifw-" + base64.RawURLEncoding.EncodeToString(raw)
	sha := identity.HashKey(key)
	for _, g := range req.GetGroups() {
		if g == "" || len(g) > 128 || strings.ContainsFunc(g, unicode.IsControl) {
			return nil, status.Errorf(codes.InvalidArgument, "group %q: give a name of 1 to 128 printable characters", g)
		}
	}
	if err := s.Keys.AddKey(ctx, sha, billing.APIKey{User: req.GetUser(), Limit: limit, Groups: req.GetGroups()}); err != nil {
		return nil, status.Errorf(codes.Unavailable, "budget store: %v", err)
	}
	s.Log.Info("operator added a key", "user", req.GetUser(), "sha256", sha)
	return &operatorv1.AddKeyResponse{Key: key, Sha256: sha, Warning: s.KeyWarning}, nil
}

func (s *Server) RevokeKey(ctx context.Context, req *operatorv1.RevokeKeyRequest) (*operatorv1.RevokeKeyResponse, error) {
	sha := strings.ToLower(strings.TrimSpace(req.GetSha256()))
	if len(sha) != 64 || strings.Trim(sha, "0123456789abcdef") != "" {
		return nil, status.Error(codes.InvalidArgument, "sha256 must be 64 hex digits")
	}
	if err := s.Keys.RevokeKey(ctx, sha); err != nil {
		return nil, status.Errorf(codes.Unavailable, "budget store: %v", err)
	}
	s.Log.Info("operator revoked a key", "sha256", sha)
	return &operatorv1.RevokeKeyResponse{}, nil
}

// HTTPServer serves gRPC calls with gs and everything else (the
// dashboard) with web, on one port: HTTP/1.1, and HTTP/2 without TLS as
// gRPC clients speak it.
func HTTPServer(gs *grpc.Server, web http.Handler) *http.Server {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{Protocols: &p, ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
				gs.ServeHTTP(w, r)
				return
			}
			web.ServeHTTP(w, r)
		})}
}
