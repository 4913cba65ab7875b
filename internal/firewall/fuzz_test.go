package firewall

import (
	"net/netip"
	"testing"
)

// fuzzSets are the rule sets FuzzEvaluate picks from: every action,
// priority, form and "not" flag, lists included.
func fuzzSets(t testing.TB) []*Program {
	t.Helper()
	icmp := 3
	code := 3
	sets := []Set{
		{},
		{Rules: []Rule{
			{ID: 1, Name: "allow ssh", Action: ActionAllow, Priority: "0", Direction: Incoming, Protocol: "tcp",
				DestinationPortType: TypeMultiple, DestinationPortMultiple: []string{"22"}},
			{ID: 2, Name: "log", Action: ActionLogOnly, Priority: "4", Direction: Incoming, FrameType: "any", LogDisabled: true},
			{ID: 3, Name: "log v6", Action: ActionLogOnly, Priority: "4", Direction: Incoming, FrameType: "ipv6", AlertEnabled: true},
			{ID: 4, Name: "deny range", Action: ActionDeny, Priority: "2", Direction: Incoming,
				SourceIPType: TypeRange, SourceIPRangeFrom: "10.0.0.0", SourceIPRangeTo: "10.0.0.127"},
			{ID: 5, Name: "force", Action: ActionForceAllow, Priority: "2", Direction: Incoming, Protocol: "tcp-udp",
				SourcePortType: TypeMultiple, SourcePortMultiple: []string{"53", "1000-2000"}, SourcePortNot: true},
			{ID: 6, Name: "bypass", Action: ActionBypass, Priority: "3", Direction: Outgoing, Protocol: "tcp",
				TCPFlags: []string{"syn", "ack"}, TCPNot: true},
			{ID: 7, Name: "allow out", Action: ActionAllow, Priority: "0", Direction: Outgoing, Protocol: "udp"},
		}},
		{
			Rules: []Rule{
				{ID: 1, Name: "list", Action: ActionDeny, Priority: "1", Direction: Incoming, FrameType: "any",
					SourceIPType: TypeIPList, SourceIPListID: 1, SourceIPNot: true,
					SourceMACType: TypeMACList, SourceMACListID: 2},
				{ID: 2, Name: "empty", Action: ActionDeny, Priority: "1", Direction: Incoming, Protocol: "udp",
					DestinationPortType: TypePortList, DestinationPortListID: 3},
				{ID: 3, Name: "icmp", Action: ActionDeny, Priority: "0", Direction: Incoming, Protocol: "icmp",
					ICMPType: &icmp, ICMPCode: &code, ICMPNot: true},
				{ID: 4, Name: "frame", Action: ActionBypass, Priority: "4", Direction: Incoming, FrameType: "arp", FrameNot: true,
					Protocol: "other", ProtocolNumber: 132, ProtocolNot: true},
				{ID: 5, Name: "masked", Action: ActionAllow, Priority: "0", Direction: Incoming,
					DestinationIPType: TypeMasked, DestinationIPValue: "2001:db8::", DestinationIPMask: "64", DestinationIPNot: true},
			},
			IPLists:   []IPList{{ID: 1, Name: "l", Items: []string{"10.0.0.0/8", "2001:db8::1-2001:db8::ff"}}},
			MACLists:  []MACList{{ID: 2, Name: "m", Items: []string{"02:00:00:00:00:01"}}},
			PortLists: []PortList{{ID: 3, Name: "p", Items: nil}},
		},
		{Rules: HiddenRules([]netip.AddrPort{netip.MustParseAddrPort("10.0.0.9:4119")}, 4118)},
	}
	var out []*Program
	for i := range sets {
		p, err := Compile(&sets[i])
		if err != nil {
			t.Fatalf("set %d: %v", i, err)
		}
		out = append(out, p)
	}
	return out
}

