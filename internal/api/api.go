// Package api provides the manager's REST API under /api/v1: computers,
// activation tokens, alerts, settings and the CA, described by an OpenAPI
// 3.1 document generated from the code (huma).
//
// Every operation declares the permission it needs; registering one without
// a permission panics, so an unguarded route cannot ship. Callers present an
// OAuth2 bearer token (POST /oauth/token); its role (admin, operator,
// auditor) must hold the operation's permission.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"

	"github.com/yagura/yagura/internal/auth"
	"github.com/yagura/yagura/internal/fleet"
	"github.com/yagura/yagura/internal/jobs"
	"github.com/yagura/yagura/internal/settings"
	"github.com/yagura/yagura/internal/store"
	"github.com/yagura/yagura/internal/telemetry"
)

// Store is what the API needs from the state store.
type Store interface {
	ListComputers(ctx context.Context) ([]store.Computer, error)
	GetComputer(ctx context.Context, id string) (store.Computer, error)
	DeactivateComputer(ctx context.Context, id string, at time.Time) (store.Computer, error)
	SetComputerCommunication(ctx context.Context, id, mode string) (store.Computer, error)
	CreateToken(ctx context.Context, t store.Token) error
	ListTokens(ctx context.Context) ([]store.Token, error)
	GetToken(ctx context.Context, id string) (store.Token, error)
	RevokeToken(ctx context.Context, id string, at time.Time) (store.Token, error)
	ListAlerts(ctx context.Context, f store.AlertFilter) ([]store.Alert, error)
	GetAlert(ctx context.Context, id string) (store.Alert, error)
	ClearAlert(ctx context.Context, id string, at time.Time, by string) (store.Alert, error)
	AckAlert(ctx context.Context, id string, at time.Time, by string) (store.Alert, error)
	NotificationStore
	GetJob(ctx context.Context, id string) (store.Job, error)
	ListUsers(ctx context.Context) ([]store.User, error)
	UserByName(ctx context.Context, name string) (store.User, error)
	CreateUser(ctx context.Context, u store.User) error
	UpdateUser(ctx context.Context, u store.User) error
	RevokeSubjectTokens(ctx context.Context, subject string, at time.Time) error
	ListAPIClients(ctx context.Context) ([]store.APIClient, error)
	CreateAPIClient(ctx context.Context, c store.APIClient) error
	RevokeAPIClient(ctx context.Context, id string, at time.Time) error
	AppendAudit(ctx context.Context, e store.AuditEntry) error
	ListAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditEntry, error)
	ListJobs(ctx context.Context, limit int) ([]store.Job, error)
	JobTargets(ctx context.Context, jobID string) ([]store.JobTarget, error)
	Settings(ctx context.Context) (map[string]string, error)
	PutSettings(ctx context.Context, kv map[string]string) error
	UpdateSettings(ctx context.Context, ifVersion string, kv map[string]string) (string, error)
	FirewallStore
	FlowStateStore
}

// Fleet is the live view of computers.
type Fleet interface {
	Live(id string, now time.Time) (fleet.Live, bool)
	Add(c store.Computer)
	Deactivate(id string)
	Settings() settings.Settings
	SetSettings(s settings.Settings)
}

// Jobs is the job service.
type Jobs interface {
	Create(ctx context.Context, r jobs.CreateRequest, now time.Time) (store.Job, []string, error)
	Cancel(ctx context.Context, id string, now time.Time) (store.Job, error)
	OpenFile(ctx context.Context, id string) (store.File, *os.File, error)
}

// Authenticator maps a bearer credential to a principal.
type Authenticator interface {
	Authenticate(ctx context.Context, bearer string) (auth.Principal, bool)
}

// Deps are the API's collaborators.
type Deps struct {
	Store         Store
	Fleet         Fleet
	Jobs          Jobs
	Policies      PolicyStore
	Rollout       Rollout
	Telemetry     telemetry.Store
	Notifications Notifications
	// Flows is the flow store; nil when flow collection is disabled, and
	// every flow operation answers 503 saying how to enable it.
	Flows FlowStore
	// FlowCollector is this node's collector, for exporters' live status;
	// nil on a node without one (the stored exporters are still listed).
	FlowCollector FlowCollector
	Auth          Authenticator
	CAFingerprint string
	CAPEM         string
	Version       string
	Log           *slog.Logger
	Now           func() time.Time
}

