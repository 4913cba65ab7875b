package duckdb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	duck "github.com/duckdb/duckdb-go/v2"

	"github.com/yagura/yagura/internal/flowstore"
)

// rollupKey is what a rollup row aggregates by.
type rollupKey struct {
	bucket      int64
	exporter    netip.Addr
	inIf, outIf uint32
	proto, ipv  uint8
}

type rollupSum struct{ bytes, packets, flows uint64 }

// batch is one InsertFlows call, prepared for a transaction.
type batch struct {
	flows   []flowstore.Record
	dayIdx  []int64 // the day of each flow
	days    []int64 // the days of the batch, ascending
	rollups map[rollupKey]rollupSum
}

// InsertFlows stores flows: their rows as spool files (see spool.go) and
// their rollups in a transaction on a connection of its own, so that
// several collector workers write at once. All of the batch is stored or
// none, it is durable (the files are synced, DuckDB syncs its log at
// commit) and it is visible to queries when InsertFlows returns.
func (s *Store) InsertFlows(ctx context.Context, flows []flowstore.Record) error {
	if len(flows) == 0 {
		return nil
	}
	if err := s.write(ctx, prepare(flows)); err != nil {
		return fmt.Errorf("duckdb flow store: insert %d flows: %w", len(flows), err)
	}
	return nil
}

// prepare finds the days of a batch and sums its rollups before the
// transaction starts.
func prepare(flows []flowstore.Record) *batch {
	b := &batch{
		flows:   flows,
		dayIdx:  make([]int64, len(flows)),
		rollups: make(map[rollupKey]rollupSum, 256),
	}
	var last rollupKey
	var lastSum rollupSum
	haveLast := false
	for i := range flows {
		r := &flows[i]
		us := r.TimeStart.UnixMicro()
		d := dayOf(us)
		b.dayIdx[i] = d
		if n := len(b.days); (n == 0 || b.days[n-1] != d) && !slices.Contains(b.days, d) {
			b.days = append(b.days, d)
		}
		// Consecutive flows often share a rollup key (same exporter and
		// interval): sum them before touching the map.
		k := rollupKey{floorDiv(us, bucketMicro) * bucketMicro, r.Exporter, r.InIf, r.OutIf, r.Proto, r.IPVersion}
		if haveLast && k == last {
			lastSum.bytes += r.Bytes
			lastSum.packets += r.Packets
			lastSum.flows++
			continue
		}
		if haveLast {
			b.rollups[last] = addSum(b.rollups[last], lastSum)
		}
		last, lastSum, haveLast = k, rollupSum{r.Bytes, r.Packets, 1}, true
	}
	b.rollups[last] = addSum(b.rollups[last], lastSum)
	slices.Sort(b.days)
	return b
}

// write stores b: spool files first (not yet listed), then the
// rollups' transaction, then the files are renamed into place. A crash
// between the two leaves rollups for flows that were never listed, the
// one way they can disagree; never flows without their rollups.
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
	if err := s.writeRollups(ctx, b); err != nil {
		removeTmp(files)
		return err
	}
	return s.publish(files)
}

// writeRollups appends b's rollups in one transaction.
func (s *Store) writeRollups(ctx context.Context, b *batch) error {
	return s.tx(ctx, func(conn *sql.Conn) error {
		return conn.Raw(func(dc any) error { return appendRollups(dc.(driver.Conn), b) })
	}, nil)
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
	// Commits take turns here rather than inside DuckDB: a COMMIT waiting
	// there for another's lock has its calling thread spin on DuckDB's
	// task queue (seen in perf as a fifth of the CPU with two writers).
	s.commit.Lock()
	_, err = conn.ExecContext(ctx, "COMMIT")
	s.commit.Unlock()
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	done = true
	if committed != nil {
		committed()
	}
	return nil
}

func addSum(a, b rollupSum) rollupSum {
	return rollupSum{a.bytes + b.bytes, a.packets + b.packets, a.flows + b.flows}
}

func appendRollups(c driver.Conn, b *batch) error {
	a, err := duck.NewAppender(c, "", "main", "rollups")
	if err != nil {
		return fmt.Errorf("rollups appender: %w", err)
	}
	for k, v := range b.rollups {
		if err := a.AppendRow(k.bucket, flowstore.ExporterText(k.exporter), k.inIf, k.outIf, k.proto, k.ipv, v.bytes, v.packets, v.flows); err != nil {
			return errors.Join(fmt.Errorf("append rollup: %w", err), a.Close())
		}
	}
	if err := a.Close(); err != nil {
		return fmt.Errorf("append rollups: %w", err)
	}
	return nil
}
