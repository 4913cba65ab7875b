package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"

	"github.com/yagura/yagura/internal/alerting"
	"github.com/yagura/yagura/internal/notify"
	"github.com/yagura/yagura/internal/outbox"
	"github.com/yagura/yagura/internal/store"
)

// NotificationStore is what the alert rule, channel and outbox operations
// need from the state store.
type NotificationStore interface {
	CreateAlertRule(ctx context.Context, r store.AlertRule) (store.AlertRule, error)
	GetAlertRule(ctx context.Context, id string) (store.AlertRule, error)
	ListAlertRules(ctx context.Context) ([]store.AlertRule, error)
	UpdateAlertRule(ctx context.Context, r store.AlertRule, ifVersion int64) (store.AlertRule, error)
	DeleteAlertRule(ctx context.Context, id string) error
	CreateChannel(ctx context.Context, c store.Channel) (store.Channel, error)
	GetChannel(ctx context.Context, id string) (store.Channel, error)
	ListChannels(ctx context.Context) ([]store.Channel, error)
	UpdateChannel(ctx context.Context, c store.Channel, ifVersion int64) (store.Channel, error)
	DeleteChannel(ctx context.Context, id string, at time.Time, by string) error
	ListNotifications(ctx context.Context, f store.NotificationFilter) ([]store.Notification, error)
	GetNotification(ctx context.Context, id string) (store.Notification, error)
	RequeueNotification(ctx context.Context, id string, at time.Time) error
	DiscardNotification(ctx context.Context, id string, at time.Time, by string) error
	ListDeliveries(ctx context.Context, f store.DeliveryFilter) ([]store.Delivery, error)
	OutboxStats(ctx context.Context) (map[string]store.OutboxStat, error)
}

// Notifications is the running notification machinery the API pokes.
type Notifications interface {
	// Test sends a test message over a channel now, bypassing the outbox.
	Test(ctx context.Context, ch store.Channel, by string) error
	// Changed reloads alert rules and channels after an edit.
	Changed(ctx context.Context)
	// Wake makes the dispatcher look at the outbox now.
	Wake()
}

// items is a list answer without paging.
type items[T any] struct {
	Body struct {
		Items []T `json:"items"`
	}
}

// itemsOf maps stored objects to their API form (never a null list).
func itemsOf[S, T any](xs []S, out func(S) T) *items[T] {
	r := &items[T]{}
	r.Body.Items = make([]T, 0, len(xs))
	for _, x := range xs {
		r.Body.Items = append(r.Body.Items, out(x))
	}
	return r
}

// ---- alert rules ----

// RuleFilter selects the events an alert rule counts.
type RuleFilter struct {
	Types       []string          `json:"types,omitempty" maxItems:"100" doc:"Event types; empty: all."`
	MinSeverity string            `json:"min_severity,omitempty" enum:"critical,error,warning,info" doc:"Only events at least this severe."`
	Computers   []string          `json:"computers,omitempty" maxItems:"1000" doc:"Computer IDs; empty: all."`
	Data        map[string]string `json:"data,omitempty" doc:"Top-level fields of the event's data that must equal these, e.g. {\"action\": \"deny\"}."`
	Text        string            `json:"text,omitempty" maxLength:"200" doc:"Type or data contains it (ASCII case ignored)."`
}

// RuleDefinition is what an alert rule watches for.
type RuleDefinition struct {
	Filter    RuleFilter `json:"filter"`
	GroupBy   string     `json:"group_by,omitempty" maxLength:"70" doc:"Count separately per: \"\" (all together), \"computer\", or \"data.FIELD\" such as data.src."`
	Threshold int        `json:"threshold" minimum:"1" maximum:"100000" doc:"This many matching events…"`
	Window    string     `json:"window" doc:"…within this long raise the alert, e.g. 1m."`
	Suppress  string     `json:"suppress,omitempty" doc:"No new alert for the same group for this long after one (default: the window); while the alert is open, more bursts only count occurrences."`
}

func (d RuleDefinition) parse() (string, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return "", err
	}
	if _, err := alerting.ParseDefinition(b); err != nil {
		return "", huma.Error422UnprocessableEntity("definition: " + err.Error())
	}
	return string(b), nil
}

