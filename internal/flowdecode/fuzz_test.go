package flowdecode

import (
	"testing"

	"github.com/yagura/yagura/internal/flowdecode/flowdecodetest"
)

func netflowSeeds() [][]byte {
	return [][]byte{
		v5Datagram(),
		flowdecodetest.V9Datagram(7, flowdecodetest.V9Template260(), flowdecodetest.Set(260, flowdecodetest.V9Record260("10.1.1.1", "10.2.2.2", 1234, 80, 1000, 5))),
		flowdecodetest.V9Datagram(7, flowdecodetest.V9OptionsTemplate270(), flowdecodetest.V9OptionsData270(100)),
		flowdecodetest.IPFIXDatagram(42, flowdecodetest.Set(2, flowdecodetest.TemplateBody(300, flowdecodetest.Field{27, 16}, flowdecodetest.Field{28, 16}, flowdecodetest.Field{1, 0xffff})),
			flowdecodetest.Set(300, flowdecodetest.Wire{}.IP("2001:db8::1").IP("2001:db8::2").U8(2).U16(7))),
		flowdecodetest.IPFIXDatagram(43, flowdecodetest.Set(3, flowdecodetest.Wire{}.U16(400).U16(2).U16(1).U16(149).U16(4).U16(305).U16(4)),
			flowdecodetest.Set(400, flowdecodetest.Wire{}.U32(43).U32(1000))),
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
	f.Add(flowdecodetest.SFlowDatagram(100, 1514))
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
