package settings

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestApply(t *testing.T) {
	tests := []struct {
		name    string
		changes map[string]string
		want    Settings
		err     string
	}{
		{"none", nil, Default(), ""},
		{"interval", map[string]string{KeyHeartbeatInterval: "30s"}, Settings{30 * time.Second, 3, 5 * time.Minute, AgentInitiated, 4118, 0}, ""},
		{"unlimited", map[string]string{KeyOfflineAfter: "Unlimited"}, Settings{time.Minute, 0, 5 * time.Minute, AgentInitiated, 4118, 0}, ""},
		{"drift off", map[string]string{KeyMaxClockDrift: "0s"}, Settings{time.Minute, 3, 0, AgentInitiated, 4118, 0}, ""},
		{"all", map[string]string{KeyHeartbeatInterval: "1s", KeyOfflineAfter: " 2 ", KeyMaxClockDrift: "1m", KeyCommunication: "bidirectional", KeyAgentPort: "14118"}, Settings{time.Second, 2, time.Minute, Bidirectional, 14118, 0}, ""},
		{"bad direction", map[string]string{KeyCommunication: "both"}, Settings{}, "want agent-initiated, bidirectional or manager-initiated"},
		{"bad port", map[string]string{KeyAgentPort: "70000"}, Settings{}, "TCP port"},
		{"default policy", map[string]string{KeyDefaultPolicy: "7"}, Settings{time.Minute, 3, 5 * time.Minute, AgentInitiated, 4118, 7}, ""},
		{"bad default policy", map[string]string{KeyDefaultPolicy: "-1"}, Settings{}, "want a policy ID"},
		{"unknown key", map[string]string{"heartbeat.intervall": "1s"}, Settings{}, `setting "heartbeat.intervall" = "1s": unknown setting`},
		{"interval too short", map[string]string{KeyHeartbeatInterval: "1ms"}, Settings{}, "between 500ms and 24h0m0s"},
		{"interval not a duration", map[string]string{KeyHeartbeatInterval: "60"}, Settings{}, `want a duration such as "90s"`},
		{"missed zero", map[string]string{KeyOfflineAfter: "0"}, Settings{}, `from 1 to 1000, or "unlimited"`},
		{"missed negative", map[string]string{KeyOfflineAfter: "-3"}, Settings{}, "from 1 to 1000"},
		{"drift negative", map[string]string{KeyMaxClockDrift: "-1m"}, Settings{}, "between 0s and"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Default().Apply(tc.changes)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want error containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(got, tc.want); diff != "" {
				t.Errorf("(-got +want)\n%s", diff)
			}
		})
	}
}

func TestMapRoundTrip(t *testing.T) {
	for _, s := range []Settings{Default(), {time.Second, 0, 0, Bidirectional, 1, 0}, {90 * time.Minute, 1000, time.Hour, ManagerInitiated, 65535, 42}} {
		got, err := FromMap(s.Map())
		if err != nil {
			t.Fatal(err)
		}
		if got != s {
			t.Errorf("round trip: got %+v, want %+v", got, s)
		}
	}
	// Keys stored for other purposes are ignored.
	if _, err := FromMap(map[string]string{"auth.admin_key_sha256": "x"}); err != nil {
		t.Errorf("foreign key: %v", err)
	}
}

func FuzzApply(f *testing.F) {
	f.Add(KeyHeartbeatInterval, "30s")
	f.Add(KeyOfflineAfter, "unlimited")
	f.Add(KeyMaxClockDrift, "-1h")
	f.Fuzz(func(t *testing.T, k, v string) {
		s, err := Default().Apply(map[string]string{k: v})
		if err != nil {
			return
		}
		if s.HeartbeatInterval < MinHeartbeatInterval || s.HeartbeatInterval > MaxHeartbeatInterval ||
			s.OfflineAfterMissed < 0 || s.MaxClockDrift < 0 {
			t.Fatalf("accepted %q=%q as %+v", k, v, s)
		}
		if back, err := FromMap(s.Map()); err != nil || back != s {
			t.Fatalf("stored form of %+v does not round-trip: %+v %v", s, back, err)
		}
	})
}