func FuzzEvaluate(f *testing.F) {
	progs := fuzzSets(f)
	f.Add(uint8(1), uint8(0), false, uint8(6), []byte{10, 0, 0, 5}, []byte{10, 0, 0, 1}, uint16(40000), uint16(22), uint8(FlagSYN), uint8(0), uint8(0), uint8(0), []byte{2, 0, 0, 0, 0, 1}, true)
	f.Add(uint8(0), uint8(1), true, uint8(17), []byte{10, 0, 0, 1}, []byte{10, 0, 0, 200}, uint16(5353), uint16(53), uint8(0), uint8(0), uint8(0), uint8(1), []byte{}, false)
	f.Add(uint8(2), uint8(0), true, uint8(1), make([]byte, 16), []byte{0x20, 1, 0xd, 0xb8, 15: 1}, uint16(0), uint16(0), uint8(0), uint8(3), uint8(3), uint8(4), []byte{2, 0, 0, 0, 0, 1}, true)
	f.Add(uint8(3), uint8(0), false, uint8(0), []byte{10, 0, 0, 9}, []byte{10, 0, 0, 1}, uint16(4119), uint16(1), uint8(FlagACK), uint8(0), uint8(0), uint8(2), []byte{}, true)
	f.Fuzz(func(t *testing.T, set, dir uint8, l2 bool, proto uint8, src, dst []byte, sport, dport uint16, flags, icmpType, icmpCode, state uint8, mac []byte, stateful bool) {
		p := progs[int(set)%len(progs)]
		pkt := Packet{Protocol: proto, SrcPort: sport, DstPort: dport, TCPFlags: flags, ICMPType: icmpType, ICMPCode: icmpCode}
		pkt.Direction = []string{Incoming, Outgoing, "", "sideways"}[dir%4]
		pkt.State = []string{"", StateNew, StateEstablished, StateRelated, StateInvalid, "untracked"}[int(state)%6]
		pkt.Src, _ = netip.AddrFromSlice(src)
		pkt.Dst, _ = netip.AddrFromSlice(dst)
		switch {
		case l2:
			pkt.EtherType = []uint16{EtherARP, EtherRARP, 0x88cc, EtherIPv4, EtherIPv6}[int(proto)%5]
		case pkt.Src.Is4():
			pkt.EtherType = EtherIPv4
		default:
			pkt.EtherType = EtherIPv6
		}
		copy(pkt.SrcMAC[:], mac)
		if len(mac) > 6 {
			copy(pkt.DstMAC[:], mac[6:])
		}
		d := Evaluate(p, Options{Stateful: stateful}, pkt)
		checkDecision(t, p, Options{Stateful: stateful}, pkt, d)
	})
}

// checkDecision asserts what holds for every decision.
func checkDecision(t *testing.T, p *Program, opt Options, pkt Packet, d Decision) {
	t.Helper()
	switch d.Reason {
	case ReasonRule:
		if d.Rule == nil {
			t.Fatalf("%s: reason rule without a rule", pkt)
		}
	case ReasonOutOfPolicy, ReasonInvalid, ReasonStateful, ReasonDefault:
		if d.Rule != nil {
			t.Fatalf("%s: reason %s names rule %d", pkt, d.Reason, d.Rule.ID)
		}
	default:
		t.Fatalf("%s: unknown reason %q", pkt, d.Reason)
	}
	switch d.Verdict {
	case Pass:
		if d.Reason == ReasonOutOfPolicy || d.Reason == ReasonInvalid {
			t.Fatalf("%s: pass with reason %s", pkt, d.Reason)
		}
	case Drop:
		if d.Reason == ReasonDefault || d.Reason == ReasonStateful {
			t.Fatalf("%s: drop with reason %s", pkt, d.Reason)
		}
	default:
		t.Fatalf("%s: unknown verdict %q", pkt, d.Verdict)
	}
	if !opt.Stateful && (d.Reason == ReasonInvalid || d.Reason == ReasonStateful) {
		t.Fatalf("%s: stateless evaluation gave %s", pkt, d.Reason)
	}
	if d.Reason == ReasonOutOfPolicy && !isIP(&pkt) {
		t.Fatalf("%s: implicit deny of a frame that is not IP", pkt)
	}
	if d.Rule != nil && d.Rule.Direction != pkt.Direction {
		t.Fatalf("%s: decided by a rule of direction %s", pkt, d.Rule.Direction)
	}
	if d.Rule != nil && d.Rule.Action == ActionLogOnly {
		t.Fatalf("%s: decided by a log-only rule", pkt)
	}
	maxEvents := len(d.Logged)
	if d.Verdict == Drop {
		maxEvents++
	}
	if len(d.Events) > maxEvents {
		t.Fatalf("%s: %d events for %d log-only matches and a %s", pkt, len(d.Events), len(d.Logged), d.Verdict)
	}
	for _, e := range d.Events {
		if e.Verdict != d.Verdict || e.Reason != d.Reason {
			t.Fatalf("%s: event %+v disagrees with the decision %s %s", pkt, e, d.Verdict, d.Reason)
		}
	}
}

