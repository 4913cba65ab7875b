package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/yagura/yagura/internal/credentials"
	"github.com/yagura/yagura/internal/pki"
)

// Client calls the manager's REST API.
type Client struct {
	base *url.URL
	http *http.Client

	mu       sync.Mutex
	token    string
	user     string
	password string
	target   Target
}

// Target is where ctl connects and how it authenticates.
type Target struct {
	URL      string
	Token    string
	User     string // with Password: signed in on first use
	Password string
	// RefreshToken renews Token when it expires (at Expires); the renewed
	// pair is written back to SavePath.
	RefreshToken  string
	Expires       time.Time
	SavePath      string
	CAFingerprint string
	// From says where the target came from, for error messages.
	From string
}

// defaultCredentialPaths are searched in order when nothing else says
// where the manager is: the user's own file, then the files `yagura dev`
// and `yagura server` write.
func defaultCredentialPaths() []string {
	var paths []string
	if dir, err := os.UserConfigDir(); err == nil {
		paths = append(paths, filepath.Join(dir, "yagura", "credentials.json"))
	}
	return append(paths,
		filepath.Join("yagura-data", "dev-credentials.json"),
		filepath.Join("/var/lib/yagura", "admin-credentials.json"),
	)
}

// ResolveTarget merges flags, environment and credentials files: a flag
// beats an environment variable, which beats the file.
func ResolveTarget(flagURL, flagToken, flagFP, credFile string, getenv func(string) string) (Target, error) {
	t := Target{URL: flagURL, Token: flagToken, CAFingerprint: flagFP}
	fill := func(u, tok, fp, from string) {
		if t.URL == "" && u != "" {
			t.URL, t.From = u, from
		}
		if t.Token == "" {
			t.Token = tok
		}
		if t.CAFingerprint == "" {
			t.CAFingerprint = fp
		}
	}
	fillFile := func(f *credentials.File, from string) {
		hadToken := t.Token != ""
		fill(f.URL, f.Token, f.CAFingerprint, from)
		if !hadToken && f.Token != "" && f.RefreshToken != "" {
			t.RefreshToken, t.Expires, t.SavePath = f.RefreshToken, f.Expires, from
		}
		if t.Token == "" && t.User == "" {
			t.User, t.Password = f.User, f.Password
		}
	}
	fill(getenv("YAGURA_SERVER"), getenv("YAGURA_TOKEN"), getenv("YAGURA_CA_FINGERPRINT"), "environment")
	if credFile == "" {
		credFile = getenv("YAGURA_CREDENTIALS")
	}
	if credFile != "" {
		f, err := credentials.Load(credFile)
		if err != nil {
			return t, fmt.Errorf("credentials: %w", err)
		}
		fillFile(f, credFile)
	} else if t.URL == "" || t.Token == "" || t.CAFingerprint == "" {
		for _, p := range defaultCredentialPaths() {
			f, err := credentials.Load(p)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				return t, fmt.Errorf("credentials: %w", err)
			}
			// A file found by searching (one in the working directory, say)
			// may not be the user's: never let it pick where a credential
			// given on the command line or in the environment goes, nor
			// send its own credential to a manager it does not name.
			if t.Token != "" && (t.URL == "" || t.URL != f.URL) {
				break
			}
			if t.URL != "" && t.URL != f.URL {
				break
			}
			fillFile(f, p)
			break
		}
	}
	if t.From == "" {
		t.From = "flags"
	}
	var missing []string
	if t.URL == "" {
		missing = append(missing, "the manager URL (--server or YAGURA_SERVER)")
	}
	if t.Token == "" && (t.User == "" || t.Password == "") {
		missing = append(missing, "a credential (`yagura ctl login`, --token or YAGURA_TOKEN)")
	}
	if t.CAFingerprint == "" {
		missing = append(missing, "the manager CA fingerprint (--ca-fingerprint or YAGURA_CA_FINGERPRINT)")
	}
	if len(missing) > 0 {
		return t, fmt.Errorf("no manager to talk to: missing %s; or point --credentials at the admin-credentials.json (dev-credentials.json for `yagura dev`) in the manager's data folder", strings.Join(missing, ", "))
	}
	return t, nil
}

// NewClient returns an API client for a target.
func NewClient(t Target) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(t.URL, "/"))
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("manager URL %q (from %s): want https://HOST:PORT", t.URL, t.From)
	}
	tc, err := pki.PinnedClientConfig(t.CAFingerprint, u.Hostname(), nil)
	if err != nil {
		return nil, err
	}
	return &Client{base: u, token: t.Token, user: t.User, password: t.Password, target: t, http: &http.Client{
		Timeout:   60 * time.Second,
		Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, TLSClientConfig: tc, ForceAttemptHTTP2: true},
	}}, nil
}

// TokenResponse is the OAuth2 token endpoint's answer.
type TokenResponse struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    int64  `json:"expires_in"`
	Scope        string `json:"scope"`
	Error        string `json:"error"`
	Description  string `json:"error_description"`
}

// Grant calls the OAuth2 token endpoint with a form (password or
// refresh_token grant).
func (c *Client) Grant(ctx context.Context, form url.Values) (*TokenResponse, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base.JoinPath("/oauth/token").String(), strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the manager at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	var tr TokenResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&tr); err != nil {
		return nil, fmt.Errorf("token endpoint answered %s", resp.Status)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("sign-in refused: %s (%s)", tr.Description, tr.Error)
	}
	return &tr, nil
}

