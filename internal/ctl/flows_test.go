package ctl_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/csv"
	"encoding/json"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"

	"github.com/yagura/yagura/internal/api"
	"github.com/yagura/yagura/internal/auth"
	"github.com/yagura/yagura/internal/collector"
	"github.com/yagura/yagura/internal/ctl"
	"github.com/yagura/yagura/internal/flowfilter"
	"github.com/yagura/yagura/internal/flowstore"
	"github.com/yagura/yagura/internal/pki"
	"github.com/yagura/yagura/internal/store"
	"github.com/yagura/yagura/internal/store/sqlite"
)

// flowStore is an in-memory flow store over a fixed list of records:
// flowfilter.Match selects, Go sums.
type flowStore struct{ records []flowstore.Record }

func (s *flowStore) match(q flowstore.Query) []flowstore.Record {
	var out []flowstore.Record
	for _, r := range s.records {
		f := flowfilter.Flow{SrcAddr: r.SrcAddr, DstAddr: r.DstAddr, SrcPort: r.SrcPort, DstPort: r.DstPort, Proto: r.Proto,
			IPVersion: r.IPVersion, Bytes: r.Bytes, Packets: r.Packets, Exporter: store.FlowExporterKey(r.Exporter),
			TimeStart: r.TimeStart.UnixMicro(), TimeEnd: r.TimeEnd.UnixMicro()}
		if !r.TimeStart.Before(q.Since) && r.TimeStart.Before(q.Until) && (q.Filter == nil || flowfilter.Match(q.Filter, f)) {
			out = append(out, r)
		}
	}
	return out
}

func (s *flowStore) Top(_ context.Context, q flowstore.TopQuery) (flowstore.TopResult, error) {
	key := func(r flowstore.Record, k flowstore.Key) string {
		switch k {
		case flowstore.KeySrcIP:
			return r.SrcAddr.String()
		case flowstore.KeyDstIP:
			return r.DstAddr.String()
		case flowstore.KeyDstPort:
			return strconv.Itoa(int(r.DstPort))
		case flowstore.KeyProto:
			return strconv.Itoa(int(r.Proto))
		case flowstore.KeyExporter:
			return store.FlowExporterKey(r.Exporter)
		}
		return "?"
	}
	sum := func(row *flowstore.TopRow, r flowstore.Record) {
		row.Bytes, row.Packets, row.Flows = row.Bytes+r.Bytes, row.Packets+r.Packets, row.Flows+1
		if row.FirstSeen.IsZero() || r.TimeStart.Before(row.FirstSeen) {
			row.FirstSeen = r.TimeStart
		}
		if r.TimeEnd.After(row.LastSeen) {
			row.LastSeen = r.TimeEnd
		}
	}
	groups := map[string]*flowstore.TopRow{}
	var res flowstore.TopResult
	for _, r := range s.match(q.Query) {
		var keys []string
		for _, k := range q.By {
			keys = append(keys, key(r, k))
		}
		id := strings.Join(keys, "|")
		if groups[id] == nil {
			groups[id] = &flowstore.TopRow{Keys: keys}
		}
		sum(groups[id], r)
		sum(&res.Total, r)
	}
	for _, g := range groups {
		res.Rows = append(res.Rows, *g)
	}
	measure := func(r flowstore.TopRow) uint64 {
		switch q.OrderBy {
		case flowstore.Packets:
			return r.Packets
		case flowstore.Flows:
			return r.Flows
		}
		return r.Bytes
	}
	slices.SortFunc(res.Rows, func(a, b flowstore.TopRow) int {
		return cmp.Or(cmp.Compare(measure(b), measure(a)), slices.Compare(a.Keys, b.Keys))
	})
	res.Rows = res.Rows[:min(len(res.Rows), q.Limit)]
	return res, nil
}

