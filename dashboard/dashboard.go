// Package dashboard serves the spend dashboard on the operator port: a
// server-rendered page (no script) of today's and this month's spend, the
// budgets in force with their warning thresholds, spend over time as an
// SVG chart, the top spenders, and CSV and JSON reports from the ledger.
// It is behind the operator token: a bearer header for scripts, or a
// session cookie that a login form sets for browsers.
package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"html/template"
	"log/slog"
	"net/http"
	"time"

	"github.com/aifirewall/aifirewall/ledger"
	operatorv1 "github.com/aifirewall/aifirewall/proto-gen/aifirewall/operator/v1"
)

// Ops is the part of the operator API the dashboard shows.
type Ops interface {
	ListBudgets(ctx context.Context, req *operatorv1.ListBudgetsRequest) (*operatorv1.ListBudgetsResponse, error)
	GetUsage(ctx context.Context, req *operatorv1.GetUsageRequest) (*operatorv1.Usage, error)
}

// Reporter reads the ledger.
type Reporter interface {
	Report(ctx context.Context, q ledger.Query) ([]ledger.Row, error)
}

//go:embed templates/*.html static/style.css
var files embed.FS

var templates = template.Must(template.New("").Funcs(template.FuncMap{
	"usd": usd, "pct": pct,
}).ParseFS(files, "templates/*.html"))

// Handler serves /dashboard/ and GET /v1/report.
type Handler struct {
	ops     Ops
	ledger  Reporter // nil: no ledger is configured
	now     func() time.Time
	log     *slog.Logger
	session session
	mux     *http.ServeMux
	csrf    *http.CrossOriginProtection
}

// New serves the dashboard of ops and the ledger (nil when there is none)
// behind token.
func New(token string, ops Ops, l Reporter, now func() time.Time, log *slog.Logger) *Handler {
	h := &Handler{ops: ops, ledger: l, now: now, log: log, session: newSession(token),
		mux: http.NewServeMux(), csrf: http.NewCrossOriginProtection()}
	h.mux.HandleFunc("GET /dashboard", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/dashboard/", http.StatusSeeOther)
	})
	h.mux.HandleFunc("GET /dashboard/{$}", h.authed(h.page, false))
	h.mux.HandleFunc("GET /dashboard/report.csv", h.authed(h.csv, true))
	h.mux.HandleFunc("GET /v1/report", h.authed(h.json, true))
	h.mux.HandleFunc("GET /dashboard/login", h.loginForm)
	h.mux.HandleFunc("POST /dashboard/login", h.login)
	h.mux.HandleFunc("POST /dashboard/logout", h.logout)
	h.mux.HandleFunc("GET /dashboard/style.css", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=300")
		http.ServeFileFS(w, r, files, "static/style.css")
	})
	return h
}

// ServeHTTP refuses cross-origin form posts (CSRF: the login and logout
// forms are the only requests that change anything) and sets the
// headers that keep the page from being framed, scripted or cached.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cache-Control", "no-store")
	if err := h.csrf.Check(r); err != nil {
		apiError(w, http.StatusForbidden, "permission_error", "cross_origin_request",
			"a form on another site posted to the dashboard; sign in at /dashboard/login on this address")
		return
	}
	h.mux.ServeHTTP(w, r)
}

// authed serves next to a caller with the operator token. A browser
// without a session goes to the login form; a script gets a 401 in the
// OpenAI error shape.
func (h *Handler) authed(next http.HandlerFunc, script bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if h.session.bearer(r) || h.session.valid(r, h.now()) {
			next(w, r)
			return
		}
		if !script {
			http.Redirect(w, r, "/dashboard/login", http.StatusSeeOther)
			return
		}
		apiError(w, http.StatusUnauthorized, "authentication_error", "invalid_admin_token",
			"missing or wrong operator token: send 'Authorization: Bearer <ADMIN_TOKEN>', or sign in at /dashboard/login")
	}
}

func (h *Handler) loginForm(w http.ResponseWriter, r *http.Request) {
	h.render(w, http.StatusOK, "login.html", map[string]string{})
}

func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if !h.session.matches(r.PostFormValue("token")) {
		h.log.Warn("dashboard sign-in refused: wrong operator token", "remote", r.RemoteAddr)
		h.render(w, http.StatusUnauthorized, "login.html", map[string]string{
			"Error": "That is not the operator token (ADMIN_TOKEN). Check it and try again."})
		return
	}
	http.SetCookie(w, h.session.cookie(r, h.now()))
	http.Redirect(w, r, "/dashboard/", http.StatusSeeOther)
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, h.session.expired(r))
	http.Redirect(w, r, "/dashboard/login", http.StatusSeeOther)
}

func (h *Handler) render(w http.ResponseWriter, status int, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := templates.ExecuteTemplate(w, name, data); err != nil {
		h.log.Error("dashboard page", "template", name, "err", err)
	}
}

// apiError writes an error in the OpenAI error shape.
func apiError(w http.ResponseWriter, status int, typ, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "type": typ, "code": code}})
}
