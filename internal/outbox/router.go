// Package outbox delivers notifications to channels (mail, syslog,
// webhooks) through the state store's outbox, so that none is dropped: the
// [Router] says which channels an alert or event goes to, callers enqueue
// one notification per channel in the transaction that records the cause,
// and the [Dispatcher] sends them, per channel in order, retrying with
// backoff while a receiver is down, on as many manager nodes as share the
// store.
//
// It does not know how to send: a [Dialer] makes a [Sender] from a
// channel's configuration (the notify package's senders, adapted by the
// server). Only manager-side code may import it.
package outbox

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"time"

	"github.com/yagura/yagura/internal/store"
)

// Sources a route selects from.
const (
	SourceAlerts = "alerts"
	SourceEvents = "events"
)

// Route selects what a channel receives. A channel's routes are kept in
// the store as a JSON array of them ([store.Channel.Routes]).
type Route struct {
	// Source is SourceAlerts or SourceEvents.
	Source string `json:"source"`
	// Types are path.Match patterns on the alert or event type
	// ("ssh-*"); empty: every type.
	Types []string `json:"types,omitempty"`
	// MinSeverity is the least severity sent: critical > error > warning
	// > info. Empty: every severity, unknown ones included.
	MinSeverity string `json:"min_severity,omitempty"`
}

// severityRank orders severities; unknown ones rank below info.
func severityRank(s string) int {
	switch s {
	case "critical":
		return 4
	case "error":
		return 3
	case "warning":
		return 2
	case "info":
		return 1
	}
	return 0
}

// Validate reports what is wrong with a route.
func (r Route) Validate() error {
	if r.Source != SourceAlerts && r.Source != SourceEvents {
		return fmt.Errorf("source %q must be %q or %q", r.Source, SourceAlerts, SourceEvents)
	}
	for _, p := range r.Types {
		if p == "" {
			return errors.New("types: empty pattern")
		}
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("types: pattern %q: %w", p, err)
		}
	}
	if r.MinSeverity != "" && severityRank(r.MinSeverity) == 0 {
		return fmt.Errorf("min_severity %q must be critical, error, warning or info", r.MinSeverity)
	}
	return nil
}

// Match reports whether the route selects an alert or event.
func (r Route) Match(source, typ, severity string) bool {
	if r.Source != source {
		return false
	}
	if r.MinSeverity != "" && severityRank(severity) < severityRank(r.MinSeverity) {
		return false
	}
	if len(r.Types) == 0 {
		return true
	}
	return slices.ContainsFunc(r.Types, func(p string) bool {
		ok, _ := path.Match(p, typ) // validated: no error
		return ok
	})
}

// ParseRoutes decodes and validates a channel's routes. Unknown fields are
// an error, so a misspelt key does not silently route everything; empty
// text is no routes.
func ParseRoutes(s string) ([]Route, error) {
	if s == "" {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.DisallowUnknownFields()
	var rs []Route
	if err := dec.Decode(&rs); err != nil {
		return nil, fmt.Errorf("decode routes: %w", err)
	}
	if dec.More() {
		return nil, errors.New("decode routes: trailing data")
	}
	for i, r := range rs {
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("route %d: %w", i, err)
		}
	}
	return rs, nil
}

// Router picks the channels an alert or event goes to. It is immutable
// and safe for concurrent use; build a new one when channels change.
type Router struct {
	channels []routed
}

type routed struct {
	ch     store.Channel
	routes []Route
}

// NewRouter builds a router over the enabled channels, in the given order.
// A channel whose routes do not parse is left out and named in the error;
// the router still routes to the others.
func NewRouter(channels []store.Channel) (*Router, error) {
	r := &Router{}
	var errs []error
	for _, ch := range channels {
		if !ch.Enabled {
			continue
		}
		rs, err := ParseRoutes(ch.Routes)
		if err != nil {
			errs = append(errs, fmt.Errorf("channel %q (%s): %w", ch.Name, ch.ID, err))
			continue
		}
		if len(rs) > 0 {
			r.channels = append(r.channels, routed{ch, rs})
		}
	}
	return r, errors.Join(errs...)
}

// Match returns the enabled channels one of whose routes selects an alert
// or event (source SourceAlerts or SourceEvents) of the given type and
// severity, each once.
func (r *Router) Match(source, typ, severity string) []store.Channel {
	var out []store.Channel
	for _, c := range r.channels {
		if slices.ContainsFunc(c.routes, func(rt Route) bool { return rt.Match(source, typ, severity) }) {
			out = append(out, c.ch)
		}
	}
	return out
}

// NotificationID derives the ID of the notification of key (what it is
// about: an alert ID, an event's computer and ID) to a channel, so that
// the same cause notifies a channel once however often it is enqueued.
func NotificationID(channelID, key string) string {
	h := sha256.New()
	h.Write([]byte(channelID))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Notifications makes the notifications of one message (payload, JSON) of
// the given kind about key to each channel, created at the given time.
func Notifications(channels []store.Channel, kind, key string, payload []byte, at time.Time) []store.Notification {
	out := make([]store.Notification, 0, len(channels))
	for _, ch := range channels {
		out = append(out, store.Notification{
			ID: NotificationID(ch.ID, key), ChannelID: ch.ID, Kind: kind, CreatedAt: at, Payload: string(payload),
		})
	}
	return out
}
