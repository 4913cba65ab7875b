package api

import (
	"cmp"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/yagura/yagura/internal/auth"
	"github.com/yagura/yagura/internal/collector"
	"github.com/yagura/yagura/internal/flowfilter"
	"github.com/yagura/yagura/internal/flowstore"
	"github.com/yagura/yagura/internal/store"
	"github.com/yagura/yagura/internal/store/sqlite"
)

// memFlows is an in-memory flow store: flowfilter.Match selects, Go
// aggregates. It records the queries it is asked, so tests can see what
// the API sent (filters with exporter names resolved, limits).
type memFlows struct {
	mu      sync.Mutex
	records []flowstore.Record // seq = index + 1
	queries []flowstore.Query
	fail    error
}

func (m *memFlows) selected(q flowstore.Query) []int {
	m.queries = append(m.queries, q)
	var out []int
	for i, r := range m.records {
		if r.TimeStart.Before(q.Since) || !r.TimeStart.Before(q.Until) {
			continue
		}
		if q.Filter != nil && !flowfilter.Match(q.Filter, filterFlow(r)) {
			continue
		}
		out = append(out, i)
	}
	return out
}

func filterFlow(r flowstore.Record) flowfilter.Flow {
	return flowfilter.Flow{SrcAddr: r.SrcAddr, DstAddr: r.DstAddr, SrcPort: r.SrcPort, DstPort: r.DstPort, Proto: r.Proto,
		IPVersion: r.IPVersion, TCPFlags: r.TCPFlags, Bytes: r.Bytes, Packets: r.Packets,
		TimeStart: r.TimeStart.UnixMicro(), TimeEnd: r.TimeEnd.UnixMicro(), InIf: r.InIf, OutIf: r.OutIf,
		Exporter: store.FlowExporterKey(r.Exporter)}
}

func keyText(r flowstore.Record, k flowstore.Key) string {
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
		return store.FlowExporterKey(r.Exporter)
	case flowstore.KeyInIf:
		return strconv.Itoa(int(r.InIf))
	case flowstore.KeyOutIf:
		return strconv.Itoa(int(r.OutIf))
	}
	return strconv.Itoa(int(r.IPVersion))
}

func add(row *flowstore.TopRow, r flowstore.Record) {
	row.Bytes += r.Bytes
	row.Packets += r.Packets
	row.Flows++
	if row.FirstSeen.IsZero() || r.TimeStart.Before(row.FirstSeen) {
		row.FirstSeen = r.TimeStart
	}
	if r.TimeEnd.After(row.LastSeen) {
		row.LastSeen = r.TimeEnd
	}
}

func (m *memFlows) Top(_ context.Context, q flowstore.TopQuery) (flowstore.TopResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return flowstore.TopResult{}, m.fail
	}
	if err := q.Validate(); err != nil {
		return flowstore.TopResult{}, err
	}
	groups := map[string]*flowstore.TopRow{}
	var res flowstore.TopResult
	for _, i := range m.selected(q.Query) {
		r := m.records[i]
		var keys []string
		for _, k := range q.By {
			keys = append(keys, keyText(r, k))
		}
		id := strings.Join(keys, "\x00")
		if groups[id] == nil {
			groups[id] = &flowstore.TopRow{Keys: keys}
		}
		add(groups[id], r)
		add(&res.Total, r)
	}
	for _, g := range groups {
		res.Rows = append(res.Rows, *g)
	}
	slices.SortFunc(res.Rows, func(a, b flowstore.TopRow) int {
		return cmp.Or(cmp.Compare(measureOf(b, q.OrderBy), measureOf(a, q.OrderBy)), slices.Compare(a.Keys, b.Keys))
	})
	res.Rows = res.Rows[:min(len(res.Rows), q.Limit)]
	return res, nil
}

func (m *memFlows) Series(_ context.Context, q flowstore.SeriesQuery) ([]flowstore.Point, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if q.Interval <= 0 || q.Interval%flowstore.RollupInterval != 0 {
		return nil, fmt.Errorf("interval %s: %w", q.Interval, flowstore.ErrInvalid)
	}
	q.Since, q.Until = q.Since.Truncate(q.Interval), q.Until.Truncate(q.Interval)
	if err := q.Validate(); err != nil {
		return nil, err
	}
	var pts []flowstore.Point
	for t := q.Since; t.Before(q.Until); t = t.Add(q.Interval) {
		pts = append(pts, flowstore.Point{Time: t})
	}
	for _, i := range m.selected(q.Query) {
		r := m.records[i]
		if q.Proto != 0 && r.Proto != q.Proto {
			continue
		}
		p := &pts[r.TimeStart.Sub(q.Since)/q.Interval]
		switch q.Measure {
		case flowstore.Bytes:
			p.Value += r.Bytes
		case flowstore.Packets:
			p.Value += r.Packets
		default:
			p.Value++
		}
	}
	return pts, nil
}

func (m *memFlows) ScanFlows(ctx context.Context, q flowstore.ListQuery, fn func(flowstore.Record, flowstore.Cursor) error) error {
	m.mu.Lock()
	if m.fail != nil {
		m.mu.Unlock()
		return m.fail
	}
	if err := q.Validate(); err != nil {
		m.mu.Unlock()
		return err
	}
	type item struct {
		r flowstore.Record
		c flowstore.Cursor
	}
	var items []item
	for _, i := range m.selected(q.Query) {
		items = append(items, item{m.records[i], flowstore.Cursor{TimeStart: m.records[i].TimeStart, Seq: uint64(i + 1)}})
	}
	m.mu.Unlock()
	slices.SortFunc(items, func(a, b item) int {
		return cmp.Or(b.c.TimeStart.Compare(a.c.TimeStart), cmp.Compare(b.c.Seq, a.c.Seq))
	})
	n := 0
	for _, it := range items {
		if q.After != nil && (it.c.TimeStart.After(q.After.TimeStart) || it.c.TimeStart.Equal(q.After.TimeStart) && it.c.Seq >= q.After.Seq) {
			continue
		}
		if q.Limit > 0 && n == q.Limit {
			break
		}
		n++
		if err := fn(it.r, it.c); err != nil {
			return err
		}
	}
	return nil
}

