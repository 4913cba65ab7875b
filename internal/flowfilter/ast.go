// Package flowfilter provides the flow filter language: nfdump-like
// expressions such as
//
//	proto tcp and dst port 443 and not src net 10.0.0.0/8
//
// parsed by [Parse] into an [Expr], compiled by [Compile] into a WHERE-clause
// fragment with bound parameters for the telemetry store (DuckDB or
// ClickHouse), and evaluated in Go by [Match], which is the reference for
// what a filter means. The syntax is documented in docs/flow-filters.md.
//
// It has no dependencies beyond the standard library and may be imported
// by any package of the manager or ctl; it does no I/O.
package flowfilter

import (
	"net/netip"
	"strconv"
	"strings"
)

// Expr is a parsed filter. The types in this package are its only
// implementations. String returns the canonical form, which Parse turns
// back into an equal Expr.
type Expr interface {
	String() string
	expr()
}

// Dir says which side of a flow an address or port primitive looks at.
type Dir uint8

const (
	DirEither Dir = iota // no qualifier, or "src or dst": either side matches
	DirSrc               // "src"
	DirDst               // "dst"
	DirBoth              // "src and dst": both sides match
)

func (d Dir) prefix() string {
	switch d {
	case DirSrc:
		return "src "
	case DirDst:
		return "dst "
	case DirBoth:
		return "src and dst "
	}
	return ""
}

// Op is a comparison operator.
type Op uint8

const (
	OpEq Op = iota // =, ==, eq, or none
	OpNe           // !=, ne
	OpLt           // <, lt
	OpLe           // <=, le
	OpGt           // >, gt
	OpGe           // >=, ge
)

var opText = [...]string{OpEq: "=", OpNe: "!=", OpLt: "<", OpLe: "<=", OpGt: ">", OpGe: ">="}

// String returns the SQL (and filter) spelling of o.
func (o Op) String() string { return opText[o] }

// opPrefix is o as written before a number in the canonical form: nothing
// for equality.
func (o Op) opPrefix() string {
	if o == OpEq {
		return ""
	}
	return o.String() + " "
}

// And matches when every term matches. The parser flattens nested Ands,
// so a term is never an And.
type And struct{ Terms []Expr }

// Or matches when any term matches. The parser flattens nested Ors.
type Or struct{ Terms []Expr }

// Not matches when X does not.
type Not struct{ X Expr }

// All matches every flow: the empty filter, or "any".
type All struct{}

// AndAll joins filters into one that matches when every one does: nil and
// All drop out and nested Ands are flattened, as the parser does. When no
// term is left it returns nil, not All: nil means "no filter", which lets a
// flow store answer an unfiltered series from its rollups, which outlive
// raw flows.
func AndAll(es ...Expr) Expr {
	var terms []Expr
	for _, e := range es {
		switch e := e.(type) {
		case nil, All:
		case And:
			terms = append(terms, e.Terms...)
		default:
			terms = append(terms, e)
		}
	}
	switch len(terms) {
	case 0:
		return nil
	case 1:
		return terms[0]
	}
	return And{Terms: terms}
}

// Proto matches the IP protocol number.
type Proto struct{ N uint8 }

// IPVersion matches IPv4 (4: "ipv4", "inet") or IPv6 (6: "ipv6", "inet6")
// flows.
type IPVersion struct{ V uint8 }

// Host matches an address: "host ADDR" or its synonym "ip ADDR". The
// address is never IPv4-mapped IPv6 (the parser unmaps it) and has no zone.
type Host struct {
	Dir  Dir
	Addr netip.Addr
}

// Net matches the addresses in a network: "net CIDR" or "net ADDR MASK".
// The prefix is masked, and IPv4 when it covers only IPv4-mapped addresses.
type Net struct {
	Dir    Dir
	Prefix netip.Prefix
}

// HostIn matches any of a list of addresses and networks: "host in [...]".
// A single address is a full-length prefix.
type HostIn struct {
	Dir  Dir
	List []netip.Prefix
}

// Port compares a transport port with N.
type Port struct {
	Dir Dir
	Op  Op
	N   uint16
}

// PortIn matches any of a list of ports: "port in [...]".
type PortIn struct {
	Dir  Dir
	List []uint16
}

// Field names a counter or a value computed from counters.
type Field uint8

const (
	FieldBytes    Field = iota // bytes
	FieldPackets               // packets
	FieldDuration              // duration, in milliseconds as in nfdump
	FieldBPS                   // bits per second: 8 × bytes / duration
	FieldPPS                   // packets per second
	FieldBPP                   // bytes per packet
)

var fieldText = [...]string{
	FieldBytes: "bytes", FieldPackets: "packets", FieldDuration: "duration",
	FieldBPS: "bps", FieldPPS: "pps", FieldBPP: "bpp",
}

// String returns the field's keyword.
func (f Field) String() string { return fieldText[f] }

// Counter compares a counter, the duration or a rate with N.
type Counter struct {
	Field Field
	Op    Op
	N     uint64
}

