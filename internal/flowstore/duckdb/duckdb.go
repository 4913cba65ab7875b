// Package duckdb is the embedded flow store: a DuckDB file of its own in
// the data folder (not the event store's: flows arrive a thousand times
// faster and would starve its writer), needing no server.
//
// Flows land in a spool of Parquet files and are moved into the day
// tables a minute later (spool.go). Raw flows live in one table per UTC
// day of their TimeStart
// (flows_20260301). A time range reads only the days it covers, a listing
// sorts at most a day at a time, and retention drops whole tables, which
// frees their blocks at the next checkpoint (DuckDB never gives back the
// space of deleted rows of a large table). A day rather than an hour,
// measured: a top-N over a UNION ALL of 24 hour tables took twice the CPU
// of the same rows in one table (each branch builds and merges its own
// hash tables), and every table costs at least a 256 KiB block.
//
// The address columns are stored uncompressed: DuckDB would pick FSST for
// them, which costs CPU at every checkpoint (its analysis showed in the
// insert profile) and every scan (hashing src_addr over 2M flows took
// 31 ms uncompressed against 44 ms), for some disk.
//
// The 5-minute rollups live in one table, appended by every compaction
// of the spool, so rows for the same interval and key repeat until Retain
// compacts the finished intervals; queries sum them anyway, and add the
// rollups of the flows still in the spool.
//
// Cursor.Seq is the flow's seq column: a number given to each flow when
// it is stored, unique and kept through compaction and retention.
package duckdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	duck "github.com/duckdb/duckdb-go/v2"

	"github.com/yagura/yagura/internal/flowstore"
)

// Store is the DuckDB flow store.
type Store struct {
	db   *sql.DB
	conn *duck.Connector
	path string

	// ddl is held shared by every insert and exclusively by Retain, so
	// that no table is dropped under an appender and compaction does not
	// race appends to the rollups.
	ddl sync.RWMutex

	mu   sync.RWMutex // guards days
	days map[int64]bool
	// create serialises CREATE TABLE: two transactions creating the same
	// table conflict in DuckDB's catalog.
	create sync.Mutex

	// spool lists the spool files of each day (guarded by mu); view is
	// held shared while a statement lists them and starts, exclusively
	// while a compaction commits (see spool.go).
	spool      map[int64][]*spoolFile
	hours      map[hourKind]bool // hours of host sums: summed or not worth it (hosts.go)
	view       sync.RWMutex
	compacting sync.Mutex
	nextSeq    atomic.Int64
	rowsPool   sync.Pool // *[]spoolRow (spool.go)

	stopCompact context.CancelFunc
	compactDone chan struct{}
}

// Options tune the spool's compaction; the zero value is the default.
type Options struct {
	// CompactEvery is how often the compactor looks at the spool
	// (default 10 s).
	CompactEvery time.Duration
	// CompactAge is how long a spool file waits before compaction
	// (default 1 min): bursts are absorbed by the spool and moved into
	// the day tables after, in larger transactions.
	CompactAge time.Duration
}

var _ flowstore.Store = (*Store)(nil)

const (
	tablePrefix = "flows_"
	dayLayout   = "20060102"
	dayMicros   = int64(24 * time.Hour / time.Microsecond)
	bucketMicro = int64(flowstore.RollupInterval / time.Microsecond)
)

// flowColumns are the raw table's columns in appender order; the names
// are flowfilter.DefaultColumns' plus sampling_rate.
const flowColumns = "time_start, time_end, exporter, in_if, out_if, ip_version, src_addr, dst_addr, src_port, dst_port, proto, tcp_flags, bytes, packets, sampling_rate"

// No NOT NULL: the appender is the only writer and never appends a NULL,
// and each constraint is a check per value.
const flowTableDef = `(
	time_start    BIGINT,
	time_end      BIGINT,
	exporter      VARCHAR,
	in_if         UINTEGER,
	out_if        UINTEGER,
	ip_version    UTINYINT,
	src_addr      BLOB USING COMPRESSION uncompressed,
	dst_addr      BLOB USING COMPRESSION uncompressed,
	src_port      USMALLINT,
	dst_port      USMALLINT,
	proto         UTINYINT,
	tcp_flags     UTINYINT,
	bytes         UBIGINT,
	packets       UBIGINT,
	sampling_rate UINTEGER,
	seq           BIGINT
)`

const rollupColumns = "bucket, exporter, in_if, out_if, proto, ip_version, bytes, packets, flows"

