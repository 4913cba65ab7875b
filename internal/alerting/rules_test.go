package alerting

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/store"
	"github.com/yagura/yagura/internal/telemetry"
)

func TestParseDefinition(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string
	}{
		{`{"filter":{"types":["firewall"],"data":{"action":"deny"}},"group_by":"data.src","threshold":20,"window":"1m"}`, ""},
		{`{"threshold":1,"window":"1s"}`, ""},
		{`{"threshold":0,"window":"1m"}`, "threshold 0"},
		{`{"threshold":5,"window":"10ms"}`, "window 10ms"},
		{`{"threshold":5,"window":"25h"}`, "window 25h0m0s"},
		{`{"threshold":5,"window":"1 minute"}`, "want a number with a unit"},
		{`{"threshold":5,"window":60}`, "duration in quotes"},
		{`{"threshold":5,"window":"1m","group_by":"data.src ip"}`, "group_by"},
		{`{"threshold":5,"window":"1m","group_by":"host"}`, "group_by"},
		{`{"threshold":5,"window":"1m","filter":{"min_severity":"panic"}}`, "min_severity"},
		{`{"threshold":5,"window":"1m","filter":{"data":{"a b":"x"}}}`, "filter.data key"},
		{`{"threshold":5,"window":"1m","suppress":"-1m"}`, "suppress"},
		{`{"threshold":5,"window":"1m","extra":1}`, "unknown field"},
		{`[]`, "alert rule definition"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseDefinition([]byte(tt.in))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestWindow(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	tests := []struct {
		name  string
		times []int // seconds after t0, in arrival order
		want  []bool
	}{
		{"three within a minute", []int{0, 10, 20}, []bool{false, false, true}},
		{"spread out", []int{0, 40, 80, 120}, []bool{false, false, false, false}},
		{"edge of the window counts", []int{0, 30, 60}, []bool{false, false, true}},
		{"late arrivals complete a burst in the past", []int{600, 0, 5, 10}, []bool{false, false, false, true}},
		{"late arrival between two", []int{0, 50, 20}, []bool{false, false, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var g window
			for i, s := range tt.times {
				if got, _ := g.add(at(s), "c1", fmt.Sprint(i), 3, time.Minute); got != tt.want[i] {
					t.Fatalf("event %d (t+%ds): fired %v, want %v (times %v)", i, s, got, tt.want[i], g.times)
				}
			}
			if len(g.times) > 3 {
				t.Fatalf("window holds %d times, more than the threshold", len(g.times))
			}
		})
	}
}

type fakeRaiser struct {
	mu     sync.Mutex
	alerts []store.Alert
	open   map[string]bool
}

func (f *fakeRaiser) Raise(_ context.Context, a store.Alert, _ time.Duration) (store.Alert, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := a.Type + "|" + a.ComputerID + "|" + a.Subject
	if f.open == nil {
		f.open = map[string]bool{}
	}
	if f.open[k] {
		return a, false, nil
	}
	f.open[k] = true
	f.alerts = append(f.alerts, a)
	return a, true, nil
}

func denies(src string, n int, from time.Time, step time.Duration, seq *int) []telemetry.Event {
	var out []telemetry.Event
	for i := range n {
		*seq++
		out = append(out, telemetry.Event{ComputerID: "c1", ID: fmt.Sprint(*seq), Type: "firewall", Severity: "warning",
			Time: from.Add(time.Duration(i) * step), Data: fmt.Sprintf(`{"action":"deny","src":%q,"dpt":22}`, src)})
	}
	return out
}

func TestEngineRule(t *testing.T) {
	r := &fakeRaiser{}
	en := NewEngine(r, func(string) string { return "web01" }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	now := time.Now().UTC()
	en.now = func() time.Time { return now }
	en.SetRules([]store.AlertRule{{
		ID: "r1", Name: "SSH brute force", Enabled: true, Severity: "critical", Version: 1,
		Definition: `{"filter":{"types":["firewall"],"data":{"action":"deny","dpt":"22"}},"group_by":"data.src","threshold":20,"window":"1m","suppress":"10m"}`,
	}, {
		ID: "r2", Name: "off", Enabled: false, Version: 1, Definition: `{"threshold":1,"window":"1m"}`,
	}})
	seq := 0
	ctx := t.Context()
	// 19 from one source: nothing. 20 over more than a minute: nothing.
	must(t, en.ObserveEvents(ctx, denies("203.0.113.5", 19, now, time.Second, &seq)))
	must(t, en.ObserveEvents(ctx, denies("198.51.100.7", 20, now, 4*time.Second, &seq)))
	if len(r.alerts) != 0 {
		t.Fatalf("alerts raised below the threshold: %+v", r.alerts)
	}
	// The 20th within the minute raises one alert; a storm of 1,000 more
	// raises no other (suppressed), in a single store call.
	must(t, en.ObserveEvents(ctx, denies("203.0.113.5", 1, now.Add(19*time.Second), time.Second, &seq)))
	must(t, en.ObserveEvents(ctx, denies("203.0.113.5", 1000, now.Add(20*time.Second), time.Millisecond, &seq)))
	if len(r.alerts) != 1 {
		t.Fatalf("%d alerts, want 1: %+v", len(r.alerts), r.alerts)
	}
	a := r.alerts[0]
	if a.Type != "rule:r1" || a.Subject != "src=203.0.113.5" || a.Severity != "critical" || a.RuleID != "r1" || !strings.Contains(a.Message, "SSH brute force") {
		t.Fatalf("alert %+v", a)
	}
	// Grouped by source, the alert belongs to no computer, but the burst
	// came from one: the message and the notification say which.
	if a.ComputerID != "" || AlertComputer(a) != "c1" || !strings.Contains(a.Message, "web01") {
		t.Fatalf("alert %+v: computer %q", a, AlertComputer(a))
	}
	if m := AlertMessage(a, "web01"); m.ComputerID != "c1" || m.Hostname != "web01" {
		t.Fatalf("notification %+v", m)
	}
	// Another source is its own group.
	must(t, en.ObserveEvents(ctx, denies("192.0.2.9", 20, now, time.Second, &seq)))
	if len(r.alerts) != 2 || r.alerts[1].Subject != "src=192.0.2.9" {
		t.Fatalf("second source: %+v", r.alerts)
	}
	// A burst from several computers names none.
	mixed := denies("192.0.2.77", 20, now, time.Second, &seq)
	for i := range mixed {
		mixed[i].ComputerID = fmt.Sprint("c", i%2)
	}
	must(t, en.ObserveEvents(ctx, mixed))
	if len(r.alerts) != 3 || AlertComputer(r.alerts[2]) != "" {
		t.Fatalf("mixed burst: %+v", r.alerts)
	}
	// Events without the grouped field, or not matching the filter, do not count.
	var other []telemetry.Event
	for i := range 50 {
		other = append(other, telemetry.Event{ComputerID: "c1", ID: fmt.Sprint("o", i), Type: "firewall", Severity: "info", Time: now, Data: `{"action":"allow","src":"203.0.113.77","dpt":22}`})
	}
	must(t, en.ObserveEvents(ctx, other))
	if len(r.alerts) != 3 {
		t.Fatalf("non-matching events raised alerts: %+v", r.alerts[3:])
	}
}

func TestEngineBuiltins(t *testing.T) {
	r := &fakeRaiser{}
	en := NewEngine(r, func(string) string { return "db01" }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	must(t, en.ObserveEvents(t.Context(), []telemetry.Event{
		{ComputerID: "c9", ID: "1", Type: "events-dropped", Severity: "warning", Time: time.Now(), Data: `{"dropped":1200}`},
		{ComputerID: "c9", ID: "2", Type: "policy-failed", Severity: "error", Time: time.Now(), Data: `{"error":"nft: table busy"}`},
		{ComputerID: "c9", ID: "3", Type: "firewall", Severity: "info", Time: time.Now()},
	}))
	if len(r.alerts) != 2 {
		t.Fatalf("alerts %+v, want events-dropped and policy-failed", r.alerts)
	}
	if a := r.alerts[0]; a.Type != AlertEventsDropped || a.ComputerID != "c9" || !strings.Contains(a.Message, "1200") || !strings.Contains(a.Message, "db01") {
		t.Fatalf("events-dropped alert %+v", a)
	}
	if a := r.alerts[1]; a.Type != AlertPolicyFailed || !strings.Contains(a.Message, "table busy") {
		t.Fatalf("policy-failed alert %+v", a)
	}
}

func TestAlertMessageJapanese(t *testing.T) {
	m := AlertMessage(store.Alert{ID: "a1", Type: "computer-offline", Severity: "critical", ComputerID: "c1", Message: "Computer web01 missed 3 heartbeats", RaisedAt: time.Now()}, "web01")
	if !strings.Contains(m.Title, "コンピューターがオフラインです") || !strings.Contains(m.Title, "重大 / critical") || !strings.Contains(m.Title, "web01") {
		t.Fatalf("title %q", m.Title)
	}
	if !strings.Contains(m.Text, "missed 3 heartbeats") || m.ID != "a1" || m.Kind != "alert" {
		t.Fatalf("message %+v", m)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// failOnce fails its first raise, as a busy store would.
type failOnce struct {
	fakeRaiser
	failed bool
}

func (f *failOnce) Raise(ctx context.Context, a store.Alert, s time.Duration) (store.Alert, bool, error) {
	if !f.failed {
		f.failed = true
		return store.Alert{}, false, fmt.Errorf("database is locked")
	}
	return f.fakeRaiser.Raise(ctx, a, s)
}

// TestEngineResends: a batch resent after a failed raise raises the alert
// (the quiet period had not started), and resent events count once.
func TestEngineResends(t *testing.T) {
	r := &failOnce{}
	en := NewEngine(r, func(string) string { return "" }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	en.SetRules([]store.AlertRule{{ID: "r1", Name: "three", Enabled: true, Severity: "warning", Version: 1,
		Definition: `{"filter":{"types":["firewall"]},"group_by":"data.src","threshold":3,"window":"1m","suppress":"1h"}`}})
	seq := 0
	batch := denies("203.0.113.5", 3, time.Now(), time.Second, &seq)
	if err := en.ObserveEvents(t.Context(), batch); err == nil {
		t.Fatal("the failed raise was not reported")
	}
	must(t, en.ObserveEvents(t.Context(), batch))
	if len(r.alerts) != 1 {
		t.Fatalf("after the resend: %d alerts, want 1", len(r.alerts))
	}
	// Two events, sent twice: still below the threshold of three.
	two := denies("198.51.100.1", 2, time.Now(), time.Second, &seq)
	must(t, en.ObserveEvents(t.Context(), two))
	must(t, en.ObserveEvents(t.Context(), two))
	if len(r.alerts) != 1 {
		t.Fatalf("resent events counted twice: %+v", r.alerts)
	}
}
