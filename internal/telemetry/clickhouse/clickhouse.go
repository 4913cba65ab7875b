// Package clickhouse is the scale-out telemetry backend: events in a
// ClickHouse server, spoken to with the native protocol.
//
// It keeps to what ClickHouse 18.16 (Debian's package, which CI tests
// against) understands: no DateTime64, TTL, Map, LowCardinality or
// server-side query parameters. Times are Int64 microseconds since the Unix
// epoch (so they round-trip at the precision DuckDB keeps), and a UInt32 day
// (YYYYMMDD, UTC) partitions the table, so that age and size retention drop
// whole days with ALTER TABLE … DROP PARTITION.
//
// Only the manager's server packages import it; it must stay out of the
// agent.
package clickhouse

import (
	"context"
	"crypto/tls"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/ext"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/yagura/yagura/internal/chconn"
	"github.com/yagura/yagura/internal/telemetry"
)

// Config says which server and database to use.
type Config struct {
	Addr     string // host:port of the native protocol, usually 9000 (9440 with TLS)
	Database string // must exist; the store creates its table in it
	Username string
	Password string
	TLS      *tls.Config // nil: plain TCP
}

// DefaultConfig is a server on this host, as its default user.
func DefaultConfig() Config {
	return Config{Addr: "127.0.0.1:9000", Database: "default", Username: "default"}
}

// Store is the ClickHouse telemetry store. It is safe for concurrent use.
type Store struct {
	conn driver.Conn

	// insertMu serialises InsertEvents, so that its check for stored
	// events and its insert are not interleaved with another's within this
	// process. Several managers writing to one server are not serialised:
	// two of them storing the same resent batch at the same instant may both
	// store it. ReplacingMergeTree removes such copies (same time, computer
	// and ID) when it merges parts, eventually and not before a query sees
	// them; a resend normally reaches the manager that lost its ack.
	insertMu sync.Mutex
	// retainMu serialises Retain. It is not insertMu: retention may wait
	// for a mutation for long, and inserts must not queue behind it.
	retainMu sync.Mutex
}

var _ telemetry.Store = (*Store)(nil)

// schema is the events table. The sort key puts a day's events in time
// order, so a time range reads only its granules and the duplicate check
// reads only the batch's span. Severity and type are plain Strings:
// LowCardinality would compress them better but needs an experimental
// setting on 18.16.
const schema = `CREATE TABLE IF NOT EXISTS events (
	day         UInt32,
	time_us     Int64,
	computer_id String,
	id          String,
	type        String,
	severity    String,
	received_us Int64,
	data        String
) ENGINE = ReplacingMergeTree
PARTITION BY day
ORDER BY (time_us, computer_id, id)`

const (
	insertColumns = "day, time_us, computer_id, id, type, severity, received_us, data"
	selectColumns = "time_us, computer_id, id, type, severity, received_us, data"
	// partsOfEvents selects the active parts of the events table.
	partsOfEvents = "system.parts WHERE database = currentDatabase() AND table = 'events' AND active"
)

// Open connects to the server cfg names and creates the events table if it
// is missing.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Addr == "" {
		return nil, fmt.Errorf("clickhouse: open: no address: %w", telemetry.ErrInvalid)
	}
	if cfg.Database == "" {
		cfg.Database = "default"
	}
	if !chconn.ValidDatabase(cfg.Database) {
		return nil, fmt.Errorf("clickhouse: open: database name %q: letters, digits and _ only: %w", cfg.Database, telemetry.ErrInvalid)
	}
	// The database is created on first start, as the DuckDB file is.
	conn, err := chconn.Open(ctx, chconn.Options{Addr: cfg.Addr, Database: cfg.Database, Username: cfg.Username, Password: cfg.Password,
		// Event data is JSON, which LZ4 shrinks several times on the wire.
		TLS: cfg.TLS, Compress: true})
	if err != nil {
		return nil, fmt.Errorf("clickhouse: %w", err)
	}
	if err := conn.Exec(ctx, schema); err != nil {
		conn.Close()
		return nil, fmt.Errorf("clickhouse: open %s database %q: create events table: %w", cfg.Addr, cfg.Database, err)
	}
	return &Store{conn: conn}, nil
}

