package collector

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/yagura/yagura/internal/flowdecode"
	"github.com/yagura/yagura/internal/flowdecode/flowdecodetest"
	"github.com/yagura/yagura/internal/flowstore"
)

// recordingSink keeps copies of every flow written. It can fail a number
// of calls, or hold every call until released.
type recordingSink struct {
	mu    sync.Mutex
	flows []flowstore.Record
	calls int
	failN int           // fail this many of the next calls
	hold  chan struct{} // when set, calls wait until it is closed
	// holdFirst, when set, holds only the next call until it is closed.
	holdFirst chan struct{}
}

var errStoreDown = errors.New("store unavailable (test)")

func (s *recordingSink) InsertFlows(ctx context.Context, flows []flowstore.Record) error {
	s.mu.Lock()
	hold, first := s.hold, s.holdFirst
	s.holdFirst = nil
	s.mu.Unlock()
	if first != nil {
		hold = first
	}
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.failN > 0 {
		s.failN--
		return errStoreDown
	}
	s.flows = append(s.flows, flows...) // a copy: the collector reuses the slice
	return nil
}

func (s *recordingSink) stored() []flowstore.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]flowstore.Record(nil), s.flows...)
}

// testConfig listens on loopback ports the kernel picks, with one socket
// each and no timed flushes, so tests decide when batches are written.
func testConfig() Config {
	return Config{
		NetFlow:    []string{"127.0.0.1:0"},
		IPFIX:      []string{"127.0.0.1:0"},
		SFlow:      []string{"127.0.0.1:0"},
		Sockets:    1,
		ReadBuffer: 4 << 20,
		BatchFlows: 1000,
		FlushEvery: time.Hour,
	}
}

