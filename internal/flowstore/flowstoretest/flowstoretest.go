// Package flowstoretest is the conformance suite every flow store backend
// must pass, so DuckDB and ClickHouse answer the same questions the same
// way, plus the benchmark helpers both use. Only tests may import it.
//
// The reference for every answer is computed in Go from the records the
// test inserted: flowfilter.Match for filters, plain loops for top-N and
// series.
//
// What the suite pins down beyond flowstore's doc comments:
//
//   - Times come back in UTC, truncated (not rounded) to microseconds.
//   - Top renders addresses as netip text (IPv4-mapped as IPv4), numbers in
//     decimal and the exporter as stored; ties on the measure are broken
//     by the keys in By order, ascending by their stored values (numbers
//     numerically, addresses by their 16 bytes, the exporter as a byte
//     string). An empty selection has no rows and an all-zero Total.
//   - Series buckets are multiples of Interval from the Unix epoch
//     (SeriesQuery.Buckets); flows count where their TimeStart falls.
//   - Retain by age keeps every flow with TimeStart at or after the cut
//     and removes every flow older than a day before it; a backend that
//     drops whole partitions may keep the rest of the partition the cut
//     falls in. The same holds for rollups with RollupMaxAge.
//   - Retain by size drops the oldest flows first and keeps the newest
//     partition.
//   - Stats.Oldest and Newest are the least and greatest TimeStart.
package flowstoretest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/yagura/yagura/internal/flowfilter"
	"github.com/yagura/yagura/internal/flowstore"
)

// Run runs the suite. open must return an empty store, closed by the
// test's cleanup.
func Run(t *testing.T, open func(t *testing.T) flowstore.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s flowstore.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"Sampling", testSampling},
		{"EmptyStore", testEmptyStore},
		{"TopEachKeyAndMeasure", testTopEachKey},
		{"TopMultiKey", testTopMultiKey},
		{"Filters", testFilters},
		{"SeriesRollupsEqualRaw", testSeriesRollupsEqualRaw},
		{"SeriesZeroIntervals", testSeriesZeroIntervals},
		{"SeriesIntervals", testSeriesIntervals},
		{"TimeRangeBoundaries", testBoundaries},
		{"ScanOrderAndPaging", testScanPaging},
		{"ScanStopsOnError", testScanStopsOnError},
		{"RetainByAge", testRetainByAge},
		{"RetainBySize", testRetainBySize},
		{"Stats", testStats},
		{"ConcurrentInserts", testConcurrentInserts},
		{"InvalidQueries", testInvalidQueries},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, open(t))
		})
	}
}

// day0 is the first day of the test data. Retain gets its own "now".
var day0 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

const day = 24 * time.Hour

var cmpOpts = []cmp.Option{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmpopts.EquateEmpty(),
}

func insert(t *testing.T, s flowstore.Store, rs []flowstore.Record) {
	t.Helper()
	if err := s.InsertFlows(t.Context(), rs); err != nil {
		t.Fatalf("insert %d flows: %v", len(rs), err)
	}
}

func mustParse(t *testing.T, f string) flowfilter.Expr {
	t.Helper()
	e, err := flowfilter.Parse(f)
	if err != nil {
		t.Fatalf("parse %q: %v", f, err)
	}
	return e
}

// scan returns what ScanFlows gives, with the cursors, checking that the
// order is newest first and each cursor names its record.
func scan(t *testing.T, s flowstore.Store, q flowstore.ListQuery) ([]flowstore.Record, []flowstore.Cursor) {
	t.Helper()
	var rs []flowstore.Record
	var cs []flowstore.Cursor
	err := s.ScanFlows(t.Context(), q, func(r flowstore.Record, c flowstore.Cursor) error {
		if n := len(rs); n > 0 && r.TimeStart.After(rs[n-1].TimeStart) {
			t.Errorf("scan: flow at %s after one at %s: not newest first", r.TimeStart, rs[n-1].TimeStart)
		}
		if !c.TimeStart.Equal(r.TimeStart) {
			t.Errorf("scan: cursor time %s for a flow at %s", c.TimeStart, r.TimeStart)
		}
		rs = append(rs, r)
		cs = append(cs, c)
		return nil
	})
	if err != nil {
		t.Fatalf("scan %+v: %v", q, err)
	}
	return rs, cs
}

func top(t *testing.T, s flowstore.Store, q flowstore.TopQuery) flowstore.TopResult {
	t.Helper()
	res, err := s.Top(t.Context(), q)
	if err != nil {
		t.Fatalf("top by %v order by %s: %v", q.By, q.OrderBy, err)
	}
	return res
}

func series(t *testing.T, s flowstore.Store, q flowstore.SeriesQuery) []flowstore.Point {
	t.Helper()
	ps, err := s.Series(t.Context(), q)
	if err != nil {
		t.Fatalf("series of %s per %s: %v", q.Measure, q.Interval, err)
	}
	return ps
}

func count(t *testing.T, s flowstore.Store, since, until time.Time) uint64 {
	t.Helper()
	return top(t, s, flowstore.TopQuery{Query: flowstore.Query{Since: since, Until: until}, By: []flowstore.Key{flowstore.KeyProto}, OrderBy: flowstore.Flows, Limit: 1}).Total.Flows
}

