package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/yagura/yagura/internal/firewall"
)

// tree is a three-level tree: Base → Servers → Web, plus an unrelated root.
func tree() map[int]Policy {
	return map[int]Policy{
		1: {ID: 1, Name: "Base", Settings: map[string]string{KeyFirewallEnabled: "on", KeyHeartbeat: "60s"}, Rules: map[int]bool{10: true, 11: true}},
		2: {ID: 2, Name: "Servers", ParentID: 1, Settings: map[string]string{KeyHeartbeat: "30s", KeyOfflineAfter: "5"}, Rules: map[int]bool{11: false, 12: true}},
		3: {ID: 3, Name: "Web", ParentID: 2, Settings: map[string]string{KeyFirewallStateful: "off"}, Rules: map[int]bool{13: true}},
		4: {ID: 4, Name: "Laptops", Settings: map[string]string{KeyOfflineAfter: "unlimited"}},
	}
}

func TestResolve(t *testing.T) {
	defaults := map[string]string{KeyFirewallEnabled: "off", KeyFirewallStateful: "on", KeyHeartbeat: "1m0s", KeyOfflineAfter: "3", KeyMaxClockDrift: "5m0s", KeyCommunication: "agent-initiated"}
	tests := []struct {
		name     string
		policy   int
		override Override
		want     Effective
	}{
		{
			name: "three levels and a computer override", policy: 3,
			override: Override{Settings: map[string]string{KeyHeartbeat: "10s"}, Rules: map[int]bool{12: false, 14: true}},
			want: Effective{
				Settings: map[string]Value{
					KeyFirewallEnabled:  {"on", "policy:1"},
					KeyFirewallStateful: {"off", "policy:3"},
					KeyHeartbeat:        {"10s", SourceComputer},
					KeyOfflineAfter:     {"5", "policy:2"},
					KeyMaxClockDrift:    {"5m0s", SourceDefault},
					KeyCommunication:    {"agent-initiated", SourceDefault},
				},
				Rules: map[int]string{10: "policy:1", 13: "policy:3", 14: SourceComputer},
			},
		},
		{
			name: "root only", policy: 4,
			want: Effective{
				Settings: map[string]Value{
					KeyFirewallEnabled:  {"off", SourceDefault},
					KeyFirewallStateful: {"on", SourceDefault},
					KeyHeartbeat:        {"1m0s", SourceDefault},
					KeyOfflineAfter:     {"unlimited", "policy:4"},
					KeyMaxClockDrift:    {"5m0s", SourceDefault},
					KeyCommunication:    {"agent-initiated", SourceDefault},
				},
				Rules: map[int]string{},
			},
		},
		{
			name: "a child re-assigns what its parent removed", policy: 2,
			override: Override{Rules: map[int]bool{11: true}},
			want: Effective{
				Settings: map[string]Value{
					KeyFirewallEnabled:  {"on", "policy:1"},
					KeyFirewallStateful: {"on", SourceDefault},
					KeyHeartbeat:        {"30s", "policy:2"},
					KeyOfflineAfter:     {"5", "policy:2"},
					KeyMaxClockDrift:    {"5m0s", SourceDefault},
					KeyCommunication:    {"agent-initiated", SourceDefault},
				},
				Rules: map[int]string{10: "policy:1", 11: SourceComputer, 12: "policy:2"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chain, err := Chain(tree(), tt.policy)
			if err != nil {
				t.Fatal(err)
			}
			got := Resolve(defaults, chain, tt.override)
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("Resolve (-want +got):\n%s", d)
			}
		})
	}
}

func TestChainErrors(t *testing.T) {
	all := tree()
	if _, err := Chain(all, 99); err == nil {
		t.Error("Chain(99): want an error for an unknown policy")
	}
	p := all[1]
	p.ParentID = 3
	all[1] = p
	if _, err := Chain(all, 3); err == nil {
		t.Error("Chain: want an error for a cycle")
	}
}

func TestCheckValue(t *testing.T) {
	for _, tt := range []struct {
		key, value string
		ok         bool
	}{
		{KeyFirewallEnabled, "on", true},
		{KeyFirewallEnabled, "maybe", false},
		{KeyFirewallStateful, "false", true},
		{"firewall.bogus", "on", false},
		{KeyHeartbeat, "10s", true},
	} {
		err := CheckValue(tt.key, tt.value, func(string, string) error { return nil })
		if (err == nil) != tt.ok {
			t.Errorf("CheckValue(%q, %q) = %v, want ok=%v", tt.key, tt.value, err, tt.ok)
		}
	}
}

