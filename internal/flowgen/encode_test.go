package flowgen

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/yagura/yagura/internal/flowdecode"
)

var (
	testExporter = netip.MustParseAddr("192.0.2.99")
	testNow      = time.Date(2026, 3, 4, 5, 6, 7, 891_234_567, time.UTC)
	testBoot     = testNow.Add(-3 * time.Hour)
)

// wantDecoded is what flowdecode must return for flow n sent in a datagram
// of enc exported at now.
func wantDecoded(enc *Encoder, n uint64, now time.Time) flowdecode.Flow {
	f := FlowAt(enc.seed, n)
	end := enc.ExportTime(now).Add(-f.EndAgo).UTC()
	d := flowdecode.Flow{
		TimeStart: end.Add(-f.Duration), TimeEnd: end,
		Exporter: testExporter, ObservationDomain: enc.domain,
		InIf: uint32(f.InIf), OutIf: uint32(f.OutIf), IPVersion: 4,
		SrcAddr: f.SrcAddr, DstAddr: f.DstAddr, SrcPort: f.SrcPort, DstPort: f.DstPort,
		Proto: f.Proto, TCPFlags: f.TCPFlags, Bytes: f.Bytes, Packets: f.Packets,
	}
	sp, dp := f.SrcPort, f.DstPort
	if f.Proto == 1 {
		sp, dp = f.DstPort>>8, f.DstPort&0xff
	}
	d.CommunityID = flowdecode.CommunityID(f.SrcAddr, f.DstAddr, f.Proto, sp, dp)
	switch enc.proto {
	case NetFlow5:
		d.Protocol = flowdecode.ProtocolNetFlow5
	case NetFlow9:
		d.Protocol = flowdecode.ProtocolNetFlow9
	case IPFIX:
		d.Protocol = flowdecode.ProtocolIPFIX
	}
	return d
}

func cmpFlows(t *testing.T, got, want []flowdecode.Flow) {
	t.Helper()
	if diff := cmp.Diff(got, want, cmpopts.EquateComparable(netip.Addr{}), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("decoded flows (-got +want):\n%s", diff)
	}
}

// TestDecodesToGeneratedFlows sends a stream through one decoder, as a
// collector would receive it, and checks every datagram decodes to exactly
// the flows the encoder says it put in, with the totals it reported.
func TestDecodesToGeneratedFlows(t *testing.T) {
	for _, tc := range []struct {
		proto         Protocol
		perDatagram   int
		templateEvery int
	}{
		{NetFlow5, 30, 0},
		{NetFlow5, 7, 0},
		{NetFlow9, DefaultFlowsPerDatagram(NetFlow9), 3},
		{NetFlow9, 1, 1},   // 41-byte record: the data set is padded
		{NetFlow9, 200, 2}, // beyond one MTU: jumbo datagrams decode too
		{IPFIX, DefaultFlowsPerDatagram(IPFIX), 3},
		{IPFIX, 3, 5},
	} {
		t.Run(string(tc.proto), func(t *testing.T) {
			const seed, domain = 42, 0x0102
			enc, err := NewEncoder(tc.proto, seed, domain, tc.templateEvery, testBoot)
			if err != nil {
				t.Fatal(err)
			}
			dec := flowdecode.New()
			var next uint64 = 1000
			var sum Totals
			for i := range 10 {
				now := testNow.Add(time.Duration(i) * 1357 * time.Millisecond)
				n := tc.perDatagram - i%2 // vary the count
				if n < 1 {
					n = 1
				}
				b, tot := enc.Append(nil, next, n, now)
				got, err := dec.DecodeNetFlow(testExporter, b, now)
				if err != nil {
					t.Fatalf("datagram %d (%d bytes): %v", i, len(b), err)
				}
				var want []flowdecode.Flow
				var wantTot Totals
				for j := range uint64(n) {
					want = append(want, wantDecoded(enc, next+j, now))
					f := FlowAt(seed, next+j)
					wantTot.Packets += f.Packets
					wantTot.Bytes += f.Bytes
				}
				wantTot.Flows, wantTot.Datagrams = uint64(n), 1
				cmpFlows(t, got, want)
				if tot != wantTot {
					t.Errorf("datagram %d: totals %+v, want %+v", i, tot, wantTot)
				}
				if tc.proto != NetFlow5 && len(b) > 1500 && n <= DefaultFlowsPerDatagram(tc.proto) {
					t.Errorf("datagram %d: %d bytes, over an Ethernet MTU", i, len(b))
				}
				next += uint64(n)
				sum.add(tot)
			}
			if want := Sum(seed, 1000, next-1000); sum.Flows != want.Flows || sum.Packets != want.Packets || sum.Bytes != want.Bytes {
				t.Errorf("stream totals %+v, Sum says %+v", sum, want)
			}
		})
	}
}

// TestTemplateSchedule checks templates go out in the first datagram and
// every templateEvery-th after it: a decoder that joins mid-stream learns
// them from the next one.
func TestTemplateSchedule(t *testing.T) {
	for _, proto := range []Protocol{NetFlow9, IPFIX} {
		t.Run(string(proto), func(t *testing.T) {
			enc, err := NewEncoder(proto, 1, 7, 4, testBoot)
			if err != nil {
				t.Fatal(err)
			}
			late := flowdecode.New() // starts listening at datagram 2
			for i := range 9 {
				sends := enc.SendsTemplate()
				if want := i%4 == 0; sends != want {
					t.Errorf("datagram %d: template %v, want %v", i, sends, want)
				}
				b, _ := enc.Append(nil, uint64(i*5), 5, testNow)
				if i < 2 {
					continue
				}
				_, err := late.DecodeNetFlow(testExporter, b, testNow)
				if i < 4 && !errors.Is(err, flowdecode.ErrTemplateUnknown) {
					t.Errorf("datagram %d before any template: error %v, want a template error", i, err)
				}
				if i >= 4 && err != nil {
					t.Errorf("datagram %d after the template: %v", i, err)
				}
			}
		})
	}
}

