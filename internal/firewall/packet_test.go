package firewall

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFirewallParsePacket(t *testing.T) {
	a := netip.MustParseAddr
	tests := []struct {
		in   string
		want Packet
		str  string // String(), when it differs from in
	}{
		{"in tcp 10.0.0.5:40000 > 10.0.0.1:22 flags S", Packet{Direction: Incoming, EtherType: EtherIPv4, Protocol: 6,
			Src: a("10.0.0.5"), Dst: a("10.0.0.1"), SrcPort: 40000, DstPort: 22, TCPFlags: FlagSYN}, ""},
		{"out udp [2001:db8::5]:5353 > [2001:db8::1]:53", Packet{Direction: Outgoing, EtherType: EtherIPv6, Protocol: 17,
			Src: a("2001:db8::5"), Dst: a("2001:db8::1"), SrcPort: 5353, DstPort: 53}, ""},
		{"in icmp 10.0.0.5 > 10.0.0.1 type 8 code 0", Packet{Direction: Incoming, EtherType: EtherIPv4, Protocol: 1,
			Src: a("10.0.0.5"), Dst: a("10.0.0.1"), ICMPType: 8}, ""},
		{"in arp 10.0.0.5 > 10.0.0.1", Packet{Direction: Incoming, EtherType: EtherARP, Src: a("10.0.0.5"), Dst: a("10.0.0.1")}, ""},
		{"incoming TCP 10.0.0.5:1 > 10.0.0.1:2 flags as state ESTABLISHED", Packet{Direction: Incoming, EtherType: EtherIPv4, Protocol: 6,
			Src: a("10.0.0.5"), Dst: a("10.0.0.1"), SrcPort: 1, DstPort: 2, TCPFlags: FlagSYN | FlagACK, State: StateEstablished},
			"in tcp 10.0.0.5:1 > 10.0.0.1:2 flags SA state established"},
		{"outgoing 6 10.0.0.1 > 10.0.0.5", Packet{Direction: Outgoing, EtherType: EtherIPv4, Protocol: 6, Src: a("10.0.0.1"), Dst: a("10.0.0.5")},
			"out tcp 10.0.0.1:0 > 10.0.0.5:0"},
		{"in icmpv6 2001:db8::5 > [2001:db8::1] type 135", Packet{Direction: Incoming, EtherType: EtherIPv6, Protocol: 58,
			Src: a("2001:db8::5"), Dst: a("2001:db8::1"), ICMPType: 135}, "in icmpv6 2001:db8::5 > 2001:db8::1 type 135 code 0"},
		{"in 132 10.0.0.5 > 10.0.0.1", Packet{Direction: Incoming, EtherType: EtherIPv4, Protocol: 132, Src: a("10.0.0.5"), Dst: a("10.0.0.1")}, ""},
		{"in raw ::ffff:10.0.0.5 > 10.0.0.1", Packet{Direction: Incoming, EtherType: EtherIPv4, Protocol: 255, Src: a("10.0.0.5"), Dst: a("10.0.0.1")},
			"in raw 10.0.0.5 > 10.0.0.1"},
		{"in ether:0x88CC - > - smac 02-00-00-00-00-05 dmac 01:80:c2:00:00:0e", Packet{Direction: Incoming, EtherType: 0x88cc,
			SrcMAC: MAC{2, 0, 0, 0, 0, 5}, DstMAC: MAC{1, 0x80, 0xc2, 0, 0, 0xe}},
			"in ether:0x88cc - > - smac 02:00:00:00:00:05 dmac 01:80:c2:00:00:0e"},
		{"in rarp - > -", Packet{Direction: Incoming, EtherType: EtherRARP}, ""},
		{"in ether:0x0806 10.0.0.5 > 10.0.0.1", Packet{Direction: Incoming, EtherType: EtherARP, Src: a("10.0.0.5"), Dst: a("10.0.0.1")},
			"in arp 10.0.0.5 > 10.0.0.1"},
		{"in udp 10.0.0.5:1 > 10.0.0.1:2 state invalid", Packet{Direction: Incoming, EtherType: EtherIPv4, Protocol: 17,
			Src: a("10.0.0.5"), Dst: a("10.0.0.1"), SrcPort: 1, DstPort: 2, State: StateInvalid}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePacket(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(got, tt.want, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("(-got +want):\n%s", diff)
			}
			want := tt.str
			if want == "" {
				want = tt.in
			}
			if s := got.String(); s != want {
				t.Errorf("String() = %q, want %q", s, want)
			}
			if again, err := ParsePacket(got.String()); err != nil || again != got {
				t.Errorf("round trip: %+v, %v", again, err)
			}
		})
	}
}

