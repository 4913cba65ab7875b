package nftfw

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/yagura/yagura/internal/firewall"
)

func TestParseHeaders(t *testing.T) {
	v4a, v4b := netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("10.0.0.1")
	v6a, v6b := netip.MustParseAddr("2001:db8::5"), netip.MustParseAddr("2001:db8::1")
	pkt := func(s string) firewall.Packet {
		p, err := firewall.ParsePacket(s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name string
		b    []byte
		hw   uint16
		want headers
	}{
		{"tcp4", buildIP(ipPacket{Packet: pkt("in tcp 10.0.0.5:40000 > 10.0.0.1:22 flags SA"), TTL: 64}), firewall.EtherIPv4,
			headers{EtherType: firewall.EtherIPv4, Protocol: 6, Src: v4a, Dst: v4b, SrcPort: 40000, DstPort: 22, TCPFlags: firewall.FlagSYN | firewall.FlagACK}},
		{"tcp4 truncated data offset", buildIP(ipPacket{Packet: pkt("in tcp 10.0.0.5:40000 > 10.0.0.1:22 flags A"), TTL: 64, Bad: badL4}), firewall.EtherIPv4,
			headers{EtherType: firewall.EtherIPv4, Protocol: 6, Src: v4a, Dst: v4b, SrcPort: 40000, DstPort: 22, TCPFlags: firewall.FlagACK}},
		{"udp6", buildIP(ipPacket{Packet: pkt("in udp [2001:db8::5]:5353 > [2001:db8::1]:53"), TTL: 64, Body: []byte("hello")}), firewall.EtherIPv6,
			headers{EtherType: firewall.EtherIPv6, Protocol: 17, Src: v6a, Dst: v6b, SrcPort: 5353, DstPort: 53}},
		{"icmp4 cut", buildIP(ipPacket{Packet: pkt("in icmp 10.0.0.5 > 10.0.0.1 type 8 code 0"), TTL: 64, Bad: badL4}), 0,
			headers{EtherType: firewall.EtherIPv4, Protocol: 1, Src: v4a, Dst: v4b, ICMPType: 8}},
		{"icmpv6", buildIP(ipPacket{Packet: pkt("in icmpv6 2001:db8::5 > 2001:db8::1 type 1 code 4"), TTL: 64}), firewall.EtherIPv6,
			headers{EtherType: firewall.EtherIPv6, Protocol: 58, Src: v6a, Dst: v6b, ICMPType: 1, ICMPCode: 4}},
		{"ipv6 extension headers", withExtHeaders(buildIP(ipPacket{Packet: pkt("in tcp [2001:db8::5]:1 > [2001:db8::1]:2 flags S"), TTL: 1})), firewall.EtherIPv6,
			headers{EtherType: firewall.EtherIPv6, Protocol: 6, Src: v6a, Dst: v6b, SrcPort: 1, DstPort: 2, TCPFlags: firewall.FlagSYN}},
		{"ipv4 later fragment", laterFragment(buildIP(ipPacket{Packet: pkt("in udp 10.0.0.5:1 > 10.0.0.1:2"), TTL: 1})), firewall.EtherIPv4,
			headers{EtherType: firewall.EtherIPv4, Protocol: 17, Src: v4a, Dst: v4b}},
		{"arp", buildARP(pkt("in arp 10.0.0.5 > 10.0.0.1 smac 02:00:00:00:00:05")), firewall.EtherARP,
			headers{EtherType: firewall.EtherARP, Src: v4a, Dst: v4b}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseHeaders(tt.b, tt.hw)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(got, tt.want, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
				t.Errorf("(-got +want)\n%s", d)
			}
		})
	}
	badIHL := make([]byte, 20)
	badIHL[0] = 0x4f
	for _, bad := range [][]byte{nil, {0x45}, badIHL, append([]byte{0x60}, make([]byte, 38)...), {0x99, 1, 2, 3}} {
		if _, err := parseHeaders(bad, 0); err == nil {
			t.Errorf("parseHeaders(%x): no error", bad)
		}
	}
}

// withExtHeaders inserts a hop-by-hop and a destination options header
// into an IPv6 packet.
func withExtHeaders(b []byte) []byte {
	next := b[6]
	hbh := []byte{60, 0, 1, 4, 0, 0, 0, 0}   // next: destination options; PadN
	dst := []byte{next, 0, 1, 4, 0, 0, 0, 0} // next: the original protocol
	out := append([]byte{}, b[:40]...)
	out[6] = 0
	binary.BigEndian.PutUint16(out[4:], binary.BigEndian.Uint16(b[4:6])+16)
	out = append(out, hbh...)
	out = append(out, dst...)
	return append(out, b[40:]...)
}

func laterFragment(b []byte) []byte {
	binary.BigEndian.PutUint16(b[6:], 185) // offset 1480
	return b
}

