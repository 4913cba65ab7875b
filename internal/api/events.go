package api

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"

	"github.com/yagura/yagura/internal/telemetry"
)

// Event is an event as the API shows it.
type Event struct {
	ID         string          `json:"id" doc:"Made by the agent; unique per computer."`
	ComputerID string          `json:"computer_id" doc:"Empty for the manager's own events."`
	Type       string          `json:"type"`
	Severity   string          `json:"severity" enum:"critical,error,warning,info"`
	Time       time.Time       `json:"time" doc:"When it happened, by the agent's clock."`
	ReceivedAt time.Time       `json:"received_at"`
	Data       json.RawMessage `json:"data,omitempty"`
}

func eventOut(e telemetry.Event) Event {
	var data json.RawMessage
	if e.Data != "" {
		data = json.RawMessage(e.Data)
	}
	return Event{ID: e.ID, ComputerID: e.ComputerID, Type: e.Type, Severity: e.Severity, Time: e.Time.UTC(), ReceivedAt: e.ReceivedAt.UTC(), Data: data}
}

// EventSearch is the search every events operation shares.
type EventSearch struct {
	Since    time.Time `query:"since" doc:"Events at or after this time (RFC 3339). Default: 24 hours before until."`
	Until    time.Time `query:"until" doc:"Events before this time (RFC 3339). Default: now."`
	Computer []string  `query:"computer" doc:"Only these computers' events (IDs)."`
	Type     []string  `query:"type" doc:"Only these types, e.g. firewall, policy-applied, events-dropped."`
	Severity []string  `query:"severity" enum:"critical,error,warning,info" doc:"Only these severities."`
	Q        string    `query:"q" maxLength:"200" doc:"Free text: events whose type or data contain it (ASCII case ignored)."`
}

func (s EventSearch) query(now time.Time) (telemetry.EventQuery, error) {
	q := telemetry.EventQuery{Since: s.Since, Until: s.Until, ComputerIDs: s.Computer, Types: s.Type, Severities: s.Severity, Text: s.Q}
	if q.Until.IsZero() {
		// A minute of slack: agents' clocks run a little ahead.
		q.Until = now.Add(time.Minute)
	}
	if q.Since.IsZero() {
		q.Since = q.Until.Add(-24 * time.Hour)
	}
	if q.Until.Before(q.Since) {
		return q, huma.Error400BadRequest(fmt.Sprintf("until (%s) is before since (%s)", q.Until.Format(time.RFC3339), q.Since.Format(time.RFC3339)))
	}
	return q, nil
}

