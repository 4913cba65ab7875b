package flowdecode

import (
	"testing"
)

func netflowSeeds() [][]byte {
	return [][]byte{
		v5Datagram(),
		v9Datagram(7, v9Template260, set(260, v9Record260("10.1.1.1", "10.2.2.2", 1234, 80, 1000, 5))),
		v9Datagram(7, v9OptionsTemplate270, v9OptionsData270(100)),
		ipfixDatagram(42, set(2, templateBody(300, field{27, 16}, field{28, 16}, field{1, 0xffff})),
			set(300, wire{}.ip("2001:db8::1").ip("2001:db8::2").u8(2).u16(7))),
		ipfixDatagram(43, set(3, wire{}.u16(400).u16(2).u16(1).u16(149).u16(4).u16(305).u16(4)),
			set(400, wire{}.u32(43).u32(1000))),
	}
}

// FuzzDecodeNetFlow checks that no datagram panics or hangs the decoder or
// breaks its caches. Each input is decoded twice by a fresh Decoder, so data
// sets are also decoded with the templates the input itself defined, while a
// failure still reproduces from its input alone.
func FuzzDecodeNetFlow(f *testing.F) {
	for _, s := range netflowSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		d := New()
		for range 2 {
			flows, err := d.DecodeNetFlow(exporterA, payload, recvTime)
			if err == nil && len(payload) < 2 {
				t.Fatalf("no error for %d bytes", len(payload))
			}
			for _, fl := range flows {
				if fl.Protocol == "" || fl.Exporter != exporterA {
					t.Fatalf("flow without protocol or exporter: %+v", fl)
				}
			}
		}
		if err := New().LoadTemplates(d.Templates()); err != nil {
			t.Fatalf("templates do not round-trip: %v", err)
		}
	})
}

// FuzzDecodeSFlow checks that no datagram panics the sFlow decoder.
func FuzzDecodeSFlow(f *testing.F) {
	f.Add(sflowDatagram(100))
	f.Add(v5Datagram())
	f.Fuzz(func(t *testing.T, payload []byte) {
		flows, _ := New().DecodeSFlow(exporterA, payload, recvTime)
		for _, fl := range flows {
			if fl.Packets != 1 || fl.Protocol != ProtocolSFlow5 {
				t.Fatalf("unexpected flow: %+v", fl)
			}
		}
	})
}