// Flags matches flows whose TCP flags include every flag in Mask (FIN 1,
// SYN 2, RST 4, PSH 8, ACK 16, URG 32, ECE 64, CWR 128).
type Flags struct{ Mask uint8 }

// IfDir says which interface an "if" primitive looks at.
type IfDir uint8

const (
	IfEither IfDir = iota // "if": input or output
	IfIn                  // "in if"
	IfOut                 // "out if"
)

// Iface matches an interface index (SNMP ifIndex, as the exporter sends it).
type Iface struct {
	Dir IfDir
	N   uint32
}

// Exporter matches the exporter that sent the flow, by its name in the
// flow store.
type Exporter struct{ Name string }

func (And) expr()       {}
func (Or) expr()        {}
func (Not) expr()       {}
func (All) expr()       {}
func (Proto) expr()     {}
func (IPVersion) expr() {}
func (Host) expr()      {}
func (Net) expr()       {}
func (HostIn) expr()    {}
func (Port) expr()      {}
func (PortIn) expr()    {}
func (Counter) expr()   {}
func (Flags) expr()     {}
func (Iface) expr()     {}
func (Exporter) expr()  {}

func (e And) String() string {
	parts := make([]string, len(e.Terms))
	for i, t := range e.Terms {
		if _, ok := t.(Or); ok {
			parts[i] = "(" + t.String() + ")"
		} else {
			parts[i] = t.String()
		}
	}
	return strings.Join(parts, " and ")
}

func (e Or) String() string {
	parts := make([]string, len(e.Terms))
	for i, t := range e.Terms {
		parts[i] = t.String()
	}
	return strings.Join(parts, " or ")
}

func (e Not) String() string {
	switch e.X.(type) {
	case And, Or:
		return "not (" + e.X.String() + ")"
	}
	return "not " + e.X.String()
}

func (All) String() string { return "any" }

// protoNames are the protocol names the filter accepts; the canonical
// form uses them for these numbers.
var protoNames = map[string]uint8{
	"icmp": 1, "igmp": 2, "ipip": 4, "tcp": 6, "udp": 17, "gre": 47,
	"esp": 50, "ah": 51, "icmp6": 58, "ipv6-icmp": 58, "ospf": 89,
	"pim": 103, "sctp": 132,
}

var protoByNumber = map[uint8]string{
	1: "icmp", 2: "igmp", 4: "ipip", 6: "tcp", 17: "udp", 47: "gre",
	50: "esp", 51: "ah", 58: "icmp6", 89: "ospf", 103: "pim", 132: "sctp",
}

func (e Proto) String() string {
	if name, ok := protoByNumber[e.N]; ok {
		return "proto " + name
	}
	return "proto " + strconv.Itoa(int(e.N))
}

func (e IPVersion) String() string {
	if e.V == 6 {
		return "ipv6"
	}
	return "ipv4"
}

func (e Host) String() string { return e.Dir.prefix() + "host " + e.Addr.String() }

func (e Net) String() string { return e.Dir.prefix() + "net " + e.Prefix.String() }

func (e HostIn) String() string {
	parts := make([]string, len(e.List))
	for i, p := range e.List {
		if p.IsSingleIP() {
			parts[i] = p.Addr().String()
		} else {
			parts[i] = p.String()
		}
	}
	return e.Dir.prefix() + "host in [" + strings.Join(parts, ", ") + "]"
}

func (e Port) String() string {
	return e.Dir.prefix() + "port " + e.Op.opPrefix() + strconv.Itoa(int(e.N))
}

func (e PortIn) String() string {
	parts := make([]string, len(e.List))
	for i, p := range e.List {
		parts[i] = strconv.Itoa(int(p))
	}
	return e.Dir.prefix() + "port in [" + strings.Join(parts, ", ") + "]"
}

func (e Counter) String() string {
	return e.Field.String() + " " + e.Op.opPrefix() + strconv.FormatUint(e.N, 10)
}

// flagLetters are the TCP flag letters by bit, as nfdump names them.
const flagLetters = "FSRPAUEC"

func (e Flags) String() string {
	var b strings.Builder
	b.WriteString("flags ")
	for i := range 8 {
		if e.Mask&(1<<i) != 0 {
			b.WriteByte(flagLetters[i])
		}
	}
	return b.String()
}

func (e Iface) String() string {
	switch e.Dir {
	case IfIn:
		return "in if " + strconv.FormatUint(uint64(e.N), 10)
	case IfOut:
		return "out if " + strconv.FormatUint(uint64(e.N), 10)
	}
	return "if " + strconv.FormatUint(uint64(e.N), 10)
}

// String quotes the name with double quotes, or single quotes when it
// contains a double quote; the parser refuses a name with both.
func (e Exporter) String() string {
	if strings.Contains(e.Name, `"`) {
		return "exporter '" + e.Name + "'"
	}
	return `exporter "` + e.Name + `"`
}
