package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"

	"github.com/yagura/yagura/internal/fleet"
	"github.com/yagura/yagura/internal/secret"
	"github.com/yagura/yagura/internal/settings"
	"github.com/yagura/yagura/internal/store"
)

// Computer is a computer as the API shows it: stored facts plus live status.
type Computer struct {
	ID            string     `json:"id"`
	Hostname      string     `json:"hostname"`
	OS            string     `json:"os"`
	OSVersion     string     `json:"os_version,omitempty"`
	AgentVersion  string     `json:"agent_version,omitempty"`
	IPs           []string   `json:"ips"`
	State         string     `json:"state" enum:"active,deactivated,uninstalled" doc:"Lifecycle: active, deactivated by an administrator, or uninstalled by an uninstall job."`
	Status        string     `json:"status" enum:"online,warning,offline,pending,deactivated" doc:"Liveness from heartbeats."`
	LastSeen      *time.Time `json:"last_seen,omitempty"`
	Missed        int        `json:"missed_heartbeats"`
	ClockOffsetS  float64    `json:"clock_offset_seconds" doc:"Agent clock minus manager clock at the last heartbeat."`
	UptimeS       int64      `json:"uptime_seconds"`
	EnrolledAt    time.Time  `json:"enrolled_at"`
	DeactivatedAt *time.Time `json:"deactivated_at,omitempty"`
	CertNotAfter  *time.Time `json:"certificate_expires_at,omitempty"`
	TokenID       string     `json:"activation_token_id,omitempty"`
	Communication string     `json:"communication,omitempty" doc:"Per-computer override of agent.communication; empty: the manager-wide setting."`
	PolicyID      int        `json:"policy_id,omitempty" doc:"The computer's policy; 0: the default policy."`
	PolicyStatus  string     `json:"policy_status" enum:"up-to-date,out-of-date,unknown" doc:"Whether the agent reported enforcing its effective configuration."`
	Isolated      bool       `json:"isolated" doc:"The agent reports that it isolates its host (isolate job)."`
}

func ptime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func (a *API) computer(c store.Computer, now time.Time) Computer {
	out := Computer{
		ID: c.ID, Hostname: c.Hostname, OS: c.OS, OSVersion: c.OSVersion, AgentVersion: c.AgentVersion,
		IPs: c.IPs, State: c.State, EnrolledAt: c.EnrolledAt.UTC(), DeactivatedAt: ptime(c.DeactivatedAt),
		CertNotAfter: ptime(c.CertNotAfter), TokenID: c.TokenID, LastSeen: ptime(c.LastSeen), Communication: c.Communication,
		ClockOffsetS: c.ClockOffset.Seconds(), UptimeS: int64(c.Uptime.Seconds()), PolicyID: c.PolicyID, PolicyStatus: "unknown",
		Isolated: c.Isolation == "isolated",
	}
	if out.IPs == nil {
		out.IPs = []string{}
	}
	if l, ok := a.d.Fleet.Live(c.ID, now); ok {
		out.Status = string(l.Status)
		out.Missed = l.Missed
		out.LastSeen = ptime(l.LastSeen)
		out.ClockOffsetS = l.ClockOffset.Seconds()
		out.UptimeS = int64(l.Uptime.Seconds())
		out.PolicyStatus = l.PolicyStatus()
		out.Isolated = out.Isolated || l.Isolated
	} else if c.State != store.ComputerActive {
		out.Status = string(fleet.StatusDeactivated)
	} else {
		out.Status = string(fleet.StatusPending)
	}
	return out
}

type computerList struct {
	Body struct {
		Items      []Computer `json:"items"`
		NextCursor string     `json:"next_cursor,omitempty"`
	}
}

type computerOne struct{ Body Computer }

func matches(c Computer, q string) bool {
	if q == "" {
		return true
	}
	q = strings.ToLower(q)
	if strings.Contains(strings.ToLower(c.Hostname), q) || strings.Contains(c.ID, q) {
		return true
	}
	for _, ip := range c.IPs {
		if strings.Contains(ip, q) {
			return true
		}
	}
	return false
}

func cmpTime(a, b *time.Time) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	}
	return a.Compare(*b)
}