// A cursor is the opaque paging token: where the previous page ended, as
// base64url of the event's time (8 bytes, µs) and its computer and ID
// (each after a 2-byte length) — bytes, so any ID round-trips.
func encodeCursor(e telemetry.Event) string {
	b := binary.BigEndian.AppendUint64(nil, uint64(e.Time.UnixMicro()))
	for _, s := range []string{e.ComputerID, e.ID} {
		b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
		b = append(b, s...)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (*telemetry.Cursor, error) {
	bad := huma.Error400BadRequest("cursor: not one this API returned; start again without it")
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) < 8 {
		return nil, bad
	}
	c := &telemetry.Cursor{Time: time.UnixMicro(int64(binary.BigEndian.Uint64(b))).UTC()}
	b = b[8:]
	var parts [2]string
	for i := range parts {
		if len(b) < 2 || len(b) < 2+int(binary.BigEndian.Uint16(b)) {
			return nil, bad
		}
		n := int(binary.BigEndian.Uint16(b))
		parts[i], b = string(b[2:2+n]), b[2+n:]
	}
	if len(b) != 0 {
		return nil, bad
	}
	c.ComputerID, c.ID = parts[0], parts[1]
	return c, nil
}

func (a *API) telemetryErr(what string, err error) error {
	if errors.Is(err, telemetry.ErrInvalid) {
		return huma.Error400BadRequest(what + ": " + err.Error())
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return huma.Error503ServiceUnavailable(what + ": the query was cancelled or took too long; narrow the time range")
	}
	a.d.Log.Error(what, "err", err)
	return huma.Error500InternalServerError(what + ": the telemetry store failed; see the manager log")
}

type eventPage struct {
	Body struct {
		Items      []Event `json:"items"`
		NextCursor string  `json:"next_cursor,omitempty" doc:"Pass as cursor for the next page; absent on the last page."`
	}
}

func (a *API) registerEvents() {
	register(a, PermEventsRead, huma.Operation{
		OperationID: "list-events", Method: http.MethodGet, Path: "/api/v1/events",
		Summary: "Search events", Tags: []string{"Events"},
		Description: "Security and system events, newest first, a page at a time. Without since/until: the last 24 hours.",
	}, func(ctx context.Context, in *struct {
		EventSearch
		Limit  int    `query:"limit" minimum:"1" maximum:"10000" default:"100"`
		Cursor string `query:"cursor" maxLength:"1000" doc:"next_cursor of the previous page."`
	}) (*eventPage, error) {
		q, err := in.query(a.d.Now())
		if err != nil {
			return nil, err
		}
		q.Limit = in.Limit
		if in.Cursor != "" {
			if q.After, err = decodeCursor(in.Cursor); err != nil {
				return nil, err
			}
		}
		out := &eventPage{}
		out.Body.Items = make([]Event, 0, min(in.Limit, 1000))
		var last telemetry.Event
		err = a.d.Telemetry.ScanEvents(ctx, q, func(e telemetry.Event) error {
			out.Body.Items = append(out.Body.Items, eventOut(e))
			last = e
			return nil
		})
		if err != nil {
			return nil, a.telemetryErr("search events", err)
		}
		if len(out.Body.Items) == in.Limit {
			out.Body.NextCursor = encodeCursor(last)
		}
		return out, nil
	})

	register(a, PermEventsRead, huma.Operation{
		OperationID: "count-events", Method: http.MethodGet, Path: "/api/v1/events/count",
		Summary: "Count events", Tags: []string{"Events"},
		Description: "How many events a search matches.",
	}, func(ctx context.Context, in *EventSearch) (*struct {
		Body struct {
			Count int64 `json:"count"`
		}
	}, error) {
		q, err := in.query(a.d.Now())
		if err != nil {
			return nil, err
		}
		n, err := a.d.Telemetry.CountEvents(ctx, q)
		if err != nil {
			return nil, a.telemetryErr("count events", err)
		}
		out := &struct {
			Body struct {
				Count int64 `json:"count"`
			}
		}{}
		out.Body.Count = n
		return out, nil
	})

	register(a, PermEventsRead, huma.Operation{
		OperationID: "top-event-types", Method: http.MethodGet, Path: "/api/v1/events/top-types",
		Summary: "Most frequent event types", Tags: []string{"Events"},
		Description: "The event types a search matches most often, most frequent first.",
	}, func(ctx context.Context, in *struct {
		EventSearch
		Limit int `query:"limit" minimum:"1" maximum:"1000" default:"10"`
	}) (*struct {
		Body struct {
			Items []telemetry.TypeCount `json:"items"`
		}
	}, error) {
		q, err := in.query(a.d.Now())
		if err != nil {
			return nil, err
		}
		top, err := a.d.Telemetry.TopEventTypes(ctx, q, in.Limit)
		if err != nil {
			return nil, a.telemetryErr("top event types", err)
		}
		out := &struct {
			Body struct {
				Items []telemetry.TypeCount `json:"items"`
			}
		}{}
		out.Body.Items = append(make([]telemetry.TypeCount, 0, len(top)), top...)
		return out, nil
	})

	register(a, PermEventsRead, huma.Operation{
		OperationID: "events-stats", Method: http.MethodGet, Path: "/api/v1/events/stats",
		Summary: "What the telemetry store holds", Tags: []string{"Events"},
		Description: "Backend, number of events, bytes on disk and the oldest and newest event.",
	}, func(ctx context.Context, _ *struct{}) (*struct{ Body telemetry.Stats }, error) {
		st, err := a.d.Telemetry.Stats(ctx)
		if err != nil {
			return nil, a.telemetryErr("telemetry stats", err)
		}
		return &struct{ Body telemetry.Stats }{Body: st}, nil
	})

	register(a, PermEventsRead, huma.Operation{
		OperationID: "export-events", Method: http.MethodGet, Path: "/api/v1/events/export",
		Summary: "Export events as CSV or JSON lines", Tags: []string{"Events"},
		Description: "Streams every event a search matches, newest first, straight from the store: nothing is held in memory, " +
			"so a month of events exports as easily as a minute. CSV is UTF-8 with a byte order mark so spreadsheet programs read Japanese correctly.",
		Responses: map[string]*huma.Response{"200": {Description: "The events.", Content: map[string]*huma.MediaType{
			"text/csv": {}, "application/x-ndjson": {},
		}}},
	}, func(ctx context.Context, in *struct {
		EventSearch
		Format string `query:"format" enum:"csv,json" default:"csv"`
	}) (*huma.StreamResponse, error) {
		q, err := in.query(a.d.Now())
		if err != nil {
			return nil, err
		}
		return &huma.StreamResponse{Body: func(hctx huma.Context) {
			a.exportEvents(ctx, hctx, q, in.Format)
		}}, nil
	})
}

// exportEvents writes q's events as they come from the store (see
// exportWriter).
func (a *API) exportEvents(ctx context.Context, hctx huma.Context, q telemetry.EventQuery, format string) {
	x := newExportWriter(hctx, format, "yagura-events",
		[]string{"time", "computer_id", "id", "type", "severity", "received_at", "data"})
	err := a.d.Telemetry.ScanEvents(ctx, q, func(e telemetry.Event) error {
		if x.csv() {
			return x.writeCSV([]string{e.Time.UTC().Format(time.RFC3339Nano), e.ComputerID, e.ID, e.Type, e.Severity, e.ReceivedAt.UTC().Format(time.RFC3339Nano), e.Data})
		}
		return x.writeJSON(eventOut(e))
	})
	x.finish(ctx, a.d.Log, "events", "telemetry store", err)
}

// unwrapHTTP returns the net/http request and writer under a huma context
// (nil ones under another adapter).
func unwrapHTTP(hctx huma.Context) (r *http.Request, w http.ResponseWriter) {
	defer func() {
		if recover() != nil {
			r, w = nil, nil
		}
	}()
	return humago.Unwrap(hctx)
}