func (m *memFlows) Stats(context.Context) (flowstore.Stats, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := flowstore.Stats{Backend: "memory", Flows: int64(len(m.records)), Bytes: int64(len(m.records)) * 64}
	for _, r := range m.records {
		if st.Oldest.IsZero() || r.TimeStart.Before(st.Oldest) {
			st.Oldest = r.TimeStart
		}
		if r.TimeStart.After(st.Newest) {
			st.Newest = r.TimeStart
		}
	}
	return st, nil
}

func (m *memFlows) lastQuery(t *testing.T) flowstore.Query {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.queries) == 0 {
		t.Fatal("the flow store was not asked")
	}
	return m.queries[len(m.queries)-1]
}

// memCollector stands in for the collector.
type memCollector struct {
	mu        sync.Mutex
	exporters []collector.ExporterStatus
	settings  map[netip.Addr]collector.ExporterSettings
	pushes    int
}

func (c *memCollector) Exporters() []collector.ExporterStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.exporters)
}

func (c *memCollector) Listeners() []collector.ListenerStatus {
	return []collector.ListenerStatus{{Protocol: "netflow", Address: "127.0.0.1:2055", Sockets: 2, ReadBuffer: 64 << 20, Datagrams: 10, KernelDrops: 1}}
}

func (c *memCollector) SetExporterSettings(m map[netip.Addr]collector.ExporterSettings) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.settings, c.pushes = maps.Clone(m), c.pushes+1
}

// now is the test clock: flows are stored in the hour before it.
var flowNow = time.Date(2025, 4, 1, 10, 0, 0, 0, time.UTC)

var (
	rtA  = netip.MustParseAddr("192.0.2.1")
	rtB  = netip.MustParseAddr("192.0.2.2")
	rtV6 = netip.MustParseAddr("2001:db8::1") // stored only: silent
)

func rec(ago time.Duration, exporter netip.Addr, src, dst string, sport, dport uint16, proto uint8, bytes, pkts uint64, rate uint32) flowstore.Record {
	start := flowNow.Add(-ago)
	return flowstore.Record{TimeStart: start, TimeEnd: start.Add(2 * time.Second), Exporter: exporter, InIf: 1, OutIf: 2, IPVersion: 4,
		SrcAddr: netip.MustParseAddr(src), DstAddr: netip.MustParseAddr(dst), SrcPort: sport, DstPort: dport, Proto: proto,
		Bytes: bytes * uint64(rate), Packets: pkts * uint64(rate), SamplingRate: rate}
}

type flowsEnv struct {
	mux   *http.ServeMux
	db    *store.DB
	flows *memFlows
	coll  *memCollector
}

