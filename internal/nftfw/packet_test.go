package nftfw

import (
	"encoding/binary"
	"net/netip"

	"github.com/yagura/yagura/internal/firewall"
)

// Test packets: real IPv4 and IPv6 bytes for a firewall.Packet, with valid
// checksums, for the header parser's tests and the network-namespace
// tests (which send them).

// malform says how to break a packet so that connection tracking calls it
// invalid.
type malform int

const (
	wellFormed malform = iota
	// badL4: TCP data offset beyond the packet, UDP length beyond it, ICMP
	// header cut to 4 bytes. Conntrack rejects all three in any hook; the
	// ports, flags, type and code stay where nftables reads them.
	badL4
)

// ipPacket is a packet to build: a firewall.Packet plus what it leaves out.
type ipPacket struct {
	firewall.Packet
	TTL  uint8
	ID   uint16  // IPv4 identification
	Seq  uint32  // TCP sequence number
	Rest [4]byte // ICMP: the rest of the header (echo identifier and sequence)
	Body []byte  // ICMP error: the quoted packet; else the payload
	Bad  malform
}

// buildIP returns the packet's bytes from the IP header on.
func buildIP(p ipPacket) []byte {
	v6 := p.Src.Is6()
	var l4 []byte
	switch p.Protocol {
	case protoTCP:
		l4 = make([]byte, 20, 20+len(p.Body))
		binary.BigEndian.PutUint16(l4[0:], p.SrcPort)
		binary.BigEndian.PutUint16(l4[2:], p.DstPort)
		binary.BigEndian.PutUint32(l4[4:], p.Seq)
		if p.TCPFlags&firewall.FlagACK != 0 {
			binary.BigEndian.PutUint32(l4[8:], 1)
		}
		l4[12] = 5 << 4
		if p.Bad == badL4 {
			l4[12] = 6 << 4 // 24 bytes claimed, 20 present
		}
		l4[13] = p.TCPFlags
		binary.BigEndian.PutUint16(l4[14:], 65535)
		l4 = append(l4, p.Body...)
	case protoUDP:
		l4 = make([]byte, 8, 8+len(p.Body))
		binary.BigEndian.PutUint16(l4[0:], p.SrcPort)
		binary.BigEndian.PutUint16(l4[2:], p.DstPort)
		l4 = append(l4, p.Body...)
		n := len(l4)
		if p.Bad == badL4 {
			n += 100
		}
		binary.BigEndian.PutUint16(l4[4:], uint16(n))
	case protoICMP, protoICMPv6:
		l4 = []byte{p.ICMPType, p.ICMPCode, 0, 0}
		if p.Bad != badL4 {
			l4 = append(l4, p.Rest[:]...)
			l4 = append(l4, p.Body...)
		}
	default:
		l4 = append(l4, p.Body...)
	}
	var hdr []byte
	if v6 {
		hdr = make([]byte, 40)
		hdr[0] = 6 << 4
		binary.BigEndian.PutUint16(hdr[4:], uint16(len(l4)))
		hdr[6] = p.Protocol
		hdr[7] = p.TTL
		src, dst := p.Src.As16(), p.Dst.As16()
		copy(hdr[8:], src[:])
		copy(hdr[24:], dst[:])
	} else {
		hdr = make([]byte, 20)
		hdr[0] = 0x45
		binary.BigEndian.PutUint16(hdr[2:], uint16(20+len(l4)))
		binary.BigEndian.PutUint16(hdr[4:], p.ID)
		hdr[8] = p.TTL
		hdr[9] = p.Protocol
		src, dst := p.Src.As4(), p.Dst.As4()
		copy(hdr[12:], src[:])
		copy(hdr[16:], dst[:])
		binary.BigEndian.PutUint16(hdr[10:], checksum(0, hdr))
	}
	// Transport checksums, over the pseudo-header where there is one.
	var ck int
	switch p.Protocol {
	case protoTCP:
		ck = 16
	case protoUDP:
		ck = 6
	case protoICMP, protoICMPv6:
		ck = 2
	default:
		return append(hdr, l4...)
	}
	var sum uint32
	if p.Protocol != protoICMP {
		sum = pseudoSum(p.Src, p.Dst, p.Protocol, len(l4))
	}
	if ck+2 <= len(l4) {
		c := checksum(sum, l4)
		if c == 0 && p.Protocol == protoUDP {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[ck:], c)
	}
	return append(hdr, l4...)
}

func pseudoSum(src, dst netip.Addr, proto uint8, n int) uint32 {
	var b []byte
	b = append(b, src.AsSlice()...)
	b = append(b, dst.AsSlice()...)
	if src.Is6() {
		b = binary.BigEndian.AppendUint32(b, uint32(n))
		b = append(b, 0, 0, 0, proto)
	} else {
		b = append(b, 0, proto)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	}
	return sumWords(0, b)
}

func sumWords(sum uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	return sum
}

func checksum(sum uint32, b []byte) uint16 {
	sum = sumWords(sum, b)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// buildARP returns an ARP request (IPv4 over Ethernet) from p's source to
// its destination.
func buildARP(p firewall.Packet) []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint16(b[0:], 1)
	binary.BigEndian.PutUint16(b[2:], firewall.EtherIPv4)
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], 1)
	copy(b[8:], p.SrcMAC[:])
	if p.Src.Is4() {
		a := p.Src.As4()
		copy(b[14:], a[:])
	}
	if p.Dst.Is4() {
		a := p.Dst.As4()
		copy(b[24:], a[:])
	}
	return b
}
