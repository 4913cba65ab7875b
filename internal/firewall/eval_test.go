package firewall

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const semanticsDir = "testdata/semantics"

// minCases guards the table against shrinking by accident.
const minCases = 60

func loadSemantics(t *testing.T) []Case {
	t.Helper()
	cases, err := LoadCases(semanticsDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) < minCases {
		t.Fatalf("%s holds %d cases, want at least %d: the semantic table lost cases", semanticsDir, len(cases), minCases)
	}
	return cases
}

func TestFirewallSemantics(t *testing.T) {
	for _, c := range loadSemantics(t) {
		t.Run(c.Name, func(t *testing.T) {
			_, d, err := c.Evaluate()
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Check(d); err != nil {
				t.Errorf("%s\n  packet: %s\n  decision: %s", err, c.Packet, describe(d))
			}
		})
	}
}

func describe(d Decision) string {
	s := d.Verdict + " " + d.Reason
	if d.Rule != nil {
		s += fmt.Sprintf(" by rule %d %q", d.Rule.ID, d.Rule.Name)
	}
	for _, e := range d.Events {
		s += fmt.Sprintf("\n  event %+v", e)
	}
	return s
}

var (
	hostAddrs = []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("2001:db8::1")}
	peerNets  = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("2001:db8::/64")}
)

// kernelReplayable says why a case cannot be replayed on real traffic from
// a peer namespace, or "" when it can (Case's documented conditions).
func kernelReplayable(c *Case) string {
	pkt, err := ParsePacket(c.Packet)
	if err != nil {
		return err.Error()
	}
	if !isIP(&pkt) {
		return "the packet is not IP"
	}
	if !slices.Contains([]uint8{protoTCP, protoUDP, protoICMP, protoICMPv6}, pkt.Protocol) {
		return "the packet is not TCP, UDP, ICMP or ICMPv6"
	}
	if pkt.SrcMAC != (MAC{}) || pkt.DstMAC != (MAC{}) {
		return "the packet names MAC addresses"
	}
	p, err := Compile(&c.Set)
	if err != nil {
		return err.Error()
	}
	for _, r := range p.Rules {
		if r.SrcMAC != nil || r.DstMAC != nil {
			return fmt.Sprintf("rule %d has a MAC condition", r.Rule.ID)
		}
	}
	local, remote := pkt.Dst, pkt.Src
	if pkt.Direction == Outgoing {
		local, remote = pkt.Src, pkt.Dst
	}
	if !slices.Contains(hostAddrs, local) {
		return fmt.Sprintf("the host's address %s is not 10.0.0.1 or 2001:db8::1", local)
	}
	if slices.Contains(hostAddrs, remote) || !slices.ContainsFunc(peerNets, func(n netip.Prefix) bool { return n.Contains(remote) }) {
		return fmt.Sprintf("the peer's address %s is not another address of 10.0.0.0/24 or 2001:db8::/64", remote)
	}
	return ""
}

// TestFirewallSemanticsKernelFlag keeps the "kernel" marks honest: the
// nftables tests trust them to pick the cases they can replay.
func TestFirewallSemanticsKernelFlag(t *testing.T) {
	n := 0
	for _, c := range loadSemantics(t) {
		why := kernelReplayable(&c)
		switch {
		case c.Kernel && why != "":
			t.Errorf("%s: marked kernel, but %s", c.Name, why)
		case !c.Kernel && why == "":
			t.Errorf("%s: replayable on real traffic but not marked kernel", c.Name)
		}
		if c.Kernel {
			n++
		}
	}
	if n < minCases/2 {
		t.Errorf("only %d kernel cases: the nftables replay would test little", n)
	}
}

