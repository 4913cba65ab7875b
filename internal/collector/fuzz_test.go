package collector

import (
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/flowdecode"
	"github.com/yagura/yagura/internal/flowdecode/flowdecodetest"
)

// handleWorker returns a worker with no socket, for feeding datagrams to
// handle directly, with the templates the seeds use already known.
func handleWorker(tb testing.TB, protocol string) *worker {
	tb.Helper()
	cfg := testConfig()
	cfg.BatchFlows = 1_000_000 // never hand a batch to the (absent) writer
	c, err := New(cfg, &recordingSink{}, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	for _, p := range [][]byte{
		flowdecodetest.V9Datagram(7, flowdecodetest.V9Template260(), flowdecodetest.V9OptionsTemplate270(), flowdecodetest.V9OptionsData270(100)),
		flowdecodetest.IPFIXDatagram(42, ipfixTemplate300),
	} {
		if _, err := c.dec.DecodeNetFlow(fuzzExporter, p, time.Now()); err != nil {
			tb.Fatal(err)
		}
	}
	return newWorker(c, &listener{protocol: protocol}, nil, nil)
}

var fuzzExporter = netip.MustParseAddr("192.0.2.1")

// FuzzHandle feeds arbitrary datagrams through the collector's path from
// a received datagram to a stored record: no panic, and every record
// keeps its raw counters recoverable (Bytes = raw × SamplingRate).
func FuzzHandle(f *testing.F) {
	f.Add(false, flowdecodetest.V5Datagram(0x4000|100, flowdecodetest.V5Record("10.0.0.1", "10.0.0.2", 1, 2, 6, 3, 4)))
	f.Add(false, flowdecodetest.V9Datagram(7, flowdecodetest.Set(260, flowdecodetest.V9Record260("10.1.1.1", "10.2.2.2", 1234, 80, 1000, 5))))
	f.Add(false, flowdecodetest.IPFIXDatagram(42, flowdecodetest.Set(300, ipfixRecord300("2001:db8::1", "2001:db8::2", 1, 2, 3, 4, 5, 6))))
	f.Add(true, flowdecodetest.SFlowDatagram(100, 1514))
	f.Add(true, []byte{0, 0, 0, 5})
	f.Fuzz(func(t *testing.T, sflow bool, payload []byte) {
		protocol := ListenerNetFlow
		if sflow {
			protocol = ListenerSFlow
		}
		w := handleWorker(t, protocol)
		now := time.Now()
		w.handle(&datagram{buf: payload, src: fuzzExporter}, now)
		var ip []flowdecode.Flow
		for _, fl := range w.flows {
			if fl.SrcAddr.IsValid() && fl.DstAddr.IsValid() {
				ip = append(ip, fl)
			}
		}
		if len(w.batch) != len(ip) {
			t.Fatalf("%d records from %d IP flows", len(w.batch), len(ip))
		}
		for i, r := range w.batch {
			if r.Exporter != fuzzExporter || r.SamplingRate == 0 {
				t.Fatalf("record %+v: wrong exporter or no rate", r)
			}
			if r.Bytes != math.MaxUint64 && r.RawBytes() != ip[i].Bytes {
				t.Fatalf("record %+v: raw bytes %d not recoverable", r, ip[i].Bytes)
			}
		}
		w.handle(&datagram{buf: payload, src: fuzzExporter, truncated: true}, now)
		st := w.c.reg.all(nil)
		if len(st) != 1 || st[0].Packets != 2 || st[0].Flows != uint64(len(w.batch)) {
			t.Fatalf("exporter status %+v: want 2 packets, %d flows", st, len(w.batch))
		}
		if st[0].SamplingRate == 0 {
			t.Fatal("exporter shows sampling rate 0")
		}
		for _, p := range st[0].Protocols {
			if protocolBit(p) == 0 {
				t.Fatalf("unknown protocol %q", p)
			}
		}
	})
}
