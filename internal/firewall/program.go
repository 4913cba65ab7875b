package firewall

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Set is what a host enforces: the rules assigned to it plus the lists they
// reference. It is the input of [Compile].
type Set struct {
	Rules     []Rule     `json:"rules"`
	IPLists   []IPList   `json:"ipLists,omitempty"`
	MACLists  []MACList  `json:"macLists,omitempty"`
	PortLists []PortList `json:"portLists,omitempty"`
}

// Program is a compiled rule set: every reference resolved, every address,
// MAC and port form turned into sorted ranges, and rules in evaluation order
// (priority 4 to 0; within a priority bypass, log-only, force-allow, deny,
// allow; then by rule ID). The evaluator and the nftables compiler both read
// a Program, so they cannot disagree about what a rule means.
type Program struct {
	Rules []Compiled
	// AllowIn and AllowOut report whether any allow rule exists in that
	// direction, which turns on the implicit deny ("out of allowed policy").
	AllowIn, AllowOut bool
}

// Compiled is one rule in matching form. A nil slice means "any".
type Compiled struct {
	Rule      *Rule // the source rule, for events and explanations
	Action    string
	Priority  int
	Direction string

	// Frame: EtherTypes to match (nil: any); FrameNot inverts.
	EtherTypes []uint16
	FrameNot   bool

	// Protocols: IP protocol numbers (nil: any); ProtocolNot inverts.
	Protocols   []uint8
	ProtocolNot bool

	SrcIP, DstIP         []IPRange
	SrcIPNot, DstIPNot   bool
	SrcMAC, DstMAC       []MAC
	SrcMACNot, DstMACNot bool
	SrcPort, DstPort     []PortRange
	SrcPortNot           bool
	DstPortNot           bool

	// TCPFlags that must all be set (0: any); TCPNot inverts.
	TCPFlags uint8
	TCPNot   bool

	// ICMPType and ICMPCode (-1: any); ICMPNot inverts.
	ICMPType, ICMPCode int
	ICMPNot            bool
}

// IPRange is an inclusive range of addresses of one family.
type IPRange struct{ From, To netip.Addr }

// Contains reports whether a is in the range.
func (r IPRange) Contains(a netip.Addr) bool {
	a = a.Unmap()
	return a.BitLen() == r.From.BitLen() && r.From.Compare(a) <= 0 && a.Compare(r.To) <= 0
}

// PortRange is an inclusive range of ports.
type PortRange struct{ Lo, Hi uint16 }

// MAC is a hardware address.
type MAC [6]byte

func (m MAC) String() string { return net.HardwareAddr(m[:]).String() }

// EtherTypes of the frame types.
const (
	EtherIPv4   = 0x0800
	EtherARP    = 0x0806
	EtherRARP   = 0x8035
	EtherIPv6   = 0x86DD
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
)

// TCP flag bits.
const (
	FlagFIN = 1 << iota
	FlagSYN
	FlagRST
	FlagPSH
	FlagACK
	FlagURG
)

var tcpFlagBits = map[string]uint8{"fin": FlagFIN, "syn": FlagSYN, "rst": FlagRST, "psh": FlagPSH, "ack": FlagACK, "urg": FlagURG}

var protocolNumbers = map[string][]uint8{
	"icmp": {protoICMP}, "igmp": {2}, "ggp": {3}, "tcp": {protoTCP}, "pup": {12}, "udp": {protoUDP},
	"idp": {22}, "nd": {77}, "raw": {255}, "tcp-udp": {protoTCP, protoUDP}, "icmpv6": {protoICMPv6},
}

// frame returns the EtherTypes a rule's frame type matches. Decision: "ip"
// is IPv4 or IPv6 (Deep Security's "IP" predates its separate IPv4 and IPv6
// entries and matches both).
func (r *Rule) frame() ([]uint16, error) {
	switch r.FrameType {
	case "", "ip":
		return []uint16{EtherIPv4, EtherIPv6}, nil
	case "any":
		return nil, nil
	case "ipv4":
		return []uint16{EtherIPv4}, nil
	case "ipv6":
		return []uint16{EtherIPv6}, nil
	case "arp":
		return []uint16{EtherARP}, nil
	case "revarp":
		return []uint16{EtherRARP}, nil
	case "other":
		if r.FrameNumber < 0x0600 || r.FrameNumber > 0xffff {
			return nil, fieldErr("frameNumber", strconv.Itoa(r.FrameNumber), "must be an EtherType from 1536 (0x0600) to 65535")
		}
		return []uint16{uint16(r.FrameNumber)}, nil
	}
	return nil, fieldErr("frameType", r.FrameType, "must be any, ip, ipv4, ipv6, arp, revarp or other")
}