// TestFirewallSemanticsCoverage: the table exercises every action, form,
// frame type, protocol and "not" field, so no part of the rule model goes
// untested by both implementations.
func TestFirewallSemanticsCoverage(t *testing.T) {
	seen := map[string]bool{}
	outcomes := map[string]bool{}
	for _, c := range loadSemantics(t) {
		outcomes[c.Verdict+" "+c.Reason] = true
		if c.Options.Stateful {
			seen["stateful"] = true
		}
		if len(c.Logged) > 0 {
			seen["logged"] = true
		}
		for _, r := range c.Set.Rules {
			b, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			for k, v := range m {
				seen[k] = true
				if s, ok := v.(string); ok {
					seen[k+"="+s] = true
				}
			}
			seen["priority"+r.Priority+"="+r.Action] = true
		}
	}
	want := []string{
		"stateful", "logged",
		"frameNot", "protocolNot", "sourceIPNot", "destinationIPNot", "sourceMACNot", "destinationMACNot",
		"sourcePortNot", "destinationPortNot", "TCPNot", "ICMPNot", "logDisabled", "alertEnabled",
		"ICMPType", "ICMPCode", "tcpflags", "anyFlags", "frameNumber", "protocolNumber",
		"sourceIPType=single", "sourceIPType=masked-ip", "sourceIPType=range", "sourceIPType=multiple", "sourceIPType=ip-list",
		"destinationIPType=single", "destinationIPType=range",
		"sourceMACType=single", "sourceMACType=mac-list", "destinationMACType=single", "destinationMACType=multiple",
		"sourcePortType=multiple", "destinationPortType=multiple", "destinationPortType=port-list",
		"priority0=allow", "priority0=deny", "priority0=force-allow", "priority4=log-only", "priority4=bypass",
		"priority2=bypass", "priority3=deny", "priority4=deny", "priority3=force-allow",
	}
	for _, f := range []string{"any", "ip", "ipv4", "ipv6", "arp", "revarp", "other"} {
		want = append(want, "frameType="+f)
	}
	for _, p := range []string{"any", "icmp", "igmp", "ggp", "tcp", "pup", "udp", "idp", "nd", "raw", "tcp-udp", "icmpv6", "other"} {
		want = append(want, "protocol="+p)
	}
	for _, w := range want {
		if !seen[w] {
			t.Errorf("no case uses %s", w)
		}
	}
	for _, o := range []string{"pass rule", "pass default", "pass stateful", "drop rule", "drop out-of-allowed-policy", "drop invalid-state"} {
		if !outcomes[o] {
			t.Errorf("no case expects %s", o)
		}
	}
}

