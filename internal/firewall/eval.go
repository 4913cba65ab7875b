package firewall

import (
	"net/netip"
)

// Connection states, as conntrack reports them.
const (
	StateNew         = "new"
	StateEstablished = "established"
	StateRelated     = "related"
	StateInvalid     = "invalid"
)

// Verdicts.
const (
	Pass = "pass"
	Drop = "drop"
)

// Reasons a decision was made, also the "reason" of firewall events.
const (
	ReasonRule        = "rule"                  // a rule decided (Decision.Rule)
	ReasonOutOfPolicy = "out-of-allowed-policy" // implicit deny: allow rules exist in this direction, none matched
	ReasonInvalid     = "invalid-state"         // stateful inspection: the packet fits no valid connection state
	ReasonStateful    = "stateful"              // stateful inspection: reply or related to a connection already passed
	ReasonDefault     = "default"               // no rule matched and no allow rule exists in this direction
)

// Options are the host's firewall settings that change evaluation.
type Options struct {
	// Stateful turns on stateful inspection: packets of established and
	// related connections pass unless a rule drops them, and packets in an
	// invalid state are dropped unless a bypass rule matches.
	Stateful bool `json:"stateful"`
}

// Packet is what the evaluator decides about. Fields that do not apply are
// zero: ports for ICMP, MACs for outgoing packets (the kernel does not know
// the next hop's MAC when the output hook runs).
type Packet struct {
	Direction string // Incoming or Outgoing
	EtherType uint16 // EtherIPv4, EtherIPv6, EtherARP, …
	SrcMAC    MAC
	DstMAC    MAC
	Protocol  uint8 // IP protocol number
	Src, Dst  netip.Addr
	SrcPort   uint16
	DstPort   uint16
	TCPFlags  uint8 // FlagSYN | …
	ICMPType  uint8
	ICMPCode  uint8
	State     string // StateNew, StateEstablished, …; "" is StateNew
}

// Decision is the evaluator's answer.
type Decision struct {
	Verdict string // Pass or Drop
	Reason  string // Reason…
	// Rule decided the verdict when Reason is ReasonRule.
	Rule *Rule
	// Logged are the log-only rules the packet matched on the way.
	Logged []*Rule
	// Events are what the host reports about this packet: a drop (unless
	// the deciding rule has logDisabled) and each log-only match.
	Events []Event
}

// Event is a firewall event as the agent sends it to the manager.
type Event struct {
	Action    string `json:"action"` // the deciding rule's action, or "deny" for implicit drops, "log-only"
	Verdict   string `json:"verdict"`
	Reason    string `json:"reason"`
	RuleID    int    `json:"rule_id,omitempty"`
	RuleName  string `json:"rule_name,omitempty"`
	Direction string `json:"direction"`
	Protocol  uint8  `json:"protocol"`
	Src       string `json:"src,omitempty"`
	Dst       string `json:"dst,omitempty"`
	SrcPort   uint16 `json:"src_port,omitempty"`
	DstPort   uint16 `json:"dst_port,omitempty"`
	Flags     string `json:"flags,omitempty"`
	Alert     bool   `json:"alert,omitempty"`
}
