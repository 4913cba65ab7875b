package api

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"

	"github.com/yagura/yagura/internal/store"
)

// auditRecord collects what a handler wants recorded about its change.
type auditRecord struct {
	actor    string
	resource string
	summary  any
}

type auditKey struct{}

// note records the resource and a summary of a change for the audit log.
// Handlers pass only what is safe to keep: never a secret.
func note(ctx context.Context, resource string, summary any) {
	if r, ok := ctx.Value(auditKey{}).(*auditRecord); ok {
		r.resource, r.summary = resource, summary
	}
}

// audit writes an entry for every call that may change state, whatever
// its result (refusals included).
func (a *API) audit(ctx huma.Context, rec *auditRecord) {
	switch ctx.Method() {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return
	}
	actor := rec.actor
	if actor == "" {
		actor = "anonymous"
	}
	resource := rec.resource
	if resource == "" {
		resource = ctx.Param("id")
	}
	var summary string
	if rec.summary != nil {
		b, _ := json.Marshal(rec.summary)
		summary = string(b)
	}
	remote, _, err := net.SplitHostPort(ctx.RemoteAddr())
	if err != nil {
		remote = ctx.RemoteAddr()
	}
	id, _ := uuid.NewV7()
	e := store.AuditEntry{
		ID: id.String(), Time: a.d.Now(), Actor: actor, Remote: remote, Method: ctx.Method(),
		Route: ctx.Operation().Path, Resource: resource, Summary: summary, Status: ctx.Status(),
	}
	if e.Status == 0 {
		e.Status = http.StatusOK
	}
	// The request is over; the entry must still be written.
	if err := a.d.Store.AppendAudit(context.WithoutCancel(ctx.Context()), e); err != nil {
		a.d.Log.Error("write audit entry", "err", err, "route", e.Route, "actor", e.Actor)
	}
}

// AuditEntry is an audit log entry as the API shows it.
type AuditEntry struct {
	ID       string          `json:"id"`
	Time     time.Time       `json:"time"`
	Actor    string          `json:"actor" doc:"user:NAME, client:ID or anonymous"`
	Remote   string          `json:"remote"`
	Method   string          `json:"method"`
	Route    string          `json:"route"`
	Resource string          `json:"resource,omitempty"`
	Summary  json.RawMessage `json:"summary,omitempty"`
	Status   int             `json:"status"`
}

func auditOut(e store.AuditEntry) AuditEntry {
	out := AuditEntry{ID: e.ID, Time: e.Time.UTC(), Actor: e.Actor, Remote: e.Remote, Method: e.Method, Route: e.Route, Resource: e.Resource, Status: e.Status}
	if e.Summary != "" {
		out.Summary = json.RawMessage(e.Summary)
	}
	return out
}

type auditQuery struct {
	Actor  string    `query:"actor" maxLength:"200" doc:"Only this actor (user:NAME, client:ID)."`
	Since  time.Time `query:"since" doc:"At or after (RFC 3339)."`
	Until  time.Time `query:"until" doc:"Before (RFC 3339)."`
	Cursor string    `query:"cursor" maxLength:"64" doc:"next_cursor of the previous page."`
	Limit  int       `query:"limit" minimum:"1" maximum:"1000" default:"100"`
}

func (q *auditQuery) filter() store.AuditFilter {
	return store.AuditFilter{Actor: q.Actor, Since: q.Since, Until: q.Until, Before: q.Cursor, Limit: q.Limit}
}

func (a *API) registerAudit() {
	register(a, PermAuditRead, huma.Operation{
		OperationID: "list-audit", Method: http.MethodGet, Path: "/api/v1/audit",
		Summary: "Read the audit log", Tags: []string{"Audit"},
		Description: "Every state-changing call, newest first: who, what, when, from where, and the result.",
	}, func(ctx context.Context, in *auditQuery) (*struct {
		Body struct {
			Items      []AuditEntry `json:"items"`
			NextCursor string       `json:"next_cursor,omitempty"`
		}
	}, error) {
		es, err := a.d.Store.ListAudit(ctx, in.filter())
		if err != nil {
			return nil, a.storeErr("audit log", err)
		}
		out := &struct {
			Body struct {
				Items      []AuditEntry `json:"items"`
				NextCursor string       `json:"next_cursor,omitempty"`
			}
		}{}
		out.Body.Items = make([]AuditEntry, 0, len(es))
		for _, e := range es {
			out.Body.Items = append(out.Body.Items, auditOut(e))
		}
		if len(es) == in.Limit {
			out.Body.NextCursor = es[len(es)-1].ID
		}
		return out, nil
	})
	register(a, PermAuditRead, huma.Operation{
		OperationID: "export-audit", Method: http.MethodGet, Path: "/api/v1/audit/export",
		Summary: "Export the audit log as CSV or JSON lines", Tags: []string{"Audit"},
		Description: "Streams every matching entry, newest first, page by page: the whole log is never held in memory.",
		Responses: map[string]*huma.Response{"200": {Description: "The entries.", Content: map[string]*huma.MediaType{
			"text/csv": {}, "application/x-ndjson": {},
		}}},
	}, func(ctx context.Context, in *struct {
		Format string    `query:"format" enum:"csv,json" default:"csv"`
		Actor  string    `query:"actor" maxLength:"200"`
		Since  time.Time `query:"since"`
		Until  time.Time `query:"until"`
	}) (*huma.StreamResponse, error) {
		f := store.AuditFilter{Actor: in.Actor, Since: in.Since, Until: in.Until, Limit: 1000}
		return &huma.StreamResponse{Body: func(hctx huma.Context) {
			w := hctx.BodyWriter()
			var cw *csv.Writer
			if in.Format == "json" {
				hctx.SetHeader("Content-Type", "application/x-ndjson")
			} else {
				hctx.SetHeader("Content-Type", "text/csv; charset=utf-8")
				hctx.SetHeader("Content-Disposition", `attachment; filename="yagura-audit.csv"`)
				cw = csv.NewWriter(w)
				_ = cw.Write([]string{"id", "time", "actor", "remote", "method", "route", "resource", "status", "summary"})
			}
			enc := json.NewEncoder(w)
			for {
				es, err := a.d.Store.ListAudit(ctx, f)
				if err != nil {
					a.d.Log.Error("export audit log", "err", err)
					return
				}
				for _, e := range es {
					if cw != nil {
						_ = cw.Write([]string{e.ID, e.Time.UTC().Format(time.RFC3339Nano), e.Actor, e.Remote, e.Method, e.Route, e.Resource, strconv.Itoa(e.Status), e.Summary})
					} else {
						_ = enc.Encode(auditOut(e))
					}
				}
				if cw != nil {
					cw.Flush()
				}
				if len(es) < f.Limit {
					return
				}
				f.Before = es[len(es)-1].ID
			}
		}}, nil
	})
}
