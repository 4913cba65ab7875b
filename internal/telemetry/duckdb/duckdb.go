// Package duckdb is the embedded telemetry backend: a DuckDB file in the
// data folder, needing no server.
//
// Events live in one table per UTC day (events_20261207). Retention then
// drops whole tables, which frees their blocks for reuse at once (DuckDB
// does not give back space from deleted rows of a large table), and a time
// range only reads the days it covers. A day's table stays in time order as
// events arrive, so DuckDB's min/max zone maps make the duplicate check on
// insert (an anti-join restricted to the batch's time span) cheap.
package duckdb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	duck "github.com/duckdb/duckdb-go/v2"

	"github.com/yagura/yagura/internal/telemetry"
)

// Store is the DuckDB telemetry store.
type Store struct {
	db   *sql.DB
	conn *duck.Connector
	path string

	mu   sync.Mutex // serialises writers: one appender, one stage table
	w    *sql.Conn  // the writer's own connection (the stage table is per connection)
	days map[string]bool
	// maxTime is the newest event time in each day's table, loaded on
	// first use; guarded by mu.
	maxTime map[string]time.Time

	daysMu sync.RWMutex // guards days for readers
}

var _ telemetry.Store = (*Store)(nil)

const dayLayout = "20060102"

const columns = "computer_id, id, type, severity, time, received_at, data"

const tableDef = `(
	computer_id VARCHAR NOT NULL,
	id          VARCHAR NOT NULL,
	type        VARCHAR NOT NULL,
	severity    VARCHAR NOT NULL,
	time        TIMESTAMP NOT NULL,
	received_at TIMESTAMP NOT NULL,
	data        VARCHAR NOT NULL
)`

// Open opens (creating if needed) the store in the file at path.
func Open(ctx context.Context, path string) (*Store, error) {
	c, err := duck.NewConnector(path, nil)
	if err != nil {
		return nil, fmt.Errorf("duckdb: open %s: %w", path, err)
	}
	db := sql.OpenDB(c)
	s := &Store{db: db, conn: c, path: path, days: map[string]bool{}, maxTime: map[string]time.Time{}}
	if err := s.init(ctx); err != nil {
		db.Close()
		c.Close()
		return nil, fmt.Errorf("duckdb: open %s: %w", path, err)
	}
	return s, nil
}

