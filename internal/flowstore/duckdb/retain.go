package duckdb

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"

	"github.com/yagura/yagura/internal/flowstore"
)

// Retain removes what r does not keep, measured against now, and compacts
// the rollups of finished intervals.
//
//   - MaxAge drops every day table before the one now-MaxAge falls in,
//     and deletes that day's flows older than the cut, so what is kept is
//     exact. DuckDB only marks those rows; their row groups are freed when
//     a checkpoint finds them all deleted, which suits a day appended in
//     time order and trimmed from its start.
//   - RollupMaxAge deletes the rollup intervals that end at or before
//     now-RollupMaxAge, exactly (the rollups are small).
//   - MaxBytes drops the oldest day tables, one at a time with a
//     checkpoint after each (DuckDB frees a dropped table's blocks only
//     then), until the file's used blocks and write-ahead log fit. The
//     newest day is never dropped, and rollups are never dropped for size.
//
// The spool is compacted first, whatever its age, so that all of these
// act on the day tables alone. Inserts wait while it runs.
func (s *Store) Retain(ctx context.Context, r flowstore.Retention, now time.Time) error {
	s.ddl.Lock()
	defer s.ddl.Unlock()
	if err := s.compact(ctx, time.Now().Add(time.Hour)); err != nil {
		return fmt.Errorf("duckdb flow store: retain: %w", err)
	}
	dropped := false
	if r.MaxAge > 0 {
		cut := now.Add(-r.MaxAge).UnixMicro()
		cutDay := dayOf(cut)
		for _, d := range s.allDays() {
			if d > cutDay {
				break
			}
			if d < cutDay {
				if err := s.dropDay(ctx, d); err != nil {
					return err
				}
				dropped = true
				continue
			}
			if err := s.trimDay(ctx, d, cut); err != nil {
				return err
			}
		}
	}
	if r.RollupMaxAge > 0 {
		cut := now.Add(-r.RollupMaxAge).UnixMicro()
		if _, err := s.db.ExecContext(ctx, "DELETE FROM rollups WHERE bucket + ? <= ?", bucketMicro, cut); err != nil {
			return fmt.Errorf("duckdb flow store: retain: delete rollups before %s: %w", time.UnixMicro(cut).UTC().Format(time.RFC3339), err)
		}
	}
	if err := s.compactRollups(ctx); err != nil {
		return err
	}
	if r.MaxBytes > 0 {
		// Measure blocks, not a log that a checkpoint would fold away.
		if err := s.checkpoint(ctx); err != nil {
			return err
		}
		for {
			used, err := s.usedBytes(ctx)
			if err != nil {
				return err
			}
			hs := s.allDays()
			if used <= r.MaxBytes || len(hs) <= 1 {
				break
			}
			if err := s.dropDay(ctx, hs[0]); err != nil {
				return err
			}
			if err := s.checkpoint(ctx); err != nil {
				return err
			}
		}
	} else if dropped {
		return s.checkpoint(ctx)
	}
	return nil
}

func (s *Store) checkpoint(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("duckdb flow store: retain: checkpoint: %w", err)
	}
	return nil
}

func (s *Store) dropDay(ctx context.Context, h int64) error {
	if err := s.dropHours(ctx, h); err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, "DROP TABLE IF EXISTS "+tableName(h)); err != nil {
		return fmt.Errorf("duckdb flow store: retain: drop %s: %w", tableName(h), err)
	}
	s.mu.Lock()
	delete(s.days, h)
	fs := slices.Clone(s.spool[h])
	s.mu.Unlock()
	s.retire(fs) // none unless a compaction failed
	return nil
}

// compactRollups replaces the rows of each finished interval since the
// last compaction by one row per key. The interval of the newest rollup
// is still filling and waits for the next run; late flows for compacted
// intervals add rows that stay (queries sum them anyway).
func (s *Store) compactRollups(ctx context.Context) error {
	var from, until sql.NullInt64
	if err := s.db.QueryRowContext(ctx, "SELECT (SELECT max(compacted_until) FROM rollup_meta), (SELECT max(bucket) FROM rollups)").Scan(&from, &until); err != nil {
		return fmt.Errorf("duckdb flow store: compact rollups: %w", err)
	}
	if !until.Valid || (from.Valid && from.Int64 >= until.Int64) {
		return nil
	}
	lo := int64(-1 << 62)
	if from.Valid {
		lo = from.Int64
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("duckdb flow store: compact rollups: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	for _, st := range []struct {
		q    string
		args []any
	}{
		{`CREATE TEMP TABLE rollups_compact AS
		SELECT bucket, exporter, in_if, out_if, proto, ip_version,
			CAST(least(sum(bytes), 18446744073709551615) AS UBIGINT) AS bytes,
			CAST(least(sum(packets), 18446744073709551615) AS UBIGINT) AS packets,
			CAST(sum(flows) AS UBIGINT) AS flows
		FROM rollups WHERE bucket >= ? AND bucket < ?
		GROUP BY ALL`, []any{lo, until.Int64}},
		{`DELETE FROM rollups WHERE bucket >= ? AND bucket < ?`, []any{lo, until.Int64}},
		{`INSERT INTO rollups (` + rollupColumns + `) SELECT ` + rollupColumns + ` FROM rollups_compact`, nil},
		{`DROP TABLE rollups_compact`, nil},
		{`DELETE FROM rollup_meta`, nil},
		{`INSERT INTO rollup_meta VALUES (?)`, []any{until.Int64}},
	} {
		if _, err := tx.ExecContext(ctx, st.q, st.args...); err != nil {
			return fmt.Errorf("duckdb flow store: compact rollups: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("duckdb flow store: compact rollups: commit: %w", err)
	}
	return nil
}
