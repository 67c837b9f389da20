package dashboard

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	cookieName = "aifirewall_dashboard"
	sessionTTL = 12 * time.Hour
)

// session checks the operator token and the cookies signed with a key
// derived from it: a cookie holds its expiry and a MAC, nothing secret,
// and changing ADMIN_TOKEN ends every session.
type session struct {
	want [32]byte // sha256 of the token
	key  []byte
}

func newSession(token string) session {
	mac := hmac.New(sha256.New, []byte(token))
	mac.Write([]byte("aifirewall dashboard session key"))
	return session{want: sha256.Sum256([]byte(token)), key: mac.Sum(nil)}
}

// matches compares a token in constant time.
func (s session) matches(token string) bool {
	got := sha256.Sum256([]byte(token))
	return token != "" && subtle.ConstantTimeCompare(got[:], s.want[:]) == 1
}

func (s session) bearer(r *http.Request) bool {
	t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && s.matches(t)
}

func (s session) sign(expiry string) string {
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(expiry))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func (s session) valid(r *http.Request, now time.Time) bool {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return false
	}
	expiry, sig, ok := strings.Cut(c.Value, ".")
	if !ok || !hmac.Equal([]byte(sig), []byte(s.sign(expiry))) {
		return false
	}
	unix, err := strconv.ParseInt(expiry, 10, 64)
	return err == nil && now.Unix() < unix
}

// cookie is a new session's: HttpOnly (no script reads it), SameSite
// Strict (no other site's page sends it), Secure behind TLS.
func (s session) cookie(r *http.Request, now time.Time) *http.Cookie {
	expiry := strconv.FormatInt(now.Add(sessionTTL).Unix(), 10)
	return &http.Cookie{Name: cookieName, Value: expiry + "." + s.sign(expiry), Path: "/", MaxAge: int(sessionTTL.Seconds()),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secure(r)}
}

func (s session) expired(r *http.Request) *http.Cookie {
	return &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secure(r)}
}

func secure(r *http.Request) bool {
	return r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https"
}