// flowsAPI is the API over a real SQLite state store, an in-memory flow
// store with a few flows and a collector that hears rtA and rtB.
func flowsAPI(tb testing.TB) *flowsEnv {
	tb.Helper()
	db, err := sqlite.Open(tb.Context(), filepath.Join(tb.TempDir(), "state.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	if _, err := db.UpsertFlowExporterSeen(tb.Context(), rtV6, flowNow.Add(-48*time.Hour)); err != nil {
		tb.Fatal(err)
	}
	env := &flowsEnv{db: db, flows: &memFlows{records: []flowstore.Record{
		rec(50*time.Minute, rtA, "10.0.0.1", "203.0.113.5", 40000, 443, 6, 1000, 10, 1),
		rec(40*time.Minute, rtA, "10.0.0.1", "203.0.113.5", 40001, 443, 6, 3000, 20, 1),
		rec(30*time.Minute, rtB, "10.0.0.2", "203.0.113.6", 5353, 53, 17, 100, 1, 100),
		rec(20*time.Minute, rtB, "10.0.0.3", "203.0.113.5", 40002, 80, 6, 500, 5, 100),
		rec(2*time.Minute, rtA, "10.0.0.2", "198.51.100.7", 40003, 22, 6, 200, 4, 1),
		rec(90*time.Minute, rtA, "10.0.0.9", "203.0.113.9", 1, 2, 6, 99999, 9, 1), // before the default hour
	}}, coll: &memCollector{exporters: []collector.ExporterStatus{
		{Address: rtA, Protocols: []string{"netflow9"}, FirstSeen: flowNow.Add(-time.Hour), LastSeen: flowNow.Add(-time.Minute),
			Packets: 100, Flows: 5, Templates: 2, SamplingRate: 1},
		{Address: rtB, Protocols: []string{"ipfix"}, FirstSeen: flowNow.Add(-time.Hour), LastSeen: flowNow.Add(-2 * time.Minute),
			Packets: 50, Flows: 2, SamplingRate: 100, SamplingSource: "options-template", SamplingWarning: "changed from 10 to 100"},
	}}}
	env.mux = http.NewServeMux()
	New(env.mux, Deps{Store: db, Flows: env.flows, FlowCollector: env.coll, Log: slog.New(slog.DiscardHandler),
		Now: func() time.Time { return flowNow }, Auth: staticAuth{
			"admin":    {Subject: "user:admin", Role: auth.RoleAdmin},
			"auditor":  {Subject: "user:audrey", Role: auth.RoleAuditor},
			"operator": {Subject: "user:olivia", Role: auth.RoleOperator},
		}})
	return env
}

// get calls GET path with query parameters as admin.
func (e *flowsEnv) get(t *testing.T, path string, q url.Values) answer {
	t.Helper()
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return do(t, e.mux, http.MethodGet, path, "")
}

// send calls a write with an If-Match header (if not empty), as who.
func (e *flowsEnv) send(t *testing.T, who, method, path, ifMatch, body string) (answer, http.Header) {
	t.Helper()
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer "+who)
	if ifMatch != "" {
		r.Header.Set("If-Match", ifMatch)
	}
	w := httptest.NewRecorder()
	e.mux.ServeHTTP(w, r)
	return answer{w.Code, w.Body.Bytes()}, w.Header()
}

func vals(kv ...string) url.Values {
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	return q
}

// wantDetail checks an error answer's status and that it names location
// with a message containing msg.
func (a answer) wantDetail(t *testing.T, status int, location, msg string) {
	t.Helper()
	if a.status != status {
		t.Fatalf("got %s, want %d", a, status)
	}
	for _, e := range a.problem(t).Errors {
		if e.Location == location && strings.Contains(e.Message, msg) {
			return
		}
	}
	t.Errorf("got %s, want an error at %s saying %q", a, location, msg)
}

// wantProblem checks an error answer's status and detail.
func (a answer) wantProblem(t *testing.T, status int, detail string) {
	t.Helper()
	if a.status != status {
		t.Fatalf("got %s, want %d", a, status)
	}
	if p := a.problem(t); !strings.Contains(p.Detail, detail) {
		t.Errorf("detail %q, want it to contain %q", p.Detail, detail)
	}
}

func TestFlowsDisabled(t *testing.T) {
	db, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	mux := http.NewServeMux()
	New(mux, Deps{Store: db, Log: slog.New(slog.DiscardHandler), Auth: staticAuth{"admin": {Subject: "user:admin", Role: auth.RoleAdmin}}})
	for _, rt := range []struct{ method, path, body string }{
		{"GET", "/api/v1/flows/top", ""}, {"GET", "/api/v1/flows/top/export", ""}, {"GET", "/api/v1/flows/series", ""},
		{"GET", "/api/v1/flows/series/export", ""}, {"GET", "/api/v1/flows", ""}, {"GET", "/api/v1/flows/export", ""},
		{"GET", "/api/v1/flows/exporters", ""}, {"PATCH", "/api/v1/flows/exporters/192.0.2.1", `{"name":"x"}`},
		{"GET", "/api/v1/flows/stats", ""}, {"GET", "/api/v1/flows/profiles", ""}, {"GET", "/api/v1/flows/profiles/live", ""},
		{"POST", "/api/v1/flows/profiles", `{"id":"x","name":"x"}`}, {"PUT", "/api/v1/flows/profiles/x", `{"name":"x"}`},
		{"DELETE", "/api/v1/flows/profiles/x", ""},
	} {
		do(t, mux, rt.method, rt.path, rt.body).wantProblem(t, http.StatusServiceUnavailable, "set flows.enabled: true")
	}
}

func TestFlowTop(t *testing.T) {
	env := flowsAPI(t)
	var top FlowTop
	env.get(t, "/api/v1/flows/top", vals("by", "srcip,dstip", "order", "bytes", "limit", "2")).want(t, http.StatusOK, &top)
	hour := flowNow.Add(-time.Hour)
	want := FlowTop{
		FlowSelected: FlowSelected{From: hour, To: flowNow, Profile: "live", Channels: []string{}, Filter: "any"},
		By:           []string{"srcip", "dstip"}, Order: "bytes",
		Rows: []FlowTopRow{
			{Keys: map[string]string{"srcip": "10.0.0.3", "dstip": "203.0.113.5"}, Bytes: 50000, Packets: 500, Flows: 1,
				FirstSeen: flowNow.Add(-20 * time.Minute), LastSeen: flowNow.Add(-20*time.Minute + 2*time.Second), Share: 50000.0 / 64200},
			{Keys: map[string]string{"srcip": "10.0.0.2", "dstip": "203.0.113.6"}, Bytes: 10000, Packets: 100, Flows: 1,
				FirstSeen: flowNow.Add(-30 * time.Minute), LastSeen: flowNow.Add(-30*time.Minute + 2*time.Second), Share: 10000.0 / 64200},
		},
		Total: FlowTotals{Bytes: 64200, Packets: 634, Flows: 5, FirstSeen: ptime(flowNow.Add(-50 * time.Minute)), LastSeen: ptime(flowNow.Add(-2*time.Minute + 2*time.Second))},
	}
	if d := gocmp.Diff(top, want, cmpopts.EquateApprox(0, 1e-9)); d != "" {
		t.Errorf("top (-got +want):\n%s", d)
	}

	// Flowmon's time form, order by flows, the default key; by exporter
	// names the exporters.
	env.get(t, "/api/v1/flows/top", vals("from", "2025-04-01 09:00", "to", "2025-04-01 09:35", "order", "flows", "by", "exporter")).want(t, http.StatusOK, &top)
	if top.From != hour || !top.To.Equal(flowNow.Add(-25*time.Minute)) || len(top.Rows) != 2 || top.Rows[0].Keys["exporter"] != "192.0.2.1" ||
		top.Rows[0].Flows != 2 || top.Rows[1].Flows != 1 || top.Total.Flows != 3 {
		t.Errorf("top by exporter 09:00–09:35 = %+v", top)
	}
	if _, err := env.db.UpdateFlowExporter(t.Context(), store.FlowExporter{Address: rtA, Name: "core", UpdatedAt: flowNow}, 0); err != nil {
		t.Fatal(err)
	}
	env.get(t, "/api/v1/flows/top", vals("by", "exporter,proto")).want(t, http.StatusOK, &top)
	if d := gocmp.Diff(top.ExporterNames, map[string]string{"192.0.2.1": "core"}); d != "" {
		t.Errorf("exporter names (-got +want):\n%s", d)
	}

	// CSV: the same rows.
	a := env.get(t, "/api/v1/flows/top/export", vals("by", "srcip,dstport", "limit", "2", "filter", "proto tcp"))
	if a.status != http.StatusOK || !strings.HasPrefix(string(a.body), "\ufeff") {
		t.Fatalf("top export: %s", a)
	}
	rows, err := csv.NewReader(strings.NewReader(strings.TrimPrefix(string(a.body), "\ufeff"))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if d := gocmp.Diff(rows, [][]string{
		{"srcip", "dstport", "bytes", "packets", "flows", "first_seen", "last_seen", "share"},
		{"10.0.0.3", "80", "50000", "500", "1", "2025-04-01T09:40:00Z", "2025-04-01T09:40:02Z", "0.922509"},
		{"10.0.0.1", "443", "4000", "30", "2", "2025-04-01T09:10:00Z", "2025-04-01T09:20:02Z", "0.073801"},
	}); d != "" {
		t.Errorf("top CSV (-got +want):\n%s", d)
	}

	for _, tt := range []struct {
		name          string
		q             url.Values
		location, msg string
	}{
		{"unknown key", vals("by", "srcip,color"), "query.by", "use srcip, dstip"},
		{"key twice", vals("by", "srcip,srcip"), "query.by", "twice"},
		{"bad order", vals("order", "size"), "query.order", "bytes"},
		{"bad from", vals("from", "yesterday"), "query.from", `"2025-04-01 00:00" (UTC)`},
		{"bad to", vals("to", "2025-13-01 00:00"), "query.to", "RFC 3339"},
		{"to before from", vals("from", "2025-04-01 09:00", "to", "2025-04-01T08:00:00Z"), "query.to", "must be after from"},
		{"limit", vals("limit", "0"), "query.limit", ""},
		{"centuries", vals("from", "0001-01-01"), "query.from", "longer than 100 years"},
		{"syntax", vals("filter", "proto tcp and port"), "query.filter", "column 19: expected a port number"},
		{"syntax in Japanese text", vals("filter", "host 東京"), "query.filter", "column 6"},
		{"unknown exporter", vals("filter", "exporter edge"), "query.filter", `no exporter is named "edge"; the named exporters are "core" (192.0.2.1)`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env.get(t, "/api/v1/flows/top", tt.q).wantDetail(t, http.StatusUnprocessableEntity, tt.location, tt.msg)
		})
	}
}

func TestFlowFilterExporterNames(t *testing.T) {
	env := flowsAPI(t)
	// Before any exporter has a name.
	env.get(t, "/api/v1/flows", vals("filter", "exporter core")).wantDetail(t, http.StatusUnprocessableEntity, "query.filter", "none has a name yet")
	var ex FlowExporter
	a, h := env.send(t, "admin", "PATCH", "/api/v1/flows/exporters/192.0.2.2", "", `{"name":"edge \"east\""}`)
	a.want(t, http.StatusOK, &ex)
	if h.Get("ETag") != `"2"` && h.Get("ETag") != `"1"` {
		t.Errorf("ETag %q", h.Get("ETag"))
	}
	var page FlowPage
	env.get(t, "/api/v1/flows", vals("filter", `exporter 'edge "east"' or exporter 192.0.2.1 and dst port 22`)).want(t, http.StatusOK, &page)
	if got, want := env.flows.lastQuery(t).Filter.String(), `exporter "192.0.2.2" or exporter "192.0.2.1" and dst port 22`; got != want {
		t.Errorf("filter sent to the store %q, want %q", got, want)
	}
	if len(page.Items) != 3 || page.Items[0].ExporterName != "" || page.Items[1].ExporterName != `edge "east"` {
		t.Errorf("flows of edge and core:22 = %+v", page.Items)
	}
	// Inside not and parentheses, and an IPv4-mapped address.
	env.get(t, "/api/v1/flows", vals("filter", `not (exporter ::ffff:192.0.2.1 or exporter 'edge "east"')`)).want(t, http.StatusOK, &page)
	if got, want := env.flows.lastQuery(t).Filter.String(), `not (exporter "192.0.2.1" or exporter "192.0.2.2")`; got != want {
		t.Errorf("filter sent to the store %q, want %q", got, want)
	}
	if len(page.Items) != 0 {
		t.Errorf("flows of no exporter: %+v", page.Items)
	}
}

func TestFlowSeries(t *testing.T) {
	env := flowsAPI(t)
	var s FlowSeries
	// Flowmon's chart: a 10-minute range on 5-minute intervals is 2 values.
	env.get(t, "/api/v1/flows/series", vals("from", "2025-04-01 09:10", "to", "2025-04-01 09:20", "measure", "traffic")).want(t, http.StatusOK, &s)
	if d := gocmp.Diff(s.Points, []FlowPoint{
		{Time: flowNow.Add(-50 * time.Minute), Value: 1000, Rate: 1000 * 8 / 300.0},
		{Time: flowNow.Add(-45 * time.Minute), Value: 0, Rate: 0},
	}, cmpopts.EquateApprox(0, 1e-9)); d != "" {
		t.Errorf("points (-got +want):\n%s", d)
	}
	if s.Unit != "bit/s" || s.Interval != "5m0s" || s.IntervalSeconds != 300 || s.Total != 1000 || s.Measure != "traffic" {
		t.Errorf("series = %+v", s)
	}
	// Without a filter the store gets none (not a filter matching
	// everything), so it answers from the rollups, which outlive raw flows.
	if q := env.flows.queries[len(env.flows.queries)-1]; q.Filter != nil {
		t.Errorf("unfiltered series reached the store with filter %v, want none (rollups)", q.Filter)
	}
	// Default: the last hour, 12 points ending with the one now is in.
	env.get(t, "/api/v1/flows/series", vals("measure", "flows", "proto", "6")).want(t, http.StatusOK, &s)
	if len(s.Points) != 12 || s.Total != 4 || s.Unit != "flows/s" || s.Points[11].Value != 1 {
		t.Errorf("flows of TCP in the last hour = %+v", s)
	}
	// An interval that ends mid-range includes its partial interval.
	env.get(t, "/api/v1/flows/series", vals("from", "2025-04-01 09:00", "to", "2025-04-01 09:41", "interval", "20m", "measure", "packets")).want(t, http.StatusOK, &s)
	if len(s.Points) != 3 || s.Points[2].Value != 504 || !s.To.Equal(flowNow) {
		t.Errorf("20-minute packets = %+v", s)
	}
	// Long ranges get longer intervals by default.
	env.get(t, "/api/v1/flows/series", vals("from", "2025-03-25 10:00")).want(t, http.StatusOK, &s)
	if s.Interval != "35m0s" || len(s.Points) > defaultSeriesPoints+1 {
		t.Errorf("a week: interval %s, %d points", s.Interval, len(s.Points))
	}
	env.get(t, "/api/v1/flows/series", vals("interval", "1d", "from", "2025-03-01")).want(t, http.StatusOK, &s)
	if s.Interval != "24h0m0s" || len(s.Points) != 32 {
		t.Errorf("days: interval %s, %d points", s.Interval, len(s.Points))
	}

	a := env.get(t, "/api/v1/flows/series/export", vals("from", "2025-04-01 09:10", "to", "2025-04-01 09:20", "measure", "bytes"))
	if want := "\ufefftime,bytes,rate_B_per_s\n2025-04-01T09:10:00Z,1000,3.333\n2025-04-01T09:15:00Z,0,0.000\n"; a.status != http.StatusOK || string(a.body) != want {
		t.Errorf("series CSV = %s, want %q", a, want)
	}

	env.get(t, "/api/v1/flows/series", vals("interval", "7m")).wantDetail(t, http.StatusUnprocessableEntity, "query.interval", "multiple of 5m")
	env.get(t, "/api/v1/flows/series", vals("interval", "5m", "from", "2024-01-01")).wantDetail(t, http.StatusUnprocessableEntity, "query.interval", "more than 10000")
	env.get(t, "/api/v1/flows/series", vals("measure", "bits")).wantDetail(t, http.StatusUnprocessableEntity, "query.measure", "")
	env.get(t, "/api/v1/flows/series", vals("proto", "256")).wantDetail(t, http.StatusUnprocessableEntity, "query.proto", "")
}

func TestFlowList(t *testing.T) {
	env := flowsAPI(t)
	var got []Flow
	q := vals("limit", "2")
	for i := 0; ; i++ {
		var page FlowPage
		env.get(t, "/api/v1/flows", q).want(t, http.StatusOK, &page)
		got = append(got, page.Items...)
		if page.NextCursor == "" {
			break
		}
		if i > 5 {
			t.Fatal("no end")
		}
		q.Set("cursor", page.NextCursor)
	}
	var starts []time.Duration
	for _, f := range got {
		starts = append(starts, flowNow.Sub(f.TimeStart))
	}
	if d := gocmp.Diff(starts, []time.Duration{2 * time.Minute, 20 * time.Minute, 30 * time.Minute, 40 * time.Minute, 50 * time.Minute}); d != "" {
		t.Errorf("pages, newest first (-got +want):\n%s", d)
	}
	want := Flow{TimeStart: flowNow.Add(-30 * time.Minute), TimeEnd: flowNow.Add(-30*time.Minute + 2*time.Second), Exporter: "192.0.2.2",
		InIf: 1, OutIf: 2, IPVersion: 4, SrcAddr: "10.0.0.2", DstAddr: "203.0.113.6", SrcPort: 5353, DstPort: 53, Proto: 17,
		Bytes: 10000, Packets: 100, RawBytes: 100, RawPackets: 1, SamplingRate: 100,
		CommunityID: env.flows.records[2].CommunityID()}
	if d := gocmp.Diff(got[2], want); d != "" {
		t.Errorf("flow (-got +want):\n%s", d)
	}
	if !strings.HasPrefix(want.CommunityID, "1:") || len(want.CommunityID) < 10 {
		t.Errorf("community ID %q", want.CommunityID)
	}

	env.get(t, "/api/v1/flows", vals("cursor", "!!")).wantDetail(t, http.StatusUnprocessableEntity, "query.cursor", "start again without it")
	env.get(t, "/api/v1/flows", vals("limit", "10001")).wantDetail(t, http.StatusUnprocessableEntity, "query.limit", "")

	// CSV export: every flow of the range with a BOM; JSON lines.
	a := env.get(t, "/api/v1/flows/export", vals("filter", "proto udp"))
	if a.status != http.StatusOK {
		t.Fatalf("export: %s", a)
	}
	rows, err := csv.NewReader(strings.NewReader(strings.TrimPrefix(string(a.body), "\ufeff"))).ReadAll()
	if err != nil || !strings.HasPrefix(string(a.body), "\ufeff") {
		t.Fatalf("export CSV %q: %v", a.body, err)
	}
	if d := gocmp.Diff(rows, [][]string{flowCSVHeader, {"2025-04-01T09:30:00Z", "2025-04-01T09:30:02Z", "192.0.2.2", "", "1", "2", "4",
		"10.0.0.2", "203.0.113.6", "5353", "53", "17", "0", "10000", "100", "100", "1", "100", want.CommunityID}}); d != "" {
		t.Errorf("export CSV (-got +want):\n%s", d)
	}
	a = env.get(t, "/api/v1/flows/export", vals("format", "json", "limit", "2"))
	lines := strings.Split(strings.TrimSpace(string(a.body)), "\n")
	if a.status != http.StatusOK || len(lines) != 2 {
		t.Fatalf("export JSON lines: %s", a)
	}
	var f Flow
	if err := json.Unmarshal([]byte(lines[1]), &f); err != nil || f.TimeStart != flowNow.Add(-20*time.Minute) {
		t.Errorf("second JSON line %s: %v", lines[1], err)
	}

	// The store failing: a 500 that hides the cause.
	env.flows.fail = fmt.Errorf("disk on fire")
	a = env.get(t, "/api/v1/flows", nil)
	a.wantProblem(t, http.StatusInternalServerError, "the flow store failed; see the manager log")
	if strings.Contains(string(a.body), "fire") {
		t.Errorf("the cause leaked: %s", a)
	}
	env.flows.fail = context.DeadlineExceeded
	env.get(t, "/api/v1/flows/top", nil).wantProblem(t, http.StatusServiceUnavailable, "narrow the time range")
}

func TestFlowProfiles(t *testing.T) {
	env := flowsAPI(t)
	var list struct{ Items []FlowProfile }
	env.get(t, "/api/v1/flows/profiles", nil).want(t, http.StatusOK, &list)
	if len(list.Items) != 1 {
		t.Fatalf("profiles = %+v, want only live", list.Items)
	}
	if d := gocmp.Diff(list.Items[0], FlowProfile{ID: "live", Name: "All Sources", Description: "All flows from every exporter (built in).", Builtin: true,
		Channels: []FlowChannel{
			{ID: "192.0.2.1", Name: "192.0.2.1", Filter: "exporter 192.0.2.1"},
			{ID: "192.0.2.2", Name: "192.0.2.2", Filter: "exporter 192.0.2.2"},
			{ID: "2001-db8--1", Name: "2001:db8::1", Filter: "exporter 2001:db8::1"},
		}}); d != "" {
		t.Errorf("live (-got +want):\n%s", d)
	}

	// Channels of live, by ID or name.
	var top FlowTop
	env.get(t, "/api/v1/flows/top", vals("profile", "live", "channels", "192.0.2.2", "by", "exporter")).want(t, http.StatusOK, &top)
	if len(top.Rows) != 1 || top.Rows[0].Keys["exporter"] != "192.0.2.2" || top.Filter != `exporter "192.0.2.2"` {
		t.Errorf("top of channel 192.0.2.2 = %+v", top)
	}
	env.get(t, "/api/v1/flows/top", vals("channels", "10.9.9.9")).wantProblem(t, http.StatusNotFound,
		`profile live has no channel "10.9.9.9" (it has: 192.0.2.1, 192.0.2.2, 2001-db8--1)`)
	env.get(t, "/api/v1/flows/top", vals("profile", "dmz")).wantProblem(t, http.StatusNotFound, `flow profile "dmz" does not exist; the profiles are: live`)

	// Create, with exporter names checked and resolved.
	if _, err := env.db.UpdateFlowExporter(t.Context(), store.FlowExporter{Address: rtA, Name: "core", UpdatedAt: flowNow}, 0); err != nil {
		t.Fatal(err)
	}
	body := `{"id":"web","name":"Web","filter":"dst port in [80, 443]","channels":[{"id":"core","name":"Core","filter":"exporter core"},{"id":"other","filter":"not exporter core"}]}`
	var p FlowProfile
	a, h := env.send(t, "operator", "POST", "/api/v1/flows/profiles", "", body)
	a.want(t, http.StatusCreated, &p)
	if h.Get("ETag") != `"1"` || p.Version != 1 || p.CreatedAt == nil || !p.CreatedAt.Equal(flowNow) || len(p.Channels) != 2 {
		t.Errorf("created %+v, ETag %q", p, h.Get("ETag"))
	}
	env.get(t, "/api/v1/flows/top", vals("profile", "web", "channels", "Core", "by", "dstport")).want(t, http.StatusOK, &top)
	if top.Filter != `dst port in [80, 443] and exporter "192.0.2.1"` || len(top.Rows) != 1 || top.Rows[0].Flows != 2 {
		t.Errorf("top of web/Core = %+v", top)
	}
	env.get(t, "/api/v1/flows/top", vals("profile", "web", "by", "dstport")).want(t, http.StatusOK, &top)
	if top.Total.Flows != 3 {
		t.Errorf("top of web = %+v", top)
	}

	for _, tt := range []struct {
		name, body    string
		location, msg string
	}{
		{"live", `{"id":"live","name":"Mine"}`, "body.id", "built-in profile"},
		{"bad ID", `{"id":"Web!","name":"x"}`, "body.id", ""},
		{"no name", `{"id":"x","name":""}`, "body.name", ""},
		{"bad filter", `{"id":"x","name":"x","filter":"dst port in [80,"}`, "body.filter", "column 17: expected a port number"},
		{"bad channel filter", `{"id":"x","name":"x","channels":[{"id":"a","filter":"any"},{"id":"b","filter":"proto nope"}]}`, "body.channels[1].filter", "column 7"},
		{"unknown exporter", `{"id":"x","name":"x","channels":[{"id":"a","filter":"exporter edge"}]}`, "body.channels[0].filter", `no exporter is named "edge"`},
		{"channel twice", `{"id":"x","name":"x","channels":[{"id":"a"},{"id":"a"}]}`, "body.channels[1].id", "channels[0] has this ID"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, _ := env.send(t, "admin", "POST", "/api/v1/flows/profiles", "", tt.body)
			a.wantDetail(t, http.StatusUnprocessableEntity, tt.location, tt.msg)
		})
	}
	a, _ = env.send(t, "admin", "POST", "/api/v1/flows/profiles", "", `{"id":"web","name":"Web 2"}`)
	a.wantProblem(t, http.StatusConflict, `ID "web" is taken`)
	a, _ = env.send(t, "admin", "POST", "/api/v1/flows/profiles", "", `{"id":"web2","name":"Web"}`)
	a.wantProblem(t, http.StatusConflict, `a flow profile named "Web" exists already`)
	a, _ = env.send(t, "auditor", "POST", "/api/v1/flows/profiles", "", `{"id":"aud","name":"Aud"}`)
	a.wantProblem(t, http.StatusForbidden, "needs flows:write")

	// Replace with If-Match; a stale one is refused.
	a, h = env.send(t, "admin", "PUT", "/api/v1/flows/profiles/web", `"1"`, `{"name":"Web servers","filter":"dst port 443"}`)
	a.want(t, http.StatusOK, &p)
	if h.Get("ETag") != `"2"` || p.Filter != "dst port 443" || len(p.Channels) != 0 || p.Name != "Web servers" {
		t.Errorf("replaced %+v, ETag %q", p, h.Get("ETag"))
	}
	a, _ = env.send(t, "admin", "PUT", "/api/v1/flows/profiles/web", `"1"`, `{"name":"Web"}`)
	a.wantProblem(t, http.StatusPreconditionFailed, "changed since you read it")
	a, _ = env.send(t, "admin", "PUT", "/api/v1/flows/profiles/nope", "", `{"name":"Web"}`)
	a.wantProblem(t, http.StatusNotFound, "nope")
	a, _ = env.send(t, "admin", "PUT", "/api/v1/flows/profiles/web", "", `{"name":"x","filter":"port 1 2"}`)
	a.wantDetail(t, http.StatusUnprocessableEntity, "body.filter", "column 8")

	// live is read-only.
	a, _ = env.send(t, "admin", "PUT", "/api/v1/flows/profiles/live", "", `{"name":"Everything"}`)
	a.wantProblem(t, http.StatusConflict, "profile live is built in")
	a, _ = env.send(t, "admin", "DELETE", "/api/v1/flows/profiles/live", "", "")
	a.wantProblem(t, http.StatusConflict, "profile live is built in")

	a = env.get(t, "/api/v1/flows/profiles/web", nil)
	a.want(t, http.StatusOK, &p)
	env.get(t, "/api/v1/flows/profiles", nil).want(t, http.StatusOK, &list)
	if len(list.Items) != 2 || list.Items[1].ID != "web" {
		t.Errorf("profiles = %+v", list.Items)
	}
	env.get(t, "/api/v1/flows/profiles/nope", nil).wantProblem(t, http.StatusNotFound, `the profiles are: live, web`)

	a, _ = env.send(t, "admin", "DELETE", "/api/v1/flows/profiles/web", `"1"`, "")
	a.wantProblem(t, http.StatusPreconditionFailed, "changed since you read it")
	a, _ = env.send(t, "admin", "DELETE", "/api/v1/flows/profiles/web", `"2"`, "")
	if a.status != http.StatusNoContent {
		t.Fatalf("delete: %s", a)
	}
	env.get(t, "/api/v1/flows/profiles/web", nil).wantProblem(t, http.StatusNotFound, "web")

	// A stored profile that names an exporter renamed since: 422 naming
	// the profile.
	a, _ = env.send(t, "admin", "POST", "/api/v1/flows/profiles", "", `{"id":"c","name":"C","filter":"exporter core"}`)
	a.want(t, http.StatusCreated, nil)
	a, _ = env.send(t, "admin", "PATCH", "/api/v1/flows/exporters/192.0.2.1", "", `{"name":"core-1"}`)
	a.want(t, http.StatusOK, nil)
	env.get(t, "/api/v1/flows/top", vals("profile", "c")).wantDetail(t, http.StatusUnprocessableEntity, "query.profile", `profile c: no exporter is named "core"`)
}