type testEnv struct {
	t      *testing.T
	c      *Collector
	sink   *recordingSink
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
	sent   uint64 // datagrams sent
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// start runs a collector until the test ends (or stop).
func start(t *testing.T, cfg Config, sink *recordingSink, setup ...func(*Collector)) *testEnv {
	t.Helper()
	reg := prometheus.NewRegistry()
	c, err := New(cfg, sink, testLogger(t), reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range setup {
		f(c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &testEnv{t: t, c: c, sink: sink, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { e.done <- c.Run(ctx) }()
	select {
	case <-c.Ready():
	case err := <-e.done:
		t.Fatalf("Run: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("collector not ready after 5 s")
	}
	t.Cleanup(e.stop)
	return e
}

// stop ends Run and checks it returns nil promptly. It may be called twice.
func (e *testEnv) stop() {
	e.t.Helper()
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	select {
	case err := <-e.done:
		if err != nil {
			e.t.Errorf("Run returned %v", err)
		}
	case <-time.After(30 * time.Second):
		e.t.Fatal("Run did not return 30 s after its context ended")
	}
}

// send sends datagrams to the first listener of protocol, from the
// loopback address from (127.0.0.0/8 is all loopback on Linux).
func (e *testEnv) send(from, protocol string, payloads ...[]byte) {
	e.t.Helper()
	conn, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(from)}, e.c.Addrs(protocol)[0].(*net.UDPAddr))
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close()
	for _, p := range payloads {
		if _, err := conn.Write(p); err != nil {
			e.t.Fatal(err)
		}
		e.sent++
	}
}

// received waits until the collector has read every datagram sent, then
// flushes and returns what the sink holds.
func (e *testEnv) received() []flowstore.Record {
	e.t.Helper()
	e.waitDatagrams(e.sent)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.c.Flush(ctx); err != nil {
		e.t.Fatalf("Flush: %v", err)
	}
	return e.sink.stored()
}

func (e *testEnv) waitDatagrams(n uint64) {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var got uint64
		for _, l := range e.c.Listeners() {
			got += l.Datagrams + l.KernelDrops
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("collector read %d datagrams of %d sent", got, n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (e *testEnv) exporter(addr string) ExporterStatus {
	e.t.Helper()
	for _, x := range e.c.Exporters() {
		if x.Address == netip.MustParseAddr(addr) {
			return x
		}
	}
	e.t.Fatalf("exporter %s not listed in %+v", addr, e.c.Exporters())
	return ExporterStatus{}
}

// value reads a counter.
func value(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// histogramCount returns how many observations the histogram name holds.
func histogramCount(t *testing.T, reg *prometheus.Registry, name string) uint64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func diffRecords(got, want []flowstore.Record) string {
	return cmp.Diff(got, want, cmpopts.EquateComparable(netip.Addr{}), cmpopts.EquateEmpty())
}

// exporterView is the part of ExporterStatus tests compare exactly.
func exporterView(x ExporterStatus) ExporterStatus {
	x.FirstSeen, x.LastSeen = time.Time{}, time.Time{}
	return x
}

var (
	v5Export   = time.Unix(flowdecodetest.Unix, 500_000_000).UTC()
	v9Export   = time.Unix(flowdecodetest.Unix, 0).UTC()
	localhost1 = addr("127.0.0.1")
)

func TestNetFlowV5(t *testing.T) {
	e := start(t, testConfig(), &recordingSink{})
	e.send("127.0.0.1", ListenerNetFlow, flowdecodetest.V5Datagram(0,
		flowdecodetest.V5Record("10.0.0.1", "10.0.0.2", 40000, 443, 6, 10, 1500),
		flowdecodetest.V5Record("192.0.2.7", "198.51.100.9", 0, 8<<8, 1, 1, 84)))
	got := e.received()
	base := flowstore.Record{
		TimeStart: v5Export.Add(-3 * time.Second), TimeEnd: v5Export.Add(-2 * time.Second),
		Exporter: localhost1, InIf: 1, OutIf: 2, IPVersion: 4, TCPFlags: 0x12, SamplingRate: 1,
	}
	r1, r2 := base, base
	r1.SrcAddr, r1.DstAddr, r1.SrcPort, r1.DstPort, r1.Proto, r1.Packets, r1.Bytes = addr("10.0.0.1"), addr("10.0.0.2"), 40000, 443, 6, 10, 1500
	r2.SrcAddr, r2.DstAddr, r2.SrcPort, r2.DstPort, r2.Proto, r2.Packets, r2.Bytes = addr("192.0.2.7"), addr("198.51.100.9"), 0, 8<<8, 1, 1, 84
	if diff := diffRecords(got, []flowstore.Record{r1, r2}); diff != "" {
		t.Errorf("stored (-got +want):\n%s", diff)
	}
	want := ExporterStatus{Address: localhost1, Protocols: []string{flowdecode.ProtocolNetFlow5}, Packets: 1, Flows: 2,
		SamplingRate: 1, SamplingSource: SamplingNone}
	if diff := cmp.Diff(exporterView(e.exporter("127.0.0.1")), want, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("exporter (-got +want):\n%s", diff)
	}
	if got := value(e.c.m.datagrams[flowdecode.ProtocolNetFlow5]); got != 1 {
		t.Errorf("yagura_flow_datagrams_total{protocol=netflow5} = %v, want 1", got)
	}
	if got := value(e.c.m.records); got != 2 {
		t.Errorf("yagura_flow_records_total = %v, want 2", got)
	}
}

func v9Rec(src, dst string, sport, dport uint16, bytes, pkts uint64, rate uint32) flowstore.Record {
	return flowstore.Record{
		TimeStart: v9Export.Add(-5 * time.Second), TimeEnd: v9Export.Add(-time.Second),
		Exporter: localhost1, InIf: 3, OutIf: 4, IPVersion: 4,
		SrcAddr: addr(src), DstAddr: addr(dst), SrcPort: sport, DstPort: dport, Proto: 6, TCPFlags: 0x1b,
		Bytes: bytes, Packets: pkts, SamplingRate: rate,
	}
}

func TestNetFlowV9(t *testing.T) {
	e := start(t, testConfig(), &recordingSink{})

	// Data before its template: counted as a template miss, nothing stored.
	e.send("127.0.0.1", ListenerNetFlow, flowdecodetest.V9Datagram(7, flowdecodetest.Set(260, flowdecodetest.V9Record260("10.1.1.1", "10.2.2.2", 1234, 80, 1000, 5))))
	if got := e.received(); len(got) != 0 {
		t.Fatalf("stored %d flows before the template", len(got))
	}
	x := e.exporter("127.0.0.1")
	if x.TemplateMisses != 1 || x.Templates != 0 || x.DecodeErrors != 0 {
		t.Errorf("before the template: %d template misses, %d templates, %d decode errors; want 1, 0, 0",
			x.TemplateMisses, x.Templates, x.DecodeErrors)
	}
	if got := value(e.c.m.decodeErrors[reasonTemplateUnknown]); got != 1 {
		t.Errorf("decode_errors_total{reason=template_unknown} = %v, want 1", got)
	}

	// Template and data in one datagram, then data alone.
	e.send("127.0.0.1", ListenerNetFlow,
		flowdecodetest.V9Datagram(7, flowdecodetest.V9Template260(), flowdecodetest.Set(260, flowdecodetest.V9Record260("10.1.1.1", "10.2.2.2", 1234, 80, 1000, 5))),
		flowdecodetest.V9Datagram(7, flowdecodetest.Set(260, flowdecodetest.V9Record260("10.1.1.3", "10.2.2.4", 5555, 22, 64, 1).Raw(flowdecodetest.V9Record260("10.1.1.5", "10.2.2.6", 6666, 53, 80, 2)))))
	want := []flowstore.Record{
		v9Rec("10.1.1.1", "10.2.2.2", 1234, 80, 1000, 5, 1),
		v9Rec("10.1.1.3", "10.2.2.4", 5555, 22, 64, 1, 1),
		v9Rec("10.1.1.5", "10.2.2.6", 6666, 53, 80, 2, 1),
	}
	if diff := diffRecords(e.received(), want); diff != "" {
		t.Errorf("stored (-got +want):\n%s", diff)
	}
	x = e.exporter("127.0.0.1")
	if x.TemplateMisses != 1 || x.Templates != 1 || x.Packets != 3 || x.Flows != 3 {
		t.Errorf("after the template: %+v; want 1 template miss, 1 template, 3 packets, 3 flows", x)
	}
	if diff := cmp.Diff(x.Protocols, []string{flowdecode.ProtocolNetFlow9}); diff != "" {
		t.Errorf("protocols (-got +want):\n%s", diff)
	}
}

func TestIPFIX(t *testing.T) {
	e := start(t, testConfig(), &recordingSink{})
	start, end := time.UnixMilli(1_700_000_000_250).UTC(), time.UnixMilli(1_700_000_003_750).UTC()
	e.send("127.0.0.1", ListenerIPFIX,
		flowdecodetest.IPFIXDatagram(42, ipfixTemplate300,
			flowdecodetest.Set(300, ipfixRecord300("2001:db8::1", "2001:db8::2", 53000, 53, 1<<33, 3, uint64(start.UnixMilli()), uint64(end.UnixMilli())))),
		// A malformed datagram: counted, not stored.
		[]byte{0, 10, 0, 3})
	want := []flowstore.Record{{
		TimeStart: start, TimeEnd: end, Exporter: localhost1, InIf: 10, OutIf: 20, IPVersion: 6,
		SrcAddr: addr("2001:db8::1"), DstAddr: addr("2001:db8::2"), SrcPort: 53000, DstPort: 53, Proto: 17,
		Bytes: 1 << 33, Packets: 3, SamplingRate: 1,
	}}
	if diff := diffRecords(e.received(), want); diff != "" {
		t.Errorf("stored (-got +want):\n%s", diff)
	}
	x := e.exporter("127.0.0.1")
	if x.Packets != 2 || x.DecodeErrors != 1 || x.Templates != 1 || x.Flows != 1 {
		t.Errorf("exporter %+v: want 2 packets, 1 decode error, 1 template, 1 flow", x)
	}
	if got := value(e.c.m.decodeErrors[reasonMalformed]); got != 1 {
		t.Errorf("decode_errors_total{reason=malformed} = %v, want 1", got)
	}
	ls := e.c.Listeners()
	if len(ls) != 3 || ls[1].Protocol != ListenerIPFIX || ls[1].Datagrams != 2 || ls[1].Sockets != 1 || ls[1].ReadBuffer != 4<<20 {
		t.Errorf("listeners %+v: want the second to be ipfix with 2 datagrams, 1 socket, 4 MiB buffer", ls)
	}
}

func TestSFlow(t *testing.T) {
	e := start(t, testConfig(), &recordingSink{})
	before := time.Now().UTC()
	e.send("127.0.0.1", ListenerSFlow, flowdecodetest.SFlowDatagram(1, 1514))
	got := e.received()
	if len(got) != 1 {
		t.Fatalf("stored %d flows, want 1", len(got))
	}
	// sFlow has no flow times: the receive time.
	if got[0].TimeStart.Before(before) || got[0].TimeStart != got[0].TimeEnd || time.Since(got[0].TimeStart) > time.Minute {
		t.Errorf("times %v – %v: want both the receive time (after %v)", got[0].TimeStart, got[0].TimeEnd, before)
	}
	got[0].TimeStart, got[0].TimeEnd = time.Time{}, time.Time{}
	want := []flowstore.Record{{
		Exporter: localhost1, InIf: 5, OutIf: 6, IPVersion: 4,
		SrcAddr: addr("128.232.110.120"), DstAddr: addr("66.35.250.204"), SrcPort: 34855, DstPort: 80, Proto: 6,
		TCPFlags: 0x02, Bytes: 1514, Packets: 1, SamplingRate: 1,
	}}
	if diff := diffRecords(got, want); diff != "" {
		t.Errorf("stored (-got +want):\n%s", diff)
	}
	x := e.exporter("127.0.0.1")
	if diff := cmp.Diff(x.Protocols, []string{flowdecode.ProtocolSFlow5}); diff != "" || x.SamplingRate != 1 || x.SamplingSource != flowdecode.SamplingSFlowHeader {
		t.Errorf("exporter %+v: want sflow5, rate 1 from the sflow header", x)
	}
}

// TestSampling sends 1:100 sampled streams of each kind from its own
// exporter address.
func TestSampling(t *testing.T) {
	e := start(t, testConfig(), &recordingSink{})
	const (
		v9Exp    = "127.0.0.2"
		v5Exp    = "127.0.0.3"
		sflowExp = "127.0.0.4"
	)
	// v9: the rate comes in options data (sampling interval, IE 34).
	e.send(v9Exp, ListenerNetFlow,
		flowdecodetest.V9Datagram(7, flowdecodetest.V9Template260(), flowdecodetest.V9OptionsTemplate270(), flowdecodetest.V9OptionsData270(100)),
		flowdecodetest.V9Datagram(7, flowdecodetest.Set(260, flowdecodetest.V9Record260("10.1.1.1", "10.2.2.2", 1234, 80, 1000, 5))))
	// v5: sampling_interval 100, deterministic mode (01 in the top bits).
	e.send(v5Exp, ListenerNetFlow, flowdecodetest.V5Datagram(0x4000|100, flowdecodetest.V5Record("10.0.0.1", "10.0.0.2", 40000, 443, 6, 10, 1500)))
	e.send(sflowExp, ListenerSFlow, flowdecodetest.SFlowDatagram(100, 1514))

	byExporter := map[string][]flowstore.Record{}
	for _, r := range e.received() {
		byExporter[r.Exporter.String()] = append(byExporter[r.Exporter.String()], r)
	}
	for _, tt := range []struct {
		exporter            string
		rawBytes, rawPkts   uint64
		source              string
		protocol            string
		wantRecordsExporter int
	}{
		{v9Exp, 1000, 5, flowdecode.SamplingOptionsTemplate, flowdecode.ProtocolNetFlow9, 1},
		{v5Exp, 1500, 10, flowdecode.SamplingV5Header, flowdecode.ProtocolNetFlow5, 1},
		{sflowExp, 1514, 1, flowdecode.SamplingSFlowHeader, flowdecode.ProtocolSFlow5, 1},
	} {
		t.Run(tt.protocol, func(t *testing.T) {
			recs := byExporter[tt.exporter]
			if len(recs) != tt.wantRecordsExporter {
				t.Fatalf("%d records, want %d", len(recs), tt.wantRecordsExporter)
			}
			r := recs[0]
			if r.SamplingRate != 100 || r.Bytes != 100*tt.rawBytes || r.Packets != 100*tt.rawPkts {
				t.Errorf("stored rate %d, bytes %d, packets %d; want 100, %d, %d", r.SamplingRate, r.Bytes, r.Packets, 100*tt.rawBytes, 100*tt.rawPkts)
			}
			if r.RawBytes() != tt.rawBytes || r.RawPackets() != tt.rawPkts {
				t.Errorf("raw bytes %d, packets %d; want %d, %d", r.RawBytes(), r.RawPackets(), tt.rawBytes, tt.rawPkts)
			}
			x := e.exporter(tt.exporter)
			if x.SamplingRate != 100 || x.SamplingSource != tt.source || x.SamplingWarning != "" {
				t.Errorf("exporter shows rate %d from %q (warning %q); want 100 from %q, no warning",
					x.SamplingRate, x.SamplingSource, x.SamplingWarning, tt.source)
			}
		})
	}

	// An administrator's override wins over what the exporter says.
	e.c.SetExporterSettings(map[netip.Addr]ExporterSettings{addr(v5Exp): {Name: "edge-1", SamplingRate: 10}})
	e.send(v5Exp, ListenerNetFlow, flowdecodetest.V5Datagram(0x4000|100, flowdecodetest.V5Record("10.0.0.1", "10.0.0.2", 40000, 443, 6, 10, 1500)))
	got := e.received()
	last := got[len(got)-1]
	if last.SamplingRate != 10 || last.Bytes != 15000 || last.Packets != 100 {
		t.Errorf("with override: rate %d, bytes %d, packets %d; want 10, 15000, 100", last.SamplingRate, last.Bytes, last.Packets)
	}
	if x := e.exporter(v5Exp); x.Name != "edge-1" || x.SamplingRate != 10 || x.SamplingSource != SamplingOverride {
		t.Errorf("with override: exporter %q shows rate %d from %q; want edge-1, 10 from override", x.Name, x.SamplingRate, x.SamplingSource)
	}
	// Settings are replaced, not merged: without the entry the exporter's own rate is back.
	e.c.SetExporterSettings(nil)
	if x := e.exporter(v5Exp); x.Name != "" || x.SamplingRate != 100 || x.SamplingSource != flowdecode.SamplingV5Header {
		t.Errorf("after clearing: exporter %q shows rate %d from %q; want no name, 100 from v5-header", x.Name, x.SamplingRate, x.SamplingSource)
	}

	// The exporter changes its rate: flows follow, and the change is flagged.
	e.send(v5Exp, ListenerNetFlow, flowdecodetest.V5Datagram(0x4000|1000, flowdecodetest.V5Record("10.0.0.1", "10.0.0.2", 40000, 443, 6, 10, 1500)))
	got = e.received()
	if last := got[len(got)-1]; last.SamplingRate != 1000 || last.Bytes != 1_500_000 {
		t.Errorf("after the change: rate %d, bytes %d; want 1000, 1500000", last.SamplingRate, last.Bytes)
	}
	x := e.exporter(v5Exp)
	if x.SamplingRate != 1000 || !strings.HasPrefix(x.SamplingWarning, "sampling rate changed from 1:100 to 1:1000 at ") {
		t.Errorf("after the change: rate %d, warning %q; want 1000 and a change warning", x.SamplingRate, x.SamplingWarning)
	}

	// The v9 exporter's rate was learned; a record that says nothing keeps
	// it (flowdecode remembers it per domain), but a new domain of the
	// same exporter that never sends a rate is flagged as missing.
	e.send(v9Exp, ListenerNetFlow, flowdecodetest.V9Datagram(8, flowdecodetest.V9Template260(), flowdecodetest.Set(260, flowdecodetest.V9Record260("10.1.1.1", "10.2.2.2", 1234, 80, 1000, 5))))
	got = e.received()
	if last := got[len(got)-1]; last.SamplingRate != 1 || last.Bytes != 1000 {
		t.Errorf("unsampled domain: rate %d, bytes %d; want 1, 1000", last.SamplingRate, last.Bytes)
	}
	if x := e.exporter(v9Exp); !strings.HasPrefix(x.SamplingWarning, "sampling rate missing since ") ||
		!strings.Contains(x.SamplingWarning, "(observation domain 8) (was 1:100)") {
		t.Errorf("unsampled domain: warning %q; want a missing-rate warning for domain 8", x.SamplingWarning)
	}
}

// TestTemplatePersistence restarts the collector with the same templates
// file: data decodes without a new template.
func TestTemplatePersistence(t *testing.T) {
	cfg := testConfig()
	cfg.TemplatesFile = filepath.Join(t.TempDir(), "flow-templates.json")

	first := start(t, cfg, &recordingSink{})
	first.send("127.0.0.1", ListenerNetFlow, flowdecodetest.V9Datagram(7, flowdecodetest.V9Template260(), flowdecodetest.V9OptionsTemplate270(), flowdecodetest.V9OptionsData270(100)))
	first.received()
	first.stop()
	if _, err := os.Stat(cfg.TemplatesFile); err != nil {
		t.Fatalf("templates not saved at shutdown: %v", err)
	}

	second := start(t, cfg, &recordingSink{})
	second.send("127.0.0.1", ListenerNetFlow, flowdecodetest.V9Datagram(7, flowdecodetest.Set(260, flowdecodetest.V9Record260("10.1.1.1", "10.2.2.2", 1234, 80, 1000, 5))))
	want := []flowstore.Record{v9Rec("10.1.1.1", "10.2.2.2", 1234, 80, 100_000, 500, 100)}
	if diff := diffRecords(second.received(), want); diff != "" {
		t.Errorf("after restart (-got +want):\n%s", diff)
	}
	if x := second.exporter("127.0.0.1"); x.TemplateMisses != 0 || x.Templates != 2 {
		t.Errorf("after restart: %d template misses, %d templates; want 0, 2", x.TemplateMisses, x.Templates)
	}
	second.stop()

	// A corrupt file is ignored: the collector runs, data waits for a template.
	if err := os.WriteFile(cfg.TemplatesFile, []byte(`{"version":1,"templates":[`), 0o600); err != nil {
		t.Fatal(err)
	}
	third := start(t, cfg, &recordingSink{})
	third.send("127.0.0.1", ListenerNetFlow, flowdecodetest.V9Datagram(7, flowdecodetest.Set(260, flowdecodetest.V9Record260("10.1.1.1", "10.2.2.2", 1234, 80, 1000, 5))))
	if got := third.received(); len(got) != 0 {
		t.Errorf("with a corrupt templates file: %d flows stored, want 0", len(got))
	}
	third.send("127.0.0.1", ListenerNetFlow, flowdecodetest.V9Datagram(7, flowdecodetest.V9Template260()))
	third.received()
	third.stop()
	data, err := os.ReadFile(cfg.TemplatesFile)
	if err != nil || !strings.Contains(string(data), `"template_id":260`) {
		t.Errorf("templates file after the corrupt one: %s, %v; want it rewritten with template 260", data, err)
	}
	if matches, _ := filepath.Glob(filepath.Join(filepath.Dir(cfg.TemplatesFile), ".*.tmp")); len(matches) != 0 {
		t.Errorf("temporary files left behind: %v", matches)
	}
}

// TestSinkFailures: a failing store is retried with the same batch; no flow
// is lost or stored twice.
func TestSinkFailures(t *testing.T) {
	sink := &recordingSink{failN: 3}
	e := start(t, testConfig(), sink)
	for i := range 5 {
		e.send("127.0.0.1", ListenerNetFlow, flowdecodetest.V5Datagram(0, flowdecodetest.V5Record("10.0.0.1", "10.0.0.2", uint16(1000+i), 443, 6, 1, 100)))
	}
	got := e.received()
	if len(got) != 5 {
		t.Fatalf("stored %d flows, want 5", len(got))
	}
	for i, r := range got {
		if r.SrcPort != uint16(1000+i) {
			t.Errorf("flow %d has source port %d, want %d", i, r.SrcPort, 1000+i)
		}
	}
	if n := value(e.c.m.storeErrors); n != 3 {
		t.Errorf("store_errors_total = %v, want 3", n)
	}
	if n := value(e.c.m.dropped); n != 0 {
		t.Errorf("dropped_total = %v, want 0", n)
	}
	if n := histogramCount(t, e.reg, "yagura_flow_batch_write_seconds"); n != 1 {
		t.Errorf("batch write histogram counts %d writes, want 1 (one batch, retries included)", n)
	}
}

// TestShutdownFlushes: flows batched when Run's context ends are stored
// before Run returns, even when the store fails at first.
func TestShutdownFlushes(t *testing.T) {
	sink := &recordingSink{failN: 2}
	cfg := testConfig()
	cfg.TemplatesFile = filepath.Join(t.TempDir(), "templates.json")
	e := start(t, cfg, sink)
	e.send("127.0.0.1", ListenerNetFlow, flowdecodetest.V5Datagram(0,
		flowdecodetest.V5Record("10.0.0.1", "10.0.0.2", 1, 2, 6, 1, 100), flowdecodetest.V5Record("10.0.0.3", "10.0.0.4", 3, 4, 17, 2, 200)))
	e.send("127.0.0.1", ListenerSFlow, flowdecodetest.SFlowDatagram(1, 64))
	e.waitDatagrams(e.sent)
	e.stop()
	if got := len(sink.stored()); got != 3 {
		t.Errorf("stored %d flows at shutdown, want 3", got)
	}
	// Nothing batched after Run returned: Flush has nothing to do.
	if err := e.c.Flush(context.Background()); err != nil {
		t.Errorf("Flush after Run: %v", err)
	}
}

// TestBacklogFull: while the store hangs, flows beyond the backlog are
// dropped and counted, never silently; those kept are stored once it
// recovers.
func TestBacklogFull(t *testing.T) {
	hold := make(chan struct{})
	sink := &recordingSink{hold: hold}
	cfg := testConfig()
	cfg.BatchFlows, cfg.Backlog, cfg.Writers = 2, 1, 1
	e := start(t, cfg, sink)
	// 10 datagrams of 2 flows: each fills a batch. One batch is being
	// written (held), Backlog=1 waits, one is being filled; later ones
	// are dropped.
	for i := range 10 {
		e.send("127.0.0.1", ListenerNetFlow, flowdecodetest.V5Datagram(0,
			flowdecodetest.V5Record("10.0.0.1", "10.0.0.2", uint16(i), 1, 6, 1, 100), flowdecodetest.V5Record("10.0.0.1", "10.0.0.2", uint16(i), 2, 6, 1, 100)))
	}
	e.waitDatagrams(e.sent)
	dropped := value(e.c.m.dropped)
	if dropped == 0 {
		t.Error("no flows counted as dropped while the store hung")
	}
	close(hold)
	got := e.received()
	// Counted again: the last datagrams may have been read but not yet
	// handled when the first count was taken.
	dropped = value(e.c.m.dropped)
	if total := len(got) + int(dropped); total != 20 {
		t.Errorf("stored %d + dropped %v = %d flows, want 20", len(got), dropped, total)
	}
	if x := e.exporter("127.0.0.1"); x.Flows != 20 {
		t.Errorf("exporter counted %d flows, want 20 (decoded, stored or not)", x.Flows)
	}
}

// TestParallelWritersFlush: with two writers per socket a later batch can
// be stored while an earlier one is still being written, but Flush answers
// only once everything batched before it is stored.
func TestParallelWritersFlush(t *testing.T) {
	held := make(chan struct{})
	sink := &recordingSink{holdFirst: held}
	cfg := testConfig()
	cfg.BatchFlows, cfg.Writers = 2, 2
	e := start(t, cfg, sink)
	for i := range 2 {
		e.send("127.0.0.1", ListenerNetFlow, flowdecodetest.V5Datagram(0,
			flowdecodetest.V5Record("10.0.0.1", "10.0.0.2", uint16(i), 1, 6, 1, 100), flowdecodetest.V5Record("10.0.0.1", "10.0.0.2", uint16(i), 2, 6, 1, 100)))
	}
	e.waitDatagrams(e.sent)
	flushed := make(chan error, 1)
	go func() { flushed <- e.c.Flush(context.Background()) }()
	// The second batch goes through the other writer meanwhile.
	deadline := time.Now().Add(5 * time.Second)
	for len(sink.stored()) < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := len(sink.stored()); n != 2 {
		t.Fatalf("stored %d flows while the first batch is held, want the second batch's 2", n)
	}
	select {
	case err := <-flushed:
		t.Fatalf("Flush returned (%v) while an earlier batch was still being written", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(held)
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	if n := len(sink.stored()); n != 4 {
		t.Errorf("after Flush %d flows stored, want 4", n)
	}
}

// TestSockets: with two sockets per address, datagrams from many source
// ports are spread over both (SO_REUSEPORT hashes the 4-tuple), and
// nothing is lost or counted twice.
func TestSockets(t *testing.T) {
	cfg := testConfig()
	cfg.Sockets = 2
	e := start(t, cfg, &recordingSink{})
	const senders = 32
	for i := range senders {
		// A new socket, so a new source port, each time.
		e.send("127.0.0.1", ListenerNetFlow, flowdecodetest.V5Datagram(0, flowdecodetest.V5Record("10.0.0.1", "10.0.0.2", uint16(i), 443, 6, 1, 100)))
	}
	if got := len(e.received()); got != senders {
		t.Errorf("stored %d flows, want %d", got, senders)
	}
	l := e.c.Listeners()[0]
	if l.Sockets != 2 || l.Datagrams != senders {
		t.Errorf("listener %+v: want 2 sockets, %d datagrams", l, senders)
	}
	e.c.mu.Lock()
	for i, w := range e.c.listeners[0].workers {
		if w.datagrams.Load() == 0 {
			t.Errorf("socket %d received nothing from %d source ports", i, senders)
		}
	}
	e.c.mu.Unlock()
}

// TestKernelDrops holds the reader while datagrams overflow a small
// receive buffer; the drops are reported with the next datagram read.
func TestKernelDrops(t *testing.T) {
	cfg := testConfig()
	cfg.ReadBuffer = 4096 // the kernel's minimum is about this
	gate := make(chan struct{})
	var once sync.Once
	e := start(t, cfg, &recordingSink{}, func(c *Collector) {
		c.testHookRead = func() { once.Do(func() { <-gate }) }
	})
	payload := flowdecodetest.V5Datagram(0, flowdecodetest.V5Record("10.0.0.1", "10.0.0.2", 1, 443, 6, 1, 100))
	for range 200 {
		e.send("127.0.0.1", ListenerNetFlow, payload)
	}
	close(gate)
	time.Sleep(50 * time.Millisecond)
	// The drop counter travels with datagrams queued after the drops.
	e.send("127.0.0.1", ListenerNetFlow, payload)
	e.received()
	l := e.c.Listeners()[0]
	if l.KernelDrops == 0 || l.Datagrams+l.KernelDrops != e.sent {
		t.Errorf("listener read %d and saw %d dropped of %d sent; want drops, adding up", l.Datagrams, l.KernelDrops, e.sent)
	}
	if got := value(e.c.m.kernelDrops); got != float64(l.KernelDrops) {
		t.Errorf("kernel_drops_total = %v, want %d", got, l.KernelDrops)
	}
}

func TestExportersAndLimit(t *testing.T) {
	cfg := testConfig()
	cfg.MaxExporters = 2
	var (
		mu  sync.Mutex
		got []netip.Addr
	)
	e := start(t, cfg, &recordingSink{}, func(c *Collector) {
		c.OnNewExporter(func(x ExporterStatus) {
			mu.Lock()
			got = append(got, x.Address)
			mu.Unlock()
		})
	})
	payload := flowdecodetest.V5Datagram(0, flowdecodetest.V5Record("10.0.0.1", "10.0.0.2", 1, 443, 6, 1, 100))
	e.send("127.0.0.9", ListenerNetFlow, payload, payload)
	e.send("127.0.0.5", ListenerSFlow, flowdecodetest.SFlowDatagram(1, 64))
	// The sockets are read concurrently: make sure the third exporter
	// comes last.
	e.received()
	e.send("127.0.0.7", ListenerNetFlow, payload) // beyond max_exporters
	if n := len(e.received()); n != 3 {
		t.Errorf("stored %d flows, want 3 (none from the third exporter)", n)
	}
	var addrs []netip.Addr
	for _, x := range e.c.Exporters() {
		addrs = append(addrs, x.Address)
	}
	want := []netip.Addr{addr("127.0.0.5"), addr("127.0.0.9")}
	if diff := cmp.Diff(addrs, want, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("exporters (-got +want):\n%s", diff)
	}
	if n := value(e.c.m.decodeErrors[reasonExporterLimit]); n != 1 {
		t.Errorf("decode_errors_total{reason=exporter_limit} = %v, want 1", n)
	}
	e.stop() // announcements are all made before Run returns
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff(got, want, cmpopts.EquateComparable(netip.Addr{}), cmpopts.SortSlices(func(a, b netip.Addr) bool { return a.Less(b) })); diff != "" {
		t.Errorf("OnNewExporter calls (-got +want):\n%s", diff)
	}
}

func TestTimedFlush(t *testing.T) {
	cfg := testConfig()
	cfg.FlushEvery = 50 * time.Millisecond
	sink := &recordingSink{}
	e := start(t, cfg, sink)
	e.send("127.0.0.1", ListenerNetFlow, flowdecodetest.V5Datagram(0, flowdecodetest.V5Record("10.0.0.1", "10.0.0.2", 1, 443, 6, 1, 100)))
	deadline := time.Now().Add(5 * time.Second)
	for len(sink.stored()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("flow not written within 5 s with flush_every 50ms")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBindError(t *testing.T) {
	// A socket without SO_REUSEPORT keeps others off its port.
	taken, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := testConfig()
	cfg.SFlow = []string{taken.LocalAddr().String()}
	c, err := New(cfg, &recordingSink{}, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "listen on sflow[0] \""+taken.LocalAddr().String()+"\"") {
			t.Errorf("Run: %v; want a listen error naming sflow[0]", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return the bind error")
	}
	if err := c.Run(context.Background()); err == nil {
		t.Error("second Run: no error")
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no listeners", func(c *Config) { c.NetFlow, c.IPFIX, c.SFlow = nil, nil, nil }, "netflow, ipfix and sflow are all empty"},
		{"bad address", func(c *Config) { c.NetFlow = []string{"2055"} }, `netflow[0] is "2055": use host:port or :port`},
		{"bad port", func(c *Config) { c.IPFIX = []string{":http"} }, `ipfix[0] is ":http": the port must be a number`},
		{"duplicate", func(c *Config) { c.NetFlow, c.SFlow = []string{":2055"}, []string{":2055"} }, `sflow[0] is ":2055", already used by netflow[0]`},
		{"sockets", func(c *Config) { c.Sockets = -1 }, "sockets is -1: use 1 to 256"},
		{"read buffer", func(c *Config) { c.ReadBuffer = -5 }, "read_buffer is -5"},
		{"batch", func(c *Config) { c.BatchFlows = 2_000_000 }, "batch_flows is 2000000: use 1 to 1000000"},
		{"flush", func(c *Config) { c.FlushEvery = -time.Second }, "flush_every is -1s"},
		{"backlog", func(c *Config) { c.Backlog = -1 }, "backlog is -1"},
		{"exporters", func(c *Config) { c.MaxExporters = -1 }, "max_exporters is -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.edit(&cfg)
			_, err := New(cfg, &recordingSink{}, nil, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: %v; want it to contain %q", err, tt.want)
			}
		})
	}
	if _, err := New(DefaultConfig(), &recordingSink{}, nil, prometheus.NewRegistry()); err != nil {
		t.Errorf("DefaultConfig: %v", err)
	}
	if _, err := New(DefaultConfig(), nil, nil, nil); err == nil {
		t.Error("New without a sink: no error")
	}
}

// TestNoGoroutineLeak runs collectors with traffic and flushes and checks
// that every goroutine they started has ended once Run returns.
func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	for range 3 {
		cfg := testConfig()
		cfg.Sockets = 2
		cfg.FlushEvery = 10 * time.Millisecond
		e := start(t, cfg, &recordingSink{failN: 1})
		e.send("127.0.0.1", ListenerNetFlow, flowdecodetest.V5Datagram(0, flowdecodetest.V5Record("10.0.0.1", "10.0.0.2", 1, 443, 6, 1, 100)))
		e.received()
		e.stop()
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