func TestFirewallParsePacketErrors(t *testing.T) {
	tests := []struct {
		in   string
		pos  int
		want string
	}{
		{"", 1, "want a direction"},
		{"in", 2, "want a protocol"},
		{"in tcp 10.0.0.5:1", 4, `want ">"`},
		{"in tcp 10.0.0.5:1 >", 5, "want a destination"},
		{"sideways tcp 10.0.0.5:1 > 10.0.0.1:2", 1, "want a direction: in or out"},
		{"in tcpp 10.0.0.5:1 > 10.0.0.1:2", 2, "want a protocol"},
		{"in tcp-udp 10.0.0.5:1 > 10.0.0.1:2", 2, "want a protocol"},
		{"in 256 10.0.0.5 > 10.0.0.1", 2, "want a protocol"},
		{"in ether:0x0800 - > -", 2, "given by protocol"},
		{"in ether:0x05ff - > -", 2, "0x0600"},
		{"in tcp 10.0.0.500:1 > 10.0.0.1:2", 3, "want an IPv4 or IPv6 address"},
		{"in tcp 10.0.0.5:1 -> 10.0.0.1:2", 4, `want ">"`},
		{"in tcp 10.0.0.5:1 > 10.0.0.1:70000", 5, "port from 0 to 65535"},
		{"in tcp 10.0.0.5:1 > [2001:db8::1]:2", 5, "same family"},
		{"in tcp [2001:db8::1:1 > [2001:db8::2]:2", 3, "want ]"},
		{"in tcp [2001:db8::1]x > [2001:db8::2]:2", 3, "want :PORT"},
		{"in tcp fe80::1%eth0 > fe80::2", 3, "want an IPv4 or IPv6 address"},
		{"in icmp 10.0.0.5:1 > 10.0.0.1", 3, "ports are for tcp and udp"},
		{"in icmp 2001:db8::5 > 2001:db8::1", 3, "use icmpv6"},
		{"in icmpv6 10.0.0.5 > 10.0.0.1", 3, "use icmp"},
		{"in tcp - > 10.0.0.1:2", 3, "IP packets have addresses"},
		{"in arp 10.0.0.5:1 > 10.0.0.1", 3, "ports are for tcp and udp"},
		{"in tcp 10.0.0.5:1 > 10.0.0.1:2 flags SX", 7, "letters F S R P A U"},
		{"in tcp 10.0.0.5:1 > 10.0.0.1:2 flags SS", 7, "given twice"},
		{"in tcp 10.0.0.5:1 > 10.0.0.1:2 flags", 7, "want a value after flags"},
		{"in udp 10.0.0.5:1 > 10.0.0.1:2 flags S", 6, "tcp packets only"},
		{"in tcp 10.0.0.5:1 > 10.0.0.1:2 type 8", 6, "icmp and icmpv6 packets only"},
		{"in icmp 10.0.0.5 > 10.0.0.1 code 0", 6, "needs a type before it"},
		{"in icmp 10.0.0.5 > 10.0.0.1 type 256", 7, "ICMP type from 0 to 255"},
		{"in icmp 10.0.0.5 > 10.0.0.1 type 8 type 0", 8, "given twice"},
		{"in tcp 10.0.0.5:1 > 10.0.0.1:2 state closed", 7, "want a state"},
		{"in tcp 10.0.0.5:1 > 10.0.0.1:2 smac 02:00", 7, "not a MAC address"},
		{"in tcp 10.0.0.5:1 > 10.0.0.1:2 ttl 64", 6, "want flags, type, code, state, smac or dmac"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParsePacket(tt.in)
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("error %v, want a *SyntaxError", err)
			}
			if se.Pos != tt.pos {
				t.Errorf("error at token %d, want %d: %v", se.Pos, tt.pos, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), "token ") {
				t.Errorf("error %q does not name the token", err)
			}
		})
	}
}