func testRoundTrip(t *testing.T, s flowstore.Store) {
	at := day0.Add(10*time.Hour + 123456789*time.Nanosecond)
	rs := []flowstore.Record{
		{
			TimeStart: at, TimeEnd: at.Add(1500*time.Millisecond + 999*time.Nanosecond),
			Exporter: netip.MustParseAddr("192.0.2.10"), InIf: 4294967295, OutIf: 7, IPVersion: 4,
			SrcAddr: netip.MustParseAddr("10.0.0.1"), DstAddr: netip.MustParseAddr("203.0.113.250"),
			SrcPort: 65535, DstPort: 443, Proto: 6, TCPFlags: 0x1b,
			Bytes: 1 << 40, Packets: 1 << 30, SamplingRate: 1,
		},
		{
			TimeStart: at.Add(time.Minute), TimeEnd: at.Add(2 * time.Minute),
			Exporter: netip.MustParseAddr("2001:db8::ff"), InIf: 0, OutIf: 0, IPVersion: 6,
			SrcAddr: netip.MustParseAddr("2001:db8::1"), DstAddr: netip.MustParseAddr("ff02::fb"),
			SrcPort: 5353, DstPort: 5353, Proto: 17,
			Bytes: 1000 * 64000, Packets: 1000 * 100, SamplingRate: 1000,
		},
		{
			// Counters above 2^63 (a sampled flow multiplied up).
			TimeStart: at.Add(-time.Hour), TimeEnd: at.Add(-time.Hour),
			Exporter: netip.MustParseAddr("192.0.2.11"), InIf: 3, OutIf: 4, IPVersion: 4,
			SrcAddr: netip.MustParseAddr("0.0.0.0"), DstAddr: netip.MustParseAddr("255.255.255.255"),
			SrcPort: 68, DstPort: 67, Proto: 17,
			Bytes: 1<<63 + 12345, Packets: 1<<63 + 1, SamplingRate: 4294967295,
		},
		{
			TimeStart: day0, TimeEnd: day0,
			Exporter: netip.MustParseAddr("192.0.2.10"), InIf: 1, OutIf: 2, IPVersion: 6,
			SrcAddr: netip.MustParseAddr("fe80::1"), DstAddr: netip.MustParseAddr("ff02::1"),
			Proto: 58, Bytes: 0, Packets: 0, SamplingRate: 1,
		},
		{
			// The same microsecond as the first.
			TimeStart: at.Add(1), TimeEnd: at.Add(2),
			Exporter: netip.MustParseAddr("192.0.2.10"), InIf: 1, OutIf: 2, IPVersion: 4,
			SrcAddr: netip.MustParseAddr("198.51.100.1"), DstAddr: netip.MustParseAddr("198.51.100.2"),
			SrcPort: 1, DstPort: 2, Proto: 47, TCPFlags: 0xff, Bytes: 1, Packets: 1, SamplingRate: 1,
		},
	}
	insert(t, s, rs)
	got, cs := scan(t, s, flowstore.ListQuery{Query: flowstore.Query{Since: day0, Until: day0.Add(day)}})
	for _, r := range got {
		if r.TimeStart.Location() != time.UTC || r.TimeEnd.Location() != time.UTC {
			t.Errorf("times of %v are not in UTC", r)
		}
	}
	if diff := cmp.Diff(sortedRecords(got), sortedRecords(rs), cmpOpts...); diff != "" {
		t.Errorf("records read back (-got +want):\n%s", diff)
	}
	seen := map[flowstore.Cursor]bool{}
	for _, c := range cs {
		if seen[c] {
			t.Errorf("cursor %+v given twice", c)
		}
		seen[c] = true
	}
}

func testSampling(t *testing.T, s flowstore.Store) {
	r := flowstore.Record{
		TimeStart: day0.Add(time.Hour), TimeEnd: day0.Add(time.Hour + time.Second),
		Exporter: netip.MustParseAddr("192.0.2.1"), IPVersion: 4,
		SrcAddr: netip.MustParseAddr("10.0.0.1"), DstAddr: netip.MustParseAddr("10.0.0.2"),
		SrcPort: 1000, DstPort: 80, Proto: 6,
		Bytes: 150_000, Packets: 300, SamplingRate: 100,
	}
	insert(t, s, []flowstore.Record{r})
	q := flowstore.Query{Since: day0, Until: day0.Add(day)}
	got, _ := scan(t, s, flowstore.ListQuery{Query: q})
	if len(got) != 1 {
		t.Fatalf("scan: %d flows, want 1", len(got))
	}
	if got[0].Bytes != 150_000 || got[0].Packets != 300 || got[0].SamplingRate != 100 || got[0].RawBytes() != 1500 || got[0].RawPackets() != 3 {
		t.Errorf("stored bytes %d packets %d rate %d (raw %d, %d), want 150000, 300, 100 (raw 1500, 3)",
			got[0].Bytes, got[0].Packets, got[0].SamplingRate, got[0].RawBytes(), got[0].RawPackets())
	}
	res := top(t, s, flowstore.TopQuery{Query: q, By: []flowstore.Key{flowstore.KeySrcIP}, OrderBy: flowstore.Bytes, Limit: 10})
	if res.Total.Bytes != 150_000 || res.Total.Packets != 300 || res.Total.Flows != 1 {
		t.Errorf("top total %+v, want 150000 bytes, 300 packets, 1 flow", res.Total)
	}
	for _, f := range []flowfilter.Expr{nil, mustParse(t, "any")} {
		ps := series(t, s, flowstore.SeriesQuery{Query: flowstore.Query{Since: day0, Until: day0.Add(2 * time.Hour), Filter: f}, Measure: flowstore.Bytes, Interval: time.Hour})
		if len(ps) != 2 || ps[1].Value != 150_000 {
			t.Errorf("series (filter %v): %v, want 150000 bytes in the second hour", f, ps)
		}
	}
}