func (s *flowStore) Series(_ context.Context, q flowstore.SeriesQuery) ([]flowstore.Point, error) {
	q.Since, q.Until = q.Since.Truncate(q.Interval), q.Until.Truncate(q.Interval)
	var pts []flowstore.Point
	for t := q.Since; t.Before(q.Until); t = t.Add(q.Interval) {
		pts = append(pts, flowstore.Point{Time: t})
	}
	for _, r := range s.match(q.Query) {
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

func (s *flowStore) ScanFlows(_ context.Context, q flowstore.ListQuery, fn func(flowstore.Record, flowstore.Cursor) error) error {
	rs := s.match(q.Query)
	slices.SortFunc(rs, func(a, b flowstore.Record) int { return b.TimeStart.Compare(a.TimeStart) })
	n := 0
	for i, r := range rs {
		// The newest has the highest sequence number.
		c := flowstore.Cursor{TimeStart: r.TimeStart, Seq: uint64(len(rs) - i)}
		if q.After != nil && c.Seq >= q.After.Seq {
			continue
		}
		if q.Limit > 0 && n == q.Limit {
			break
		}
		n++
		if err := fn(r, c); err != nil {
			return err
		}
	}
	return nil
}

func (s *flowStore) Stats(context.Context) (flowstore.Stats, error) {
	return flowstore.Stats{Backend: "memory", Flows: int64(len(s.records)), Bytes: 3 << 20}, nil
}

// flowCollector stands in for the collector.
type flowCollector struct {
	mu       sync.Mutex
	settings map[netip.Addr]collector.ExporterSettings
}

func (c *flowCollector) Exporters() []collector.ExporterStatus {
	return []collector.ExporterStatus{{
		Address: netip.MustParseAddr("192.0.2.1"), Protocols: []string{"netflow5"}, LastSeen: time.Now().Add(-3 * time.Second),
		Packets: 1234, Flows: 45678, SamplingRate: 100, SamplingSource: "v5-header",
	}, {
		Address: netip.MustParseAddr("192.0.2.2"), Protocols: []string{"ipfix"}, LastSeen: time.Now().Add(-time.Minute),
		Packets: 10, Flows: 20, DecodeErrors: 1, Templates: 3, SamplingRate: 1, SamplingWarning: "no sampling rate in the options templates",
	}}
}

func (c *flowCollector) Listeners() []collector.ListenerStatus {
	return []collector.ListenerStatus{{Protocol: "netflow", Address: "0.0.0.0:2055", Sockets: 2, ReadBuffer: 64 << 20, Datagrams: 1_500_000, KernelDrops: 12}}
}

func (c *flowCollector) SetExporterSettings(m map[netip.Addr]collector.ExporterSettings) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.settings = maps.Clone(m)
}

type tokenAuth map[string]auth.Principal

func (a tokenAuth) Authenticate(_ context.Context, bearer string) (auth.Principal, bool) {
	p, ok := a[bearer]
	return p, ok
}

// flowsRunner runs `yagura ctl flows` against the API (over TLS, as ctl
// requires) with an in-memory flow store of flows in the last hour.
type flowsRunner struct {
	t    *testing.T
	args []string
	now  time.Time
	coll *flowCollector
}

func newFlowsRunner(t *testing.T) *flowsRunner {
	t.Helper()
	db, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	now := time.Now().UTC().Truncate(5 * time.Minute).Add(-5 * time.Minute)
	rec := func(ago time.Duration, exporter, src, dst string, dport uint16, proto uint8, bytes, pkts uint64) flowstore.Record {
		return flowstore.Record{TimeStart: now.Add(-ago), TimeEnd: now.Add(-ago + 1500*time.Millisecond), Exporter: netip.MustParseAddr(exporter),
			IPVersion: 4, SrcAddr: netip.MustParseAddr(src), DstAddr: netip.MustParseAddr(dst), SrcPort: 40000, DstPort: dport,
			Proto: proto, TCPFlags: 0x1b, Bytes: bytes * 100, Packets: pkts * 100, SamplingRate: 100}
	}
	fs := &flowStore{records: []flowstore.Record{
		rec(25*time.Minute, "192.0.2.1", "10.0.0.1", "203.0.113.5", 443, 6, 5_000_000, 4000),
		rec(20*time.Minute, "192.0.2.1", "10.0.0.1", "203.0.113.5", 443, 6, 3_000_000, 2500),
		rec(15*time.Minute, "192.0.2.2", "10.0.0.2", "203.0.113.6", 53, 17, 120, 1),
		rec(10*time.Minute, "192.0.2.2", "10.0.0.3", "198.51.100.7", 22, 6, 40_000, 300),
	}}
	r := &flowsRunner{t: t, now: now, coll: &flowCollector{}}
	mux := http.NewServeMux()
	api.New(mux, api.Deps{Store: db, Flows: fs, FlowCollector: r.coll, Log: slog.New(slog.DiscardHandler),
		Auth: tokenAuth{"admin-token": {Subject: "user:admin", Role: auth.RoleAdmin}}})
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	r.args = []string{"--server", srv.URL, "--token", "admin-token", "--ca-fingerprint", pki.Fingerprint(srv.Certificate())}
	return r
}

func (r *flowsRunner) try(args ...string) (string, error) {
	r.t.Helper()
	var out bytes.Buffer
	err := ctl.Run(r.t.Context(), append(slices.Clone(r.args), args...), &out)
	return out.String(), err
}

func (r *flowsRunner) run(args ...string) string {
	r.t.Helper()
	out, err := r.try(args...)
	if err != nil {
		r.t.Fatalf("yagura ctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (r *flowsRunner) jsonOut(v any, args ...string) {
	r.t.Helper()
	out := r.run(append([]string{"-o", "json"}, args...)...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		r.t.Fatalf("yagura ctl -o json %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (r *flowsRunner) wantErr(want string, args ...string) {
	r.t.Helper()
	out, err := r.try(args...)
	if err == nil || !strings.Contains(err.Error(), want) {
		r.t.Errorf("yagura ctl %s: error %v; want one containing %q\n%s", strings.Join(args, " "), err, want, out)
	}
}

func TestFlowsTopCommand(t *testing.T) {
	r := newFlowsRunner(t)
	out := r.run("flows", "top", "--by", "srcip,dstip", "--limit", "2")
	wantRow(t, "top", out, "SRCIP", "SRCIP", "DSTIP", "BYTES", "PACKETS", "FLOWS", "SHARE")
	wantRow(t, "top", out, "10.0.0.1", "10.0.0.1", "203.0.113.5", "762.9 MiB", "650.0 k", "2", "99.5%")
	wantRow(t, "top", out, "10.0.0.3", "10.0.0.3", "198.51.100.7", "3.8 MiB", "30.0 k", "1", "0.5%")
	wantRow(t, "top", out, "TOTAL", "TOTAL", "766.8 MiB", "680.1 k", "4")

	var top api.FlowTop
	r.jsonOut(&top, "flows", "top", "--by", "dstport", "--order", "packets", "--filter", "proto tcp", "--from", "1h")
	if len(top.Rows) != 2 || top.Rows[0].Keys["dstport"] != "443" || top.Rows[0].Packets != 650000 || top.Total.Bytes != 804_000_000 {
		t.Errorf("top -o json = %+v", top)
	}

	r.run("flows", "exporters", "set", "192.0.2.1", "--name", "core")
	out = r.run("flows", "top", "--by", "exporter,proto", "--order", "flows", "--from", r.now.Add(-time.Hour).Format("2006-01-02 15:04"))
	wantRow(t, "top by exporter", out, "core", "core (192.0.2.1)", "tcp", "762.9 MiB", "650.0 k", "2", "50.0%")
	wantRow(t, "top by exporter", out, "udp", "192.0.2.2", "udp", "11.7 KiB", "100", "1", "25.0%")

	out = r.run("flows", "top", "--by", "srcip", "--filter", "exporter core", "--csv")
	rows, err := csv.NewReader(strings.NewReader(strings.TrimPrefix(out, "\ufeff"))).ReadAll()
	if err != nil || !strings.HasPrefix(out, "\ufeff") || len(rows) != 2 || rows[1][0] != "10.0.0.1" || rows[1][1] != "800000000" {
		t.Errorf("top --csv = %q, %v", out, err)
	}

	r.wantErr("--filter: column 19: expected a port number", "flows", "top", "--filter", "proto tcp and port")
	if _, err := r.try("flows", "top", "--filter", "proto tcp and port"); err == nil || !strings.Contains(err.Error(), "\n  proto tcp and port\n                    ^") {
		t.Errorf("the filter error has no caret under the mistake: %v", err)
	}
	r.wantErr(`no exporter is named "edge"; the named exporters are "core" (192.0.2.1)`, "flows", "top", "--filter", "exporter edge")
	r.wantErr(`--from "yesterday": want a duration back from now`, "flows", "top", "--from", "yesterday")
	r.wantErr("query.by: unknown key", "flows", "top", "--by", "colour")
	r.wantErr(`profile live has no channel "nope"`, "flows", "top", "--channels", "nope")
}

func TestFlowsChartListExport(t *testing.T) {
	r := newFlowsRunner(t)
	from, to := r.now.Add(-30*time.Minute), r.now
	out := r.run("flows", "chart", "--measure", "traffic", "--interval", "5m", "--from", from.Format(time.RFC3339), "--to", to.Format(time.RFC3339))
	lines := strings.Split(out, "\n")
	if len(lines) < 4 || !strings.HasPrefix(lines[0], "traffic, profile live,") || !strings.HasSuffix(lines[0], "every 5m") {
		t.Fatalf("chart:\n%s", out)
	}
	if lines[1] != "▁█▅▂▂▁" {
		t.Errorf("sparkline %q, want ▁█▅▂▂▁", lines[1])
	}
	if !strings.HasPrefix(lines[2], "peak 13.3 Mbit/s, average 3.6 Mbit/s, total 766.8 MiB") {
		t.Errorf("summary %q", lines[2])
	}
	wantRow(t, "chart", out, ts(from.Add(5*time.Minute)), ts(from.Add(5*time.Minute)), "476.8 MiB", "13.3 Mbit/s")
	wantRow(t, "chart", out, ts(r.now.Add(-5*time.Minute)), ts(r.now.Add(-5*time.Minute)), "0 B", "0.0 bit/s")

	var s api.FlowSeries
	r.jsonOut(&s, "flows", "chart", "--measure", "flows", "--proto", "udp", "--from", "1h", "--interval", "15m")
	if s.Proto != 17 || s.Total != 1 || s.Interval != "15m0s" || s.Unit != "flows/s" {
		t.Errorf("chart -o json = %+v", s)
	}
	r.wantErr(`--proto "nope": want a protocol number`, "flows", "chart", "--proto", "nope")
	r.wantErr("query.interval: want a multiple of 5m", "flows", "chart", "--interval", "7m")
	out = r.run("flows", "chart", "--measure", "packets", "--csv", "--from", from.Format(time.RFC3339), "--to", to.Format(time.RFC3339))
	if !strings.HasPrefix(out, "\ufefftime,packets,rate_packets_per_s\n") || strings.Count(out, "\n") != 7 {
		t.Errorf("chart --csv:\n%s", out)
	}

	out = r.run("flows", "list", "--limit", "2")
	wantRow(t, "list", out, "START", "START", "DURATION", "EXPORTER", "PROTO", "SOURCE", "DESTINATION", "FLAGS", "BYTES", "PACKETS", "SAMPLING")
	wantRow(t, "list", out, "198.51.100.7", ts(r.now.Add(-10*time.Minute)), "1.5s", "192.0.2.2", "tcp", "10.0.0.3:40000", "198.51.100.7:22", "FSPA", "3.8 MiB", "30.0 k", "1:100")
	wantRow(t, "list", out, "203.0.113.6", ts(r.now.Add(-15*time.Minute)), "1.5s", "192.0.2.2", "udp", "10.0.0.2:40000", "203.0.113.6:53", "FSPA", "11.7 KiB", "100", "1:100")
	var flows []api.Flow
	r.jsonOut(&flows, "flows", "list", "--filter", "dst port 443")
	if len(flows) != 2 || flows[0].RawBytes != 3_000_000 || flows[0].Bytes != 300_000_000 || flows[0].CommunityID == "" {
		t.Errorf("list -o json = %+v", flows)
	}

	out = r.run("flows", "export", "--filter", "proto udp")
	rows, err := csv.NewReader(strings.NewReader(strings.TrimPrefix(out, "\ufeff"))).ReadAll()
	if err != nil || len(rows) != 2 || rows[0][0] != "time_start" || rows[1][7] != "10.0.0.2" {
		t.Errorf("export:\n%s\n%v", out, err)
	}
	file := filepath.Join(t.TempDir(), "flows.jsonl")
	if out := r.run("flows", "export", "--format", "json", "-O", file); out != "" {
		t.Errorf("export -O printed %q", out)
	}
	b, err := os.ReadFile(file)
	if err != nil || strings.Count(string(b), "\n") != 4 {
		t.Errorf("export -O: %q, %v", b, err)
	}
	r.wantErr("exists; choose another name with -O or pass --force", "flows", "export", "-O", file)
}

func TestFlowsExportersAndProfiles(t *testing.T) {
	r := newFlowsRunner(t)
	out := r.run("flows", "exporters")
	wantRow(t, "exporters", out, "ADDRESS", "ADDRESS", "NAME", "PROTOCOLS", "LAST PACKET", "SAMPLING", "WARNING", "PACKETS", "FLOWS", "ERRORS", "TEMPLATES")
	wantRow(t, "exporters", out, "192.0.2.1", "192.0.2.1", "-", "netflow5", "3s ago", "1:100 (v5-header)", "-", "1.2 k", "45.7 k", "0", "0")
	wantRow(t, "exporters", out, "192.0.2.2", "192.0.2.2", "-", "ipfix", "1m0s ago", "none", "no sampling rate in the options templates", "10", "20", "1", "3")

	out = r.run("flows", "exporters", "set", "192.0.2.2", "--name", "edge", "--sampling-rate", "1000")
	if out != "Exporter 192.0.2.2: name edge, sampling-rate override 1:1000.\n" {
		t.Errorf("exporters set: %q", out)
	}
	r.coll.mu.Lock()
	got := r.coll.settings[netip.MustParseAddr("192.0.2.2")]
	r.coll.mu.Unlock()
	if got != (collector.ExporterSettings{Name: "edge", SamplingRate: 1000}) {
		t.Errorf("the collector got %+v", got)
	}
	var exps []api.FlowExporter
	r.jsonOut(&exps, "flows", "exporters")
	if len(exps) != 2 || exps[1].Name != "edge" || exps[1].Override != 1000 {
		t.Errorf("exporters -o json = %+v", exps)
	}
	r.wantErr("nothing to set", "flows", "exporters", "set", "192.0.2.2")
	r.wantErr(`"router" is not an IP address`, "flows", "exporters", "set", "router", "--name", "x")
	r.wantErr("is an address", "flows", "exporters", "set", "192.0.2.1", "--name", "10.1.1.1")

	// Profiles: create from flags, use, update, delete.
	out = r.run("flows", "profiles", "create", "web", "--name", "Web", "--filter", "dst port in [80, 443]",
		"--channel", "edge=exporter edge", "--channel", "core=exporter 192.0.2.1")
	if out != "Flow profile web \"Web\" created with 2 channels.\n" {
		t.Errorf("profiles create: %q", out)
	}
	out = r.run("flows", "profiles", "list")
	wantRow(t, "profiles list", out, "live", "live", "All Sources", "2", "(all flows; built in)")
	wantRow(t, "profiles list", out, "web", "web", "Web", "2", "dst port in [80, 443]")
	out = r.run("flows", "profiles", "show", "web")
	wantContains(t, "profiles show", out, "Kind         saved, version 1", "core     core  exporter 192.0.2.1")
	var top api.FlowTop
	r.jsonOut(&top, "flows", "top", "--profile", "web", "--channels", "core", "--by", "dstport")
	if top.Filter != `dst port in [80, 443] and exporter "192.0.2.1"` || len(top.Rows) != 1 || top.Rows[0].Flows != 2 {
		t.Errorf("top of web/core = %+v", top)
	}

	// From a file: what show -o json printed, edited.
	var p api.FlowProfile
	r.jsonOut(&p, "flows", "profiles", "show", "web")
	p.Description, p.Channels = "HTTP and HTTPS", p.Channels[:1]
	b, _ := json.Marshal(p)
	file := filepath.Join(t.TempDir(), "web.json")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out = r.run("flows", "profiles", "update", "web", "-f", file, "--filter", "dst port 443")
	wantContains(t, "profiles update", out, "Description  HTTP and HTTPS", "Filter       dst port 443", "version 2", "edge     edge  exporter edge")
	if strings.Contains(out, "core") {
		t.Errorf("the file's channels did not replace the old ones:\n%s", out)
	}
	r.wantErr("profile live is built in", "flows", "profiles", "update", "live", "--name", "x")
	r.wantErr("--channel bad: column 5: expected", "flows", "profiles", "create", "x", "--name", "x", "--channel", "bad=port")
	r.wantErr("the profile needs an ID", "flows", "profiles", "create", "--name", "x")
	r.wantErr(`body.channels[0].filter: no exporter is named "nope"`, "flows", "profiles", "create", "x", "--name", "x", "--channel", "a=exporter nope")
	if out := r.run("flows", "profiles", "delete", "web"); out != "Flow profile web deleted.\n" {
		t.Errorf("profiles delete: %q", out)
	}
	r.wantErr(`the profiles are: live`, "flows", "profiles", "show", "web")

	out = r.run("flows", "stats")
	wantContains(t, "stats", out, "Backend       memory", "Size on disk  3.0 MiB", "Exporters     2",
		"netflow   0.0.0.0:2055  2        64.0 MiB  1.5 M      12")
}

func ts(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05") }

func TestFlowsOutputNumbers(t *testing.T) {
	// Exact numbers in JSON even when the table rounds them.
	r := newFlowsRunner(t)
	var st api.FlowStats
	r.jsonOut(&st, "flows", "stats")
	if st.Bytes != 3<<20 || st.Listeners[0].Datagrams != 1_500_000 {
		t.Errorf("stats -o json = %+v", st)
	}
	if d := gocmp.Diff(st.Listeners, []collector.ListenerStatus{{Protocol: "netflow", Address: "0.0.0.0:2055", Sockets: 2, ReadBuffer: 64 << 20, Datagrams: 1_500_000, KernelDrops: 12}}); d != "" {
		t.Errorf("listeners (-got +want):\n%s", d)
	}
}
