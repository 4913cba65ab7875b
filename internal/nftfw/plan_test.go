package nftfw

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/yagura/yagura/internal/firewall"
)

// These tests hold the plan to firewall.Evaluate without a kernel: a small
// interpreter runs a packet through the plan's chains with nftables'
// semantics (verdicts, jump and goto, notrack before conntrack), and its
// verdict and log prefixes must equal the evaluator's decision and events.
// The network-namespace tests then check the netlink translation on real
// packets.

// run is the interpreter. ct is the conntrack state the packet would have
// (one of the ct* bits); a notrack in the raw chain makes it untracked. It
// fails the test when a rule reads a header the packet does not have: the
// plan must guard every such match with nfproto or l4proto.
func run(t *testing.T, pl *plan, p firewall.Packet, ct uint32) (verdict string, prefixes []string) {
	t.Helper()
	tables := map[string]*ptable{}
	for _, tb := range pl.tables {
		tables[tb.family] = tb
	}
	in := p.Direction == firewall.Incoming
	ip := p.EtherType == firewall.EtherIPv4 || p.EtherType == firewall.EtherIPv6
	// The hooks a frame meets, in order: netdev ingress first, egress
	// last; IP goes through inet, ARP through arp.
	type stage struct {
		family string
		hooks  []string
	}
	var stages []stage
	if in {
		stages = append(stages, stage{famNetdev, []string{hookIngress}})
	}
	switch {
	case ip && in:
		stages = append(stages, stage{famInet, []string{hookPrerouting, hookInput}})
	case ip:
		stages = append(stages, stage{famInet, []string{hookOutput}})
	case p.EtherType == firewall.EtherARP && in:
		stages = append(stages, stage{famARP, []string{hookInput}})
	case p.EtherType == firewall.EtherARP:
		stages = append(stages, stage{famARP, []string{hookOutput}})
	}
	if !in {
		stages = append(stages, stage{famNetdev, []string{hookEgress}})
	}
	st := &interp{t: t, p: p, ct: ct}
	for _, sg := range stages {
		table := tables[sg.family]
		if table == nil {
			continue
		}
		var bases []*pchain
		for _, c := range table.chains {
			if c.hook == "" {
				continue
			}
			if sg.family == famNetdev && c.device != "eth0" {
				t.Fatalf("netdev chain %s on device %q", c.name, c.device)
			}
			if slices.Contains(sg.hooks, c.hook) {
				bases = append(bases, c)
			}
		}
		// prerouting runs before input; then by priority.
		slices.SortStableFunc(bases, func(a, b *pchain) int {
			ia, ib := slices.Index(sg.hooks, a.hook), slices.Index(sg.hooks, b.hook)
			if ia != ib {
				return ia - ib
			}
			return int(a.prio) - int(b.prio)
		})
		st.table = table
		for _, b := range bases {
			st.depth, st.prio = 0, b.prio
			v, decided := st.chain(b)
			if decided && v == vDrop {
				return firewall.Drop, st.logs
			}
		}
	}
	return firewall.Pass, st.logs
}

type interp struct {
	t     *testing.T
	table *ptable
	p     firewall.Packet
	ct    uint32
	logs  []string
	depth int
	prio  int32 // of the base chain being run
	mark  uint32
}

func (s *interp) chain(c *pchain) (vkind, bool) {
	s.depth++
	if s.depth > 16 {
		s.t.Fatalf("chain %s: nested deeper than the kernel's 16", c.name)
	}
	defer func() { s.depth-- }()
	for _, r := range c.rules {
		if !s.matches(r.match) {
			continue
		}
		for _, st := range r.stmts {
			switch st.kind {
			case sLog:
				prefix := st.prefix
				if strings.HasSuffix(prefix, ":mark") {
					prefix = strings.TrimSuffix(prefix, "mark") + fmt.Sprint(int32(s.mark))
				}
				s.logs = append(s.logs, prefix)
			case sSetMark:
				s.mark = st.mark
			case sNotrack:
				if c.hook != hookPrerouting && c.hook != hookOutput || c.prio >= -200 {
					s.t.Fatalf("notrack in chain %s (hook %q, priority %d), after connection tracking", c.name, c.hook, c.prio)
				}
				s.ct = ctUntracked
			case sLimit, sCounter:
				// The limits of these tests never run over.
			}
		}
		switch r.verdict.kind {
		case vNone:
		case vAccept, vDrop:
			return r.verdict.kind, true
		case vJump, vGoto:
			target, ok := s.table.byName[r.verdict.chain]
			if !ok {
				s.t.Fatalf("chain %s: %s to missing chain %s", c.name, map[vkind]string{vJump: "jump", vGoto: "goto"}[r.verdict.kind], r.verdict.chain)
			}
			if target.hook != "" {
				s.t.Fatalf("jump to base chain %s", target.name)
			}
			v, decided := s.chain(target)
			if decided || r.verdict.kind == vGoto {
				return v, decided
			}
		}
	}
	return vNone, false
}

