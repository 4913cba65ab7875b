package flowmon_test

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/yagura/yagura/internal/auth"
	"github.com/yagura/yagura/internal/flowfilter"
	"github.com/yagura/yagura/internal/flowprofile"
	"github.com/yagura/yagura/internal/flowstore"
)

// memFlows is an in-memory flow store: Top and Series over a slice of
// records, with filters evaluated by flowfilter.Match (the reference the
// real backends are checked against).
type memFlows struct {
	mu       sync.Mutex
	flows    []flowstore.Record
	tops     []flowstore.TopQuery // what was asked, for the tests
	serieses []flowstore.SeriesQuery
}

func filterFlow(r flowstore.Record) flowfilter.Flow {
	return flowfilter.Flow{
		SrcAddr: r.SrcAddr, DstAddr: r.DstAddr, SrcPort: r.SrcPort, DstPort: r.DstPort,
		Proto: r.Proto, IPVersion: r.IPVersion, TCPFlags: r.TCPFlags, Bytes: r.Bytes, Packets: r.Packets,
		TimeStart: r.TimeStart.UnixMicro(), TimeEnd: r.TimeEnd.UnixMicro(), InIf: r.InIf, OutIf: r.OutIf,
		Exporter: r.Exporter.String(),
	}
}

func (m *memFlows) selected(q flowstore.Query) []flowstore.Record {
	var out []flowstore.Record
	for _, r := range m.flows {
		if r.TimeStart.Before(q.Since) || !r.TimeStart.Before(q.Until) {
			continue
		}
		if q.Filter != nil && !flowfilter.Match(q.Filter, filterFlow(r)) {
			continue
		}
		out = append(out, r)
	}
	return out
}

func keyText(k flowstore.Key, r flowstore.Record) string {
	switch k {
	case flowstore.KeySrcIP:
		return r.SrcAddr.String()
	case flowstore.KeyDstIP:
		return r.DstAddr.String()
	case flowstore.KeySrcPort:
		return strconv.Itoa(int(r.SrcPort))
	case flowstore.KeyDstPort:
		return strconv.Itoa(int(r.DstPort))
	case flowstore.KeyProto:
		return strconv.Itoa(int(r.Proto))
	case flowstore.KeyExporter:
		return r.Exporter.String()
	case flowstore.KeyInIf:
		return strconv.Itoa(int(r.InIf))
	case flowstore.KeyOutIf:
		return strconv.Itoa(int(r.OutIf))
	case flowstore.KeyIPVer:
		return strconv.Itoa(int(r.IPVersion))
	}
	panic("unknown key " + k)
}

func measure(m flowstore.Measure, r flowstore.TopRow) uint64 {
	switch m {
	case flowstore.Bytes:
		return r.Bytes
	case flowstore.Packets:
		return r.Packets
	}
	return r.Flows
}

func addTo(row *flowstore.TopRow, r flowstore.Record) {
	if row.Flows == 0 || r.TimeStart.Before(row.FirstSeen) {
		row.FirstSeen = r.TimeStart
	}
	if r.TimeEnd.After(row.LastSeen) {
		row.LastSeen = r.TimeEnd
	}
	row.Bytes += r.Bytes
	row.Packets += r.Packets
	row.Flows++
}

