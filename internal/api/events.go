package api

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/yagura/yagura/internal/store"
)

// Event is an agent event as the API shows it.
type Event struct {
	ID         string          `json:"id" doc:"Made by the agent; unique per computer."`
	ComputerID string          `json:"computer_id"`
	Type       string          `json:"type"`
	Severity   string          `json:"severity" enum:"critical,error,warning,info"`
	Time       time.Time       `json:"time" doc:"When it happened, by the agent's clock."`
	ReceivedAt time.Time       `json:"received_at"`
	Data       json.RawMessage `json:"data,omitempty"`
}

func (a *API) registerEvents() {
	register(a, PermEventsRead, huma.Operation{
		OperationID: "list-events", Method: http.MethodGet, Path: "/api/v1/events",
		Summary: "List events", Tags: []string{"Events"},
		Description: "Events sent by agents, newest first.",
	}, func(ctx context.Context, in *struct {
		Computer string    `query:"computer" maxLength:"64" doc:"Only this computer's events."`
		Type     []string  `query:"type" doc:"Only these types."`
		Since    time.Time `query:"since" doc:"Only events at or after this time (RFC 3339)."`
		Until    time.Time `query:"until" doc:"Only events before this time (RFC 3339)."`
		Limit    int       `query:"limit" minimum:"1" maximum:"10000" default:"100"`
	}) (*struct {
		Body struct {
			Items []Event `json:"items"`
		}
	}, error) {
		evs, err := a.d.Store.ListEvents(ctx, store.EventFilter{
			ComputerID: in.Computer, Types: in.Type, Since: in.Since, Until: in.Until, Limit: in.Limit,
		})
		if err != nil {
			return nil, a.storeErr("events", err)
		}
		out := &struct {
			Body struct {
				Items []Event `json:"items"`
			}
		}{}
		out.Body.Items = make([]Event, 0, len(evs))
		for _, e := range evs {
			var data json.RawMessage
			if e.Data != "" {
				data = json.RawMessage(e.Data)
			}
			out.Body.Items = append(out.Body.Items, Event{
				ID: e.ID, ComputerID: e.ComputerID, Type: e.Type, Severity: e.Severity,
				Time: e.Time.UTC(), ReceivedAt: e.ReceivedAt.UTC(), Data: data,
			})
		}
		return out, nil
	})
}