func (s *interp) matches(ms []pmatch) bool {
	p := &s.p
	ip := p.EtherType == firewall.EtherIPv4 || p.EtherType == firewall.EtherIPv6
	// What earlier matches of the rule established, as nftables needs it
	// to read a header safely.
	fam, protos := 0, []uint8(nil)
	for _, m := range ms {
		ok := false
		switch m.kind {
		case mNfproto:
			ok = ip && (m.fam == 4) == (p.EtherType == firewall.EtherIPv4)
			fam = m.fam
		case mL4proto:
			if !ip || s.table.family != famInet {
				s.t.Fatalf("l4proto match on a %#x frame in the %s table", p.EtherType, s.table.family)
			}
			ok = slices.Contains(m.protos, p.Protocol) != m.not
			if !m.not {
				protos = m.protos
			}
		case mAddr:
			if fam != m.fam {
				s.t.Fatalf("address match of IPv%d without an nfproto match", m.fam)
			}
			a := p.Dst
			if m.src {
				a = p.Src
			}
			in := false
			for _, r := range m.addrs {
				in = in || r.Contains(a)
			}
			ok = in != m.not
		case mMAC:
			mac := p.DstMAC
			if m.src {
				mac = p.SrcMAC
			}
			ok = slices.Contains(m.macs, mac) != m.not
		case mPort:
			if len(protos) == 0 || slices.ContainsFunc(protos, func(x uint8) bool { return x != protoTCP && x != protoUDP }) {
				s.t.Fatalf("port match not limited to TCP and UDP (l4proto %v)", protos)
			}
			port := p.DstPort
			if m.src {
				port = p.SrcPort
			}
			in := false
			for _, r := range m.ports {
				in = in || r.Lo <= port && port <= r.Hi
			}
			ok = in != m.not
		case mTCPFlags:
			if !slices.Equal(protos, []uint8{protoTCP}) {
				s.t.Fatalf("TCP flags match not limited to TCP (l4proto %v)", protos)
			}
			ok = (p.TCPFlags&m.mask == m.value) != m.not
		case mICMP:
			if len(protos) == 0 || slices.ContainsFunc(protos, func(x uint8) bool { return x != protoICMP && x != protoICMPv6 }) {
				s.t.Fatalf("ICMP match not limited to ICMP (l4proto %v)", protos)
			}
			ok = ((m.icmpType < 0 || int(p.ICMPType) == m.icmpType) && (m.icmpCode < 0 || int(p.ICMPCode) == m.icmpCode)) != m.not
		case mCtState:
			if s.table.family != famInet {
				s.t.Fatalf("ct match in the %s table", s.table.family)
			}
			if s.prio <= -200 {
				s.t.Fatalf("ct match under a base chain at priority %d, before connection tracking", s.prio)
			}
			ok = s.ct&m.ct != 0
		case mNotLocal:
			ok = false // the tests' packets are all for the host
		case mLoopback:
			ok = false // nor do they travel on the loopback device
		case mEtherType:
			if s.table.family != famNetdev {
				s.t.Fatalf("EtherType match in the %s table", s.table.family)
			}
			ok = slices.Contains(m.etherTypes, p.EtherType) != m.not
		}
		if !ok {
			return false
		}
	}
	return true
}

// ctOf is the conntrack state the kernel gives a packet of the state.
func ctOf(state string) uint32 {
	switch state {
	case firewall.StateEstablished:
		return ctEstablished
	case firewall.StateRelated:
		return ctRelated
	case firewall.StateInvalid:
		return ctInvalid
	}
	return ctNew
}