// AlertRuleInput creates or replaces an alert rule.
type AlertRuleInput struct {
	Name        string         `json:"name" minLength:"1" maxLength:"200"`
	Enabled     *bool          `json:"enabled,omitempty" doc:"Default true."`
	Severity    string         `json:"severity" enum:"critical,error,warning,info"`
	Description string         `json:"description,omitempty" maxLength:"2000"`
	Definition  RuleDefinition `json:"definition"`
}

// AlertRule is an alert rule as the API shows it.
type AlertRule struct {
	ID          string         `json:"id"`
	Name        string         `json:"name"`
	Enabled     bool           `json:"enabled"`
	Severity    string         `json:"severity"`
	Description string         `json:"description,omitempty"`
	Definition  RuleDefinition `json:"definition"`
	AlertType   string         `json:"alert_type" doc:"The type of the alerts it raises."`
	Version     int64          `json:"version"`
	CreatedAt   time.Time      `json:"created_at"`
	CreatedBy   string         `json:"created_by"`
	UpdatedAt   time.Time      `json:"updated_at"`
	UpdatedBy   string         `json:"updated_by"`
}

func alertRuleOut(r store.AlertRule) AlertRule {
	var d RuleDefinition
	_ = json.Unmarshal([]byte(r.Definition), &d)
	return AlertRule{ID: r.ID, Name: r.Name, Enabled: r.Enabled, Severity: r.Severity, Description: r.Description, Definition: d,
		AlertType: alerting.RuleAlertPrefix + r.ID, Version: r.Version, CreatedAt: r.CreatedAt.UTC(), CreatedBy: r.CreatedBy, UpdatedAt: r.UpdatedAt.UTC(), UpdatedBy: r.UpdatedBy}
}

// versioned is one object with its version as ETag, for If-Match.
type versioned[T any] struct {
	ETag string `header:"ETag"`
	Body T
}

// replace is a PUT of a versioned object.
type replace[T any] struct {
	ID      string `path:"id" maxLength:"64"`
	IfMatch string `header:"If-Match" doc:"ETag of GET; the change is refused with 412 if the object changed meanwhile."`
	Body    T
}

type alertRuleOne = versioned[AlertRule]

type objPath struct {
	ID string `path:"id" maxLength:"64"`
}

// ifMatch reads an If-Match header holding a version ("3"); 0 when absent.
func ifMatch(h, what string) (int64, error) {
	tag := strings.Trim(strings.TrimPrefix(strings.TrimSpace(h), "W/"), `"`)
	if tag == "" || tag == "*" {
		return 0, nil
	}
	v, err := strconv.ParseInt(tag, 10, 64)
	if err != nil || v < 1 {
		return 0, huma.Error400BadRequest(fmt.Sprintf("If-Match: want the ETag of GET %s, such as \"3\"", what))
	}
	return v, nil
}

func (a *API) versionedErr(what string, want int64, err error) error {
	if errors.Is(err, store.ErrConflict) && want > 0 && strings.Contains(err.Error(), "version") {
		return huma.Error412PreconditionFailed(what + " changed since you read it; read it again and reapply your change")
	}
	if errors.Is(err, store.ErrConflict) {
		return huma.Error409Conflict(conflictText(err))
	}
	return a.storeErr(what, err)
}

func newUUID() (string, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return "", huma.Error500InternalServerError("new ID")
	}
	return id.String(), nil
}

