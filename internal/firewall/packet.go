package firewall

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// PacketSyntax is the syntax of [ParsePacket], for help texts.
const PacketSyntax = `DIR PROTO SRC[:PORT] > DST[:PORT] [flags F] [type N [code N]] [state S] [smac MAC] [dmac MAC]

  DIR     in | out (or incoming | outgoing)
  PROTO   tcp | udp | icmp | icmpv6 | igmp | ggp | pup | idp | nd | raw | an IP
          protocol number 0-255 | arp | rarp | ether:0xNNNN (another EtherType)
  SRC,DST IPv4 or IPv6 addresses; a port (tcp and udp only) after a colon,
          IPv6 in brackets when a port follows: [2001:db8::1]:22.
          Frames that are not IP may give - for no address.
  flags   TCP flags, letters F S R P A U: S, SA, A, FA, R, PA…
  type    ICMP or ICMPv6 type and code (0-255)
  state   new (the default) | established | related | invalid
  smac    source MAC address; dmac: destination MAC address`

// SyntaxError is an error in a packet description: which token (1-based,
// by position among the blank-separated tokens) is wrong, and what was
// expected there.
type SyntaxError struct {
	Pos   int    // 1-based; one past the last token when the input ended early
	Token string // the token at Pos, "" at the end of the input
	Msg   string
}

func (e *SyntaxError) Error() string {
	if e.Token == "" {
		return fmt.Sprintf("packet: token %d (end of input): %s", e.Pos, e.Msg)
	}
	return fmt.Sprintf("packet: token %d %q: %s", e.Pos, e.Token, e.Msg)
}

// protocolNames are the IP protocols a packet may name, as in the rule
// model (tcp-udp is a rule's choice, not a packet's).
var protocolNames = []struct {
	name  string
	proto uint8
}{
	{"icmp", protoICMP}, {"igmp", 2}, {"ggp", 3}, {"tcp", protoTCP}, {"pup", 12}, {"udp", protoUDP},
	{"idp", 22}, {"icmpv6", protoICMPv6}, {"nd", 77}, {"raw", 255},
}