func (m *memFlows) Top(ctx context.Context, q flowstore.TopQuery) (flowstore.TopResult, error) {
	if err := q.Validate(); err != nil {
		return flowstore.TopResult{}, err
	}
	if len(q.By) == 0 || q.Limit < 1 || q.Limit > 10000 {
		return flowstore.TopResult{}, fmt.Errorf("top: by %v, limit %d: %w", q.By, q.Limit, flowstore.ErrInvalid)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tops = append(m.tops, q)
	groups := map[string]*flowstore.TopRow{}
	var res flowstore.TopResult
	for _, r := range m.selected(q.Query) {
		keys := make([]string, len(q.By))
		for i, k := range q.By {
			keys[i] = keyText(k, r)
		}
		id := strings.Join(keys, "\x00")
		g, ok := groups[id]
		if !ok {
			g = &flowstore.TopRow{Keys: keys}
			groups[id] = g
		}
		addTo(g, r)
		addTo(&res.Total, r)
	}
	for _, g := range groups {
		res.Rows = append(res.Rows, *g)
	}
	slices.SortFunc(res.Rows, func(a, b flowstore.TopRow) int {
		if c := cmp.Compare(measure(q.OrderBy, b), measure(q.OrderBy, a)); c != 0 {
			return c
		}
		return slices.Compare(a.Keys, b.Keys)
	})
	if len(res.Rows) > q.Limit {
		res.Rows = res.Rows[:q.Limit]
	}
	return res, nil
}

func (m *memFlows) Series(ctx context.Context, q flowstore.SeriesQuery) ([]flowstore.Point, error) {
	if q.Interval <= 0 || q.Interval%flowstore.RollupInterval != 0 {
		return nil, fmt.Errorf("series interval %s: %w", q.Interval, flowstore.ErrInvalid)
	}
	q.Since, q.Until = q.Since.Truncate(q.Interval), q.Until.Truncate(q.Interval)
	if err := q.Validate(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.serieses = append(m.serieses, q)
	var pts []flowstore.Point
	for t := q.Since; t.Before(q.Until); t = t.Add(q.Interval) {
		pts = append(pts, flowstore.Point{Time: t})
	}
	for _, r := range m.selected(q.Query) {
		if q.Proto != 0 && r.Proto != q.Proto {
			continue
		}
		i := int(r.TimeStart.Sub(q.Since) / q.Interval)
		var row flowstore.TopRow
		addTo(&row, r)
		pts[i].Value += measure(q.Measure, row)
	}
	return pts, nil
}

// profiles is an in-memory profile source with "live" built from the
// exporters.
type profiles struct {
	exporters []flowprofile.Exporter
	others    []flowprofile.Profile
}

func (p profiles) all() []flowprofile.Profile {
	return append([]flowprofile.Profile{flowprofile.Live(p.exporters)}, p.others...)
}

func (p profiles) Profile(ctx context.Context, id string) (flowprofile.Profile, error) {
	for _, pr := range p.all() {
		if pr.ID == id {
			return pr, nil
		}
	}
	return flowprofile.Profile{}, fmt.Errorf("profile %q: %w", id, flowprofile.ErrNotFound)
}

func (p profiles) Profiles(ctx context.Context) ([]flowprofile.Profile, error) { return p.all(), nil }

// tokens authenticates fixed bearer tokens.
type tokens map[string]auth.Principal

func (t tokens) Authenticate(ctx context.Context, bearer string) (auth.Principal, bool) {
	p, ok := t[bearer]
	return p, ok
}

var (
	t0 = time.Date(2025, 2, 3, 10, 0, 0, 0, time.UTC)
	r1 = netip.MustParseAddr("192.0.2.1")
	r2 = netip.MustParseAddr("192.0.2.2")
)

func flow(exp netip.Addr, src, dst string, proto uint8, sp, dp uint16, bytes, pkts uint64, start, end time.Duration) flowstore.Record {
	return flowstore.Record{
		TimeStart: t0.Add(start), TimeEnd: t0.Add(end), Exporter: exp, IPVersion: 4,
		SrcAddr: netip.MustParseAddr(src), DstAddr: netip.MustParseAddr(dst), SrcPort: sp, DstPort: dp,
		Proto: proto, Bytes: bytes, Packets: pkts, SamplingRate: 1,
	}
}

// testFlows: in 10:00–10:10, 10.0.0.1 → 10.0.0.2 three times (two TCP via
// r1, one ICMP via r2) and one DNS exchange via r2; one more flow after
// 10:10.
func testFlows() []flowstore.Record {
	return []flowstore.Record{
		flow(r1, "10.0.0.1", "10.0.0.2", 6, 40001, 443, 1000, 10, 1*time.Minute, 2*time.Minute),
		flow(r1, "10.0.0.1", "10.0.0.2", 6, 40002, 443, 2000, 20, 6*time.Minute, 7*time.Minute+30*time.Second),
		flow(r2, "10.0.0.3", "10.0.0.4", 17, 53, 53, 500, 5, 3*time.Minute, 3*time.Minute),
		flow(r2, "10.0.0.1", "10.0.0.2", 1, 0, 0, 100, 1, 8*time.Minute, 8*time.Minute),
		flow(r1, "10.0.0.5", "10.0.0.6", 6, 40003, 80, 9999, 99, 12*time.Minute, 13*time.Minute),
	}
}
