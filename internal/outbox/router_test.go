package outbox

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/yagura/yagura/internal/store"
)

func TestRouteMatch(t *testing.T) {
	tests := []struct {
		name                  string
		route                 Route
		source, typ, severity string
		want                  bool
	}{
		{"everything of a source", Route{Source: SourceAlerts}, SourceAlerts, "computer-offline", "critical", true},
		{"unknown severity with no minimum", Route{Source: SourceEvents}, SourceEvents, "x", "", true},
		{"other source", Route{Source: SourceAlerts}, SourceEvents, "computer-offline", "critical", false},
		{"exact type", Route{Source: SourceEvents, Types: []string{"auth-failed"}}, SourceEvents, "auth-failed", "info", true},
		{"other type", Route{Source: SourceEvents, Types: []string{"auth-failed"}}, SourceEvents, "auth-ok", "info", false},
		{"glob", Route{Source: SourceEvents, Types: []string{"ssh-*"}}, SourceEvents, "ssh-brute-force", "info", true},
		{"glob is anchored", Route{Source: SourceEvents, Types: []string{"ssh-*"}}, SourceEvents, "not-ssh-x", "info", false},
		{"one of several", Route{Source: SourceEvents, Types: []string{"a", "b?"}}, SourceEvents, "bc", "info", true},
		{"class", Route{Source: SourceEvents, Types: []string{"fw-[ad]*"}}, SourceEvents, "fw-drop", "info", true},
		{"at the minimum", Route{Source: SourceAlerts, MinSeverity: "warning"}, SourceAlerts, "t", "warning", true},
		{"above the minimum", Route{Source: SourceAlerts, MinSeverity: "warning"}, SourceAlerts, "t", "error", true},
		{"critical is highest", Route{Source: SourceAlerts, MinSeverity: "error"}, SourceAlerts, "t", "critical", true},
		{"below the minimum", Route{Source: SourceAlerts, MinSeverity: "warning"}, SourceAlerts, "t", "info", false},
		{"unknown severity with a minimum", Route{Source: SourceAlerts, MinSeverity: "info"}, SourceAlerts, "t", "debug", false},
		{"type and severity", Route{Source: SourceEvents, Types: []string{"fw-*"}, MinSeverity: "critical"}, SourceEvents, "fw-drop", "error", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.route.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if got := tt.route.Match(tt.source, tt.typ, tt.severity); got != tt.want {
				t.Errorf("%+v.Match(%q, %q, %q) = %v, want %v", tt.route, tt.source, tt.typ, tt.severity, got, tt.want)
			}
		})
	}
}

func TestParseRoutes(t *testing.T) {
	tests := []struct {
		name, in string
		want     []Route
		err      string // substring; empty: no error
	}{
		{"empty text", "", nil, ""},
		{"empty list", "[]", []Route{}, ""},
		{"full", `[{"source":"alerts","min_severity":"error"},{"source":"events","types":["ssh-*"]}]`,
			[]Route{{Source: SourceAlerts, MinSeverity: "error"}, {Source: SourceEvents, Types: []string{"ssh-*"}}}, ""},
		{"unknown source", `[{"source":"logs"}]`, nil, `route 0: source "logs"`},
		{"no source", `[{"types":["x"]}]`, nil, `source ""`},
		{"bad pattern", `[{"source":"events","types":["[x"]}]`, nil, `pattern "[x"`},
		{"empty pattern", `[{"source":"events","types":[""]}]`, nil, "empty pattern"},
		{"unknown severity", `[{"source":"alerts","min_severity":"high"}]`, nil, `min_severity "high"`},
		{"misspelt key", `[{"source":"alerts","minseverity":"error"}]`, nil, "unknown field"},
		{"not a list", `{"source":"alerts"}`, nil, "decode routes"},
		{"trailing data", `[] []`, nil, "trailing data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRoutes(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseRoutes(%s) = %v, %v; want an error containing %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRoutes(%s): %v", tt.in, err)
			}
			if d := cmp.Diff(got, tt.want); d != "" {
				t.Errorf("ParseRoutes(%s) (-got +want):\n%s", tt.in, d)
			}
		})
	}
}