// compare runs p through the plan and the evaluator and reports how they
// differ.
func compare(t *testing.T, prog *firewall.Program, opt firewall.Options, pkt firewall.Packet) error {
	t.Helper()
	pl, err := buildPlan(prog, opt, DefaultConfig(), []string{"eth0"})
	if err != nil {
		return fmt.Errorf("buildPlan: %w", err)
	}
	verdict, prefixes := run(t, pl, pkt, ctOf(pkt.State))
	d := firewall.Evaluate(prog, opt, pkt)
	var events []firewall.Event
	names := programRules(prog)
	for _, s := range prefixes {
		pre, ok := parsePrefix(s)
		if !ok {
			return fmt.Errorf("bad prefix %q", s)
		}
		events = append(events, makeEvent(pre, headersOf(pkt), 0, names))
	}
	var diffs []string
	if verdict != d.Verdict {
		diffs = append(diffs, fmt.Sprintf("verdict %s, evaluator %s (%s)", verdict, d.Verdict, d.Reason))
	}
	if diff := cmp.Diff(events, d.Events); diff != "" {
		diffs = append(diffs, "events (-plan +evaluator):\n"+diff)
	}
	if diffs != nil {
		return errors.New(strings.Join(diffs, "\n"))
	}
	return nil
}

// programRules is the rule lookup of events, as the enforcer builds it.
func programRules(p *firewall.Program) func(int) (ruleInfo, bool) {
	m := ruleMap(p)
	return func(id int) (ruleInfo, bool) { ri, ok := m[id]; return ri, ok }
}

// headersOf is what the header parser reads from pkt's bytes.
func headersOf(p firewall.Packet) headers {
	h := headers{EtherType: p.EtherType, Src: p.Src, Dst: p.Dst}
	if p.EtherType == firewall.EtherIPv4 || p.EtherType == firewall.EtherIPv6 {
		h.Protocol = p.Protocol
		switch p.Protocol {
		case protoTCP:
			h.SrcPort, h.DstPort, h.TCPFlags = p.SrcPort, p.DstPort, p.TCPFlags
		case protoUDP:
			h.SrcPort, h.DstPort = p.SrcPort, p.DstPort
		case protoICMP, protoICMPv6:
			h.ICMPType, h.ICMPCode = p.ICMPType, p.ICMPCode
		}
	}
	return h
}

// TestPlanSemanticCases runs every case of the semantic table, kernel or
// not, through the plan.
func TestPlanSemanticCases(t *testing.T) {
	cases, err := firewall.LoadCases("../firewall/testdata/semantics")
	if err != nil {
		t.Fatal(err)
	}
	refused := 0
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			prog, err := firewall.Compile(&c.Set)
			if err != nil {
				t.Fatal(err)
			}
			pkt, err := firewall.ParsePacket(c.Packet)
			if err != nil {
				t.Fatal(err)
			}
			if err := Check(prog); err != nil {
				if !errors.Is(err, errors.ErrUnsupported) {
					t.Fatalf("Check: %v, not ErrUnsupported", err)
				}
				refused++
				t.Skipf("refused: %v", err)
			}
			if err := compare(t, prog, c.Options, pkt); err != nil {
				t.Errorf("%s\n%v", c.Packet, err)
			}
		})
	}
	t.Logf("%d cases, %d refused by Check", len(cases), refused)
}

// TestPlanRandom compares the plan with the evaluator on random programs
// and packets.
func TestPlanRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	n := 3000
	if testing.Short() {
		n = 300
	}
	compiled, refused, checked := 0, 0, 0
	for i := range n {
		set := randomSet(r)
		prog, err := firewall.Compile(set)
		if err != nil {
			continue
		}
		compiled++
		if err := Check(prog); err != nil {
			refused++
			continue
		}
		for range 30 {
			pkt := randomPacket(r)
			opt := firewall.Options{Stateful: r.IntN(2) == 0}
			if err := compare(t, prog, opt, pkt); err != nil {
				t.Fatalf("program %d, %v, stateful %v:\n%v\nrules:\n%s", i, pkt, opt.Stateful, err, describe(prog))
			}
			checked++
		}
	}
	t.Logf("%d sets compiled, %d refused by Check, %d packets compared", compiled, refused, checked)
	if checked < n*10 {
		t.Fatalf("only %d packets compared: the generator makes too few valid sets", checked)
	}
}

