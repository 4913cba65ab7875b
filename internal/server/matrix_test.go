package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/api"
	"github.com/yagura/yagura/internal/auth"
	"github.com/yagura/yagura/internal/ctl"
	"github.com/yagura/yagura/internal/secret"
	"github.com/yagura/yagura/internal/server/servertest"
	"github.com/yagura/yagura/internal/store"
)

// matrix is the permission every API operation needs. A new operation must
// be added here, which makes its author decide who may call it.
var matrix = map[string]string{
	"get-me":                  api.PermMeRead,
	"list-computers":          api.PermComputersRead,
	"get-computer":            api.PermComputersRead,
	"update-computer":         api.PermComputersWrite,
	"deactivate-computer":     api.PermComputersWrite,
	"create-activation-token": api.PermTokensWrite,
	"list-activation-tokens":  api.PermTokensRead,
	"get-activation-token":    api.PermTokensRead,
	"revoke-activation-token": api.PermTokensWrite,
	"list-alerts":             api.PermAlertsRead,
	"get-alert":               api.PermAlertsRead,
	"clear-alert":             api.PermAlertsWrite,
	"get-settings":            api.PermSettingsRead,
	"update-settings":         api.PermSettingsWrite,
	"get-ca":                  api.PermCARead,
	"list-events":             api.PermEventsRead,
	"create-job":              api.PermJobsWrite,
	"list-jobs":               api.PermJobsRead,
	"get-job":                 api.PermJobsRead,
	"cancel-job":              api.PermJobsWrite,
	"download-file":           api.PermFilesRead,
	"list-users":              api.PermUsersRead,
	"create-user":             api.PermUsersWrite,
	"update-user":             api.PermUsersWrite,
	"list-api-clients":        api.PermClientsRead,
	"create-api-client":       api.PermClientsWrite,
	"revoke-api-client":       api.PermClientsWrite,
	"list-audit":              api.PermAuditRead,
	"export-audit":            api.PermAuditRead,
	"list-policies":           api.PermPoliciesRead,
	"create-policy":           api.PermPoliciesWrite,
	"get-policy":              api.PermPoliciesRead,
	"update-policy":           api.PermPoliciesWrite,
	"delete-policy":           api.PermPoliciesWrite,
	"get-effective-policy":    api.PermPoliciesRead,
	"get-computer-policy":     api.PermComputersRead,
	"update-computer-policy":  api.PermComputersWrite,
	"list-firewall-rules":     api.PermRulesRead,
	"create-firewall-rule":    api.PermRulesWrite,
	"get-firewall-rule":       api.PermRulesRead,
	"update-firewall-rule":    api.PermRulesWrite,
	"delete-firewall-rule":    api.PermRulesWrite,
	"import-firewall-rules":   api.PermRulesWrite,
	"export-firewall-rules":   api.PermRulesRead,
	"list-firewall-lists":     api.PermListsRead,
	"create-firewall-list":    api.PermListsWrite,
	"get-firewall-list":       api.PermListsRead,
	"update-firewall-list":    api.PermListsWrite,
	"delete-firewall-list":    api.PermListsWrite,
	"ack-alert":               api.PermAlertsWrite,
	"count-events":            api.PermEventsRead,
	"top-event-types":         api.PermEventsRead,
	"events-stats":            api.PermEventsRead,
	"export-events":           api.PermEventsRead,
	"list-alert-rules":        api.PermAlertRulesRead,
	"create-alert-rule":       api.PermAlertRulesWrite,
	"get-alert-rule":          api.PermAlertRulesRead,
	"update-alert-rule":       api.PermAlertRulesWrite,
	"delete-alert-rule":       api.PermAlertRulesWrite,
	"list-channels":           api.PermChannelsRead,
	"create-channel":          api.PermChannelsWrite,
	"get-channel":             api.PermChannelsRead,
	"update-channel":          api.PermChannelsWrite,
	"delete-channel":          api.PermChannelsWrite,
	"test-channel":            api.PermChannelsWrite,
	"list-notifications":      api.PermNotificationsRead,
	"retry-notification":      api.PermNotificationsWrite,
	"discard-notification":    api.PermNotificationsWrite,
	"list-deliveries":         api.PermNotificationsRead,
	"flows-top":               api.PermFlowsRead,
	"export-flows-top":        api.PermFlowsRead,
	"flows-series":            api.PermFlowsRead,
	"export-flows-series":     api.PermFlowsRead,
	"list-flows":              api.PermFlowsRead,
	"export-flows":            api.PermFlowsRead,
	"list-flow-exporters":     api.PermFlowsRead,
	"update-flow-exporter":    api.PermFlowsWrite,
	"flows-stats":             api.PermFlowsRead,
	"list-flow-profiles":      api.PermFlowsRead,
	"create-flow-profile":     api.PermFlowsWrite,
	"get-flow-profile":        api.PermFlowsRead,
	"update-flow-profile":     api.PermFlowsWrite,
	"delete-flow-profile":     api.PermFlowsWrite,
}

