package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/yagura/yagura/internal/auth"
	"github.com/yagura/yagura/internal/console"
	"github.com/yagura/yagura/internal/credentials"
	"github.com/yagura/yagura/internal/server"
	"github.com/yagura/yagura/internal/server/servertest"
)

type consoleSession struct {
	cookie *http.Cookie
	csrf   string
	role   string
}

// consoleDo sends a console request: with the session's cookie if s is
// not nil, and the given extra headers.
func consoleDo(t *testing.T, m *servertest.Manager, method, path string, s *consoleSession, body io.Reader, headers map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, m.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	if s != nil {
		req.AddCookie(s.cookie)
	}
	client := *m.Client
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func signIn(t *testing.T, m *servertest.Manager, user, password string) *consoleSession {
	t.Helper()
	form := url.Values{"username": {user}, "password": {password}}.Encode()
	resp, body := consoleDo(t, m, http.MethodPost, "/console/session", nil, strings.NewReader(form),
		map[string]string{"Content-Type": "application/x-www-form-urlencoded", auth.ConsoleHeader: "1"})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("sign in as %s: %d %s", user, resp.StatusCode, body)
	}
	var info struct {
		User, Role string
		CSRFToken  string `json:"csrf_token"`
	}
	if err := json.Unmarshal(body, &info); err != nil {
		t.Fatal(err)
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == auth.SessionCookie {
			cookie = c
		}
	}
	if cookie == nil || cookie.Value == "" {
		t.Fatalf("sign in as %s: no %s cookie in %v", user, auth.SessionCookie, resp.Header["Set-Cookie"])
	}
	if !cookie.Secure || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/" || cookie.MaxAge <= 0 {
		t.Errorf("session cookie flags: %q, want Secure, HttpOnly, SameSite=Strict, Path=/ and a Max-Age", resp.Header.Get("Set-Cookie"))
	}
	if info.User != user || info.CSRFToken == "" || info.CSRFToken == cookie.Value {
		t.Errorf("sign-in answer: %s", body)
	}
	return &consoleSession{cookie: cookie, csrf: info.CSRFToken, role: info.Role}
}

// TestConsoleSession: the console's pages carry a strict CSP; sign-in
// needs the console's header and the right password and sets a Secure,
// HttpOnly, SameSite=Strict cookie; with it the API answers reads, and
// changes only with the CSRF token and only what the role allows; sign-out
// ends the session.
func TestConsoleSession(t *testing.T) {
	m := servertest.Start(t, servertest.Config(t), server.Options{})
	admin, err := credentials.Load(m.CredentialsPath)
	if err != nil {
		t.Fatal(err)
	}

	resp, body := consoleDo(t, m, http.MethodGet, "/console/", nil, nil, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `src="app.js"`) {
		t.Fatalf("GET /console/: %d %.200s", resp.StatusCode, body)
	}
	if got := resp.Header.Get("Content-Security-Policy"); got != console.ContentSecurityPolicy || !strings.Contains(got, "script-src 'self'") {
		t.Errorf("console CSP %q", got)
	}
	if resp, _ := consoleDo(t, m, http.MethodGet, "/", nil, nil, nil); resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/console/" {
		t.Errorf("GET /: %d to %q, want a redirect to /console/", resp.StatusCode, resp.Header.Get("Location"))
	}

	// Sign-in without the console's header (a form on another site).
	form := url.Values{"username": {admin.User}, "password": {admin.Password}}.Encode()
	if resp, body := consoleDo(t, m, http.MethodPost, "/console/session", nil, strings.NewReader(form), map[string]string{"Content-Type": "application/x-www-form-urlencoded"}); resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
		t.Errorf("sign-in without %s: %d %s", auth.ConsoleHeader, resp.StatusCode, body)
	}
	wrong := url.Values{"username": {admin.User}, "password": {"not the password at all"}}.Encode()
	if resp, body := consoleDo(t, m, http.MethodPost, "/console/session", nil, strings.NewReader(wrong), map[string]string{"Content-Type": "application/x-www-form-urlencoded", auth.ConsoleHeader: "1"}); resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
		t.Errorf("sign-in with a wrong password: %d %s", resp.StatusCode, body)
	}

	s := signIn(t, m, admin.User, admin.Password)
	if resp, body := consoleDo(t, m, http.MethodGet, "/console/session", s, nil, nil); resp.StatusCode != http.StatusOK || !strings.Contains(string(body), s.csrf) {
		t.Errorf("GET /console/session: %d %s", resp.StatusCode, body)
	}
	if resp, body := consoleDo(t, m, http.MethodGet, "/api/v1/computers", s, nil, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("API read with the session cookie: %d %s", resp.StatusCode, body)
	}
	create := func(s *consoleSession, csrf string) (*http.Response, []byte) {
		h := map[string]string{"Content-Type": "application/json"}
		if csrf != "" {
			h[auth.CSRFHeader] = csrf
		}
		return consoleDo(t, m, http.MethodPost, "/api/v1/activation-tokens", s, strings.NewReader(`{"description":"console test"}`), h)
	}
	if resp, body := create(s, ""); resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), auth.CSRFHeader) {
		t.Errorf("change without the CSRF token: %d %s", resp.StatusCode, body)
	}
	if resp, body := create(s, s.csrf+"x"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("change with a wrong CSRF token: %d %s", resp.StatusCode, body)
	}
	if resp, body := create(s, s.csrf); resp.StatusCode != http.StatusCreated {
		t.Errorf("change with the CSRF token: %d %s", resp.StatusCode, body)
	}

	// An auditor's session reads but cannot change anything.
	m.Call(t, http.MethodPost, "/api/v1/users", map[string]string{"username": "audrey", "password": "a long enough password", "role": auth.RoleAuditor}, http.StatusCreated, nil)
	aud := signIn(t, m, "audrey", "a long enough password")
	if aud.role != auth.RoleAuditor {
		t.Errorf("auditor's session role %q", aud.role)
	}
	if resp, body := consoleDo(t, m, http.MethodGet, "/api/v1/computers", aud, nil, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("auditor read: %d %s", resp.StatusCode, body)
	}
	if resp, body := create(aud, aud.csrf); resp.StatusCode != http.StatusForbidden {
		t.Errorf("auditor change with the CSRF token: %d %s, want 403", resp.StatusCode, body)
	}

	// Sign-out needs the CSRF token, then the cookie is worthless.
	if resp, _ := consoleDo(t, m, http.MethodDelete, "/console/session", s, nil, nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("sign-out without the CSRF token: %d", resp.StatusCode)
	}
	resp, _ = consoleDo(t, m, http.MethodDelete, "/console/session", s, nil, map[string]string{auth.CSRFHeader: s.csrf})
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("sign-out: %d", resp.StatusCode)
	}
	cleared := false
	for _, c := range resp.Cookies() {
		cleared = cleared || (c.Name == auth.SessionCookie && c.MaxAge < 0)
	}
	if !cleared {
		t.Errorf("sign-out did not clear the cookie: %v", resp.Header["Set-Cookie"])
	}
	if resp, _ := consoleDo(t, m, http.MethodGet, "/console/session", s, nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("session after sign-out: %d", resp.StatusCode)
	}
	if resp, _ := consoleDo(t, m, http.MethodGet, "/api/v1/computers", s, nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("API read after sign-out: %d", resp.StatusCode)
	}
}