func describe(p *firewall.Program) string {
	var b strings.Builder
	for _, c := range p.Rules {
		fmt.Fprintf(&b, "  %+v\n", *c.Rule)
	}
	return b.String()
}

// Small pools, so that random rules and packets meet often.
var (
	poolV4   = []string{"10.0.0.1", "10.0.0.2", "10.0.0.5", "10.0.0.9"}
	poolV6   = []string{"2001:db8::1", "2001:db8::2", "2001:db8::5"}
	poolMAC  = []string{"02:00:00:00:00:01", "02:00:00:00:00:05"}
	poolPort = []uint16{22, 53, 80, 443}
)

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

func randomPacket(r *rand.Rand) firewall.Packet {
	p := firewall.Packet{Direction: pick(r, []string{firewall.Incoming, firewall.Outgoing})}
	switch r.IntN(10) {
	case 0:
		p.EtherType = firewall.EtherARP
		p.Src, p.Dst = netip.MustParseAddr(pick(r, poolV4)), netip.MustParseAddr(pick(r, poolV4))
	case 1:
		p.EtherType = 0x88cc
	case 2, 3, 4:
		p.EtherType = firewall.EtherIPv6
		p.Src, p.Dst = netip.MustParseAddr(pick(r, poolV6)), netip.MustParseAddr(pick(r, poolV6))
	default:
		p.EtherType = firewall.EtherIPv4
		p.Src, p.Dst = netip.MustParseAddr(pick(r, poolV4)), netip.MustParseAddr(pick(r, poolV4))
	}
	if p.EtherType == firewall.EtherIPv4 || p.EtherType == firewall.EtherIPv6 {
		p.Protocol = pick(r, []uint8{protoTCP, protoTCP, protoUDP, protoICMP, protoICMPv6, 47})
		switch p.Protocol {
		case protoTCP:
			p.SrcPort, p.DstPort = pick(r, poolPort), pick(r, poolPort)
			p.TCPFlags = uint8(r.IntN(64))
			if r.IntN(2) == 0 {
				p.TCPFlags = pick(r, []uint8{firewall.FlagSYN, firewall.FlagACK, firewall.FlagSYN | firewall.FlagACK})
			}
		case protoUDP:
			p.SrcPort, p.DstPort = pick(r, poolPort), pick(r, poolPort)
		case protoICMP, protoICMPv6:
			p.ICMPType, p.ICMPCode = uint8(r.IntN(4)), uint8(r.IntN(2))
		}
		p.State = pick(r, []string{"", firewall.StateNew, firewall.StateEstablished, firewall.StateRelated, firewall.StateInvalid})
	}
	if p.Direction == firewall.Incoming {
		p.SrcMAC = firewall.MAC(must(net.ParseMAC(pick(r, poolMAC))))
		p.DstMAC = firewall.MAC(must(net.ParseMAC(pick(r, poolMAC))))
	}
	return p
}