const rollupTableDef = `CREATE TABLE IF NOT EXISTS rollups (
	bucket     BIGINT,
	exporter   VARCHAR,
	in_if      UINTEGER,
	out_if     UINTEGER,
	proto      UTINYINT,
	ip_version UTINYINT,
	bytes      UBIGINT,
	packets    UBIGINT,
	flows      UBIGINT
)`

// The rollups compacted so far: every interval before compacted_until has
// one row per key, except for late flows appended since.
const metaTableDef = `CREATE TABLE IF NOT EXISTS rollup_meta (compacted_until BIGINT)`

// Open opens (creating if needed) the flow store in the file at path,
// with its spool in the folder path+".spool", and starts its compactor.
func Open(ctx context.Context, path string) (*Store, error) {
	return OpenOptions(ctx, path, Options{})
}

// OpenOptions is Open with compaction settings.
func OpenOptions(ctx context.Context, path string, o Options) (*Store, error) {
	c, err := duck.NewConnector(path, nil)
	if err != nil {
		return nil, fmt.Errorf("duckdb flow store: open %s: %w", path, err)
	}
	db := sql.OpenDB(c)
	// Writers each take a connection for their transaction; keep them.
	db.SetMaxIdleConns(8)
	s := &Store{db: db, conn: c, path: path, days: map[int64]bool{}, spool: map[int64][]*spoolFile{}, hours: map[hourKind]bool{}}
	if err := s.init(ctx); err != nil {
		db.Close()
		c.Close()
		return nil, fmt.Errorf("duckdb flow store: open %s: %w", path, err)
	}
	if o.CompactEvery <= 0 {
		o.CompactEvery = 10 * time.Second
	}
	if o.CompactAge <= 0 {
		o.CompactAge = time.Minute
	}
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.stopCompact, s.compactDone = cancel, make(chan struct{})
	go s.compactLoop(cctx, o.CompactEvery, o.CompactAge)
	return s, nil
}

func (s *Store) init(ctx context.Context) error {
	for _, q := range []string{rollupTableDef, metaTableDef} {
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("create tables: %w", err)
		}
	}
	rows, err := s.db.QueryContext(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' AND table_name LIKE 'flows\_%' ESCAPE '\'`)
	if err != nil {
		return fmt.Errorf("list day tables: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return err
		}
		if d, ok := parseTable(name); ok {
			s.days[d] = true
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if err := s.loadHours(ctx); err != nil {
		return err
	}
	maxSeq, err := s.addSeq(ctx)
	if err != nil {
		return err
	}
	spoolMax, err := s.openSpool(ctx)
	if err != nil {
		return err
	}
	s.nextSeq.Store(max(maxSeq, spoolMax) + 1)
	return nil
}

// addSeq gives day tables made before the spool their seq column
// (numbered by rowid, as their cursors were) and returns the highest seq
// stored.
func (s *Store) addSeq(ctx context.Context) (int64, error) {
	maxSeq := int64(-1)
	for _, d := range s.allDays() {
		var has bool
		if err := s.db.QueryRowContext(ctx, "SELECT count(*) > 0 FROM information_schema.columns WHERE table_schema = 'main' AND table_name = ? AND column_name = 'seq'", tableName(d)).Scan(&has); err != nil {
			return 0, fmt.Errorf("columns of %s: %w", tableName(d), err)
		}
		if !has {
			if _, err := s.db.ExecContext(ctx, "ALTER TABLE "+tableName(d)+" ADD COLUMN seq BIGINT"); err != nil {
				return 0, fmt.Errorf("add seq to %s: %w", tableName(d), err)
			}
		}
		var m sql.NullInt64
		var nulls int64
		if err := s.db.QueryRowContext(ctx, "SELECT max(seq), count(*) - count(seq) FROM "+tableName(d)).Scan(&m, &nulls); err != nil {
			return 0, fmt.Errorf("max seq of %s: %w", tableName(d), err)
		}
		// Also after a crash between adding the column and numbering.
		if nulls > 0 {
			if _, err := s.db.ExecContext(ctx, "UPDATE "+tableName(d)+" SET seq = rowid WHERE seq IS NULL"); err != nil {
				return 0, fmt.Errorf("number the flows of %s: %w", tableName(d), err)
			}
			if err := s.db.QueryRowContext(ctx, "SELECT max(seq) FROM "+tableName(d)).Scan(&m); err != nil {
				return 0, fmt.Errorf("max seq of %s: %w", tableName(d), err)
			}
		}
		if m.Valid {
			maxSeq = max(maxSeq, m.Int64)
		}
	}
	return maxSeq, nil
}

// Close closes the store.
func (s *Store) Close() error {
	s.stopCompact()
	<-s.compactDone
	s.ddl.Lock()
	defer s.ddl.Unlock()
	return errors.Join(s.db.Close(), s.conn.Close())
}

// dayOf is the day (since the Unix epoch) of a time in microseconds.
func dayOf(us int64) int64 { return floorDiv(us, dayMicros) }

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func tableName(d int64) string {
	return tablePrefix + time.Unix(d*86400, 0).UTC().Format(dayLayout)
}

func parseTable(name string) (int64, bool) {
	s, ok := strings.CutPrefix(name, tablePrefix)
	if !ok || len(s) != len(dayLayout) {
		return 0, false
	}
	t, err := time.Parse(dayLayout, s)
	if err != nil {
		return 0, false
	}
	return floorDiv(t.Unix(), 86400), true
}

// ensureTables creates the day tables ds that do not exist yet.
func (s *Store) ensureTables(ctx context.Context, ds []int64) error {
	s.mu.RLock()
	missing := slices.DeleteFunc(slices.Clone(ds), func(d int64) bool { return s.days[d] })
	s.mu.RUnlock()
	if len(missing) == 0 {
		return nil
	}
	s.create.Lock()
	defer s.create.Unlock()
	for _, h := range missing {
		if _, err := s.db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS "+tableName(h)+" "+flowTableDef); err != nil {
			return fmt.Errorf("create table %s: %w", tableName(h), err)
		}
		s.mu.Lock()
		s.days[h] = true
		s.mu.Unlock()
	}
	return nil
}

// tables returns the days whose tables may hold flows that started in
// [since, until), oldest first.
func (s *Store) tables(since, until time.Time) []int64 {
	lo, hi := dayOf(since.UnixMicro()), dayOf(until.UnixMicro()-1)
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []int64
	for h := range s.days {
		if h >= lo && h <= hi {
			out = append(out, h)
		}
	}
	slices.Sort(out)
	return out
}

// dropped reports whether any of the days ds has been dropped since a
// query listed it: queries do not hold up Retain (an export may stream
// for minutes), so they cope with a table vanishing instead.
func (s *Store) dropped(ds []int64) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, d := range ds {
		if !s.days[d] {
			return true
		}
	}
	return false
}