// Close closes the connections.
func (s *Store) Close() error {
	if err := s.conn.Close(); err != nil {
		return fmt.Errorf("clickhouse: close: %w", err)
	}
	return nil
}

// key identifies an event.
type key struct{ computer, id string }

// span is the time range of a batch's events within one day.
type span struct{ min, max int64 }

// maxSpans bounds how many per-day time ranges the duplicate check lists
// before it reads the batch's whole range instead (a batch from a computer
// whose clock jumps about), keeping the query well under max_query_size.
const maxSpans = 64

// InsertEvents stores the events not already stored, keeping the first of
// repeats within the batch. A resend carries the same times as the
// original, so the check for stored events reads only the batch's time span
// in each of its days: an event resent with a time outside that span (its
// sender changed it) is stored again.
//
// When it returns nil, ClickHouse has written the events to parts on disk;
// whether they survive a power loss is as the server is configured (18.16
// does not fsync inserted parts).
func (s *Store) InsertEvents(ctx context.Context, events []telemetry.Event) (int, error) {
	if len(events) == 0 {
		return 0, nil
	}
	for _, e := range events {
		if err := e.Validate(); err != nil {
			return 0, fmt.Errorf("clickhouse: insert %d events: %w", len(events), err)
		}
	}
	s.insertMu.Lock()
	defer s.insertMu.Unlock()
	n, err := s.insert(ctx, events)
	if err != nil {
		return 0, fmt.Errorf("clickhouse: insert %d events: %w", len(events), err)
	}
	return n, nil
}

// row is an event as stored.
type row struct {
	day      uint32
	timeUS   int64
	e        *telemetry.Event
	received int64
}

func (s *Store) insert(ctx context.Context, events []telemetry.Event) (int, error) {
	// The first of repeats within the batch is kept.
	seen := make(map[key]struct{}, len(events))
	rows := make([]row, 0, len(events))
	spans := map[uint32]*span{}
	for i := range events {
		e := &events[i]
		k := key{e.ComputerID, e.ID}
		if _, ok := seen[k]; ok {
			continue
		}
		seen[k] = struct{}{}
		r := row{day: dayOf(e.Time), timeUS: e.Time.UnixMicro(), e: e, received: e.ReceivedAt.UnixMicro()}
		rows = append(rows, r)
		if sp := spans[r.day]; sp == nil {
			spans[r.day] = &span{r.timeUS, r.timeUS}
		} else {
			sp.min, sp.max = min(sp.min, r.timeUS), max(sp.max, r.timeUS)
		}
	}
	stored, err := s.stored(ctx, seen, spans)
	if err != nil {
		return 0, err
	}
	if len(stored) > 0 {
		rows = slices.DeleteFunc(rows, func(r row) bool {
			_, ok := stored[key{r.e.ComputerID, r.e.ID}]
			return ok
		})
	}
	if len(rows) == 0 {
		return 0, nil
	}
	// Newer servers refuse an insert block touching more than 100
	// partitions (max_partitions_per_insert_block); a batch that does
	// (an agent's clock gone wrong) is sent in several blocks. Should a
	// later one fail, the resend stores what the earlier ones did not.
	const maxDays = 100
	if len(spans) <= maxDays {
		return len(rows), s.send(ctx, rows)
	}
	slices.SortStableFunc(rows, func(a, b row) int { return int(a.day) - int(b.day) })
	start, days := 0, 0
	for i := range rows {
		if i > 0 && rows[i].day != rows[i-1].day {
			days++
			if days == maxDays {
				if err := s.send(ctx, rows[start:i]); err != nil {
					return 0, err
				}
				start, days = i, 0
			}
		}
	}
	return len(rows), s.send(ctx, rows[start:])
}

