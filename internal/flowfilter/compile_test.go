package flowfilter

import (
	"math/big"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func b16(s string) [16]byte { return Addr16(netip.MustParseAddr(s)) }

// duckAddr and chAddr are an address argument as each dialect binds it.
func duckAddr(s string) any { a := b16(s); return a[:] }
func chAddr(s string) any   { a := b16(s); return string(a[:]) }

var bigIntOpt = cmp.Comparer(func(a, b *big.Int) bool { return a.Cmp(b) == 0 })

func TestCompile(t *testing.T) {
	tests := []struct {
		filter           string
		duckSQL, chSQL   string // chSQL empty: same as duckSQL
		duckArgs, chArgs []any  // chArgs nil: same as duckArgs
	}{
		{filter: "", duckSQL: "TRUE", chSQL: "1"},
		{filter: "proto tcp", duckSQL: "proto = ?", duckArgs: []any{uint8(6)}},
		{filter: "ipv6", duckSQL: "ip_version = ?", duckArgs: []any{uint8(6)}},
		{
			filter:   "host 192.0.2.1",
			duckSQL:  "(src_addr = ? OR dst_addr = ?)",
			duckArgs: []any{duckAddr("192.0.2.1"), duckAddr("192.0.2.1")},
			chArgs:   []any{chAddr("192.0.2.1"), chAddr("192.0.2.1")},
		},
		{
			filter:   "src and dst host 2001:db8::1",
			duckSQL:  "(src_addr = ? AND dst_addr = ?)",
			duckArgs: []any{duckAddr("2001:db8::1"), duckAddr("2001:db8::1")},
			chArgs:   []any{chAddr("2001:db8::1"), chAddr("2001:db8::1")},
		},
		{
			filter:   "src net 10.0.0.0/8",
			duckSQL:  "(src_addr >= ? AND src_addr <= ?)",
			duckArgs: []any{duckAddr("::ffff:10.0.0.0"), duckAddr("::ffff:10.255.255.255")},
			chArgs:   []any{chAddr("::ffff:10.0.0.0"), chAddr("::ffff:10.255.255.255")},
		},
		{
			filter:   "dst net 2001:db8::/32",
			duckSQL:  "(dst_addr >= ? AND dst_addr <= ?)",
			duckArgs: []any{duckAddr("2001:db8::"), duckAddr("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")},
			chArgs:   []any{chAddr("2001:db8::"), chAddr("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")},
		},
		{
			filter:   "src host in [192.0.2.1, 10.0.0.0/8, 2001:db8::1]",
			duckSQL:  "(src_addr IN (?, ?) OR (src_addr >= ? AND src_addr <= ?))",
			duckArgs: []any{duckAddr("192.0.2.1"), duckAddr("2001:db8::1"), duckAddr("::ffff:10.0.0.0"), duckAddr("::ffff:10.255.255.255")},
			chArgs:   []any{chAddr("192.0.2.1"), chAddr("2001:db8::1"), chAddr("::ffff:10.0.0.0"), chAddr("::ffff:10.255.255.255")},
		},
		{
			filter:   "dst host in [192.0.2.1]",
			duckSQL:  "dst_addr IN (?)",
			duckArgs: []any{duckAddr("192.0.2.1")},
			chArgs:   []any{chAddr("192.0.2.1")},
		},
		{filter: "port 443", duckSQL: "(src_port = ? OR dst_port = ?)", duckArgs: []any{uint16(443), uint16(443)}},
		{filter: "dst port >= 1024", duckSQL: "dst_port >= ?", duckArgs: []any{uint16(1024)}},
		{filter: "port in [22, 3389]", duckSQL: "(src_port IN (?, ?) OR dst_port IN (?, ?))", duckArgs: []any{uint16(22), uint16(3389), uint16(22), uint16(3389)}},
		{filter: "bytes > 1M", duckSQL: "bytes > ?", duckArgs: []any{uint64(1_000_000)}},
		{
			filter:   "bytes > 18446744073709551614",
			duckSQL:  "bytes > ?",
			duckArgs: []any{new(big.Int).SetUint64(18446744073709551614)},
			chArgs:   []any{uint64(18446744073709551614)},
		},
		{filter: "packets <= 1k", duckSQL: "packets <= ?", duckArgs: []any{uint64(1000)}},
		{filter: "duration > 1000", duckSQL: "(time_end - time_start) > ?", duckArgs: []any{int64(1_000_000)}},
		{
			filter:   "bps > 1M",
			duckSQL:  "(CASE WHEN time_end > time_start THEN CAST(bytes AS DOUBLE) * 8000000 / CAST((time_end - time_start) AS DOUBLE) ELSE 0 END) > ?",
			chSQL:    "(CASE WHEN time_end > time_start THEN toFloat64(bytes) * 8000000 / toFloat64((time_end - time_start)) ELSE 0 END) > ?",
			duckArgs: []any{float64(1e6)},
		},
		{
			filter:   "pps < 10",
			duckSQL:  "(CASE WHEN time_end > time_start THEN CAST(packets AS DOUBLE) * 1000000 / CAST((time_end - time_start) AS DOUBLE) ELSE 0 END) < ?",
			chSQL:    "(CASE WHEN time_end > time_start THEN toFloat64(packets) * 1000000 / toFloat64((time_end - time_start)) ELSE 0 END) < ?",
			duckArgs: []any{float64(10)},
		},
		{
			filter:   "bpp = 40",
			duckSQL:  "(CASE WHEN packets > 0 THEN CAST(bytes AS DOUBLE) / CAST(packets AS DOUBLE) ELSE 0 END) = ?",
			chSQL:    "(CASE WHEN packets > 0 THEN toFloat64(bytes) / toFloat64(packets) ELSE 0 END) = ?",
			duckArgs: []any{float64(40)},
		},
		{filter: "flags SA", duckSQL: "(tcp_flags & ?) = ?", chSQL: "bitAnd(tcp_flags, ?) = ?", duckArgs: []any{uint8(18), uint8(18)}},
		{filter: "in if 3", duckSQL: "in_if = ?", duckArgs: []any{uint32(3)}},
		{filter: "out if 3", duckSQL: "out_if = ?", duckArgs: []any{uint32(3)}},
		{filter: "if 3", duckSQL: "(in_if = ? OR out_if = ?)", duckArgs: []any{uint32(3), uint32(3)}},
		{filter: `exporter "it's; DROP TABLE flows"`, duckSQL: "exporter = ?", duckArgs: []any{"it's; DROP TABLE flows"}},
		{filter: "not proto tcp", duckSQL: "NOT (proto = ?)", duckArgs: []any{uint8(6)}},
		{filter: "not (proto tcp or proto udp)", duckSQL: "NOT (proto = ? OR proto = ?)", duckArgs: []any{uint8(6), uint8(17)}},
		{filter: "not port 22", duckSQL: "NOT ((src_port = ? OR dst_port = ?))", duckArgs: []any{uint16(22), uint16(22)}},
		{
			filter:   "proto tcp and dst port 443 and not src net 10.0.0.0/8",
			duckSQL:  "(proto = ? AND dst_port = ? AND NOT ((src_addr >= ? AND src_addr <= ?)))",
			duckArgs: []any{uint8(6), uint16(443), duckAddr("::ffff:10.0.0.0"), duckAddr("::ffff:10.255.255.255")},
			chArgs:   []any{uint8(6), uint16(443), chAddr("::ffff:10.0.0.0"), chAddr("::ffff:10.255.255.255")},
		},
		{
			filter:   "proto tcp or proto udp and port 53",
			duckSQL:  "(proto = ? OR (proto = ? AND (src_port = ? OR dst_port = ?)))",
			duckArgs: []any{uint8(6), uint8(17), uint16(53), uint16(53)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			e := mustParse(t, tt.filter)
			for _, d := range []Dialect{DuckDB, ClickHouse} {
				wantSQL, wantArgs := tt.duckSQL, tt.duckArgs
				if d == ClickHouse {
					if tt.chSQL != "" {
						wantSQL = tt.chSQL
					}
					if tt.chArgs != nil {
						wantArgs = tt.chArgs
					}
				}
				sql, args, err := Compile(e, d, DefaultColumns())
				if err != nil {
					t.Fatalf("Compile(%v): %v", d, err)
				}
				if sql != wantSQL {
					t.Errorf("Compile(%v) SQL:\n got %s\nwant %s", d, sql, wantSQL)
				}
				if diff := cmp.Diff(args, wantArgs, bigIntOpt); diff != "" {
					t.Errorf("Compile(%v) args (-got +want):\n%s", d, diff)
				}
			}
		})
	}
}

func TestCompileColumns(t *testing.T) {
	cols := DefaultColumns()
	cols.SrcPort, cols.DstPort = "f.sport", "f.dport"
	sql, _, err := Compile(mustParse(t, "port 1"), DuckDB, cols)
	if err != nil || sql != "(f.sport = ? OR f.dport = ?)" {
		t.Errorf("Compile with columns = %q, %v", sql, err)
	}
	for _, bad := range []string{"", "a b", "x; DROP TABLE y", "a.b.c", "1col", "a?", `"q"`} {
		cols := DefaultColumns()
		cols.Exporter = bad
		if _, _, err := Compile(All{}, DuckDB, cols); err == nil || !strings.Contains(err.Error(), "column Exporter") {
			t.Errorf("Compile with Exporter column %q: err = %v, want a column error", bad, err)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	if _, _, err := Compile(All{}, Dialect(0), DefaultColumns()); err == nil {
		t.Error("Compile with dialect 0 succeeded")
	}
	if _, _, err := Compile(nil, DuckDB, DefaultColumns()); err == nil {
		t.Error("Compile(nil) succeeded")
	}
	if _, _, err := Compile(And{}, DuckDB, DefaultColumns()); err == nil {
		t.Error("Compile(empty And) succeeded")
	}
}
