package auth_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/yagura/yagura/internal/auth"
	"github.com/yagura/yagura/internal/secret"
	"github.com/yagura/yagura/internal/store"
	"github.com/yagura/yagura/internal/store/sqlite"
)

func TestPasswords(t *testing.T) {
	h, err := auth.HashPassword("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Errorf("hash %q is not argon2id PHC", h)
	}
	if !auth.CheckPassword(h, "correct horse battery") || auth.CheckPassword(h, "correct horse batterY") {
		t.Error("password check wrong")
	}
	for _, bad := range []string{"", "$argon2i$v=19$m=1,t=1,p=1$AA$AA", "$argon2id$v=19$m=9999999,t=1,p=1$AA$AA", h + "x$"} {
		if auth.CheckPassword(bad, "x") {
			t.Errorf("accepted malformed hash %q", bad)
		}
	}
	if _, err := auth.HashPassword("short"); err == nil {
		t.Error("accepted a 5-character password")
	}
}

func TestAllowed(t *testing.T) {
	tests := []struct {
		role, perm string
		want       bool
	}{
		{auth.RoleAdmin, "users:write", true},
		{auth.RoleAdmin, "settings:write", true},
		{auth.RoleOperator, "computers:write", true},
		{auth.RoleOperator, "jobs:write", true},
		{auth.RoleOperator, "alerts:write", true},
		{auth.RoleOperator, "users:read", false},
		{auth.RoleOperator, "settings:read", false},
		{auth.RoleOperator, "audit:read", false},
		{auth.RoleAuditor, "audit:read", true},
		{auth.RoleAuditor, "users:read", true},
		{auth.RoleAuditor, "computers:write", false},
		{auth.RoleAuditor, "jobs:write", false},
		{"nobody", "computers:read", false},
		{auth.RoleAdmin, "malformed", false},
	}
	for _, tt := range tests {
		if got := auth.Allowed(tt.role, tt.perm); got != tt.want {
			t.Errorf("Allowed(%s, %s) = %v, want %v", tt.role, tt.perm, got, tt.want)
		}
	}
}

func TestLimiter(t *testing.T) {
	l := auth.NewLimiter()
	now := time.Now()
	pair, addr := auth.Key{Name: "user+addr:a|1", Max: 5}, auth.Key{Name: "addr:1", Max: 20}
	for i := range 5 {
		if ok, _ := l.Attempt(now, pair, addr); !ok {
			t.Fatalf("attempt %d refused", i+1)
		}
	}
	if ok, until := l.Attempt(now, pair, addr); ok || until.IsZero() {
		t.Fatal("a sixth attempt within the window was allowed")
	}
	if ok, _ := l.Attempt(now, auth.Key{Name: "user+addr:b|1", Max: 5}); !ok {
		t.Fatal("another user from the same address is locked too early")
	}
	if ok, _ := l.Attempt(now.Add(16*time.Minute), pair, addr); !ok {
		t.Fatal("lockout did not expire")
	}
	// Successes give their attempts back.
	k := auth.Key{Name: "user+addr:c|1", Max: 2}
	for range 10 {
		if ok, _ := l.Attempt(now, k); !ok {
			t.Fatal("successful sign-ins were counted as failures")
		}
		l.Succeeded(k)
	}
}

// TestParallelGuessesAreCounted: guesses racing each other cannot get past
// the limit between the check and the count.
func TestParallelGuessesAreCounted(t *testing.T) {
	e := newEnv(t)
	var wg sync.WaitGroup
	var refusedFast atomic.Int32
	for range 40 {
		wg.Go(func() {
			_, err := e.config().PasswordCredentialsToken(context.Background(), "alice", "wrong password!!")
			if err != nil && strings.Contains(err.Error(), "too many failed") {
				refusedFast.Add(1)
			}
		})
	}
	wg.Wait()
	if refusedFast.Load() < 35 {
		t.Fatalf("only %d of 40 parallel guesses were stopped by the limit of 5", refusedFast.Load())
	}
}

