package nftfw

import (
	"errors"
	"fmt"
	"slices"

	"github.com/yagura/yagura/internal/firewall"
)

// A plan is the nftables ruleset for a Program in a form that does not
// depend on netlink: tables of chains of rules, each rule a conjunction of
// matches, some statements and a verdict. buildPlan turns a Program into a
// plan (all the semantics live here, and the tests check it against
// firewall.Evaluate on every OS); emit_linux.go turns a plan into netlink
// messages (a mechanical translation, checked on real packets).
//
// How the semantics map (see also docs/firewall-linux.md):
//
//   - The rules of one direction become one nft rule each, in order, in the
//     base chain of that direction ("in" on input, "out" on output). A rule
//     whose conditions differ per address family (addresses) becomes one
//     nft rule per family. A condition the packet is outside the scope of
//     (ports for ICMP, say) makes the rule miss, so the scope is folded into
//     one "meta l4proto" match.
//   - A deciding rule jumps to a terminal chain for its outcome, which logs
//     and accepts or drops (a deny rule first sets the packet mark to its
//     ID, which the log carries). Log-only rules all sit, in Compile's order,
//     right after the priority-4 bypass rules and before everything else, so
//     every log-only rule a packet matches comes before the rule that
//     decides it: the terminal chain first runs the log-only rules (with
//     the outcome in their log prefix, as firewall events carry the final
//     verdict), then the verdict.
//   - Stateful inspection is "ct state" in the allow terminal chain and at
//     the end of the walk; bypass rules are mirrored in chains at raw
//     priority that "notrack" the packets they will accept.
//   - IPv4 and IPv6 go through the inet table, ARP through the arp table,
//     other frames through the netdev table (ingress and egress of each
//     Ethernet device), each with the rules that can match them.
type plan struct {
	tables []*ptable
}

// Table families.
const (
	famInet   = "inet"
	famARP    = "arp"
	famNetdev = "netdev"
)

// Hooks of base chains.
const (
	hookPrerouting = "prerouting"
	hookInput      = "input"
	hookOutput     = "output"
	hookIngress    = "ingress"
	hookEgress     = "egress"
)

// Priority of the bypass (notrack) chains: before connection tracking at
// -200, after defragmentation at -400.
const rawPriority = -300

// Named objects of each table.
const (
	limitDrop         = "drop_log"
	limitLogOnly      = "log_only_log"
	ctrDropLogged     = "drops_logged"
	ctrDropSuppressed = "drops_suppressed"
	ctrLogMatched     = "log_only_matched"
	ctrLogLogged      = "log_only_logged"
)

// counterNames are the named counters of each table.
var counterNames = []string{ctrDropLogged, ctrDropSuppressed, ctrLogMatched, ctrLogLogged}

type ptable struct {
	family string
	chains []*pchain
	byName map[string]*pchain
}

type pchain struct {
	name   string
	hook   string // "" for a regular chain
	device string // of a netdev base chain
	prio   int32
	rules  []prule
}

type prule struct {
	match   []pmatch
	stmts   []pstmt // run after every match held, in order; a limit may stop the rule
	verdict pverdict
}

type vkind uint8

const (
	vNone vkind = iota // go on with the next rule
	vAccept
	vDrop
	vJump
	vGoto
)

type pverdict struct {
	kind  vkind
	chain string
}

type mkind uint8

const (
	mNfproto   mkind = iota // fam: 4 or 6
	mL4proto                // protos, not
	mAddr                   // src, fam, addrs, not
	mMAC                    // src, macs, not
	mPort                   // src, ports, not
	mTCPFlags               // (flags & mask == value) != not
	mICMP                   // (icmpType < 0 || type == icmpType) && (icmpCode < 0 || code == icmpCode), != not
	mCtState                // state & ct != 0
	mNotLocal               // the destination is not one of the host's (fib daddr type)
	mEtherType              // frame's EtherType (meta protocol) in etherTypes, != not
	mLoopback               // the packet is on the loopback device (src: input interface, else output)
)