type idPath struct {
	ID string `path:"id" maxLength:"64" doc:"Computer ID."`
}

func (a *API) registerComputers() {
	register(a, PermComputersRead, huma.Operation{
		OperationID: "list-computers", Method: http.MethodGet, Path: "/api/v1/computers",
		Summary: "List computers", Tags: []string{"Computers"},
	}, func(ctx context.Context, in *struct {
		Status string `query:"status" enum:"online,warning,offline,pending,deactivated," doc:"Only computers with this status."`
		Search string `query:"q" maxLength:"255" doc:"Only computers whose host name, ID or IP contains this."`
		Sort   string `query:"sort" enum:"hostname,last_seen,status" default:"hostname" doc:"Order: by host name, most recently seen first, or by status."`
		PageQuery
	}) (*computerList, error) {
		cs, err := a.d.Store.ListComputers(ctx)
		if err != nil {
			return nil, a.storeErr("computers", err)
		}
		now := a.d.Now()
		out := &computerList{}
		out.Body.Items = make([]Computer, 0, len(cs))
		for _, c := range cs {
			v := a.computer(c, now)
			if (in.Status == "" || v.Status == in.Status) && matches(v, in.Search) {
				out.Body.Items = append(out.Body.Items, v)
			}
		}
		switch in.Sort {
		case "last_seen":
			slices.SortStableFunc(out.Body.Items, func(x, y Computer) int {
				return cmpTime(y.LastSeen, x.LastSeen)
			})
		case "status":
			slices.SortStableFunc(out.Body.Items, func(x, y Computer) int { return strings.Compare(x.Status, y.Status) })
		}
		var err2 error
		out.Body.Items, out.Body.NextCursor, err2 = page(out.Body.Items, in.PageQuery)
		return out, err2
	})
	register(a, PermComputersRead, huma.Operation{
		OperationID: "get-computer", Method: http.MethodGet, Path: "/api/v1/computers/{id}",
		Summary: "Show a computer", Tags: []string{"Computers"},
	}, func(ctx context.Context, in *idPath) (*computerOne, error) {
		c, err := a.d.Store.GetComputer(ctx, in.ID)
		if err != nil {
			return nil, a.storeErr("computer "+in.ID, err)
		}
		return &computerOne{Body: a.computer(c, a.d.Now())}, nil
	})
	register(a, PermComputersWrite, huma.Operation{
		OperationID: "update-computer", Method: http.MethodPatch, Path: "/api/v1/computers/{id}",
		Summary: "Change a computer's settings", Tags: []string{"Computers"},
		Description: "communication overrides the manager-wide direction for this computer (\"\" removes the override). The agent follows at its next heartbeat.",
	}, func(ctx context.Context, in *struct {
		ID   string `path:"id" maxLength:"64"`
		Body struct {
			Communication *string `json:"communication,omitempty" enum:"agent-initiated,bidirectional,manager-initiated,"`
		}
	}) (*computerOne, error) {
		c, err := a.d.Store.GetComputer(ctx, in.ID)
		if err != nil {
			return nil, a.storeErr("computer "+in.ID, err)
		}
		if in.Body.Communication != nil {
			if c, err = a.d.Store.SetComputerCommunication(ctx, in.ID, *in.Body.Communication); err != nil {
				return nil, a.storeErr("computer "+in.ID, err)
			}
			a.d.Fleet.Add(c)
			a.d.Log.Info("computer communication changed", "computer", c.ID, "communication", c.Communication, "by", Principal(ctx))
			note(ctx, c.ID, map[string]string{"communication": c.Communication})
		}
		return &computerOne{Body: a.computer(c, a.d.Now())}, nil
	})
	register(a, PermComputersWrite, huma.Operation{
		OperationID: "deactivate-computer", Method: http.MethodPost, Path: "/api/v1/computers/{id}/deactivate",
		Summary: "Deactivate a computer", Tags: []string{"Computers"},
		Description: "From now on the manager refuses the computer's agent. The record stays for the audit trail.",
	}, func(ctx context.Context, in *idPath) (*computerOne, error) {
		now := a.d.Now()
		c, err := a.d.Store.DeactivateComputer(ctx, in.ID, now)
		if err != nil {
			return nil, a.changeErr("computer "+in.ID, "deactivated", err)
		}
		a.d.Fleet.Add(c) // adds if unknown, then marks deactivated
		a.d.Fleet.Deactivate(c.ID)
		a.d.Log.Info("computer deactivated", "computer", c.ID, "by", Principal(ctx))
		return &computerOne{Body: a.computer(c, now)}, nil
	})
}