func testEmptyStore(t *testing.T, s flowstore.Store) {
	q := flowstore.Query{Since: day0, Until: day0.Add(day)}
	if rs, _ := scan(t, s, flowstore.ListQuery{Query: q}); len(rs) != 0 {
		t.Errorf("scan of an empty store: %d flows", len(rs))
	}
	res := top(t, s, flowstore.TopQuery{Query: q, By: []flowstore.Key{flowstore.KeySrcIP}, OrderBy: flowstore.Bytes, Limit: 10})
	if diff := cmp.Diff(res, flowstore.TopResult{}, cmpOpts...); diff != "" {
		t.Errorf("top of an empty store (-got +want):\n%s", diff)
	}
	for _, f := range []flowfilter.Expr{nil, mustParse(t, "proto tcp")} {
		ps := series(t, s, flowstore.SeriesQuery{Query: flowstore.Query{Since: day0, Until: day0.Add(time.Hour), Filter: f}, Measure: flowstore.Flows, Interval: 10 * time.Minute})
		want := refSeries(nil, flowstore.SeriesQuery{Query: flowstore.Query{Since: day0, Until: day0.Add(time.Hour)}, Measure: flowstore.Flows, Interval: 10 * time.Minute})
		if diff := cmp.Diff(ps, want); diff != "" {
			t.Errorf("series of an empty store, filter %v (-got +want):\n%s", f, diff)
		}
	}
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Backend == "" || st.Flows != 0 || !st.Oldest.IsZero() || !st.Newest.IsZero() {
		t.Errorf("stats of an empty store: %+v", st)
	}
	if err := s.InsertFlows(t.Context(), nil); err != nil {
		t.Errorf("insert no flows: %v", err)
	}
}

// tieFlows are few distinct values, so that groups tie on every measure.
func tieFlows(n int, seed uint64) []flowstore.Record {
	rng := rand.New(rand.NewPCG(seed, 1))
	addrs := []netip.Addr{
		netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.10"), netip.MustParseAddr("192.0.2.1"),
		netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::a"), netip.MustParseAddr("9.9.9.9"),
	}
	exporters := []netip.Addr{netip.MustParseAddr("192.0.2.250"), netip.MustParseAddr("192.0.2.3"), netip.MustParseAddr("2001:db8::fe")}
	ports := []uint16{80, 443, 22, 8080, 53}
	out := make([]flowstore.Record, n)
	for i := range out {
		at := day0.Add(time.Duration(rng.Int64N(int64(day))))
		src, dst := addrs[rng.IntN(len(addrs))], addrs[rng.IntN(len(addrs))]
		v := uint8(4)
		if src.Is6() || dst.Is6() {
			v = 6
		}
		out[i] = flowstore.Record{
			TimeStart: at, TimeEnd: at.Add(time.Duration(rng.IntN(5)) * time.Second),
			Exporter: exporters[rng.IntN(len(exporters))],
			InIf:     uint32(rng.IntN(3)) * 9, OutIf: uint32(10 + rng.IntN(3)),
			IPVersion: v, SrcAddr: src, DstAddr: dst,
			SrcPort: ports[rng.IntN(len(ports))], DstPort: ports[rng.IntN(len(ports))],
			Proto: []uint8{6, 17, 1}[rng.IntN(3)],
			Bytes: uint64(100 * (1 + rng.IntN(3))), Packets: uint64(1 + rng.IntN(2)), SamplingRate: 1,
		}
	}
	return out
}

func testTopEachKey(t *testing.T, s flowstore.Store) {
	rs := tieFlows(300, 1)
	insert(t, s, rs)
	// Half a day: the selection must honour the range.
	q := flowstore.Query{Since: day0.Add(3 * time.Hour), Until: day0.Add(15 * time.Hour)}
	for _, k := range flowstore.Keys() {
		for _, m := range []flowstore.Measure{flowstore.Bytes, flowstore.Packets, flowstore.Flows} {
			for _, limit := range []int{1, 3, flowstore.MaxTopLimit} {
				t.Run(fmt.Sprintf("%s/%s/%d", k, m, limit), func(t *testing.T) {
					tq := flowstore.TopQuery{Query: q, By: []flowstore.Key{k}, OrderBy: m, Limit: limit}
					got := top(t, s, tq)
					if diff := cmp.Diff(got, refTop(rs, tq), cmpOpts...); diff != "" {
						t.Errorf("top (-got +want):\n%s", diff)
					}
				})
			}
		}
	}
}

func testTopMultiKey(t *testing.T, s flowstore.Store) {
	rs := tieFlows(400, 2)
	insert(t, s, rs)
	q := flowstore.Query{Since: day0, Until: day0.Add(day)}
	for _, by := range [][]flowstore.Key{
		{flowstore.KeySrcIP, flowstore.KeyDstIP},
		{flowstore.KeyDstIP, flowstore.KeySrcIP},
		{flowstore.KeyProto, flowstore.KeyDstPort},
		{flowstore.KeyExporter, flowstore.KeyInIf, flowstore.KeyOutIf},
		{flowstore.KeySrcIP, flowstore.KeyDstIP, flowstore.KeySrcPort, flowstore.KeyDstPort, flowstore.KeyProto},
	} {
		for _, m := range []flowstore.Measure{flowstore.Bytes, flowstore.Flows} {
			tq := flowstore.TopQuery{Query: q, By: by, OrderBy: m, Limit: 10}
			got := top(t, s, tq)
			if diff := cmp.Diff(got, refTop(rs, tq), cmpOpts...); diff != "" {
				t.Errorf("top by %v order by %s (-got +want):\n%s", by, m, diff)
			}
		}
	}
}