type docOperation struct {
	Method, Path, ID, Permission string
	HasBody, Bearer              bool // Bearer: the document declares bearer security
}

func operations(t *testing.T, m *manager) []docOperation {
	t.Helper()
	r := m.Request(t, http.MethodGet, "/api/v1/openapi.json", "", nil)
	if r.Status != http.StatusOK {
		t.Fatalf("openapi.json: %s", r)
	}
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(r.Body, &doc); err != nil {
		t.Fatal(err)
	}
	var out []docOperation
	for path, item := range doc.Paths {
		for method, raw := range item {
			if !slices.Contains([]string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}, method) {
				continue // path-level "parameters", "summary", …
			}
			var op struct {
				OperationID string                `json:"operationId"`
				RequestBody json.RawMessage       `json:"requestBody"`
				Permission  string                `json:"x-yagura-permission"`
				Security    []map[string][]string `json:"security"`
			}
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			bearer := slices.ContainsFunc(op.Security, func(s map[string][]string) bool { _, ok := s["bearer"]; return ok })
			out = append(out, docOperation{strings.ToUpper(method), path, op.OperationID, op.Permission, op.RequestBody != nil, bearer})
		}
	}
	return out
}

// TestAuthorizationMatrix calls every operation of the OpenAPI document as
// nobody, with an expired and a revoked token, and as each role; every
// answer must match the operation's permission.
func TestAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	m := newManager(t)
	ctx := t.Context()
	login := func(user, role string) string {
		m.Call(t, http.MethodPost, "/api/v1/users", api.UserCreate{Username: user, Role: role, Password: "a long enough password"}, http.StatusCreated, nil)
		tok, err := ctl.Login(ctx, ctl.Target{URL: m.URL, CAFingerprint: m.CAFingerprint, User: user, Password: "a long enough password"})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	roles := map[string]string{auth.RoleAdmin: m.Token, auth.RoleOperator: login("olivia", auth.RoleOperator), auth.RoleAuditor: login("audrey", auth.RoleAuditor)}

	// An expired and a revoked admin token.
	expired, hash, _ := secret.New("yaa")
	if err := m.Store.SaveOAuthToken(ctx, store.OAuthToken{Hash: hash, Kind: auth.Access, Family: "expired", Subject: "user:admin", Role: auth.RoleAdmin,
		CreatedAt: time.Now().Add(-48 * time.Hour), ExpiresAt: time.Now().Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	revoked := servertest.AdminToken(t, m.Info)
	if r := m.form(t, "/oauth/revoke", "token="+revoked); r.Status != http.StatusOK {
		t.Fatalf("revoke: %s", r)
	}

	ops := operations(t, m)
	seen := map[string]bool{}
	param := regexp.MustCompile(`\{[^}]+\}`)
	for _, op := range ops {
		seen[op.ID] = true
		perm, ok := matrix[op.ID]
		if !ok {
			t.Errorf("operation %s (%s %s) is not in the authorization matrix", op.ID, op.Method, op.Path)
			continue
		}
		if op.Permission != perm {
			t.Errorf("%s: the document says %q, the matrix %q", op.ID, op.Permission, perm)
		}
		url := param.ReplaceAllString(op.Path, "0191c2d0-dead-7000-8000-000000000000")
		var body any
		if op.HasBody {
			body = []byte("{}")
		}
		t.Run(op.ID, func(t *testing.T) {
			for name, bearer := range map[string]string{"no token": "", "expired token": expired, "revoked token": revoked} {
				if r := m.Request(t, op.Method, url, bearer, body); r.Status != http.StatusUnauthorized {
					t.Errorf("%s: got %s, want 401", name, r)
				}
			}
			// Admin last: its calls may change state the others' checks
			// do not depend on, but keep the refusals first.
			for _, role := range []string{auth.RoleAuditor, auth.RoleOperator, auth.RoleAdmin} {
				r := m.Request(t, op.Method, url, roles[role], body)
				switch allowed := auth.Allowed(role, perm); {
				case allowed && (r.Status == http.StatusUnauthorized || r.Status == http.StatusForbidden || r.Status >= 500):
					t.Errorf("%s (may %s): got %s", role, perm, r)
				case !allowed && r.Status != http.StatusForbidden:
					t.Errorf("%s (may not %s): got %s, want 403", role, perm, r)
				}
			}
		})
	}
	for id := range matrix {
		if !seen[id] {
			t.Errorf("the matrix lists %s, which the document does not have", id)
		}
	}
}

// TestRoutesMatchDocument: every route the server serves under /api is an
// operation of the document (and so passes the permission check), and every
// operation is served.
func TestRoutesMatchDocument(t *testing.T) {
	t.Parallel()
	m := newManager(t)
	ops := operations(t, m)
	inDoc := map[string]bool{}
	for _, op := range ops {
		inDoc[op.Method+" "+op.Path] = true
	}
	served := map[string]bool{}
	for _, p := range m.Routes {
		served[p] = true
		method, path, _ := strings.Cut(p, " ")
		if !strings.HasPrefix(path, "/api/") {
			continue
		}
		// huma's own document and schema routes are public by design.
		if strings.HasPrefix(path, "/api/v1/openapi") || strings.HasPrefix(path, "/api/v1/schemas") || strings.HasPrefix(path, "/api/docs") {
			continue
		}
		if !inDoc[method+" "+path] {
			t.Errorf("%s is served but not in the OpenAPI document", p)
		}
	}
	for k := range inDoc {
		if !served[k] {
			t.Errorf("%s is in the document but not served", k)
		}
	}
	if len(inDoc) < 25 {
		t.Errorf("only %d operations in the document", len(inDoc))
	}
}

// form posts an urlencoded form without credentials (the OAuth endpoints).
func (m *manager) form(t *testing.T, path, form string) servertest.Response {
	t.Helper()
	resp, err := m.Client.Post(m.URL+path, "application/x-www-form-urlencoded", strings.NewReader(form))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b []byte
	b, _ = io.ReadAll(resp.Body)
	return servertest.Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// TestConcurrentUpdate: two administrators change the settings from the
// same version at once; exactly one wins, the other gets 412.
func TestConcurrentUpdate(t *testing.T) {
	t.Parallel()
	m := newManager(t)
	r := m.Request(t, http.MethodGet, "/api/v1/settings", m.Token, nil)
	tag := r.Header.Get("ETag")
	if r.Status != http.StatusOK || tag == "" {
		t.Fatalf("GET settings: %s, ETag %q", r, tag)
	}
	results := make(chan int, 2)
	for _, interval := range []string{"30s", "45s"} {
		go func() {
			req, _ := http.NewRequest(http.MethodPatch, m.URL+"/api/v1/settings", strings.NewReader(`{"heartbeat.interval":"`+interval+`"}`))
			req.Header.Set("Authorization", "Bearer "+m.Token)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("If-Match", tag)
			resp, err := m.Client.Do(req)
			if err != nil {
				results <- 0
				return
			}
			resp.Body.Close()
			results <- resp.StatusCode
		}()
	}
	got := []int{<-results, <-results}
	slices.Sort(got)
	if got[0] != http.StatusOK || got[1] != http.StatusPreconditionFailed {
		t.Fatalf("statuses %v, want one 200 and one 412", got)
	}
	// The stale tag stays refused; the new one works.
	if r := m.requestIfMatch(t, tag, `{"heartbeat.interval":"20s"}`); r.Status != http.StatusPreconditionFailed {
		t.Errorf("stale ETag: %s", r)
	}
	fresh := m.Request(t, http.MethodGet, "/api/v1/settings", m.Token, nil).Header.Get("ETag")
	if fresh == tag {
		t.Fatal("ETag did not change")
	}
	if r := m.requestIfMatch(t, fresh, `{"heartbeat.interval":"20s"}`); r.Status != http.StatusOK {
		t.Errorf("fresh ETag: %s", r)
	}
}

func (m *manager) requestIfMatch(t *testing.T, tag, body string) servertest.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPatch, m.URL+"/api/v1/settings", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+m.Token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("If-Match", tag)
	resp, err := m.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return servertest.Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// TestAccountSafety: refused passwords are not echoed; demoting an admin
// revokes the API clients they made; a demoted user's token loses the role
// at once.
func TestAccountSafety(t *testing.T) {
	t.Parallel()
	m := newManager(t)
	r := m.Request(t, http.MethodPost, "/api/v1/users", m.Token, api.UserCreate{Username: "eve", Role: auth.RoleAdmin, Password: "tooShort1"})
	if r.Status != http.StatusUnprocessableEntity || strings.Contains(string(r.Body), "tooShort1") {
		t.Fatalf("short password: %s", r)
	}
	m.Call(t, http.MethodPost, "/api/v1/users", api.UserCreate{Username: "eve", Role: auth.RoleAdmin, Password: "a long enough password"}, http.StatusCreated, nil)
	eve, err := ctl.Login(t.Context(), ctl.Target{URL: m.URL, CAFingerprint: m.CAFingerprint, User: "eve", Password: "a long enough password"})
	if err != nil {
		t.Fatal(err)
	}
	var cl api.APIClient
	r = m.Request(t, http.MethodPost, "/api/v1/api-clients", eve, api.APIClientCreate{Role: auth.RoleAdmin})
	if r.Status != http.StatusCreated || json.Unmarshal(r.Body, &cl) != nil {
		t.Fatalf("eve's client: %s", r)
	}
	role := auth.RoleAuditor
	m.Call(t, http.MethodPatch, "/api/v1/users/eve", api.UserUpdate{Role: &role}, http.StatusOK, nil)
	if r := m.Request(t, http.MethodGet, "/api/v1/users", eve, nil); r.Status != http.StatusUnauthorized {
		t.Errorf("eve's token after demotion: %s, want 401", r)
	}
	if r := m.form(t, "/oauth/token", "grant_type=client_credentials&client_id="+cl.ID+"&client_secret="+cl.Secret); r.Status != http.StatusUnauthorized {
		t.Errorf("eve's API client after her demotion: %s, want 401", r)
	}
}
