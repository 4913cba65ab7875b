package duckdb

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/flowfilter"

	"github.com/yagura/yagura/internal/flowstore/flowstoretest"
)

func benchStore(b *testing.B) *Store {
	b.Helper()
	s, err := Open(b.Context(), filepath.Join(b.TempDir(), "flows.duckdb"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// BenchmarkInsert is sustained InsertFlows from parallel collector
// workers, in the batch sizes they send.
func BenchmarkInsert(b *testing.B) {
	for _, batch := range []int{10_000, 50_000} {
		for _, writers := range []int{1, 2, 4} {
			b.Run(fmt.Sprintf("batch=%d/writers=%d", batch, writers), func(b *testing.B) {
				flowstoretest.BenchInsert(b, benchStore(b), writers, batch)
			})
		}
	}
}

// load fills the store with n flows over 24 hours from day, in SQL: the
// shape of flowstoretest.Flows (65,536 sources in 10.1.0.0/16 and 5 %
// IPv6, 1,000 destinations, 70 % TCP, 25 % UDP, 5 % ICMP, ten services,
// four exporters, sixteen interfaces), from hashes of the row number.
//
// It writes the day tables directly, which only compaction does otherwise,
// so it holds off the compactor meanwhile: summing an hour whose rows are
// not committed yet would mark it summed without them.
func load(ctx context.Context, s *Store, n int64, day time.Time) error {
	s.compacting.Lock()
	defer s.compacting.Unlock()
	step := int64(24*time.Hour/time.Microsecond) / n
	base := day.UnixMicro()
	var hs []int64
	for h := dayOf(base); h <= dayOf(base+dayMicros-1); h++ {
		hs = append(hs, h)
	}
	if err := s.ensureTables(ctx, hs); err != nil {
		return err
	}
	for _, h := range hs {
		// Rows i whose time_start = base + i*step falls in day h.
		lo := max(0, (h*dayMicros-base+step-1)/step)
		hi := min(n, ((h+1)*dayMicros-base+step-1)/step)
		if lo >= hi {
			continue
		}
		q := fmt.Sprintf(`INSERT INTO %s (%s, seq)
WITH r AS (SELECT i, hash(i) AS a, hash(i + 1000000000000) AS c FROM range(%d, %d) t(i)),
x AS (SELECT i, a, c, a %% 20 = 0 AS v6, (a >> 8) %% 65536 AS src, (a >> 24) %% 1000 AS dst, (a >> 40) %% 20 AS p FROM r)
SELECT %d + i * %d AS time_start,
	%d + i * %d + (c %% 60000000)::BIGINT AS time_end,
	'10.255.0.' || (1 + (c >> 32) %% 4) AS exporter,
	(1 + (c >> 8) %% 16)::UINTEGER, (1 + (c >> 12) %% 16)::UINTEGER,
	CASE WHEN v6 THEN 6 ELSE 4 END::UTINYINT,
	unhex((CASE WHEN v6 THEN '20010db800010000000000000000' ELSE '00000000000000000000ffff0a01' END) || printf('%%04x', src)),
	unhex((CASE WHEN v6 THEN '20010db800020000000000000000' ELSE '00000000000000000000ffffc612' END) || printf('%%04x', dst)),
	CASE WHEN p < 19 THEN 32768 + (c >> 16) %% 32768 ELSE 0 END::USMALLINT,
	CASE WHEN p < 19 THEN [443, 80, 53, 22, 25, 123, 3389, 8080, 445, 993][(1 + (c >> 36) %% 10)::BIGINT] ELSE 0 END::USMALLINT,
	CASE WHEN p < 14 THEN 6 WHEN p < 19 THEN 17 WHEN v6 THEN 58 ELSE 1 END::UTINYINT,
	CASE WHEN p < 14 THEN 24 ELSE 0 END::UTINYINT,
	((1 + (c >> 40) %% 1000) * (40 + (c >> 50) %% 1461))::UBIGINT,
	(1 + (c >> 40) %% 1000)::UBIGINT,
	1::UINTEGER,
	i
FROM x`, tableName(h), flowColumns, lo, hi, base, step, base, step)
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("load %s: %w", tableName(h), err)
		}
	}
	_, err := s.db.ExecContext(ctx, "CHECKPOINT")
	return err
}

// BenchmarkTop100M is the top 10 sources by bytes over a day holding
// YAGURA_BENCH_FLOWS flows (default 10,000,000; the figure is for
// 100,000,000).
func BenchmarkTop100M(b *testing.B) {
	n := flowstoretest.BenchFlows(b, 10_000_000)
	s := benchStore(b)
	start := time.Now()
	if err := load(b.Context(), s, int64(n), flowstoretest.BenchDay); err != nil {
		b.Fatal(err)
	}
	el := time.Since(start)
	b.Logf("loaded %d flows in %v (%.0f flows/s)", n, el.Round(time.Millisecond), float64(n)/el.Seconds())
	start = time.Now()
	if err := s.Compact(b.Context()); err != nil {
		b.Fatal(err)
	}
	el = time.Since(start)
	b.Logf("summed the 24 hours' sources and destinations in %v (%.0f flows/s)", el.Round(time.Millisecond), float64(n)/el.Seconds())
	since, until := flowstoretest.BenchDay, flowstoretest.BenchDay.Add(24*time.Hour)
	// From the host sums, and from the raw flows (a filter that matches
	// every flow keeps Top off the sums).
	b.Run("sums", func(b *testing.B) { flowstoretest.BenchTop(b, s, since, until, int64(n), nil) })
	all, err := flowfilter.Parse("bytes > 0 or bytes = 0")
	if err != nil {
		b.Fatal(err)
	}
	b.Run("raw", func(b *testing.B) { flowstoretest.BenchTop(b, s, since, until, int64(n), all) })
}

// BenchmarkInsertCompacted is InsertFlows from two writers of 50,000-flow
// batches plus the compaction of what they wrote into the day tables:
// the rate the store sustains when the compactor must keep up.
func BenchmarkInsertCompacted(b *testing.B) {
	s := benchStore(b)
	flowstoretest.BenchInsert(b, s, 2, 50_000)
	b.StartTimer()
	if err := s.Compact(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*2*50_000)/b.Elapsed().Seconds(), "flows/s")
}