// filterFlows are varied enough that each filter of testFilters selects
// some flows and leaves others.
func filterFlows(n int, seed uint64) []flowstore.Record {
	rng := rand.New(rand.NewPCG(seed, 2))
	v4 := []string{"10.0.0.1", "10.1.2.3", "10.255.255.255", "192.0.2.1", "192.0.2.200", "198.51.100.7", "203.0.113.5", "11.0.0.0", "0.0.0.0"}
	v6 := []string{"2001:db8::1", "2001:db8::53", "2001:db8:1::9", "2606:4700::1111", "fe80::1"}
	exporters := []netip.Addr{netip.MustParseAddr("192.0.2.250"), netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("2001:db8::fe")}
	out := make([]flowstore.Record, n)
	for i := range out {
		r := flowstore.Record{SamplingRate: 1}
		pool := v4
		r.IPVersion = 4
		if rng.IntN(4) == 0 {
			pool, r.IPVersion = v6, 6
		}
		r.SrcAddr = netip.MustParseAddr(pool[rng.IntN(len(pool))])
		r.DstAddr = netip.MustParseAddr(pool[rng.IntN(len(pool))])
		r.Proto = []uint8{6, 6, 6, 17, 17, 1, 47}[rng.IntN(7)]
		if r.IPVersion == 6 && r.Proto == 1 {
			r.Proto = 58
		}
		if r.Proto == 6 || r.Proto == 17 {
			r.SrcPort = []uint16{22, 53, 443, 1024, 3389, 51000, 65535}[rng.IntN(7)]
			r.DstPort = []uint16{22, 53, 80, 443, 3389, 8080, 60000}[rng.IntN(7)]
		}
		if r.Proto == 6 {
			r.TCPFlags = uint8(rng.IntN(256))
		}
		r.Packets = uint64(rng.IntN(3000))
		r.Bytes = r.Packets * uint64(40+rng.IntN(1500))
		r.TimeStart = day0.Add(time.Duration(rng.Int64N(int64(2 * day))))
		r.TimeEnd = r.TimeStart.Add(time.Duration(rng.Int64N(int64(120 * time.Second))))
		r.InIf, r.OutIf = uint32(rng.IntN(5)), uint32(rng.IntN(5))
		r.Exporter = exporters[rng.IntN(len(exporters))]
		if rng.IntN(10) == 0 {
			r.SamplingRate = 10
			r.Bytes *= 10
			r.Packets *= 10
		}
		out[i] = r
	}
	return out
}

func testFilters(t *testing.T, s flowstore.Store) {
	rs := filterFlows(500, 3)
	insert(t, s, rs[:250])
	insert(t, s, rs[250:])
	q := flowstore.Query{Since: day0.Add(6 * time.Hour), Until: day0.Add(42 * time.Hour)}
	for _, f := range []string{
		"any",
		"proto tcp and dst port 443",
		"proto tcp and dst port 443 and not src net 10.0.0.0/8",
		"host 192.0.2.1",
		"src host 192.0.2.1",
		"net 10.0.0.0/8",
		"not src net 10.0.0.0/8",
		"ipv6",
		"ipv4 and proto udp",
		"src net 2001:db8::/32 or proto icmp",
		"host in [192.0.2.1, 2001:db8::1]",
		"port in [22, 3389]",
		"dst port > 1024",
		"bytes > 1M",
		"packets < 100",
		"duration > 60000",
		"bps > 1M",
		"flags S and not flags A",
		"in if 2",
		"if 3",
		`exporter "192.0.2.250"`,
		`exporter "2001:db8::fe"`,
		"(proto tcp or proto udp) and port 53",
		"not (host 192.0.2.1 or host 2001:db8::1)",
		"any and not any",
	} {
		t.Run(f, func(t *testing.T) {
			e := mustParse(t, f)
			fq := q
			fq.Filter = e
			want := selectFlows(rs, q.Since, q.Until, e)
			got, _ := scan(t, s, flowstore.ListQuery{Query: fq})
			if diff := cmp.Diff(sortedRecords(got), sortedRecords(want), cmpOpts...); diff != "" {
				t.Errorf("scan (-got +want):\n%s", diff)
			}
			tq := flowstore.TopQuery{Query: fq, By: []flowstore.Key{flowstore.KeyDstIP}, OrderBy: flowstore.Bytes, Limit: 5}
			if diff := cmp.Diff(top(t, s, tq), refTop(rs, tq), cmpOpts...); diff != "" {
				t.Errorf("top (-got +want):\n%s", diff)
			}
			sq := flowstore.SeriesQuery{Query: fq, Measure: flowstore.Packets, Interval: time.Hour}
			if diff := cmp.Diff(series(t, s, sq), refSeries(rs, sq)); diff != "" {
				t.Errorf("series (-got +want):\n%s", diff)
			}
		})
	}
}