func (r *Rule) protocol() ([]uint8, error) {
	switch r.Protocol {
	case "", "any":
		return nil, nil
	case "other":
		if r.ProtocolNumber < 0 || r.ProtocolNumber > 255 {
			return nil, fieldErr("protocolNumber", strconv.Itoa(r.ProtocolNumber), "must be an IP protocol number from 0 to 255")
		}
		return []uint8{uint8(r.ProtocolNumber)}, nil
	}
	p, ok := protocolNumbers[r.Protocol]
	if !ok {
		return nil, fieldErr("protocol", r.Protocol, "must be any, icmp, igmp, ggp, tcp, pup, udp, idp, nd, raw, tcp-udp, icmpv6 or other")
	}
	return p, nil
}

// Compile validates a set and turns it into a Program. Errors name the rule
// (by ID and name) and the field or list entry that is wrong.
func Compile(s *Set) (*Program, error) {
	ipLists := map[int]*IPList{}
	for i := range s.IPLists {
		l := &s.IPLists[i]
		if _, err := ParseIPItems(l.Items); err != nil {
			return nil, fmt.Errorf("IP list %d %q: %w", l.ID, l.Name, err)
		}
		ipLists[l.ID] = l
	}
	macLists := map[int]*MACList{}
	for i := range s.MACLists {
		l := &s.MACLists[i]
		if _, err := ParseMACItems(l.Items); err != nil {
			return nil, fmt.Errorf("MAC list %d %q: %w", l.ID, l.Name, err)
		}
		macLists[l.ID] = l
	}
	portLists := map[int]*PortList{}
	for i := range s.PortLists {
		l := &s.PortLists[i]
		if _, err := ParsePortItems(l.Items); err != nil {
			return nil, fmt.Errorf("port list %d %q: %w", l.ID, l.Name, err)
		}
		portLists[l.ID] = l
	}
	p := &Program{Rules: make([]Compiled, 0, len(s.Rules))}
	for i := range s.Rules {
		r := &s.Rules[i]
		c, err := compileRule(r, ipLists, macLists, portLists)
		if err != nil {
			return nil, fmt.Errorf("rule %d %q: %w", r.ID, r.Name, err)
		}
		if c.Action == ActionAllow {
			if c.Direction == Incoming {
				p.AllowIn = true
			} else {
				p.AllowOut = true
			}
		}
		p.Rules = append(p.Rules, c)
	}
	slices.SortStableFunc(p.Rules, func(a, b Compiled) int {
		if a.Priority != b.Priority {
			return b.Priority - a.Priority
		}
		if x, y := actionRank(a.Action), actionRank(b.Action); x != y {
			return x - y
		}
		return a.Rule.ID - b.Rule.ID
	})
	return p, nil
}

// actionRank orders actions within one priority.
func actionRank(a string) int {
	switch a {
	case ActionBypass:
		return 0
	case ActionLogOnly:
		return 1
	case ActionForceAllow:
		return 2
	case ActionDeny:
		return 3
	}
	return 4
}

