package flowfilter

import (
	"fmt"
	"math"
	"math/big"
	"strings"
)

// Dialect is the SQL a filter compiles to.
type Dialect uint8

const (
	// DuckDB: addresses are BLOB and their arguments []byte.
	DuckDB Dialect = iota + 1
	// ClickHouse 18.16 and later: addresses are FixedString(16) and their
	// arguments Go strings of the 16 raw bytes, because clickhouse-go binds
	// parameters on the client, quoting a string (escaping \, ' and NUL)
	// into the query; the server has no query parameters before 19.x.
	ClickHouse
)

func (d Dialect) String() string {
	switch d {
	case DuckDB:
		return "duckdb"
	case ClickHouse:
		return "clickhouse"
	}
	return fmt.Sprintf("Dialect(%d)", uint8(d))
}

// Columns names the flow table's columns. Types, in DuckDB / ClickHouse:
//
//	SrcAddr, DstAddr    BLOB / FixedString(16): 16 bytes, IPv4 as ::ffff:a.b.c.d
//	SrcPort, DstPort    USMALLINT / UInt16
//	Proto, IPVersion    UTINYINT / UInt8 (IPVersion is 4 or 6)
//	TCPFlags            UTINYINT / UInt8: FIN 1, SYN 2, RST 4, PSH 8, ACK 16, URG 32, ECE 64, CWR 128
//	Bytes, Packets      UBIGINT / UInt64
//	TimeStart, TimeEnd  BIGINT / Int64: microseconds since the Unix epoch
//	InIf, OutIf         UINTEGER / UInt32
//	Exporter            VARCHAR / String
//
// A name may be qualified ("f.src_addr") but is otherwise a plain
// identifier: it is written into the SQL as is.
type Columns struct {
	SrcAddr, DstAddr   string
	SrcPort, DstPort   string
	Proto, IPVersion   string
	TCPFlags           string
	Bytes, Packets     string
	TimeStart, TimeEnd string
	InIf, OutIf        string
	Exporter           string
}

// DefaultColumns returns the flow table's column names.
func DefaultColumns() Columns {
	return Columns{
		SrcAddr: "src_addr", DstAddr: "dst_addr",
		SrcPort: "src_port", DstPort: "dst_port",
		Proto: "proto", IPVersion: "ip_version",
		TCPFlags: "tcp_flags",
		Bytes:    "bytes", Packets: "packets",
		TimeStart: "time_start", TimeEnd: "time_end",
		InIf: "in_if", OutIf: "out_if",
		Exporter: "exporter",
	}
}

func (c Columns) check() error {
	for _, col := range []struct{ field, name string }{
		{"SrcAddr", c.SrcAddr}, {"DstAddr", c.DstAddr}, {"SrcPort", c.SrcPort}, {"DstPort", c.DstPort},
		{"Proto", c.Proto}, {"IPVersion", c.IPVersion}, {"TCPFlags", c.TCPFlags},
		{"Bytes", c.Bytes}, {"Packets", c.Packets}, {"TimeStart", c.TimeStart}, {"TimeEnd", c.TimeEnd},
		{"InIf", c.InIf}, {"OutIf", c.OutIf}, {"Exporter", c.Exporter},
	} {
		if !validColumn(col.name) {
			return fmt.Errorf("column %s: %q is not an identifier (letters, digits, _ and one optional qualifier)", col.field, col.name)
		}
	}
	return nil
}

// validColumn accepts ident or ident.ident, so that no column name can
// carry SQL (or a "?" that would shift the arguments).
func validColumn(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) > 2 {
		return false
	}
	for _, p := range parts {
		if p == "" || len(p) > 64 {
			return false
		}
		for i, r := range p {
			if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9') {
				return false
			}
		}
	}
	return true
}