// testSeriesRollupsEqualRaw: a series without a filter (from rollups)
// equals one with a filter every flow matches (from raw flows), and both
// equal the reference, with and without a protocol.
func testSeriesRollupsEqualRaw(t *testing.T, s flowstore.Store) {
	rs := Flows(3000, day0.Add(-time.Hour), 26*time.Hour, 4)
	// The same flows in batches of varied size, so rollup rows for the
	// same interval and key come from several batches.
	for i, n := 0, 1; i < len(rs); i, n = i+n, n*2 {
		insert(t, s, rs[i:min(i+n, len(rs))])
	}
	all := mustParse(t, "ipv4 or ipv6")
	for _, m := range []flowstore.Measure{flowstore.Bytes, flowstore.Packets, flowstore.Flows} {
		for _, proto := range []uint8{0, 6, 17, 1, 99} {
			q := flowstore.SeriesQuery{Query: flowstore.Query{Since: day0, Until: day0.Add(day)}, Measure: m, Interval: flowstore.RollupInterval, Proto: proto}
			want := refSeries(rs, q)
			fromRollups := series(t, s, q)
			q.Filter = all
			fromRaw := series(t, s, q)
			if diff := cmp.Diff(fromRollups, want); diff != "" {
				t.Errorf("%s, proto %d, from rollups (-got +want):\n%s", m, proto, diff)
			}
			if diff := cmp.Diff(fromRaw, want); diff != "" {
				t.Errorf("%s, proto %d, from raw flows (-got +want):\n%s", m, proto, diff)
			}
		}
	}
	// A filter and a protocol together.
	q := flowstore.SeriesQuery{Query: flowstore.Query{Since: day0, Until: day0.Add(day), Filter: mustParse(t, "dst port 443 or ipv6")}, Measure: flowstore.Bytes, Interval: time.Hour, Proto: 6}
	if diff := cmp.Diff(series(t, s, q), refSeries(rs, q)); diff != "" {
		t.Errorf("filter and protocol (-got +want):\n%s", diff)
	}
}

func testSeriesZeroIntervals(t *testing.T, s flowstore.Store) {
	// Flows in two 5-minute intervals, hours apart.
	var rs []flowstore.Record
	for _, at := range []time.Time{day0.Add(time.Hour + time.Minute), day0.Add(time.Hour + 4*time.Minute), day0.Add(5*time.Hour + 55*time.Minute)} {
		rs = append(rs, Flows(3, at, time.Second, uint64(at.Unix()))...)
	}
	insert(t, s, rs)
	for _, f := range []flowfilter.Expr{nil, mustParse(t, "any")} {
		q := flowstore.SeriesQuery{Query: flowstore.Query{Since: day0, Until: day0.Add(8 * time.Hour), Filter: f}, Measure: flowstore.Flows, Interval: flowstore.RollupInterval}
		got := series(t, s, q)
		if len(got) != 96 {
			t.Fatalf("filter %v: %d points over 8 h of 5 min, want 96", f, len(got))
		}
		if diff := cmp.Diff(got, refSeries(rs, q)); diff != "" {
			t.Errorf("filter %v (-got +want):\n%s", f, diff)
		}
		nonZero := 0
		for _, p := range got {
			if p.Value != 0 {
				nonZero++
			}
		}
		if nonZero != 2 {
			t.Errorf("filter %v: %d non-zero points, want 2", f, nonZero)
		}
	}
}

func testSeriesIntervals(t *testing.T, s flowstore.Store) {
	rs := Flows(2000, day0, 2*day, 5)
	insert(t, s, rs)
	for _, tc := range []struct {
		name         string
		since, until time.Time
		interval     time.Duration
		points       int
	}{
		{"10m", day0.Add(time.Hour), day0.Add(3 * time.Hour), 10 * time.Minute, 12},
		{"1h", day0, day0.Add(2 * day), time.Hour, 48},
		{"1d", day0, day0.Add(2 * day), day, 2},
		// Since and Until are truncated to the interval.
		{"unaligned", day0.Add(7 * time.Minute), day0.Add(2*time.Hour + 3*time.Minute), 10 * time.Minute, 12},
		{"unaligned 1h", day0.Add(30 * time.Minute), day0.Add(3*time.Hour + 59*time.Minute), time.Hour, 3},
	} {
		for _, f := range []flowfilter.Expr{nil, mustParse(t, "any")} {
			q := flowstore.SeriesQuery{Query: flowstore.Query{Since: tc.since, Until: tc.until, Filter: f}, Measure: flowstore.Bytes, Interval: tc.interval}
			got := series(t, s, q)
			want := refSeries(rs, q)
			if len(want) != tc.points {
				t.Fatalf("%s: the reference has %d points, want %d", tc.name, len(want), tc.points)
			}
			if diff := cmp.Diff(got, want); diff != "" {
				t.Errorf("%s, filter %v (-got +want):\n%s", tc.name, f, diff)
			}
		}
	}
}

// testBoundaries: a range is [Since, Until) on TimeStart, for every
// operation.
func testBoundaries(t *testing.T, s flowstore.Store) {
	since, until := day0.Add(time.Hour), day0.Add(2*time.Hour)
	var rs []flowstore.Record
	for i, at := range []time.Time{since.Add(-time.Microsecond), since, until.Add(-time.Microsecond), until} {
		r := Flows(1, at, time.Second, uint64(i))[0]
		r.TimeEnd = since.Add(30 * time.Minute) // an end inside the range does not count
		rs = append(rs, r)
	}
	insert(t, s, rs)
	q := flowstore.Query{Since: since, Until: until}
	got, _ := scan(t, s, flowstore.ListQuery{Query: q})
	if diff := cmp.Diff(sortedRecords(got), sortedRecords(rs[1:3]), cmpOpts...); diff != "" {
		t.Errorf("scan [since, until) (-got +want):\n%s", diff)
	}
	tq := flowstore.TopQuery{Query: q, By: []flowstore.Key{flowstore.KeySrcIP}, OrderBy: flowstore.Flows, Limit: 10}
	if diff := cmp.Diff(top(t, s, tq), refTop(rs, tq), cmpOpts...); diff != "" {
		t.Errorf("top (-got +want):\n%s", diff)
	}
	if n := count(t, s, since, until); n != 2 {
		t.Errorf("top total: %d flows, want 2", n)
	}
	for _, f := range []flowfilter.Expr{nil, mustParse(t, "any")} {
		sq := flowstore.SeriesQuery{Query: flowstore.Query{Since: since, Until: until, Filter: f}, Measure: flowstore.Flows, Interval: flowstore.RollupInterval}
		got := series(t, s, sq)
		var sum uint64
		for _, p := range got {
			sum += p.Value
		}
		if sum != 2 || len(got) != 12 || got[0].Value != 1 || got[11].Value != 1 {
			t.Errorf("series, filter %v: %v, want 12 points, 1 flow in the first and the last", f, got)
		}
	}
}

