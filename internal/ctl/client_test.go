package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/yagura/yagura/internal/credentials"
	"github.com/yagura/yagura/internal/pki"
)

const (
	fpA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	fpB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	fpC = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
)

// systemCredentials is the last default file ResolveTarget searches. The
// tests cannot move it, so they insist that it is absent.
const systemCredentials = "/var/lib/yagura/admin-credentials.json"

// credLocation names where a test puts a credentials file; the test maps
// it to a path under its temporary folders.
type credLocation string

const (
	locExplicit credLocation = "explicit" // given with --credentials
	locOther    credLocation = "other"    // named by YAGURA_CREDENTIALS
	locUser     credLocation = "user"     // $XDG_CONFIG_HOME/yagura/credentials.json
	locDev      credLocation = "dev"      // ./yagura-data/dev-credentials.json
)

type credFile struct {
	credentials.File
	mode os.FileMode // 0600 when zero
}

func TestResolveTarget(t *testing.T) {
	if _, err := os.Stat(systemCredentials); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s must not exist for this test (it is searched last and would change the results): stat: %v", systemCredentials, err)
	}
	type flags struct{ url, token, fp string }
	nothing := "no manager to talk to: missing the manager URL (--server or YAGURA_SERVER), " +
		"a credential (`yagura ctl login`, --token or YAGURA_TOKEN), " +
		"the manager CA fingerprint (--ca-fingerprint or YAGURA_CA_FINGERPRINT); " +
		"or point --credentials at the admin-credentials.json (dev-credentials.json for `yagura dev`) in the manager's data folder"
	tests := []struct {
		name     string
		flags    flags
		credFlag bool              // pass the locExplicit file as --credentials
		env      map[string]string // "$other" in YAGURA_CREDENTIALS is the locOther file
		files    map[credLocation]credFile
		// want.From is a credLocation for targets read from a file.
		want      Target
		wantErr   []string
		wantNot   []string // must not appear in the error
		wantErrIs error
	}{
		{
			name:  "flags",
			flags: flags{"https://flag:8443", "flag-token", fpA},
			want:  Target{URL: "https://flag:8443", Token: "flag-token", CAFingerprint: fpA, From: "flags"},
		},
		{
			name:  "complete flags do not read default files",
			flags: flags{"https://flag:8443", "flag-token", fpA},
			files: map[credLocation]credFile{
				locDev: {File: credentials.File{URL: "https://dev:8443", Token: "dev-token"}, mode: 0o644},
			},
			want: Target{URL: "https://flag:8443", Token: "flag-token", CAFingerprint: fpA, From: "flags"},
		},
		{
			name:  "flags beat environment",
			flags: flags{"https://flag:8443", "flag-token", fpA},
			env: map[string]string{
				"YAGURA_SERVER": "https://env:8443", "YAGURA_TOKEN": "env-token", "YAGURA_CA_FINGERPRINT": fpB,
			},
			want: Target{URL: "https://flag:8443", Token: "flag-token", CAFingerprint: fpA, From: "flags"},
		},
		{
			name: "environment",
			env: map[string]string{
				"YAGURA_SERVER": "https://env:8443", "YAGURA_TOKEN": "env-token", "YAGURA_CA_FINGERPRINT": fpB,
			},
			want: Target{URL: "https://env:8443", Token: "env-token", CAFingerprint: fpB, From: "environment"},
		},
		{
			name:  "each flag beats its environment variable",
			flags: flags{token: "flag-token"},
			env: map[string]string{
				"YAGURA_SERVER": "https://env:8443", "YAGURA_TOKEN": "env-token", "YAGURA_CA_FINGERPRINT": fpB,
			},
			want: Target{URL: "https://env:8443", Token: "flag-token", CAFingerprint: fpB, From: "environment"},
		},
		{
			name:     "environment beats the credentials file",
			credFlag: true,
			env:      map[string]string{"YAGURA_TOKEN": "env-token"},
			files: map[credLocation]credFile{
				locExplicit: {File: credentials.File{URL: "https://file:8443", Token: "file-token", CAFingerprint: fpC}},
			},
			want: Target{URL: "https://file:8443", Token: "env-token", CAFingerprint: fpC, From: string(locExplicit)},
		},
		{
			name:     "flags beat the credentials file",
			flags:    flags{url: "https://flag:8443"},
			credFlag: true,
			files: map[credLocation]credFile{
				locExplicit: {File: credentials.File{URL: "https://file:8443", Token: "file-token", CAFingerprint: fpC}},
			},
			want: Target{URL: "https://flag:8443", Token: "file-token", CAFingerprint: fpC, From: "flags"},
		},
		{
			name: "YAGURA_CREDENTIALS",
			env:  map[string]string{"YAGURA_CREDENTIALS": "$other"},
			files: map[credLocation]credFile{
				locOther: {File: credentials.File{URL: "https://other:8443", Token: "other-token", CAFingerprint: fpB}},
			},
			want: Target{URL: "https://other:8443", Token: "other-token", CAFingerprint: fpB, From: string(locOther)},
		},
		{
			name:     "--credentials beats YAGURA_CREDENTIALS",
			credFlag: true,
			env:      map[string]string{"YAGURA_CREDENTIALS": "$other"},
			files: map[credLocation]credFile{
				locExplicit: {File: credentials.File{URL: "https://file:8443", Token: "file-token", CAFingerprint: fpC}},
				locOther:    {File: credentials.File{URL: "https://other:8443", Token: "other-token", CAFingerprint: fpB}},
			},
			want: Target{URL: "https://file:8443", Token: "file-token", CAFingerprint: fpC, From: string(locExplicit)},
		},
		{
			name:     "the credentials file beats default files",
			credFlag: true,
			files: map[credLocation]credFile{
				locExplicit: {File: credentials.File{URL: "https://file:8443", Token: "file-token", CAFingerprint: fpC}},
				locUser:     {File: credentials.File{URL: "https://user:8443", Token: "user-token", CAFingerprint: fpA}},
				locDev:      {File: credentials.File{URL: "https://dev:8443", Token: "dev-token", CAFingerprint: fpB}},
			},
			want: Target{URL: "https://file:8443", Token: "file-token", CAFingerprint: fpC, From: string(locExplicit)},
		},
		{
			name:     "a named credentials file is not completed from default files",
			credFlag: true,
			files: map[credLocation]credFile{
				locExplicit: {File: credentials.File{URL: "https://file:8443", Token: "file-token"}},
				locDev:      {File: credentials.File{URL: "https://dev:8443", Token: "dev-token", CAFingerprint: fpB}},
			},
			wantErr: []string{"missing the manager CA fingerprint (--ca-fingerprint or YAGURA_CA_FINGERPRINT);"},
			wantNot: []string{"manager URL", "a credential"},
		},
		{
			name:      "a named credentials file that does not exist",
			credFlag:  true,
			files:     map[credLocation]credFile{locDev: {File: credentials.File{URL: "https://dev:8443", Token: "dev-token", CAFingerprint: fpB}}},
			wantErr:   []string{"credentials: "},
			wantErrIs: fs.ErrNotExist,
		},
		{
			name: "user config file",
			files: map[credLocation]credFile{
				locUser: {File: credentials.File{URL: "https://user:8443", Token: "user-token", CAFingerprint: fpA}},
			},
			want: Target{URL: "https://user:8443", Token: "user-token", CAFingerprint: fpA, From: string(locUser)},
		},
		{
			name: "user config file beats the dev file",
			files: map[credLocation]credFile{
				locUser: {File: credentials.File{URL: "https://user:8443", Token: "user-token", CAFingerprint: fpA}},
				locDev:  {File: credentials.File{URL: "https://dev:8443", Token: "dev-token", CAFingerprint: fpB}},
			},
			want: Target{URL: "https://user:8443", Token: "user-token", CAFingerprint: fpA, From: string(locUser)},
		},
		{
			name: "dev file in the working directory",
			files: map[credLocation]credFile{
				locDev: {File: credentials.File{URL: "https://dev:8443", Token: "dev-token", CAFingerprint: fpB}},
			},
			want: Target{URL: "https://dev:8443", Token: "dev-token", CAFingerprint: fpB, From: string(locDev)},
		},
		{
			// A file found by searching names another manager: its pin
			// must not be used for the one the flags name.
			name:  "a default file for another manager does not complete flags",
			flags: flags{url: "https://flag:8443"},
			env:   map[string]string{"YAGURA_TOKEN": "env-token"},
			files: map[credLocation]credFile{
				locDev: {File: credentials.File{URL: "https://dev:8443", Token: "dev-token", CAFingerprint: fpB}},
			},
			wantErr: []string{"missing the manager CA fingerprint"},
		},
		{
			// A token from the environment is never sent to a manager
			// that only a file in the working directory names.
			name: "a default file does not choose where an environment token goes",
			env:  map[string]string{"YAGURA_TOKEN": "env-token"},
			files: map[credLocation]credFile{
				locDev: {File: credentials.File{URL: "https://dev:8443", Token: "dev-token", CAFingerprint: fpB}},
			},
			wantErr: []string{"missing the manager URL", "missing", "fingerprint"},
		},
		{
			name:  "a default file for the same manager completes flags",
			flags: flags{url: "https://dev:8443"},
			files: map[credLocation]credFile{
				locDev: {File: credentials.File{URL: "https://dev:8443", Token: "dev-token", CAFingerprint: fpB}},
			},
			want: Target{URL: "https://dev:8443", Token: "dev-token", CAFingerprint: fpB, From: "flags"},
		},
		{
			name: "a default file readable by others is refused",
			files: map[credLocation]credFile{
				locDev: {File: credentials.File{URL: "https://dev:8443", Token: "dev-token", CAFingerprint: fpB}, mode: 0o644},
			},
			wantErr: []string{"credentials: ", "dev-credentials.json", "chmod 600"},
		},
		{
			name:    "nothing",
			wantErr: []string{nothing},
		},
		{
			name:    "only the URL missing",
			env:     map[string]string{"YAGURA_TOKEN": "env-token", "YAGURA_CA_FINGERPRINT": fpB},
			wantErr: []string{"missing the manager URL (--server or YAGURA_SERVER);"},
			wantNot: []string{"a credential", "CA fingerprint ("},
		},
		{
			name:    "token and fingerprint missing",
			flags:   flags{url: "https://flag:8443"},
			wantErr: []string{"missing a credential (`yagura ctl login`, --token or YAGURA_TOKEN), the manager CA fingerprint (--ca-fingerprint or YAGURA_CA_FINGERPRINT);"},
			wantNot: []string{"manager URL"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The user's own configuration and working directory must
			// not leak in: both are empty temporary folders.
			t.Setenv("HOME", t.TempDir())
			xdg := t.TempDir()
			t.Setenv("XDG_CONFIG_HOME", xdg)
			work := t.TempDir()
			t.Chdir(work)
			elsewhere := t.TempDir()
			paths := map[credLocation]string{
				locExplicit: filepath.Join(elsewhere, "admin-credentials.json"),
				locOther:    filepath.Join(elsewhere, "other-credentials.json"),
				locUser:     filepath.Join(xdg, "yagura", "credentials.json"),
				// Relative: ResolveTarget reports it as it found it.
				locDev: filepath.Join("yagura-data", "dev-credentials.json"),
			}
			for loc, f := range tt.files {
				writeCredentials(t, paths[loc], f)
			}
			env := map[string]string{}
			for k, v := range tt.env {
				env[k] = strings.ReplaceAll(v, "$other", paths[locOther])
			}
			getenv := func(k string) string { return env[k] }
			credFlag := ""
			if tt.credFlag {
				credFlag = paths[locExplicit]
			}

			got, err := ResolveTarget(tt.flags.url, tt.flags.token, tt.flags.fp, credFlag, getenv)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("ResolveTarget = %+v; want an error", got)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				for _, w := range tt.wantNot {
					if strings.Contains(err.Error(), w) {
						t.Errorf("error %q contains %q", err, w)
					}
				}
				if tt.wantErrIs != nil && !errors.Is(err, tt.wantErrIs) {
					t.Errorf("error %q does not wrap %v", err, tt.wantErrIs)
				}
				return
			}
			if err != nil {
				t.Fatalf("ResolveTarget: %v", err)
			}
			want := tt.want
			if p, ok := paths[credLocation(want.From)]; ok {
				want.From = p
			}
			if diff := cmp.Diff(got, want); diff != "" {
				t.Errorf("ResolveTarget (-got +want):\n%s", diff)
			}
		})
	}
}