// TestSequenceNumbers checks the header fields receivers use to count
// loss: v5 and IPFIX count flows before the datagram, v9 counts datagrams.
func TestSequenceNumbers(t *testing.T) {
	for _, tc := range []struct {
		proto  Protocol
		at     int // offset of the sequence number
		byFlow bool
	}{
		{NetFlow5, 16, true},
		{NetFlow9, 12, false},
		{IPFIX, 8, true},
	} {
		t.Run(string(tc.proto), func(t *testing.T) {
			enc, err := NewEncoder(tc.proto, 1, 0, 2, testBoot)
			if err != nil {
				t.Fatal(err)
			}
			var flows uint32
			for i := range 5 {
				n := 3 + i
				b, _ := enc.Append(nil, 0, n, testNow)
				want := uint32(i)
				if tc.byFlow {
					want = flows
				}
				if got := binary.BigEndian.Uint32(b[tc.at:]); got != want {
					t.Errorf("datagram %d: sequence %d, want %d", i, got, want)
				}
				if tc.proto == IPFIX {
					if l := binary.BigEndian.Uint16(b[2:]); int(l) != len(b) {
						t.Errorf("datagram %d: message length %d, datagram has %d bytes", i, l, len(b))
					}
				}
				flows += uint32(n)
			}
		})
	}
}

func TestFlowAtDeterministicAndVaried(t *testing.T) {
	if a, b := FlowAt(7, 123), FlowAt(7, 123); a != b {
		t.Fatalf("same seed and index gave %+v and %+v", a, b)
	}
	if FlowAt(7, 123) == FlowAt(8, 123) {
		t.Error("different seeds gave the same flow")
	}
	protos := map[uint8]int{}
	var big int
	for n := range uint64(10000) {
		f := FlowAt(1, n)
		protos[f.Proto]++
		if f.Packets > 16 {
			big++
		}
		if f.Bytes > 1<<32-1 || f.Packets > 1<<32-1 || f.Bytes < f.Packets*28 {
			t.Fatalf("flow %d: implausible counters %+v", n, f)
		}
		if f.Proto != 6 && f.TCPFlags != 0 {
			t.Fatalf("flow %d: TCP flags on protocol %d", n, f.Proto)
		}
		if f.Duration > time.Minute || f.EndAgo >= 5*time.Second {
			t.Fatalf("flow %d: times out of range %+v", n, f)
		}
	}
	// A mix like real traffic: mostly TCP, some UDP, a little ICMP, and a
	// heavy tail of long flows.
	if protos[6] < 7000 || protos[17] < 1000 || protos[1] < 100 || big < 300 {
		t.Errorf("protocol mix %v, %d long flows: not a plausible mix", protos, big)
	}
}

func TestNewEncoderRejects(t *testing.T) {
	for _, tc := range []struct {
		proto  Protocol
		domain uint32
	}{
		{"v7", 0},
		{NetFlow5, 1 << 16},
	} {
		if _, err := NewEncoder(tc.proto, 1, tc.domain, 0, testBoot); err == nil {
			t.Errorf("NewEncoder(%q, domain %d) accepted", tc.proto, tc.domain)
		}
	}
}

// FuzzEncodeDecode checks the round trip for any seed, flow index, count
// and export time: whatever the generator sends decodes to what it says.
func FuzzEncodeDecode(f *testing.F) {
	f.Add(uint64(1), uint64(0), uint8(30), uint8(0), int64(0))
	f.Add(uint64(0xdeadbeef), uint64(1<<63), uint8(1), uint8(1), int64(999))
	f.Add(uint64(7), uint64(1<<40), uint8(21), uint8(2), int64(123456789))
	f.Fuzz(func(t *testing.T, seed, first uint64, n, proto uint8, offMs int64) {
		p := []Protocol{NetFlow5, NetFlow9, IPFIX}[proto%3]
		count := 1 + int(n)%MaxV5Flows
		now := testNow.Add(time.Duration(offMs%(86_400_000)) * time.Millisecond)
		enc, err := NewEncoder(p, seed, 3, 0, testBoot)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := enc.Append(nil, first, count, now)
		got, err := flowdecode.New().DecodeNetFlow(testExporter, b, now)
		if err != nil {
			t.Fatal(err)
		}
		var want []flowdecode.Flow
		for j := range uint64(count) {
			want = append(want, wantDecoded(enc, first+j, now))
		}
		cmpFlows(t, got, want)
	})
}

func BenchmarkAppend(b *testing.B) {
	for _, p := range []Protocol{NetFlow5, NetFlow9, IPFIX} {
		b.Run(string(p), func(b *testing.B) {
			enc, err := NewEncoder(p, 1, 0, 0, testBoot)
			if err != nil {
				b.Fatal(err)
			}
			n := DefaultFlowsPerDatagram(p)
			buf := make([]byte, 0, 1500)
			var first uint64
			b.ReportAllocs()
			for b.Loop() {
				buf, _ = enc.Append(buf[:0], first, n, testNow)
				first += uint64(n)
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "flows/s")
		})
	}
}