type pmatch struct {
	kind               mkind
	src                bool
	fam                int
	not                bool
	protos             []uint8
	addrs              []firewall.IPRange
	macs               []firewall.MAC
	ports              []firewall.PortRange
	mask, value        uint8
	icmpType, icmpCode int
	ct                 uint32
	etherTypes         []uint16
}

// Conntrack state bits, as nftables numbers them.
const (
	ctInvalid     uint32 = 1
	ctEstablished uint32 = 2
	ctRelated     uint32 = 4
	ctNew         uint32 = 8
	ctUntracked   uint32 = 64
)

type skind uint8

const (
	sCounter skind = iota // named counter
	sLimit                // named limit: stops the rule when over the rate
	sLog                  // NFLOG with prefix
	sNotrack
	sSetMark // meta mark set
)

type pstmt struct {
	kind   skind
	name   string // counter or limit
	prefix string // log
	mark   uint32
}

const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
)

// newTable returns an empty table of the family.
func newTable(family string) *ptable {
	return &ptable{family: family, byName: map[string]*pchain{}}
}

func (t *ptable) chain(name, hook string, prio int32) *pchain {
	if c, ok := t.byName[name]; ok {
		return c
	}
	c := &pchain{name: name, hook: hook, prio: prio}
	t.chains = append(t.chains, c)
	t.byName[name] = c
	return c
}

func (c *pchain) add(r prule) { c.rules = append(c.rules, r) }

// knownAction reports whether Evaluate acts on a rule's action; it skips
// others (a hand-built Program's), and so does the plan.
func knownAction(a string) bool {
	switch a {
	case firewall.ActionAllow, firewall.ActionDeny, firewall.ActionForceAllow, firewall.ActionBypass, firewall.ActionLogOnly:
		return true
	}
	return false
}

// Check reports what in p nftables cannot enforce exactly; Apply refuses
// such a program. The error wraps [errors.ErrUnsupported] and names each
// rule. Today that is MAC conditions on outgoing rules, which Compile
// refuses too: the output hook runs before the next hop is known.
func Check(p *firewall.Program) error {
	if p == nil {
		return nil
	}
	var errs []error
	for i := range p.Rules {
		c := &p.Rules[i]
		if !knownAction(c.Action) {
			continue
		}
		if c.Direction == firewall.Outgoing && (c.SrcMAC != nil || c.DstMAC != nil) {
			errs = append(errs, ruleErr(c, "MAC conditions cannot be enforced on outgoing rules: the output hook runs before the next hop is known"))
		}
	}
	return errors.Join(errs...)
}

func ruleErr(c *firewall.Compiled, format string, args ...any) error {
	id, name := 0, ""
	if c.Rule != nil {
		id, name = c.Rule.ID, c.Rule.Name
	}
	return fmt.Errorf("rule %d %q: %s: %w", id, name, fmt.Sprintf(format, args...), errors.ErrUnsupported)
}

// isOtherFrame reports whether the EtherType is handled by the netdev
// table: neither IPv4, IPv6 nor ARP.
func isOtherFrame(et uint16) bool {
	return et != firewall.EtherIPv4 && et != firewall.EtherIPv6 && et != firewall.EtherARP
}

// frameOK reports whether c's frame condition holds for the EtherType.
func frameOK(c *firewall.Compiled, et uint16) bool {
	return c.EtherTypes == nil || slices.Contains(c.EtherTypes, et) != c.FrameNot
}

// protoOK reports whether c's protocol condition holds for an IP packet of
// protocol p.
func protoOK(c *firewall.Compiled, p uint8) bool {
	return c.Protocols == nil || slices.Contains(c.Protocols, p) != c.ProtocolNot
}

// ipScoped reports whether c has a condition that only IP packets can meet.
func ipScoped(c *firewall.Compiled) bool {
	return c.Protocols != nil || c.SrcIP != nil || c.DstIP != nil || c.SrcPort != nil || c.DstPort != nil ||
		c.TCPFlags != 0 || c.ICMPType >= 0 || c.ICMPCode >= 0
}