func (a *API) registerAlertRules() {
	tags := []string{"Alert rules"}
	register(a, PermAlertRulesRead, huma.Operation{
		OperationID: "list-alert-rules", Method: http.MethodGet, Path: "/api/v1/alert-rules",
		Summary: "List alert rules", Tags: tags,
	}, func(ctx context.Context, _ *struct{}) (*items[AlertRule], error) {
		rs, err := a.d.Store.ListAlertRules(ctx)
		if err != nil {
			return nil, a.storeErr("alert rules", err)
		}
		return itemsOf(rs, alertRuleOut), nil
	})
	register(a, PermAlertRulesWrite, huma.Operation{
		OperationID: "create-alert-rule", Method: http.MethodPost, Path: "/api/v1/alert-rules", DefaultStatus: http.StatusCreated,
		Summary: "Create an alert rule", Tags: tags,
		Description: "Example: 20 firewall denies from one source within a minute — " +
			`{"name":"SSH brute force","severity":"critical","definition":{"filter":{"types":["firewall"],"data":{"action":"deny"}},"group_by":"data.src","threshold":20,"window":"1m","suppress":"10m"}}`,
	}, func(ctx context.Context, in *struct{ Body AlertRuleInput }) (*alertRuleOne, error) {
		def, err := in.Body.Definition.parse()
		if err != nil {
			return nil, err
		}
		id, err := newUUID()
		if err != nil {
			return nil, err
		}
		now, by := a.d.Now(), Principal(ctx)
		r, err := a.d.Store.CreateAlertRule(ctx, store.AlertRule{ID: id, Name: in.Body.Name, Enabled: in.Body.Enabled == nil || *in.Body.Enabled,
			Severity: in.Body.Severity, Definition: def, Description: in.Body.Description, CreatedAt: now, CreatedBy: by, UpdatedAt: now, UpdatedBy: by})
		if err != nil {
			return nil, a.versionedErr("alert rule", 0, err)
		}
		a.d.Notifications.Changed(ctx)
		note(ctx, "alert-rule", map[string]any{"id": r.ID, "name": r.Name})
		return &alertRuleOne{ETag: etag(strconv.FormatInt(r.Version, 10)), Body: alertRuleOut(r)}, nil
	})
	register(a, PermAlertRulesRead, huma.Operation{
		OperationID: "get-alert-rule", Method: http.MethodGet, Path: "/api/v1/alert-rules/{id}",
		Summary: "Show an alert rule", Tags: tags,
	}, func(ctx context.Context, in *objPath) (*alertRuleOne, error) {
		r, err := a.d.Store.GetAlertRule(ctx, in.ID)
		if err != nil {
			return nil, a.storeErr("alert rule "+in.ID, err)
		}
		return &alertRuleOne{ETag: etag(strconv.FormatInt(r.Version, 10)), Body: alertRuleOut(r)}, nil
	})
	register(a, PermAlertRulesWrite, huma.Operation{
		OperationID: "update-alert-rule", Method: http.MethodPut, Path: "/api/v1/alert-rules/{id}",
		Summary: "Replace an alert rule", Tags: tags,
		Description: "With If-Match (the ETag of GET), refused with 412 if the rule changed meanwhile. Counting starts again for the changed rule.",
	}, func(ctx context.Context, in *replace[AlertRuleInput]) (*alertRuleOne, error) {
		want, err := ifMatch(in.IfMatch, "/api/v1/alert-rules/{id}")
		if err != nil {
			return nil, err
		}
		def, err := in.Body.Definition.parse()
		if err != nil {
			return nil, err
		}
		r, err := a.d.Store.UpdateAlertRule(ctx, store.AlertRule{ID: in.ID, Name: in.Body.Name, Enabled: in.Body.Enabled == nil || *in.Body.Enabled,
			Severity: in.Body.Severity, Definition: def, Description: in.Body.Description, UpdatedAt: a.d.Now(), UpdatedBy: Principal(ctx)}, want)
		if err != nil {
			return nil, a.versionedErr("alert rule "+in.ID, want, err)
		}
		a.d.Notifications.Changed(ctx)
		note(ctx, "alert-rule", map[string]any{"id": r.ID, "version": r.Version})
		return &alertRuleOne{ETag: etag(strconv.FormatInt(r.Version, 10)), Body: alertRuleOut(r)}, nil
	})
	register(a, PermAlertRulesWrite, huma.Operation{
		OperationID: "delete-alert-rule", Method: http.MethodDelete, Path: "/api/v1/alert-rules/{id}", DefaultStatus: http.StatusNoContent,
		Summary: "Delete an alert rule", Tags: tags, Description: "Alerts it raised stay, to be cleared as usual.",
	}, func(ctx context.Context, in *objPath) (*struct{}, error) {
		if err := a.d.Store.DeleteAlertRule(ctx, in.ID); err != nil {
			return nil, a.storeErr("alert rule "+in.ID, err)
		}
		a.d.Notifications.Changed(ctx)
		note(ctx, "alert-rule", map[string]any{"id": in.ID, "deleted": true})
		return nil, nil
	})
}

// ---- channels ----