func compileRule(r *Rule, ipLists map[int]*IPList, macLists map[int]*MACList, portLists map[int]*PortList) (Compiled, error) {
	if err := r.Validate(); err != nil {
		return Compiled{}, err
	}
	c := Compiled{
		Rule: r, Action: r.Action, Priority: r.PriorityLevel(), Direction: r.Direction,
		FrameNot: r.FrameNot, ProtocolNot: r.ProtocolNot,
		SrcIPNot: r.SourceIPNot, DstIPNot: r.DestinationIPNot,
		SrcMACNot: r.SourceMACNot, DstMACNot: r.DestinationMACNot,
		SrcPortNot: r.SourcePortNot, DstPortNot: r.DestinationPortNot,
		TCPNot: r.TCPNot, ICMPNot: r.ICMPNot, ICMPType: -1, ICMPCode: -1,
	}
	var err error
	if c.EtherTypes, err = r.frame(); err != nil {
		return c, err
	}
	if c.Protocols, err = r.protocol(); err != nil {
		return c, err
	}
	if c.SrcIP, err = ipMatch("source", r.SourceIPType, r.SourceIPValue, r.SourceIPMask, r.SourceIPRangeFrom, r.SourceIPRangeTo, r.SourceIPMultiple, r.SourceIPListID, ipLists); err != nil {
		return c, err
	}
	if c.DstIP, err = ipMatch("destination", r.DestinationIPType, r.DestinationIPValue, r.DestinationIPMask, r.DestinationIPRangeFrom, r.DestinationIPRangeTo, r.DestinationIPMultiple, r.DestinationIPListID, ipLists); err != nil {
		return c, err
	}
	if c.SrcMAC, err = macMatch("source", r.SourceMACType, r.SourceMACValue, r.SourceMACMultiple, r.SourceMACListID, macLists); err != nil {
		return c, err
	}
	if c.DstMAC, err = macMatch("destination", r.DestinationMACType, r.DestinationMACValue, r.DestinationMACMultiple, r.DestinationMACListID, macLists); err != nil {
		return c, err
	}
	if c.SrcPort, err = portMatch("source", r.SourcePortType, r.SourcePortMultiple, r.SourcePortListID, portLists); err != nil {
		return c, err
	}
	if c.DstPort, err = portMatch("destination", r.DestinationPortType, r.DestinationPortMultiple, r.DestinationPortListID, portLists); err != nil {
		return c, err
	}
	if (c.SrcMAC != nil || c.DstMAC != nil) && c.Direction == Outgoing {
		// The output hook runs before the next hop is resolved: the kernel
		// cannot know the destination MAC, and the source is always ours.
		return c, fieldErr("direction", r.Direction, "MAC addresses can be matched on incoming traffic only")
	}
	if (c.SrcPort != nil || c.DstPort != nil) && !portProtocols(c.Protocols) {
		return c, fieldErr("protocol", r.Protocol, "port matches need protocol tcp, udp or tcp-udp")
	}
	if !r.AnyFlags || len(r.TCPFlags) > 0 {
		for _, f := range r.TCPFlags {
			c.TCPFlags |= tcpFlagBits[f]
		}
	}
	if c.TCPFlags != 0 && (len(c.Protocols) != 1 || c.Protocols[0] != protoTCP) {
		return c, fieldErr("tcpflags", strings.Join(r.TCPFlags, ","), "need protocol tcp")
	}
	if r.ICMPType != nil {
		if len(c.Protocols) != 1 || (c.Protocols[0] != protoICMP && c.Protocols[0] != protoICMPv6) {
			return c, fieldErr("ICMPType", strconv.Itoa(*r.ICMPType), "needs protocol icmp or icmpv6")
		}
		c.ICMPType = *r.ICMPType
		if r.ICMPCode != nil {
			c.ICMPCode = *r.ICMPCode
		}
	}
	return c, nil
}

func portProtocols(p []uint8) bool {
	if len(p) == 0 {
		return false
	}
	for _, n := range p {
		if n != protoTCP && n != protoUDP {
			return false
		}
	}
	return true
}

func ipMatch(side, typ, value, mask, from, to string, multiple []string, listID int, lists map[int]*IPList) ([]IPRange, error) {
	f := side + "IP"
	switch typ {
	case "", TypeAny:
		return nil, nil
	case TypeSingle:
		a, err := netip.ParseAddr(strings.TrimSpace(value))
		if err != nil {
			return nil, fieldErr(f+"Value", value, "is not an IPv4 or IPv6 address")
		}
		a = a.Unmap()
		return []IPRange{{a, a}}, nil
	case TypeMasked:
		r, err := parseMasked(strings.TrimSpace(value), strings.TrimSpace(mask))
		if err != nil {
			return nil, fieldErr(f+"Mask", value+"/"+mask, "%v", err)
		}
		return []IPRange{r}, nil
	case TypeRange:
		r, err := parseRange(strings.TrimSpace(from), strings.TrimSpace(to))
		if err != nil {
			return nil, fieldErr(f+"RangeFrom", from+"-"+to, "%v", err)
		}
		return []IPRange{r}, nil
	case TypeMultiple:
		if len(multiple) == 0 {
			return nil, fieldErr(f+"Multiple", "", "is empty")
		}
		rs, err := ParseIPItems(multiple)
		if err != nil {
			return nil, prefixField(f+"Multiple", err)
		}
		return rs, nil
	case TypeIPList:
		l, ok := lists[listID]
		if !ok {
			return nil, fieldErr(f+"ListID", strconv.Itoa(listID), "names no IP list")
		}
		rs, _ := ParseIPItems(l.Items)
		if len(rs) == 0 {
			// An empty list matches nothing; keep it from meaning "any".
			return []IPRange{}, nil
		}
		return rs, nil
	}
	return nil, fieldErr(f+"Type", typ, "must be any, single, masked-ip, range, multiple or ip-list")
}