func writeCredentials(t *testing.T, path string, f credFile) {
	t.Helper()
	if err := credentials.Save(path, &f.File); err != nil {
		t.Fatal(err)
	}
	if f.mode != 0 {
		if err := os.Chmod(path, f.mode); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAPIErrorError(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{
			name:   "detail",
			status: http.StatusNotFound,
			body:   `{"title":"Not Found","detail":"no computer \"web01\""}`,
			want:   `no computer "web01" (HTTP 404)`,
		},
		{
			name:   "title when there is no detail",
			status: http.StatusInternalServerError,
			body:   `{"title":"Internal Server Error"}`,
			want:   "Internal Server Error (HTTP 500)",
		},
		{
			name:   "per-field errors",
			status: http.StatusUnprocessableEntity,
			body: `{"title":"Unprocessable Entity","detail":"validation failed","errors":[
				{"message":"expected number >= 1","location":"body.max_uses","value":0},
				{"message":"expected duration","location":"body.expires","value":"soon"},
				{"message":"required","location":"body.description"}]}`,
			want: "validation failed (HTTP 422)\n" +
				"  body.max_uses: expected number >= 1 (got 0)\n" +
				"  body.expires: expected duration (got soon)\n" +
				"  body.description: required",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &APIError{Status: tt.status}
			if err := json.Unmarshal([]byte(tt.body), e); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(e.Error(), tt.want); diff != "" {
				t.Errorf("Error() (-got +want):\n%s", diff)
			}
		})
	}
}

