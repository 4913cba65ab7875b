package clickhouse

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/yagura/yagura/internal/flowstore"
)

// partition is one day of a table as system.parts sees it.
type partition struct {
	day         uint32
	rows, bytes int64
}

// partitions lists the days of table, oldest first.
func (s *Store) partitions(ctx context.Context, table string) ([]partition, error) {
	rows, err := s.conn.Query(ctx, "SELECT partition, sum(rows), sum(bytes_on_disk) FROM system.parts"+
		" WHERE database = currentDatabase() AND table = ? AND active GROUP BY partition", table)
	if err != nil {
		return nil, fmt.Errorf("list partitions of %s: %w", table, err)
	}
	defer rows.Close()
	var out []partition
	for rows.Next() {
		var name string
		var n, b uint64
		if err := rows.Scan(&name, &n, &b); err != nil {
			return nil, fmt.Errorf("list partitions of %s: %w", table, err)
		}
		day, err := strconv.ParseUint(name, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("list partitions of %s: partition %q is not a day: %w", table, name, err)
		}
		out = append(out, partition{day: uint32(day), rows: int64(n), bytes: int64(b)})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list partitions of %s: %w", table, err)
	}
	slices.SortFunc(out, func(a, b partition) int { return int(a.day) - int(b.day) })
	return out, nil
}

// dropDay drops a day's partition of table. The day is a number the
// server gave us, formatted as one, so it cannot carry SQL.
func (s *Store) dropDay(ctx context.Context, table string, day uint32) error {
	if err := s.conn.Exec(ctx, "ALTER TABLE "+table+" DROP PARTITION "+strconv.FormatUint(uint64(day), 10)); err != nil {
		return fmt.Errorf("drop day %d of %s: %w", day, table, err)
	}
	return nil
}

// dropBefore drops the days of table older than the day cut falls in.
func (s *Store) dropBefore(ctx context.Context, table string, cut time.Time) error {
	parts, err := s.partitions(ctx, table)
	if err != nil {
		return err
	}
	cutDay := dayOf(cut.UnixMicro())
	for _, p := range parts {
		if p.day >= cutDay {
			break
		}
		if err := s.dropDay(ctx, table, p.day); err != nil {
			return err
		}
	}
	return nil
}

// Retain drops whole days: the raw flows of the days before the one
// r.MaxAge's cut falls in, the rollups of the days before r.RollupMaxAge's
// cut, then the oldest days of raw flows until both tables fit in
// r.MaxBytes, keeping the newest day whatever its size.
//
// It keeps the rest of the day a cut falls in, up to a day more than asked:
// deleting part of a day is a mutation that rewrites all of that day's
// parts, which for flows is gigabytes, every time retention runs.
func (s *Store) Retain(ctx context.Context, r flowstore.Retention, now time.Time) error {
	s.retainMu.Lock()
	defer s.retainMu.Unlock()
	if r.MaxAge > 0 {
		cut := now.Add(-r.MaxAge)
		if err := s.dropBefore(ctx, "flows", cut); err != nil {
			return fmt.Errorf("clickhouse flow store: retain flows from %s on: %w", cut.UTC().Format(time.RFC3339), err)
		}
	}
	if r.RollupMaxAge > 0 {
		cut := now.Add(-r.RollupMaxAge)
		if err := s.dropBefore(ctx, "flows_5m", cut); err != nil {
			return fmt.Errorf("clickhouse flow store: retain rollups from %s on: %w", cut.UTC().Format(time.RFC3339), err)
		}
	}
	if r.MaxBytes > 0 {
		if err := s.retainSize(ctx, r.MaxBytes); err != nil {
			return fmt.Errorf("clickhouse flow store: retain %d bytes: %w", r.MaxBytes, err)
		}
	}
	return nil
}

func (s *Store) retainSize(ctx context.Context, maxBytes int64) error {
	parts, err := s.partitions(ctx, "flows")
	if err != nil {
		return err
	}
	rollups, err := s.partitions(ctx, "flows_5m")
	if err != nil {
		return err
	}
	var total int64
	for _, p := range slices.Concat(parts, rollups) {
		total += p.bytes
	}
	for len(parts) > 1 && total > maxBytes {
		if err := s.dropDay(ctx, "flows", parts[0].day); err != nil {
			return err
		}
		total -= parts[0].bytes
		parts = parts[1:]
	}
	return nil
}

// Stats reports what the store holds: the raw flows, and the space both
// tables take.
func (s *Store) Stats(ctx context.Context) (flowstore.Stats, error) {
	st := flowstore.Stats{Backend: "clickhouse"}
	parts, err := s.partitions(ctx, "flows")
	if err != nil {
		return st, fmt.Errorf("clickhouse flow store: stats: %w", err)
	}
	rollups, err := s.partitions(ctx, "flows_5m")
	if err != nil {
		return st, fmt.Errorf("clickhouse flow store: stats: %w", err)
	}
	for _, p := range parts {
		st.Flows += p.rows
		st.Bytes += p.bytes
	}
	for _, p := range rollups {
		st.Bytes += p.bytes
	}
	if st.Flows == 0 {
		return st, nil
	}
	// The oldest and newest flows are in the first and last days: reading
	// only those is much cheaper than min and max over the table. A day
	// listed may have been dropped since; the time is then zero.
	var oldest, newest int64
	err = s.conn.QueryRow(ctx, "SELECT (SELECT min(time_start) FROM flows WHERE day = ?), (SELECT max(time_start) FROM flows WHERE day = ?)",
		parts[0].day, parts[len(parts)-1].day).Scan(&oldest, &newest)
	if err != nil {
		return st, fmt.Errorf("clickhouse flow store: stats: oldest and newest flow: %w", err)
	}
	st.Oldest, st.Newest = time.UnixMicro(oldest).UTC(), time.UnixMicro(newest).UTC()
	return st, nil
}
