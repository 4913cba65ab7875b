// Package flowgen generates flow export traffic for load tests and
// benchmarks: NetFlow v5, NetFlow v9 and IPFIX datagrams with deterministic
// pseudo-random flows, sent over UDP at a paced rate.
//
// The content of flow n of a run depends only on the seed and n, so the
// totals of a run (flows, packets, bytes) are known before it starts
// ([Expect]) and a receiver can be checked against them. Datagrams look like
// a router's: 30 flows per NetFlow v5 datagram, v9 and IPFIX datagrams filled
// to about 1,400 bytes, templates re-sent every few datagrams, sequence
// numbers as the protocols define them.
//
// Only the `yagura flowgen` command (and through it scripts/bench-flows.sh)
// and tests import it; the manager's and the agent's code must not.
package flowgen

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

// Protocol is an export protocol flowgen can send.
type Protocol string

// Protocols.
const (
	NetFlow5 Protocol = "v5"
	NetFlow9 Protocol = "v9"
	IPFIX    Protocol = "ipfix"
)

// ParseProtocol accepts the names `yagura flowgen --protocol` takes.
func ParseProtocol(s string) (Protocol, error) {
	switch s {
	case "v5", "5", "netflow5", "netflow-v5":
		return NetFlow5, nil
	case "v9", "9", "netflow9", "netflow-v9":
		return NetFlow9, nil
	case "ipfix", "v10", "10":
		return IPFIX, nil
	}
	return "", fmt.Errorf("protocol %q: use v5, v9 or ipfix", s)
}

// String returns the protocol's usual name.
func (p Protocol) String() string {
	switch p {
	case NetFlow5:
		return "netflow v5"
	case NetFlow9:
		return "netflow v9"
	case IPFIX:
		return "ipfix"
	}
	return string(p)
}

// Flow is one generated flow as it is put on the wire. Times are relative
// to the datagram's export time because the generator runs in real time;
// everything else depends only on the seed and the flow's index.
type Flow struct {
	SrcAddr, DstAddr netip.Addr // IPv4
	// For ICMP, SrcPort is 0 and DstPort is type<<8|code, the NetFlow
	// convention.
	SrcPort, DstPort uint16
	Proto            uint8
	TCPFlags         uint8
	ToS              uint8
	InIf, OutIf      uint16
	Packets, Bytes   uint64 // each < 2^32, so v5 and v9 can carry them
	// The flow ended EndAgo before the export time (the reference time of
	// its datagram, see [Encoder.Append]) and lasted Duration; both are
	// whole milliseconds, the precision of every protocol here.
	EndAgo, Duration time.Duration
}

// Totals counts what a run sends.
type Totals struct {
	Datagrams uint64 `json:"datagrams"`
	Flows     uint64 `json:"flows"`
	Packets   uint64 `json:"packets"`
	Bytes     uint64 `json:"bytes"`
}

func (t *Totals) add(o Totals) {
	t.Datagrams += o.Datagrams
	t.Flows += o.Flows
	t.Packets += o.Packets
	t.Bytes += o.Bytes
}

// rawFlow is Flow in the form the encoders write, without netip.Addr
// conversions on the hot path.
type rawFlow struct {
	src, dst         uint32
	sport, dport     uint16
	proto, flags     uint8
	tos              uint8
	inIf, outIf      uint16
	packets, bytes   uint32
	endAgo, duration uint32 // ms
}

// mix is SplitMix64's finaliser: a cheap bijection that turns a counter
// into well-spread bits, so flow n needs no state from flow n-1 and workers
// can generate disjoint ranges independently.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// Service ports most flows go to, roughly in the order they are common.
var servicePorts = [16]uint16{443, 443, 443, 80, 80, 53, 53, 123, 22, 25, 993, 3389, 445, 8080, 8443, 5060}