func TestFlowExporters(t *testing.T) {
	env := flowsAPI(t)
	var list struct{ Items []FlowExporter }
	env.get(t, "/api/v1/flows/exporters", nil).want(t, http.StatusOK, &list)
	minute, two := ptime(flowNow.Add(-time.Minute)), ptime(flowNow.Add(-2*time.Minute))
	hour, days := ptime(flowNow.Add(-time.Hour)), ptime(flowNow.Add(-48*time.Hour))
	want := []FlowExporter{
		{Address: "192.0.2.1", Protocols: []string{"netflow9"}, FirstSeen: hour, LastPacket: minute, Packets: 100, Flows: 5, Templates: 2, SamplingRate: 1, Live: true},
		{Address: "192.0.2.2", Protocols: []string{"ipfix"}, FirstSeen: hour, LastPacket: two, Packets: 50, Flows: 2, SamplingRate: 100,
			SamplingSource: "options-template", SamplingWarning: "changed from 10 to 100", Live: true},
		{Address: "2001:db8::1", Protocols: []string{}, FirstSeen: days, Version: 1},
	}
	if d := gocmp.Diff(list.Items, want); d != "" {
		t.Errorf("exporters (-got +want):\n%s", d)
	}

	// Name and override: stored, pushed to the collector, shown.
	var ex FlowExporter
	a, h := env.send(t, "operator", "PATCH", "/api/v1/flows/exporters/192.0.2.2", "", `{"name":" edge ","sampling_rate":1000}`)
	a.want(t, http.StatusOK, &ex)
	if ex.Name != "edge" || ex.Override != 1000 || ex.Version != 1 || h.Get("ETag") != `"1"` {
		t.Errorf("patched %+v, ETag %q", ex, h.Get("ETag"))
	}
	if d := gocmp.Diff(env.coll.settings, map[netip.Addr]collector.ExporterSettings{
		rtB: {Name: "edge", SamplingRate: 1000}, rtV6: {},
	}, gocmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" || env.coll.pushes != 1 {
		t.Errorf("settings pushed %d times (-got +want):\n%s", env.coll.pushes, d)
	}
	// Absent fields keep theirs; 0 removes the override.
	a, _ = env.send(t, "admin", "PATCH", "/api/v1/flows/exporters/192.0.2.2", `"1"`, `{"sampling_rate":0}`)
	a.want(t, http.StatusOK, &ex)
	if ex.Name != "edge" || ex.Override != 0 || ex.Version != 2 || env.coll.settings[rtB] != (collector.ExporterSettings{Name: "edge"}) {
		t.Errorf("override removed: %+v, pushed %+v", ex, env.coll.settings)
	}
	a, _ = env.send(t, "admin", "PATCH", "/api/v1/flows/exporters/192.0.2.2", `"1"`, `{"name":"x"}`)
	a.wantProblem(t, http.StatusPreconditionFailed, "changed since you read it")
	// Configured ahead of its first datagram.
	a, _ = env.send(t, "admin", "PATCH", "/api/v1/flows/exporters/198.51.100.1", "", `{"sampling_rate":512}`)
	ex = FlowExporter{}
	a.want(t, http.StatusOK, &ex)
	if ex.Address != "198.51.100.1" || ex.Live || ex.SamplingRate != 512 || ex.SamplingSource != "override" || ex.FirstSeen != nil {
		t.Errorf("configured ahead: %+v", ex)
	}
	// A silent exporter's override shows as its rate.
	a, _ = env.send(t, "admin", "PATCH", "/api/v1/flows/exporters/2001:db8::1", "", `{"name":"v6"}`)
	a.want(t, http.StatusOK, &ex)

	for _, tt := range []struct {
		name, path, body string
		status           int
		location, msg    string
	}{
		{"bad address", "/api/v1/flows/exporters/router1", `{"name":"x"}`, 422, "path.address", "want an IPv4 or IPv6 address"},
		{"address as name", "/api/v1/flows/exporters/192.0.2.1", `{"name":"10.0.0.1"}`, 422, "body.name", "is an address"},
		{"both quotes", "/api/v1/flows/exporters/192.0.2.1", `{"name":"a'b\"c"}`, 422, "body.name", "both"},
		{"negative rate", "/api/v1/flows/exporters/192.0.2.1", `{"sampling_rate":-1}`, 422, "body.sampling_rate", ""},
		{"huge rate", "/api/v1/flows/exporters/192.0.2.1", `{"sampling_rate":16777216}`, 422, "body.sampling_rate", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, _ := env.send(t, "admin", "PATCH", tt.path, "", tt.body)
			a.wantDetail(t, tt.status, tt.location, tt.msg)
		})
	}
	a, _ = env.send(t, "admin", "PATCH", "/api/v1/flows/exporters/192.0.2.1", "", `{"name":"edge"}`)
	a.wantProblem(t, http.StatusConflict, `exporter 192.0.2.2 is named "edge" already`)
	a, _ = env.send(t, "auditor", "PATCH", "/api/v1/flows/exporters/192.0.2.1", "", `{"name":"x"}`)
	a.wantProblem(t, http.StatusForbidden, "needs flows:write")

	env.get(t, "/api/v1/flows/exporters", nil).want(t, http.StatusOK, &list)
	var names []string
	for _, e := range list.Items {
		names = append(names, e.Address+"="+e.Name)
	}
	if d := gocmp.Diff(names, []string{"192.0.2.1=", "192.0.2.2=edge", "198.51.100.1=", "2001:db8::1=v6"}); d != "" {
		t.Errorf("exporters (-got +want):\n%s", d)
	}

	var st FlowStats
	env.get(t, "/api/v1/flows/stats", nil).want(t, http.StatusOK, &st)
	if st.Backend != "memory" || st.Flows != 6 || st.Exporters != 4 || !st.Collector || len(st.Listeners) != 1 || st.Listeners[0].KernelDrops != 1 {
		t.Errorf("stats = %+v", st)
	}
}

