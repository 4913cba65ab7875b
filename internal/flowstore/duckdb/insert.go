package duckdb

import (
	"context"
	"database/sql"
	"fmt"
	"slices"

	"github.com/yagura/yagura/internal/flowstore"
)

// batch is one InsertFlows call, prepared for the spool.
type batch struct {
	flows  []flowstore.Record
	dayIdx []int64 // the day of each flow
	days   []int64 // the days of the batch, ascending
}

// InsertFlows stores flows as spool files (see spool.go), which DuckDB
// does not take part in, so several collector workers write at once. All
// of the batch is stored or none, it is durable (the files are synced)
// and it is visible to queries when InsertFlows returns. Its rollups are
// summed from the spool by queries until the compactor moves the flows
// into the day tables and their rollups into the rollups table, in one
// transaction.
func (s *Store) InsertFlows(ctx context.Context, flows []flowstore.Record) error {
	if len(flows) == 0 {
		return nil
	}
	if err := s.write(ctx, prepare(flows)); err != nil {
		return fmt.Errorf("duckdb flow store: insert %d flows: %w", len(flows), err)
	}
	return nil
}

// prepare finds the days of a batch.
func prepare(flows []flowstore.Record) *batch {
	b := &batch{flows: flows, dayIdx: make([]int64, len(flows))}
	for i := range flows {
		d := dayOf(flows[i].TimeStart.UnixMicro())
		b.dayIdx[i] = d
		if n := len(b.days); (n == 0 || b.days[n-1] != d) && !slices.Contains(b.days, d) {
			b.days = append(b.days, d)
		}
	}
	slices.Sort(b.days)
	return b
}

// write stores b as spool files, written as .tmp and renamed into place
// once all are synced.
func (s *Store) write(ctx context.Context, b *batch) error {
	s.ddl.RLock()
	defer s.ddl.RUnlock()
	// The day tables exist before any of their flows can be queried:
	// queries find a day's spool files through its table.
	if err := s.ensureTables(ctx, b.days); err != nil {
		return err
	}
	first := s.nextSeq.Add(int64(len(b.flows))) - int64(len(b.flows))
	files, err := s.writeSpool(b, first)
	if err != nil {
		return err
	}
	return s.publish(files)
}

// tx runs fn in a transaction on a connection of its own and commits it,
// holding view exclusively around the COMMIT and calling committed
// before releasing it when committed is not nil (see compactFiles).
func (s *Store) tx(ctx context.Context, fn func(*sql.Conn) error, committed func()) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN TRANSACTION"); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	done := false
	defer func() {
		if !done {
			// Without cancellation: a cancelled context must not leave the
			// connection inside the transaction for its next user.
			conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK") //nolint:errcheck // the transaction's error is what matters
		}
	}()
	if err := fn(conn); err != nil {
		return err
	}
	if committed != nil {
		s.view.Lock()
		defer s.view.Unlock()
	}
	// No two of these run at once: compaction and summing hold
	// compacting, retention holds ddl exclusively.
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	done = true
	if committed != nil {
		committed()
	}
	return nil
}