// Token is an activation token as the API shows it. The secret itself is
// only ever returned by create.
type Token struct {
	ID          string     `json:"id"`
	Token       string     `json:"token,omitempty" doc:"The secret; returned once, at creation."`
	Description string     `json:"description"`
	State       string     `json:"state" enum:"active,expired,revoked,used-up"`
	CreatedAt   time.Time  `json:"created_at"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	MaxUses     int        `json:"max_uses" doc:"0 means unlimited."`
	Uses        int        `json:"uses"`
	RevokedAt   *time.Time `json:"revoked_at,omitempty"`
}

func token(t store.Token, now time.Time) Token {
	state := "active"
	switch {
	case !t.RevokedAt.IsZero():
		state = "revoked"
	case !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt):
		state = "expired"
	case t.MaxUses > 0 && t.Uses >= t.MaxUses:
		state = "used-up"
	}
	return Token{
		ID: t.ID, Description: t.Description, State: state, CreatedAt: t.CreatedAt.UTC(), ExpiresAt: ptime(t.ExpiresAt),
		MaxUses: t.MaxUses, Uses: t.Uses, RevokedAt: ptime(t.RevokedAt),
	}
}

type tokenOne struct{ Body Token }

type tokenPath struct {
	ID string `path:"id" maxLength:"64" doc:"Token ID (not the secret)."`
}

// TokenCreate is the body of a token creation.
type TokenCreate struct {
	Description string `json:"description,omitempty" maxLength:"200"`
	ExpiresIn   string `json:"expires_in,omitempty" doc:"Lifetime as a Go duration (\"24h\", \"90m\"); empty: 24h; \"never\": no expiry." example:"24h"`
	MaxUses     int    `json:"max_uses,omitempty" minimum:"0" maximum:"1000000" doc:"How many agents may enrol with it; 0: unlimited."`
}

func (a *API) registerTokens() {
	register(a, PermTokensWrite, huma.Operation{
		OperationID: "create-activation-token", Method: http.MethodPost, Path: "/api/v1/activation-tokens",
		Summary: "Create an activation token", Tags: []string{"Activation tokens"}, DefaultStatus: http.StatusCreated,
		Description: "Agents present the token once, at enrolment. Only its hash is stored: copy the secret from this answer.",
	}, func(ctx context.Context, in *struct{ Body TokenCreate }) (*tokenOne, error) {
		now := a.d.Now()
		t := store.Token{Description: in.Body.Description, MaxUses: in.Body.MaxUses, CreatedAt: now}
		switch in.Body.ExpiresIn {
		case "":
			t.ExpiresAt = now.Add(24 * time.Hour)
		case "never":
		default:
			d, err := time.ParseDuration(in.Body.ExpiresIn)
			if err != nil || d <= 0 {
				return nil, huma.Error422UnprocessableEntity("invalid token", &huma.ErrorDetail{
					Location: "body.expires_in", Value: in.Body.ExpiresIn,
					Message: `want a positive duration such as "24h" or "30m", or "never"`,
				})
			}
			t.ExpiresAt = now.Add(d)
		}
		id, err := uuid.NewV7()
		if err != nil {
			return nil, err
		}
		plain, hash, err := secret.New("yat")
		if err != nil {
			return nil, err
		}
		t.ID, t.Hash = id.String(), hash
		if err := a.d.Store.CreateToken(ctx, t); err != nil {
			return nil, a.storeErr("activation token", err)
		}
		a.d.Log.Info("activation token created", "token_id", t.ID, "by", Principal(ctx), "max_uses", t.MaxUses, "expires", t.ExpiresAt)
		note(ctx, t.ID, map[string]any{"description": t.Description, "max_uses": t.MaxUses, "expires_at": ptime(t.ExpiresAt)})
		out := token(t, now)
		out.Token = plain
		return &tokenOne{Body: out}, nil
	})
	register(a, PermTokensRead, huma.Operation{
		OperationID: "list-activation-tokens", Method: http.MethodGet, Path: "/api/v1/activation-tokens",
		Summary: "List activation tokens", Tags: []string{"Activation tokens"},
	}, func(ctx context.Context, in *struct {
		State string `query:"state" enum:"active,expired,revoked,used-up," doc:"Only tokens in this state."`
		PageQuery
	}) (*struct {
		Body struct {
			Items      []Token `json:"items"`
			NextCursor string  `json:"next_cursor,omitempty"`
		}
	}, error) {
		ts, err := a.d.Store.ListTokens(ctx)
		if err != nil {
			return nil, a.storeErr("activation tokens", err)
		}
		out := &struct {
			Body struct {
				Items      []Token `json:"items"`
				NextCursor string  `json:"next_cursor,omitempty"`
			}
		}{}
		now := a.d.Now()
		out.Body.Items = make([]Token, 0, len(ts))
		for _, t := range ts {
			if v := token(t, now); in.State == "" || v.State == in.State {
				out.Body.Items = append(out.Body.Items, v)
			}
		}
		out.Body.Items, out.Body.NextCursor, err = page(out.Body.Items, in.PageQuery)
		return out, err
	})
	register(a, PermTokensRead, huma.Operation{
		OperationID: "get-activation-token", Method: http.MethodGet, Path: "/api/v1/activation-tokens/{id}",
		Summary: "Show an activation token", Tags: []string{"Activation tokens"},
	}, func(ctx context.Context, in *tokenPath) (*tokenOne, error) {
		t, err := a.d.Store.GetToken(ctx, in.ID)
		if err != nil {
			return nil, a.storeErr("activation token "+in.ID, err)
		}
		return &tokenOne{Body: token(t, a.d.Now())}, nil
	})
	register(a, PermTokensWrite, huma.Operation{
		OperationID: "revoke-activation-token", Method: http.MethodPost, Path: "/api/v1/activation-tokens/{id}/revoke",
		Summary: "Revoke an activation token", Tags: []string{"Activation tokens"},
		Description: "Agents already enrolled with it are not affected; new enrolments with it are refused.",
	}, func(ctx context.Context, in *tokenPath) (*tokenOne, error) {
		now := a.d.Now()
		t, err := a.d.Store.RevokeToken(ctx, in.ID, now)
		if err != nil {
			return nil, a.changeErr("activation token "+in.ID, "revoked", err)
		}
		a.d.Log.Info("activation token revoked", "token_id", t.ID, "by", Principal(ctx))
		return &tokenOne{Body: token(t, now)}, nil
	})
}

// Alert is an alert as the API shows it.
type Alert struct {
	ID          string          `json:"id"`
	Type        string          `json:"type" doc:"computer-offline, clock-drift, policy-out-of-date, events-dropped, policy-failed, isolation-failed, notification-failed, or rule:RULE_ID for an alert rule's."`
	Severity    string          `json:"severity" enum:"critical,error,warning,info"`
	ComputerID  string          `json:"computer_id,omitempty"`
	Subject     string          `json:"subject,omitempty" doc:"What the alert is about beyond the computer, e.g. src=203.0.113.5 for a rule grouped by source."`
	RuleID      string          `json:"rule_id,omitempty"`
	Message     string          `json:"message"`
	Open        bool            `json:"open"`
	Occurrences int64           `json:"occurrences" doc:"How many times the condition fired while this alert stood (a storm is one alert)."`
	RaisedAt    time.Time       `json:"raised_at"`
	LastAt      *time.Time      `json:"last_at,omitempty" doc:"The latest occurrence."`
	AckedAt     *time.Time      `json:"acked_at,omitempty"`
	AckedBy     string          `json:"acked_by,omitempty"`
	ClearedAt   *time.Time      `json:"cleared_at,omitempty"`
	ClearedBy   string          `json:"cleared_by,omitempty"`
	Data        json.RawMessage `json:"data,omitempty"`
}

func alert(x store.Alert) Alert {
	var data json.RawMessage
	if x.Data != "" && json.Valid([]byte(x.Data)) {
		data = json.RawMessage(x.Data)
	}
	return Alert{
		ID: x.ID, Type: x.Type, Severity: x.Severity, ComputerID: x.ComputerID, Subject: x.Subject, RuleID: x.RuleID, Message: x.Message,
		Open: x.ClearedAt.IsZero(), Occurrences: x.Occurrences, RaisedAt: x.RaisedAt.UTC(), LastAt: ptime(x.LastAt),
		AckedAt: ptime(x.AckedAt), AckedBy: x.AckedBy, ClearedAt: ptime(x.ClearedAt), ClearedBy: x.ClearedBy, Data: data,
	}
}

type alertPath struct {
	ID string `path:"id" maxLength:"64" doc:"Alert ID."`
}

func (a *API) registerAlerts() {
	register(a, PermAlertsRead, huma.Operation{
		OperationID: "list-alerts", Method: http.MethodGet, Path: "/api/v1/alerts",
		Summary: "List alerts", Tags: []string{"Alerts"},
	}, func(ctx context.Context, in *struct {
		State    string   `query:"state" enum:"open,cleared,all" default:"open" doc:"Which alerts."`
		Computer string   `query:"computer" maxLength:"64" doc:"Only this computer's alerts."`
		Type     []string `query:"type" doc:"Only these types."`
		PageQuery
	}) (*struct {
		Body struct {
			Items      []Alert `json:"items"`
			NextCursor string  `json:"next_cursor,omitempty"`
		}
	}, error) {
		f := store.AlertFilter{ComputerID: in.Computer, Types: in.Type}
		switch in.State {
		case "open", "":
			yes := true
			f.Open = &yes
		case "cleared":
			no := false
			f.Open = &no
		}
		as, err := a.d.Store.ListAlerts(ctx, f)
		if err != nil {
			return nil, a.storeErr("alerts", err)
		}
		out := &struct {
			Body struct {
				Items      []Alert `json:"items"`
				NextCursor string  `json:"next_cursor,omitempty"`
			}
		}{}
		out.Body.Items = make([]Alert, 0, len(as))
		for _, x := range as {
			out.Body.Items = append(out.Body.Items, alert(x))
		}
		out.Body.Items, out.Body.NextCursor, err = page(out.Body.Items, in.PageQuery)
		return out, err
	})
	register(a, PermAlertsRead, huma.Operation{
		OperationID: "get-alert", Method: http.MethodGet, Path: "/api/v1/alerts/{id}",
		Summary: "Show an alert", Tags: []string{"Alerts"},
	}, func(ctx context.Context, in *alertPath) (*struct{ Body Alert }, error) {
		x, err := a.d.Store.GetAlert(ctx, in.ID)
		if err != nil {
			return nil, a.storeErr("alert "+in.ID, err)
		}
		return &struct{ Body Alert }{Body: alert(x)}, nil
	})
	register(a, PermAlertsWrite, huma.Operation{
		OperationID: "ack-alert", Method: http.MethodPost, Path: "/api/v1/alerts/{id}/ack",
		Summary: "Acknowledge an alert", Tags: []string{"Alerts"},
		Description: "Records who took it on and when; the alert stays open until cleared. 409 if it was acknowledged or cleared already.",
	}, func(ctx context.Context, in *alertPath) (*struct{ Body Alert }, error) {
		x, err := a.d.Store.AckAlert(ctx, in.ID, a.d.Now(), Principal(ctx))
		if err != nil {
			if errors.Is(err, store.ErrConflict) {
				return nil, huma.Error409Conflict(conflictText(err))
			}
			return nil, a.storeErr("alert "+in.ID, err)
		}
		a.d.Log.Info("alert acknowledged", "alert", x.ID, "type", x.Type, "by", Principal(ctx))
		return &struct{ Body Alert }{Body: alert(x)}, nil
	})
	register(a, PermAlertsWrite, huma.Operation{
		OperationID: "clear-alert", Method: http.MethodPost, Path: "/api/v1/alerts/{id}/clear",
		Summary: "Clear an alert", Tags: []string{"Alerts"},
		Description: "Records who cleared it and when. A clock-drift alert is raised again if the next heartbeat still drifts.",
	}, func(ctx context.Context, in *alertPath) (*struct{ Body Alert }, error) {
		x, err := a.d.Store.ClearAlert(ctx, in.ID, a.d.Now(), Principal(ctx))
		if err != nil {
			return nil, a.changeErr("alert "+in.ID, "cleared", err)
		}
		a.d.Log.Info("alert cleared", "alert", x.ID, "type", x.Type, "by", Principal(ctx))
		return &struct{ Body Alert }{Body: alert(x)}, nil
	})
}

type settingsOut struct {
	ETag string            `header:"ETag" doc:"Send it back in If-Match to change settings only if nobody else did meanwhile."`
	Body map[string]string `doc:"Setting key → value."`
}

func etag(version string) string { return `"` + version + `"` }

func (a *API) registerSettings() {
	register(a, PermSettingsRead, huma.Operation{
		OperationID: "get-settings", Method: http.MethodGet, Path: "/api/v1/settings",
		Summary: "Show settings", Tags: []string{"Settings"},
	}, func(ctx context.Context, _ *struct{}) (*settingsOut, error) {
		stored, err := a.d.Store.Settings(ctx)
		if err != nil {
			return nil, a.storeErr("settings", err)
		}
		cur, err := settings.FromMap(stored)
		if err != nil {
			return nil, a.storeErr("settings", err)
		}
		v := stored[store.SettingVersion]
		if v == "" {
			v = "0"
		}
		return &settingsOut{ETag: etag(v), Body: cur.Map()}, nil
	})
	register(a, PermSettingsWrite, huma.Operation{
		OperationID: "update-settings", Method: http.MethodPatch, Path: "/api/v1/settings",
		Summary: "Change settings", Tags: []string{"Settings"},
		Description: "Only the keys given change. Every value is checked before any is stored. With If-Match (the ETag of GET), the change is refused with 412 if the settings changed meanwhile.",
	}, func(ctx context.Context, in *struct {
		IfMatch string `header:"If-Match" doc:"ETag from GET /api/v1/settings."`
		Body    map[string]string
	}) (*settingsOut, error) {
		stored, err := a.d.Store.Settings(ctx)
		if err != nil {
			return nil, a.storeErr("settings", err)
		}
		cur, err := settings.FromMap(stored)
		if err != nil {
			return nil, a.storeErr("settings", err)
		}
		next, err := cur.Apply(in.Body)
		if err != nil {
			return nil, huma.Error422UnprocessableEntity("invalid settings", &huma.ErrorDetail{Location: "body", Message: err.Error()})
		}
		want := strings.Trim(strings.TrimPrefix(strings.TrimSpace(in.IfMatch), "W/"), `"`)
		if in.IfMatch == "*" {
			want = ""
		}
		v, err := a.d.Store.UpdateSettings(ctx, want, next.Map())
		if errors.Is(err, store.ErrConflict) {
			return nil, huma.Error412PreconditionFailed("the settings changed since you read them (If-Match " + in.IfMatch + "); read them again and reapply your change")
		}
		if err != nil {
			return nil, a.storeErr("settings", err)
		}
		a.d.Fleet.SetSettings(next)
		a.changed(ctx)
		a.d.Log.Info("settings changed", "by", Principal(ctx), "changes", in.Body)
		note(ctx, "settings", in.Body)
		return &settingsOut{ETag: etag(v), Body: next.Map()}, nil
	})
}

// CA is the manager's certificate authority, public part.
type CA struct {
	Fingerprint string `json:"fingerprint" doc:"SHA-256 of the CA certificate; give it to agents with --ca-fingerprint."`
	Certificate string `json:"certificate" doc:"PEM."`
}

func (a *API) registerCA() {
	register(a, PermCARead, huma.Operation{
		OperationID: "get-ca", Method: http.MethodGet, Path: "/api/v1/ca",
		Summary: "Show the manager CA", Tags: []string{"Manager"},
	}, func(ctx context.Context, _ *struct{}) (*struct{ Body CA }, error) {
		return &struct{ Body CA }{Body: CA{Fingerprint: a.d.CAFingerprint, Certificate: a.d.CAPEM}}, nil
	})
}