// FuzzFlowSearch: the query parameters every flow analysis reads come
// from clients; whatever they hold, the API answers without a 5xx or a
// panic, and the store only ever gets a valid time range.
func FuzzFlowSearch(f *testing.F) {
	env := flowsAPI(f)
	for _, seed := range [][6]string{
		{"2025-04-01 09:00", "2025-04-01 10:00", "live", "192.0.2.1", "proto tcp and port 443", "srcip,dstip"},
		{"2025-04-01T09:00:00+09:00", "", "", "", "exporter 'x' or not exporter 192.0.2.1", "exporter"},
		{"yesterday", "2025-13-40", "dmz", ",,", "(((", "srcip,,srcip"},
		{"", "", "live", "2001-db8--1", "host 東京", "ipver,proto,inif,outif"},
	} {
		f.Add(seed[0], seed[1], seed[2], seed[3], seed[4], seed[5], "5m")
	}
	paths := []string{"/api/v1/flows/top", "/api/v1/flows/series", "/api/v1/flows", "/api/v1/flows/top/export"}
	f.Fuzz(func(t *testing.T, from, to, profile, channels, filter, by, interval string) {
		q := vals("from", from, "to", to, "profile", profile, "channels", channels, "filter", filter, "by", by, "interval", interval)
		for _, p := range paths {
			r := httptest.NewRequest(http.MethodGet, p+"?"+q.Encode(), nil)
			r.Header.Set("Authorization", "Bearer admin")
			w := httptest.NewRecorder()
			env.mux.ServeHTTP(w, r)
			if w.Code >= 500 {
				t.Fatalf("%s?%s: %d %s", p, q.Encode(), w.Code, w.Body)
			}
		}
	})
}

