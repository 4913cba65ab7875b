package flowdecode

import (
	"fmt"
	"testing"

	"github.com/yagura/yagura/internal/flowdecode/flowdecodetest"
)

// v5Datagram30 is a full NetFlow v5 datagram: 30 records, as softflowd and
// routers send them.
func v5Datagram30() []byte {
	w := flowdecodetest.Wire{}.U16(5).U16(30).U32(flowdecodetest.Uptime).U32(flowdecodetest.Unix).U32(0).U32(42).U8(0).U8(0).U16(0)
	for i := range 30 {
		w = w.IP(fmt.Sprintf("10.0.%d.%d", i/250, i%250+1)).IP("192.0.2.80").IP("0.0.0.0").U16(1).U16(2).
			U32(uint32(i + 1)).U32(uint32(100 * (i + 1))).U32(flowdecodetest.Uptime - 3000).U32(flowdecodetest.Uptime - 2000).
			U16(uint16(40000 + i)).U16(443).U8(0).U8(0x1b).U8(6).U8(0).U16(0).U16(0).U8(24).U8(24).U16(0)
	}
	return w
}

// v9Datagram30 is a NetFlow v9 datagram of 30 records with template 260.
func v9Datagram30() []byte {
	var recs flowdecodetest.Wire
	for i := range 30 {
		recs = recs.Raw(flowdecodetest.V9Record260(fmt.Sprintf("10.1.%d.%d", i/250, i%250+1), "10.2.2.2", uint16(40000+i), 80, uint32(100*(i+1)), uint32(i+1)))
	}
	return flowdecodetest.V9Datagram(7, flowdecodetest.Set(260, recs))
}

var ipfixTemplate300 = flowdecodetest.Set(2, flowdecodetest.TemplateBody(300,
	flowdecodetest.Field{8, 4}, flowdecodetest.Field{12, 4}, flowdecodetest.Field{7, 2}, flowdecodetest.Field{11, 2}, flowdecodetest.Field{4, 1}, flowdecodetest.Field{6, 1},
	flowdecodetest.Field{10, 4}, flowdecodetest.Field{14, 4}, flowdecodetest.Field{1, 8}, flowdecodetest.Field{2, 8}, flowdecodetest.Field{152, 8}, flowdecodetest.Field{153, 8}))

func ipfixDatagram30() []byte {
	var recs flowdecodetest.Wire
	for i := range 30 {
		recs = recs.IP(fmt.Sprintf("10.1.%d.%d", i/250, i%250+1)).IP("10.2.2.2").U16(uint16(40000 + i)).U16(443).U8(6).U8(0x18).
			U32(3).U32(4).U64(uint64(100 * (i + 1))).U64(uint64(i + 1)).U64(1_700_000_000_250).U64(1_700_000_003_750)
	}
	return flowdecodetest.IPFIXDatagram(42, flowdecodetest.Set(300, recs))
}

// benchDecode decodes payload over and over into one reused slice, as the
// collector does, and reports flows per second on one core.
func benchDecode(b *testing.B, d *Decoder, payload []byte, sflow bool) {
	b.Helper()
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	var (
		n     int
		flows []Flow
		err   error
	)
	for b.Loop() {
		if sflow {
			flows, err = d.AppendSFlow(flows[:0], exporterA, payload, recvTime)
		} else {
			flows, err = d.AppendNetFlow(flows[:0], exporterA, payload, recvTime)
		}
		if err != nil {
			b.Fatal(err)
		}
		n += len(flows)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "flows/s")
}

// BenchmarkDecode decodes 30-record datagrams (one sample for sFlow), with
// and without the Community ID.
func BenchmarkDecode(b *testing.B) {
	for _, opts := range []struct {
		name string
		Options
	}{{"cid", Options{}}, {"nocid", Options{SkipCommunityID: true}}} {
		b.Run("v5/"+opts.name, func(b *testing.B) { benchDecode(b, NewWithOptions(opts.Options), v5Datagram30(), false) })
		b.Run("v9/"+opts.name, func(b *testing.B) {
			d := NewWithOptions(opts.Options)
			if _, err := d.DecodeNetFlow(exporterA, flowdecodetest.V9Datagram(7, flowdecodetest.V9Template260()), recvTime); err != nil {
				b.Fatal(err)
			}
			benchDecode(b, d, v9Datagram30(), false)
		})
		b.Run("ipfix/"+opts.name, func(b *testing.B) {
			d := NewWithOptions(opts.Options)
			if _, err := d.DecodeNetFlow(exporterA, flowdecodetest.IPFIXDatagram(42, ipfixTemplate300), recvTime); err != nil {
				b.Fatal(err)
			}
			benchDecode(b, d, ipfixDatagram30(), false)
		})
		b.Run("sflow/"+opts.name, func(b *testing.B) {
			benchDecode(b, NewWithOptions(opts.Options), flowdecodetest.SFlowDatagram(100, 1514), true)
		})
	}
	b.Run("v9/goflow2-only", func(b *testing.B) {
		d := NewWithOptions(Options{SkipCommunityID: true})
		d.slowOnly = true
		if _, err := d.DecodeNetFlow(exporterA, flowdecodetest.V9Datagram(7, flowdecodetest.V9Template260()), recvTime); err != nil {
			b.Fatal(err)
		}
		benchDecode(b, d, v9Datagram30(), false)
	})
}