// stored returns which of keys are stored with a time within spans.
func (s *Store) stored(ctx context.Context, keys map[key]struct{}, spans map[uint32]*span) (map[key]struct{}, error) {
	// The keys go as external data: a query listing 10,000 of them would
	// pass the server's max_query_size.
	batch, err := ext.NewTable("batch", ext.Column("computer_id", "String"), ext.Column("id", "String"))
	if err != nil {
		return nil, err
	}
	for k := range keys {
		if err := batch.Append(k.computer, k.id); err != nil {
			return nil, err
		}
	}
	var conds []string
	var args []any
	if len(spans) <= maxSpans {
		for day, sp := range spans {
			conds = append(conds, "(day = ? AND time_us >= ? AND time_us <= ?)")
			args = append(args, day, sp.min, sp.max)
		}
	} else {
		lo, hi := int64(0), int64(0)
		first := true
		for _, sp := range spans {
			if first {
				lo, hi, first = sp.min, sp.max, false
			}
			lo, hi = min(lo, sp.min), max(hi, sp.max)
		}
		conds = append(conds, "(time_us >= ? AND time_us <= ?)")
		args = append(args, lo, hi)
	}
	query := "SELECT computer_id, id FROM events WHERE (" + strings.Join(conds, " OR ") +
		") AND (computer_id, id) IN (SELECT computer_id, id FROM batch)"
	rows, err := s.conn.Query(clickhouse.Context(ctx, clickhouse.WithExternalTable(batch)), query, args...)
	if err != nil {
		return nil, fmt.Errorf("look for stored events: %w", err)
	}
	defer rows.Close()
	found := map[key]struct{}{}
	for rows.Next() {
		var k key
		if err := rows.Scan(&k.computer, &k.id); err != nil {
			return nil, fmt.Errorf("look for stored events: %w", err)
		}
		found[k] = struct{}{}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look for stored events: %w", err)
	}
	return found, nil
}