// API is the REST API.
type API struct {
	d   Deps
	api huma.API
}

// Permissions. Issue #4 maps them onto roles.
const (
	PermComputersRead  = "computers:read"
	PermComputersWrite = "computers:write"
	PermTokensRead     = "tokens:read"
	PermTokensWrite    = "tokens:write"
	PermAlertsRead     = "alerts:read"
	PermAlertsWrite    = "alerts:write"
	PermSettingsRead   = "settings:read"
	PermSettingsWrite  = "settings:write"
	PermCARead         = "ca:read"
	PermEventsRead     = "events:read"
	PermJobsRead       = "jobs:read"
	PermJobsWrite      = "jobs:write"
	PermFilesRead      = "files:read"
	PermUsersRead      = "users:read"
	PermUsersWrite     = "users:write"
	PermClientsRead    = "clients:read"
	PermClientsWrite   = "clients:write"
	PermAuditRead      = "audit:read"
	PermMeRead         = "me:read"
	PermPoliciesRead   = "policies:read"
	PermPoliciesWrite  = "policies:write"
	PermRulesRead      = "rules:read"
	PermRulesWrite     = "rules:write"
	PermListsRead      = "lists:read"
	PermListsWrite     = "lists:write"

	PermAlertRulesRead     = "alertrules:read"
	PermAlertRulesWrite    = "alertrules:write"
	PermChannelsRead       = "channels:read"
	PermChannelsWrite      = "channels:write"
	PermNotificationsRead  = "notifications:read"
	PermNotificationsWrite = "notifications:write"

	PermFlowsRead  = "flows:read"
	PermFlowsWrite = "flows:write"
)

const permKey = "permission"

type principalKey struct{}

// Principal returns who made the request, as people read it: the user
// name for users ("alice"), "client:ID" for API clients.
func Principal(ctx context.Context) string {
	p, _ := ctx.Value(principalKey{}).(auth.Principal)
	return strings.TrimPrefix(p.Subject, "user:")
}

// Who returns the full principal of the request.
func Who(ctx context.Context) auth.Principal {
	p, _ := ctx.Value(principalKey{}).(auth.Principal)
	return p
}

// New registers every operation on mux under /api/v1.
func New(mux humago.Mux, d Deps) *API {
	if d.Now == nil {
		d.Now = time.Now
	}
	cfg := huma.DefaultConfig("Yagura API", d.Version)
	cfg.Info.Description = "Manage computers, activation tokens, alerts and settings of a Yagura manager."
	cfg.OpenAPIPath = "/api/v1/openapi"
	cfg.SchemasPath = "/api/v1/schemas"
	// huma's reference page pulls its assets from a CDN; ours (/api/docs)
	// is rendered here from the document.
	cfg.DocsPath = ""
	// No $schema links in bodies: scripts want plain objects.
	cfg.CreateHooks = nil
	cfg.Components.SecuritySchemes = map[string]*huma.SecurityScheme{
		"bearer": {Type: "http", Scheme: "bearer", Description: "An OAuth2 access token from POST /oauth/token (password or client_credentials grant)."},
	}
	a := &API{d: d, api: humago.New(mux, cfg)}
	a.api.UseMiddleware(a.authorize)
	a.registerComputers()
	a.registerTokens()
	a.registerAlerts()
	a.registerSettings()
	a.registerCA()
	a.registerEvents()
	a.registerAlertRules()
	a.registerChannels()
	a.registerOutbox()
	a.registerJobs()
	a.registerAccounts()
	a.registerAudit()
	a.registerPolicies()
	a.registerFirewall()
	a.registerFlows()
	a.registerDocs(mux)
	return a
}

// OpenAPI returns the generated document.
func (a *API) OpenAPI() *huma.OpenAPI { return a.api.OpenAPI() }