// pagingFlows are spread over three days, with runs of flows that start
// in the same microsecond, some of them inserted in different batches.
func pagingFlows() [][]flowstore.Record {
	rs := Flows(60, day0, 3*day, 6)
	tie := day0.Add(day + 12*time.Hour + 7*time.Microsecond)
	ties := Flows(8, tie, 0, 7)
	midnight := Flows(4, day0.Add(2*day), 0, 8)
	return [][]flowstore.Record{append(rs[:30:30], ties[:5]...), append(append(rs[30:], ties[5:]...), midnight...)}
}

func testScanPaging(t *testing.T, s flowstore.Store) {
	var all []flowstore.Record
	for _, b := range pagingFlows() {
		insert(t, s, b)
		all = append(all, b...)
	}
	for _, tc := range []struct {
		name   string
		filter flowfilter.Expr
		since  time.Time
		until  time.Time
	}{
		{"all", nil, day0, day0.Add(3 * day)},
		{"filter", mustParse(t, "proto tcp or ipv6"), day0, day0.Add(3 * day)},
		{"range", nil, day0.Add(20 * time.Hour), day0.Add(50 * time.Hour)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := flowstore.Query{Since: tc.since, Until: tc.until, Filter: tc.filter}
			want := selectFlows(all, tc.since, tc.until, tc.filter)
			full, cs := scan(t, s, flowstore.ListQuery{Query: q})
			if diff := cmp.Diff(sortedRecords(full), sortedRecords(want), cmpOpts...); diff != "" {
				t.Fatalf("full listing (-got +want):\n%s", diff)
			}
			seen := map[flowstore.Cursor]bool{}
			for _, c := range cs {
				if seen[c] {
					t.Errorf("cursor %+v given twice", c)
				}
				seen[c] = true
			}
			for _, size := range []int{1, 3, 7, 100} {
				var paged []flowstore.Record
				var after *flowstore.Cursor
				for pages := 0; ; pages++ {
					if pages > len(want)+1 {
						t.Fatalf("page size %d: paging does not end", size)
					}
					page, pcs := scan(t, s, flowstore.ListQuery{Query: q, After: after, Limit: size})
					if len(page) > size {
						t.Fatalf("page size %d: got %d flows", size, len(page))
					}
					paged = append(paged, page...)
					if len(page) < size {
						break
					}
					after = &pcs[len(pcs)-1]
				}
				if diff := cmp.Diff(paged, full, cmpOpts...); diff != "" {
					t.Errorf("page size %d: pages joined differ from the full listing (-got +want):\n%s", size, diff)
				}
			}
		})
	}
}

