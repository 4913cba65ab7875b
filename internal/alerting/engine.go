package alerting

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/yagura/yagura/internal/store"
	"github.com/yagura/yagura/internal/telemetry"
)

// Raiser stores an alert with its notifications; suppress is the rule's
// suppression window (0: none).
type Raiser interface {
	Raise(ctx context.Context, a store.Alert, suppress time.Duration) (store.Alert, bool, error)
}

// Built-in alert types raised from events.
const (
	AlertEventsDropped   = "events-dropped"
	AlertPolicyFailed    = "policy-failed"
	AlertIsolationFailed = "isolation-failed"
	// AlertNotificationFailed: a channel's notification was given up on.
	AlertNotificationFailed = "notification-failed"
	// RuleAlertPrefix starts the type of an administrator rule's alerts:
	// "rule:" + the rule's ID.
	RuleAlertPrefix = "rule:"
)

// builtin is a rule the product ships: one matching event raises an alert
// for its computer.
type builtin struct {
	eventType, alertType, severity string
	message                        func(hostname string, e *event) string
}

var builtins = []builtin{
	{"events-dropped", AlertEventsDropped, store.SeverityWarning, func(h string, e *event) string {
		n, _ := e.field("dropped")
		return fmt.Sprintf("The agent on %s dropped %s events: its queue was full while the manager was out of reach", h, orUnknown(n))
	}},
	{"policy-failed", AlertPolicyFailed, "error", func(h string, e *event) string {
		msg, _ := e.field("error")
		return fmt.Sprintf("The agent on %s could not apply its policy: %s", h, orUnknown(msg))
	}},
	{"isolation-rolled-back", AlertIsolationFailed, "error", func(h string, e *event) string {
		msg, _ := e.field("error")
		return fmt.Sprintf("Isolating %s failed and was rolled back: %s", h, orUnknown(msg))
	}},
}

// builtinSuppress keeps one agent's repeated failures to one alert an hour.
const builtinSuppress = time.Hour

func orUnknown(s string) string {
	if s == "" {
		return "(unknown)"
	}
	return s
}

// Engine evaluates alert rules on events as they are stored. It implements
// telemetry.Observer.
type Engine struct {
	raiser   Raiser
	hostname func(id string) string
	log      *slog.Logger
	now      func() time.Time

	mu    sync.Mutex
	rules map[string]*compiled
}

type compiled struct {
	rule   store.AlertRule
	def    Definition
	groups map[string]*window
	// quiet holds, per group, until when a new burst raises nothing: the
	// store counts it as an occurrence only once that passes, so a storm
	// of thousands of events costs one store write, not thousands.
	quiet map[string]time.Time
}

// NewEngine returns an engine raising through r. hostname names computers
// in messages (may return "").
func NewEngine(r Raiser, hostname func(id string) string, log *slog.Logger) *Engine {
	return &Engine{raiser: r, hostname: hostname, log: log, now: time.Now, rules: map[string]*compiled{}}
}

// SetRules replaces the rules, keeping the counts of rules that did not
// change. Disabled rules and rules whose definition does not parse are
// skipped (the latter logged: the API refuses them, so only a hand-edited
// store has them).
func (en *Engine) SetRules(rules []store.AlertRule) {
	en.mu.Lock()
	defer en.mu.Unlock()
	next := make(map[string]*compiled, len(rules))
	for _, r := range rules {
		if !r.Enabled {
			continue
		}
		if cur, ok := en.rules[r.ID]; ok && cur.rule.Version == r.Version {
			next[r.ID] = cur
			continue
		}
		d, err := ParseDefinition([]byte(r.Definition))
		if err != nil {
			en.log.Error("alert rule skipped: its definition is invalid", "rule", r.ID, "name", r.Name, "err", err)
			continue
		}
		next[r.ID] = &compiled{rule: r, def: d, groups: map[string]*window{}, quiet: map[string]time.Time{}}
	}
	en.rules = next
}

type fire struct {
	alert    store.Alert
	suppress time.Duration
	// rule, key and trigger say what to undo if the raise fails (nil rule
	// for built-ins): the quiet period, and the count of the event that
	// completed the burst, so the resent batch raises it.
	rule    *compiled
	key     string
	trigger telemetry.Event
}

// ObserveEvents counts events against the rules and raises the alerts whose
// threshold they cross.
func (en *Engine) ObserveEvents(ctx context.Context, evs []telemetry.Event) error {
	now := en.now()
	var fires []fire
	for _, e := range evs {
		for _, b := range builtins {
			if e.Type == b.eventType {
				ev := decode(e)
				fires = append(fires, en.builtinFire(b, ev, now))
			}
		}
	}
	en.mu.Lock()
	if len(en.rules) > 0 {
		for _, e := range evs {
			ev := decode(e)
			for _, c := range en.rules {
				if f, ok := en.count(c, ev, now); ok {
					fires = append(fires, f)
				}
			}
		}
	}
	en.mu.Unlock()
	var errs []error
	for _, f := range fires {
		a, raised, err := en.raiser.Raise(ctx, f.alert, f.suppress)
		if err != nil {
			// The batch fails and the agent resends it: that copy must be
			// able to raise the alert, so the quiet period did not start.
			if f.rule != nil {
				en.mu.Lock()
				delete(f.rule.quiet, f.key)
				if g := f.rule.groups[f.key]; g != nil {
					g.forget(f.trigger.ComputerID, f.trigger.ID)
				}
				en.mu.Unlock()
			}
			errs = append(errs, fmt.Errorf("raise %s alert: %w", f.alert.Type, err))
			continue
		}
		if raised {
			en.log.Warn("alert raised", "type", a.Type, "computer", a.ComputerID, "subject", a.Subject, "alert", a.ID, "message", a.Message)
		}
	}
	return errors.Join(errs...)
}