// seenRequest is what the test server saw of a request.
type seenRequest struct {
	Method, Path, Query   string
	Authorization, Accept string
	ContentType, Body     string
}

// newTestManager starts a TLS server answering with answer and returns a
// target that pins its certificate, and the requests it sees.
func newTestManager(t *testing.T, answer http.HandlerFunc) (Target, <-chan seenRequest) {
	t.Helper()
	seen := make(chan seenRequest, 1)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen <- seenRequest{
			Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery,
			Authorization: r.Header.Get("Authorization"), Accept: r.Header.Get("Accept"),
			ContentType: r.Header.Get("Content-Type"), Body: string(b),
		}
		answer(w, r)
	}))
	t.Cleanup(srv.Close)
	return Target{
		URL:           srv.URL, // https://127.0.0.1:PORT, a name the certificate holds
		Token:         "test-token",
		CAFingerprint: pki.Fingerprint(srv.Certificate()),
		From:          "test",
	}, seen
}

func answerJSON(status int, contentType, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if contentType != "" {
			w.Header().Set("Content-Type", contentType)
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

func TestClientDo(t *testing.T) {
	type thing struct {
		Name  string `json:"name"`
		Count int    `json:"count"`
	}
	tests := []struct {
		name    string
		answer  http.HandlerFunc
		method  string
		path    string
		query   url.Values
		in      any
		wantReq seenRequest
		wantOut *thing
		// wantAPIErr is the error as an *APIError, formatted.
		wantAPIErr string
		wantErr    string
	}{
		{
			name:    "GET decodes the answer",
			answer:  answerJSON(http.StatusOK, "application/json", `{"name":"web01","count":3}`),
			method:  http.MethodGet,
			path:    "/api/v1/computers/" + url.PathEscape("web 01/a"),
			query:   url.Values{"state": {"all"}},
			wantReq: seenRequest{Method: "GET", Path: "/api/v1/computers/web%2001%2Fa", Query: "state=all", Authorization: "Bearer test-token", Accept: "application/json"},
			wantOut: &thing{Name: "web01", Count: 3},
		},
		{
			name:    "POST sends JSON",
			answer:  answerJSON(http.StatusCreated, "application/json", `{"name":"tok","count":50}`),
			method:  http.MethodPost,
			path:    "/api/v1/activation-tokens",
			in:      map[string]any{"max_uses": 50},
			wantReq: seenRequest{Method: "POST", Path: "/api/v1/activation-tokens", Authorization: "Bearer test-token", Accept: "application/json", ContentType: "application/json", Body: `{"max_uses":50}`},
			wantOut: &thing{Name: "tok", Count: 50},
		},
		{
			name:    "no content",
			answer:  answerJSON(http.StatusNoContent, "", ""),
			method:  http.MethodDelete,
			path:    "/api/v1/x",
			wantReq: seenRequest{Method: "DELETE", Path: "/api/v1/x", Authorization: "Bearer test-token", Accept: "application/json"},
			wantOut: &thing{},
		},
		{
			name: "problem",
			answer: answerJSON(http.StatusUnprocessableEntity, "application/problem+json",
				`{"title":"Unprocessable Entity","status":422,"detail":"validation failed","errors":[{"message":"expected number >= 1","location":"body.max_uses","value":0}]}`),
			method:     http.MethodPost,
			path:       "/api/v1/activation-tokens",
			in:         map[string]any{"max_uses": 0},
			wantReq:    seenRequest{Method: "POST", Path: "/api/v1/activation-tokens", Authorization: "Bearer test-token", Accept: "application/json", ContentType: "application/json", Body: `{"max_uses":0}`},
			wantAPIErr: "validation failed (HTTP 422)\n  body.max_uses: expected number >= 1 (got 0)",
		},
		{
			name:       "plain text error",
			answer:     answerJSON(http.StatusBadGateway, "text/plain", "upstream down\n"),
			method:     http.MethodGet,
			path:       "/api/v1/x",
			wantReq:    seenRequest{Method: "GET", Path: "/api/v1/x", Authorization: "Bearer test-token", Accept: "application/json"},
			wantAPIErr: "upstream down (HTTP 502)",
		},
		{
			name:       "empty error",
			answer:     answerJSON(http.StatusForbidden, "", ""),
			method:     http.MethodGet,
			path:       "/api/v1/x",
			wantReq:    seenRequest{Method: "GET", Path: "/api/v1/x", Authorization: "Bearer test-token", Accept: "application/json"},
			wantAPIErr: "403 Forbidden (HTTP 403)",
		},
		{
			name:    "answer that is not JSON",
			answer:  answerJSON(http.StatusOK, "text/html", "<html>"),
			method:  http.MethodGet,
			path:    "/api/v1/x",
			wantReq: seenRequest{Method: "GET", Path: "/api/v1/x", Authorization: "Bearer test-token", Accept: "application/json"},
			wantErr: "decode answer from /api/v1/x: ",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target, seen := newTestManager(t, tt.answer)
			c, err := NewClient(target)
			if err != nil {
				t.Fatalf("NewClient: %v", err)
			}
			out := &thing{}
			err = c.Do(context.Background(), tt.method, tt.path, tt.query, tt.in, out)

			select {
			case req := <-seen:
				if diff := cmp.Diff(req, tt.wantReq); diff != "" {
					t.Errorf("request (-got +want):\n%s", diff)
				}
			default:
				t.Errorf("the server saw no request (Do: %v)", err)
			}
			switch {
			case tt.wantAPIErr != "":
				var apiErr *APIError
				if !errors.As(err, &apiErr) {
					t.Fatalf("Do error = %v (%T); want an *APIError", err, err)
				}
				if diff := cmp.Diff(apiErr.Error(), tt.wantAPIErr); diff != "" {
					t.Errorf("APIError (-got +want):\n%s", diff)
				}
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("Do error = %v; want one containing %q", err, tt.wantErr)
				}
			default:
				if err != nil {
					t.Fatalf("Do: %v", err)
				}
				if diff := cmp.Diff(out, tt.wantOut); diff != "" {
					t.Errorf("answer (-got +want):\n%s", diff)
				}
			}
		})
	}
}