// bearer returns the token to send, signing in with the password first if
// that is what the client has.
func (c *Client) bearer(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != "" && c.target.RefreshToken != "" && !c.target.Expires.IsZero() && time.Until(c.target.Expires) < time.Minute {
		if err := c.refreshLocked(ctx); err != nil {
			return "", err
		}
	}
	if c.token != "" || c.user == "" {
		return c.token, nil
	}
	tr, err := c.Grant(ctx, url.Values{"grant_type": {"password"}, "username": {c.user}, "password": {c.password}, "client_id": {"yagura-ctl"}})
	if err != nil {
		return "", err
	}
	c.token = tr.AccessToken
	return c.token, nil
}

// APIError is an RFC 9457 problem returned by the API.
type APIError struct {
	Status int
	Title  string `json:"title"`
	Detail string `json:"detail"`
	Errors []struct {
		Message  string `json:"message"`
		Location string `json:"location"`
		Value    any    `json:"value"`
	} `json:"errors"`
}

func (e *APIError) Error() string {
	var b strings.Builder
	msg := e.Detail
	if msg == "" {
		msg = e.Title
	}
	fmt.Fprintf(&b, "%s (HTTP %d)", msg, e.Status)
	for _, d := range e.Errors {
		fmt.Fprintf(&b, "\n  %s: %s", d.Location, d.Message)
		if d.Value != nil {
			fmt.Fprintf(&b, " (got %v)", d.Value)
		}
	}
	return b.String()
}

// Do sends a request with an optional JSON body and decodes a JSON answer
// into out (which may be nil).
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	b, err := c.Raw(ctx, method, path, query, in)
	if err != nil {
		return err
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("decode answer from %s: %w", path, err)
		}
	}
	return nil
}

// DoHeader is Do with extra request headers (If-Match).
func (c *Client) DoHeader(ctx context.Context, method, path string, h http.Header, in, out any) error {
	resp, err := c.send(ctx, c.http, method, path, nil, in, h)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("decode answer from %s: %w", path, err)
		}
	}
	return nil
}

// GetETag is a GET that decodes the answer into out and returns its ETag,
// to send back in If-Match so that a change applies only to what was read.
func (c *Client) GetETag(ctx context.Context, path string, out any) (string, error) {
	resp, err := c.send(ctx, c.http, http.MethodGet, path, nil, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(out); err != nil {
		return "", fmt.Errorf("decode answer from %s: %w", path, err)
	}
	return resp.Header.Get("ETag"), nil
}

// RevokeToken revokes a token (RFC 7009).
func (c *Client) RevokeToken(ctx context.Context, token string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base.JoinPath("/oauth/revoke").String(), strings.NewReader(url.Values{"token": {token}}.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("revocation answered %s", resp.Status)
	}
	return nil
}

// Stream starts a GET and returns the response for the caller to read
// (large downloads, without the API calls' timeout); error answers become
// *APIError.
func (c *Client) Stream(ctx context.Context, path string, query url.Values) (*http.Response, error) {
	hc := *c.http
	hc.Timeout = 0
	return c.send(ctx, &hc, http.MethodGet, path, query, nil)
}

// Raw sends a request and returns the answer's body undecoded (for
// /metrics and other non-JSON resources). Error answers become *APIError.
func (c *Client) Raw(ctx context.Context, method, path string, query url.Values, in any) ([]byte, error) {
	resp, err := c.send(ctx, c.http, method, path, query, in)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	return b, nil
}

// send makes an authenticated request with an optional JSON body. An
// answer of 300 or more is read, closed and returned as *APIError.
func (c *Client) send(ctx context.Context, hc *http.Client, method, path string, query url.Values, in any, extra ...http.Header) (*http.Response, error) {
	u := c.base.JoinPath(path)
	u.RawQuery = query.Encode()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	tok, err := c.bearer(ctx)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, h := range extra {
		for k, v := range h {
			req.Header[k] = v
		}
	}
	resp, err := hc.Do(req)
	if err != nil {
		if errors.Is(err, pki.ErrPinMismatch) {
			return nil, fmt.Errorf("%w: check --ca-fingerprint / the credentials file", err)
		}
		return nil, fmt.Errorf("cannot reach the manager at %s: %w", c.base, err)
	}
	if resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	e := &APIError{Status: resp.StatusCode}
	if json.Unmarshal(b, e) != nil || (e.Title == "" && e.Detail == "") {
		e.Title = strings.TrimSpace(string(b))
		if e.Title == "" {
			e.Title = resp.Status
		}
	}
	return nil, e
}

// refreshLocked renews the access token with the refresh token, saving the
// rotated pair so the old refresh token is never presented again.
func (c *Client) refreshLocked(ctx context.Context) error {
	tr, err := c.Grant(ctx, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {c.target.RefreshToken}, "client_id": {"yagura-ctl"}})
	if err != nil {
		return fmt.Errorf("%w; sign in again with `yagura ctl login`", err)
	}
	c.token = tr.AccessToken
	c.target.RefreshToken = tr.RefreshToken
	c.target.Expires = time.Now().Add(time.Duration(tr.ExpiresIn) * time.Second)
	if c.target.SavePath != "" {
		f, err := credentials.Load(c.target.SavePath)
		if err == nil {
			f.Token, f.RefreshToken, f.Expires = tr.AccessToken, tr.RefreshToken, c.target.Expires
			err = credentials.Save(c.target.SavePath, f)
		}
		if err != nil {
			return fmt.Errorf("save refreshed token: %w", err)
		}
	}
	return nil
}

// UserCredentialsPath is where `yagura ctl login` keeps its tokens.
func UserCredentialsPath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "yagura", "credentials.json"), nil
}

// Login signs in with a target's user and password and returns the access
// token (for programs and tests that drive the API directly).
func Login(ctx context.Context, t Target) (string, error) {
	c, err := NewClient(t)
	if err != nil {
		return "", err
	}
	return c.bearer(ctx)
}