// ParsePacket reads a packet description, the syntax of `yagura fw eval`
// ([PacketSyntax]):
//
//	in tcp 10.0.0.5:40000 > 10.0.0.1:22 flags S
//	out udp [2001:db8::5]:5353 > [2001:db8::1]:53
//	in icmp 10.0.0.5 > 10.0.0.1 type 8 code 0
//	in arp 10.0.0.5 > 10.0.0.1
//
// Omitted parts are zero: no TCP flags, ICMP type 0 code 0, state new (""),
// no MAC. Decision: nothing is guessed, so a TCP packet without "flags S"
// is not the opening of a connection and stateful inspection calls it
// invalid.
func ParsePacket(s string) (Packet, error) {
	toks := strings.Fields(s)
	var p Packet
	at := func(i int, format string, args ...any) error {
		e := &SyntaxError{Pos: i + 1, Msg: fmt.Sprintf(format, args...)}
		if i < len(toks) {
			e.Token = toks[i]
		}
		return e
	}
	// Check token by token, so a missing part is reported where it is
	// missing, not at the end of the line.
	const shape = "DIR PROTO SRC[:PORT] > DST[:PORT] …"
	need := func(i int, what string) error {
		if i < len(toks) {
			return nil
		}
		return at(i, "want %s: %s", what, shape)
	}
	if err := need(0, "a direction (in or out)"); err != nil {
		return p, err
	}
	switch strings.ToLower(toks[0]) {
	case "in", "incoming":
		p.Direction = Incoming
	case "out", "outgoing":
		p.Direction = Outgoing
	default:
		return p, at(0, "want a direction: in or out")
	}
	if err := need(1, "a protocol (tcp, udp, icmp, arp…)"); err != nil {
		return p, err
	}
	if err := parseProto(toks[1], &p); err != nil {
		return p, at(1, "%v", err)
	}
	ip := isIP(&p)
	ports := ip && (p.Protocol == protoTCP || p.Protocol == protoUDP)
	var err error
	if err := need(2, "a source address"); err != nil {
		return p, err
	}
	if p.Src, p.SrcPort, err = parseEndpoint(toks[2], ip, ports); err != nil {
		return p, at(2, "%v", err)
	}
	if err := need(3, `">"`); err != nil {
		return p, err
	}
	if toks[3] != ">" {
		return p, at(3, `want ">" between the source and the destination`)
	}
	if err := need(4, "a destination address"); err != nil {
		return p, err
	}
	if p.Dst, p.DstPort, err = parseEndpoint(toks[4], ip, ports); err != nil {
		return p, at(4, "%v", err)
	}
	if p.Src.IsValid() && p.Dst.IsValid() && p.Src.Is4() != p.Dst.Is4() {
		return p, at(4, "source and destination must be of the same family (IPv4 or IPv6)")
	}
	if ip {
		p.EtherType = EtherIPv4
		if p.Src.Is6() {
			p.EtherType = EtherIPv6
		}
		switch {
		case p.Protocol == protoICMP && p.Src.Is6():
			return p, at(2, "icmp is IPv4: use icmpv6 with IPv6 addresses")
		case p.Protocol == protoICMPv6 && p.Src.Is4():
			return p, at(2, "icmpv6 is IPv6: use icmp with IPv4 addresses")
		}
	}
	seen := map[string]bool{}
	for i := 5; i < len(toks); i += 2 {
		key := strings.ToLower(toks[i])
		if seen[key] {
			return p, at(i, "%s is given twice", key)
		}
		seen[key] = true
		if i+1 >= len(toks) {
			switch key {
			case "flags", "type", "code", "state", "smac", "dmac":
				return p, at(i+1, "want a value after %s", key)
			}
		}
		v := ""
		if i+1 < len(toks) {
			v = toks[i+1]
		}
		switch key {
		case "flags":
			if !ip || p.Protocol != protoTCP {
				return p, at(i, "flags are for tcp packets only")
			}
			if p.TCPFlags, err = parseFlags(v); err != nil {
				return p, at(i+1, "%v", err)
			}
		case "type", "code":
			if !ip || (p.Protocol != protoICMP && p.Protocol != protoICMPv6) {
				return p, at(i, "%s is for icmp and icmpv6 packets only", key)
			}
			if key == "code" && !seen["type"] {
				return p, at(i, "code needs a type before it: type N code N")
			}
			n, err := strconv.ParseUint(v, 10, 8)
			if err != nil {
				return p, at(i+1, "want an ICMP %s from 0 to 255", key)
			}
			if key == "type" {
				p.ICMPType = uint8(n)
			} else {
				p.ICMPCode = uint8(n)
			}
		case "state":
			switch st := strings.ToLower(v); st {
			case StateNew, StateEstablished, StateRelated, StateInvalid:
				p.State = st
			default:
				return p, at(i+1, "want a state: new, established, related or invalid")
			}
		case "smac", "dmac":
			m, err := parseMAC(v)
			if err != nil {
				return p, at(i+1, "%v", err)
			}
			if key == "smac" {
				p.SrcMAC = m
			} else {
				p.DstMAC = m
			}
		default:
			return p, at(i, "want flags, type, code, state, smac or dmac")
		}
	}
	return p, nil
}

func parseProto(tok string, p *Packet) error {
	t := strings.ToLower(tok)
	for _, n := range protocolNames {
		if t == n.name {
			p.EtherType, p.Protocol = EtherIPv4, n.proto
			return nil
		}
	}
	switch t {
	case "arp":
		p.EtherType = EtherARP
		return nil
	case "rarp", "revarp":
		p.EtherType = EtherRARP
		return nil
	}
	if rest, ok := strings.CutPrefix(t, "ether:"); ok {
		n, err := strconv.ParseUint(rest, 0, 16)
		if err != nil || n < 0x0600 {
			return fmt.Errorf("want an EtherType from 0x0600 to 0xffff after ether:")
		}
		if n == EtherIPv4 || n == EtherIPv6 {
			return fmt.Errorf("IP packets are given by protocol (tcp, udp, icmp, a number), not by EtherType")
		}
		p.EtherType = uint16(n)
		return nil
	}
	n, err := strconv.ParseUint(t, 10, 8)
	if err != nil {
		return fmt.Errorf("want a protocol: tcp, udp, icmp, icmpv6, igmp, ggp, pup, idp, nd, raw, a number 0-255, arp, rarp or ether:0xNNNN")
	}
	p.EtherType, p.Protocol = EtherIPv4, uint8(n)
	return nil
}