// FuzzFlowCursor: any cursor is refused or decoded, never a panic, and
// every cursor the API makes decodes to the same position.
func FuzzFlowCursor(f *testing.F) {
	f.Add("AAYVoy_9SAAAAAAAAAAAAAE", int64(1765000000000000), uint64(1))
	f.Add("!!", int64(-1), uint64(0))
	f.Fuzz(func(t *testing.T, s string, micros int64, seq uint64) {
		_, _ = decodeFlowCursor(s)
		c := flowstore.Cursor{TimeStart: time.UnixMicro(micros).UTC(), Seq: seq}
		got, err := decodeFlowCursor(encodeFlowCursor(c))
		if err != nil || !got.TimeStart.Equal(c.TimeStart) || got.Seq != seq {
			t.Fatalf("cursor of %+v decodes to %+v, %v", c, got, err)
		}
	})
}

func TestParseFlowTime(t *testing.T) {
	for in, want := range map[string]time.Time{
		"2025-04-01T09:00:00+09:00":      time.Date(2025, 4, 1, 0, 0, 0, 0, time.UTC),
		"2025-04-01T00:00:00.25Z":        time.Date(2025, 4, 1, 0, 0, 0, 25e7, time.UTC),
		"2025-04-01 09:05":               time.Date(2025, 4, 1, 9, 5, 0, 0, time.UTC),
		" 2025-04-01 09:05:07 ":          time.Date(2025, 4, 1, 9, 5, 7, 0, time.UTC),
		"2025-04-01T09:05":               time.Date(2025, 4, 1, 9, 5, 0, 0, time.UTC),
		"2025-04-01":                     time.Date(2025, 4, 1, 0, 0, 0, 0, time.UTC),
		"2025-04-01T09:05:00.000-01:30":  time.Date(2025, 4, 1, 10, 35, 0, 0, time.UTC),
		"2025-04-01T09:05:00.000000001Z": time.Date(2025, 4, 1, 9, 5, 0, 1, time.UTC),
	} {
		got, err := parseFlowTime(in)
		if err != nil || !got.Equal(want) || got.Location() != time.UTC {
			t.Errorf("parseFlowTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "now", "2025-04-01 09", "01/04/2025", "2025-04-01T25:00:00Z"} {
		if _, err := parseFlowTime(bad); err == nil {
			t.Errorf("parseFlowTime(%q) succeeded", bad)
		}
	}
}