// macMatches returns c's MAC conditions; ok is false when one of them is an
// empty list without Not, which matches nothing.
func macMatches(c *firewall.Compiled) (ms []pmatch, ok bool) {
	for _, side := range []struct {
		src  bool
		macs []firewall.MAC
		not  bool
	}{{true, c.SrcMAC, c.SrcMACNot}, {false, c.DstMAC, c.DstMACNot}} {
		switch {
		case side.macs == nil:
		case len(side.macs) == 0:
			if !side.not {
				return nil, false
			}
		default:
			ms = append(ms, pmatch{kind: mMAC, src: side.src, macs: side.macs, not: side.not})
		}
	}
	return ms, true
}

// ipVariants returns the match lists under which c matches an IPv4 or IPv6
// packet, one nft rule each (they are disjoint); nil when it never does.
func ipVariants(c *firewall.Compiled) [][]pmatch {
	ok4, ok6 := frameOK(c, firewall.EtherIPv4), frameOK(c, firewall.EtherIPv6)
	if !ok4 && !ok6 {
		return nil
	}
	var common []pmatch
	// The scope of port, flag and ICMP conditions, folded with the
	// protocol condition into one set of protocols.
	var scope []uint8
	scoped := false
	narrow := func(ps ...uint8) {
		if !scoped {
			scope, scoped = ps, true
			return
		}
		scope = slices.DeleteFunc(scope, func(p uint8) bool { return !slices.Contains(ps, p) })
	}
	if c.SrcPort != nil || c.DstPort != nil {
		narrow(protoTCP, protoUDP)
	}
	if c.TCPFlags != 0 {
		narrow(protoTCP)
	}
	if c.ICMPType >= 0 || c.ICMPCode >= 0 {
		narrow(protoICMP, protoICMPv6)
	}
	switch {
	case scoped:
		var allowed []uint8
		for _, p := range scope {
			if protoOK(c, p) {
				allowed = append(allowed, p)
			}
		}
		if len(allowed) == 0 {
			return nil
		}
		common = append(common, pmatch{kind: mL4proto, protos: allowed})
	case c.Protocols != nil:
		if len(c.Protocols) == 0 {
			if !c.ProtocolNot {
				return nil
			}
		} else {
			common = append(common, pmatch{kind: mL4proto, protos: c.Protocols, not: c.ProtocolNot})
		}
	}
	for _, side := range []struct {
		src   bool
		ports []firewall.PortRange
		not   bool
	}{{true, c.SrcPort, c.SrcPortNot}, {false, c.DstPort, c.DstPortNot}} {
		switch {
		case side.ports == nil:
		case len(side.ports) == 0:
			if !side.not {
				return nil
			}
		default:
			common = append(common, pmatch{kind: mPort, src: side.src, ports: side.ports, not: side.not})
		}
	}
	if c.TCPFlags != 0 {
		common = append(common, pmatch{kind: mTCPFlags, mask: c.TCPFlags, value: c.TCPFlags, not: c.TCPNot})
	}
	if c.ICMPType >= 0 || c.ICMPCode >= 0 {
		common = append(common, pmatch{kind: mICMP, icmpType: c.ICMPType, icmpCode: c.ICMPCode, not: c.ICMPNot})
	}
	macs, ok := macMatches(c)
	if !ok {
		return nil
	}
	common = append(common, macs...)

	if c.SrcIP == nil && c.DstIP == nil {
		switch {
		case ok4 && ok6:
			return [][]pmatch{common}
		case ok4:
			return [][]pmatch{append([]pmatch{{kind: mNfproto, fam: 4}}, common...)}
		default:
			return [][]pmatch{append([]pmatch{{kind: mNfproto, fam: 6}}, common...)}
		}
	}
	var out [][]pmatch
	for _, fam := range []int{4, 6} {
		if fam == 4 && !ok4 || fam == 6 && !ok6 {
			continue
		}
		ms := []pmatch{{kind: mNfproto, fam: fam}}
		ms = append(ms, common...)
		ok := true
		for _, side := range []struct {
			src bool
			rs  []firewall.IPRange
			not bool
		}{{true, c.SrcIP, c.SrcIPNot}, {false, c.DstIP, c.DstIPNot}} {
			if side.rs == nil {
				continue
			}
			var rs []firewall.IPRange
			for _, r := range side.rs {
				if r.From.BitLen() == map[int]int{4: 32, 6: 128}[fam] {
					rs = append(rs, r)
				}
			}
			if len(rs) == 0 {
				if !side.not {
					ok = false
				}
				continue
			}
			ms = append(ms, pmatch{kind: mAddr, src: side.src, fam: fam, addrs: rs, not: side.not})
		}
		if ok {
			out = append(out, ms)
		}
	}
	return out
}

