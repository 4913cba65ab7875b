package clickhouse

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/yagura/yagura/internal/flowfilter"
	"github.com/yagura/yagura/internal/flowstore"
	"github.com/yagura/yagura/internal/flowstore/flowstoretest"
	"github.com/yagura/yagura/internal/testch"
)

var testDay = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

func openTest(tb testing.TB) *Store {
	tb.Helper()
	return openTestConfig(tb, func(*Config) {})
}

// openTestConfig opens a store in a fresh database with the configuration
// mod makes.
func openTestConfig(tb testing.TB, mod func(*Config)) *Store {
	tb.Helper()
	db := testch.Start(tb)
	cfg := Config{Addr: db.Addr, Database: db.Name, Username: "default"}
	mod(&cfg)
	s, err := Open(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("close: %v", err)
		}
	})
	return s
}

func seriesSum(t *testing.T, s *Store, q flowstore.Query, m flowstore.Measure) uint64 {
	t.Helper()
	ps, err := s.Series(t.Context(), flowstore.SeriesQuery{Query: q, Measure: m, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var sum uint64
	for _, p := range ps {
		sum += p.Value
	}
	return sum
}

func count(t *testing.T, s *Store, query string, args ...any) uint64 {
	t.Helper()
	var n uint64
	if err := s.conn.QueryRow(t.Context(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// TestFailedInsertTakesBackRollups: when the raw flows cannot be stored,
// the rollups already inserted are cancelled by their two's complement:
// charts do not count the flows, and the rows vanish when parts merge.
func TestFailedInsertTakesBackRollups(t *testing.T) {
	s := openTest(t)
	q := flowstore.Query{Since: testDay, Until: testDay.Add(24 * time.Hour)}
	kept := flowstoretest.Flows(500, testDay, time.Hour, 1)
	if err := s.InsertFlows(t.Context(), kept); err != nil {
		t.Fatal(err)
	}
	wantBytes := seriesSum(t, s, q, flowstore.Bytes)

	// Sums that wrap past 2^64 come back too.
	lost := flowstoretest.Flows(300, testDay.Add(30*time.Minute), time.Hour, 2)
	lost[0].Bytes = 1<<64 - 1
	if err := s.conn.Exec(t.Context(), "RENAME TABLE flows TO flows_away"); err != nil {
		t.Fatal(err)
	}
	if err := s.InsertFlows(t.Context(), lost); err == nil {
		t.Fatal("insert without a flows table succeeded")
	} else {
		t.Logf("insert failed as it should: %v", err)
	}
	if err := s.conn.Exec(t.Context(), "RENAME TABLE flows_away TO flows"); err != nil {
		t.Fatal(err)
	}
	for _, m := range []flowstore.Measure{flowstore.Bytes, flowstore.Flows} {
		want := wantBytes
		if m == flowstore.Flows {
			want = 500
		}
		if got := seriesSum(t, s, q, m); got != want {
			t.Errorf("series of %s after a failed insert: %d, want %d", m, got, want)
		}
	}
	if err := s.conn.Exec(t.Context(), "OPTIMIZE TABLE flows_5m FINAL"); err != nil {
		t.Fatal(err)
	}
	if got := seriesSum(t, s, q, flowstore.Bytes); got != wantBytes {
		t.Errorf("series of bytes after merging: %d, want %d", got, wantBytes)
	}
	// What is left of the cancelled rows merges away; the kept flows'
	// rows stay.
	rows := count(t, s, "SELECT count() FROM flows_5m")
	keys := count(t, s, "SELECT count() FROM (SELECT DISTINCT bucket, exporter, in_if, out_if, proto, ip_version FROM flows_5m WHERE flows > 0)")
	if rows != keys {
		t.Errorf("%d rollup rows after merging, want the %d of the kept flows", rows, keys)
	}
}

// TestQueriesReadOnlyTheirRange: 18.16 cannot derive conditions on the
// sort key's minute from time_start; the store states them, so a query
// over a few minutes of a day reads only those granules.
func TestQueriesReadOnlyTheirRange(t *testing.T) {
	s := openTest(t)
	const n = 200_000
	rs := flowstoretest.Flows(n, testDay, 24*time.Hour, 3)
	if err := s.InsertFlows(t.Context(), rs); err != nil {
		t.Fatal(err)
	}
	if err := s.conn.Exec(t.Context(), "OPTIMIZE TABLE flows FINAL"); err != nil {
		t.Fatal(err)
	}
	// Ten minutes hold about 1,400 flows; reading more than 4 granules
	// (of 8,192 rows) would mean scanning by time_start alone.
	ctx := clickhouse.Context(t.Context(), clickhouse.WithSettings(clickhouse.Settings{"max_rows_to_read": 4 * 8192}))
	since := testDay.Add(13 * time.Hour)
	q := flowstore.Query{Since: since, Until: since.Add(10 * time.Minute), Filter: mustParse(t, "proto tcp or proto udp or proto icmp or ipv6")}
	res, err := s.Top(ctx, flowstore.TopQuery{Query: q, By: []flowstore.Key{flowstore.KeySrcIP}, OrderBy: flowstore.Bytes, Limit: 10})
	if err != nil {
		t.Fatalf("top over ten minutes: %v", err)
	}
	if res.Total.Flows < 1000 || res.Total.Flows > 1800 {
		t.Errorf("ten minutes hold %d flows, want about 1,400", res.Total.Flows)
	}
	if _, err := s.Series(ctx, flowstore.SeriesQuery{Query: q, Measure: flowstore.Bytes, Interval: flowstore.RollupInterval}); err != nil {
		t.Errorf("series over ten minutes: %v", err)
	}
	var listed int
	err = s.ScanFlows(ctx, flowstore.ListQuery{Query: flowstore.Query{Since: testDay, Until: since}, Limit: 100}, func(flowstore.Record, flowstore.Cursor) error {
		listed++
		return nil
	})
	if err != nil || listed != 100 {
		t.Errorf("newest page before %s: %d flows, %v", since, listed, err)
	}
}

// TestScanInChunks: a listing streams chunk after chunk of minutes, newest
// first, across days, whatever the chunk size.
func TestScanInChunks(t *testing.T) {
	s := openTest(t)
	rs := flowstoretest.Flows(2000, testDay.Add(-45*time.Minute), 90*time.Minute, 4)
	if err := s.InsertFlows(t.Context(), rs); err != nil {
		t.Fatal(err)
	}
	q := flowstore.Query{Since: testDay.Add(-time.Hour), Until: testDay.Add(time.Hour)}
	for _, tc := range []struct {
		chunk  uint64
		limits []int
	}{
		{1, []int{1, 333}}, // a query per minute: slow
		{150, []int{0, 1, 333, 3000}},
		{defaultChunkRows, []int{0, 1, 2000}},
	} {
		chunk := tc.chunk
		for _, limit := range tc.limits {
			s.chunkRows = chunk
			var got int
			var last flowstore.Cursor
			err := s.ScanFlows(t.Context(), flowstore.ListQuery{Query: q, Limit: limit}, func(r flowstore.Record, c flowstore.Cursor) error {
				if got > 0 && (c.TimeStart.After(last.TimeStart) || c.TimeStart.Equal(last.TimeStart) && c.Seq >= last.Seq) {
					t.Fatalf("chunk %d limit %d: %+v after %+v", chunk, limit, c, last)
				}
				last = c
				got++
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			want := 2000
			if limit > 0 {
				want = min(limit, 2000)
			}
			if got != want {
				t.Errorf("chunk %d limit %d: %d flows, want %d", chunk, limit, got, want)
			}
		}
	}
}

// TestCursorSurvivesMerges: a cursor names a stored sequence number, so
// paging continues where it stopped after parts merged.
func TestCursorSurvivesMerges(t *testing.T) {
	s := openTest(t)
	q := flowstore.Query{Since: testDay, Until: testDay.Add(time.Hour)}
	for i := range 5 {
		// Every batch has flows in the same microsecond.
		rs := flowstoretest.Flows(20, testDay.Add(time.Minute), 0, uint64(i))
		if err := s.InsertFlows(t.Context(), rs); err != nil {
			t.Fatal(err)
		}
	}
	page := func(after *flowstore.Cursor, limit int) []flowstore.Cursor {
		var cs []flowstore.Cursor
		err := s.ScanFlows(t.Context(), flowstore.ListQuery{Query: q, After: after, Limit: limit}, func(_ flowstore.Record, c flowstore.Cursor) error {
			cs = append(cs, c)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	all := page(nil, 0)
	first := page(nil, 37)
	if err := s.conn.Exec(t.Context(), "OPTIMIZE TABLE flows FINAL"); err != nil {
		t.Fatal(err)
	}
	rest := page(&first[len(first)-1], 0)
	if got := append(first, rest...); len(got) != 100 || len(all) != 100 {
		t.Fatalf("%d flows in pages, %d in all, want 100", len(got), len(all))
	} else {
		for i := range got {
			if got[i] != all[i] {
				t.Fatalf("flow %d: cursor %+v after merging, %+v before", i, got[i], all[i])
			}
		}
	}
}

// TestRetainBySizeKeepsRollups: size retention drops raw flows only;
// charts without a filter keep their history.
func TestRetainBySizeKeepsRollups(t *testing.T) {
	s := openTest(t)
	for d := range 3 {
		if err := s.InsertFlows(t.Context(), flowstoretest.Flows(10_000, testDay.AddDate(0, 0, d), 24*time.Hour, uint64(d))); err != nil {
			t.Fatal(err)
		}
	}
	q := flowstore.Query{Since: testDay, Until: testDay.AddDate(0, 0, 3)}
	before := seriesSum(t, s, q, flowstore.Flows)
	if err := s.Retain(t.Context(), flowstore.Retention{MaxBytes: 1}, testDay.AddDate(0, 0, 3)); err != nil {
		t.Fatal(err)
	}
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Flows != 10_000 || st.Oldest.Before(testDay.AddDate(0, 0, 2)) {
		t.Errorf("after retention to 1 byte: %+v, want the last day's 10000 flows", st)
	}
	if after := seriesSum(t, s, q, flowstore.Flows); after != before || before != 30_000 {
		t.Errorf("rollups count %d flows after size retention, %d before, want 30000", after, before)
	}
}

func mustParse(t *testing.T, s string) flowfilter.Expr {
	t.Helper()
	e, err := flowfilter.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestLoadSynthetic: the benchmark's server-side loader makes flows of
// the shape flowstoretest.Flows describes, with rollups that agree.
func TestLoadSynthetic(t *testing.T) {
	s := openTest(t)
	const n = 100_000
	if err := s.loadSynthetic(t.Context(), n, testDay, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	q := flowstore.Query{Since: testDay, Until: testDay.Add(24 * time.Hour)}
	rollups := seriesSum(t, s, q, flowstore.Bytes)
	q.Filter = mustParse(t, "ipv4 or ipv6")
	if raw := seriesSum(t, s, q, flowstore.Bytes); raw != rollups || raw == 0 {
		t.Errorf("bytes from raw flows %d, from rollups %d", raw, rollups)
	}
	for _, tc := range []struct {
		filter string
		lo, hi uint64 // expected share, in per cent
	}{
		{"src net 10.1.0.0/16 and dst net 198.18.0.0/22 and ipv4", 94, 96},
		{"src net 2001:db8:1::/112 and dst net 2001:db8:2::/118 and ipv6", 4, 6},
		{"proto tcp and dst port in [443, 80, 53, 22, 25, 123, 3389, 8080, 445, 993] and src port >= 32768", 68, 72},
		{"proto udp", 23, 27},
		{"proto icmp or proto 58", 4, 6},
		{"exporter 10.255.0.1 or exporter 10.255.0.2 or exporter 10.255.0.3 or exporter 10.255.0.4", 100, 100},
		{"packets >= 1 and packets <= 1000 and duration < 60000", 100, 100},
	} {
		q.Filter = mustParse(t, tc.filter)
		res, err := s.Top(t.Context(), flowstore.TopQuery{Query: q, By: []flowstore.Key{flowstore.KeySrcIP}, OrderBy: flowstore.Flows, Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if pc := res.Total.Flows * 100 / n; pc < tc.lo || pc > tc.hi {
			t.Errorf("%s: %d%% of the flows, want %d–%d%%", tc.filter, pc, tc.lo, tc.hi)
		}
	}
	res, err := s.Top(t.Context(), flowstore.TopQuery{Query: flowstore.Query{Since: q.Since, Until: q.Until}, By: []flowstore.Key{flowstore.KeySrcIP}, OrderBy: flowstore.Flows, Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("top source: %+v", res.Rows)
}

// TestByDay: a batch from an exporter whose clock wandered over months is
// sent in blocks of at most 100 days (newer servers refuse a block
// touching more partitions), every row once; a batch within 100 days is
// sent as it is.
func TestByDay(t *testing.T) {
	for _, tc := range []struct {
		name   string
		days   int
		blocks int
	}{
		{"one day", 1, 1},
		{"100 days", 100, 1},
		{"101 days", 101, 2},
		{"250 days", 250, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rs []flowstore.Record
			// Days interleaved, as a wandering clock would have them.
			for i := range 3 * tc.days {
				rs = append(rs, flowstoretest.Flows(1, testDay.AddDate(0, 0, (i*7)%tc.days), time.Hour, uint64(i))...)
			}
			raw, rollups := build(rs, 1000)
			var blocks int
			seen := map[uint64]bool{}
			err := byDay(raw, raw.day, (*rawColumns).permute, func(c *rawColumns) error {
				blocks++
				days := map[uint32]bool{}
				for i, d := range c.day {
					days[d] = true
					if seen[c.seq[i]] {
						t.Errorf("flow %d sent twice", c.seq[i])
					}
					seen[c.seq[i]] = true
					if want := dayOf(c.start[i]); d != want || len(c.src) != 16*len(c.day) {
						t.Errorf("row %d of a block: day %d, want %d", i, d, want)
					}
				}
				if len(days) > maxDaysPerBlock {
					t.Errorf("block of %d days", len(days))
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if blocks != tc.blocks || len(seen) != len(rs) {
				t.Errorf("%d flows in %d blocks, want %d in %d", len(seen), blocks, len(rs), tc.blocks)
			}
			var flows uint64
			err = byDay(rollups, rollups.day, (*rollupColumns).permute, func(c *rollupColumns) error {
				for _, n := range c.flows {
					flows += n
				}
				return nil
			})
			if err != nil || flows != uint64(len(rs)) {
				t.Errorf("rollups count %d flows (%v), want %d", flows, err, len(rs))
			}
		})
	}
}

// TestGroupCommitAllOrNothing: batches from many writers are gathered
// into shared INSERTs, and callers that give up while waiting withdraw
// their batch: the store holds exactly the flows of the calls that
// returned nil, raw and rolled up.
func TestGroupCommitAllOrNothing(t *testing.T) {
	s := openTest(t)
	const writers, batches, size = 8, 12, 500
	var mu sync.Mutex
	var stored, failed int
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for b := range batches {
				rs := flowstoretest.Flows(size, testDay.Add(time.Duration(b)*time.Minute), time.Minute, uint64(w*1000+b))
				// Some callers give up after a few milliseconds: while
				// queued, or while their group is being inserted.
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(b%4)*3*time.Millisecond+time.Duration(b/4)*time.Hour)
				err := s.InsertFlows(ctx, rs)
				cancel()
				mu.Lock()
				if err == nil {
					stored++
				} else {
					if !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("writer %d batch %d: %v", w, b, err)
					}
					failed++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Logf("%d batches stored, %d given up", stored, failed)
	if stored == 0 {
		t.Fatal("no batch stored")
	}
	q := flowstore.Query{Since: testDay, Until: testDay.Add(time.Hour)}
	res, err := s.Top(t.Context(), flowstore.TopQuery{Query: q, By: []flowstore.Key{flowstore.KeyProto}, OrderBy: flowstore.Flows, Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64(stored * size); res.Total.Flows != want {
		t.Errorf("%d raw flows stored, want %d", res.Total.Flows, want)
	}
	if got, want := seriesSum(t, s, q, flowstore.Flows), uint64(stored*size); got != want {
		t.Errorf("rollups count %d flows, want %d", got, want)
	}
	if n := len(s.committer.queue); n != 0 {
		t.Errorf("%d batches left in the queue", n)
	}
}

// TestSettings: configured settings go with every query.
func TestSettings(t *testing.T) {
	s := openTestConfig(t, func(c *Config) { c.Settings = map[string]any{"max_threads": 3} })
	var v string
	if err := s.conn.QueryRow(t.Context(), "SELECT value FROM system.settings WHERE name = 'max_threads'").Scan(&v); err != nil {
		t.Fatal(err)
	}
	if v != "3" {
		t.Errorf("max_threads %q, want 3", v)
	}
}