// TestParseHeadersRoundTrip builds random packets and reads them back.
func TestParseHeadersRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 5000 {
		p := randomPacket(r)
		if p.EtherType != firewall.EtherIPv4 && p.EtherType != firewall.EtherIPv6 {
			continue
		}
		want := headers{EtherType: p.EtherType, Protocol: p.Protocol, Src: p.Src, Dst: p.Dst}
		switch p.Protocol {
		case protoTCP:
			want.SrcPort, want.DstPort, want.TCPFlags = p.SrcPort, p.DstPort, p.TCPFlags
		case protoUDP:
			want.SrcPort, want.DstPort = p.SrcPort, p.DstPort
		case protoICMP, protoICMPv6:
			want.ICMPType, want.ICMPCode = p.ICMPType, p.ICMPCode
		}
		got, err := parseHeaders(buildIP(ipPacket{Packet: p, TTL: 9}), 0)
		if err != nil {
			t.Fatalf("%v: %v", p, err)
		}
		if got != want {
			t.Fatalf("%v: got %+v, want %+v", p, got, want)
		}
	}
}

func FuzzParseHeaders(f *testing.F) {
	p4, _ := firewall.ParsePacket("in tcp 10.0.0.5:40000 > 10.0.0.1:22 flags S")
	p6, _ := firewall.ParsePacket("in udp [2001:db8::5]:5353 > [2001:db8::1]:53")
	arp, _ := firewall.ParsePacket("in arp 10.0.0.5 > 10.0.0.1")
	f.Add(buildIP(ipPacket{Packet: p4, TTL: 64}), uint16(firewall.EtherIPv4))
	f.Add(withExtHeaders(buildIP(ipPacket{Packet: p6, TTL: 64})), uint16(firewall.EtherIPv6))
	f.Add(buildARP(arp), uint16(firewall.EtherARP))
	f.Add([]byte{0x60, 0, 0, 0, 0, 8, 44, 1}, uint16(0))
	f.Fuzz(func(t *testing.T, b []byte, hw uint16) {
		h, err := parseHeaders(b, hw)
		if err != nil {
			return
		}
		switch h.EtherType {
		case firewall.EtherIPv4:
			if !h.Src.Is4() || !h.Dst.Is4() {
				t.Fatalf("IPv4 packet with addresses %v, %v", h.Src, h.Dst)
			}
		case firewall.EtherIPv6:
			if !h.Src.Is6() || !h.Dst.Is6() {
				t.Fatalf("IPv6 packet with addresses %v, %v", h.Src, h.Dst)
			}
		case firewall.EtherARP:
			if h.Protocol != 0 || h.SrcPort != 0 {
				t.Fatalf("ARP with IP fields: %+v", h)
			}
		default:
			if h.EtherType != hw || h != (headers{EtherType: hw}) {
				t.Fatalf("frame %#x: %+v", hw, h)
			}
		}
		if h.Protocol != protoTCP && h.Protocol != protoUDP && (h.SrcPort != 0 || h.DstPort != 0) {
			t.Fatalf("ports for protocol %d", h.Protocol)
		}
		// The event must be buildable from anything parsed.
		_ = makeEvent(logPrefix{Direction: firewall.Incoming, Action: firewall.ActionDeny, Verdict: firewall.Drop, Reason: firewall.ReasonRule, RuleID: 1}, h, 0, nil)
	})
}

func TestPrefixRoundTrip(t *testing.T) {
	for _, p := range []logPrefix{
		{firewall.Incoming, firewall.ActionDeny, firewall.Drop, firewall.ReasonRule, 12, false},
		{firewall.Outgoing, firewall.ActionLogOnly, firewall.Pass, firewall.ReasonDefault, -3, false},
		{firewall.Incoming, firewall.ActionDeny, firewall.Drop, firewall.ReasonOutOfPolicy, 0, false},
		{firewall.Outgoing, firewall.ActionLogOnly, firewall.Drop, firewall.ReasonInvalid, 2147483647, false},
		{firewall.Incoming, firewall.ActionDeny, firewall.Drop, firewall.ReasonRule, 0, true},
	} {
		s := p.String()
		if len(s) > 127 {
			t.Errorf("%q: longer than the kernel's 127 bytes", s)
		}
		got, ok := parsePrefix(s + "\x00")
		if !ok || got != p {
			t.Errorf("parsePrefix(%q) = %+v, %v; want %+v", s, got, ok, p)
		}
	}
	for _, s := range []string{"", "yagura", "other:in:deny:drop:rule:1", "yagura:up:deny:drop:rule:1", "yagura:in:reject:drop:rule:1",
		"yagura:in:deny:maybe:rule:1", "yagura:in:deny:drop:why:1", "yagura:in:deny:drop:rule:01", "yagura:in:deny:drop:rule:x", "yagura:in:deny:drop:rule:1:2"} {
		if p, ok := parsePrefix(s); ok {
			t.Errorf("parsePrefix(%q) = %+v, want not ok", s, p)
		}
	}
}