func (en *Engine) name(id string) string {
	if id == "" {
		return "the manager"
	}
	if h := en.hostname(id); h != "" {
		return fmt.Sprintf("%s (%s)", h, id)
	}
	return id
}

func (en *Engine) builtinFire(b builtin, e *event, now time.Time) fire {
	return fire{alert: store.Alert{
		ID: NewID(), Type: b.alertType, Severity: b.severity, ComputerID: e.ComputerID,
		Message: b.message(en.name(e.ComputerID), e), RaisedAt: now, Data: mustJSON(map[string]any{"event": e.ID, "time": e.Time}),
	}, suppress: builtinSuppress}
}

func (en *Engine) count(c *compiled, e *event, now time.Time) (fire, bool) {
	if !c.def.Filter.match(e) {
		return fire{}, false
	}
	key, subject, computer, ok := c.def.group(e)
	if !ok {
		return fire{}, false
	}
	g := c.groups[key]
	if g == nil {
		if len(c.groups) >= maxGroups {
			c.forgetStalest()
		}
		g = &window{computer: computer}
		c.groups[key] = g
	}
	w := time.Duration(c.def.Window)
	fired, burstComputer := g.add(e.Time, e.ComputerID, e.ID, c.def.Threshold, w)
	if !fired {
		return fire{}, false
	}
	suppress := time.Duration(c.def.Suppress)
	if suppress == 0 {
		suppress = w
	}
	if until, ok := c.quiet[key]; ok && now.Before(until) {
		return fire{}, false
	}
	c.quiet[key] = now.Add(suppress)
	first, last := g.times[max(0, len(g.times)-c.def.Threshold)], g.times[len(g.times)-1]
	msg := fmt.Sprintf("Rule %q: %d events within %s", c.rule.Name, c.def.Threshold, w)
	if subject != "" {
		msg += " (" + subject + ")"
	}
	data := map[string]any{"rule": c.rule.Name, "count": c.def.Threshold, "window": w.String(), "first": first, "last": last, "last_event": e.ID}
	switch {
	case computer != "":
		msg += " on " + en.name(computer)
	case burstComputer != "":
		// Grouped by a data field, the alert belongs to no computer (its
		// key must not change with where the next burst comes from), but
		// when the whole burst came from one, say which.
		msg += " on " + en.name(burstComputer)
		data["computer_id"] = burstComputer
	}
	return fire{alert: store.Alert{
		ID: NewID(), Type: RuleAlertPrefix + c.rule.ID, Severity: c.rule.Severity, ComputerID: computer, Subject: subject,
		RuleID: c.rule.ID, Message: msg, RaisedAt: now, Data: mustJSON(data),
	}, suppress: suppress, rule: c, key: key, trigger: e.Event}, true
}

// forgetStalest drops the tenth of groups seen least recently.
func (c *compiled) forgetStalest() {
	cut := time.Time{}
	// Find a cut-off by sampling: exact order is not worth a sort here.
	n := 0
	for _, g := range c.groups {
		if cut.IsZero() || g.lastSeen.Before(cut) {
			cut = g.lastSeen
		}
		if n++; n > 100 {
			break
		}
	}
	removed := 0
	for k, g := range c.groups {
		if !g.lastSeen.After(cut) || removed < len(c.groups)/10 {
			delete(c.groups, k)
			delete(c.quiet, k)
			removed++
		}
	}
}

// Sweep forgets groups idle for longer than their rule's window, measured
// by the newest event time each saw against now. Call it now and then.
func (en *Engine) Sweep() {
	now := en.now()
	en.mu.Lock()
	defer en.mu.Unlock()
	for _, c := range en.rules {
		w := time.Duration(c.def.Window)
		for k, g := range c.groups {
			if now.Sub(g.lastSeen) > w {
				delete(c.groups, k)
			}
		}
		for k, until := range c.quiet {
			if now.After(until) {
				delete(c.quiet, k)
			}
		}
	}
}

// Run sweeps every minute until ctx ends.
func (en *Engine) Run(ctx context.Context) error {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			en.Sweep()
		}
	}
}

// NewID returns a new alert ID (UUIDv7).
func NewID() string {
	id, err := uuid.NewV7()
	if err != nil {
		// Only when the system's randomness fails; then nothing is safe.
		panic(fmt.Sprintf("new alert ID: %v", err))
	}
	return id.String()
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
