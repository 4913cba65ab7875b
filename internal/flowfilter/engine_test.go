package flowfilter

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	_ "github.com/duckdb/duckdb-go/v2"
	"github.com/google/go-cmp/cmp"

	"github.com/yagura/yagura/internal/testch"
)

func TestMain(m *testing.M) { testch.Main(m) }

const flowColumns = "id, src_addr, dst_addr, src_port, dst_port, proto, ip_version, tcp_flags, bytes, packets, time_start, time_end, in_if, out_if, exporter"

func flowValues(f testFlow, d Dialect) []any {
	addr := func(a netip.Addr) any {
		b := Addr16(a)
		if d == ClickHouse {
			return string(b[:])
		}
		return b[:]
	}
	c := &compiler{d: d}
	return []any{
		uint32(f.ID), addr(f.SrcAddr), addr(f.DstAddr), f.SrcPort, f.DstPort, f.Proto, f.IPVersion, f.TCPFlags,
		c.uint64Arg(f.Bytes), c.uint64Arg(f.Packets), f.TimeStart, f.TimeEnd, f.InIf, f.OutIf, f.Exporter,
	}
}

// runEngine compiles every filter of testdata/filters.txt, plus the
// filters of the compile tests, runs it with query, and compares the IDs
// selected with Match's.
func runEngine(t *testing.T, d Dialect, query func(where string, args []any) ([]int, error)) {
	t.Helper()
	for _, c := range readFilters(t) {
		t.Run(c.filter, func(t *testing.T) {
			e := mustParse(t, c.filter)
			where, args, err := Compile(e, d, DefaultColumns())
			if err != nil {
				t.Fatal(err)
			}
			got, err := query(where, args)
			if err != nil {
				t.Fatalf("filters.txt:%d: query WHERE %s: %v", c.line, where, err)
			}
			if diff := cmp.Diff(sortedIDs(got), matchIDs(e)); diff != "" {
				t.Errorf("filters.txt:%d: %v selects other flows than Match (-%v +Match):\nWHERE %s\n%s", c.line, d, d, where, diff)
			}
		})
	}
}

func TestDuckDB(t *testing.T) {
	db := openTestDuckDB(t)
	runEngine(t, DuckDB, func(where string, args []any) ([]int, error) { return queryIDs(db, where, args) })
}

// openTestDuckDB returns an in-memory DuckDB with the test flows in table
// flows.
func openTestDuckDB(tb testing.TB) *sql.DB {
	tb.Helper()
	db, err := sql.Open("duckdb", "")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	_, err = db.Exec(`CREATE TABLE flows (
		id UINTEGER, src_addr BLOB, dst_addr BLOB, src_port USMALLINT, dst_port USMALLINT,
		proto UTINYINT, ip_version UTINYINT, tcp_flags UTINYINT, bytes UBIGINT, packets UBIGINT,
		time_start BIGINT, time_end BIGINT, in_if UINTEGER, out_if UINTEGER, exporter VARCHAR)`)
	if err != nil {
		tb.Fatal(err)
	}
	insert := "INSERT INTO flows (" + flowColumns + ") VALUES (?" + strings.Repeat(", ?", 14) + ")"
	for _, f := range testFlows {
		if _, err := db.Exec(insert, flowValues(f, DuckDB)...); err != nil {
			tb.Fatalf("insert flow %d: %v", f.ID, err)
		}
	}
	return db
}

func queryIDs(db *sql.DB, where string, args []any) ([]int, error) {
	rows, err := db.Query("SELECT id FROM flows WHERE "+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	ids := []int{}
	for rows.Next() {
		var id int
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

func TestClickHouse(t *testing.T) {
	chdb := testch.Start(t)
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:        []string{chdb.Addr},
		Auth:        clickhouse.Auth{Database: chdb.Name, Username: "default"},
		DialTimeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	err = conn.Exec(ctx, `CREATE TABLE flows (
		id UInt32, src_addr FixedString(16), dst_addr FixedString(16), src_port UInt16, dst_port UInt16,
		proto UInt8, ip_version UInt8, tcp_flags UInt8, bytes UInt64, packets UInt64,
		time_start Int64, time_end Int64, in_if UInt32, out_if UInt32, exporter String
	) ENGINE = MergeTree ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	if err := insertCH(ctx, conn); err != nil {
		t.Fatal(err)
	}
	runEngine(t, ClickHouse, func(where string, args []any) ([]int, error) {
		rows, err := conn.Query(ctx, "SELECT id FROM flows WHERE "+where, args...)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		ids := []int{}
		for rows.Next() {
			var id uint32
			if err := rows.Scan(&id); err != nil {
				return nil, err
			}
			ids = append(ids, int(id))
		}
		return ids, rows.Err()
	})
}

// insertCH stores the test flows with a batch: 18.16 hangs on a plain
// INSERT … VALUES over the native protocol.
func insertCH(ctx context.Context, conn driver.Conn) error {
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO flows ("+flowColumns+")")
	if err != nil {
		return err
	}
	for _, f := range testFlows {
		if err := batch.Append(flowValues(f, ClickHouse)...); err != nil {
			return fmt.Errorf("append flow %d: %w", f.ID, err)
		}
	}
	return batch.Send()
}