func doc(rules int, list []string) *Document {
	d := &Document{Settings: map[string]string{KeyFirewallEnabled: "on", KeyHeartbeat: "60s"}}
	for i := 1; i <= rules; i++ {
		d.Firewall.Rules = append(d.Firewall.Rules, firewall.Rule{ID: i, Name: fmt.Sprintf("r%d", i), Action: "deny", Priority: "2", Direction: "incoming"})
	}
	if list != nil {
		d.Firewall.IPLists = []firewall.IPList{{ID: 100, Name: "l", Items: list}}
	}
	return d
}

func TestFingerprintIsCanonical(t *testing.T) {
	a, b := doc(3, []string{"10.0.0.1"}), doc(3, []string{"10.0.0.1"})
	b.Firewall.Rules[0], b.Firewall.Rules[2] = b.Firewall.Rules[2], b.Firewall.Rules[0]
	fa, _ := a.Fingerprint()
	fb, _ := b.Fingerprint()
	if fa != fb || len(fa) != 22 {
		t.Errorf("fingerprints %q and %q: want equal, 22 characters", fa, fb)
	}
	b.Settings[KeyHeartbeat] = "61s"
	if fc, _ := b.Fingerprint(); fc == fa {
		t.Error("a changed setting kept the fingerprint")
	}
}

func TestDeltaRoundTrip(t *testing.T) {
	tests := []struct {
		name     string
		old, new *Document
	}{
		{"add a rule", doc(3, nil), doc(4, nil)},
		{"remove rules", doc(5, nil), doc(2, nil)},
		{"change a list", doc(2, []string{"10.0.0.1"}), doc(2, []string{"10.0.0.1", "10.0.0.2"})},
		{"drop a list", doc(2, []string{"10.0.0.1"}), doc(2, nil)},
		{"settings", doc(1, nil), func() *Document {
			d := doc(1, nil)
			delete(d.Settings, KeyHeartbeat)
			d.Settings[KeyFirewallStateful] = "off"
			return d
		}()},
		{"nothing", doc(2, nil), doc(2, nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			delta, err := Diff(tt.old, tt.new)
			if err != nil {
				t.Fatal(err)
			}
			// Over the wire and back.
			b, _ := json.Marshal(delta)
			var wire Delta
			if err := json.Unmarshal(b, &wire); err != nil {
				t.Fatal(err)
			}
			got, err := tt.old.Apply(&wire)
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			want, _ := tt.new.Fingerprint()
			if fp, _ := got.Fingerprint(); fp != want {
				t.Errorf("applied delta gives %s, want %s", fp, want)
			}
		})
	}
}

func TestDeltaIsSmall(t *testing.T) {
	old := doc(10000, nil)
	new := doc(10000, nil)
	new.Firewall.Rules[500].Name = "changed"
	delta, err := Diff(old, new)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(delta)
	if len(delta.PutRules) != 1 || len(delta.DelRules) != 0 || len(b) > 400 {
		t.Errorf("one changed rule of 10,000: delta has %d puts, %d deletes, %d bytes", len(delta.PutRules), len(delta.DelRules), len(b))
	}
}

func TestApplyWrongBase(t *testing.T) {
	delta, _ := Diff(doc(1, nil), doc(2, nil))
	if _, err := doc(3, nil).Apply(delta); !errors.Is(err, ErrBaseMismatch) {
		t.Errorf("Apply on another base: %v, want ErrBaseMismatch", err)
	}
	delta.Target = "bogus"
	if _, err := doc(1, nil).Apply(delta); !errors.Is(err, ErrBaseMismatch) {
		t.Errorf("Apply with a wrong target: %v, want ErrBaseMismatch", err)
	}
}

// FuzzApplyDelta feeds the agent's decoder bytes as they could arrive from
// a manager: it must never panic, and never accept a result that is not the
// delta's target.
func FuzzApplyDelta(f *testing.F) {
	d, _ := Diff(doc(2, []string{"10.0.0.1"}), doc(3, []string{"10.0.0.2"}))
	b, _ := json.Marshal(d)
	f.Add(b)
	f.Add([]byte(`{"base":"x","target":"y","set":{"a":"b"},"del_rules":[1,2,3]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var delta Delta
		if json.Unmarshal(data, &delta) != nil {
			return
		}
		base := doc(2, []string{"10.0.0.1"})
		got, err := base.Apply(&delta)
		if err != nil {
			return
		}
		if fp, _ := got.Fingerprint(); fp != delta.Target {
			t.Fatalf("accepted a result %s that is not the target %s", fp, delta.Target)
		}
	})
}
