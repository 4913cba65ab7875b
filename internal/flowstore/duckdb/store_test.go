package duckdb

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
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

// TestInsertIsAtomic: a batch that fails (its second day's spool file
// cannot be written) leaves nothing of its flows, rollups or files, and
// the store takes the next batch.
func TestInsertIsAtomic(t *testing.T) {
	s := openAt(t, filepath.Join(t.TempDir(), "flows.duckdb"))
	defer s.Close()
	batch := append(flowstoretest.Flows(100, day0, time.Hour, 1), flowstoretest.Flows(100, day0.Add(25*time.Hour), time.Hour, 2)...)
	// The second day's spool folder is a file.
	bad := s.dayDir(dayOf(day0.Add(25 * time.Hour).UnixMicro()))
	if err := os.MkdirAll(filepath.Dir(bad), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.InsertFlows(t.Context(), batch); err == nil {
		t.Fatal("insert with an unwritable spool: no error")
	}
	if err := os.Remove(bad); err != nil {
		t.Fatal(err)
	}
	assertEmpty(t, s)

	// The store still takes the next batch.
	if err := s.InsertFlows(t.Context(), flowstoretest.Flows(10, day0, time.Hour, 3)); err != nil {
		t.Fatal(err)
	}
	if n := countFlows(t, s); n != 10 {
		t.Errorf("%d flows after a good batch, want 10", n)
	}
}

func assertEmpty(t *testing.T, s *Store) {
	t.Helper()
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
	if files := spoolFiles(t, s); len(files) != 0 {
		t.Errorf("files left by a failed batch: %v", files)
	}
}

// spoolFiles lists every file under the spool folder.
func spoolFiles(t *testing.T, s *Store) []string {
	t.Helper()
	return spoolFilesIn(t, s.spoolDir())
}

// TestSpoolCrash: a spool file whose flows a compaction had committed
// when the process died (the file was not deleted yet) is not read
// twice; a .tmp file of a batch that never returned is deleted; a spool
// file not yet compacted is read after a restart, and seqs go on above
// it.
func TestSpoolCrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flows.duckdb")
	s := openAt(t, path)
	if err := s.InsertFlows(t.Context(), flowstoretest.Flows(1000, day0, time.Hour, 1)); err != nil {
		t.Fatal(err)
	}
	files := spoolFiles(t, s)
	if len(files) != 1 {
		t.Fatalf("spool files after one batch: %v", files)
	}
	saved, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(t.Context()); err != nil {
		t.Fatal(err)
	}
	if left := spoolFiles(t, s); len(left) != 0 {
		t.Fatalf("spool files after compaction: %v", left)
	}
	if err := s.InsertFlows(t.Context(), flowstoretest.Flows(500, day0.Add(2*time.Hour), time.Hour, 2)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// As if the process had died between the compaction's commit and
	// the file's deletion, and in the middle of a batch.
	if err := os.WriteFile(files[0], saved, 0o600); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(filepath.Dir(files[0]), "00000000000000099999.parquet.tmp")
	if err := os.WriteFile(tmp, []byte("half a batch"), 0o600); err != nil {
		t.Fatal(err)
	}

	s = openAt(t, path)
	defer s.Close()
	if n := countFlows(t, s); n != 1500 {
		t.Errorf("%d flows after a restart, want 1500", n)
	}
	// Nor are its rollups counted twice.
	series := func() uint64 {
		t.Helper()
		ps, err := s.Series(t.Context(), flowstore.SeriesQuery{Query: flowstore.Query{Since: day0, Until: day0.Add(24 * time.Hour)}, Measure: flowstore.Flows, Interval: 24 * time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return ps[0].Value
	}
	if n := series(); n != 1500 {
		t.Errorf("the rollups count %d flows after a restart, want 1500", n)
	}
	left := spoolFiles(t, s)
	if len(left) != 1 || left[0] == files[0] || left[0] == tmp {
		t.Errorf("spool after a restart: %v, want only the uncompacted batch", left)
	}
	if next := s.nextSeq.Load(); next != 1500 {
		t.Errorf("next seq after a restart %d, want 1500", next)
	}
	if err := s.Compact(t.Context()); err != nil {
		t.Fatal(err)
	}
	var n, distinct int64
	if err := s.db.QueryRow("SELECT count(*), count(DISTINCT seq) FROM "+tableName(dayOf(day0.UnixMicro()))).Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	if n != 1500 || distinct != 1500 {
		t.Errorf("day table: %d flows with %d distinct seqs, want 1500 each", n, distinct)
	}
	if n := series(); n != 1500 {
		t.Errorf("the rollups count %d flows after compaction, want 1500", n)
	}
}

// TestCompactionWhileQuerying: with the compactor running all the time,
// queries never count a flow twice or miss one that was stored.
func TestCompactionWhileQuerying(t *testing.T) {
	s, err := OpenOptions(t.Context(), filepath.Join(t.TempDir(), "flows.duckdb"), Options{CompactEvery: time.Millisecond, CompactAge: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const batches, per = 100, 500
	var stored atomic.Int64 // flows whose InsertFlows returned
	var inFlight atomic.Int64
	done := make(chan error, 1)
	go func() {
		for i := range batches {
			inFlight.Store(per)
			if err := s.InsertFlows(t.Context(), flowstoretest.Flows(per, day0.Add(time.Duration(i)*time.Minute), time.Minute, uint64(i))); err != nil {
				done <- err
				return
			}
			stored.Add(per)
			inFlight.Store(0)
			// Paced, so that queries and compactions overlap the inserts.
			time.Sleep(5 * time.Millisecond)
		}
		done <- nil
	}()
	q := flowstore.TopQuery{Query: flowstore.Query{Since: day0, Until: day0.Add(24 * time.Hour)}, By: []flowstore.Key{flowstore.KeyProto}, OrderBy: flowstore.Flows, Limit: 10}
	checks := 0
	for finished := false; !finished; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			finished = true
		default:
		}
		lo := stored.Load()
		res, err := s.Top(t.Context(), q)
		if err != nil {
			t.Fatal(err)
		}
		hi := stored.Load() + inFlight.Load()
		if got := int64(res.Total.Flows); got < lo || got > hi {
			t.Fatalf("top counted %d flows while %d to %d were stored", got, lo, hi)
		}
		if res.Total.Flows > 0 {
			checks++
		}
	}
	if n := countFlows(t, s); n != batches*per {
		t.Errorf("%d flows at the end, want %d", n, batches*per)
	}
	var inTable int64
	if err := s.db.QueryRow("SELECT count(*) FROM " + tableName(dayOf(day0.UnixMicro()))).Scan(&inTable); err != nil {
		t.Fatal(err)
	}
	if inTable == 0 {
		t.Error("the compactor moved nothing into the day table")
	}
	if checks < 10 {
		t.Errorf("only %d queries saw flows while they were inserted", checks)
	}
	t.Logf("%d consistent queries during compaction", checks)
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
	// Each batch compacted apart, so that the rollups table holds rows
	// for the same interval and key from several compactions.
	for i := 0; i < len(rs); i += 500 {
		if err := s.InsertFlows(t.Context(), rs[i:i+500]); err != nil {
			t.Fatal(err)
		}
		if err := s.Compact(t.Context()); err != nil {
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

// TestDamagedSpoolFile: a spool file that cannot be read is set aside,
// at open and at compaction, instead of stopping the store; the other
// flows stay.
func TestDamagedSpoolFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flows.duckdb")
	s := openAt(t, path)
	for i := range 2 {
		if err := s.InsertFlows(t.Context(), flowstoretest.Flows(100, day0.Add(time.Duration(i)*time.Hour), time.Hour, uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	files := spoolFiles(t, s)
	if len(files) != 2 {
		t.Fatalf("spool files: %v", files)
	}
	// Damaged while listed: the compaction sets it aside and goes on.
	if err := os.WriteFile(files[0], []byte("not parquet"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(t.Context()); err != nil {
		t.Fatalf("compaction with a damaged file: %v", err)
	}
	if n := countFlows(t, s); n != 100 {
		t.Errorf("%d flows after setting a damaged file aside, want 100", n)
	}
	// Damaged before an open: the store opens without it.
	if err := s.InsertFlows(t.Context(), flowstoretest.Flows(50, day0.Add(3*time.Hour), time.Hour, 3)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var third string
	for _, f := range spoolFilesIn(t, s.spoolDir()) {
		if !strings.Contains(f, "damaged") {
			third = f
		}
	}
	if err := os.WriteFile(third, []byte("PAR1 torn"), 0o600); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, path)
	defer s.Close()
	if n := countFlows(t, s); n != 100 {
		t.Errorf("%d flows after opening with a damaged file, want 100", n)
	}
	if set := spoolFilesIn(t, s.quarantineDir()); len(set) != 2 {
		t.Errorf("files set aside: %v, want 2", set)
	}
}

// spoolFilesIn lists every file under dir (none if it does not exist).
func spoolFilesIn(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err == nil && de.Type().IsRegular() {
			out = append(out, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestLegacyDayTable: a day table from before the spool (no seq column)
// gets its flows numbered at open, and new flows are numbered above them.
func TestLegacyDayTable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flows.duckdb")
	s := openAt(t, path)
	d := dayOf(day0.UnixMicro())
	legacy := strings.Replace(flowTableDef, ",\n\tseq           BIGINT", "", 1)
	if legacy == flowTableDef {
		t.Fatal("flowTableDef has no seq column to remove")
	}
	if _, err := s.db.Exec("CREATE TABLE " + tableName(d) + " " + legacy); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.Exec("INSERT INTO "+tableName(d)+" ("+flowColumns+") SELECT ? + i, ? + i, '10.0.0.1', 1, 2, 4, unhex('00000000000000000000ffff0a000001'), unhex('00000000000000000000ffff0a000002'), 1, 2, 6, 0, 100, 1, 1 FROM range(3) t(i)", day0.UnixMicro(), day0.UnixMicro()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, path)
	defer s.Close()
	if err := s.InsertFlows(t.Context(), flowstoretest.Flows(2, day0, time.Minute, 1)); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(t.Context()); err != nil {
		t.Fatal(err)
	}
	var n, distinct, nulls int64
	if err := s.db.QueryRow("SELECT count(*), count(DISTINCT seq), count(*) - count(seq) FROM "+tableName(d)).Scan(&n, &distinct, &nulls); err != nil {
		t.Fatal(err)
	}
	if n != 5 || distinct != 5 || nulls != 0 {
		t.Errorf("legacy day table: %d flows, %d distinct seqs, %d without one; want 5, 5, 0", n, distinct, nulls)
	}
}