// below maps 32 random bits to [0, n) with a multiply instead of a
// division (Lemire's reduction): flowAt runs millions of times a second.
func below(bits uint64, n uint32) uint32 { return uint32(uint64(uint32(bits)) * uint64(n) >> 32) }

func flowAt(seed, n uint64) rawFlow {
	// Five 64-bit draws; each field takes bits no other field uses.
	h1 := mix(seed ^ mix(n))
	h2 := mix(h1)
	h3 := mix(h2)
	h4 := mix(h3)
	h5 := mix(h4)
	var f rawFlow
	// 10.0.0.0/8 clients talking to 172.16.0.0/12 and 192.0.2.0/24 servers.
	f.src = 10<<24 | uint32(h1&0xffffff)
	if h1>>24&7 == 0 {
		f.dst = 192<<24 | 0<<16 | 2<<8 | uint32(h1>>27&0xff)
	} else {
		f.dst = 172<<24 | (16+uint32(h1>>27&15))<<16 | uint32(h1>>31&0xffff)
	}
	switch p := below(h2, 100); {
	case p < 80:
		f.proto = 6
	case p < 97:
		f.proto = 17
	default:
		f.proto = 1
	}
	switch f.proto {
	case 1:
		// echo request (twice as common), echo reply, port unreachable
		f.dport = [4]uint16{8 << 8, 8 << 8, 0, 3<<8 | 3}[h1>>50&3]
	default:
		f.sport = 1024 + uint16(below(h2>>32, 64512))
		if h1>>52&3 != 0 {
			f.dport = servicePorts[h1>>54&15]
		} else {
			f.dport = 1024 + uint16(below(h5>>32, 64512))
		}
	}
	if f.proto == 6 {
		// ACK|PSH always, SYN and FIN on most flows, RST on a few.
		f.flags = 0x18 | [8]uint8{0x03, 0x03, 0x03, 0x03, 0x02, 0x01, 0x04, 0x00}[h1>>47&7]
	}
	if h3>>42&15 == 0 {
		f.tos = 0xb8 // EF
	}
	f.inIf = 1 + uint16(h3&31)
	f.outIf = 1 + uint16(h3>>5&31)
	// Mostly short flows, one in sixteen long: flow sizes are heavy-tailed.
	if h3>>60 == 0 {
		f.packets = 1 + below(h3>>10, 20000)
	} else {
		f.packets = 1 + uint32(h3>>10&15)
	}
	minSize := uint32(40)
	switch f.proto {
	case 17:
		minSize = 28
	case 1:
		minSize = 84
	}
	f.bytes = f.packets * (minSize + below(h4, 1501-minSize))
	if f.packets > 1 {
		f.duration = below(h4>>32, 60000)
	}
	f.endAgo = below(h5, 5000)
	return f
}

func (f rawFlow) public() Flow {
	var s, d [4]byte
	binary.BigEndian.PutUint32(s[:], f.src)
	binary.BigEndian.PutUint32(d[:], f.dst)
	return Flow{
		SrcAddr: netip.AddrFrom4(s), DstAddr: netip.AddrFrom4(d),
		SrcPort: f.sport, DstPort: f.dport, Proto: f.proto, TCPFlags: f.flags, ToS: f.tos,
		InIf: f.inIf, OutIf: f.outIf, Packets: uint64(f.packets), Bytes: uint64(f.bytes),
		EndAgo:   time.Duration(f.endAgo) * time.Millisecond,
		Duration: time.Duration(f.duration) * time.Millisecond,
	}
}

// FlowAt returns flow n of a run with the given seed.
func FlowAt(seed, n uint64) Flow { return flowAt(seed, n).public() }

// Sum returns the totals of flows [first, first+count) of a run with the
// given seed (Datagrams is left 0).
func Sum(seed, first, count uint64) Totals {
	var t Totals
	for n := first; n < first+count; n++ {
		f := flowAt(seed, n)
		t.Packets += uint64(f.packets)
		t.Bytes += uint64(f.bytes)
	}
	t.Flows = count
	return t
}