func FuzzParsePacket(f *testing.F) {
	for _, s := range []string{
		"in tcp 10.0.0.5:40000 > 10.0.0.1:22 flags S",
		"out udp [2001:db8::5]:5353 > [2001:db8::1]:53",
		"in icmp 10.0.0.5 > 10.0.0.1 type 8 code 0",
		"in arp 10.0.0.5 > 10.0.0.1",
		"in ether:0x88cc - > - smac 02:00:00:00:00:01 dmac 02-00-00-00-00-02",
		"outgoing 132 ::ffff:1.2.3.4 > 1.2.3.5 state related",
		"in tcp [::1]:1 > [::2]:2 flags FSRPAU state invalid",
		"in icmpv6 fe80::1 > ff02::1 type 135",
		"in tcp 10.0.0.5:1 >",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePacket(s)
		if err != nil {
			return
		}
		text := p.String()
		q, err := ParsePacket(text)
		if err != nil {
			t.Fatalf("%q parses to %+v, whose String %q does not parse: %v", s, p, text, err)
		}
		if q != p {
			t.Fatalf("%q: round trip through %q gives %+v, want %+v", s, text, q, p)
		}
		if again := q.String(); again != text {
			t.Fatalf("String is not stable: %q then %q", text, again)
		}
	})
}

func FuzzDecodeRules(f *testing.F) {
	for _, s := range []string{
		`[{"ID": 1, "name": "a", "action": "deny", "priority": "2", "direction": "incoming", "sourceIPType": "multiple", "sourceIPMultiple": ["10.0.0.0/8", "2001:db8::1-2001:db8::9"]}]`,
		`{"ID": 2, "name": "b", "action": "allow", "priority": "0", "direction": "outgoing", "protocol": "tcp", "destinationPortType": "multiple", "destinationPortMultiple": ["22", "8000-8080"], "tcpflags": ["syn"]}`,
		`{"firewallRules": [{"name": "c", "action": "log-only", "priority": "4", "direction": "incoming", "frameType": "other", "frameNumber": 35020, "frameNot": true}]}`,
		`[{"name": "d", "action": "force-allow", "priority": "3", "direction": "incoming", "protocol": "icmp", "ICMPType": 3, "ICMPCode": 4, "ICMPNot": true, "sourceMACType": "single", "sourceMACValue": "02:00:00:00:00:01"}]`,
		`[{"name": "e", "action": "bypass", "priority": "4", "direction": "incoming", "sourceIPType": "masked-ip", "sourceIPValue": "10.0.0.0", "sourceIPMask": "255.255.255.0", "sourceIPNot": true}]`,
		`[{"name": "f", "action": "deny", "direction": "incoming", "protocol": "other", "protocolNumber": 132, "protocolNot": true, "logDisabled": true}]`,
		`[]`,
		`{"name": 1}`,
	} {
		f.Add([]byte(s))
	}
	packets := []Packet{}
	for _, s := range []string{
		"in tcp 10.0.0.5:40000 > 10.0.0.1:22 flags S",
		"out tcp 10.0.0.1:22 > 10.0.0.5:40000 flags SA state established",
		"in udp [2001:db8::5]:5353 > [2001:db8::1]:53",
		"in icmp 10.0.0.5 > 10.0.0.1 type 3 code 4 state related",
		"in arp 10.0.0.5 > 10.0.0.1 smac 02:00:00:00:00:01",
		"in ether:0x88cc - > -",
		"in 132 10.0.0.5 > 10.0.0.1 state invalid",
	} {
		p, err := ParsePacket(s)
		if err != nil {
			f.Fatal(err)
		}
		packets = append(packets, p)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rules, err := DecodeRules(data)
		if err != nil {
			return
		}
		p, err := Compile(&Set{Rules: rules})
		if err != nil {
			return
		}
		for _, pkt := range packets {
			for _, opt := range []Options{{}, {Stateful: true}} {
				checkDecision(t, p, opt, pkt, Evaluate(p, opt, pkt))
			}
		}
	})
}
