package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/yagura/yagura/internal/secret"
	"github.com/yagura/yagura/internal/store"
)

// Accounts is where users and API clients are looked up.
type Accounts interface {
	UserByName(ctx context.Context, name string) (store.User, error)
	GetAPIClient(ctx context.Context, id string) (store.APIClient, error)
}

// OAuth serves the OAuth2 token (RFC 6749) and revocation (RFC 7009)
// endpoints.
type OAuth struct {
	// hashing bounds the password checks running at once (each holds
	// 19 MiB for ~30 ms): a flood of sign-ins queues instead of eating
	// the manager's memory.
	hashing chan struct{}

	Issuer   *Issuer
	Accounts Accounts
	Limiter  *Limiter
	Log      *slog.Logger
	Now      func() time.Time
	// Audit records sign-ins; may be nil.
	Audit func(ctx context.Context, actor, remote, what string, status int)
}

// Register adds /oauth/token and /oauth/revoke.
func (o *OAuth) Register(mux interface {
	HandleFunc(string, func(http.ResponseWriter, *http.Request))
}) {
	o.init()
	mux.HandleFunc("POST /oauth/token", o.tokenHandler(nil))
	mux.HandleFunc("POST /oauth/revoke", o.revoke)
}

// FlowmonTokenTTL is how long Flowmon's access tokens live (its token
// endpoint answers expires_in 86400).
const FlowmonTokenTTL = 24 * time.Hour

// RegisterFlowmon adds the token endpoint at Progress Flowmon's path, POST
// /resources/oauth/token (and /resources/oAuth/token, which older Flowmon
// clients use), so that scripts written for Flowmon's REST API sign in
// unchanged. It takes the same grants as /oauth/token (Flowmon's clients
// send grant_type=password with client_id=invea-tech, which the password
// grant ignores), but its access tokens live accessTTL (FlowmonTokenTTL
// to match Flowmon) rather than the issuer's, because those scripts sign
// in once and run for the day. Refresh tokens are the issuer's.
func (o *OAuth) RegisterFlowmon(mux interface {
	HandleFunc(string, func(http.ResponseWriter, *http.Request))
}, accessTTL time.Duration) {
	o.init()
	iss := *o.Issuer // same store and checks, its own access lifetime
	iss.AccessTTL = accessTTL
	h := o.tokenHandler(&iss)
	mux.HandleFunc("POST /resources/oauth/token", h)
	mux.HandleFunc("POST /resources/oAuth/token", h)
}

func (o *OAuth) init() {
	if o.hashing == nil {
		o.hashing = make(chan struct{}, 4)
	}
}

type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope,omitempty"`
}