// Route selects what a channel receives.
type Route struct {
	Source      string   `json:"source" enum:"alerts,events" doc:"Alerts as they are raised, or events as they are stored."`
	Types       []string `json:"types,omitempty" maxItems:"100" doc:"Alert or event types, with * wildcards (rule:*, computer-*); empty: all."`
	MinSeverity string   `json:"min_severity,omitempty" enum:"critical,error,warning,info" doc:"Only at least this severe; empty: all."`
}

func checkRoutes(rs []Route) (string, error) {
	if rs == nil {
		rs = []Route{}
	}
	b, err := json.Marshal(rs)
	if err != nil {
		return "", err
	}
	if _, err := outbox.ParseRoutes(string(b)); err != nil {
		return "", huma.Error422UnprocessableEntity("routes: " + err.Error())
	}
	return string(b), nil
}

// ChannelInput creates or replaces a channel. Config is the sender's
// settings (see docs/notifications.md); a secret left empty on update keeps
// the stored one.
type ChannelInput struct {
	Name    string          `json:"name" minLength:"1" maxLength:"200"`
	Enabled *bool           `json:"enabled,omitempty" doc:"Default true."`
	Config  json.RawMessage `json:"config" doc:"{\"kind\": \"smtp\"|\"syslog\"|\"webhook\", \"smtp\"|\"syslog\"|\"webhook\": {…}}; see docs/notifications.md."`
	Routes  []Route         `json:"routes" maxItems:"100" doc:"What the channel receives; empty: nothing (a channel for test messages)."`
}

func (in ChannelInput) config(old *notify.Config) (notify.Config, string, error) {
	var c notify.Config
	dec := json.NewDecoder(bytes.NewReader(in.Config))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, "", huma.Error422UnprocessableEntity("config: " + err.Error())
	}
	if old != nil {
		c = c.WithSecretsFrom(*old)
	}
	if err := c.Validate(); err != nil {
		return c, "", huma.Error422UnprocessableEntity("config: " + err.Error())
	}
	b, err := json.Marshal(c)
	return c, string(b), err
}

// ChannelOutbox is a channel's backlog.
type ChannelOutbox struct {
	Pending int        `json:"pending"`
	Failed  int        `json:"failed"`
	Oldest  *time.Time `json:"oldest_pending,omitempty" doc:"When the oldest waiting notification was made: how far behind the channel is."`
}

// Channel is a notification channel as the API shows it: secrets are never
// returned (password_set/secret_set say whether one is stored).
type Channel struct {
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Kind      string          `json:"kind" enum:"smtp,syslog,webhook"`
	Enabled   bool            `json:"enabled"`
	Config    json.RawMessage `json:"config"`
	Routes    []Route         `json:"routes"`
	Outbox    ChannelOutbox   `json:"outbox"`
	Version   int64           `json:"version"`
	CreatedAt time.Time       `json:"created_at"`
	CreatedBy string          `json:"created_by"`
	UpdatedAt time.Time       `json:"updated_at"`
	UpdatedBy string          `json:"updated_by"`
}

func channelOut(c store.Channel, st store.OutboxStat) Channel {
	var cfg notify.Config
	redacted := json.RawMessage(`{}`)
	if json.Unmarshal([]byte(c.Config), &cfg) == nil {
		if b, err := json.Marshal(cfg.Redacted()); err == nil {
			redacted = b
		}
	}
	routes := []Route{}
	_ = json.Unmarshal([]byte(c.Routes), &routes)
	out := Channel{ID: c.ID, Name: c.Name, Kind: c.Kind, Enabled: c.Enabled, Config: redacted, Routes: routes, Version: c.Version,
		CreatedAt: c.CreatedAt.UTC(), CreatedBy: c.CreatedBy, UpdatedAt: c.UpdatedAt.UTC(), UpdatedBy: c.UpdatedBy,
		Outbox: ChannelOutbox{Pending: st.Pending, Failed: st.Failed, Oldest: ptime(st.Oldest)}}
	return out
}

type channelOne = versioned[Channel]