// send inserts rows in one block, column by column.
func (s *Store) send(ctx context.Context, rows []row) error {
	n := len(rows)
	var (
		days      = make([]uint32, n)
		times     = make([]int64, n)
		computers = make([]string, n)
		ids       = make([]string, n)
		types     = make([]string, n)
		sevs      = make([]string, n)
		received  = make([]int64, n)
		data      = make([]string, n)
	)
	for i, r := range rows {
		days[i], times[i], received[i] = r.day, r.timeUS, r.received
		computers[i], ids[i], types[i], sevs[i], data[i] = r.e.ComputerID, r.e.ID, r.e.Type, r.e.Severity, r.e.Data
	}
	// The column list is needed: without it 18.16 gives the driver a block
	// of no columns ("expected 0 arguments").
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO events ("+insertColumns+")")
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	defer batch.Close()
	for i, col := range []any{days, times, computers, ids, types, sevs, received, data} {
		if err := batch.Column(i).Append(col); err != nil {
			return fmt.Errorf("column %d: %w", i, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}

// dayOf is the partition of an event at t: its UTC date as YYYYMMDD. Years
// outside 0–9999 (clocks gone wrong) share the first or last partition.
func dayOf(t time.Time) uint32 {
	y, m, d := t.UTC().Date()
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

// where returns the conditions q sets, with their arguments. The driver
// binds arguments by quoting them into the query: no caller's text is
// pasted in.
func where(q telemetry.EventQuery, withCursor bool) (string, []any) {
	var conds []string
	var args []any
	cond := func(c string, a ...any) {
		conds = append(conds, c)
		args = append(args, a...)
	}
	in := func(col string, vals []string) {
		if len(vals) == 0 {
			return
		}
		cond(col+" IN (?"+strings.Repeat(", ?", len(vals)-1)+")", anys(vals)...)
	}
	// Times in queries are truncated to microseconds like stored ones, so
	// that an event's own time selects it. The day conditions let the
	// server skip whole partitions without reading their indexes.
	if !q.Since.IsZero() {
		us := q.Since.UnixMicro()
		cond("day >= ? AND time_us >= ?", dayOf(time.UnixMicro(us)), us)
	}
	if !q.Until.IsZero() {
		us := q.Until.UnixMicro()
		cond("day <= ? AND time_us < ?", dayOf(time.UnixMicro(us-1)), us)
	}
	in("computer_id", q.ComputerIDs)
	in("type", q.Types)
	in("severity", q.Severities)
	if q.Text != "" {
		// positionCaseInsensitive folds ASCII letters only and compares
		// other bytes as they are, as the query's Text says; it has no
		// wildcards to escape.
		cond("(positionCaseInsensitive(type, ?) > 0 OR positionCaseInsensitive(data, ?) > 0)", q.Text, q.Text)
	}
	if withCursor && q.After != nil {
		c := q.After
		us := c.Time.UnixMicro()
		cond("day <= ? AND time_us <= ? AND (time_us < ? OR (computer_id > ? OR (computer_id = ? AND id > ?)))",
			dayOf(c.Time), us, us, c.ComputerID, c.ComputerID, c.ID)
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

func anys(vals []string) []any {
	out := make([]any, len(vals))
	for i, v := range vals {
		out[i] = v
	}
	return out
}

// ScanEvents streams the events q selects, newest first.
func (s *Store) ScanEvents(ctx context.Context, q telemetry.EventQuery, fn func(telemetry.Event) error) error {
	if err := q.Validate(); err != nil {
		return fmt.Errorf("clickhouse: scan events: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("clickhouse: scan events: %w", err)
	}
	w, args := where(q, true)
	if q.Limit == 0 {
		return s.scanByDay(ctx, w, args, fn)
	}
	if q.Limit > 0 {
		// 18.16 sorts by reading every column of every matching row,
		// whatever the limit (later versions read in key order): a page of
		// the newest 100 of 10 million events took over a second. So first
		// find the time of the page's last event, then read whole rows from
		// that time on, which the sort key narrows to about a page.
		from, ok, err := s.pageStart(ctx, q, w, args)
		if err != nil {
			return fmt.Errorf("clickhouse: scan events: %w", err)
		}
		if !ok {
			return nil
		}
		w, args = and(w, args, "day >= ? AND time_us >= ?", dayOf(time.UnixMicro(from)), from)
	}
	query := "SELECT " + selectColumns + " FROM events" + w + " ORDER BY time_us DESC, computer_id, id LIMIT ?"
	return s.stream(ctx, query, append(args, q.Limit), fn)
}

// scanByDay streams everything w selects a day at a time, newest day
// first: the server sorts one day's events at a time, never the whole range
// (an export of a month).
func (s *Store) scanByDay(ctx context.Context, w string, args []any, fn func(telemetry.Event) error) error {
	rows, err := s.conn.Query(ctx, "SELECT DISTINCT day FROM events"+w+" ORDER BY day DESC", args...)
	if err != nil {
		return fmt.Errorf("clickhouse: scan events: days: %w", err)
	}
	var days []uint32
	for rows.Next() {
		var d uint32
		if err := rows.Scan(&d); err != nil {
			rows.Close()
			return fmt.Errorf("clickhouse: scan events: days: %w", err)
		}
		days = append(days, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("clickhouse: scan events: days: %w", err)
	}
	for _, d := range days {
		dw, dargs := and(w, slices.Clone(args), "day = ?", d)
		if err := s.stream(ctx, "SELECT "+selectColumns+" FROM events"+dw+" ORDER BY time_us DESC, computer_id, id", dargs, fn); err != nil {
			return err
		}
	}
	return nil
}

// stream runs query and hands each event to fn.
func (s *Store) stream(ctx context.Context, query string, args []any, fn func(telemetry.Event) error) error {
	// Closing rows reads the rest of the result; cancelling first makes
	// the server stop sending it when fn stops the scan early.
	ctx, cancel := context.WithCancel(ctx)
	rows, err := s.conn.Query(ctx, query, args...)
	if err != nil {
		cancel()
		return fmt.Errorf("clickhouse: scan events: %w", err)
	}
	defer func() {
		cancel()
		rows.Close()
	}()
	for rows.Next() {
		var e telemetry.Event
		var t, r int64
		if err := rows.Scan(&t, &e.ComputerID, &e.ID, &e.Type, &e.Severity, &r, &e.Data); err != nil {
			return fmt.Errorf("clickhouse: scan events: %w", err)
		}
		e.Time, e.ReceivedAt = time.UnixMicro(t).UTC(), time.UnixMicro(r).UTC()
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("clickhouse: scan events: %w", err)
	}
	return nil
}

// pageWindows are how far back from its anchor pageStart looks for a page
// of events, in turn, before it looks at all times.
var pageWindows = []time.Duration{
	time.Minute, 10 * time.Minute, time.Hour, 6 * time.Hour, 24 * time.Hour,
	7 * 24 * time.Hour, 30 * 24 * time.Hour, 365 * 24 * time.Hour,
}

// pageStart returns the time of the oldest of the q.Limit newest events
// that the conditions w select, and false if they select none.
//
// Sorting even times alone reads every matching row, about 0.4 s for 10
// million on two cores; but the table is sorted by time, so a condition on
// time reads only the granules it covers. pageStart therefore looks back
// from the page's anchor (the cursor, Until, or now) over longer and longer
// windows until one holds a whole page or reaches back near Since or the
// oldest event, when it reads everything; since each window is several
// times the last, the misses cost less than the final look.
func (s *Store) pageStart(ctx context.Context, q telemetry.EventQuery, w string, args []any) (int64, bool, error) {
	anchor := time.Now()
	switch {
	case q.After != nil:
		anchor = q.After.Time
	case !q.Until.IsZero():
		anchor = q.Until
	}
	floor := q.Since // no window need reach before it; zero: unknown yet
	for i := 0; ; i++ {
		ww, wargs := w, slices.Clip(args)
		all := i == len(pageWindows)
		if !all {
			lo := anchor.Add(-pageWindows[i])
			// A window reaching back most of the way to the floor costs
			// about as much as reading everything, which a miss would
			// then do again.
			all = !floor.IsZero() && !lo.After(floor.Add(anchor.Sub(floor)/4))
			if !all {
				ww, wargs = and(ww, wargs, "day >= ? AND time_us >= ?", dayOf(lo), lo.UnixMicro())
			}
		}
		var n uint64
		var oldest int64
		err := s.conn.QueryRow(ctx, "SELECT count(), min(time_us) FROM (SELECT time_us FROM events"+ww+" ORDER BY time_us DESC LIMIT ?)",
			append(wargs, q.Limit)...).Scan(&n, &oldest)
		if err != nil {
			return 0, false, fmt.Errorf("find the page: %w", err)
		}
		if n == uint64(q.Limit) || all {
			return oldest, n > 0, nil
		}
		if i == 0 {
			// A window reaching back before the oldest day reads
			// everything, as the last look does; do that at most once.
			parts, err := s.partitions(ctx)
			if err != nil {
				return 0, false, fmt.Errorf("find the page: %w", err)
			}
			if len(parts) == 0 {
				return 0, false, nil
			}
			var first int64
			if err := s.conn.QueryRow(ctx, "SELECT min(time_us) FROM events WHERE day = ?", parts[0].day).Scan(&first); err != nil {
				return 0, false, fmt.Errorf("find the page: oldest event: %w", err)
			}
			if t := time.UnixMicro(first); floor.IsZero() || t.After(floor) {
				floor = t
			}
		}
	}
}

// and adds a condition with its arguments to a WHERE clause.
func and(w string, args []any, cond string, condArgs ...any) (string, []any) {
	if w == "" {
		w = " WHERE " + cond
	} else {
		w += " AND " + cond
	}
	return w, append(args, condArgs...)
}

// CountEvents counts the events q selects.
func (s *Store) CountEvents(ctx context.Context, q telemetry.EventQuery) (int64, error) {
	q.Limit, q.After = 0, nil
	if err := q.Validate(); err != nil {
		return 0, fmt.Errorf("clickhouse: count events: %w", err)
	}
	w, args := where(q, false)
	var n uint64
	if err := s.conn.QueryRow(ctx, "SELECT count() FROM events"+w, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("clickhouse: count events: %w", err)
	}
	return int64(n), nil
}

// TopEventTypes returns the n most frequent types of the events q selects.
func (s *Store) TopEventTypes(ctx context.Context, q telemetry.EventQuery, n int) ([]telemetry.TypeCount, error) {
	q.Limit, q.After = 0, nil
	if n < 0 {
		return nil, fmt.Errorf("clickhouse: top event types: negative n %d: %w", n, telemetry.ErrInvalid)
	}
	if err := q.Validate(); err != nil {
		return nil, fmt.Errorf("clickhouse: top event types: %w", err)
	}
	if n == 0 {
		return nil, nil
	}
	w, args := where(q, false)
	rows, err := s.conn.Query(ctx, "SELECT type, count() AS n FROM events"+w+" GROUP BY type ORDER BY n DESC, type LIMIT ?", append(args, n)...)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: top event types: %w", err)
	}
	defer rows.Close()
	var out []telemetry.TypeCount
	for rows.Next() {
		var typ string
		var c uint64
		if err := rows.Scan(&typ, &c); err != nil {
			return nil, fmt.Errorf("clickhouse: top event types: %w", err)
		}
		out = append(out, telemetry.TypeCount{Type: typ, Count: int64(c)})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("clickhouse: top event types: %w", err)
	}
	return out, nil
}

// partition is one day of events as system.parts sees it.
type partition struct {
	day         uint32
	rows, bytes int64
}

func (s *Store) partitions(ctx context.Context) ([]partition, error) {
	rows, err := s.conn.Query(ctx, "SELECT partition, sum(rows), sum(bytes_on_disk) FROM "+partsOfEvents+" GROUP BY partition")
	if err != nil {
		return nil, fmt.Errorf("list partitions: %w", err)
	}
	defer rows.Close()
	var out []partition
	for rows.Next() {
		var name string
		var n, b uint64
		if err := rows.Scan(&name, &n, &b); err != nil {
			return nil, fmt.Errorf("list partitions: %w", err)
		}
		day, err := strconv.ParseUint(name, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("list partitions: partition %q is not a day: %w", name, err)
		}
		out = append(out, partition{day: uint32(day), rows: int64(n), bytes: int64(b)})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list partitions: %w", err)
	}
	slices.SortFunc(out, func(a, b partition) int { return int(a.day) - int(b.day) })
	return out, nil
}

// dropDay drops a day's partition. The day is a number the server gave us,
// formatted as one, so it cannot carry SQL.
func (s *Store) dropDay(ctx context.Context, day uint32) error {
	if err := s.conn.Exec(ctx, "ALTER TABLE events DROP PARTITION "+strconv.FormatUint(uint64(day), 10)); err != nil {
		return fmt.Errorf("drop day %d: %w", day, err)
	}
	return nil
}

// Retain drops the days older than r.MaxAge and deletes the older events of
// the day the cut falls in, then drops whole oldest days until the table's
// parts fit in r.MaxBytes. The newest day is never dropped for size.
//
// Deleting part of a day is a mutation, which rewrites that day's parts in
// the background; Retain waits for it. Events inserted while Retain runs may
// escape the count it reports.
func (s *Store) Retain(ctx context.Context, r telemetry.Retention, now time.Time) (telemetry.Retained, error) {
	s.retainMu.Lock()
	defer s.retainMu.Unlock()
	res := telemetry.Retained{}
	if r.MaxAge > 0 {
		cut := now.Add(-r.MaxAge).UTC()
		res.Before = cut
		n, err := s.retainAge(ctx, cut)
		res.Events += n
		if err != nil {
			return res, fmt.Errorf("clickhouse: retain events before %s: %w", cut.Format(time.RFC3339), err)
		}
	}
	if r.MaxBytes > 0 {
		parts, err := s.partitions(ctx)
		if err != nil {
			return res, fmt.Errorf("clickhouse: retain %d bytes: %w", r.MaxBytes, err)
		}
		var total int64
		for _, p := range parts {
			total += p.bytes
		}
		for len(parts) > 1 && total > r.MaxBytes {
			p := parts[0]
			if err := s.dropDay(ctx, p.day); err != nil {
				return res, fmt.Errorf("clickhouse: retain %d bytes: %w", r.MaxBytes, err)
			}
			res.Events += p.rows
			res.Before = dayStart(p.day).AddDate(0, 0, 1)
			total -= p.bytes
			parts = parts[1:]
		}
	}
	return res, nil
}

func (s *Store) retainAge(ctx context.Context, cut time.Time) (int64, error) {
	cutDay := dayOf(cut)
	parts, err := s.partitions(ctx)
	if err != nil {
		return 0, err
	}
	var removed int64
	for _, p := range parts {
		if p.day >= cutDay {
			break
		}
		if err := s.dropDay(ctx, p.day); err != nil {
			return removed, err
		}
		removed += p.rows
	}
	cutUS := cut.UnixMicro()
	var n uint64
	if err := s.conn.QueryRow(ctx, "SELECT count() FROM events WHERE day = ? AND time_us < ?", cutDay, cutUS).Scan(&n); err != nil {
		return removed, fmt.Errorf("count events of day %d: %w", cutDay, err)
	}
	if n == 0 {
		return removed, nil
	}
	if err := s.conn.Exec(ctx, "ALTER TABLE events DELETE WHERE day = ? AND time_us < ?", cutDay, cutUS); err != nil {
		return removed, fmt.Errorf("delete events of day %d: %w", cutDay, err)
	}
	if err := s.waitMutations(ctx); err != nil {
		return removed, fmt.Errorf("delete events of day %d: %w", cutDay, err)
	}
	return removed + int64(n), nil
}

// waitMutations waits until the events table has no mutation left to do.
// 18.16 has no mutations_sync setting to make ALTER … DELETE wait itself.
func (s *Store) waitMutations(ctx context.Context) error {
	delay := 10 * time.Millisecond
	for {
		var pending uint64
		if err := s.conn.QueryRow(ctx, "SELECT count() FROM system.mutations WHERE database = currentDatabase() AND table = 'events' AND NOT is_done").Scan(&pending); err != nil {
			return fmt.Errorf("wait for mutation: %w", err)
		}
		if pending == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for mutation: %w", ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

// Stats reports what the store holds.
func (s *Store) Stats(ctx context.Context) (telemetry.Stats, error) {
	st := telemetry.Stats{Backend: "clickhouse"}
	var bytes uint64
	if err := s.conn.QueryRow(ctx, "SELECT sum(bytes_on_disk) FROM "+partsOfEvents).Scan(&bytes); err != nil {
		return st, fmt.Errorf("clickhouse: stats: %w", err)
	}
	st.Bytes = int64(bytes)
	var n uint64
	var oldest, newest int64
	if err := s.conn.QueryRow(ctx, "SELECT count(), min(time_us), max(time_us) FROM events").Scan(&n, &oldest, &newest); err != nil {
		return st, fmt.Errorf("clickhouse: stats: %w", err)
	}
	st.Events = int64(n)
	if n > 0 {
		st.Oldest, st.Newest = time.UnixMicro(oldest).UTC(), time.UnixMicro(newest).UTC()
	}
	return st, nil
}
