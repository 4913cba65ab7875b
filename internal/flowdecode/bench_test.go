package flowdecode

import (
	"fmt"
	"testing"
)

// v5Datagram30 is a full NetFlow v5 datagram: 30 records, as softflowd and
// routers send them.
func v5Datagram30() []byte {
	w := wire{}.u16(5).u16(30).u32(testUptime).u32(testUnix).u32(0).u32(42).u8(0).u8(0).u16(0)
	for i := range 30 {
		w = w.ip(fmt.Sprintf("10.0.%d.%d", i/250, i%250+1)).ip("192.0.2.80").ip("0.0.0.0").u16(1).u16(2).
			u32(uint32(i + 1)).u32(uint32(100 * (i + 1))).u32(testUptime - 3000).u32(testUptime - 2000).
			u16(uint16(40000 + i)).u16(443).u8(0).u8(0x1b).u8(6).u8(0).u16(0).u16(0).u8(24).u8(24).u16(0)
	}
	return w
}

// v9Datagram30 is a NetFlow v9 datagram of 30 records with template 260.
func v9Datagram30() []byte {
	var recs wire
	for i := range 30 {
		recs = recs.raw(v9Record260(fmt.Sprintf("10.1.%d.%d", i/250, i%250+1), "10.2.2.2", uint16(40000+i), 80, uint32(100*(i+1)), uint32(i+1)))
	}
	return v9Datagram(7, set(260, recs))
}

var ipfixTemplate300 = set(2, templateBody(300,
	field{8, 4}, field{12, 4}, field{7, 2}, field{11, 2}, field{4, 1}, field{6, 1},
	field{10, 4}, field{14, 4}, field{1, 8}, field{2, 8}, field{152, 8}, field{153, 8}))

func ipfixDatagram30() []byte {
	var recs wire
	for i := range 30 {
		recs = recs.ip(fmt.Sprintf("10.1.%d.%d", i/250, i%250+1)).ip("10.2.2.2").u16(uint16(40000 + i)).u16(443).u8(6).u8(0x18).
			u32(3).u32(4).u64(uint64(100 * (i + 1))).u64(uint64(i + 1)).u64(1_700_000_000_250).u64(1_700_000_003_750)
	}
	return ipfixDatagram(42, set(300, recs))
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
			if _, err := d.DecodeNetFlow(exporterA, v9Datagram(7, v9Template260), recvTime); err != nil {
				b.Fatal(err)
			}
			benchDecode(b, d, v9Datagram30(), false)
		})
		b.Run("ipfix/"+opts.name, func(b *testing.B) {
			d := NewWithOptions(opts.Options)
			if _, err := d.DecodeNetFlow(exporterA, ipfixDatagram(42, ipfixTemplate300), recvTime); err != nil {
				b.Fatal(err)
			}
			benchDecode(b, d, ipfixDatagram30(), false)
		})
		b.Run("sflow/"+opts.name, func(b *testing.B) { benchDecode(b, NewWithOptions(opts.Options), sflowDatagram(100), true) })
	}
	b.Run("v9/goflow2-only", func(b *testing.B) {
		d := NewWithOptions(Options{SkipCommunityID: true})
		d.slowOnly = true
		if _, err := d.DecodeNetFlow(exporterA, v9Datagram(7, v9Template260), recvTime); err != nil {
			b.Fatal(err)
		}
		benchDecode(b, d, v9Datagram30(), false)
	})
}