func prefixField(field string, err error) error {
	var fe *FieldError
	if errors.As(err, &fe) {
		return &FieldError{Field: field + fe.Field, Value: fe.Value, Msg: fe.Msg}
	}
	return fmt.Errorf("%s: %w", field, err)
}

// ParseIPItems parses IP list entries. The error names the entry's index.
func ParseIPItems(items []string) ([]IPRange, error) {
	out := make([]IPRange, 0, len(items))
	for i, raw := range items {
		s := stripComment(raw)
		if s == "" {
			continue
		}
		r, err := parseIPEntry(s)
		if err != nil {
			return nil, &FieldError{Field: fmt.Sprintf("[%d]", i), Value: raw, Msg: err.Error()}
		}
		out = append(out, r)
	}
	return mergeIP(out), nil
}

func stripComment(s string) string {
	if i := strings.IndexByte(s, '#'); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

func parseIPEntry(s string) (IPRange, error) {
	if from, to, ok := strings.Cut(s, "-"); ok {
		return parseRange(strings.TrimSpace(from), strings.TrimSpace(to))
	}
	if addr, mask, ok := strings.Cut(s, "/"); ok {
		return parseMasked(strings.TrimSpace(addr), strings.TrimSpace(mask))
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return IPRange{}, errors.New("is not an address, CIDR (10.0.0.0/8), masked (10.0.0.0/255.0.0.0) or range (10.0.0.1-10.0.0.9)")
	}
	a = a.Unmap()
	return IPRange{a, a}, nil
}

func parseRange(from, to string) (IPRange, error) {
	a, err1 := netip.ParseAddr(from)
	b, err2 := netip.ParseAddr(to)
	if err1 != nil || err2 != nil {
		return IPRange{}, errors.New("range ends must be IP addresses")
	}
	a, b = a.Unmap(), b.Unmap()
	if a.BitLen() != b.BitLen() {
		return IPRange{}, errors.New("range ends must be of the same family")
	}
	if a.Compare(b) > 0 {
		return IPRange{}, errors.New("range starts after it ends")
	}
	return IPRange{a, b}, nil
}

// parseMasked reads a prefix length ("24") or a dotted IPv4 mask
// ("255.255.255.0"); host bits in the address are ignored, as Deep Security
// does.
func parseMasked(addr, mask string) (IPRange, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return IPRange{}, errors.New("is not an IP address with a mask")
	}
	a = a.Unmap()
	bits, err := strconv.Atoi(mask)
	if err != nil {
		m, merr := netip.ParseAddr(mask)
		if merr != nil || !m.Is4() || !a.Is4() {
			return IPRange{}, errors.New("mask must be a prefix length or a dotted IPv4 netmask")
		}
		ones, size := net.IPMask(m.AsSlice()).Size()
		if size == 0 {
			return IPRange{}, errors.New("netmask is not contiguous")
		}
		bits = ones
	}
	if bits < 0 || bits > a.BitLen() {
		return IPRange{}, fmt.Errorf("prefix length must be 0 to %d", a.BitLen())
	}
	p := netip.PrefixFrom(a, bits).Masked()
	return IPRange{p.Addr(), lastAddr(p)}, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// mergeIP sorts ranges and joins overlapping or adjacent ones, so the
// kernel set and the evaluator see the same, minimal intervals.
func mergeIP(rs []IPRange) []IPRange {
	slices.SortFunc(rs, func(a, b IPRange) int {
		if a.From.BitLen() != b.From.BitLen() {
			return a.From.BitLen() - b.From.BitLen()
		}
		return a.From.Compare(b.From)
	})
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 {
			last := &out[n-1]
			if last.To.BitLen() == r.From.BitLen() && (last.To.Compare(r.From) >= 0 || last.To.Next() == r.From) {
				if r.To.Compare(last.To) > 0 {
					last.To = r.To
				}
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

func macMatch(side, typ, value string, multiple []string, listID int, lists map[int]*MACList) ([]MAC, error) {
	f := side + "MAC"
	switch typ {
	case "", TypeAny:
		return nil, nil
	case TypeSingle:
		m, err := parseMAC(value)
		if err != nil {
			return nil, fieldErr(f+"Value", value, "%v", err)
		}
		return []MAC{m}, nil
	case TypeMultiple:
		if len(multiple) == 0 {
			return nil, fieldErr(f+"Multiple", "", "is empty")
		}
		ms, err := ParseMACItems(multiple)
		if err != nil {
			return nil, prefixField(f+"Multiple", err)
		}
		return ms, nil
	case TypeMACList:
		l, ok := lists[listID]
		if !ok {
			return nil, fieldErr(f+"ListID", strconv.Itoa(listID), "names no MAC list")
		}
		ms, _ := ParseMACItems(l.Items)
		if ms == nil {
			ms = []MAC{}
		}
		return ms, nil
	}
	return nil, fieldErr(f+"Type", typ, "must be any, single, multiple or mac-list")
}

// ParseMACItems parses MAC list entries.
func ParseMACItems(items []string) ([]MAC, error) {
	var out []MAC
	for i, raw := range items {
		s := stripComment(raw)
		if s == "" {
			continue
		}
		m, err := parseMAC(s)
		if err != nil {
			return nil, &FieldError{Field: fmt.Sprintf("[%d]", i), Value: raw, Msg: err.Error()}
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b MAC) int { return slices.Compare(a[:], b[:]) })
	return slices.Compact(out), nil
}

func parseMAC(s string) (MAC, error) {
	hw, err := net.ParseMAC(strings.TrimSpace(s))
	if err != nil || len(hw) != 6 {
		return MAC{}, errors.New("is not a MAC address like 00:11:22:33:44:55")
	}
	return MAC(hw), nil
}

func portMatch(side, typ string, multiple []string, listID int, lists map[int]*PortList) ([]PortRange, error) {
	f := side + "Port"
	switch typ {
	case "", TypeAny:
		return nil, nil
	case TypeMultiple:
		if len(multiple) == 0 {
			return nil, fieldErr(f+"Multiple", "", "is empty")
		}
		ps, err := ParsePortItems(multiple)
		if err != nil {
			return nil, prefixField(f+"Multiple", err)
		}
		return ps, nil
	case TypePortList:
		l, ok := lists[listID]
		if !ok {
			return nil, fieldErr(f+"ListID", strconv.Itoa(listID), "names no port list")
		}
		ps, _ := ParsePortItems(l.Items)
		if ps == nil {
			ps = []PortRange{}
		}
		return ps, nil
	}
	return nil, fieldErr(f+"Type", typ, "must be any, multiple or port-list")
}

// ParsePortItems parses port entries ("22", "5900-5910"), merging overlaps.
func ParsePortItems(items []string) ([]PortRange, error) {
	var out []PortRange
	for i, raw := range items {
		s := stripComment(raw)
		if s == "" {
			continue
		}
		r, err := parsePortEntry(s)
		if err != nil {
			return nil, &FieldError{Field: fmt.Sprintf("[%d]", i), Value: raw, Msg: err.Error()}
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b PortRange) int { return int(a.Lo) - int(b.Lo) })
	merged := out[:0]
	for _, r := range out {
		if n := len(merged); n > 0 && uint32(merged[n-1].Hi)+1 >= uint32(r.Lo) {
			merged[n-1].Hi = max(merged[n-1].Hi, r.Hi)
			continue
		}
		merged = append(merged, r)
	}
	return merged, nil
}

func parsePortEntry(s string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	a, err := parsePort(lo)
	if err != nil {
		return PortRange{}, err
	}
	if !isRange {
		return PortRange{a, a}, nil
	}
	b, err := parsePort(hi)
	if err != nil {
		return PortRange{}, err
	}
	if a > b {
		return PortRange{}, errors.New("range starts after it ends")
	}
	return PortRange{a, b}, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 || n > 65535 {
		return 0, errors.New("is not a port from 0 to 65535 or a range such as 5900-5910")
	}
	return uint16(n), nil
}
