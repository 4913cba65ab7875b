package flowstoretest

import (
	"bytes"
	"cmp"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/yagura/yagura/internal/flowfilter"
	"github.com/yagura/yagura/internal/flowstore"
)

// Flows makes n synthetic flows with TimeStart spread evenly over [from,
// from+span), the same for the same seed. They look like an enterprise
// edge seen by 4 exporters, and each backend's bulk loader for the top-N
// benchmark produces the same shape in SQL:
//
//   - sources: ~65,000 addresses of 10.1.0.0/16 (5 % IPv6 in
//     2001:db8:1::/112 instead);
//   - destinations: 1,000 addresses of 198.18.0.0/22 (IPv6:
//     2001:db8:2::/118);
//   - protocols: 70 % TCP, 25 % UDP, 5 % ICMP; TCP/UDP destination ports
//     from a list of ten services, source ports 32768–65535;
//   - exporters 10.255.0.1–4, interfaces 1–16, 1–1,000 packets of 40–1,500
//     bytes, durations up to 60 s, unsampled.
func Flows(n int, from time.Time, span time.Duration, seed uint64) []flowstore.Record {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	out := make([]flowstore.Record, n)
	step := span / time.Duration(max(n, 1))
	for i := range out {
		out[i] = flow(rng, from.Add(time.Duration(i)*step))
	}
	return out
}

var (
	benchExporters = []netip.Addr{
		netip.AddrFrom4([4]byte{10, 255, 0, 1}), netip.AddrFrom4([4]byte{10, 255, 0, 2}),
		netip.AddrFrom4([4]byte{10, 255, 0, 3}), netip.AddrFrom4([4]byte{10, 255, 0, 4}),
	}
	benchPorts = []uint16{443, 80, 53, 22, 25, 123, 3389, 8080, 445, 993}
)

func flow(rng *rand.Rand, at time.Time) flowstore.Record {
	r := flowstore.Record{
		TimeStart:    at,
		Exporter:     benchExporters[rng.IntN(len(benchExporters))],
		InIf:         1 + rng.Uint32N(16),
		OutIf:        1 + rng.Uint32N(16),
		SamplingRate: 1,
	}
	src, dst := rng.IntN(65536), rng.IntN(1000)
	if rng.IntN(20) == 0 {
		r.IPVersion = 6
		r.SrcAddr = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 14: byte(src >> 8), 15: byte(src)})
		r.DstAddr = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 2, 14: byte(dst >> 8), 15: byte(dst)})
	} else {
		r.IPVersion = 4
		r.SrcAddr = netip.AddrFrom4([4]byte{10, 1, byte(src >> 8), byte(src)})
		r.DstAddr = netip.AddrFrom4([4]byte{198, 18, byte(dst >> 8), byte(dst)})
	}
	switch p := rng.IntN(20); {
	case p < 14:
		r.Proto = 6
		r.TCPFlags = []uint8{0x02, 0x12, 0x18, 0x19, 0x1b, 0x14}[rng.IntN(6)]
	case p < 19:
		r.Proto = 17
	default:
		r.Proto = 1
		if r.IPVersion == 6 {
			r.Proto = 58
		}
	}
	if r.Proto == 6 || r.Proto == 17 {
		r.SrcPort = uint16(32768 + rng.IntN(32768))
		r.DstPort = benchPorts[rng.IntN(len(benchPorts))]
	}
	r.Packets = 1 + rng.Uint64N(1000)
	r.Bytes = r.Packets * (40 + rng.Uint64N(1461))
	r.TimeEnd = at.Add(time.Duration(rng.Int64N(int64(60 * time.Second))))
	return r
}

// stored is r as a store gives it back: times in UTC, truncated to
// microseconds.
func stored(r flowstore.Record) flowstore.Record {
	r.TimeStart = r.TimeStart.UTC().Truncate(time.Microsecond)
	r.TimeEnd = r.TimeEnd.UTC().Truncate(time.Microsecond)
	return r
}

// filterFlow is r as the filter language sees it.
func filterFlow(r flowstore.Record) flowfilter.Flow {
	r = stored(r)
	return flowfilter.Flow{
		SrcAddr: r.SrcAddr, DstAddr: r.DstAddr,
		SrcPort: r.SrcPort, DstPort: r.DstPort,
		Proto: r.Proto, IPVersion: r.IPVersion, TCPFlags: r.TCPFlags,
		Bytes: r.Bytes, Packets: r.Packets,
		TimeStart: r.TimeStart.UnixMicro(), TimeEnd: r.TimeEnd.UnixMicro(),
		InIf: r.InIf, OutIf: r.OutIf,
		Exporter: flowstore.ExporterText(r.Exporter),
	}
}

// selectFlows is the reference selection: TimeStart in [since, until) and
// the filter matches.
func selectFlows(rs []flowstore.Record, since, until time.Time, f flowfilter.Expr) []flowstore.Record {
	var out []flowstore.Record
	for _, r := range rs {
		r = stored(r)
		if r.TimeStart.Before(since) || !r.TimeStart.Before(until) {
			continue
		}
		if f != nil && !flowfilter.Match(f, filterFlow(r)) {
			continue
		}
		out = append(out, r)
	}
	return out
}