type env struct {
	db  *store.DB
	srv *httptest.Server
	iss *auth.Issuer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	db, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	h, _ := auth.HashPassword("alice's long password")
	if err := db.CreateUser(t.Context(), store.User{ID: "u1", Username: "alice", PasswordHash: h, Role: auth.RoleOperator, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateAPIClient(t.Context(), store.APIClient{ID: "ci", SecretHash: secret.Hash("ci-secret"), Role: auth.RoleAuditor, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	iss := &auth.Issuer{Store: db, AccessTTL: time.Hour, RefreshTTL: 48 * time.Hour}
	o := &auth.OAuth{Issuer: iss, Accounts: db, Limiter: auth.NewLimiter(), Log: slog.New(slog.DiscardHandler), Now: time.Now}
	mux := http.NewServeMux()
	o.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &env{db: db, srv: srv, iss: iss}
}

func (e *env) config() *oauth2.Config {
	return &oauth2.Config{ClientID: "yagura-ctl", Endpoint: oauth2.Endpoint{TokenURL: e.srv.URL + "/oauth/token", AuthStyle: oauth2.AuthStyleInParams}}
}

func (e *env) whoami(t *testing.T, access string) (auth.Principal, error) {
	t.Helper()
	return e.iss.Authenticate(context.Background(), access, time.Now())
}

func TestPasswordGrantAndRotation(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tok, err := e.config().PasswordCredentialsToken(ctx, "alice", "alice's long password")
	if err != nil {
		t.Fatal(err)
	}
	if tok.RefreshToken == "" || tok.Expiry.Before(time.Now().Add(59*time.Minute)) {
		t.Fatalf("token %+v", tok)
	}
	p, err := e.whoami(t, tok.AccessToken)
	if err != nil || p.Subject != "user:alice" || p.Role != auth.RoleOperator {
		t.Fatalf("whoami: %+v %v", p, err)
	}
	// Rotation with the independent client.
	old := tok.RefreshToken
	tok.Expiry = time.Now().Add(-time.Minute) // force a refresh
	next, err := e.config().TokenSource(ctx, tok).Token()
	if err != nil {
		t.Fatal(err)
	}
	if next.RefreshToken == "" || next.RefreshToken == old || next.AccessToken == tok.AccessToken {
		t.Fatalf("refresh did not rotate: %+v", next)
	}
	if _, err := e.whoami(t, next.AccessToken); err != nil {
		t.Fatal(err)
	}
	// The old refresh token again: refused, and the whole family is gone.
	stale := &oauth2.Token{RefreshToken: old, Expiry: time.Now().Add(-time.Minute)}
	if _, err := e.config().TokenSource(ctx, stale).Token(); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("reused refresh token: %v", err)
	}
	for _, a := range []string{tok.AccessToken, next.AccessToken} {
		if _, err := e.whoami(t, a); err == nil {
			t.Error("an access token of a revoked family still works")
		}
	}
	next.Expiry = time.Now().Add(-time.Minute)
	if _, err := e.config().TokenSource(ctx, next).Token(); err == nil {
		t.Error("the newest refresh token of a revoked family still works")
	}
}

func TestClientCredentials(t *testing.T) {
	e := newEnv(t)
	cc := clientcredentials.Config{ClientID: "ci", ClientSecret: "ci-secret", TokenURL: e.srv.URL + "/oauth/token"}
	tok, err := cc.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if tok.RefreshToken != "" {
		t.Error("client_credentials returned a refresh token")
	}
	if p, err := e.whoami(t, tok.AccessToken); err != nil || p.Subject != "client:ci" || p.Role != auth.RoleAuditor {
		t.Fatalf("whoami: %+v %v", p, err)
	}
	cc.ClientSecret = "wrong"
	if _, err := cc.Token(context.Background()); err == nil || !strings.Contains(err.Error(), "invalid_client") {
		t.Fatalf("wrong secret: %v", err)
	}
	if err := e.db.RevokeAPIClient(context.Background(), "ci", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.whoami(t, tok.AccessToken); err == nil {
		t.Error("a revoked client's token still works")
	}
}

func TestRevokeAndLockout(t *testing.T) {
	e := newEnv(t)
	tok, err := e.config().PasswordCredentialsToken(context.Background(), "alice", "alice's long password")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.PostForm(e.srv.URL+"/oauth/revoke", url.Values{"token": {tok.RefreshToken}})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("revoke: %v %v", resp.StatusCode, err)
	}
	if _, err := e.whoami(t, tok.AccessToken); err == nil {
		t.Error("access token works after its refresh token was revoked")
	}
	// Five wrong passwords lock the user, even for the right one.
	for range 5 {
		if _, err := e.config().PasswordCredentialsToken(context.Background(), "alice", "wrong password!!"); err == nil {
			t.Fatal("wrong password accepted")
		}
	}
	_, err = e.config().PasswordCredentialsToken(context.Background(), "alice", "alice's long password")
	if err == nil || !strings.Contains(err.Error(), "too many failed sign-ins") {
		t.Fatalf("after 5 failures: %v", err)
	}
	// Errors are RFC 6749 JSON.
	resp, _ = http.PostForm(e.srv.URL+"/oauth/token", url.Values{"grant_type": {"implicit"}})
	var body map[string]string
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &body)
	if resp.StatusCode != 400 || body["error"] != "unsupported_grant_type" {
		t.Errorf("unknown grant: %d %s", resp.StatusCode, b)
	}
}

// TestFlowmonTokenEndpoint: Flowmon's scripts sign in at
// /resources/oauth/token with client_id=invea-tech and get a day-long
// access token; /oauth/token keeps the issuer's lifetime.
func TestFlowmonTokenEndpoint(t *testing.T) {
	e := newEnv(t)
	o := &auth.OAuth{Issuer: e.iss, Accounts: e.db, Limiter: auth.NewLimiter(), Log: slog.New(slog.DiscardHandler), Now: time.Now}
	mux := http.NewServeMux()
	o.Register(mux)
	o.RegisterFlowmon(mux, auth.FlowmonTokenTTL)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	form := url.Values{"grant_type": {"password"}, "client_id": {"invea-tech"}, "username": {"alice"}, "password": {"alice's long password"}}
	tests := []struct {
		path        string
		wantExpires int64
	}{
		{"/resources/oauth/token", 86400},
		{"/resources/oAuth/token", 86400},
		{"/oauth/token", 3600},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, err := http.PostForm(srv.URL+tt.path, form)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct {
				AccessToken  string `json:"access_token"`
				ExpiresIn    int64  `json:"expires_in"`
				RefreshToken string `json:"refresh_token"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, decode: %v", resp.StatusCode, err)
			}
			if body.ExpiresIn != tt.wantExpires || body.AccessToken == "" || body.RefreshToken == "" {
				t.Fatalf("got %+v, want expires_in %d and both tokens", body, tt.wantExpires)
			}
			if p, err := e.whoami(t, body.AccessToken); err != nil || p.Subject != "user:alice" {
				t.Fatalf("whoami: %+v %v", p, err)
			}
			// The token still works just before its lifetime ends and not after.
			before := time.Now().Add(time.Duration(tt.wantExpires-60) * time.Second)
			if _, err := e.iss.Authenticate(context.Background(), body.AccessToken, before); err != nil {
				t.Errorf("token refused %d s after issue: %v", tt.wantExpires-60, err)
			}
			after := time.Now().Add(time.Duration(tt.wantExpires+60) * time.Second)
			if _, err := e.iss.Authenticate(context.Background(), body.AccessToken, after); err == nil {
				t.Errorf("token still accepted %d s after issue", tt.wantExpires+60)
			}
		})
	}
	// Flowmon's path refuses a wrong password the same way.
	bad := url.Values{"grant_type": {"password"}, "client_id": {"invea-tech"}, "username": {"alice"}, "password": {"wrong password!!"}}
	resp, err := http.PostForm(srv.URL+"/resources/oauth/token", bad)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("wrong password: status %d, want 400", resp.StatusCode)
	}
}