func (a *API) registerChannels() {
	tags := []string{"Notification channels"}
	stats := func(ctx context.Context) map[string]store.OutboxStat {
		st, err := a.d.Store.OutboxStats(ctx)
		if err != nil {
			a.d.Log.Error("outbox stats", "err", err)
		}
		return st
	}
	register(a, PermChannelsRead, huma.Operation{
		OperationID: "list-channels", Method: http.MethodGet, Path: "/api/v1/channels",
		Summary: "List notification channels", Tags: tags, Description: "Mail, syslog and webhook receivers, with their backlog. Secrets are never shown.",
	}, func(ctx context.Context, _ *struct{}) (*items[Channel], error) {
		cs, err := a.d.Store.ListChannels(ctx)
		if err != nil {
			return nil, a.storeErr("channels", err)
		}
		st := stats(ctx)
		return itemsOf(cs, func(c store.Channel) Channel { return channelOut(c, st[c.ID]) }), nil
	})
	register(a, PermChannelsWrite, huma.Operation{
		OperationID: "create-channel", Method: http.MethodPost, Path: "/api/v1/channels", DefaultStatus: http.StatusCreated,
		Summary: "Create a notification channel", Tags: tags,
		Description: `Example (syslog, CEF over TLS to a SIEM): {"name":"SIEM","config":{"kind":"syslog","syslog":{"address":"siem.example.jp:6514","transport":"tls","payload":"cef"}},"routes":[{"source":"alerts"},{"source":"events","types":["firewall"],"min_severity":"warning"}]}`,
	}, func(ctx context.Context, in *struct{ Body ChannelInput }) (*channelOne, error) {
		cfg, raw, err := in.Body.config(nil)
		if err != nil {
			return nil, err
		}
		routes, err := checkRoutes(in.Body.Routes)
		if err != nil {
			return nil, err
		}
		id, err := newUUID()
		if err != nil {
			return nil, err
		}
		now, by := a.d.Now(), Principal(ctx)
		c, err := a.d.Store.CreateChannel(ctx, store.Channel{ID: id, Name: in.Body.Name, Kind: cfg.Kind, Enabled: in.Body.Enabled == nil || *in.Body.Enabled,
			Config: raw, Routes: routes, CreatedAt: now, CreatedBy: by, UpdatedAt: now, UpdatedBy: by})
		if err != nil {
			return nil, a.versionedErr("channel", 0, err)
		}
		a.d.Notifications.Changed(ctx)
		note(ctx, "channel", map[string]any{"id": c.ID, "name": c.Name, "kind": c.Kind})
		return &channelOne{ETag: etag(strconv.FormatInt(c.Version, 10)), Body: channelOut(c, store.OutboxStat{})}, nil
	})
	register(a, PermChannelsRead, huma.Operation{
		OperationID: "get-channel", Method: http.MethodGet, Path: "/api/v1/channels/{id}",
		Summary: "Show a notification channel", Tags: tags,
	}, func(ctx context.Context, in *objPath) (*channelOne, error) {
		c, err := a.d.Store.GetChannel(ctx, in.ID)
		if err != nil {
			return nil, a.storeErr("channel "+in.ID, err)
		}
		return &channelOne{ETag: etag(strconv.FormatInt(c.Version, 10)), Body: channelOut(c, stats(ctx)[c.ID])}, nil
	})
	register(a, PermChannelsWrite, huma.Operation{
		OperationID: "update-channel", Method: http.MethodPut, Path: "/api/v1/channels/{id}",
		Summary: "Replace a notification channel", Tags: tags,
		Description: "A password or webhook secret left empty keeps the stored one. With If-Match, refused with 412 if the channel changed meanwhile.",
	}, func(ctx context.Context, in *replace[ChannelInput]) (*channelOne, error) {
		want, err := ifMatch(in.IfMatch, "/api/v1/channels/{id}")
		if err != nil {
			return nil, err
		}
		cur, err := a.d.Store.GetChannel(ctx, in.ID)
		if err != nil {
			return nil, a.storeErr("channel "+in.ID, err)
		}
		var old notify.Config
		_ = json.Unmarshal([]byte(cur.Config), &old)
		cfg, raw, err := in.Body.config(&old)
		if err != nil {
			return nil, err
		}
		routes, err := checkRoutes(in.Body.Routes)
		if err != nil {
			return nil, err
		}
		c, err := a.d.Store.UpdateChannel(ctx, store.Channel{ID: in.ID, Name: in.Body.Name, Kind: cfg.Kind, Enabled: in.Body.Enabled == nil || *in.Body.Enabled,
			Config: raw, Routes: routes, UpdatedAt: a.d.Now(), UpdatedBy: Principal(ctx)}, want)
		if err != nil {
			return nil, a.versionedErr("channel "+in.ID, want, err)
		}
		a.d.Notifications.Changed(ctx)
		note(ctx, "channel", map[string]any{"id": c.ID, "version": c.Version})
		return &channelOne{ETag: etag(strconv.FormatInt(c.Version, 10)), Body: channelOut(c, stats(ctx)[c.ID])}, nil
	})
	register(a, PermChannelsWrite, huma.Operation{
		OperationID: "delete-channel", Method: http.MethodDelete, Path: "/api/v1/channels/{id}", DefaultStatus: http.StatusNoContent,
		Summary: "Delete a notification channel", Tags: tags, Description: "Its undelivered notifications are discarded (recorded in the delivery history).",
	}, func(ctx context.Context, in *objPath) (*struct{}, error) {
		if err := a.d.Store.DeleteChannel(ctx, in.ID, a.d.Now(), Principal(ctx)); err != nil {
			return nil, a.storeErr("channel "+in.ID, err)
		}
		a.d.Notifications.Changed(ctx)
		note(ctx, "channel", map[string]any{"id": in.ID, "deleted": true})
		return nil, nil
	})
	register(a, PermChannelsWrite, huma.Operation{
		OperationID: "test-channel", Method: http.MethodPost, Path: "/api/v1/channels/{id}/test",
		Summary: "Send a test message", Tags: tags,
		Description: "Sends a test message (Japanese and English) over the channel now, bypassing the outbox, and says whether the receiver accepted it and how long it took.",
	}, func(ctx context.Context, in *objPath) (*struct {
		Body struct {
			OK       bool    `json:"ok"`
			Error    string  `json:"error,omitempty"`
			Seconds  float64 `json:"seconds"`
			TestedAt string  `json:"tested_at"`
		}
	}, error) {
		c, err := a.d.Store.GetChannel(ctx, in.ID)
		if err != nil {
			return nil, a.storeErr("channel "+in.ID, err)
		}
		start := time.Now()
		terr := a.d.Notifications.Test(ctx, c, Principal(ctx))
		out := &struct {
			Body struct {
				OK       bool    `json:"ok"`
				Error    string  `json:"error,omitempty"`
				Seconds  float64 `json:"seconds"`
				TestedAt string  `json:"tested_at"`
			}
		}{}
		out.Body.OK, out.Body.Seconds, out.Body.TestedAt = terr == nil, time.Since(start).Seconds(), a.d.Now().UTC().Format(time.RFC3339)
		if terr != nil {
			out.Body.Error = terr.Error()
		}
		note(ctx, "channel", map[string]any{"id": c.ID, "test": out.Body.OK})
		return out, nil
	})
}