func (s *Store) allDays() []int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]int64, 0, len(s.days))
	for h := range s.days {
		out = append(out, h)
	}
	slices.Sort(out)
	return out
}

// allColumns are a day table's columns, in the order a spool file has
// them.
const allColumns = flowColumns + ", seq"

// from is a FROM source over the day tables hs and their spool files.
// Conditions on it are pushed into each scan by DuckDB.
func from(hs []int64, files map[int64][]*spoolFile) string {
	var b strings.Builder
	b.WriteString("(")
	n := 0
	for _, h := range hs {
		if n > 0 {
			b.WriteString(" UNION ALL ")
		}
		b.WriteString("SELECT " + allColumns + " FROM " + tableName(h))
		n++
		if fs := files[h]; len(fs) > 0 {
			b.WriteString(" UNION ALL SELECT " + allColumns + " FROM " + parquetList(fs))
		}
	}
	b.WriteString(") f")
	return b.String()
}

// snapshot is what a statement reads besides the day tables: their
// spool files and summed hours, listed together.
type snapshot struct {
	files map[int64][]*spoolFile
	hours map[int64][2][]int64 // summed hours by day and kind
}

// from is a FROM source over the day tables hs and their spool files.
func (v *snapshot) from(hs []int64) string { return from(hs, v.files) }

// query runs a statement over the day tables hs, their spool files and
// host sums: build makes it from the snapshot. See spool.go: the
// statement runs in a transaction whose snapshot is taken, with the
// spool's list, under view's read lock; the statement itself runs after
// the lock is released (duckdb-go runs it whole inside QueryContext, and
// a compaction must not wait for a long one), with the files it reads
// kept from deletion until it is done.
func (s *Store) query(ctx context.Context, hs []int64, build func(v *snapshot) (string, []any), fn func(*sql.Rows) error) error {
	conn, v, done, err := s.begin(ctx, hs)
	if err != nil {
		return err
	}
	q, args := build(v)
	rows, err := conn.QueryContext(ctx, q, args...)
	if err != nil {
		done()
		return err
	}
	defer done()
	return eachRow(rows, fn)
}

