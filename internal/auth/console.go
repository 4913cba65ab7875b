package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"
)

// The web console signs in with a session cookie instead of a bearer
// token: the cookie holds an access token of the same kind (issued by the
// same Issuer, checked by the same Authenticate, revoked the same way),
// but scripts cannot read it (HttpOnly), it is sent only over HTTPS
// (Secure) and only by pages of the manager itself (SameSite=Strict).
// Requests that change something must also carry the session's CSRF
// token in a header, which a page of another site can neither read nor
// set.
const (
	SessionCookie = "yagura_session"
	CSRFHeader    = "X-CSRF-Token"
	// ConsoleHeader must be on a sign-in request: a form on another site
	// cannot send it, so it cannot sign a victim's browser in to the
	// attacker's account (login CSRF).
	ConsoleHeader = "X-Yagura-Console"
)

// CSRFToken is the CSRF token of a session: derived from the session
// token by a one-way hash, so it needs no storage, is the same on every
// manager node, and does not reveal the session.
func CSRFToken(session string) string {
	sum := sha256.Sum256([]byte("yagura-csrf\x00" + session))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// CheckCSRF reports whether header (the value of a request's CSRFHeader)
// is the CSRF token of session.
func CheckCSRF(header, session string) bool {
	return header != "" && subtle.ConstantTimeCompare([]byte(header), []byte(CSRFToken(session))) == 1
}

// SafeMethod reports whether a request with this method changes nothing
// (RFC 9110 §9.2.1), and so needs no CSRF token.
func SafeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// sessionInfo is what the console learns of its session.
type sessionInfo struct {
	User      string    `json:"user"`
	Role      string    `json:"role"`
	CSRFToken string    `json:"csrf_token"`
	Expires   time.Time `json:"expires,omitzero"`
}

// RegisterConsole adds the console's session endpoints, sessions lasting
// ttl:
//
//   - POST /console/session signs in (form fields username and password,
//     with the X-Yagura-Console header), with the same checks, brake on
//     guessing and audit as the password grant; it sets the cookie and
//     answers the user, role and CSRF token;
//   - GET /console/session answers the same for the current cookie (the
//     console asks on load), 401 without a valid one;
//   - DELETE /console/session signs out (CSRF token required): the token
//     is revoked and the cookie cleared.
func (o *OAuth) RegisterConsole(mux interface {
	HandleFunc(string, func(http.ResponseWriter, *http.Request))
}, ttl time.Duration) {
	o.init()
	iss := *o.Issuer // same store and checks, the session's lifetime
	iss.AccessTTL = ttl
	mux.HandleFunc("POST /console/session", func(w http.ResponseWriter, r *http.Request) { o.signIn(w, r, &iss) })
	mux.HandleFunc("GET /console/session", o.session)
	mux.HandleFunc("DELETE /console/session", o.signOut)
}

func consoleError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func (o *OAuth) signIn(w http.ResponseWriter, r *http.Request, iss *Issuer) {
	if r.Header.Get(ConsoleHeader) == "" {
		consoleError(w, http.StatusForbidden, "sign in from the console page (the "+ConsoleHeader+" header is missing)")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := r.ParseForm(); err != nil {
		consoleError(w, http.StatusBadRequest, "a form with username and password is expected")
		return
	}
	now := o.Now()
	p, err := o.password(r, now)
	if err != nil {
		var ge *grantError
		if errors.As(err, &ge) {
			if !ge.retryAfter.IsZero() {
				w.Header().Set("Retry-After", ge.retryAfter.UTC().Format(http.TimeFormat))
			}
			status := http.StatusUnauthorized
			if ge.code == "invalid_request" {
				status = http.StatusBadRequest
			} else if !ge.retryAfter.IsZero() {
				status = http.StatusTooManyRequests
			}
			consoleError(w, status, ge.desc)
			return
		}
		o.Log.Error("console sign-in", "err", err)
		consoleError(w, http.StatusInternalServerError, "the manager could not check the password; see its log")
		return
	}
	t, err := iss.Issue(r.Context(), p, false, "", now)
	if err != nil {
		o.Log.Error("console sign-in: issue session", "err", err)
		consoleError(w, http.StatusInternalServerError, "the manager could not start a session; see its log")
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: t.Access, Path: "/",
		MaxAge: int(t.ExpiresIn / time.Second), Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode,
	})
	writeSession(w, sessionInfo{User: strings.TrimPrefix(p.Subject, "user:"), Role: t.Role, CSRFToken: CSRFToken(t.Access), Expires: now.Add(t.ExpiresIn)})
}

func writeSession(w http.ResponseWriter, s sessionInfo) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(s)
}

// cookiePrincipal authenticates r's session cookie.
func (o *OAuth) cookiePrincipal(r *http.Request) (Principal, string, bool) {
	c, err := r.Cookie(SessionCookie)
	if err != nil || c.Value == "" {
		return Principal{}, "", false
	}
	p, err := o.Issuer.Authenticate(r.Context(), c.Value, o.Now())
	if err != nil {
		return Principal{}, "", false
	}
	return p, c.Value, true
}

func (o *OAuth) session(w http.ResponseWriter, r *http.Request) {
	p, token, ok := o.cookiePrincipal(r)
	if !ok {
		consoleError(w, http.StatusUnauthorized, "not signed in, or the session has expired")
		return
	}
	if !strings.HasPrefix(p.Subject, "user:") {
		consoleError(w, http.StatusUnauthorized, "not a user's session")
		return
	}
	writeSession(w, sessionInfo{User: strings.TrimPrefix(p.Subject, "user:"), Role: p.Role, CSRFToken: CSRFToken(token)})
}

func (o *OAuth) signOut(w http.ResponseWriter, r *http.Request) {
	p, token, ok := o.cookiePrincipal(r)
	if ok && !CheckCSRF(r.Header.Get(CSRFHeader), token) {
		consoleError(w, http.StatusForbidden, "missing or wrong "+CSRFHeader+" header")
		return
	}
	if ok {
		if err := o.Issuer.Revoke(r.Context(), token, o.Now()); err != nil {
			o.Log.Error("console sign-out", "err", err)
			consoleError(w, http.StatusInternalServerError, "the manager could not end the session; see its log")
			return
		}
		o.audit(r, p.Subject, "signed out", http.StatusOK)
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
}