func testScanStopsOnError(t *testing.T, s flowstore.Store) {
	for _, b := range pagingFlows() {
		insert(t, s, b)
	}
	stop := errors.New("stop here")
	n := 0
	err := s.ScanFlows(t.Context(), flowstore.ListQuery{Query: flowstore.Query{Since: day0, Until: day0.Add(3 * day)}}, func(flowstore.Record, flowstore.Cursor) error {
		n++
		if n == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 3 {
		t.Errorf("scan returned %v after %d calls, want the callback's error after 3", err, n)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.ScanFlows(ctx, flowstore.ListQuery{Query: flowstore.Query{Since: day0, Until: day0.Add(3 * day)}}, func(flowstore.Record, flowstore.Cursor) error { return nil }); err == nil {
		t.Errorf("scan with a cancelled context: no error")
	}
}

func testRetainByAge(t *testing.T, s flowstore.Store) {
	// A flow every 3 hours from day 2 to day 9.
	var rs []flowstore.Record
	for at := day0.Add(2 * day); at.Before(day0.Add(9*day + 12*time.Hour)); at = at.Add(3 * time.Hour) {
		rs = append(rs, Flows(1, at, 0, uint64(at.Unix()))...)
	}
	insert(t, s, rs)
	now := day0.Add(9*day + 12*time.Hour)
	whole := flowstore.Query{Since: day0, Until: now}
	seriesAll := func() []flowstore.Point {
		return series(t, s, flowstore.SeriesQuery{Query: whole, Measure: flowstore.Flows, Interval: time.Hour})
	}
	before := seriesAll()
	// Rollups are kept (RollupMaxAge 0) when raw flows expire.
	if err := s.Retain(t.Context(), flowstore.Retention{MaxAge: 3 * day}, now); err != nil {
		t.Fatalf("retain: %v", err)
	}
	cut := now.Add(-3 * day)
	checkAge(t, s, rs, cut)
	if diff := cmp.Diff(seriesAll(), before); diff != "" {
		t.Errorf("series from rollups changed when raw flows expired (-got +want):\n%s", diff)
	}
	// A filter that matches everything is no filter: the rollups answer.
	matchAll := series(t, s, flowstore.SeriesQuery{Query: flowstore.Query{Since: day0, Until: now, Filter: flowfilter.All{}}, Measure: flowstore.Flows, Interval: time.Hour})
	if diff := cmp.Diff(matchAll, before); diff != "" {
		t.Errorf("series with a match-all filter after raw flows expired (-got +want):\n%s", diff)
	}
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Oldest.Before(cut.Add(-day)) || st.Newest.Before(cut) {
		t.Errorf("stats after retention at %s: oldest %s, newest %s", cut, st.Oldest, st.Newest)
	}

	// Rollups expire with RollupMaxAge.
	if err := s.Retain(t.Context(), flowstore.Retention{MaxAge: 3 * day, RollupMaxAge: 5 * day}, now); err != nil {
		t.Fatalf("retain: %v", err)
	}
	rcut := now.Add(-5 * day)
	checkAge(t, s, rs, cut)
	after := seriesAll()
	for i, p := range after {
		switch {
		case !p.Time.Before(rcut) && p.Value != before[i].Value:
			t.Errorf("rollups at %s: %d flows, want the %d kept (cut %s)", p.Time, p.Value, before[i].Value, rcut)
		case p.Time.Before(rcut.Add(-day)) && p.Value != 0:
			t.Errorf("rollups at %s: %d flows, want none (cut %s)", p.Time, p.Value, rcut)
		}
	}
	// Idempotent.
	if err := s.Retain(t.Context(), flowstore.Retention{MaxAge: 3 * day, RollupMaxAge: 5 * day}, now); err != nil {
		t.Fatalf("retain again: %v", err)
	}
	checkAge(t, s, rs, cut)
}

// checkAge checks that the raw flows at or after cut are all there, and
// none from more than a day before it.
func checkAge(t *testing.T, s flowstore.Store, rs []flowstore.Record, cut time.Time) {
	t.Helper()
	got, _ := scan(t, s, flowstore.ListQuery{Query: flowstore.Query{Since: day0, Until: day0.Add(30 * day)}})
	var kept []flowstore.Record
	for _, r := range got {
		if r.TimeStart.Before(cut.Add(-day)) {
			t.Errorf("flow at %s kept, older than a day before the cut %s", r.TimeStart, cut)
		}
		if !r.TimeStart.Before(cut) {
			kept = append(kept, r)
		}
	}
	if diff := cmp.Diff(sortedRecords(kept), sortedRecords(selectFlows(rs, cut, day0.Add(30*day), nil)), cmpOpts...); diff != "" {
		t.Errorf("flows at or after the cut %s (-got +want):\n%s", cut, diff)
	}
}

func testRetainBySize(t *testing.T, s flowstore.Store) {
	// Six days, so that half the size is more than the newest day and
	// the fixed part of a store (DuckDB's catalog and rollups take a few
	// of its 256 KiB blocks) together.
	const perDay, days = 20_000, 6
	var rs []flowstore.Record
	for d := range days {
		b := Flows(perDay, day0.Add(time.Duration(d)*day), day, uint64(100+d))
		insert(t, s, b)
		rs = append(rs, b...)
	}
	now := day0.Add(days * day)
	// A limit nothing exceeds: a backend may need to settle its files
	// (DuckDB checkpoints its log into blocks) before sizes compare.
	if err := s.Retain(t.Context(), flowstore.Retention{MaxBytes: math.MaxInt64}, now); err != nil {
		t.Fatalf("retain with no effective limit: %v", err)
	}
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Flows != days*perDay || st.Bytes <= 0 {
		t.Fatalf("stats before retention: %+v, want %d flows and some bytes", st, days*perDay)
	}
	limit := st.Bytes / 2
	if err := s.Retain(t.Context(), flowstore.Retention{MaxBytes: limit}, now); err != nil {
		t.Fatalf("retain %d bytes: %v", limit, err)
	}
	after, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("size retention: %d flows in %d bytes, then %d flows in %d bytes (limit %d)", st.Flows, st.Bytes, after.Flows, after.Bytes, limit)
	if after.Bytes > limit {
		t.Errorf("%d bytes after retention to %d", after.Bytes, limit)
	}
	if after.Flows >= st.Flows || !after.Oldest.After(st.Oldest) {
		t.Errorf("stats after retention: %+v: nothing dropped (before: %+v)", after, st)
	}
	if n := count(t, s, day0.Add((days-1)*day), now); n != perDay {
		t.Errorf("the newest day holds %d flows after size retention, want all %d", n, perDay)
	}
	// Older flows go first: what is left is every flow from the oldest
	// kept on.
	if want := len(selectFlows(rs, after.Oldest, now, nil)); int64(want) != after.Flows {
		t.Errorf("%d flows kept, but %d were inserted from the oldest kept (%s) on", after.Flows, want, after.Oldest)
	}

	// The newest partition stays, however small the limit.
	if err := s.Retain(t.Context(), flowstore.Retention{MaxBytes: 1}, now); err != nil {
		t.Fatalf("retain 1 byte: %v", err)
	}
	last, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if last.Flows == 0 || last.Newest.Before(now.Add(-time.Minute)) {
		t.Errorf("stats after retention to 1 byte: %+v, want the newest flows kept", last)
	}
}

func testStats(t *testing.T, s flowstore.Store) {
	rs := Flows(1000, day0.Add(5*time.Hour), 30*time.Hour, 9)
	insert(t, s, rs)
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	sorted := sortedRecords(rs)
	if st.Flows != 1000 || st.Bytes <= 0 || !st.Oldest.Equal(sorted[0].TimeStart) || !st.Newest.Equal(sorted[len(sorted)-1].TimeStart) || st.Backend == "" {
		t.Errorf("stats %+v, want 1000 flows, some bytes, oldest %s, newest %s", st, sorted[0].TimeStart, sorted[len(sorted)-1].TimeStart)
	}
}

func testConcurrentInserts(t *testing.T, s flowstore.Store) {
	const writers, batches, size = 4, 5, 2000
	var wg sync.WaitGroup
	errs := make(chan error, writers*batches)
	var all [writers][]flowstore.Record
	for w := range writers {
		wg.Go(func() {
			for b := range batches {
				rs := Flows(size, day0.Add(time.Duration(b)*time.Hour), time.Hour, uint64(w*100+b))
				all[w] = append(all[w], rs...)
				if err := s.InsertFlows(t.Context(), rs); err != nil {
					errs <- fmt.Errorf("writer %d batch %d: %w", w, b, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	rs := slices.Concat(all[:]...)
	q := flowstore.Query{Since: day0, Until: day0.Add(day)}
	tq := flowstore.TopQuery{Query: q, By: []flowstore.Key{flowstore.KeyExporter}, OrderBy: flowstore.Bytes, Limit: 10}
	if diff := cmp.Diff(top(t, s, tq), refTop(rs, tq), cmpOpts...); diff != "" {
		t.Errorf("top after concurrent inserts (-got +want):\n%s", diff)
	}
	sq := flowstore.SeriesQuery{Query: q, Measure: flowstore.Bytes, Interval: time.Hour}
	if diff := cmp.Diff(series(t, s, sq), refSeries(rs, sq)); diff != "" {
		t.Errorf("series from rollups after concurrent inserts (-got +want):\n%s", diff)
	}
	got, cs := scan(t, s, flowstore.ListQuery{Query: q})
	if len(got) != len(rs) {
		t.Errorf("scan: %d flows, want %d", len(got), len(rs))
	}
	seen := make(map[flowstore.Cursor]bool, len(cs))
	for _, c := range cs {
		if seen[c] {
			t.Errorf("cursor %+v given twice", c)
		}
		seen[c] = true
	}
}

func testInvalidQueries(t *testing.T, s flowstore.Store) {
	insert(t, s, Flows(10, day0, time.Hour, 10))
	ctx := t.Context()
	q := flowstore.Query{Since: day0, Until: day0.Add(time.Hour)}
	topQ := func(mod func(*flowstore.TopQuery)) error {
		tq := flowstore.TopQuery{Query: q, By: []flowstore.Key{flowstore.KeySrcIP}, OrderBy: flowstore.Bytes, Limit: 10}
		mod(&tq)
		_, err := s.Top(ctx, tq)
		return err
	}
	seriesQ := func(mod func(*flowstore.SeriesQuery)) error {
		sq := flowstore.SeriesQuery{Query: q, Measure: flowstore.Bytes, Interval: flowstore.RollupInterval}
		mod(&sq)
		_, err := s.Series(ctx, sq)
		return err
	}
	listQ := func(mod func(*flowstore.ListQuery)) error {
		lq := flowstore.ListQuery{Query: q}
		mod(&lq)
		return s.ScanFlows(ctx, lq, func(flowstore.Record, flowstore.Cursor) error { return nil })
	}
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"top without keys", topQ(func(q *flowstore.TopQuery) { q.By = nil })},
		{"top by an unknown key", topQ(func(q *flowstore.TopQuery) { q.By = []flowstore.Key{"srcip", "colour"} })},
		{"top by an unknown measure", topQ(func(q *flowstore.TopQuery) { q.OrderBy = "octets" })},
		{"top limit 0", topQ(func(q *flowstore.TopQuery) { q.Limit = 0 })},
		{"top limit -1", topQ(func(q *flowstore.TopQuery) { q.Limit = -1 })},
		{"top limit too large", topQ(func(q *flowstore.TopQuery) { q.Limit = flowstore.MaxTopLimit + 1 })},
		{"top without since", topQ(func(q *flowstore.TopQuery) { q.Since = time.Time{} })},
		{"top until before since", topQ(func(q *flowstore.TopQuery) { q.Until = q.Since.Add(-time.Second) })},
		{"top empty range", topQ(func(q *flowstore.TopQuery) { q.Until = q.Since })},
		{"series interval 0", seriesQ(func(q *flowstore.SeriesQuery) { q.Interval = 0 })},
		{"series interval 3m", seriesQ(func(q *flowstore.SeriesQuery) { q.Interval = 3 * time.Minute })},
		{"series interval 7m", seriesQ(func(q *flowstore.SeriesQuery) { q.Interval = 7 * time.Minute })},
		{"series negative interval", seriesQ(func(q *flowstore.SeriesQuery) { q.Interval = -5 * time.Minute })},
		{"series unknown measure", seriesQ(func(q *flowstore.SeriesQuery) { q.Measure = "octets" })},
		{"series without until", seriesQ(func(q *flowstore.SeriesQuery) { q.Until = time.Time{} })},
		{"series too many points", seriesQ(func(q *flowstore.SeriesQuery) { q.Until = q.Since.Add(20 * 365 * day) })},
		{"list negative limit", listQ(func(q *flowstore.ListQuery) { q.Limit = -1 })},
		{"list without since", listQ(func(q *flowstore.ListQuery) { q.Since = time.Time{} })},
	} {
		if !errors.Is(tc.err, flowstore.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", tc.name, tc.err)
		}
	}
}