// arpVariants returns the match lists under which c matches an ARP frame.
func arpVariants(c *firewall.Compiled) [][]pmatch {
	if !frameOK(c, firewall.EtherARP) || ipScoped(c) {
		return nil
	}
	ms, ok := macMatches(c)
	if !ok {
		return nil
	}
	return [][]pmatch{ms}
}

// otherVariants returns the match lists under which c matches a frame that
// is neither IPv4, IPv6 nor ARP (the netdev table accepts those first).
func otherVariants(c *firewall.Compiled) [][]pmatch {
	if ipScoped(c) {
		return nil
	}
	ms, ok := macMatches(c)
	if !ok {
		return nil
	}
	switch {
	case c.EtherTypes == nil:
	case c.FrameNot:
		ms = append([]pmatch{{kind: mEtherType, etherTypes: c.EtherTypes, not: true}}, ms...)
	default:
		var others []uint16
		for _, et := range c.EtherTypes {
			if isOtherFrame(et) {
				others = append(others, et)
			}
		}
		if len(others) == 0 {
			return nil
		}
		ms = append([]pmatch{{kind: mEtherType, etherTypes: others}}, ms...)
	}
	return [][]pmatch{ms}
}

// buildPlan compiles p for the kernel. devices are the Ethernet devices
// whose other frames (neither IP nor ARP) the netdev table filters.
func buildPlan(p *firewall.Program, opt firewall.Options, cfg Config, devices []string) (*plan, error) {
	if err := Check(p); err != nil {
		return nil, err
	}
	if p == nil {
		p = &firewall.Program{}
	}
	inet, arp, netdev := newTable(famInet), newTable(famARP), newTable(famNetdev)
	for _, dir := range []string{firewall.Incoming, firewall.Outgoing} {
		var rules []*firewall.Compiled
		for i := range p.Rules {
			c := &p.Rules[i]
			if c.Direction == dir && knownAction(c.Action) {
				rules = append(rules, c)
			}
		}
		allow := dir == firewall.Incoming && p.AllowIn || dir == firewall.Outgoing && p.AllowOut
		w := &walk{t: inet, dir: dir, cfg: cfg, stateful: opt.Stateful, implicitDeny: allow, variants: ipVariants}
		if err := w.build(rules); err != nil {
			return nil, err
		}
		w.raw(rules)
		// ARP and other frames: no connection state, no implicit deny
		// (it is for IP only).
		w = &walk{t: arp, dir: dir, cfg: cfg, variants: arpVariants}
		if err := w.build(rules); err != nil {
			return nil, err
		}
		if len(devices) > 0 {
			w = &walk{t: netdev, dir: dir, cfg: cfg, variants: otherVariants, devices: devices}
			if err := w.build(rules); err != nil {
				return nil, err
			}
		}
	}
	return &plan{tables: []*ptable{inet, arp, netdev}}, nil
}

// walk builds the chains of one direction in one table.
type walk struct {
	t            *ptable
	dir          string
	cfg          Config
	stateful     bool
	implicitDeny bool
	variants     func(*firewall.Compiled) [][]pmatch
	logs         []entry  // log-only rules that log, with variants in this table
	devices      []string // netdev: the devices to hook
}

