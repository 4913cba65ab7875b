package nftfw

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/yagura/yagura/internal/firewall"
)

// headers are the fields of a logged packet that a firewall event reports.
type headers struct {
	EtherType        uint16 // firewall.EtherIPv4, EtherIPv6 or EtherARP
	Protocol         uint8  // IP protocol, after IPv6 extension headers
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	TCPFlags         uint8
	ICMPType         uint8
	ICMPCode         uint8
}

var errShort = errors.New("packet too short")

// parseHeaders reads the packet NFLOG hands over (starting at the network
// header; at the ARP header for the arp table). hwProto is the frame's
// EtherType as NFLOG reports it; ARP and other frames are told apart by
// it, IPv4 from IPv6 by the version nibble. A truncated transport header leaves the fields it would
// hold at zero, as the kernel's matches could not have read them either.
func parseHeaders(b []byte, hwProto uint16) (headers, error) {
	var h headers
	switch hwProto {
	case firewall.EtherARP:
		return parseARP(b)
	case 0, firewall.EtherIPv4, firewall.EtherIPv6:
	default:
		// A frame of the netdev table: only its EtherType is reported.
		return headers{EtherType: hwProto}, nil
	}
	if len(b) < 1 {
		return h, errShort
	}
	var l4 []byte
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return h, errShort
		}
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || len(b) < ihl {
			return h, errors.New("bad IPv4 header length")
		}
		h.EtherType = firewall.EtherIPv4
		h.Protocol = b[9]
		h.Src = netip.AddrFrom4([4]byte(b[12:16]))
		h.Dst = netip.AddrFrom4([4]byte(b[16:20]))
		if binary.BigEndian.Uint16(b[6:8])&0x1fff != 0 {
			return h, nil // a later fragment: no transport header
		}
		end := len(b)
		if tot := int(binary.BigEndian.Uint16(b[2:4])); tot >= ihl && tot < end {
			end = tot
		}
		l4 = b[ihl:end]
	case 6:
		if len(b) < 40 {
			return h, errShort
		}
		h.EtherType = firewall.EtherIPv6
		h.Src = netip.AddrFrom16([16]byte(b[8:24]))
		h.Dst = netip.AddrFrom16([16]byte(b[24:40]))
		end := len(b)
		if pl := 40 + int(binary.BigEndian.Uint16(b[4:6])); pl < end {
			end = pl
		}
		next, off := b[6], 40
		// Skip extension headers as the kernel's ipv6_find_hdr does, so
		// Protocol is what "meta l4proto" matched.
	ext:
		for range 16 {
			switch next {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if end-off < 2 {
					return h, errShort
				}
				n := (int(b[off+1]) + 1) * 8
				next = b[off]
				off += n
			case 51: // authentication header
				if end-off < 2 {
					return h, errShort
				}
				n := (int(b[off+1]) + 2) * 4
				next = b[off]
				off += n
			case 44: // fragment
				if end-off < 8 {
					return h, errShort
				}
				frag := binary.BigEndian.Uint16(b[off+2:off+4]) &^ 7
				next = b[off]
				off += 8
				if frag != 0 {
					h.Protocol = next
					return h, nil
				}
			default:
				break ext
			}
			if off > end {
				return h, errShort
			}
		}
		h.Protocol = next
		if off > end {
			return h, errShort
		}
		l4 = b[off:end]
	default:
		return h, errors.New("neither IPv4, IPv6 nor ARP")
	}
	switch h.Protocol {
	case protoTCP, protoUDP:
		if len(l4) >= 4 {
			h.SrcPort = binary.BigEndian.Uint16(l4[0:2])
			h.DstPort = binary.BigEndian.Uint16(l4[2:4])
		}
		if h.Protocol == protoTCP && len(l4) >= 14 {
			h.TCPFlags = l4[13] & 0x3f
		}
	case protoICMP, protoICMPv6:
		if len(l4) >= 2 {
			h.ICMPType, h.ICMPCode = l4[0], l4[1]
		}
	}
	return h, nil
}

// parseARP reads an ARP header; the addresses are those of IPv4 over
// Ethernet ARP, the only kind that has any.
func parseARP(b []byte) (headers, error) {
	h := headers{EtherType: firewall.EtherARP}
	if len(b) < 8 {
		return h, errShort
	}
	ptype, hlen, plen := binary.BigEndian.Uint16(b[2:4]), int(b[4]), int(b[5])
	if ptype != firewall.EtherIPv4 || plen != 4 {
		return h, nil
	}
	if len(b) < 8+2*hlen+2*plen {
		return h, errShort
	}
	spa := 8 + hlen
	tpa := spa + plen + hlen
	h.Src = netip.AddrFrom4([4]byte(b[spa : spa+4]))
	h.Dst = netip.AddrFrom4([4]byte(b[tpa : tpa+4]))
	return h, nil
}

// ruleInfo is what an event reports about a rule beyond its ID.
type ruleInfo struct {
	name  string
	alert bool
}

// makeEvent builds the event of a logged packet as firewall.Evaluate would
// report it; mark is the packet's mark, for prefixes that say so.
func makeEvent(p logPrefix, h headers, mark uint32, rule func(id int) (ruleInfo, bool)) firewall.Event {
	if p.FromMark {
		p.RuleID = int(int32(mark))
	}
	e := firewall.Event{
		Action: p.Action, Verdict: p.Verdict, Reason: p.Reason, RuleID: p.RuleID,
		Direction: p.Direction,
	}
	if p.RuleID != 0 && rule != nil {
		if ri, ok := rule(p.RuleID); ok {
			e.RuleName, e.Alert = ri.name, ri.alert
		}
	}
	if h.Src.IsValid() {
		e.Src = h.Src.String()
	}
	if h.Dst.IsValid() {
		e.Dst = h.Dst.String()
	}
	ip := h.EtherType == firewall.EtherIPv4 || h.EtherType == firewall.EtherIPv6
	if ip {
		e.Protocol = h.Protocol
		if h.Protocol == protoTCP || h.Protocol == protoUDP {
			e.SrcPort, e.DstPort = h.SrcPort, h.DstPort
		}
		if h.Protocol == protoTCP {
			e.Flags = firewall.FlagString(h.TCPFlags)
		}
	}
	return e
}

// ruleMap indexes p's rules by ID for events. Hidden rules and stored
// rules have distinct IDs; should two rules share one, the first wins.
func ruleMap(p *firewall.Program) map[int]ruleInfo {
	m := map[int]ruleInfo{}
	if p == nil {
		return m
	}
	for _, c := range p.Rules {
		if c.Rule == nil {
			continue
		}
		if _, ok := m[c.Rule.ID]; !ok {
			m[c.Rule.ID] = ruleInfo{name: c.Rule.Name, alert: c.Rule.AlertEnabled}
		}
	}
	return m
}