// ---- outbox and deliveries ----

// Notification is a notification waiting in the outbox, or given up on.
type Notification struct {
	ID            string          `json:"id"`
	ChannelID     string          `json:"channel_id"`
	Kind          string          `json:"kind" enum:"alert,event,test"`
	Status        string          `json:"status" enum:"pending,failed"`
	CreatedAt     time.Time       `json:"created_at"`
	NextAt        time.Time       `json:"next_at" doc:"Not sent before this."`
	Attempts      int             `json:"attempts"`
	LastError     string          `json:"last_error,omitempty"`
	LastAttemptAt *time.Time      `json:"last_attempt_at,omitempty"`
	Message       json.RawMessage `json:"message"`
}

func notificationOut(n store.Notification) Notification {
	msg := json.RawMessage(n.Payload)
	if !json.Valid(msg) {
		msg = json.RawMessage(`null`)
	}
	return Notification{ID: n.ID, ChannelID: n.ChannelID, Kind: n.Kind, Status: n.Status, CreatedAt: n.CreatedAt.UTC(), NextAt: n.NextAt.UTC(),
		Attempts: n.Attempts, LastError: n.LastError, LastAttemptAt: ptime(n.LastAttemptAt), Message: msg}
}

// Delivery is what became of a notification.
type Delivery struct {
	ID         string    `json:"id"`
	ChannelID  string    `json:"channel_id"`
	Kind       string    `json:"kind"`
	Status     string    `json:"status" enum:"delivered,failed,discarded"`
	Attempts   int       `json:"attempts"`
	CreatedAt  time.Time `json:"created_at"`
	FinishedAt time.Time `json:"finished_at"`
	FinishedBy string    `json:"finished_by,omitempty"`
	LastError  string    `json:"last_error,omitempty"`
}