func mustCompile(t testing.TB, rules ...Rule) *Program {
	t.Helper()
	p, err := Compile(&Set{Rules: rules})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustPacket(t testing.TB, s string) Packet {
	t.Helper()
	p, err := ParsePacket(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFirewallEvents(t *testing.T) {
	deny := Rule{ID: 7, Name: "deny ssh", Action: ActionDeny, Priority: "2", Direction: Incoming, Protocol: "tcp",
		DestinationPortType: TypeMultiple, DestinationPortMultiple: []string{"22"}, AlertEnabled: true}
	logAll := Rule{ID: 3, Name: "log all", Action: ActionLogOnly, Priority: "4", Direction: Incoming}
	allowWeb := Rule{ID: 9, Name: "allow web", Action: ActionAllow, Priority: "0", Direction: Incoming, Protocol: "tcp",
		DestinationPortType: TypeMultiple, DestinationPortMultiple: []string{"443"}}
	p := mustCompile(t, deny, logAll, allowWeb)

	tests := []struct {
		name   string
		opt    Options
		packet string
		want   []Event
	}{
		{"deny with log-only", Options{}, "in tcp 10.0.0.5:40000 > 10.0.0.1:22 flags SA", []Event{
			{Action: "log-only", Verdict: Drop, Reason: ReasonRule, RuleID: 3, RuleName: "log all", Direction: Incoming, Protocol: 6, Src: "10.0.0.5", Dst: "10.0.0.1", SrcPort: 40000, DstPort: 22, Flags: "SA"},
			{Action: "deny", Verdict: Drop, Reason: ReasonRule, RuleID: 7, RuleName: "deny ssh", Direction: Incoming, Protocol: 6, Src: "10.0.0.5", Dst: "10.0.0.1", SrcPort: 40000, DstPort: 22, Flags: "SA", Alert: true},
		}},
		{"implicit deny", Options{}, "in udp [2001:db8::5]:5353 > [2001:db8::1]:53", []Event{
			{Action: "log-only", Verdict: Drop, Reason: ReasonOutOfPolicy, RuleID: 3, RuleName: "log all", Direction: Incoming, Protocol: 17, Src: "2001:db8::5", Dst: "2001:db8::1", SrcPort: 5353, DstPort: 53},
			{Action: "deny", Verdict: Drop, Reason: ReasonOutOfPolicy, Direction: Incoming, Protocol: 17, Src: "2001:db8::5", Dst: "2001:db8::1", SrcPort: 5353, DstPort: 53},
		}},
		{"invalid despite allow", Options{Stateful: true}, "in tcp 10.0.0.5:40000 > 10.0.0.1:443 flags FA", []Event{
			{Action: "log-only", Verdict: Drop, Reason: ReasonInvalid, RuleID: 3, RuleName: "log all", Direction: Incoming, Protocol: 6, Src: "10.0.0.5", Dst: "10.0.0.1", SrcPort: 40000, DstPort: 443, Flags: "FA"},
			{Action: "deny", Verdict: Drop, Reason: ReasonInvalid, Direction: Incoming, Protocol: 6, Src: "10.0.0.5", Dst: "10.0.0.1", SrcPort: 40000, DstPort: 443, Flags: "FA"},
		}},
		{"stateless ignores established", Options{}, "in icmp 10.0.0.5 > 10.0.0.1 type 8 code 0 state established", []Event{
			{Action: "log-only", Verdict: Drop, Reason: ReasonOutOfPolicy, RuleID: 3, RuleName: "log all", Direction: Incoming, Protocol: 1, Src: "10.0.0.5", Dst: "10.0.0.1"},
			{Action: "deny", Verdict: Drop, Reason: ReasonOutOfPolicy, Direction: Incoming, Protocol: 1, Src: "10.0.0.5", Dst: "10.0.0.1"},
		}},
		{"stateful established", Options{Stateful: true}, "in icmp 10.0.0.5 > 10.0.0.1 type 0 code 0 state established", []Event{
			{Action: "log-only", Verdict: Pass, Reason: ReasonStateful, RuleID: 3, RuleName: "log all", Direction: Incoming, Protocol: 1, Src: "10.0.0.5", Dst: "10.0.0.1"},
		}},
		{"pass without log-only", Options{}, "out tcp 10.0.0.1:40000 > 10.0.0.5:22 flags S", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Evaluate(p, tt.opt, mustPacket(t, tt.packet))
			if diff := cmp.Diff(d.Events, tt.want); diff != "" {
				t.Errorf("events (-got +want):\n%s", diff)
			}
		})
	}
}

func TestFirewallEvaluateNilProgram(t *testing.T) {
	d := Evaluate(nil, Options{Stateful: true}, mustPacket(t, "in tcp 10.0.0.5:1 > 10.0.0.1:2 flags A"))
	if d.Verdict != Drop || d.Reason != ReasonInvalid {
		t.Errorf("got %s %s, want drop invalid-state", d.Verdict, d.Reason)
	}
	d = Evaluate(nil, Options{}, mustPacket(t, "in tcp 10.0.0.5:1 > 10.0.0.1:2 flags A"))
	if d.Verdict != Pass || d.Reason != ReasonDefault {
		t.Errorf("got %s %s, want pass default", d.Verdict, d.Reason)
	}
}

func TestFirewallEvaluateUnknownState(t *testing.T) {
	p := mustCompile(t, Rule{ID: 1, Name: "allow udp", Action: ActionAllow, Priority: "0", Direction: Incoming, Protocol: "udp"})
	pkt := mustPacket(t, "in udp 10.0.0.5:1 > 10.0.0.1:2")
	pkt.State = "untracked"
	if d := Evaluate(p, Options{Stateful: true}, pkt); d.Verdict != Drop || d.Reason != ReasonInvalid {
		t.Errorf("stateful, unknown state: got %s %s, want drop invalid-state", d.Verdict, d.Reason)
	}
	if d := Evaluate(p, Options{}, pkt); d.Verdict != Pass || d.Reason != ReasonRule {
		t.Errorf("stateless, unknown state: got %s %s, want pass rule", d.Verdict, d.Reason)
	}
}

// TestFirewallEvaluatePassAllocs: the common case (a pass with no log-only
// match) allocates nothing, so the evaluator can sit on a hot path.
func TestFirewallEvaluatePassAllocs(t *testing.T) {
	p := mustCompile(t,
		Rule{ID: 1, Name: "deny telnet", Action: ActionDeny, Priority: "1", Direction: Incoming, Protocol: "tcp",
			DestinationPortType: TypeMultiple, DestinationPortMultiple: []string{"23"}},
		Rule{ID: 2, Name: "allow ssh", Action: ActionAllow, Priority: "0", Direction: Incoming, Protocol: "tcp",
			SourceIPType: TypeMultiple, SourceIPMultiple: []string{"10.0.0.0/24", "2001:db8::/64"},
			DestinationPortType: TypeMultiple, DestinationPortMultiple: []string{"22"}},
	)
	pkt := mustPacket(t, "in tcp 10.0.0.5:40000 > 10.0.0.1:22 flags S")
	var d Decision
	allocs := testing.AllocsPerRun(100, func() { d = Evaluate(p, Options{Stateful: true}, pkt) })
	if d.Verdict != Pass || d.Rule == nil || d.Rule.ID != 2 {
		t.Fatalf("got %s", describe(d))
	}
	if allocs != 0 {
		t.Errorf("a pass allocates %v times, want 0", allocs)
	}
}

func TestFirewallFlagString(t *testing.T) {
	for flags, want := range map[uint8]string{0: "", FlagSYN: "S", FlagSYN | FlagACK: "SA", FlagFIN | FlagACK: "FA", FlagRST: "R", FlagPSH | FlagACK: "PA", 0x3f: "FSRPAU"} {
		if got := FlagString(flags); got != want {
			t.Errorf("FlagString(%#x) = %q, want %q", flags, got, want)
		}
	}
}

func TestFirewallHiddenRules(t *testing.T) {
	mgr := []netip.AddrPort{netip.MustParseAddrPort("10.0.0.9:4119"), netip.MustParseAddrPort("[2001:db8::9]:4119")}
	hidden := HiddenRules(mgr, 4118)
	if len(hidden) != 8 {
		t.Fatalf("got %d rules, want 8 (4 per manager address)", len(hidden))
	}
	for i, r := range hidden {
		if r.ID != -(i+1) || r.Action != ActionBypass || r.Priority != "4" || !strings.Contains(r.Name, "hidden") {
			t.Errorf("rule %d: ID %d action %s priority %s name %q", i, r.ID, r.Action, r.Priority, r.Name)
		}
	}
	// A policy that drops everything, statefully: the manager's traffic
	// still passes, in both directions, opening packets and replies alike.
	rules := append(slices.Clone(hidden),
		Rule{ID: 1, Name: "deny all in", Action: ActionDeny, Priority: "4", Direction: Incoming, FrameType: "any"},
		Rule{ID: 2, Name: "deny all out", Action: ActionDeny, Priority: "4", Direction: Outgoing, FrameType: "any"},
	)
	p := mustCompile(t, rules...)
	opt := Options{Stateful: true}
	for _, tt := range []struct {
		packet string
		pass   bool
	}{
		{"out tcp 10.0.0.1:40000 > 10.0.0.9:4119 flags S", true},
		{"in tcp 10.0.0.9:4119 > 10.0.0.1:40000 flags SA", true},
		{"in tcp 10.0.0.9:50000 > 10.0.0.1:4118 flags S", true},
		{"out tcp 10.0.0.1:4118 > 10.0.0.9:50000 flags SA", true},
		{"out tcp [2001:db8::1]:40000 > [2001:db8::9]:4119 flags S", true},
		{"in tcp [2001:db8::9]:4119 > [2001:db8::1]:40000 flags A state invalid", true},
		{"out tcp 10.0.0.1:40000 > 10.0.0.9:22 flags S", false},
		{"in tcp 10.0.0.8:4119 > 10.0.0.1:40000 flags SA", false},
		{"in tcp 10.0.0.8:50000 > 10.0.0.1:4118 flags S", false},
		{"out udp 10.0.0.1:40000 > 10.0.0.9:4119", false},
		{"in arp 10.0.0.9 > 10.0.0.1", false},
	} {
		d := Evaluate(p, opt, mustPacket(t, tt.packet))
		if got := d.Verdict == Pass; got != tt.pass {
			t.Errorf("%s: got %s", tt.packet, describe(d))
		} else if tt.pass && (d.Rule == nil || d.Rule.ID >= 0) {
			t.Errorf("%s: passed by %s, want a hidden rule", tt.packet, describe(d))
		}
	}

	if got := HiddenRules(mgr[:1], 0); len(got) != 2 {
		t.Errorf("without a listen port: %d rules, want 2", len(got))
	}
	if got := HiddenRules([]netip.AddrPort{{}}, 4118); len(got) != 0 {
		t.Errorf("invalid address: %d rules, want 0", len(got))
	}
	// Port 0: any port of the manager.
	any := mustCompile(t, HiddenRules([]netip.AddrPort{netip.MustParseAddrPort("10.0.0.9:0")}, 0)...)
	if d := Evaluate(any, opt, mustPacket(t, "out tcp 10.0.0.1:40000 > 10.0.0.9:443 flags S")); d.Reason != ReasonRule {
		t.Errorf("port 0: got %s, want a hidden rule", describe(d))
	}
}
