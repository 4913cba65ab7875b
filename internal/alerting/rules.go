// Package alerting turns events into alerts and alerts into notifications.
//
// Administrators' rules ("20 firewall denies from one source within a
// minute") are evaluated on the stream of events as the manager stores
// them, not by polling the telemetry store: an alert is raised the moment
// the threshold is crossed, and a burst costs a few map updates. Built-in
// rules do the same for events the product knows (events dropped, a policy
// that failed to apply). Every raised alert is written together with its
// notifications (the outbox), so none is lost between the two.
package alerting

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/yagura/yagura/internal/telemetry"
)

// Definition is what an alert rule watches for. It is stored as JSON.
type Definition struct {
	Filter Filter `json:"filter"`
	// GroupBy counts separately per value: "" (all matching events
	// together), "computer", or "data.FIELD" for a top-level field of the
	// event's data (e.g. "data.src" for a firewall event's source address).
	GroupBy string `json:"group_by,omitempty"`
	// Threshold events within Window raise the alert.
	Threshold int      `json:"threshold"`
	Window    Duration `json:"window"`
	// Suppress: after an alert for a group, no new alert for that group
	// until this much time has passed, even if the first was cleared; while
	// an alert is open, further storms only count occurrences on it.
	// Default: the window.
	Suppress Duration `json:"suppress,omitempty"`
}

// Filter selects events. Empty lists match everything.
type Filter struct {
	Types       []string          `json:"types,omitempty"`
	MinSeverity string            `json:"min_severity,omitempty"`
	Computers   []string          `json:"computers,omitempty"`
	Data        map[string]string `json:"data,omitempty"` // top-level data fields that must equal these (as text)
	Text        string            `json:"text,omitempty"` // type or data contains it (ASCII case ignored)
}

// Duration is a time.Duration written as "1m30s" in JSON.
type Duration time.Duration

// MarshalJSON writes the duration as text.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads "90s", "1m" or "1h".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New(`want a duration in quotes, such as "1m" or "90s"`)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: want a number with a unit, such as 90s, 5m or 1h", s)
	}
	*d = Duration(v)
	return nil
}

// Limits keep a rule's memory bounded.
const (
	MaxThreshold = 100_000
	MaxWindow    = 24 * time.Hour
	// maxGroups caps the groups one rule tracks; beyond it the stalest are
	// forgotten (a flood of distinct sources cannot exhaust memory).
	maxGroups = 100_000
)

// ParseDefinition decodes and checks a definition, saying what is wrong.
func ParseDefinition(b []byte) (Definition, error) {
	var d Definition
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return d, fmt.Errorf("alert rule definition: %w", err)
	}
	return d, d.Validate()
}

// Validate says what is wrong with d.
func (d Definition) Validate() error {
	var errs []error
	if d.Threshold < 1 || d.Threshold > MaxThreshold {
		errs = append(errs, fmt.Errorf("threshold %d: between 1 and %d", d.Threshold, MaxThreshold))
	}
	if w := time.Duration(d.Window); w < time.Second || w > MaxWindow {
		errs = append(errs, fmt.Errorf("window %s: between 1s and %s", w, MaxWindow))
	}
	if d.Suppress < 0 || time.Duration(d.Suppress) > 30*24*time.Hour {
		errs = append(errs, fmt.Errorf("suppress %s: between 0 and 720h", time.Duration(d.Suppress)))
	}
	switch {
	case d.GroupBy == "", d.GroupBy == "computer":
	case strings.HasPrefix(d.GroupBy, "data.") && validField(strings.TrimPrefix(d.GroupBy, "data.")):
	default:
		errs = append(errs, fmt.Errorf(`group_by %q: want "", "computer" or "data.FIELD" (letters, digits, _ and -)`, d.GroupBy))
	}
	if d.Filter.MinSeverity != "" && telemetry.SeverityRank(d.Filter.MinSeverity) == 0 {
		errs = append(errs, fmt.Errorf("filter.min_severity %q: want critical, error, warning or info", d.Filter.MinSeverity))
	}
	for k := range d.Filter.Data {
		if !validField(k) {
			errs = append(errs, fmt.Errorf("filter.data key %q: letters, digits, _ and - only", k))
		}
	}
	if len(d.Filter.Text) > 200 {
		errs = append(errs, errors.New("filter.text: at most 200 bytes"))
	}
	return errors.Join(errs...)
}