// keyValue is a record's value for an aggregation key: its text as Top
// renders it, and what ties are broken by (numbers numerically, addresses
// by their 16 stored bytes, the exporter as a string).
func keyValue(r flowstore.Record, k flowstore.Key) (text string, num uint64, raw string) {
	addr := func(a netip.Addr) (string, uint64, string) {
		b := flowfilter.Addr16(a)
		return flowstore.AddrText(b[:]), 0, string(b[:])
	}
	n := func(v uint64) (string, uint64, string) { return strconv.FormatUint(v, 10), v, "" }
	switch k {
	case flowstore.KeySrcIP:
		return addr(r.SrcAddr)
	case flowstore.KeyDstIP:
		return addr(r.DstAddr)
	case flowstore.KeySrcPort:
		return n(uint64(r.SrcPort))
	case flowstore.KeyDstPort:
		return n(uint64(r.DstPort))
	case flowstore.KeyProto:
		return n(uint64(r.Proto))
	case flowstore.KeyInIf:
		return n(uint64(r.InIf))
	case flowstore.KeyOutIf:
		return n(uint64(r.OutIf))
	case flowstore.KeyIPVer:
		return n(uint64(r.IPVersion))
	case flowstore.KeyExporter:
		e := flowstore.ExporterText(r.Exporter)
		return e, 0, e
	}
	panic("flowstoretest: unknown key " + string(k))
}

// refTop is the reference top-N statistic over rs.
func refTop(rs []flowstore.Record, q flowstore.TopQuery) flowstore.TopResult {
	type group struct {
		row  flowstore.TopRow
		nums []uint64
		raws []string
	}
	groups := map[string]*group{}
	var order []*group
	var res flowstore.TopResult
	add := func(row *flowstore.TopRow, r flowstore.Record) {
		row.Bytes += r.Bytes
		row.Packets += r.Packets
		row.Flows++
		if row.FirstSeen.IsZero() || r.TimeStart.Before(row.FirstSeen) {
			row.FirstSeen = r.TimeStart
		}
		if row.LastSeen.IsZero() || r.TimeEnd.After(row.LastSeen) {
			row.LastSeen = r.TimeEnd
		}
	}
	for _, r := range selectFlows(rs, q.Since, q.Until, q.Filter) {
		add(&res.Total, r)
		texts := make([]string, len(q.By))
		nums := make([]uint64, len(q.By))
		raws := make([]string, len(q.By))
		for i, k := range q.By {
			texts[i], nums[i], raws[i] = keyValue(r, k)
		}
		id := strings.Join(raws, "\x00") + "\x01" + strings.Join(texts, "\x00")
		g := groups[id]
		if g == nil {
			g = &group{row: flowstore.TopRow{Keys: texts}, nums: nums, raws: raws}
			groups[id] = g
			order = append(order, g)
		}
		add(&g.row, r)
	}
	slices.SortFunc(order, func(a, b *group) int {
		if c := cmp.Compare(b.row.Value(q.OrderBy), a.row.Value(q.OrderBy)); c != 0 {
			return c
		}
		for i := range a.nums {
			if c := cmp.Compare(a.nums[i], b.nums[i]); c != 0 {
				return c
			}
			if c := strings.Compare(a.raws[i], b.raws[i]); c != 0 {
				return c
			}
		}
		return 0
	})
	for i, g := range order {
		if i == q.Limit {
			break
		}
		res.Rows = append(res.Rows, g.row)
	}
	return res
}

// refSeries is the reference series over rs.
func refSeries(rs []flowstore.Record, q flowstore.SeriesQuery) []flowstore.Point {
	start, n := q.Buckets()
	out := make([]flowstore.Point, n)
	for i := range out {
		out[i].Time = start.Add(time.Duration(i) * q.Interval)
	}
	end := start.Add(time.Duration(n) * q.Interval)
	for _, r := range selectFlows(rs, start, end, q.Filter) {
		if q.Proto != 0 && r.Proto != q.Proto {
			continue
		}
		i := int(r.TimeStart.Sub(start) / q.Interval)
		switch q.Measure {
		case flowstore.Bytes:
			out[i].Value += r.Bytes
		case flowstore.Packets:
			out[i].Value += r.Packets
		case flowstore.Flows:
			out[i].Value++
		}
	}
	return out
}

// compareRecords is a total order on records, to compare sets of them.
func compareRecords(a, b flowstore.Record) int {
	a16, b16 := flowfilter.Addr16(a.SrcAddr), flowfilter.Addr16(b.SrcAddr)
	c16, d16 := flowfilter.Addr16(a.DstAddr), flowfilter.Addr16(b.DstAddr)
	e16, f16 := flowfilter.Addr16(a.Exporter), flowfilter.Addr16(b.Exporter)
	return cmp.Or(
		a.TimeStart.Compare(b.TimeStart),
		a.TimeEnd.Compare(b.TimeEnd),
		bytes.Compare(a16[:], b16[:]),
		bytes.Compare(c16[:], d16[:]),
		bytes.Compare(e16[:], f16[:]),
		cmp.Compare(a.SrcPort, b.SrcPort),
		cmp.Compare(a.DstPort, b.DstPort),
		cmp.Compare(a.Proto, b.Proto),
		cmp.Compare(a.IPVersion, b.IPVersion),
		cmp.Compare(a.TCPFlags, b.TCPFlags),
		cmp.Compare(a.InIf, b.InIf),
		cmp.Compare(a.OutIf, b.OutIf),
		cmp.Compare(a.Bytes, b.Bytes),
		cmp.Compare(a.Packets, b.Packets),
		cmp.Compare(a.SamplingRate, b.SamplingRate),
	)
}

func sortedRecords(rs []flowstore.Record) []flowstore.Record {
	out := make([]flowstore.Record, len(rs))
	for i, r := range rs {
		out[i] = stored(r)
	}
	slices.SortFunc(out, compareRecords)
	return out
}