// oauthError answers as RFC 6749 §5.2 says.
func oauthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="yagura"`)
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

func remoteHost(r *http.Request) string {
	h, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return h
}

// tokenHandler serves the token endpoint, issuing with iss (nil: o.Issuer).
func (o *OAuth) tokenHandler(iss *Issuer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if iss == nil {
			o.token(w, r, o.Issuer)
			return
		}
		o.token(w, r, iss)
	}
}

func (o *OAuth) token(w http.ResponseWriter, r *http.Request, iss *Issuer) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "the body must be application/x-www-form-urlencoded, at most 16 KiB")
		return
	}
	now := o.Now()
	var (
		p       Principal
		refresh bool
		family  string
		err     error
	)
	switch gt := r.PostForm.Get("grant_type"); gt {
	case "password":
		p, err = o.password(r, now)
		refresh = true
	case "client_credentials":
		p, err = o.clientCredentials(r, now)
	case "refresh_token":
		p, family, err = o.refresh(r, now)
		refresh = true
	case "":
		oauthError(w, http.StatusBadRequest, "invalid_request", "grant_type is missing (password, client_credentials or refresh_token)")
		return
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", fmt.Sprintf("grant_type %q: use password, client_credentials or refresh_token", gt))
		return
	}
	if err != nil {
		var ge *grantError
		if errors.As(err, &ge) {
			if !ge.retryAfter.IsZero() {
				w.Header().Set("Retry-After", strconv.Itoa(int(time.Until(ge.retryAfter).Seconds())+1))
			}
			oauthError(w, ge.status, ge.code, ge.desc)
			return
		}
		o.Log.Error("token endpoint", "err", err)
		oauthError(w, http.StatusInternalServerError, "server_error", "the manager could not issue a token; see its log")
		return
	}
	t, err := iss.Issue(r.Context(), p, refresh, family, now)
	if err != nil {
		o.Log.Error("issue token", "err", err)
		oauthError(w, http.StatusInternalServerError, "server_error", "the manager could not issue a token; see its log")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(tokenResponse{
		AccessToken: t.Access, TokenType: "Bearer", ExpiresIn: int64(t.ExpiresIn.Seconds()), RefreshToken: t.Refresh, Scope: p.Role,
	})
}

type grantError struct {
	status     int
	code, desc string
	retryAfter time.Time
}

func (e *grantError) Error() string { return e.code + ": " + e.desc }

func badGrant(desc string) error {
	return &grantError{status: http.StatusBadRequest, code: "invalid_grant", desc: desc}
}

// attemptKeys are what sign-in attempts count against: quickly for one
// name from one address, more slowly per address, and only after many
// failures for a name from anywhere.
func attemptKeys(kind, name, addr string) []Key {
	return []Key{
		{Name: kind + "+addr:" + name + "|" + addr, Max: 5},
		{Name: "addr:" + addr, Max: 20},
		{Name: kind + ":" + name, Max: 50},
	}
}

func lockedOut(until time.Time) error {
	return &grantError{status: http.StatusBadRequest, code: "invalid_grant", retryAfter: until,
		desc: fmt.Sprintf("too many failed sign-ins for this user or from this address; try again after %s", until.UTC().Format(time.RFC3339))}
}

func (o *OAuth) password(r *http.Request, now time.Time) (Principal, error) {
	name, pass := r.PostForm.Get("username"), r.PostForm.Get("password")
	if name == "" || pass == "" || len(name) > 64 || len(pass) > 1024 {
		return Principal{}, &grantError{status: http.StatusBadRequest, code: "invalid_request", desc: "username (at most 64 characters) and password are required"}
	}
	keys := attemptKeys("user", strings.ToLower(name), remoteHost(r))
	if ok, until := o.Limiter.Attempt(now, keys...); !ok {
		return Principal{}, lockedOut(until)
	}
	u, err := o.Accounts.UserByName(r.Context(), name)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return Principal{}, err
	}
	// Hash even for unknown users, so timing does not tell which exist.
	o.hashing <- struct{}{}
	ok := CheckPassword(u.PasswordHash, pass)
	if err != nil {
		CheckPassword(dummyHash, pass)
	}
	<-o.hashing
	if err != nil || !ok || !u.DisabledAt.IsZero() {
		actor := "user:" + u.Username
		if err != nil {
			actor = "unknown-user" // never the typed name: it may be a password
		}
		o.audit(r, actor, "sign-in refused", http.StatusBadRequest)
		return Principal{}, badGrant("wrong username or password, or the user is disabled")
	}
	o.Limiter.Succeeded(keys...)
	o.audit(r, "user:"+u.Username, "signed in", http.StatusOK)
	return Principal{Subject: "user:" + u.Username, Role: u.Role}, nil
}

// dummyHash is checked against when the user does not exist.
var dummyHash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aW52YWxpZGludmFsaWRpbnZhbGlkaW52YWxpZGlu"

func (o *OAuth) clientCredentials(r *http.Request, now time.Time) (Principal, error) {
	id, sec, ok := r.BasicAuth()
	if !ok {
		id, sec = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	bad := &grantError{status: http.StatusUnauthorized, code: "invalid_client", desc: "unknown client, wrong secret, or the client is revoked or expired"}
	if id == "" || sec == "" {
		return Principal{}, &grantError{status: http.StatusUnauthorized, code: "invalid_client", desc: "client_id and client_secret are required (HTTP Basic or form)"}
	}
	if len(id) > 64 || len(sec) > 256 {
		return Principal{}, bad
	}
	keys := attemptKeys("client", id, remoteHost(r))
	if ok, until := o.Limiter.Attempt(now, keys...); !ok {
		bad.retryAfter = until
		bad.desc = "too many failed attempts for this client or from this address; try again later"
		return Principal{}, bad
	}
	c, err := o.Accounts.GetAPIClient(r.Context(), id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return Principal{}, err
	}
	if err != nil || !secret.Equal(sec, c.SecretHash) || !c.RevokedAt.IsZero() || (!c.ExpiresAt.IsZero() && !now.Before(c.ExpiresAt)) {
		actor := "client:" + c.ID
		if err != nil {
			actor = "unknown-client"
		}
		o.audit(r, actor, "client sign-in refused", http.StatusUnauthorized)
		return Principal{}, bad
	}
	o.Limiter.Succeeded(keys...)
	o.audit(r, "client:"+c.ID, "client signed in", http.StatusOK)
	return Principal{Subject: "client:" + c.ID, Role: c.Role, Expires: c.ExpiresAt}, nil
}

func (o *OAuth) refresh(r *http.Request, now time.Time) (Principal, string, error) {
	tok := r.PostForm.Get("refresh_token")
	if tok == "" {
		return Principal{}, "", &grantError{status: http.StatusBadRequest, code: "invalid_request", desc: "refresh_token is missing"}
	}
	p, family, err := o.Issuer.Rotate(r.Context(), tok, now)
	switch {
	case errors.Is(err, store.ErrTokenReused):
		o.Log.Warn("a used refresh token was presented again; its grant is revoked", "remote", r.RemoteAddr)
		o.audit(r, "unknown", "reused refresh token: sign-in revoked", http.StatusBadRequest)
		return Principal{}, "", badGrant("this refresh token was already used; every token of its sign-in is now revoked (sign in again)")
	case errors.Is(err, store.ErrTokenInvalid):
		return Principal{}, "", badGrant("refresh token unknown, expired or revoked; sign in again")
	case err != nil:
		return Principal{}, "", err
	}
	// The user may have been disabled (or their role changed) since.
	if name, ok := strings.CutPrefix(p.Subject, "user:"); ok {
		u, err := o.Accounts.UserByName(r.Context(), name)
		if err != nil || !u.DisabledAt.IsZero() {
			return Principal{}, "", badGrant("the user no longer exists or is disabled")
		}
		p.Role = u.Role
	}
	return p, family, nil
}

func (o *OAuth) revoke(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil || r.PostForm.Get("token") == "" {
		oauthError(w, http.StatusBadRequest, "invalid_request", "token is missing")
		return
	}
	if err := o.Issuer.Revoke(r.Context(), r.PostForm.Get("token"), o.Now()); err != nil {
		o.Log.Error("revoke token", "err", err)
		oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "try again")
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (o *OAuth) audit(r *http.Request, actor, what string, status int) {
	if o.Audit != nil {
		o.Audit(r.Context(), actor, remoteHost(r), what, status)
	}
}
