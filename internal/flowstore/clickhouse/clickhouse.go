// Package clickhouse is the scale-out flow store: raw flows and their
// 5-minute rollups in a ClickHouse server, spoken to with the native
// protocol.
//
// It keeps to what ClickHouse 18.16 (Debian's package, which CI tests
// against) understands and later versions still do: addresses are
// FixedString(16) (IPv4 mapped into IPv6, as flowfilter's ClickHouse
// dialect expects), times Int64 microseconds since the Unix epoch, and a
// UInt32 day (YYYYMMDD, UTC) partitions both tables, so that retention
// drops whole days with ALTER TABLE … DROP PARTITION. No TTL, DateTime64,
// IPv6 type, LowCardinality, column codecs or server-side query
// parameters.
//
// Only the manager's server packages import it; it must stay out of the
// agent.
package clickhouse

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/yagura/yagura/internal/chconn"
	"github.com/yagura/yagura/internal/flowstore"
)

// Config says which server and database to use.
type Config struct {
	Addr     string // host:port of the native protocol, usually 9000 (9440 with TLS)
	Database string // created on first start if missing; "default" if empty
	Username string
	Password string
	TLS      *tls.Config // nil: plain TCP
	// Compress sends inserts and receives results LZ4-compressed. Worth
	// it across a network; on one host it costs both sides CPU for
	// nothing.
	Compress bool
	// Settings are ClickHouse settings sent with every query, for what
	// the server's user profile does not set: 18.16 takes max_threads
	// from the physical cores it detects, and on some virtual machines
	// detects one.
	Settings map[string]any
}

// DefaultConfig is a server on this host, as its default user.
func DefaultConfig() Config {
	return Config{Addr: "127.0.0.1:9000", Database: "default", Username: "default"}
}

// Store is the ClickHouse flow store. It is safe for concurrent use, and
// InsertFlows runs in parallel (each call takes its own connection).
type Store struct {
	conn      driver.Conn
	committer *committer
	// chunkRows is about how many flows ScanFlows has the server sort at
	// once; tests make it small.
	chunkRows uint64
	// retainMu serialises Retain: two retentions at once would issue the
	// same mutations twice.
	retainMu sync.Mutex
}

var _ flowstore.Store = (*Store)(nil)

// The tables. Both are partitioned by day so that retention drops whole
// days.
//
// flows is sorted by minute first: a time range then reads only its
// granules. 18.16 cannot use a key expression such as
// intDiv(time_start, 60000000) for a condition on time_start, so the
// minute is a column of its own, and every query states it. Within a
// minute, flows of one exporter lie together (a channel is an exporter)
// and in time order (a page of the newest flows reads little).
//
// flows_5m holds the rollups, keyed as a series or a channel's chart
// selects them. SummingMergeTree adds up rows of the same key when it
// merges parts; queries still sum, since merging is eventual. The sums are
// UInt64 and wrap modulo 2^64 in merges and in sum() alike, which is what
// lets a failed insert take back its rollups with their two's complement
// (see InsertFlows); rows whose sums reach zero vanish in merges.
const (
	flowsSchema = `CREATE TABLE IF NOT EXISTS flows (
	day           UInt32,
	minute        Int64,
	time_start    Int64,
	time_end      Int64,
	seq           UInt64,
	exporter      String,
	in_if         UInt32,
	out_if        UInt32,
	ip_version    UInt8,
	src_addr      FixedString(16),
	dst_addr      FixedString(16),
	src_port      UInt16,
	dst_port      UInt16,
	proto         UInt8,
	tcp_flags     UInt8,
	bytes         UInt64,
	packets       UInt64,
	sampling_rate UInt32
) ENGINE = MergeTree
PARTITION BY day
ORDER BY (minute, exporter, time_start)`

	rollupSchema = `CREATE TABLE IF NOT EXISTS flows_5m (
	day        UInt32,
	bucket     Int64,
	exporter   String,
	in_if      UInt32,
	out_if     UInt32,
	proto      UInt8,
	ip_version UInt8,
	bytes      UInt64,
	packets    UInt64,
	flows      UInt64
) ENGINE = SummingMergeTree((bytes, packets, flows))
PARTITION BY day
ORDER BY (bucket, exporter, in_if, out_if, proto, ip_version)`
)