// register adds an operation that requires perm. A missing permission is a
// programming error caught at start-up.
func register[I, O any](a *API, perm string, op huma.Operation, h func(context.Context, *I) (*O, error)) {
	if perm == "" {
		panic(fmt.Sprintf("api: operation %s %s declares no permission", op.Method, op.Path))
	}
	if op.Metadata == nil {
		op.Metadata = map[string]any{}
	}
	op.Metadata[permKey] = perm
	op.Security = []map[string][]string{{"bearer": {}}}
	// In the document too, so clients and the authorization tests can see
	// what each operation needs.
	if op.Extensions == nil {
		op.Extensions = map[string]any{}
	}
	op.Extensions["x-yagura-permission"] = perm
	huma.Register(a.api, op, h)
}

func (a *API) authorize(ctx huma.Context, next func(huma.Context)) {
	perm, _ := ctx.Operation().Metadata[permKey].(string)
	if perm == "" {
		// Deny by default: an operation registered outside register().
		_ = huma.WriteErr(a.api, ctx, http.StatusForbidden, "operation has no declared permission")
		return
	}
	rec := &auditRecord{}
	ctx = huma.WithValue(ctx, auditKey{}, rec)
	// Audited once the caller is known: anonymous refusals are not written,
	// or anyone could fill the log (they are counted in the access log).
	defer func() {
		if rec.actor != "" {
			a.audit(ctx, rec)
		}
	}()
	bearer, ok := BearerToken(ctx.Header("Authorization"))
	if !ok {
		// The console's session cookie: the same kind of token, and for a
		// change the session's CSRF token too (see auth/console.go).
		if c, err := (&http.Request{Header: http.Header{"Cookie": {ctx.Header("Cookie")}}}).Cookie(auth.SessionCookie); err == nil && c.Value != "" {
			if !auth.SafeMethod(ctx.Method()) && !auth.CheckCSRF(ctx.Header(auth.CSRFHeader), c.Value) {
				_ = huma.WriteErr(a.api, ctx, http.StatusForbidden, "missing or wrong "+auth.CSRFHeader+" header: reload the console page")
				return
			}
			bearer, ok = c.Value, true
		}
	}
	if !ok {
		ctx.SetHeader("WWW-Authenticate", `Bearer realm="yagura"`)
		_ = huma.WriteErr(a.api, ctx, http.StatusUnauthorized,
			"missing bearer token: sign in with `yagura ctl login`, or get one from POST /oauth/token")
		return
	}
	principal, ok := a.d.Auth.Authenticate(ctx.Context(), bearer)
	if !ok {
		ctx.SetHeader("WWW-Authenticate", `Bearer realm="yagura", error="invalid_token"`)
		_ = huma.WriteErr(a.api, ctx, http.StatusUnauthorized, "invalid, expired or revoked bearer token; sign in again")
		return
	}
	rec.actor = principal.Subject
	if !auth.Allowed(principal.Role, perm) {
		_ = huma.WriteErr(a.api, ctx, http.StatusForbidden,
			fmt.Sprintf("role %s may not do this (needs %s)", principal.Role, perm))
		return
	}
	next(huma.WithValue(ctx, principalKey{}, principal))
}

// BearerToken extracts the credential of an RFC 6750 Authorization header.
// The scheme is case-insensitive (RFC 9110 §11.1).
func BearerToken(header string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// storeErr turns store errors into problems that say what was not found or
// why the change was refused; anything else is logged and hidden.
func (a *API) storeErr(what string, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return huma.Error404NotFound(what + " not found")
	case errors.Is(err, store.ErrConflict):
		return huma.Error409Conflict(what + ": " + conflictText(err))
	}
	a.d.Log.Error("api store error", "what", what, "err", err)
	return huma.Error500InternalServerError("the manager could not complete the request; see the manager log")
}

// changeErr is storeErr for a change that may meet a resource already in
// its final state: that conflict is said plainly ("… is already revoked").
func (a *API) changeErr(what, already string, err error) error {
	if errors.Is(err, store.ErrConflict) {
		return huma.Error409Conflict(what + " is already " + already)
	}
	return a.storeErr(what, err)
}

func conflictText(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[:i]
	}
	return s
}