type entry struct {
	c        *firewall.Compiled
	idx      int // position among the direction's rules, for chain names
	variants [][]pmatch
}

func (w *walk) short() string {
	if w.dir == firewall.Outgoing {
		return "out"
	}
	return "in"
}

func (w *walk) base() *pchain {
	hook := hookInput
	if w.dir == firewall.Outgoing {
		hook = hookOutput
	}
	switch w.t.family {
	case famARP:
		return w.t.chain(w.short(), hook, 0)
	case famNetdev:
		// One base chain per device sends the frames that are neither IP
		// nor ARP (the other tables' business) to the walk.
		if _, ok := w.t.byName[w.short()]; !ok {
			hook = hookIngress
			if w.dir == firewall.Outgoing {
				hook = hookEgress
			}
			for _, dev := range w.devices {
				ch := w.t.chain(w.short()+"_"+dev, hook, 0)
				ch.device = dev
				ch.add(prule{match: []pmatch{{kind: mEtherType, etherTypes: []uint16{firewall.EtherIPv4, firewall.EtherIPv6, firewall.EtherARP}}}, verdict: pverdict{kind: vAccept}})
				ch.add(prule{verdict: pverdict{kind: vGoto, chain: w.short()}})
			}
		}
		return w.t.chain(w.short(), "", 0)
	}
	_, made := w.t.byName[w.short()]
	ch := w.t.chain(w.short(), hook, w.cfg.Priority)
	if !made && w.t.family == famInet {
		// Decision: traffic on the loopback device is never filtered. It
		// never leaves the host, Deep Security does not filter it either,
		// and an implicit deny would otherwise break every local service
		// the moment one incoming allow rule exists. The evaluator's
		// packets are, by definition, not loopback ones.
		ch.add(prule{match: []pmatch{{kind: mLoopback, src: w.dir == firewall.Incoming}}, verdict: pverdict{kind: vAccept}})
	}
	return ch
}

func (w *walk) build(rules []*firewall.Compiled) error {
	var decide []entry
	firstLog, lastLog := -1, -1
	for i, c := range rules {
		v := w.variants(c)
		if v == nil {
			continue
		}
		if c.Action == firewall.ActionLogOnly {
			if c.Rule != nil && c.Rule.LogDisabled {
				continue // a log-only rule that does not log does nothing
			}
			if firstLog < 0 {
				firstLog = i
			}
			lastLog = i
			w.logs = append(w.logs, entry{c: c, idx: i, variants: v})
			continue
		}
		decide = append(decide, entry{c: c, idx: i, variants: v})
	}
	for _, e := range decide {
		if firstLog >= 0 && e.idx > firstLog && e.idx < lastLog {
			return ruleErr(e.c, "a %s rule between log-only rules cannot be enforced: log-only rules must be contiguous in evaluation order (Compile makes them so)", e.c.Action)
		}
	}
	var out []prule
	for _, e := range decide {
		withLog := len(w.logs) > 0 && e.idx > lastLog
		stmts, v := w.target(e, withLog)
		for _, ms := range e.variants {
			out = append(out, prule{match: ms, stmts: stmts, verdict: v})
		}
	}
	out = append(out, w.end()...)
	// A last rule that accepts everything is the base chain's policy.
	if n := len(out); len(out[n-1].match) == 0 && len(out[n-1].stmts) == 0 && out[n-1].verdict.kind == vAccept {
		out = out[:n-1]
	}
	if len(out) == 0 {
		return nil
	}
	base := w.base()
	base.rules = append(base.rules, out...)
	return nil
}