func randomSet(r *rand.Rand) *firewall.Set {
	s := &firewall.Set{
		IPLists: []firewall.IPList{
			{ID: 1, Name: "some", Items: []string{"10.0.0.1-10.0.0.2", "2001:db8::5"}},
			{ID: 2, Name: "empty", Items: []string{"# nothing"}},
		},
		MACLists:  []firewall.MACList{{ID: 1, Name: "m", Items: []string{poolMAC[1]}}, {ID: 2, Name: "none"}},
		PortLists: []firewall.PortList{{ID: 1, Name: "p", Items: []string{"50-90"}}, {ID: 2, Name: "none"}},
	}
	for i := range 1 + r.IntN(6) {
		ru := firewall.Rule{ID: i + 1, Name: fmt.Sprintf("r%d", i+1)}
		ru.Action = pick(r, []string{firewall.ActionAllow, firewall.ActionDeny, firewall.ActionForceAllow, firewall.ActionBypass, firewall.ActionLogOnly})
		switch ru.Action {
		case firewall.ActionAllow:
			ru.Priority = "0"
		case firewall.ActionLogOnly:
			ru.Priority = "4"
		default:
			ru.Priority = fmt.Sprint(r.IntN(5))
		}
		ru.Direction = pick(r, []string{firewall.Incoming, firewall.Outgoing})
		ru.FrameType = pick(r, []string{"ip", "ip", "ip", "ipv4", "ipv6", "arp", "any", "other"})
		if ru.FrameType == "other" {
			ru.FrameNumber = pick(r, []int{0x0800, 0x86dd, 0x0806, 0x88cc})
		}
		ru.FrameNot = r.IntN(6) == 0
		ru.Protocol = pick(r, []string{"any", "any", "tcp", "tcp", "udp", "tcp-udp", "icmp", "icmpv6", "other"})
		if ru.Protocol == "other" {
			ru.ProtocolNumber = 47
		}
		ru.ProtocolNot = r.IntN(6) == 0
		ipSide := func(typ *string, value, mask, from, to *string, multiple *[]string, list *int, not *bool) {
			*not = r.IntN(5) == 0
			pool := poolV4
			if r.IntN(3) == 0 {
				pool = poolV6
			}
			switch r.IntN(7) {
			case 0:
				*typ = firewall.TypeSingle
				*value = pick(r, pool)
			case 1:
				*typ = firewall.TypeMasked
				*value, *mask = pick(r, pool), pick(r, []string{"30", "126", "0"})
				if netip.MustParseAddr(*value).Is4() && *mask == "126" {
					*mask = "31"
				}
			case 2:
				*typ = firewall.TypeRange
				a, b := pick(r, pool), pick(r, pool)
				if netip.MustParseAddr(a).Compare(netip.MustParseAddr(b)) > 0 {
					a, b = b, a
				}
				*from, *to = a, b
			case 3:
				*typ = firewall.TypeMultiple
				*multiple = []string{pick(r, poolV4), pick(r, poolV6)}
			case 4:
				*typ = firewall.TypeIPList
				*list = 1 + r.IntN(2)
			default:
				*typ = firewall.TypeAny
			}
		}
		if r.IntN(2) == 0 {
			ipSide(&ru.SourceIPType, &ru.SourceIPValue, &ru.SourceIPMask, &ru.SourceIPRangeFrom, &ru.SourceIPRangeTo, &ru.SourceIPMultiple, &ru.SourceIPListID, &ru.SourceIPNot)
		}
		if r.IntN(3) == 0 {
			ipSide(&ru.DestinationIPType, &ru.DestinationIPValue, &ru.DestinationIPMask, &ru.DestinationIPRangeFrom, &ru.DestinationIPRangeTo, &ru.DestinationIPMultiple, &ru.DestinationIPListID, &ru.DestinationIPNot)
		}
		if ru.Direction == firewall.Incoming && r.IntN(4) == 0 {
			switch r.IntN(3) {
			case 0:
				ru.SourceMACType, ru.SourceMACValue = firewall.TypeSingle, pick(r, poolMAC)
			case 1:
				ru.SourceMACType, ru.SourceMACListID = firewall.TypeMACList, 1+r.IntN(2)
			default:
				ru.DestinationMACType, ru.DestinationMACValue = firewall.TypeSingle, pick(r, poolMAC)
			}
			ru.SourceMACNot = r.IntN(4) == 0
			ru.DestinationMACNot = r.IntN(4) == 0
		}
		if ru.Protocol == "tcp" || ru.Protocol == "udp" || ru.Protocol == "tcp-udp" {
			if r.IntN(2) == 0 {
				ru.DestinationPortType, ru.DestinationPortMultiple = firewall.TypeMultiple, []string{fmt.Sprint(pick(r, poolPort)), "400-500"}
				ru.DestinationPortNot = r.IntN(4) == 0
			}
			if r.IntN(4) == 0 {
				ru.SourcePortType, ru.SourcePortListID = firewall.TypePortList, 1+r.IntN(2)
				ru.SourcePortNot = r.IntN(3) == 0
			}
		}
		if ru.Protocol == "tcp" && r.IntN(3) == 0 {
			ru.TCPFlags = pick(r, [][]string{{"syn"}, {"ack"}, {"syn", "ack"}, {"fin"}})
			ru.TCPNot = r.IntN(3) == 0
		}
		if (ru.Protocol == "icmp" || ru.Protocol == "icmpv6") && r.IntN(2) == 0 {
			ty := r.IntN(3)
			ru.ICMPType = &ty
			if r.IntN(2) == 0 {
				co := r.IntN(2)
				ru.ICMPCode = &co
			}
			ru.ICMPNot = r.IntN(3) == 0
		}
		ru.LogDisabled = r.IntN(4) == 0
		ru.AlertEnabled = r.IntN(4) == 0
		ru.Normalize()
		s.Rules = append(s.Rules, ru)
	}
	return s
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestCheck(t *testing.T) {
	// Compile's programs pass, frames of any type included.
	for _, rule := range []string{
		`{"ID":1,"name":"a","action":"deny","priority":"0","direction":"incoming","frameType":"any"}`,
		`{"ID":1,"name":"a","action":"deny","priority":"0","direction":"incoming","frameType":"revarp","sourceMACType":"single","sourceMACValue":"02:00:00:00:00:09"}`,
		`{"ID":2,"name":"b","action":"log-only","priority":"4","direction":"outgoing","frameType":"arp","frameNot":true}`,
	} {
		rules, err := firewall.DecodeRules([]byte(rule))
		if err != nil {
			t.Fatal(err)
		}
		prog, err := firewall.Compile(&firewall.Set{Rules: rules})
		if err != nil {
			t.Fatal(err)
		}
		if err := Check(prog); err != nil {
			t.Errorf("Check(%s): %v", rule, err)
		}
	}
	// Hand-built programs that cannot be enforced.
	any := func(id int, action, dir string) firewall.Compiled {
		return firewall.Compiled{Rule: &firewall.Rule{ID: id, Name: fmt.Sprint("r", id)}, Action: action, Direction: dir, ICMPType: -1, ICMPCode: -1}
	}
	outMAC := any(5, firewall.ActionDeny, firewall.Outgoing)
	outMAC.DstMAC = []firewall.MAC{{2, 0, 0, 0, 0, 1}}
	lo1, deny, lo2 := any(1, firewall.ActionLogOnly, firewall.Incoming), any(3, firewall.ActionDeny, firewall.Incoming), any(2, firewall.ActionLogOnly, firewall.Incoming)
	for _, tt := range []struct {
		name string
		p    *firewall.Program
		want string
	}{
		{"outgoing MAC", &firewall.Program{Rules: []firewall.Compiled{outMAC}}, `rule 5 "r5": MAC conditions cannot be enforced on outgoing rules`},
		{"deny between log-only rules", &firewall.Program{Rules: []firewall.Compiled{lo1, deny, lo2}}, `rule 3 "r3": a deny rule between log-only rules`},
	} {
		_, err := buildPlan(tt.p, firewall.Options{}, DefaultConfig(), []string{"eth0"})
		if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("%s: buildPlan: %v, want %q wrapping ErrUnsupported", tt.name, err, tt.want)
		}
	}
}