func (s *Store) init(ctx context.Context) error {
	rows, err := s.db.QueryContext(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' AND table_name LIKE 'events\_%' ESCAPE '\'`)
	if err != nil {
		return fmt.Errorf("list day tables: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return err
		}
		if day, ok := strings.CutPrefix(name, "events_"); ok {
			if _, err := time.Parse(dayLayout, day); err == nil {
				s.days[day] = true
			}
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	w, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	s.w = w
	if _, err := w.ExecContext(ctx, "CREATE TEMP TABLE stage "+tableDef); err != nil {
		return fmt.Errorf("create stage table: %w", err)
	}
	return nil
}

// Close closes the store.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	if s.w != nil {
		errs = append(errs, s.w.Close())
	}
	errs = append(errs, s.db.Close(), s.conn.Close())
	return errors.Join(errs...)
}

func dayOf(t time.Time) string { return t.UTC().Format(dayLayout) }

// InsertEvents stores events, skipping those already stored.
func (s *Store) InsertEvents(ctx context.Context, events []telemetry.Event) (int, error) {
	if len(events) == 0 {
		return 0, nil
	}
	for _, e := range events {
		if err := e.Validate(); err != nil {
			return 0, fmt.Errorf("duckdb: insert %d events: %w", len(events), err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.insert(ctx, events)
	if err != nil {
		return 0, fmt.Errorf("duckdb: insert %d events: %w", len(events), err)
	}
	return n, nil
}

type span struct{ min, max time.Time }

type key struct{ c, id string }

// insert stores events in two ways. An event newer than everything its
// day's table holds cannot be a duplicate of a stored one, so it is
// appended straight into the table — the common case, as events arrive
// about when they happen. Older ones (a resend, an agent back from offline,
// a skewed clock) go through a stage table and an anti-join restricted to
// their time span. Each part commits on its own: after a crash between
// them, the resent batch finds the committed part older than the newest
// stored and checks it.
func (s *Store) insert(ctx context.Context, events []telemetry.Event) (int, error) {
	seen := make(map[key]struct{}, len(events))
	fresh := map[string][]telemetry.Event{}
	var check []telemetry.Event
	for _, e := range events {
		k := key{e.ComputerID, e.ID}
		if _, dup := seen[k]; dup {
			continue // repeats within the batch: the first is kept
		}
		seen[k] = struct{}{}
		// Microseconds are what the table keeps: comparing a finer time
		// with a stored one would call a resent event newer than itself.
		e.Time = e.Time.UTC().Truncate(time.Microsecond)
		d := dayOf(e.Time)
		newest, err := s.newest(ctx, d)
		if err != nil {
			return 0, err
		}
		if e.Time.After(newest) {
			fresh[d] = append(fresh[d], e)
		} else {
			check = append(check, e)
		}
	}
	inserted := 0
	for d, evs := range fresh {
		if err := s.appendDay(d, evs); err != nil {
			// The appender may have committed part of the batch (it
			// flushes on its own every few hundred thousand rows): forget
			// the newest time, so the resend is checked against the table.
			delete(s.maxTime, d)
			return inserted, err
		}
		inserted += len(evs)
	}
	if len(check) > 0 {
		n, err := s.insertChecked(ctx, check)
		inserted += n
		if err != nil {
			return inserted, err
		}
	}
	return inserted, nil
}

// newest returns the newest event time stored in day d's table (zero when
// empty), creating the table if it is missing.
func (s *Store) newest(ctx context.Context, d string) (time.Time, error) {
	if t, ok := s.maxTime[d]; ok {
		return t, nil
	}
	if !s.hasDay(d) {
		if _, err := s.w.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS events_"+d+" "+tableDef); err != nil {
			return time.Time{}, fmt.Errorf("create table for %s: %w", d, err)
		}
		s.daysMu.Lock()
		s.days[d] = true
		s.daysMu.Unlock()
	}
	var t sql.NullTime
	if err := s.w.QueryRowContext(ctx, "SELECT max(time) FROM events_"+d).Scan(&t); err != nil {
		return time.Time{}, fmt.Errorf("newest event of %s: %w", d, err)
	}
	s.maxTime[d] = t.Time.UTC()
	return s.maxTime[d], nil
}

func (s *Store) appendDay(d string, evs []telemetry.Event) error {
	err := s.w.Raw(func(dc any) error {
		a, err := duck.NewAppender(dc.(driver.Conn), "", "main", "events_"+d)
		if err != nil {
			return fmt.Errorf("appender for %s: %w", d, err)
		}
		for _, e := range evs {
			if err := a.AppendRow(e.ComputerID, e.ID, e.Type, e.Severity, e.Time, e.ReceivedAt.UTC(), e.Data); err != nil {
				a.Close()
				return fmt.Errorf("append event %q: %w", e.ID, err)
			}
		}
		return a.Close()
	})
	if err != nil {
		return err
	}
	for _, e := range evs {
		if e.Time.After(s.maxTime[d]) {
			s.maxTime[d] = e.Time
		}
	}
	return nil
}

func (s *Store) insertChecked(ctx context.Context, events []telemetry.Event) (int, error) {
	spans := map[string]*span{}
	err := s.w.Raw(func(dc any) error {
		a, err := duck.NewAppender(dc.(driver.Conn), "temp", "main", "stage")
		if err != nil {
			return fmt.Errorf("stage appender: %w", err)
		}
		for _, e := range events {
			t := e.Time
			d := dayOf(t)
			sp := spans[d]
			if sp == nil {
				spans[d] = &span{t, t}
			} else {
				if t.Before(sp.min) {
					sp.min = t
				}
				if t.After(sp.max) {
					sp.max = t
				}
			}
			if err := a.AppendRow(e.ComputerID, e.ID, e.Type, e.Severity, t, e.ReceivedAt.UTC(), e.Data); err != nil {
				a.Close()
				return fmt.Errorf("stage event %q: %w", e.ID, err)
			}
		}
		return a.Close()
	})
	// The stage is emptied whatever happens, so a failed batch cannot leak
	// into the next.
	defer s.w.ExecContext(context.WithoutCancel(ctx), "DELETE FROM stage") //nolint:errcheck // best effort; the next insert's dedup still holds
	if err != nil {
		return 0, err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	days := make([]string, 0, len(spans))
	for d := range spans {
		days = append(days, d)
	}
	slices.Sort(days)
	inserted := 0
	for _, d := range days {
		sp := spans[d]
		// Nothing already stored: a resend carries the same times, so only
		// the batch's span of the day's table is read.
		res, err := tx.ExecContext(ctx, `INSERT INTO events_`+d+` (`+columns+`)
SELECT `+columns+` FROM stage s
WHERE s.time >= ? AND s.time <= ? AND NOT EXISTS (
	SELECT 1 FROM events_`+d+` e
	WHERE e.time >= ? AND e.time <= ? AND e.computer_id = s.computer_id AND e.id = s.id
)`, sp.min, sp.max, sp.min, sp.max)
		if err != nil {
			return 0, fmt.Errorf("insert into %s: %w", d, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return 0, err
		}
		inserted += int(n)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return inserted, nil
}

func (s *Store) hasDay(d string) bool {
	s.daysMu.RLock()
	defer s.daysMu.RUnlock()
	return s.days[d]
}

// tables returns the day tables that may hold events in [since, until).
func (s *Store) tables(since, until time.Time) []string {
	s.daysMu.RLock()
	defer s.daysMu.RUnlock()
	var out []string
	lo, hi := "", "99999999"
	if !since.IsZero() {
		lo = dayOf(since)
	}
	if !until.IsZero() {
		hi = dayOf(until.Add(-time.Microsecond))
	}
	for d := range s.days {
		if d >= lo && d <= hi {
			out = append(out, "events_"+d)
		}
	}
	slices.Sort(out)
	return out
}

// from returns the FROM source covering q's time range, or "" when no day
// table can hold a match.
func (s *Store) from(q telemetry.EventQuery) string {
	ts := s.tables(q.Since, q.Until)
	if len(ts) == 0 {
		return ""
	}
	parts := make([]string, len(ts))
	for i, t := range ts {
		parts[i] = "SELECT " + columns + " FROM " + t
	}
	return "(" + strings.Join(parts, " UNION ALL ") + ") ev"
}

func where(q telemetry.EventQuery, withCursor bool) (string, []any) {
	var conds []string
	var args []any
	in := func(col string, vals []string) {
		if len(vals) == 0 {
			return
		}
		conds = append(conds, col+" IN (?"+strings.Repeat(", ?", len(vals)-1)+")")
		for _, v := range vals {
			args = append(args, v)
		}
	}
	if !q.Since.IsZero() {
		conds = append(conds, "time >= ?")
		args = append(args, q.Since.UTC())
	}
	if !q.Until.IsZero() {
		conds = append(conds, "time < ?")
		args = append(args, q.Until.UTC())
	}
	in("computer_id", q.ComputerIDs)
	in("type", q.Types)
	in("severity", q.Severities)
	if q.Text != "" {
		// contains() takes the text literally: no LIKE wildcards to escape.
		conds = append(conds, "(contains(lower(type), lower(?)) OR contains(lower(data), lower(?)))")
		args = append(args, q.Text, q.Text)
	}
	if withCursor && q.After != nil {
		c := q.After
		conds = append(conds, "(time < ? OR (time = ? AND (computer_id > ? OR (computer_id = ? AND id > ?))))")
		t := c.Time.UTC()
		args = append(args, t, t, c.ComputerID, c.ComputerID, c.ID)
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

// ScanEvents streams matching events, newest first, a day's table at a
// time from the newest: a page reads only the days it needs, and an export
// of a month never sorts more than a day.
func (s *Store) ScanEvents(ctx context.Context, q telemetry.EventQuery, fn func(telemetry.Event) error) error {
	if err := q.Validate(); err != nil {
		return fmt.Errorf("duckdb: scan events: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("duckdb: scan events: %w", err)
	}
	tables := s.tables(q.Since, q.Until)
	if q.After != nil {
		// Days after the cursor's hold nothing the page wants.
		last := "events_" + dayOf(q.After.Time)
		tables = slices.DeleteFunc(tables, func(t string) bool { return t > last })
	}
	w, wargs := where(q, true)
	left := q.Limit
	for i := len(tables) - 1; i >= 0; i-- {
		query := "SELECT " + columns + " FROM " + tables[i] + w + " ORDER BY time DESC, computer_id, id"
		args := slices.Clone(wargs)
		if q.Limit > 0 {
			query += " LIMIT ?"
			args = append(args, left)
		}
		n, err := s.scanTable(ctx, query, args, fn)
		if err != nil {
			return err
		}
		if q.Limit > 0 {
			if left -= n; left <= 0 {
				return nil
			}
		}
	}
	return nil
}

func (s *Store) scanTable(ctx context.Context, query string, args []any, fn func(telemetry.Event) error) (int, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return 0, fmt.Errorf("duckdb: scan events: %w", err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var e telemetry.Event
		if err := rows.Scan(&e.ComputerID, &e.ID, &e.Type, &e.Severity, &e.Time, &e.ReceivedAt, &e.Data); err != nil {
			return n, fmt.Errorf("duckdb: scan events: %w", err)
		}
		e.Time, e.ReceivedAt = e.Time.UTC(), e.ReceivedAt.UTC()
		n++
		if err := fn(e); err != nil {
			return n, err
		}
	}
	if err := rows.Err(); err != nil {
		return n, fmt.Errorf("duckdb: scan events: %w", err)
	}
	return n, nil
}

// CountEvents counts matching events.
func (s *Store) CountEvents(ctx context.Context, q telemetry.EventQuery) (int64, error) {
	q.Limit, q.After = 0, nil
	if err := q.Validate(); err != nil {
		return 0, fmt.Errorf("duckdb: count events: %w", err)
	}
	from := s.from(q)
	if from == "" {
		return 0, nil
	}
	w, args := where(q, false)
	var n int64
	if err := s.db.QueryRowContext(ctx, "SELECT count(*) FROM "+from+w, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("duckdb: count events: %w", err)
	}
	return n, nil
}

// TopEventTypes returns the n most frequent types.
func (s *Store) TopEventTypes(ctx context.Context, q telemetry.EventQuery, n int) ([]telemetry.TypeCount, error) {
	q.Limit, q.After = 0, nil
	if n < 0 {
		return nil, fmt.Errorf("duckdb: top event types: negative n %d: %w", n, telemetry.ErrInvalid)
	}
	if err := q.Validate(); err != nil {
		return nil, fmt.Errorf("duckdb: top event types: %w", err)
	}
	from := s.from(q)
	if from == "" || n == 0 {
		return nil, nil
	}
	w, args := where(q, false)
	rows, err := s.db.QueryContext(ctx, "SELECT type, count(*) AS n FROM "+from+w+" GROUP BY type ORDER BY n DESC, type LIMIT ?", append(args, n)...)
	if err != nil {
		return nil, fmt.Errorf("duckdb: top event types: %w", err)
	}
	defer rows.Close()
	var out []telemetry.TypeCount
	for rows.Next() {
		var tc telemetry.TypeCount
		if err := rows.Scan(&tc.Type, &tc.Count); err != nil {
			return nil, fmt.Errorf("duckdb: top event types: %w", err)
		}
		out = append(out, tc)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("duckdb: top event types: %w", err)
	}
	return out, nil
}

// Retain drops days older than r.MaxAge (and the older part of the day the
// cut falls in), then whole oldest days until the file's used blocks fit in
// r.MaxBytes. The newest day is never dropped for size.
func (s *Store) Retain(ctx context.Context, r telemetry.Retention, now time.Time) (telemetry.Retained, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	res := telemetry.Retained{}
	if r.MaxAge > 0 {
		cut := now.Add(-r.MaxAge).UTC()
		res.Before = cut
		cutDay := dayOf(cut)
		for _, d := range s.sortedDays() {
			if d > cutDay {
				break
			}
			if d < cutDay {
				n, err := s.dropDay(ctx, d)
				if err != nil {
					return res, err
				}
				res.Events += n
				continue
			}
			r, err := s.w.ExecContext(ctx, "DELETE FROM events_"+d+" WHERE time < ?", cut)
			if err != nil {
				return res, fmt.Errorf("duckdb: retain: delete before %s: %w", cut.Format(time.RFC3339), err)
			}
			n, _ := r.RowsAffected()
			res.Events += n
		}
	}
	if r.MaxBytes > 0 {
		// Measure blocks, not a log that a checkpoint would fold away.
		if _, err := s.w.ExecContext(ctx, "CHECKPOINT"); err != nil {
			return res, fmt.Errorf("duckdb: retain: checkpoint: %w", err)
		}
		for {
			used, err := s.usedBytes(ctx)
			if err != nil {
				return res, err
			}
			days := s.sortedDays()
			if used <= r.MaxBytes || len(days) <= 1 {
				break
			}
			n, err := s.dropDay(ctx, days[0])
			if err != nil {
				return res, err
			}
			res.Events += n
			if t, err := time.Parse(dayLayout, days[0]); err == nil {
				res.Before = t.Add(24 * time.Hour)
			}
		}
	}
	if res.Events > 0 {
		if _, err := s.w.ExecContext(ctx, "CHECKPOINT"); err != nil {
			return res, fmt.Errorf("duckdb: retain: checkpoint: %w", err)
		}
	}
	return res, nil
}

func (s *Store) sortedDays() []string {
	s.daysMu.RLock()
	defer s.daysMu.RUnlock()
	out := make([]string, 0, len(s.days))
	for d := range s.days {
		out = append(out, d)
	}
	slices.Sort(out)
	return out
}

func (s *Store) dropDay(ctx context.Context, d string) (int64, error) {
	var n int64
	if err := s.w.QueryRowContext(ctx, "SELECT count(*) FROM events_"+d).Scan(&n); err != nil {
		return 0, fmt.Errorf("duckdb: retain: count %s: %w", d, err)
	}
	if _, err := s.w.ExecContext(ctx, "DROP TABLE events_"+d); err != nil {
		return 0, fmt.Errorf("duckdb: retain: drop %s: %w", d, err)
	}
	s.daysMu.Lock()
	delete(s.days, d)
	s.daysMu.Unlock()
	delete(s.maxTime, d)
	// Dropped blocks are freed only at a checkpoint; size retention measures
	// after each drop.
	if _, err := s.w.ExecContext(ctx, "CHECKPOINT"); err != nil {
		return n, fmt.Errorf("duckdb: retain: checkpoint: %w", err)
	}
	return n, nil
}

// usedBytes is the file's used blocks plus the write-ahead log not yet
// checkpointed into them (free blocks are reused before the file grows).
func (s *Store) usedBytes(ctx context.Context) (int64, error) {
	var blockSize, used int64
	if err := s.db.QueryRowContext(ctx, "SELECT block_size, used_blocks FROM pragma_database_size() WHERE database_name = current_database()").Scan(&blockSize, &used); err != nil {
		return 0, fmt.Errorf("duckdb: database size: %w", err)
	}
	var wal int64
	if fi, err := os.Stat(s.path + ".wal"); err == nil {
		wal = fi.Size()
	}
	return blockSize*used + wal, nil
}

// Stats reports what the store holds.
func (s *Store) Stats(ctx context.Context) (telemetry.Stats, error) {
	st := telemetry.Stats{Backend: "duckdb"}
	b, err := s.usedBytes(ctx)
	if err != nil {
		return st, err
	}
	st.Bytes = b
	from := s.from(telemetry.EventQuery{})
	if from == "" {
		return st, nil
	}
	var oldest, newest sql.NullTime
	if err := s.db.QueryRowContext(ctx, "SELECT count(*), min(time), max(time) FROM "+from).Scan(&st.Events, &oldest, &newest); err != nil {
		return st, fmt.Errorf("duckdb: stats: %w", err)
	}
	if oldest.Valid {
		st.Oldest, st.Newest = oldest.Time.UTC(), newest.Time.UTC()
	}
	return st, nil
}