// begin opens a read transaction on a connection of its own and takes
// its snapshot with the spool files and summed hours of the days hs, under
// view's read lock. done ends it and lets the files go.
func (s *Store) begin(ctx context.Context, hs []int64) (conn *sql.Conn, v *snapshot, done func(), err error) {
	conn, err = s.db.Conn(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	if _, err := conn.ExecContext(ctx, "BEGIN TRANSACTION"); err != nil {
		conn.Close()
		return nil, nil, nil, err
	}
	s.view.RLock()
	// DuckDB takes a transaction's snapshot when it first reads.
	_, err = conn.ExecContext(ctx, "SELECT 1 FROM rollup_meta LIMIT 0")
	v = &snapshot{files: s.acquire(hs), hours: map[int64][2][]int64{}}
	for _, d := range hs {
		v.hours[d] = s.summedHours(d)
	}
	s.view.RUnlock()
	done = func() {
		// Read-only: how it ends does not matter.
		conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK") //nolint:errcheck // read-only
		conn.Close()
		s.release(v.files)
	}
	if err != nil {
		done()
		return nil, nil, nil, err
	}
	return conn, v, done, nil
}

// Stats reports what the store holds.
func (s *Store) Stats(ctx context.Context) (flowstore.Stats, error) {
	st := flowstore.Stats{Backend: "duckdb"}
	b, err := s.usedBytes(ctx)
	if err != nil {
		return st, err
	}
	st.Bytes = b
	hs := s.allDays()
	if len(hs) == 0 {
		return st, nil
	}
	// One snapshot for the counts and the bounds, so that a compaction
	// does not count a flow twice.
	conn, v, done, err := s.begin(ctx, hs)
	if err != nil {
		return st, fmt.Errorf("duckdb flow store: stats: %w", err)
	}
	defer done()
	files := v.files
	// A count(*) of a table is read from its metadata (and of a Parquet
	// file from its footer); min and max scan one column of the oldest
	// and newest non-empty days only.
	var parts []string
	for _, h := range hs {
		parts = append(parts, "SELECT "+strconv.FormatInt(h, 10)+" AS h, count(*) AS n FROM "+tableName(h))
		if fs := files[h]; len(fs) > 0 {
			parts = append(parts, "SELECT "+strconv.FormatInt(h, 10)+" AS h, count(*) AS n FROM "+parquetList(fs))
		}
	}
	rows, err := conn.QueryContext(ctx, strings.Join(parts, " UNION ALL "))
	if err != nil {
		return st, fmt.Errorf("duckdb flow store: stats: %w", err)
	}
	var nonEmpty []int64
	for rows.Next() {
		var h, n int64
		if err := rows.Scan(&h, &n); err != nil {
			rows.Close()
			return st, fmt.Errorf("duckdb flow store: stats: %w", err)
		}
		st.Flows += n
		if n > 0 {
			nonEmpty = append(nonEmpty, h)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("duckdb flow store: stats: %w", err)
	}
	if len(nonEmpty) == 0 {
		return st, nil
	}
	slices.Sort(nonEmpty)
	first, last := nonEmpty[:1], nonEmpty[len(nonEmpty)-1:]
	var oldest, newest int64
	if err := conn.QueryRowContext(ctx, "SELECT (SELECT min(time_start) FROM "+from(first, files)+"), (SELECT max(time_start) FROM "+from(last, files)+")").Scan(&oldest, &newest); err != nil {
		return st, fmt.Errorf("duckdb flow store: stats: %w", err)
	}
	st.Oldest, st.Newest = time.UnixMicro(oldest).UTC(), time.UnixMicro(newest).UTC()
	return st, nil
}

// usedBytes is the file's used blocks plus the write-ahead log not yet
// checkpointed into them (free blocks are reused before the file grows)
// plus the spool.
func (s *Store) usedBytes(ctx context.Context) (int64, error) {
	var blockSize, used int64
	if err := s.db.QueryRowContext(ctx, "SELECT block_size, used_blocks FROM pragma_database_size() WHERE database_name = current_database()").Scan(&blockSize, &used); err != nil {
		return 0, fmt.Errorf("duckdb flow store: database size: %w", err)
	}
	var wal int64
	if fi, err := os.Stat(s.path + ".wal"); err == nil {
		wal = fi.Size()
	}
	return blockSize*used + wal + s.spoolBytes(), nil
}