// end is the tail of the walk: no rule decided.
func (w *walk) end() []prule {
	withLog := len(w.logs) > 0
	var out []prule
	if w.stateful {
		inv := w.invalid(withLog)
		out = append(out, invalidChecks(inv)...)
		out = append(out, prule{match: []pmatch{{kind: mCtState, ct: ctEstablished | ctRelated}}, verdict: w.pass(withLog, firewall.ReasonStateful)})
	}
	if w.implicitDeny {
		out = append(out, prule{verdict: w.dropChain(withLog, "policy", logPrefix{Direction: w.dir, Action: firewall.ActionDeny, Verdict: firewall.Drop, Reason: firewall.ReasonOutOfPolicy})})
	} else {
		out = append(out, prule{verdict: w.pass(withLog, firewall.ReasonDefault)})
	}
	return out
}

// invalidChecks are the rules that send a packet whose effective state is
// invalid to v: conntrack says invalid, or it is new TCP but not a pure SYN.
func invalidChecks(v pverdict) []prule {
	return []prule{
		{match: []pmatch{{kind: mCtState, ct: ctInvalid}}, verdict: v},
		{match: []pmatch{
			{kind: mCtState, ct: ctNew},
			{kind: mL4proto, protos: []uint8{protoTCP}},
			{kind: mTCPFlags, mask: firewall.FlagSYN | firewall.FlagACK | firewall.FlagRST, value: firewall.FlagSYN, not: true},
		}, verdict: v},
	}
}

// target is where a deciding rule sends the packets it matches.
// A deny rule that logs sets the packet's mark to its ID on the way to
// the drop, so that one chain logs the drops of every rule: the prefix
// says "mark" and the reader takes the ID from the logged mark. The packet
// is dropped right after, so the mark never reaches anyone else.
func (w *walk) target(e entry, withLog bool) ([]pstmt, pverdict) {
	switch e.c.Action {
	case firewall.ActionBypass:
		return nil, w.pass(withLog, firewall.ReasonRule)
	case firewall.ActionAllow, firewall.ActionForceAllow:
		if !w.stateful {
			return nil, w.pass(withLog, firewall.ReasonRule)
		}
		name := w.name("allow", withLog)
		if _, ok := w.t.byName[name]; !ok {
			ch := w.t.chain(name, "", 0)
			for _, r := range invalidChecks(w.invalid(withLog)) {
				ch.add(r)
			}
			ch.add(prule{verdict: w.pass(withLog, firewall.ReasonRule)})
		}
		return nil, pverdict{kind: vGoto, chain: name}
	}
	// deny
	r := e.c.Rule
	if r != nil && r.LogDisabled {
		if !withLog {
			return nil, pverdict{kind: vDrop}
		}
		name := w.name("deny", true)
		if _, ok := w.t.byName[name]; !ok {
			ch := w.t.chain(name, "", 0)
			ch.add(w.logJump(firewall.Drop, firewall.ReasonRule))
			ch.add(prule{verdict: pverdict{kind: vDrop}})
		}
		return nil, pverdict{kind: vGoto, chain: name}
	}
	id := 0
	if r != nil {
		id = r.ID
	}
	pre := logPrefix{Direction: w.dir, Action: e.c.Action, Verdict: firewall.Drop, Reason: firewall.ReasonRule, RuleID: id}
	if id != int(int32(id)) {
		// An ID the mark cannot carry: a chain of its own.
		return nil, w.dropChain(withLog, fmt.Sprintf("d%d", e.idx), pre)
	}
	pre.RuleID, pre.FromMark = 0, true
	return []pstmt{{kind: sSetMark, mark: uint32(int32(id))}}, w.dropChain(withLog, "deny_"+e.c.Action, pre)
}

// name is the name of a terminal chain; chains without the log-only jump
// (for rules before the log-only rules) get "_nolog".
func (w *walk) name(what string, withLog bool) string {
	n := w.short() + "_" + what
	if !withLog && len(w.logs) > 0 {
		n += "_nolog"
	}
	return n
}

// pass accepts, after the log-only rules when withLog.
func (w *walk) pass(withLog bool, reason string) pverdict {
	if !withLog {
		return pverdict{kind: vAccept}
	}
	name := w.name("pass_"+reason, true)
	if _, ok := w.t.byName[name]; !ok {
		ch := w.t.chain(name, "", 0)
		ch.add(w.logJump(firewall.Pass, reason))
		ch.add(prule{verdict: pverdict{kind: vAccept}})
	}
	return pverdict{kind: vGoto, chain: name}
}

