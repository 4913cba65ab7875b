// Package policy provides Yagura's policy model: a tree of policies whose
// settings and rule assignments are each a value or "inherited", per-computer
// overrides, their resolution into one effective configuration with the
// source of every value, and that configuration's canonical document,
// fingerprint and compact deltas.
//
// It imports only the standard library and internal/firewall, because the
// agent links it to apply documents and deltas and to check fingerprints.
package policy

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Setting keys a policy may hold. The heartbeat and communication keys are
// the manager-wide settings of the same name (internal/settings), which
// serve as the values a root policy inherits.
const (
	KeyFirewallEnabled  = "firewall.enabled"
	KeyFirewallStateful = "firewall.stateful"
	KeyHeartbeat        = "heartbeat.interval"
	KeyOfflineAfter     = "heartbeat.offline_after_missed"
	KeyMaxClockDrift    = "heartbeat.max_clock_drift"
	KeyCommunication    = "agent.communication"
)

// Defaults are the values of the policy keys that are not manager-wide
// settings: the firewall is off until an administrator turns it on (as in
// Deep Security) and stateful when on.
func Defaults() map[string]string {
	return map[string]string{KeyFirewallEnabled: "off", KeyFirewallStateful: "on"}
}

// Keys lists every policy setting key, sorted.
func Keys() []string {
	return []string{KeyCommunication, KeyFirewallEnabled, KeyFirewallStateful, KeyHeartbeat, KeyOfflineAfter, KeyMaxClockDrift}
}

// Inherited is how the API and ctl write "no value here; take the
// parent's" when changing a setting.
const Inherited = "inherited"

// CheckValue validates one setting value. check validates the keys shared
// with the manager-wide settings (the caller passes settings' validation,
// which this package cannot import without dragging the manager's
// dependencies into the agent).
func CheckValue(key, value string, check func(key, value string) error) error {
	switch key {
	case KeyFirewallEnabled, KeyFirewallStateful:
		if _, err := ParseBool(value); err != nil {
			return fmt.Errorf("setting %q = %q: %w", key, value, err)
		}
		return nil
	case KeyHeartbeat, KeyOfflineAfter, KeyMaxClockDrift, KeyCommunication:
		if check == nil {
			return nil
		}
		return check(key, value)
	}
	return fmt.Errorf("setting %q: unknown (known: %s)", key, strings.Join(Keys(), ", "))
}

// ParseBool reads on/off settings; true/false and yes/no are accepted too.
func ParseBool(v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "on", "true", "yes", "1":
		return true, nil
	case "off", "false", "no", "0":
		return false, nil
	}
	return false, errors.New(`want "on" or "off"`)
}

// Policy is one node of the tree.
type Policy struct {
	ID          int               `json:"id"`
	Name        string            `json:"name"`
	Description string            `json:"description,omitempty"`
	ParentID    int               `json:"parent_id,omitempty"` // 0: a root
	Settings    map[string]string `json:"settings"`            // absent key: inherited
	// Rules are rule assignments: true assigns the rule here, false
	// removes a rule this policy would inherit. Absent: inherited.
	Rules     map[int]bool `json:"rules"`
	Version   int64        `json:"version"`
	CreatedAt time.Time    `json:"created_at"`
	UpdatedAt time.Time    `json:"updated_at"`
}

// Override is what one computer changes on top of its policy.
type Override struct {
	Settings map[string]string `json:"settings"`
	Rules    map[int]bool      `json:"rules"`
}

// Sources of a resolved value.
const (
	SourceDefault  = "default"  // the manager-wide default
	SourceComputer = "computer" // the computer's own override
)

// SourcePolicy names a policy as a source: "policy:3".
func SourcePolicy(id int) string { return "policy:" + strconv.Itoa(id) }

// Value is one resolved setting and where it came from.
type Value struct {
	Value  string `json:"value"`
	Source string `json:"source"`
}

// Effective is a resolved configuration, with provenance.
type Effective struct {
	Settings map[string]Value `json:"settings"`
	// Rules maps each assigned rule to where the assignment came from.
	Rules map[int]string `json:"rules"`
}

// RuleIDs returns the assigned rules, sorted.
func (e *Effective) RuleIDs() []int { return slices.Sorted(maps.Keys(e.Rules)) }

// SettingValues returns the resolved settings without their sources.
func (e *Effective) SettingValues() map[string]string {
	out := make(map[string]string, len(e.Settings))
	for k, v := range e.Settings {
		out[k] = v.Value
	}
	return out
}

// Resolve computes the effective configuration from the defaults, the
// chain of policies from the root down to the computer's policy, and the
// computer's override. A nearer value wins; an assignment removed lower in
// the tree (false) hides the one above.
func Resolve(defaults map[string]string, chain []Policy, ov Override) Effective {
	e := Effective{Settings: map[string]Value{}, Rules: map[int]string{}}
	for _, k := range Keys() {
		if v, ok := defaults[k]; ok {
			e.Settings[k] = Value{v, SourceDefault}
		}
	}
	layer := func(settings map[string]string, rules map[int]bool, source string) {
		for k, v := range settings {
			e.Settings[k] = Value{v, source}
		}
		for id, on := range rules {
			if on {
				e.Rules[id] = source
			} else {
				delete(e.Rules, id)
			}
		}
	}
	for _, p := range chain {
		layer(p.Settings, p.Rules, SourcePolicy(p.ID))
	}
	layer(ov.Settings, ov.Rules, SourceComputer)
	return e
}

// Chain returns the policies from the root down to id, from a map of all
// policies. It fails on an unknown ID or a cycle.
func Chain(all map[int]Policy, id int) ([]Policy, error) {
	var chain []Policy
	seen := map[int]bool{}
	for id != 0 {
		p, ok := all[id]
		if !ok {
			return nil, fmt.Errorf("policy %d does not exist", id)
		}
		if seen[id] {
			return nil, fmt.Errorf("policy %d is its own ancestor", id)
		}
		seen[id] = true
		chain = append(chain, p)
		id = p.ParentID
	}
	slices.Reverse(chain)
	return chain, nil
}