// TestPlanRuleIDs: deny rules pass their ID to the shared drop chain in the
// packet mark, as a signed 32-bit number; an ID that does not fit gets a
// chain of its own.
func TestPlanRuleIDs(t *testing.T) {
	for _, id := range []int{1, -4, math.MaxInt32, math.MinInt32, math.MaxInt32 + 1, 1 << 40} {
		rules := []firewall.Rule{
			{ID: id, Name: "deny ssh", Action: firewall.ActionDeny, Priority: "2", Direction: firewall.Incoming, Protocol: "tcp",
				DestinationPortType: firewall.TypeMultiple, DestinationPortMultiple: []string{"22"}},
			{ID: 5, Name: "watch", Action: firewall.ActionLogOnly, Priority: "4", Direction: firewall.Incoming},
		}
		for i := range rules {
			rules[i].Normalize()
		}
		prog, err := firewall.Compile(&firewall.Set{Rules: rules})
		if err != nil {
			t.Fatal(err)
		}
		pkt, _ := firewall.ParsePacket("in tcp 10.0.0.5:40000 > 10.0.0.1:22 flags S")
		if err := compare(t, prog, firewall.Options{}, pkt); err != nil {
			t.Errorf("rule ID %d: %v", id, err)
		}
		pl, _ := buildPlan(prog, firewall.Options{}, DefaultConfig(), nil)
		_, own := pl.tables[0].byName["in_d1"] // the deny rule comes second
		if want := id != int(int32(id)); own != want {
			t.Errorf("rule ID %d: chain of its own %v, want %v", id, own, want)
		}
	}
}
