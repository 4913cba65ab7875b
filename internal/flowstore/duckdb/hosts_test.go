package duckdb

import (
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/yagura/yagura/internal/flowfilter"
	"github.com/yagura/yagura/internal/flowstore"
	"github.com/yagura/yagura/internal/flowstore/flowstoretest"
)

// hostFlows are n flows over span from from, between 200 sources and
// 50 destinations, so that both kinds of host sums are worth keeping.
func hostFlows(n int, from time.Time, span time.Duration, seed uint64) []flowstore.Record {
	rs := flowstoretest.Flows(n, from, span, seed)
	for i := range rs {
		rs[i].IPVersion = 4
		rs[i].SrcAddr = netip.AddrFrom4([4]byte{10, 1, byte(i % 200 / 100), byte(i % 100)})
		rs[i].DstAddr = netip.AddrFrom4([4]byte{198, 51, 100, byte(i * 7 % 50)})
	}
	return rs
}

// TestHostSums: a top-N of sources or destinations over summed hours is
// the same as over the raw flows (a filter that matches everything makes
// Top read them), with partial hours at the ends of the range, flows
// arriving late for a summed hour, and retention cutting through one;
// and it does read the sums.
func TestHostSums(t *testing.T) {
	s := openAt(t, filepath.Join(t.TempDir(), "flows.duckdb"))
	defer s.Close()
	insert := func(rs []flowstore.Record) {
		t.Helper()
		if err := s.InsertFlows(t.Context(), rs); err != nil {
			t.Fatal(err)
		}
		if err := s.Compact(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	insert(hostFlows(6000, day0, 6*time.Hour, 1))
	matchAll, err := flowfilter.Parse("bytes > 0 or bytes = 0")
	if err != nil {
		t.Fatal(err)
	}
	ranges := [][2]time.Time{
		{day0, day0.Add(24 * time.Hour)},
		{day0.Add(90 * time.Minute), day0.Add(5*time.Hour + 15*time.Minute)},
		{day0.Add(2 * time.Hour), day0.Add(3 * time.Hour)},
		{day0.Add(10 * time.Minute), day0.Add(50 * time.Minute)},
	}
	check := func(when string) {
		t.Helper()
		for _, key := range []flowstore.Key{flowstore.KeySrcIP, flowstore.KeyDstIP} {
			for _, m := range []flowstore.Measure{flowstore.Bytes, flowstore.Packets, flowstore.Flows} {
				for _, r := range ranges {
					q := flowstore.TopQuery{Query: flowstore.Query{Since: r[0], Until: r[1]}, By: []flowstore.Key{key}, OrderBy: m, Limit: 10}
					got, err := s.Top(t.Context(), q)
					if err != nil {
						t.Fatal(err)
					}
					q.Filter = matchAll
					want, err := s.Top(t.Context(), q)
					if err != nil {
						t.Fatal(err)
					}
					if want.Total.Flows == 0 {
						t.Fatalf("%s: no flows in %v", when, r)
					}
					if diff := cmp.Diff(want, got); diff != "" {
						t.Errorf("%s: top %s by %s over %v, sums against raw (-raw +sums):\n%s", when, key, m, r, diff)
					}
				}
			}
		}
	}
	// Every finished hour of the day is summed, with flows or not (flows
	// arriving later for an empty one are added to its sums).
	if got := s.summedHours(dayOf(day0.UnixMicro())); len(got[kindSrc]) != 24 || len(got[kindDst]) != 24 {
		t.Fatalf("summed hours after compaction: %v, want the 24 hours of the day for both kinds", got)
	}
	check("summed")

	// Late flows for summed hours, and for hours not summed yet.
	insert(hostFlows(500, day0.Add(30*time.Minute), 8*time.Hour, 2))
	check("late flows")

	// The sums are what is read: flows deleted from the raw table behind
	// the store's back are still counted by an unfiltered top-N.
	q := flowstore.TopQuery{Query: flowstore.Query{Since: day0.Add(time.Hour), Until: day0.Add(2 * time.Hour)}, By: []flowstore.Key{flowstore.KeySrcIP}, OrderBy: flowstore.Flows, Limit: 10}
	before, err := s.Top(t.Context(), q)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.Exec("DELETE FROM "+tableName(dayOf(day0.UnixMicro()))+" WHERE time_start >= ? AND time_start < ?", day0.Add(time.Hour).UnixMicro(), day0.Add(2*time.Hour).UnixMicro()); err != nil {
		t.Fatal(err)
	}
	after, err := s.Top(t.Context(), q)
	if err != nil {
		t.Fatal(err)
	}
	if after.Total.Flows != before.Total.Flows || before.Total.Flows == 0 {
		t.Errorf("top over a summed hour: %d flows, then %d once its raw flows are gone: the sums were not read", before.Total.Flows, after.Total.Flows)
	}

	// Retention through the middle of an hour: what is left is summed
	// again.
	if err := s.Retain(t.Context(), flowstore.Retention{MaxAge: 24 * time.Hour}, day0.Add(24*time.Hour+3*time.Hour+20*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(t.Context()); err != nil {
		t.Fatal(err)
	}
	ranges = [][2]time.Time{{day0, day0.Add(24 * time.Hour)}, {day0.Add(3 * time.Hour), day0.Add(5 * time.Hour)}}
	check("after retention")
}

// TestHostSumsNotWorth: an hour whose sources are nearly all distinct
// keeps its sources raw and sums only its destinations.
func TestHostSumsNotWorth(t *testing.T) {
	s := openAt(t, filepath.Join(t.TempDir(), "flows.duckdb"))
	defer s.Close()
	rs := hostFlows(1000, day0, time.Hour, 3)
	for i := range rs {
		rs[i].SrcAddr = netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)})
	}
	if err := s.InsertFlows(t.Context(), rs); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(t.Context()); err != nil {
		t.Fatal(err)
	}
	got := s.summedHours(dayOf(day0.UnixMicro()))
	h := day0.UnixMicro()
	if slices.Contains(got[kindSrc], h) || !slices.Contains(got[kindDst], h) {
		t.Errorf("summed hours: %v, want the first hour summed for destinations only", got)
	}
	var n int64
	if err := s.db.QueryRow("SELECT count(*) FROM " + hostsName(dayOf(day0.UnixMicro())) + " WHERE kind = 0").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d source sums kept for an hour of distinct sources", n)
	}
	res, err := s.Top(t.Context(), flowstore.TopQuery{Query: flowstore.Query{Since: day0, Until: day0.Add(time.Hour)}, By: []flowstore.Key{flowstore.KeySrcIP}, OrderBy: flowstore.Flows, Limit: 5})
	if err != nil {
		t.Fatal(err)
	}
	if res.Total.Flows != 1000 || len(res.Rows) != 5 {
		t.Errorf("top sources: %d flows in %d rows, want 1000 in 5", res.Total.Flows, len(res.Rows))
	}
}