func deliveryOut(d store.Delivery) Delivery {
	return Delivery{ID: d.ID, ChannelID: d.ChannelID, Kind: d.Kind, Status: d.Status, Attempts: d.Attempts,
		CreatedAt: d.CreatedAt.UTC(), FinishedAt: d.FinishedAt.UTC(), FinishedBy: d.FinishedBy, LastError: d.LastError}
}

func (a *API) registerOutbox() {
	tags := []string{"Notifications"}
	register(a, PermNotificationsRead, huma.Operation{
		OperationID: "list-notifications", Method: http.MethodGet, Path: "/api/v1/notifications",
		Summary: "List the outbox", Tags: tags, Description: "Notifications not yet delivered: pending ones (being retried) and failed ones (given up on, waiting for an administrator).",
	}, func(ctx context.Context, in *struct {
		Status  string `query:"status" enum:"pending,failed,all" default:"all"`
		Channel string `query:"channel" maxLength:"64"`
		Limit   int    `query:"limit" minimum:"1" maximum:"10000" default:"100"`
	}) (*items[Notification], error) {
		f := store.NotificationFilter{ChannelID: in.Channel, Limit: in.Limit}
		if in.Status != "all" {
			f.Status = in.Status
		}
		ns, err := a.d.Store.ListNotifications(ctx, f)
		if err != nil {
			return nil, a.storeErr("notifications", err)
		}
		return itemsOf(ns, notificationOut), nil
	})
	register(a, PermNotificationsWrite, huma.Operation{
		OperationID: "retry-notification", Method: http.MethodPost, Path: "/api/v1/notifications/{id}/retry",
		Summary: "Retry a failed notification", Tags: tags, Description: "Puts it back in line to be sent now; 409 unless it failed.",
	}, func(ctx context.Context, in *objPath) (*struct{ Body Notification }, error) {
		if err := a.d.Store.RequeueNotification(ctx, in.ID, a.d.Now()); err != nil {
			return nil, a.versionedErr("notification "+in.ID, 0, err)
		}
		a.d.Notifications.Wake()
		n, err := a.d.Store.GetNotification(ctx, in.ID)
		if err != nil {
			// Delivered already, between the requeue and this read.
			return nil, a.storeErr("notification "+in.ID, err)
		}
		note(ctx, "notification", map[string]any{"id": in.ID, "retry": true})
		return &struct{ Body Notification }{Body: notificationOut(n)}, nil
	})
	register(a, PermNotificationsWrite, huma.Operation{
		OperationID: "discard-notification", Method: http.MethodPost, Path: "/api/v1/notifications/{id}/discard",
		Summary: "Discard a failed notification", Tags: tags, Description: "Removes it from the outbox; the delivery history records who discarded it. 409 unless it failed.",
	}, func(ctx context.Context, in *objPath) (*struct{}, error) {
		if err := a.d.Store.DiscardNotification(ctx, in.ID, a.d.Now(), Principal(ctx)); err != nil {
			return nil, a.versionedErr("notification "+in.ID, 0, err)
		}
		note(ctx, "notification", map[string]any{"id": in.ID, "discarded": true})
		return nil, nil
	})
	register(a, PermNotificationsRead, huma.Operation{
		OperationID: "list-deliveries", Method: http.MethodGet, Path: "/api/v1/deliveries",
		Summary: "List delivery history", Tags: tags, Description: "What became of each notification: delivered (after how many attempts), failed or discarded, newest first.",
	}, func(ctx context.Context, in *struct {
		Channel string    `query:"channel" maxLength:"64"`
		Status  string    `query:"status" enum:"delivered,failed,discarded,all" default:"all"`
		Since   time.Time `query:"since"`
		Limit   int       `query:"limit" minimum:"1" maximum:"10000" default:"100"`
	}) (*items[Delivery], error) {
		f := store.DeliveryFilter{ChannelID: in.Channel, Since: in.Since, Limit: in.Limit}
		if in.Status != "all" {
			f.Status = in.Status
		}
		ds, err := a.d.Store.ListDeliveries(ctx, f)
		if err != nil {
			return nil, a.storeErr("deliveries", err)
		}
		return itemsOf(ds, deliveryOut), nil
	})
}