// invalid drops for the invalid state.
func (w *walk) invalid(withLog bool) pverdict {
	return w.dropChain(withLog, "invalid", logPrefix{Direction: w.dir, Action: firewall.ActionDeny, Verdict: firewall.Drop, Reason: firewall.ReasonInvalid})
}

// dropChain is a chain that runs the log-only rules (withLog), logs the
// drop within DropLogRate (counting the rest) and drops.
func (w *walk) dropChain(withLog bool, what string, pre logPrefix) pverdict {
	name := w.name(what, withLog)
	if _, ok := w.t.byName[name]; ok {
		return pverdict{kind: vGoto, chain: name}
	}
	ch := w.t.chain(name, "", 0)
	if withLog {
		ch.add(w.logJump(firewall.Drop, pre.Reason))
	}
	ch.add(prule{
		stmts: []pstmt{
			{kind: sLimit, name: limitDrop},
			{kind: sLog, prefix: pre.String()},
			{kind: sCounter, name: ctrDropLogged},
		},
		verdict: pverdict{kind: vDrop},
	})
	ch.add(prule{stmts: []pstmt{{kind: sCounter, name: ctrDropSuppressed}}, verdict: pverdict{kind: vDrop}})
	return pverdict{kind: vGoto, chain: name}
}

// logJump is a rule that runs the log-only rules with the outcome in their
// prefixes.
func (w *walk) logJump(verdict, reason string) prule {
	name := w.short() + "_log_" + verdict + "_" + reason
	if _, ok := w.t.byName[name]; !ok {
		ch := w.t.chain(name, "", 0)
		for _, e := range w.logs {
			pre := logPrefix{Direction: w.dir, Action: firewall.ActionLogOnly, Verdict: verdict, Reason: reason}
			if e.c.Rule != nil {
				pre.RuleID = e.c.Rule.ID
			}
			for _, ms := range e.variants {
				// Matches minus logged is what the limit held back.
				ch.add(prule{match: ms, stmts: []pstmt{
					{kind: sCounter, name: ctrLogMatched},
					{kind: sLimit, name: limitLogOnly},
					{kind: sLog, prefix: pre.String()},
					{kind: sCounter, name: ctrLogLogged},
				}})
			}
		}
	}
	return prule{verdict: pverdict{kind: vJump, chain: name}}
}

// raw builds the chain at raw priority that exempts from connection
// tracking the packets a bypass rule will accept: the same walk up to the
// last bypass rule, where a bypass rule notracks and an allow or
// force-allow rule stops the walk. Deny rules are left out: a packet they
// drop may as well be untracked.
func (w *walk) raw(rules []*firewall.Compiled) {
	last := -1
	for i, c := range rules {
		if c.Action == firewall.ActionBypass && w.variants(c) != nil {
			last = i
		}
	}
	if last < 0 {
		return
	}
	hook, name := hookPrerouting, "raw_in"
	if w.dir == firewall.Outgoing {
		hook, name = hookOutput, "raw_out"
	}
	ch := w.t.chain(name, hook, rawPriority)
	if w.dir == firewall.Incoming {
		// Prerouting also sees packets the host forwards, which the input
		// chain never judges: leave them to connection tracking.
		ch.add(prule{match: []pmatch{{kind: mNotLocal}}, verdict: pverdict{kind: vAccept}})
	}
	for _, c := range rules[:last+1] {
		if c.Action == firewall.ActionLogOnly || c.Action == firewall.ActionDeny {
			continue
		}
		var stmts []pstmt
		if c.Action == firewall.ActionBypass {
			stmts = []pstmt{{kind: sNotrack}}
		}
		for _, ms := range w.variants(c) {
			ch.add(prule{match: ms, stmts: stmts, verdict: pverdict{kind: vAccept}})
		}
	}
}