// Compile turns e into a boolean SQL expression for a WHERE clause, with a
// "?" for each value and the values in args, in order; no part of the
// filter is written into the SQL. Arguments are uint8, uint16, uint32,
// uint64, int64, float64 and string; addresses are []byte for DuckDB and
// string for ClickHouse; and for DuckDB a counter above 2^63-1 is a
// *big.Int, which database/sql passes on where it refuses such a uint64. The fragment is a comparison or parenthesised, so
// it can be joined to other conditions with AND.
//
// Address comparisons rely on both stores comparing the 16-byte values
// byte by byte, as unsigned bytes: DuckDB compares BLOBs with memcmp, and
// ClickHouse FixedString too; so a network is the range between its first
// and last addresses. IPv4 networks are IPv4-mapped, so "net ::/0"
// matches IPv4 flows as well; "ipv6" tells them apart.
func Compile(e Expr, d Dialect, cols Columns) (sql string, args []any, err error) {
	if d != DuckDB && d != ClickHouse {
		return "", nil, fmt.Errorf("flowfilter: compile: unknown dialect %v", d)
	}
	if err := cols.check(); err != nil {
		return "", nil, fmt.Errorf("flowfilter: compile: %w", err)
	}
	c := &compiler{d: d, cols: cols}
	if err := c.expr(e); err != nil {
		return "", nil, fmt.Errorf("flowfilter: compile %q: %w", exprText(e), err)
	}
	return c.b.String(), c.args, nil
}

func exprText(e Expr) string {
	if e == nil {
		return "<nil>"
	}
	return e.String()
}

type compiler struct {
	d    Dialect
	cols Columns
	b    strings.Builder
	args []any
}

func (c *compiler) w(s string) { c.b.WriteString(s) }

// arg writes a placeholder for v.
func (c *compiler) arg(v any) {
	c.b.WriteByte('?')
	c.args = append(c.args, v)
}

// uint64Arg is v as the dialect's driver binds it: database/sql refuses a
// uint64 with the high bit set, so DuckDB gets such a value as a *big.Int
// (a HUGEINT).
func (c *compiler) uint64Arg(v uint64) any {
	if c.d == DuckDB && v > math.MaxInt64 {
		return new(big.Int).SetUint64(v)
	}
	return v
}

func (c *compiler) addr(a [16]byte) {
	if c.d == ClickHouse {
		c.arg(string(a[:]))
	} else {
		c.arg(a[:])
	}
}

// sides writes one(col) for the columns d selects, joined as d says.
func (c *compiler) sides(d Dir, src, dst string, one func(col string)) {
	switch d {
	case DirSrc:
		one(src)
	case DirDst:
		one(dst)
	default:
		op := " OR "
		if d == DirBoth {
			op = " AND "
		}
		c.w("(")
		one(src)
		c.w(op)
		one(dst)
		c.w(")")
	}
}

func (c *compiler) expr(e Expr) error {
	switch e := e.(type) {
	case And:
		return c.list(e.Terms, " AND ")
	case Or:
		return c.list(e.Terms, " OR ")
	case Not:
		c.w("NOT ")
		_, paren := e.X.(And)
		if _, ok := e.X.(Or); ok {
			paren = true
		}
		if !paren {
			// Old ClickHouse parses NOT a = b as (NOT a) = b.
			c.w("(")
		}
		if err := c.expr(e.X); err != nil {
			return err
		}
		if !paren {
			c.w(")")
		}
	case All:
		// ClickHouse 18.16 has no boolean literals.
		if c.d == ClickHouse {
			c.w("1")
		} else {
			c.w("TRUE")
		}
	case Proto:
		c.w(c.cols.Proto + " = ")
		c.arg(e.N)
	case IPVersion:
		c.w(c.cols.IPVersion + " = ")
		c.arg(e.V)
	case Host:
		a := Addr16(e.Addr)
		c.sides(e.Dir, c.cols.SrcAddr, c.cols.DstAddr, func(col string) {
			c.w(col + " = ")
			c.addr(a)
		})
	case Net:
		first, last := prefixRange(e.Prefix)
		c.sides(e.Dir, c.cols.SrcAddr, c.cols.DstAddr, func(col string) { c.addrRange(col, first, last) })
	case HostIn:
		c.sides(e.Dir, c.cols.SrcAddr, c.cols.DstAddr, func(col string) { c.hostIn(col, e) })
	case Port:
		c.sides(e.Dir, c.cols.SrcPort, c.cols.DstPort, func(col string) {
			c.w(col + " " + e.Op.String() + " ")
			c.arg(e.N)
		})
	case PortIn:
		c.sides(e.Dir, c.cols.SrcPort, c.cols.DstPort, func(col string) {
			c.w(col + " IN (")
			for i, p := range e.List {
				if i > 0 {
					c.w(", ")
				}
				c.arg(p)
			}
			c.w(")")
		})
	case Counter:
		c.counter(e)
	case Flags:
		if c.d == ClickHouse {
			c.w("bitAnd(" + c.cols.TCPFlags + ", ")
			c.arg(e.Mask)
			c.w(") = ")
		} else {
			c.w("(" + c.cols.TCPFlags + " & ")
			c.arg(e.Mask)
			c.w(") = ")
		}
		c.arg(e.Mask)
	case Iface:
		switch e.Dir {
		case IfIn:
			c.w(c.cols.InIf + " = ")
			c.arg(e.N)
		case IfOut:
			c.w(c.cols.OutIf + " = ")
			c.arg(e.N)
		default:
			c.w("(" + c.cols.InIf + " = ")
			c.arg(e.N)
			c.w(" OR " + c.cols.OutIf + " = ")
			c.arg(e.N)
			c.w(")")
		}
	case Exporter:
		c.w(c.cols.Exporter + " = ")
		c.arg(e.Name)
	default:
		return fmt.Errorf("unknown expression type %T", e)
	}
	return nil
}

