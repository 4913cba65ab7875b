package clickhouse

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/flowstore/flowstoretest"
)

// The benchmarks, as the lead runs them (the top-N one with 100 million
// flows takes about ten minutes to load on two cores):
//
//	go test -run '^$' -bench . -benchtime 10x -timeout 60m ./internal/flowstore/clickhouse/
//	YAGURA_BENCH_FLOWS=100000000 go test -run '^$' -bench Top -benchtime 5x -timeout 120m ./internal/flowstore/clickhouse/

// BenchmarkInsert is sustained ingest in the batch sizes the collector
// writes, from one and several writers at once, into a growing table.
func BenchmarkInsert(b *testing.B) {
	for _, tc := range []struct{ writers, batch int }{{1, 10_000}, {2, 10_000}, {4, 10_000}, {4, 50_000}} {
		b.Run(fmt.Sprintf("writers=%d/batch=%d", tc.writers, tc.batch), func(b *testing.B) {
			flowstoretest.BenchInsert(b, openTest(b), tc.writers, tc.batch)
		})
	}
}

// BenchmarkTop10 loads YAGURA_BENCH_FLOWS flows (10 million unless set)
// over 24 hours on the server (untimed) and times the top 10 source
// addresses by bytes over them.
func BenchmarkTop10(b *testing.B) {
	n := flowstoretest.BenchFlows(b, 10_000_000)
	// A query runs on as many threads as the machine has cores, which
	// 18.16 does not detect on every virtual machine.
	s := openTestConfig(b, func(c *Config) { c.Settings = map[string]any{"max_threads": runtime.NumCPU()} })
	from := flowstoretest.BenchDay
	start := time.Now()
	if err := s.loadSynthetic(b.Context(), n, from, 24*time.Hour); err != nil {
		b.Fatal(err)
	}
	el := time.Since(start)
	b.Logf("loaded %d flows with their rollups on the server in %v (%.0f flows/s)", n, el.Round(time.Millisecond), float64(n)/el.Seconds())
	// Merges of the loaded parts would compete with the queries timed.
	start = time.Now()
	if err := s.waitMerges(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.Logf("background merges done %v later", time.Since(start).Round(time.Millisecond))
	st, err := s.Stats(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("store: %d flows in %d bytes on disk (%.1f bytes/flow)", st.Flows, st.Bytes, float64(st.Bytes)/float64(max(st.Flows, 1)))
	flowstoretest.BenchTop(b, s, from, from.Add(24*time.Hour), int64(n), nil)
}

// loadBlock is how many flows one INSERT … SELECT of loadSynthetic makes:
// the server holds a block's sort in memory.
const loadBlock = 10_000_000

// loadSynthetic makes n flows spread evenly over [from, from+span) on the
// server, INSERT … SELECT from numbers(), shaped like flowstoretest.Flows
// (its sources, destinations, protocols, ports, exporters and sizes, from
// a hash of the row number instead of its generator), then their rollups.
// It is thousands of times faster than sending them, which is what makes a
// top-N over 100 million flows a benchmark one can run.
func (s *Store) loadSynthetic(ctx context.Context, n int, from time.Time, span time.Duration) error {
	fromUS, spanUS := from.UnixMicro(), span.Microseconds()
	for off := 0; off < n; off += loadBlock {
		size := min(loadBlock, n-off)
		// Bits of h1 and h2 (two 64-bit hashes of the row number) are
		// cut into the fields, a range of bits each.
		err := s.conn.Exec(ctx, `INSERT INTO flows (`+flowColumnList+`)
SELECT
	toUInt32(toYYYYMMDD(toDateTime(toUInt32(intDiv(ts, 1000000)), 'UTC'))) AS day,
	intDiv(ts, 60000000) AS minute,
	ts AS time_start,
	ts + toInt64(intDiv(h2, 1496064000) % 60000000) AS time_end,
	toUInt64(i) AS seq,
	concat('10.255.0.', toString(1 + h2 % 4)) AS exporter,
	toUInt32(1 + intDiv(h2, 4) % 16) AS in_if,
	toUInt32(1 + intDiv(h2, 64) % 16) AS out_if,
	toUInt8(if(v6, 6, 4)) AS ip_version,
	toFixedString(concat(if(v6, unhex('20010DB800010000000000000000'), unhex('00000000000000000000FFFF0A01')),
		reinterpretAsString(toUInt16(intDiv(src, 256) + (src % 256) * 256))), 16) AS src_addr,
	toFixedString(concat(if(v6, unhex('20010DB800020000000000000000'), unhex('00000000000000000000FFFFC612')),
		reinterpretAsString(toUInt16(intDiv(dst, 256) + (dst % 256) * 256))), 16) AS dst_addr,
	toUInt16(if(proto IN (6, 17), 32768 + intDiv(h1, 26214400000) % 32768, 0)) AS src_port,
	toUInt16(if(proto IN (6, 17), [443, 80, 53, 22, 25, 123, 3389, 8080, 445, 993][1 + intDiv(h1, 858993459200000) % 10], 0)) AS dst_port,
	toUInt8(proto) AS proto,
	toUInt8(if(proto = 6, [2, 18, 24, 25, 27, 20][1 + intDiv(h1, 8589934592000000) % 6], 0)) AS tcp_flags,
	toUInt64(pkts * (40 + intDiv(h2, 1024000) % 1461)) AS bytes,
	toUInt64(pkts) AS packets,
	toUInt32(1) AS sampling_rate
FROM (
	SELECT i, h1, h2, ts, v6, src, dst, pkts,
		multiIf(p < 14, 6, p < 19, 17, v6, 58, 1) AS proto
	FROM (
		SELECT
			number + ? AS i,
			intHash64(i * 2) AS h1,
			intHash64(i * 2 + 1) AS h2,
			toInt64(?) + toInt64(intDiv(i * ?, ?)) AS ts,
			h1 % 20 = 0 AS v6,
			intDiv(h1, 20) % 65536 AS src,
			intDiv(h1, 1310720) % 1000 AS dst,
			intDiv(h1, 1310720000) % 20 AS p,
			1 + intDiv(h2, 1024) % 1000 AS pkts
		FROM numbers(?)
	)
)`, uint64(off), fromUS, uint64(spanUS), uint64(n), uint64(size))
		if err != nil {
			return fmt.Errorf("load flows %d to %d: %w", off, off+size, err)
		}
	}
	err := s.conn.Exec(ctx, `INSERT INTO flows_5m (`+rollupColumnList+`)
SELECT day, intDiv(time_start, 300000000) * 300000000 AS bucket, exporter, in_if, out_if, proto, ip_version,
	sum(bytes), sum(packets), count()
FROM flows
GROUP BY day, bucket, exporter, in_if, out_if, proto, ip_version`)
	if err != nil {
		return fmt.Errorf("load rollups: %w", err)
	}
	return nil
}

// waitMerges waits until the server merges no part of this database.
func (s *Store) waitMerges(ctx context.Context) error {
	for {
		var n uint64
		if err := s.conn.QueryRow(ctx, "SELECT count() FROM system.merges WHERE database = currentDatabase()").Scan(&n); err != nil {
			return fmt.Errorf("wait for merges: %w", err)
		}
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for merges: %w", ctx.Err())
		case <-time.After(time.Second):
		}
	}
}
