package api

import (
	"context"
	"encoding/json"
	"flag"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/go-cmp/cmp"

	"github.com/yagura/yagura/internal/auth"
)

// staticAuth knows bearer tokens and their principals.
type staticAuth map[string]auth.Principal

func (s staticAuth) Authenticate(_ context.Context, bearer string) (auth.Principal, bool) {
	p, ok := s[bearer]
	return p, ok
}

type pingOut struct {
	Body struct {
		Principal string `json:"principal"`
	}
}

func ping(ctx context.Context, _ *struct{}) (*pingOut, error) {
	out := &pingOut{}
	out.Body.Principal = Principal(ctx)
	return out, nil
}

func newTestAPI(t *testing.T) (*API, *http.ServeMux) {
	t.Helper()
	mux := http.NewServeMux()
	// The handlers under test never reach the store or the fleet.
	a := New(mux, Deps{Auth: staticAuth{
		"yak_good":    {Subject: "user:admin", Role: auth.RoleAdmin},
		"yak_auditor": {Subject: "user:audrey", Role: auth.RoleAuditor},
		"yak_op":      {Subject: "client:ops", Role: auth.RoleOperator},
	}, Log: slog.New(slog.DiscardHandler)})
	return a, mux
}

func TestRegisterRequiresPermission(t *testing.T) {
	a, _ := newTestAPI(t)
	defer func() {
		if recover() == nil {
			t.Error("registering an operation without a permission did not panic")
		}
	}()
	register(a, "", huma.Operation{OperationID: "open", Method: http.MethodGet, Path: "/api/v1/open"}, ping)
}

func TestAuthorize(t *testing.T) {
	a, mux := newTestAPI(t)
	register(a, PermCARead, huma.Operation{OperationID: "guarded", Method: http.MethodGet, Path: "/api/v1/guarded"}, ping)
	register(a, PermJobsWrite, huma.Operation{OperationID: "write", Method: http.MethodGet, Path: "/api/v1/write"}, ping)
	register(a, PermSettingsWrite, huma.Operation{OperationID: "settings-write", Method: http.MethodGet, Path: "/api/v1/settings-write"}, ping)
	// Registered around register(): denied to everyone.
	huma.Register(a.api, huma.Operation{OperationID: "undeclared", Method: http.MethodGet, Path: "/api/v1/undeclared"}, ping)

	tests := []struct {
		name, path, auth string
		status           int
	}{
		{"guarded, no credential", "/api/v1/guarded", "", http.StatusUnauthorized},
		{"guarded, wrong credential", "/api/v1/guarded", "Bearer yak_bad", http.StatusUnauthorized},
		{"guarded, other scheme", "/api/v1/guarded", "Basic yak_good", http.StatusUnauthorized},
		{"guarded, empty bearer", "/api/v1/guarded", "Bearer ", http.StatusUnauthorized},
		{"guarded, admin", "/api/v1/guarded", "Bearer yak_good", http.StatusOK},
		{"guarded, admin with spaces", "/api/v1/guarded", "Bearer  yak_good ", http.StatusOK},
		{"undeclared, admin", "/api/v1/undeclared", "Bearer yak_good", http.StatusForbidden},
		{"guarded, auditor may read the CA", "/api/v1/guarded", "Bearer yak_auditor", http.StatusOK},
		{"write, auditor refused", "/api/v1/write", "Bearer yak_auditor", http.StatusForbidden},
		{"write, operator allowed", "/api/v1/write", "Bearer yak_op", http.StatusOK},
		{"settings, operator refused", "/api/v1/settings-write", "Bearer yak_op", http.StatusForbidden},
		{"undeclared, no credential", "/api/v1/undeclared", "", http.StatusForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, tc.path, nil)
			if tc.auth != "" {
				r.Header.Set("Authorization", tc.auth)
			}
			w := httptest.NewRecorder()
			mux.ServeHTTP(w, r)
			if w.Code != tc.status {
				t.Fatalf("got %d %s, want %d", w.Code, w.Body, tc.status)
			}
			if w.Code == http.StatusOK {
				if tc.auth == "Bearer yak_good" || tc.auth == "Bearer  yak_good " {
					if want := `{"principal":"admin"}`; w.Body.String() != want+"\n" {
						t.Errorf("body %s, want %s", w.Body, want)
					}
				}
				return
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type %q", ct)
			}
			if w.Code == http.StatusUnauthorized && w.Header().Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
}

func TestDocsPage(t *testing.T) {
	_, mux := newTestAPI(t)
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/api/docs", nil))
	body := w.Body.String()
	if w.Code != 200 || !strings.Contains(body, "/api/v1/computers") || !strings.Contains(body, "computers:read") {
		t.Fatalf("docs page: %d %.300s", w.Code, body)
	}
	if strings.Contains(body, "<script") || strings.Contains(body, "https://") && !strings.Contains(body, "https://MANAGER") {
		t.Error("the docs page loads something from elsewhere")
	}
	if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP %q", csp)
	}
}

func TestPage(t *testing.T) {
	items := []int{1, 2, 3, 4, 5}
	var got []int
	q := PageQuery{Limit: 2}
	for i := 0; ; i++ {
		p, next, err := page(items, q)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p...)
		if next == "" {
			break
		}
		if i > 5 {
			t.Fatal("no end")
		}
		q.Cursor = next
	}
	if len(got) != 5 || got[4] != 5 {
		t.Fatalf("pages gave %v", got)
	}
	if _, _, err := page(items, PageQuery{Cursor: "!!", Limit: 2}); err == nil {
		t.Error("a forged cursor was accepted")
	}
}

var update = flag.Bool("update", false, "rewrite testdata/openapi.golden.json")

// TestOpenAPIGolden keeps the published document under review: any change
// to the API shows up as a diff of testdata/openapi.golden.json (go test
// ./internal/api -run OpenAPIGolden -update to accept it).
func TestOpenAPIGolden(t *testing.T) {
	a, _ := newTestAPI(t)
	got, err := json.MarshalIndent(a.OpenAPI(), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "openapi.golden.json")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append(got, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)+"\n"); diff != "" {
		t.Errorf("the OpenAPI document changed (-golden +now); review and run with -update:\n%s", diff)
	}
}

// TestListsArePaged checks every list operation declares cursor and limit:
// huma silently drops parameters of embedded unexported structs, which once
// left the older lists unpaged.
func TestListsArePaged(t *testing.T) {
	a, _ := newTestAPI(t)
	paged := map[string]bool{"list-computers": true, "list-firewall-rules": true, "list-firewall-lists": true}
	seen := 0
	for _, item := range a.OpenAPI().Paths {
		for _, op := range []*huma.Operation{item.Get} {
			if op == nil || !paged[op.OperationID] {
				continue
			}
			seen++
			var names []string
			for _, p := range op.Parameters {
				names = append(names, p.Name)
			}
			if !slices.Contains(names, "cursor") || !slices.Contains(names, "limit") {
				t.Errorf("%s takes %v, want cursor and limit", op.OperationID, names)
			}
		}
	}
	if seen != len(paged) {
		t.Errorf("found %d of the %d paged operations", seen, len(paged))
	}
}
