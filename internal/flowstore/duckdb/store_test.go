package duckdb

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/yagura/yagura/internal/flowstore"
	"github.com/yagura/yagura/internal/flowstore/flowstoretest"
)

var day0 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

func openAt(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func countFlows(t *testing.T, s *Store) int64 {
	t.Helper()
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return st.Flows
}

// TestInsertIsAtomic: a batch that fails in its second day leaves nothing
// of its first day or of its rollups.
func TestInsertIsAtomic(t *testing.T) {
	s := openAt(t, filepath.Join(t.TempDir(), "flows.duckdb"))
	defer s.Close()
	// The second day's table exists with a column the appender cannot
	// fill, so its append fails after the first day's succeeded.
	bad := dayOf(day0.Add(24 * time.Hour).UnixMicro())
	if _, err := s.db.Exec("CREATE TABLE " + tableName(bad) + " (time_start BIGINT)"); err != nil {
		t.Fatal(err)
	}
	s.days[bad] = true
	batch := append(flowstoretest.Flows(100, day0, time.Hour, 1), flowstoretest.Flows(100, day0.Add(25*time.Hour), time.Hour, 2)...)
	if err := s.InsertFlows(t.Context(), batch); err == nil {
		t.Fatal("insert into a broken table: no error")
	}
	if n := countFlows(t, s); n != 0 {
		t.Errorf("%d flows stored by a failed batch", n)
	}
	ps, err := s.Series(t.Context(), flowstore.SeriesQuery{Query: flowstore.Query{Since: day0, Until: day0.Add(48 * time.Hour)}, Measure: flowstore.Flows, Interval: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if ps[0].Value != 0 || ps[1].Value != 0 {
		t.Errorf("rollups of a failed batch: %v", ps)
	}
	// The store still takes the next batch.
	if err := s.InsertFlows(t.Context(), flowstoretest.Flows(10, day0, time.Hour, 3)); err != nil {
		t.Fatal(err)
	}
	if n := countFlows(t, s); n != 10 {
		t.Errorf("%d flows after a good batch, want 10", n)
	}
}

// TestReopen: flows, rollups and cursors survive a restart.
func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flows.duckdb")
	s := openAt(t, path)
	rs := flowstoretest.Flows(1000, day0, 48*time.Hour, 4)
	if err := s.InsertFlows(t.Context(), rs); err != nil {
		t.Fatal(err)
	}
	q := flowstore.ListQuery{Query: flowstore.Query{Since: day0, Until: day0.Add(48 * time.Hour)}, Limit: 10}
	var cursor flowstore.Cursor
	if err := s.ScanFlows(t.Context(), q, func(_ flowstore.Record, c flowstore.Cursor) error { cursor = c; return nil }); err != nil {
		t.Fatal(err)
	}
	var before []flowstore.Record
	q.After = &cursor
	if err := s.ScanFlows(t.Context(), q, func(r flowstore.Record, _ flowstore.Cursor) error { before = append(before, r); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, path)
	defer s.Close()
	if n := countFlows(t, s); n != 1000 {
		t.Errorf("%d flows after reopening, want 1000", n)
	}
	var after []flowstore.Record
	if err := s.ScanFlows(t.Context(), q, func(r flowstore.Record, _ flowstore.Cursor) error { after = append(after, r); return nil }); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(after, before, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("second page after reopening (-got +want):\n%s", diff)
	}
	ps, err := s.Series(t.Context(), flowstore.SeriesQuery{Query: flowstore.Query{Since: day0, Until: day0.Add(48 * time.Hour)}, Measure: flowstore.Flows, Interval: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if ps[0].Value+ps[1].Value != 1000 {
		t.Errorf("rollups after reopening: %v, want 1000 flows", ps)
	}
}

// TestRetainExactAge: the day the cut falls in loses exactly its flows
// before the cut.
func TestRetainExactAge(t *testing.T) {
	s := openAt(t, filepath.Join(t.TempDir(), "flows.duckdb"))
	defer s.Close()
	rs := flowstoretest.Flows(3*24*60, day0, 72*time.Hour, 5) // one a minute
	if err := s.InsertFlows(t.Context(), rs); err != nil {
		t.Fatal(err)
	}
	now := day0.Add(80 * time.Hour)
	if err := s.Retain(t.Context(), flowstore.Retention{MaxAge: 50 * time.Hour}, now); err != nil {
		t.Fatal(err)
	}
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	cut := now.Add(-50 * time.Hour) // day 1, 06:00
	if st.Flows != 42*60 || !st.Oldest.Equal(cut) {
		t.Errorf("after retention at %s: %d flows from %s, want %d from the cut", cut, st.Flows, st.Oldest, 42*60)
	}
	if got := s.allDays(); len(got) != 2 {
		t.Errorf("day tables %v, want the cut's day and the next", got)
	}
}

// TestRollupCompaction: Retain folds the rows each batch appended for an
// interval into one per key, and series stay the same.
func TestRollupCompaction(t *testing.T) {
	s := openAt(t, filepath.Join(t.TempDir(), "flows.duckdb"))
	defer s.Close()
	rs := flowstoretest.Flows(20_000, day0, 2*time.Hour, 6)
	for i := range rs {
		rs[i].InIf, rs[i].OutIf = 1, 2 // a few keys per interval
	}
	for i := 0; i < len(rs); i += 500 {
		if err := s.InsertFlows(t.Context(), rs[i:i+500]); err != nil {
			t.Fatal(err)
		}
	}
	rows := func() int64 {
		var n int64
		if err := s.db.QueryRow("SELECT count(*) FROM rollups").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	q := flowstore.SeriesQuery{Query: flowstore.Query{Since: day0, Until: day0.Add(3 * time.Hour)}, Measure: flowstore.Bytes, Interval: flowstore.RollupInterval}
	want, err := s.Series(t.Context(), q)
	if err != nil {
		t.Fatal(err)
	}
	before := rows()
	if err := s.Retain(t.Context(), flowstore.Retention{}, day0.Add(3*time.Hour)); err != nil {
		t.Fatal(err)
	}
	after := rows()
	var keys int64
	if err := s.db.QueryRow("SELECT count(*) FROM (SELECT DISTINCT bucket, exporter, in_if, out_if, proto, ip_version FROM rollups)").Scan(&keys); err != nil {
		t.Fatal(err)
	}
	// All but the newest interval are compacted.
	if after >= before || after > keys+int64(before/24)+1 {
		t.Errorf("rollup rows: %d before compaction, %d after, %d keys", before, after, keys)
	}
	got, err := s.Series(t.Context(), q)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("series after compaction (-got +want):\n%s", diff)
	}
	// Late flows for a compacted interval still count, and a second
	// compaction leaves the compacted ones alone.
	late := flowstoretest.Flows(10, day0, time.Minute, 7)
	if err := s.InsertFlows(t.Context(), late); err != nil {
		t.Fatal(err)
	}
	if err := s.Retain(t.Context(), flowstore.Retention{}, day0.Add(3*time.Hour)); err != nil {
		t.Fatal(err)
	}
	got, err = s.Series(t.Context(), q)
	if err != nil {
		t.Fatal(err)
	}
	var lateBytes uint64
	for _, r := range late {
		lateBytes += r.Bytes
	}
	if got[0].Value != want[0].Value+lateBytes {
		t.Errorf("first interval after late flows: %d, want %d", got[0].Value, want[0].Value+lateBytes)
	}
}

// TestTopExactFallback: grouping addresses by the BLOB (the path taken
// after a hash collision) answers as grouping by hash does.
func TestTopExactFallback(t *testing.T) {
	s := openAt(t, filepath.Join(t.TempDir(), "flows.duckdb"))
	defer s.Close()
	if err := s.InsertFlows(t.Context(), flowstoretest.Flows(5000, day0, 30*time.Hour, 8)); err != nil {
		t.Fatal(err)
	}
	hs := s.allDays()
	for _, by := range [][]flowstore.Key{{flowstore.KeySrcIP}, {flowstore.KeySrcIP, flowstore.KeyDstIP}, {flowstore.KeyDstPort, flowstore.KeyDstIP}} {
		q := flowstore.TopQuery{Query: flowstore.Query{Since: day0, Until: day0.Add(30 * time.Hour)}, By: by, OrderBy: flowstore.Flows, Limit: 20}
		hashed, collided, err := s.top(t.Context(), q, hs, false)
		if err != nil || collided {
			t.Fatalf("top by %v by hash: collided %v, %v", by, collided, err)
		}
		exact, _, err := s.top(t.Context(), q, hs, true)
		if err != nil {
			t.Fatalf("top by %v exactly: %v", by, err)
		}
		if diff := cmp.Diff(exact, hashed); diff != "" {
			t.Errorf("top by %v (-exact +hashed):\n%s", by, diff)
		}
	}
}