func validField(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// event is an event whose data is decoded when a rule first needs a field,
// once for all rules: most events fail a rule on their type, and decoding
// every event's JSON would be the ingest path's largest cost.
type event struct {
	telemetry.Event
	data    map[string]any // nil when the data is empty or not an object
	decoded bool
}

func decode(e telemetry.Event) *event { return &event{Event: e} }

// fields returns the decoded data.
func (e *event) fields() map[string]any {
	if !e.decoded {
		e.decoded = true
		if e.Data != "" {
			_ = json.Unmarshal([]byte(e.Data), &e.data)
		}
	}
	return e.data
}

// field returns a data field as text: strings as they are, numbers and
// booleans in JSON form.
func (e *event) field(name string) (string, bool) {
	v, ok := e.fields()[name]
	if !ok || v == nil {
		return "", false
	}
	switch v := v.(type) {
	case string:
		return v, true
	case float64, bool:
		b, _ := json.Marshal(v)
		return string(b), true
	}
	return "", false
}

func (f Filter) match(e *event) bool {
	if len(f.Types) > 0 && !slices.Contains(f.Types, e.Type) {
		return false
	}
	if f.MinSeverity != "" && telemetry.SeverityRank(e.Severity) < telemetry.SeverityRank(f.MinSeverity) {
		return false
	}
	if len(f.Computers) > 0 && !slices.Contains(f.Computers, e.ComputerID) {
		return false
	}
	for k, want := range f.Data {
		if got, ok := e.field(k); !ok || got != want {
			return false
		}
	}
	if f.Text != "" {
		t := strings.ToLower(f.Text)
		if !strings.Contains(strings.ToLower(e.Type), t) && !strings.Contains(strings.ToLower(e.Data), t) {
			return false
		}
	}
	return true
}

// group returns the key an event counts under and how an alert names it
// ("src=203.0.113.5"); ok is false when the event lacks the field.
func (d Definition) group(e *event) (key, subject, computer string, ok bool) {
	switch {
	case d.GroupBy == "":
		return "", "", "", true
	case d.GroupBy == "computer":
		return e.ComputerID, "", e.ComputerID, true
	default:
		name := strings.TrimPrefix(d.GroupBy, "data.")
		v, ok := e.field(name)
		if !ok {
			return "", "", "", false
		}
		return v, name + "=" + v, "", true
	}
}

// window counts one group's recent events by event time, oldest first.
// Times arrive a little out of order (several agents, clocks); they are
// kept sorted, and an event completes a burst if any run of Threshold
// events that includes it spans at most the window.
type window struct {
	times    []time.Time
	comps    []string        // the computer of each time
	ids      []string        // and its event's computer/ID …
	held     map[string]bool // … as a set: a resent event counts once
	lastSeen time.Time       // newest event time seen, for forgetting idle groups
	computer string
	// late counts events older than a window before lastSeen: an agent back
	// after days offline sends its backlog oldest first, so a burst in the
	// past is found among the late events themselves.
	late   *window
	isLate bool // a late window has no late window of its own
}

// add records an event of computer comp at t and reports whether it
// completes a burst, and the computer all of the burst's events came from
// ("" when several).
func (g *window) add(t time.Time, comp, id string, threshold int, w time.Duration) (bool, string) {
	if !g.isLate && !g.lastSeen.IsZero() && t.Before(g.lastSeen.Add(-w)) {
		if g.late == nil {
			g.late = &window{isLate: true}
		}
		return g.late.add(t, comp, id, threshold, w)
	}
	// An agent resends a batch whose acknowledgement it lost (or that
	// failed with others in a group commit): its events count once.
	key := comp + "/" + id
	if g.held[key] {
		return false, ""
	}
	if g.held == nil {
		g.held = map[string]bool{}
	}
	g.held[key] = true
	i, _ := slices.BinarySearchFunc(g.times, t, func(a, b time.Time) int { return a.Compare(b) })
	g.times = slices.Insert(g.times, i, t)
	g.comps = slices.Insert(g.comps, i, comp)
	g.ids = slices.Insert(g.ids, i, key)
	if t.After(g.lastSeen) {
		g.lastSeen = t
	}
	fired, common := false, ""
	for j := max(0, i-threshold+1); j <= i && j+threshold-1 < len(g.times); j++ {
		if g.times[j+threshold-1].Sub(g.times[j]) <= w {
			fired, common = true, g.comps[j]
			for _, c := range g.comps[j : j+threshold] {
				if c != common {
					common = ""
					break
				}
			}
			break
		}
	}
	// Forget what no future burst can include (older than a window before
	// the newest), and never hold more than a burst's worth: the newest
	// Threshold times decide every burst to come that ends at the newest.
	cut := g.lastSeen.Add(-w)
	k := 0
	for k < len(g.times) && g.times[k].Before(cut) {
		k++
	}
	k = max(k, len(g.times)-threshold)
	if k > 0 {
		for _, old := range g.ids[:k] {
			delete(g.held, old)
		}
		g.times = slices.Delete(g.times, 0, k)
		g.comps = slices.Delete(g.comps, 0, k)
		g.ids = slices.Delete(g.ids, 0, k)
	}
	return fired, common
}

// forget removes an event counted earlier (its alert could not be stored:
// the resent batch must be able to complete the burst again).
func (g *window) forget(comp, id string) {
	key := comp + "/" + id
	if g.late != nil {
		g.late.forget(comp, id)
	}
	if !g.held[key] {
		return
	}
	delete(g.held, key)
	if i := slices.Index(g.ids, key); i >= 0 {
		g.times = slices.Delete(g.times, i, i+1)
		g.comps = slices.Delete(g.comps, i, i+1)
		g.ids = slices.Delete(g.ids, i, i+1)
	}
}