// Column lists. Inserts must name their columns: without a list 18.16
// gives the driver a block of no columns ("expected 0 arguments").
const (
	flowColumnList   = "day, minute, time_start, time_end, seq, exporter, in_if, out_if, ip_version, src_addr, dst_addr, src_port, dst_port, proto, tcp_flags, bytes, packets, sampling_rate"
	recordColumnList = "time_start, time_end, seq, exporter, in_if, out_if, ip_version, src_addr, dst_addr, src_port, dst_port, proto, tcp_flags, bytes, packets, sampling_rate"
	rollupColumnList = "day, bucket, exporter, in_if, out_if, proto, ip_version, bytes, packets, flows"
)

// Open connects to the server cfg names, creates the database if it is
// missing (as the DuckDB file is created on first start) and the tables.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Addr == "" {
		return nil, fmt.Errorf("clickhouse flow store: open: no server address: set host:port of ClickHouse's native protocol (usually 9000): %w", flowstore.ErrInvalid)
	}
	if cfg.Database == "" {
		cfg.Database = "default"
	}
	if !chconn.ValidDatabase(cfg.Database) {
		return nil, fmt.Errorf("clickhouse flow store: open: database name %q: use letters, digits and _ only: %w", cfg.Database, flowstore.ErrInvalid)
	}
	conn, err := chconn.Open(ctx, chconn.Options{Addr: cfg.Addr, Database: cfg.Database, Username: cfg.Username, Password: cfg.Password,
		TLS: cfg.TLS, Compress: cfg.Compress, Settings: cfg.Settings})
	if err != nil {
		return nil, fmt.Errorf("clickhouse flow store: %w", err)
	}
	for _, t := range []struct{ name, schema string }{{"flows", flowsSchema}, {"flows_5m", rollupSchema}} {
		if err := conn.Exec(ctx, t.schema); err != nil {
			conn.Close()
			return nil, fmt.Errorf("clickhouse flow store: open %s database %q: create table %s: %w", cfg.Addr, cfg.Database, t.name, err)
		}
	}
	return &Store{conn: conn, committer: newCommitter(), chunkRows: defaultChunkRows}, nil
}

// Close closes the connections.
func (s *Store) Close() error {
	if err := s.conn.Close(); err != nil {
		return fmt.Errorf("clickhouse flow store: close: %w", err)
	}
	return nil
}

// dayOf is the partition of a flow that started at us microseconds since
// the epoch: its UTC date as YYYYMMDD. Years outside 0–9999 (an exporter's
// clock gone wrong) share the first or last partition.
func dayOf(us int64) uint32 {
	y, m, d := time.UnixMicro(us).UTC().Date()
	switch {
	case y < 0:
		return 101 // 0000-01-01
	case y > 9999:
		return 99991231
	}
	return uint32(y*10000 + int(m)*100 + d)
}

// dayStart is when the day of partition d begins.
func dayStart(d uint32) time.Time {
	return time.Date(int(d/10000), time.Month(d/100%100), int(d%100), 0, 0, 0, 0, time.UTC)
}

const (
	minuteUS = int64(time.Minute / time.Microsecond)
	bucketUS = int64(flowstore.RollupInterval / time.Microsecond)
)

// floorDiv is a/b rounded down, so that times before the epoch fall in the
// minute or bucket they belong to.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func minuteOf(us int64) int64 { return floorDiv(us, minuteUS) }
func bucketOf(us int64) int64 { return floorDiv(us, bucketUS) * bucketUS }
