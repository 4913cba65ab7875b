package firewall

import (
	"fmt"
	"net/netip"
	"slices"
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

// Evaluate decides about one packet. It is the reference semantics of the
// firewall: the nftables compiler mirrors it rule for rule, and the cases in
// testdata/semantics hold both to it.
//
// The rules of p are walked in order (priority 4 to 0; within a priority
// bypass, log-only, force-allow, deny, allow). A rule of the other
// direction, or one whose conditions do not all hold, is skipped. The first
// matching rule that is not log-only decides:
//
//   - bypass: pass, without stateful inspection (bypass skips it);
//   - force-allow, allow: pass, but with opt.Stateful a packet whose
//     effective state is invalid is dropped (ReasonInvalid, no Rule);
//   - deny: drop, established connections included.
//
// A log-only match is recorded in Decision.Logged and evaluation goes on.
// When no rule decides: with opt.Stateful an invalid packet is dropped
// (ReasonInvalid) and an established or related one passes
// (ReasonStateful); otherwise an IPv4 or IPv6 packet is dropped when an
// allow rule exists in its direction (ReasonOutOfPolicy); everything else
// passes (ReasonDefault). Decision: the implicit deny covers IP traffic
// only, so ARP and other frames pass unless a rule denies them and a host
// is never cut off at layer 2.
//
// Conditions: an "any" condition (nil in [Compiled]) is no condition and its
// Not flag is ignored; an empty list matches nothing (with Not:
// everything). Protocol and address conditions hold only for IPv4 and IPv6
// packets, port conditions only for TCP and UDP, TCP flags only for TCP,
// ICMP type and code only for protocols 1 and 58: a packet outside that
// scope never matches a rule with the condition, whatever its Not flag,
// and Not inverts the condition within it. A TCP flags condition holds
// when all the rule's flags are set in the packet.
//
// Effective state: pkt.State, "" meaning new; any other value than new,
// established, related and invalid counts as invalid. With opt.Stateful a
// TCP packet in state new that is not a pure SYN (SYN set, ACK and RST
// clear) is invalid ("out of connection"). Without opt.Stateful the state
// is ignored.
//
// Events: a drop makes one event (action "deny" when no rule decided)
// unless the deciding rule has logDisabled; each log-only match makes one,
// with the final verdict and reason, unless that rule has logDisabled.
// Log-only events come first, in rule order. A pass with no log-only
// match allocates nothing.
func Evaluate(p *Program, opt Options, pkt Packet) Decision {
	var logged []*Rule
	d := Decision{Verdict: Pass, Reason: ReasonDefault}
	decided := false
	state := ""
	if opt.Stateful {
		state = effectiveState(&pkt)
	}
	var rules []Compiled
	if p != nil {
		rules = p.Rules
	}
	for i := range rules {
		c := &rules[i]
		if c.Direction != pkt.Direction || !c.Matches(&pkt) {
			continue
		}
		switch c.Action {
		case ActionLogOnly:
			logged = append(logged, c.Rule)
			continue
		case ActionBypass:
			d = Decision{Verdict: Pass, Reason: ReasonRule, Rule: c.Rule}
		case ActionForceAllow, ActionAllow:
			if state == StateInvalid {
				d = Decision{Verdict: Drop, Reason: ReasonInvalid}
			} else {
				d = Decision{Verdict: Pass, Reason: ReasonRule, Rule: c.Rule}
			}
		case ActionDeny:
			d = Decision{Verdict: Drop, Reason: ReasonRule, Rule: c.Rule}
		default:
			// Compile refuses other actions; a hand-built Program's
			// unknown action decides nothing.
			continue
		}
		decided = true
		break
	}
	if !decided {
		allow := p != nil && (pkt.Direction == Incoming && p.AllowIn || pkt.Direction == Outgoing && p.AllowOut)
		switch {
		case state == StateInvalid:
			d = Decision{Verdict: Drop, Reason: ReasonInvalid}
		case state == StateEstablished || state == StateRelated:
			d = Decision{Verdict: Pass, Reason: ReasonStateful}
		case isIP(&pkt) && allow:
			d = Decision{Verdict: Drop, Reason: ReasonOutOfPolicy}
		}
	}
	d.Logged = logged
	for _, r := range logged {
		if !r.LogDisabled {
			d.Events = append(d.Events, newEvent(&pkt, r, ActionLogOnly, d))
		}
	}
	if d.Verdict == Drop {
		switch {
		case d.Rule == nil:
			d.Events = append(d.Events, newEvent(&pkt, nil, ActionDeny, d))
		case !d.Rule.LogDisabled:
			d.Events = append(d.Events, newEvent(&pkt, d.Rule, d.Rule.Action, d))
		}
	}
	return d
}

func isIP(pkt *Packet) bool { return pkt.EtherType == EtherIPv4 || pkt.EtherType == EtherIPv6 }

// effectiveState is the state stateful inspection judges pkt by.
func effectiveState(pkt *Packet) string {
	switch pkt.State {
	case "", StateNew:
		if isIP(pkt) && pkt.Protocol == protoTCP && pkt.TCPFlags&(FlagSYN|FlagACK|FlagRST) != FlagSYN {
			return StateInvalid
		}
		return StateNew
	case StateEstablished, StateRelated:
		return pkt.State
	}
	return StateInvalid
}

// Matches reports whether all of c's conditions hold for pkt; direction and
// action are the caller's business. See [Evaluate] for the meaning of each
// condition.
func (c *Compiled) Matches(pkt *Packet) bool {
	if c.EtherTypes != nil && slices.Contains(c.EtherTypes, pkt.EtherType) == c.FrameNot {
		return false
	}
	ip := isIP(pkt)
	if c.Protocols != nil && (!ip || slices.Contains(c.Protocols, pkt.Protocol) == c.ProtocolNot) {
		return false
	}
	if c.SrcIP != nil && (!ip || inIPRanges(c.SrcIP, pkt.Src) == c.SrcIPNot) {
		return false
	}
	if c.DstIP != nil && (!ip || inIPRanges(c.DstIP, pkt.Dst) == c.DstIPNot) {
		return false
	}
	if c.SrcMAC != nil && slices.Contains(c.SrcMAC, pkt.SrcMAC) == c.SrcMACNot {
		return false
	}
	if c.DstMAC != nil && slices.Contains(c.DstMAC, pkt.DstMAC) == c.DstMACNot {
		return false
	}
	l4 := ip && (pkt.Protocol == protoTCP || pkt.Protocol == protoUDP)
	if c.SrcPort != nil && (!l4 || inPortRanges(c.SrcPort, pkt.SrcPort) == c.SrcPortNot) {
		return false
	}
	if c.DstPort != nil && (!l4 || inPortRanges(c.DstPort, pkt.DstPort) == c.DstPortNot) {
		return false
	}
	if c.TCPFlags != 0 && (!ip || pkt.Protocol != protoTCP || (pkt.TCPFlags&c.TCPFlags == c.TCPFlags) == c.TCPNot) {
		return false
	}
	if c.ICMPType >= 0 || c.ICMPCode >= 0 {
		if !ip || (pkt.Protocol != protoICMP && pkt.Protocol != protoICMPv6) {
			return false
		}
		m := (c.ICMPType < 0 || int(pkt.ICMPType) == c.ICMPType) && (c.ICMPCode < 0 || int(pkt.ICMPCode) == c.ICMPCode)
		if m == c.ICMPNot {
			return false
		}
	}
	return true
}

func inIPRanges(rs []IPRange, a netip.Addr) bool {
	for _, r := range rs {
		if r.Contains(a) {
			return true
		}
	}
	return false
}

func inPortRanges(rs []PortRange, p uint16) bool {
	for _, r := range rs {
		if r.Lo <= p && p <= r.Hi {
			return true
		}
	}
	return false
}

func newEvent(pkt *Packet, r *Rule, action string, d Decision) Event {
	e := Event{
		Action: action, Verdict: d.Verdict, Reason: d.Reason,
		Direction: pkt.Direction, Protocol: pkt.Protocol,
		SrcPort: pkt.SrcPort, DstPort: pkt.DstPort,
	}
	if r != nil {
		e.RuleID, e.RuleName, e.Alert = r.ID, r.Name, r.AlertEnabled
	}
	if pkt.Src.IsValid() {
		e.Src = pkt.Src.String()
	}
	if pkt.Dst.IsValid() {
		e.Dst = pkt.Dst.String()
	}
	if isIP(pkt) && pkt.Protocol == protoTCP {
		e.Flags = FlagString(pkt.TCPFlags)
	}
	return e
}

// FlagString spells TCP flags as tcpdump does, one letter each in the
// order F S R P A U: "S", "SA", "FA". No flags is "".
func FlagString(flags uint8) string {
	const letters = "FSRPAU"
	var b [6]byte
	n := 0
	for i := range 6 {
		if flags&(1<<i) != 0 {
			b[n] = letters[i]
			n++
		}
	}
	return string(b[:n])
}

// HiddenRules returns the rules that keep the agent and its manager in
// touch whatever the policy says, like Deep Security's hidden heartbeat
// bypass rules. For each manager address they bypass, at priority 4:
//
//   - outgoing TCP to the manager's address and port (heartbeats);
//   - incoming TCP from the manager's address and port (its replies: a
//     bypass rule creates no connection state, so each direction needs its
//     own rule);
//   - when listenPort > 0, the agent's listener for manager-initiated
//     connections: incoming TCP from the manager's address to listenPort,
//     and outgoing TCP from listenPort to the manager's address.
//
// The rules have negative IDs (-1, -2, …), which no stored rule has, and
// sort before every other priority-4 bypass rule. A manager port of 0
// means any port; an invalid address is skipped.
func HiddenRules(manager []netip.AddrPort, listenPort int) []Rule {
	var out []Rule
	add := func(dir, desc string, r Rule) {
		r.ID = -(len(out) + 1)
		r.Name = "Manager communication (hidden)"
		r.Description = desc
		r.Action, r.Priority, r.Direction = ActionBypass, "4", dir
		r.FrameType, r.Protocol = "ip", "tcp"
		r.LogDisabled = true
		r.Normalize()
		out = append(out, r)
	}
	ports := func(p int) (string, []string) {
		if p <= 0 || p > 65535 {
			return TypeAny, nil
		}
		return TypeMultiple, []string{fmt.Sprint(p)}
	}
	for _, m := range manager {
		a := m.Addr().Unmap()
		if !a.IsValid() {
			continue
		}
		ip := a.WithZone("").String()
		mt, mp := ports(int(m.Port()))
		add(Outgoing, fmt.Sprintf("to the manager %s", m), Rule{
			DestinationIPType: TypeSingle, DestinationIPValue: ip,
			DestinationPortType: mt, DestinationPortMultiple: mp,
		})
		add(Incoming, fmt.Sprintf("from the manager %s", m), Rule{
			SourceIPType: TypeSingle, SourceIPValue: ip,
			SourcePortType: mt, SourcePortMultiple: mp,
		})
		if listenPort > 0 && listenPort <= 65535 {
			lt, lp := ports(listenPort)
			add(Incoming, fmt.Sprintf("from the manager %s to the agent's port %d", a, listenPort), Rule{
				SourceIPType: TypeSingle, SourceIPValue: ip,
				DestinationPortType: lt, DestinationPortMultiple: lp,
			})
			add(Outgoing, fmt.Sprintf("from the agent's port %d to the manager %s", listenPort, a), Rule{
				DestinationIPType: TypeSingle, DestinationIPValue: ip,
				SourcePortType: lt, SourcePortMultiple: lp,
			})
		}
	}
	return out
}
