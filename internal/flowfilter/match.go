package flowfilter

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
)

// Flow is a flow record as the filter sees it: the columns of the flow
// table (see [Columns]).
type Flow struct {
	SrcAddr, DstAddr netip.Addr // IPv4 or IPv6
	SrcPort, DstPort uint16
	Proto            uint8
	IPVersion        uint8 // 4 or 6
	TCPFlags         uint8
	Bytes, Packets   uint64
	TimeStart        int64 // microseconds since the Unix epoch
	TimeEnd          int64
	InIf, OutIf      uint32
	Exporter         string
}

// Addr16 is how the flow table stores an address: 16 bytes, IPv4 as
// IPv4-mapped IPv6 (::ffff:a.b.c.d). An invalid address is all zeros.
func Addr16(a netip.Addr) [16]byte {
	if !a.IsValid() {
		return [16]byte{}
	}
	return a.As16()
}

// prefixRange returns the first and last addresses of p as stored.
func prefixRange(p netip.Prefix) (first, last [16]byte) {
	p = p.Masked()
	first = Addr16(p.Addr())
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	last = first
	for i := bits; i < 128; i++ {
		last[i/8] |= 0x80 >> (i % 8)
	}
	return first, last
}

// inRange reports whether a lies in [first, last], comparing bytes as the
// stores compare BLOB and FixedString values.
func inRange(a, first, last [16]byte) bool {
	return bytes.Compare(a[:], first[:]) >= 0 && bytes.Compare(a[:], last[:]) <= 0
}

// Match reports whether f matches e. It is the reference for what a
// filter means: the SQL that Compile produces selects the same flows, as
// the tests check against real databases. It panics on an Expr type not
// from this package.
func Match(e Expr, f Flow) bool {
	switch e := e.(type) {
	case And:
		for _, t := range e.Terms {
			if !Match(t, f) {
				return false
			}
		}
		return true
	case Or:
		for _, t := range e.Terms {
			if Match(t, f) {
				return true
			}
		}
		return false
	case Not:
		return !Match(e.X, f)
	case All:
		return true
	case Proto:
		return f.Proto == e.N
	case IPVersion:
		return f.IPVersion == e.V
	case Host:
		want := Addr16(e.Addr)
		return sides(e.Dir, func(a netip.Addr) bool { return Addr16(a) == want }, f.SrcAddr, f.DstAddr)
	case Net:
		first, last := prefixRange(e.Prefix)
		return sides(e.Dir, func(a netip.Addr) bool { return inRange(Addr16(a), first, last) }, f.SrcAddr, f.DstAddr)
	case HostIn:
		return sides(e.Dir, func(a netip.Addr) bool {
			a16 := Addr16(a)
			for _, p := range e.List {
				if first, last := prefixRange(p); inRange(a16, first, last) {
					return true
				}
			}
			return false
		}, f.SrcAddr, f.DstAddr)
	case Port:
		return sides(e.Dir, func(p uint16) bool { return compare(e.Op, p, e.N) }, f.SrcPort, f.DstPort)
	case PortIn:
		return sides(e.Dir, func(p uint16) bool { return slices.Contains(e.List, p) }, f.SrcPort, f.DstPort)
	case Counter:
		switch e.Field {
		case FieldBytes:
			return compare(e.Op, f.Bytes, e.N)
		case FieldPackets:
			return compare(e.Op, f.Packets, e.N)
		case FieldDuration:
			return compare(e.Op, f.TimeEnd-f.TimeStart, int64(e.N)*1000)
		default:
			return compare(e.Op, Rate(e.Field, f), float64(e.N))
		}
	case Flags:
		return f.TCPFlags&e.Mask == e.Mask
	case Iface:
		switch e.Dir {
		case IfIn:
			return f.InIf == e.N
		case IfOut:
			return f.OutIf == e.N
		}
		return f.InIf == e.N || f.OutIf == e.N
	case Exporter:
		return f.Exporter == e.Name
	}
	panic(fmt.Sprintf("flowfilter: Match: unknown expression type %T", e))
}

// Rate returns bps, pps or bpp of f, as the compiled SQL computes them: in
// float64, in this order of operations, and 0 where the divisor (the
// duration in microseconds, or the packets) is not positive. nfdump also
// shows 0 for flows of no duration.
func Rate(field Field, f Flow) float64 {
	dur := f.TimeEnd - f.TimeStart
	switch field {
	case FieldBPS:
		if dur <= 0 {
			return 0
		}
		return float64(f.Bytes) * 8e6 / float64(dur)
	case FieldPPS:
		if dur <= 0 {
			return 0
		}
		return float64(f.Packets) * 1e6 / float64(dur)
	case FieldBPP:
		if f.Packets == 0 {
			return 0
		}
		return float64(f.Bytes) / float64(f.Packets)
	}
	panic(fmt.Sprintf("flowfilter: Rate: %v is not a rate", field))
}

func sides[T any](d Dir, ok func(T) bool, src, dst T) bool {
	switch d {
	case DirSrc:
		return ok(src)
	case DirDst:
		return ok(dst)
	case DirBoth:
		return ok(src) && ok(dst)
	}
	return ok(src) || ok(dst)
}

func compare[T uint16 | uint64 | int64 | float64](op Op, a, b T) bool {
	switch op {
	case OpNe:
		return a != b
	case OpLt:
		return a < b
	case OpLe:
		return a <= b
	case OpGt:
		return a > b
	case OpGe:
		return a >= b
	}
	return a == b
}
