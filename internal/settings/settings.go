// Package settings provides the manager-wide settings that administrators
// change at run time (through the API and `yagura ctl settings`), their
// defaults, validation, and their stored form.
//
// Settings are kept in the state store as key → string so several manager
// nodes share them. Issue #5's policy tree will make most of them per-policy;
// these values then become the root policy's.
package settings

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Keys of the stored settings.
const (
	KeyHeartbeatInterval = "heartbeat.interval"
	KeyOfflineAfter      = "heartbeat.offline_after_missed"
	KeyMaxClockDrift     = "heartbeat.max_clock_drift"
	KeyCommunication     = "agent.communication"
	KeyAgentPort         = "agent.listen_port"
	KeyDefaultPolicy     = "policy.default"
)

// Communication directions, as in Deep Security.
const (
	AgentInitiated   = "agent-initiated"
	Bidirectional    = "bidirectional"
	ManagerInitiated = "manager-initiated"
)

// ValidCommunication reports whether s names a direction.
func ValidCommunication(s string) bool {
	return s == AgentInitiated || s == Bidirectional || s == ManagerInitiated
}

// Unlimited is how OfflineAfterMissed is written when offline alerts are
// disabled (laptops and other hosts that are often away).
const Unlimited = "unlimited"

// Settings are the effective manager-wide settings.
type Settings struct {
	// HeartbeatInterval is how often agents report.
	HeartbeatInterval time.Duration
	// OfflineAfterMissed is how many consecutive missed heartbeats raise a
	// "computer offline" alert; 0 means unlimited (never alert).
	OfflineAfterMissed int
	// MaxClockDrift is how far an agent's clock may differ from the
	// manager's before a "clock drift" alert; 0 disables the check.
	MaxClockDrift time.Duration
	// Communication is who opens connections: the agent (default), both
	// (the manager may also connect to the agent to make it heartbeat
	// now), or only the manager.
	Communication string
	// AgentPort is where agents listen for the manager in bidirectional
	// and manager-initiated modes.
	AgentPort int
	// DefaultPolicy is the policy of computers that have none (0: none,
	// manager defaults only).
	DefaultPolicy int
}

// Default returns the settings a new manager starts with.
func Default() Settings {
	return Settings{
		HeartbeatInterval:  60 * time.Second,
		OfflineAfterMissed: 3,
		MaxClockDrift:      5 * time.Minute,
		Communication:      AgentInitiated,
		AgentPort:          4118,
	}
}

// Bounds on what administrators may set, to protect the manager from a typo:
// an interval of 1ns would melt it, one of a year would hide every outage.
const (
	MinHeartbeatInterval = 500 * time.Millisecond
	MaxHeartbeatInterval = 24 * time.Hour
	maxMissed            = 1000
)

// Keys lists every setting key, sorted.
func Keys() []string {
	k := []string{KeyHeartbeatInterval, KeyOfflineAfter, KeyMaxClockDrift, KeyCommunication, KeyAgentPort, KeyDefaultPolicy}
	slices.Sort(k)
	return k
}

// Apply returns s with the given key=value changes, or an error naming the
// first bad key or value. Unknown keys are errors.
func (s Settings) Apply(changes map[string]string) (Settings, error) {
	keys := make([]string, 0, len(changes))
	for k := range changes {
		keys = append(keys, k)
	}
	slices.Sort(keys) // deterministic: the first bad key in order is reported
	for _, k := range keys {
		v := strings.TrimSpace(changes[k])
		var err error
		switch k {
		case KeyHeartbeatInterval:
			s.HeartbeatInterval, err = parseDuration(v, MinHeartbeatInterval, MaxHeartbeatInterval)
		case KeyOfflineAfter:
			s.OfflineAfterMissed, err = parseMissed(v)
		case KeyMaxClockDrift:
			s.MaxClockDrift, err = parseDuration(v, 0, 7*24*time.Hour)
		case KeyCommunication:
			if !ValidCommunication(v) {
				err = fmt.Errorf("want %s, %s or %s", AgentInitiated, Bidirectional, ManagerInitiated)
			}
			s.Communication = v
		case KeyAgentPort:
			s.AgentPort, err = strconv.Atoi(v)
			if err != nil || s.AgentPort < 1 || s.AgentPort > 65535 {
				err = errors.New("want a TCP port from 1 to 65535")
			}
		case KeyDefaultPolicy:
			s.DefaultPolicy, err = strconv.Atoi(v)
			if err != nil || s.DefaultPolicy < 0 {
				err = errors.New("want a policy ID (see `yagura ctl policies list`), or 0 for none")
			}
		default:
			err = fmt.Errorf("unknown setting (known: %s)", strings.Join(Keys(), ", "))
		}
		if err != nil {
			return s, fmt.Errorf("setting %q = %q: %w", k, changes[k], err)
		}
	}
	return s, nil
}

// Map renders s in its stored form.
func (s Settings) Map() map[string]string {
	missed := strconv.Itoa(s.OfflineAfterMissed)
	if s.OfflineAfterMissed == 0 {
		missed = Unlimited
	}
	return map[string]string{
		KeyHeartbeatInterval: s.HeartbeatInterval.String(),
		KeyOfflineAfter:      missed,
		KeyMaxClockDrift:     s.MaxClockDrift.String(),
		KeyCommunication:     s.Communication,
		KeyAgentPort:         strconv.Itoa(s.AgentPort),
		KeyDefaultPolicy:     strconv.Itoa(s.DefaultPolicy),
	}
}

// FromMap reads stored settings over the defaults. Keys the store holds for
// other purposes (they contain no '.' prefix known here) are ignored.
func FromMap(m map[string]string) (Settings, error) {
	changes := map[string]string{}
	for _, k := range Keys() {
		if v, ok := m[k]; ok {
			changes[k] = v
		}
	}
	return Default().Apply(changes)
}

func parseDuration(v string, lo, hi time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, errors.New(`want a duration such as "90s", "5m" or "1h30m"`)
	}
	if d < lo || d > hi {
		return 0, fmt.Errorf("must be between %s and %s", lo, hi)
	}
	return d, nil
}

func parseMissed(v string) (int, error) {
	if strings.EqualFold(v, Unlimited) {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxMissed {
		return 0, fmt.Errorf("want a number of heartbeats from 1 to %d, or %q", maxMissed, Unlimited)
	}
	return n, nil
}