func (c *compiler) list(terms []Expr, op string) error {
	if len(terms) == 0 {
		return fmt.Errorf("empty%s", strings.ToLower(op))
	}
	c.w("(")
	for i, t := range terms {
		if i > 0 {
			c.w(op)
		}
		if err := c.expr(t); err != nil {
			return err
		}
	}
	c.w(")")
	return nil
}

func (c *compiler) addrRange(col string, first, last [16]byte) {
	c.w("(" + col + " >= ")
	c.addr(first)
	c.w(" AND " + col + " <= ")
	c.addr(last)
	c.w(")")
}

// hostIn writes col IN (…) for the single addresses of the list and a
// range for each network, ORed.
func (c *compiler) hostIn(col string, e HostIn) {
	var hosts, nets int
	for _, p := range e.List {
		if p.IsSingleIP() {
			hosts++
		} else {
			nets++
		}
	}
	if nets+min(hosts, 1) > 1 {
		c.w("(")
	}
	n := 0
	if hosts > 0 {
		c.w(col + " IN (")
		for _, p := range e.List {
			if p.IsSingleIP() {
				if n > 0 {
					c.w(", ")
				}
				c.addr(Addr16(p.Addr()))
				n++
			}
		}
		c.w(")")
	}
	for _, p := range e.List {
		if !p.IsSingleIP() {
			if n > 0 {
				c.w(" OR ")
			}
			first, last := prefixRange(p)
			c.addrRange(col, first, last)
			n++
		}
	}
	if nets+min(hosts, 1) > 1 {
		c.w(")")
	}
}

// counter writes a comparison of a counter, the duration or a rate. The
// rates are computed in float64 exactly as Rate does, with 0 for a flow
// of no duration (or no packets) instead of a division by zero.
func (c *compiler) counter(e Counter) {
	dbl := func(x string) string {
		if c.d == ClickHouse {
			return "toFloat64(" + x + ")"
		}
		return "CAST(" + x + " AS DOUBLE)"
	}
	dur := "(" + c.cols.TimeEnd + " - " + c.cols.TimeStart + ")"
	durPositive := c.cols.TimeEnd + " > " + c.cols.TimeStart
	var lhs string
	var arg any
	switch e.Field {
	case FieldBytes:
		lhs, arg = c.cols.Bytes, c.uint64Arg(e.N)
	case FieldPackets:
		lhs, arg = c.cols.Packets, c.uint64Arg(e.N)
	case FieldDuration:
		// The parser keeps N*1000 within int64.
		lhs, arg = dur, int64(e.N)*1000
	case FieldBPS:
		lhs = "(CASE WHEN " + durPositive + " THEN " + dbl(c.cols.Bytes) + " * 8000000 / " + dbl(dur) + " ELSE 0 END)"
		arg = float64(e.N)
	case FieldPPS:
		lhs = "(CASE WHEN " + durPositive + " THEN " + dbl(c.cols.Packets) + " * 1000000 / " + dbl(dur) + " ELSE 0 END)"
		arg = float64(e.N)
	case FieldBPP:
		lhs = "(CASE WHEN " + c.cols.Packets + " > 0 THEN " + dbl(c.cols.Bytes) + " / " + dbl(c.cols.Packets) + " ELSE 0 END)"
		arg = float64(e.N)
	}
	c.w(lhs + " " + e.Op.String() + " ")
	c.arg(arg)
}