func TestClientProblemDetail(t *testing.T) {
	target, _ := newTestManager(t, answerJSON(http.StatusNotFound, "application/problem+json",
		`{"title":"Not Found","status":404,"detail":"no activation token abc"}`))
	c, err := NewClient(target)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Do(context.Background(), http.MethodGet, "/api/v1/activation-tokens/abc", nil, nil, nil)
	var apiErr *APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("Do error = %v (%T); want an *APIError", err, err)
	}
	if apiErr.Status != http.StatusNotFound || apiErr.Title != "Not Found" || apiErr.Detail != "no activation token abc" {
		t.Errorf("APIError = %+v; want status 404, title Not Found, detail %q", apiErr, "no activation token abc")
	}
}

func TestClientWrongFingerprint(t *testing.T) {
	target, seen := newTestManager(t, answerJSON(http.StatusOK, "application/json", `{}`))
	target.CAFingerprint = fpA
	c, err := NewClient(target)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Do(context.Background(), http.MethodGet, "/api/v1/x", nil, nil, nil)
	if !errors.Is(err, pki.ErrPinMismatch) {
		t.Fatalf("Do error = %v; want one wrapping pki.ErrPinMismatch", err)
	}
	if !strings.Contains(err.Error(), "check --ca-fingerprint") {
		t.Errorf("Do error %q does not say what to check", err)
	}
	select {
	case req := <-seen:
		t.Errorf("the server saw a request despite the wrong pin: %+v", req)
	default:
	}
}

func TestNewClientRejects(t *testing.T) {
	tests := []struct {
		name    string
		target  Target
		wantErr string
	}{
		{"http", Target{URL: "http://127.0.0.1:8443", CAFingerprint: fpA, From: "flags"}, `manager URL "http://127.0.0.1:8443" (from flags): want https://HOST:PORT`},
		{"no host", Target{URL: "https://", CAFingerprint: fpA, From: "flags"}, "want https://HOST:PORT"},
		{"not a URL", Target{URL: "https://[::1", CAFingerprint: fpA, From: "environment"}, "(from environment): want https://HOST:PORT"},
		{"bad fingerprint", Target{URL: "https://127.0.0.1:8443", CAFingerprint: "abc"}, "want a SHA-256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewClient(tt.target)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("NewClient error = %v; want one containing %q", err, tt.wantErr)
			}
		})
	}
}