func TestRouter(t *testing.T) {
	chs := []store.Channel{
		{ID: "1", Name: "soc", Enabled: true, Routes: `[{"source":"alerts"},{"source":"events","types":["ssh-*"],"min_severity":"warning"}]`},
		{ID: "2", Name: "pager", Enabled: true, Routes: `[{"source":"alerts","min_severity":"critical"}]`},
		{ID: "3", Name: "off", Enabled: false, Routes: `[{"source":"alerts"}]`},
		{ID: "4", Name: "broken", Enabled: true, Routes: `[{"source":"nope"}]`},
		{ID: "5", Name: "silent", Enabled: true},
		{ID: "6", Name: "siem", Enabled: true, Routes: `[{"source":"events"},{"source":"events","types":["ssh-*"]}]`},
	}
	r, err := NewRouter(chs)
	if err == nil || !strings.Contains(err.Error(), `channel "broken" (4)`) {
		t.Errorf("NewRouter: %v, want an error naming the broken channel", err)
	}
	tests := []struct {
		name                  string
		source, typ, severity string
		want                  []string
	}{
		{"critical alert", SourceAlerts, "computer-offline", "critical", []string{"1", "2"}},
		{"warning alert", SourceAlerts, "clock-drift", "warning", []string{"1"}},
		{"ssh event, once per channel", SourceEvents, "ssh-brute-force", "error", []string{"1", "6"}},
		{"ssh event below the minimum", SourceEvents, "ssh-login", "info", []string{"6"}},
		{"other event", SourceEvents, "fw-drop", "critical", []string{"6"}},
		{"unknown source", "logs", "x", "critical", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, ch := range r.Match(tt.source, tt.typ, tt.severity) {
				got = append(got, ch.ID)
			}
			if d := cmp.Diff(got, tt.want); d != "" {
				t.Errorf("Match(%q, %q, %q) (-got +want):\n%s", tt.source, tt.typ, tt.severity, d)
			}
		})
	}
}

func TestNotificationID(t *testing.T) {
	a := NotificationID("ch1", "alert-1")
	if len(a) != 32 || strings.Trim(a, "0123456789abcdef") != "" {
		t.Errorf("NotificationID = %q, want 32 hex digits", a)
	}
	if b := NotificationID("ch1", "alert-1"); b != a {
		t.Errorf("NotificationID is not deterministic: %q, %q", a, b)
	}
	// The separator keeps (channel, key) pairs apart.
	for _, other := range [][2]string{{"ch2", "alert-1"}, {"ch1", "alert-2"}, {"ch1a", "lert-1"}, {"ch", "1alert-1"}} {
		if NotificationID(other[0], other[1]) == a {
			t.Errorf("NotificationID(%q, %q) collides with (ch1, alert-1)", other[0], other[1])
		}
	}
}

func TestNotifications(t *testing.T) {
	at := time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)
	chs := []store.Channel{{ID: "a"}, {ID: "b"}}
	got := Notifications(chs, "alert", "alert-1", []byte(`{"id":"x"}`), at)
	want := []store.Notification{
		{ID: NotificationID("a", "alert-1"), ChannelID: "a", Kind: "alert", CreatedAt: at, Payload: `{"id":"x"}`},
		{ID: NotificationID("b", "alert-1"), ChannelID: "b", Kind: "alert", CreatedAt: at, Payload: `{"id":"x"}`},
	}
	if d := cmp.Diff(got, want); d != "" {
		t.Errorf("Notifications (-got +want):\n%s", d)
	}
}

func TestBackoff(t *testing.T) {
	cfg := DefaultConfig()
	d, err := New(cfg, nil, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		k    int
		full time.Duration
	}{
		{1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {9, 256 * time.Second},
		{10, 5 * time.Minute}, {64, 5 * time.Minute}, {1000, 5 * time.Minute},
	} {
		for range 100 {
			if got := d.backoff(tt.k); got < tt.full/2 || got > tt.full {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", tt.k, got, tt.full/2, tt.full)
			}
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for name, mod := range map[string]func(*Config){
		"zero lease":              func(c *Config) { c.Lease = 0 },
		"zero batch":              func(c *Config) { c.Batch = 0 },
		"max below base":          func(c *Config) { c.MaxDelay = c.BaseDelay / 2 },
		"send timeout over lease": func(c *Config) { c.SendTimeout = c.Lease },
	} {
		cfg := DefaultConfig()
		mod(&cfg)
		if _, err := New(cfg, nil, nil, nil, nil); err == nil {
			t.Errorf("New with %s succeeded", name)
		}
	}
}

// FuzzParseRoutes: routes come from administrators through the API; any
// text either parses into routes that validate and match without panicking,
// or is refused with an error.
func FuzzParseRoutes(f *testing.F) {
	f.Add(`[{"source":"alerts"},{"source":"events","types":["firewall","rule:*"],"min_severity":"warning"}]`)
	f.Add(`[{"source":"alerts","types":["[a-"]}]`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, s string) {
		rs, err := ParseRoutes(s)
		if err != nil {
			return
		}
		for _, r := range rs {
			if err := r.Validate(); err != nil {
				t.Fatalf("parsed route %+v does not validate: %v", r, err)
			}
			r.Match("alerts", "rule:x", "critical")
			r.Match("events", "firewall", "")
		}
	})
}