// parseEndpoint reads ADDR, ADDR:PORT, [ADDR]:PORT, [ADDR] or, for frames
// that are not IP, "-".
func parseEndpoint(tok string, ip, ports bool) (netip.Addr, uint16, error) {
	if tok == "-" {
		if ip {
			return netip.Addr{}, 0, fmt.Errorf("want an IPv4 or IPv6 address: IP packets have addresses")
		}
		return netip.Addr{}, 0, nil
	}
	host, port, hasPort := tok, "", false
	switch {
	case strings.HasPrefix(tok, "["):
		end := strings.IndexByte(tok, ']')
		if end < 0 {
			return netip.Addr{}, 0, fmt.Errorf("want ] after an IPv6 address: [2001:db8::1]:22")
		}
		host = tok[1:end]
		if rest := tok[end+1:]; rest != "" {
			if port, hasPort = strings.CutPrefix(rest, ":"); !hasPort {
				return netip.Addr{}, 0, fmt.Errorf("want :PORT after ]: [2001:db8::1]:22")
			}
		}
	case strings.Count(tok, ":") == 1:
		host, port, hasPort = strings.Cut(tok, ":")
	}
	a, err := netip.ParseAddr(host)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, 0, fmt.Errorf("want an IPv4 or IPv6 address, with :PORT for tcp and udp ([2001:db8::1]:22 for IPv6)")
	}
	a = a.Unmap()
	if !hasPort {
		return a, 0, nil
	}
	if !ports {
		return netip.Addr{}, 0, fmt.Errorf("ports are for tcp and udp packets only")
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("want a port from 0 to 65535 after the address")
	}
	return a, uint16(n), nil
}

func parseFlags(s string) (uint8, error) {
	var f uint8
	for _, c := range strings.ToUpper(s) {
		i := strings.IndexRune("FSRPAU", c)
		if i < 0 {
			return 0, fmt.Errorf("want TCP flags as letters F S R P A U, such as S, SA, A, FA or R")
		}
		if f&(1<<i) != 0 {
			return 0, fmt.Errorf("flag %c is given twice", c)
		}
		f |= 1 << i
	}
	return f, nil
}

// String writes p in the syntax of [ParsePacket]; parsing the result gives
// p back.
func (p Packet) String() string {
	var b strings.Builder
	switch p.Direction {
	case Incoming:
		b.WriteString("in")
	case Outgoing:
		b.WriteString("out")
	default:
		fmt.Fprintf(&b, "%q", p.Direction)
	}
	b.WriteByte(' ')
	ip := isIP(&p)
	switch {
	case ip:
		b.WriteString(protocolName(p.Protocol))
	case p.EtherType == EtherARP:
		b.WriteString("arp")
	case p.EtherType == EtherRARP:
		b.WriteString("rarp")
	default:
		fmt.Fprintf(&b, "ether:0x%04x", p.EtherType)
	}
	ports := ip && (p.Protocol == protoTCP || p.Protocol == protoUDP)
	endpoint := func(a netip.Addr, port uint16) {
		switch {
		case !a.IsValid():
			b.WriteString("-")
		case ports:
			b.WriteString(netip.AddrPortFrom(a, port).String())
		default:
			b.WriteString(a.String())
		}
	}
	b.WriteByte(' ')
	endpoint(p.Src, p.SrcPort)
	b.WriteString(" > ")
	endpoint(p.Dst, p.DstPort)
	if ip && p.Protocol == protoTCP && p.TCPFlags != 0 {
		b.WriteString(" flags ")
		b.WriteString(FlagString(p.TCPFlags))
	}
	if ip && (p.Protocol == protoICMP || p.Protocol == protoICMPv6) {
		fmt.Fprintf(&b, " type %d code %d", p.ICMPType, p.ICMPCode)
	}
	if p.State != "" {
		b.WriteString(" state ")
		b.WriteString(p.State)
	}
	if p.SrcMAC != (MAC{}) {
		b.WriteString(" smac ")
		b.WriteString(p.SrcMAC.String())
	}
	if p.DstMAC != (MAC{}) {
		b.WriteString(" dmac ")
		b.WriteString(p.DstMAC.String())
	}
	return b.String()
}

func protocolName(n uint8) string {
	for _, p := range protocolNames {
		if p.proto == n {
			return p.name
		}
	}
	return strconv.Itoa(int(n))
}
