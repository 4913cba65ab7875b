package flowdecode

import (
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/yagura/yagura/internal/flowdecode/flowdecodetest"
)

var (
	exporterA = netip.MustParseAddr("192.0.2.1")
	exporterB = netip.MustParseAddr("192.0.2.2")
	recvTime  = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	exportT   = time.Unix(flowdecodetest.Unix, 0).UTC()
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func cmpFlows(t *testing.T, got, want []Flow) {
	t.Helper()
	if diff := cmp.Diff(got, want, cmpopts.EquateComparable(netip.Addr{}), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("flows (-got +want):\n%s", diff)
	}
}

func TestDecodeNetFlowV5(t *testing.T) {
	d := New()
	got, err := d.DecodeNetFlow(exporterA, v5Datagram(), recvTime)
	if err != nil {
		t.Fatal(err)
	}
	export := time.Unix(flowdecodetest.Unix, 500_000_000).UTC()
	base := Flow{
		TimeStart: export.Add(-3 * time.Second), TimeEnd: export.Add(-2 * time.Second),
		Exporter: exporterA, ObservationDomain: 1<<8 | 2, InIf: 1, OutIf: 2, IPVersion: 4,
		TCPFlags: 0x12, SamplingRate: 100, SamplingSource: SamplingV5Header, Protocol: ProtocolNetFlow5,
	}
	f1, f2 := base, base
	f1.SrcAddr, f1.DstAddr, f1.SrcPort, f1.DstPort, f1.Proto, f1.Packets, f1.Bytes = addr("10.0.0.1"), addr("10.0.0.2"), 40000, 443, 6, 10, 1500
	f1.CommunityID = CommunityID(f1.SrcAddr, f1.DstAddr, 6, 40000, 443)
	f2.SrcAddr, f2.DstAddr, f2.SrcPort, f2.DstPort, f2.Proto, f2.Packets, f2.Bytes = addr("192.0.2.7"), addr("198.51.100.9"), 0, 8<<8, 1, 1, 84
	f2.CommunityID = CommunityID(f2.SrcAddr, f2.DstAddr, 1, 8, 0)
	cmpFlows(t, got, []Flow{f1, f2})
}

func v9Flow(src, dst string, sport, dport uint16, bytes, pkts uint64) Flow {
	f := Flow{
		TimeStart: exportT.Add(-5 * time.Second), TimeEnd: exportT.Add(-time.Second),
		Exporter: exporterA, ObservationDomain: 7, InIf: 3, OutIf: 4, IPVersion: 4,
		SrcAddr: addr(src), DstAddr: addr(dst), SrcPort: sport, DstPort: dport, Proto: 6, TCPFlags: 0x1b,
		Bytes: bytes, Packets: pkts, Protocol: ProtocolNetFlow9,
	}
	f.CommunityID = CommunityID(f.SrcAddr, f.DstAddr, 6, sport, dport)
	return f
}

// TestDecodeNetFlowV9 runs datagrams in order through one Decoder, as an
// exporter would send them.
func TestDecodeNetFlowV9(t *testing.T) {
	d := New()
	sampled := func(f Flow) Flow {
		f.SamplingRate, f.SamplingSource = 100, SamplingOptionsTemplate
		return f
	}
	steps := []struct {
		name        string
		exporter    netip.Addr
		payload     []byte
		want        []Flow
		wantErr     string // substring; "" for none
		wantUnknown bool
	}{
		{
			name:     "template and data",
			exporter: exporterA,
			payload: flowdecodetest.V9Datagram(7, flowdecodetest.V9Template260(), flowdecodetest.Set(260, flowdecodetest.V9Record260("10.1.1.1", "10.2.2.2", 1234, 80, 1000, 5).
				Raw(flowdecodetest.V9Record260("10.1.1.3", "10.2.2.4", 5555, 22, 64, 1)))),
			want: []Flow{v9Flow("10.1.1.1", "10.2.2.2", 1234, 80, 1000, 5), v9Flow("10.1.1.3", "10.2.2.4", 5555, 22, 64, 1)},
		},
		{
			name:     "data only once the template is known",
			exporter: exporterA,
			payload:  flowdecodetest.V9Datagram(7, flowdecodetest.Set(260, flowdecodetest.V9Record260("10.1.1.1", "10.2.2.2", 1234, 80, 2000, 6))),
			want:     []Flow{v9Flow("10.1.1.1", "10.2.2.2", 1234, 80, 2000, 6)},
		},
		{
			name:        "unknown template is skipped, other sets decoded",
			exporter:    exporterA,
			payload:     flowdecodetest.V9Datagram(7, flowdecodetest.Set(300, flowdecodetest.Wire{}.U32(1)), flowdecodetest.Set(260, flowdecodetest.V9Record260("10.1.1.1", "10.2.2.2", 1234, 80, 3, 1))),
			want:        []Flow{v9Flow("10.1.1.1", "10.2.2.2", 1234, 80, 3, 1)},
			wantErr:     "netflow v9 from 192.0.2.1: domain 7: flowset 1: template 300 unknown (waiting for a template)",
			wantUnknown: true,
		},
		{
			name:        "templates are per exporter",
			exporter:    exporterB,
			payload:     flowdecodetest.V9Datagram(7, flowdecodetest.Set(260, flowdecodetest.V9Record260("10.1.1.1", "10.2.2.2", 1234, 80, 3, 1))),
			wantErr:     "netflow v9 from 192.0.2.2: domain 7: flowset 1: template 260 unknown",
			wantUnknown: true,
		},
		{
			name:        "templates are per observation domain",
			exporter:    exporterA,
			payload:     flowdecodetest.V9Datagram(8, flowdecodetest.Set(260, flowdecodetest.V9Record260("10.1.1.1", "10.2.2.2", 1234, 80, 3, 1))),
			wantErr:     "template 260 unknown",
			wantUnknown: true,
		},
		{
			name:     "options template with sampling interval",
			exporter: exporterA,
			payload: flowdecodetest.V9Datagram(7, flowdecodetest.V9OptionsTemplate270(), flowdecodetest.Set(260, flowdecodetest.V9Record260("10.1.1.1", "10.2.2.2", 1234, 80, 10, 1)),
				flowdecodetest.V9OptionsData270(100)),
			want: []Flow{sampled(v9Flow("10.1.1.1", "10.2.2.2", 1234, 80, 10, 1))},
		},
		{
			name:     "sampling rate remembered",
			exporter: exporterA,
			payload:  flowdecodetest.V9Datagram(7, flowdecodetest.Set(260, flowdecodetest.V9Record260("10.1.1.1", "10.2.2.2", 1234, 80, 10, 1))),
			want:     []Flow{sampled(v9Flow("10.1.1.1", "10.2.2.2", 1234, 80, 10, 1))},
		},
		{
			name:     "truncated flowset",
			exporter: exporterA,
			payload:  flowdecodetest.V9Datagram(7, flowdecodetest.Wire{}.U16(260).U16(3)), // length shorter than the set header
			wantErr:  "netflow v9 from 192.0.2.1: flowset 1:",
		},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			got, err := d.DecodeNetFlow(st.exporter, st.payload, recvTime)
			switch {
			case st.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case st.wantErr != "" && (err == nil || !strings.Contains(err.Error(), st.wantErr)):
				t.Fatalf("error = %v, want it to contain %q", err, st.wantErr)
			}
			if got := errors.Is(err, ErrTemplateUnknown); got != st.wantUnknown {
				t.Errorf("errors.Is(err, ErrTemplateUnknown) = %v, want %v", got, st.wantUnknown)
			}
			if st.wantErr != "" && !st.wantUnknown && !errors.Is(err, ErrMalformed) {
				t.Errorf("error %v does not wrap ErrMalformed", err)
			}
			var te *TemplateError
			if st.wantUnknown && !errors.As(err, &te) {
				t.Errorf("error %v holds no *TemplateError", err)
			}
			cmpFlows(t, got, st.want)
		})
	}
}

func TestDecodeIPFIX(t *testing.T) {
	d := New()
	start := time.UnixMilli(1_700_000_000_250).UTC()
	end := time.UnixMilli(1_700_000_003_750).UTC()
	tmpl := flowdecodetest.Set(2, flowdecodetest.TemplateBody(300,
		flowdecodetest.Field{27, 16}, flowdecodetest.Field{28, 16}, flowdecodetest.Field{7, 2}, flowdecodetest.Field{11, 2}, flowdecodetest.Field{4, 1}, flowdecodetest.Field{6, 2},
		flowdecodetest.Field{10, 4}, flowdecodetest.Field{14, 4}, flowdecodetest.Field{1, 8}, flowdecodetest.Field{2, 8}, flowdecodetest.Field{152, 8}, flowdecodetest.Field{153, 8}, flowdecodetest.Field{60, 1}, flowdecodetest.Field{305, 4}))
	data := flowdecodetest.Set(300, flowdecodetest.Wire{}.IP("2001:db8::1").IP("2001:db8::2").U16(443).U16(51000).U8(6).U16(0x18).
		U32(10).U32(20).U64(1<<33).U64(3).U64(uint64(start.UnixMilli())).U64(uint64(end.UnixMilli())).U8(6).U32(512))
	got, err := d.DecodeNetFlow(exporterA, flowdecodetest.IPFIXDatagram(42, tmpl, data), recvTime)
	if err != nil {
		t.Fatal(err)
	}
	want := Flow{
		TimeStart: start, TimeEnd: end, Exporter: exporterA, ObservationDomain: 42, InIf: 10, OutIf: 20,
		IPVersion: 6, SrcAddr: addr("2001:db8::1"), DstAddr: addr("2001:db8::2"), SrcPort: 443, DstPort: 51000,
		Proto: 6, TCPFlags: 0x18, Bytes: 1 << 33, Packets: 3, SamplingRate: 512, SamplingSource: SamplingFlowRecord,
		Protocol: ProtocolIPFIX,
	}
	want.CommunityID = CommunityID(want.SrcAddr, want.DstAddr, 6, 443, 51000)
	cmpFlows(t, got, []Flow{want})

	// Data only: the template is cached for (exporter, domain).
	got, err = d.DecodeNetFlow(exporterA, flowdecodetest.IPFIXDatagram(42, data), recvTime)
	if err != nil {
		t.Fatal(err)
	}
	cmpFlows(t, got, []Flow{want})

	// An IPFIX options template with samplingPacketInterval.
	opts := flowdecodetest.Set(3, flowdecodetest.Wire{}.U16(400).U16(2).U16(1).U16(149).U16(4).U16(305).U16(4)) // scope observationDomainId
	optData := flowdecodetest.Set(400, flowdecodetest.Wire{}.U32(43).U32(1000))
	tmpl4 := flowdecodetest.Set(2, flowdecodetest.TemplateBody(301, flowdecodetest.Field{8, 4}, flowdecodetest.Field{12, 4}, flowdecodetest.Field{4, 1}, flowdecodetest.Field{1, 4}, flowdecodetest.Field{2, 4}))
	data4 := flowdecodetest.Set(301, flowdecodetest.Wire{}.IP("192.0.2.10").IP("192.0.2.20").U8(47).U32(300).U32(2))
	got, err = d.DecodeNetFlow(exporterA, flowdecodetest.IPFIXDatagram(43, opts, optData, tmpl4, data4), recvTime)
	if err != nil {
		t.Fatal(err)
	}
	gre := Flow{
		TimeStart: exportT, TimeEnd: exportT, Exporter: exporterA, ObservationDomain: 43, IPVersion: 4,
		SrcAddr: addr("192.0.2.10"), DstAddr: addr("192.0.2.20"), Proto: 47, Bytes: 300, Packets: 2,
		SamplingRate: 1000, SamplingSource: SamplingOptionsTemplate, Protocol: ProtocolIPFIX,
	}
	gre.CommunityID = CommunityID(gre.SrcAddr, gre.DstAddr, 47, 0, 0)
	cmpFlows(t, got, []Flow{gre})
}

func TestDecodeSFlow(t *testing.T) {
	d := New()
	got, err := d.DecodeSFlow(exporterA, flowdecodetest.SFlowDatagram(100, 1514), recvTime)
	if err != nil {
		t.Fatal(err)
	}
	want := Flow{
		TimeStart: recvTime, TimeEnd: recvTime, Exporter: exporterA, ObservationDomain: 3, InIf: 5, OutIf: 6,
		IPVersion: 4, SrcAddr: addr("128.232.110.120"), DstAddr: addr("66.35.250.204"), SrcPort: 34855, DstPort: 80,
		Proto: 6, TCPFlags: 0x02, Bytes: 1514, Packets: 1, SamplingRate: 100, SamplingSource: SamplingSFlowHeader,
		CommunityID: "1:LQU9qZlK+B5F3KDmev6m5PMibrg=", Protocol: ProtocolSFlow5,
	}
	cmpFlows(t, got, []Flow{want})
}

func TestDecodeErrors(t *testing.T) {
	d := New()
	tests := []struct {
		name    string
		sflow   bool
		payload []byte
		wantErr string
	}{
		{"empty", false, nil, "netflow from 192.0.2.1: 0 bytes, no version"},
		{"unknown version", false, []byte{0, 7, 0, 0}, "netflow from 192.0.2.1: unknown version 7"},
		{"v5 truncated header", false, []byte{0, 5, 0, 1}, "netflow v5 from 192.0.2.1: header truncated"},
		{"v5 count beyond datagram", false, v5Datagram()[:24+48], "header says 2 records, datagram holds 1"},
		{"sflow wrong version", true, flowdecodetest.Wire{}.U32(4).Bytes(), "sflow v5 from 192.0.2.1:"},
		{"sflow expanded sample with huge record count", true,
			flowdecodetest.Wire{}.U32(5).U32(1).IP("192.0.2.50").U32(0).U32(0).U32(0).U32(1).
				U32(3).U32(44).Pad(40).U32(0xffffffff).Bytes(),
			"sample 1: 4294967295 flow records in 44 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.sflow {
				_, err = d.DecodeSFlow(exporterA, tt.payload, recvTime)
			} else {
				_, err = d.DecodeNetFlow(exporterA, tt.payload, recvTime)
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("error %v does not wrap ErrMalformed", err)
			}
		})
	}
}

func TestTemplatesPersist(t *testing.T) {
	d := New()
	if _, err := d.DecodeNetFlow(exporterA, flowdecodetest.V9Datagram(7, flowdecodetest.V9Template260(), flowdecodetest.V9OptionsTemplate270(), flowdecodetest.V9OptionsData270(100)), recvTime); err != nil {
		t.Fatal(err)
	}
	saved := d.Templates()

	restarted := New()
	if err := restarted.LoadTemplates(saved); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(restarted.Templates()), string(saved)); diff != "" {
		t.Errorf("round trip (-got +want):\n%s", diff)
	}
	got, err := restarted.DecodeNetFlow(exporterA, flowdecodetest.V9Datagram(7, flowdecodetest.Set(260, flowdecodetest.V9Record260("10.1.1.1", "10.2.2.2", 1234, 80, 10, 1)),
		flowdecodetest.V9OptionsData270(200)), recvTime)
	if err != nil {
		t.Fatal(err)
	}
	want := v9Flow("10.1.1.1", "10.2.2.2", 1234, 80, 10, 1)
	want.SamplingRate, want.SamplingSource = 200, SamplingOptionsTemplate
	cmpFlows(t, got, []Flow{want})

	for _, bad := range []string{`{`, `{"version":2}`, `{"version":1,"templates":[{"netflow_version":9,"kind":"x"}]}`} {
		if err := New().LoadTemplates([]byte(bad)); err == nil {
			t.Errorf("LoadTemplates(%s): no error", bad)
		}
	}
}

// TestConcurrentDecode is for the race detector: several workers share a
// Decoder, as the collector's sockets will.
func TestConcurrentDecode(t *testing.T) {
	d := New()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			exp := netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
			for range 50 {
				if _, err := d.DecodeNetFlow(exp, flowdecodetest.V9Datagram(7, flowdecodetest.V9Template260(), flowdecodetest.V9OptionsTemplate270(), flowdecodetest.V9OptionsData270(100),
					flowdecodetest.Set(260, flowdecodetest.V9Record260("10.1.1.1", "10.2.2.2", 1, 2, 3, 4))), recvTime); err != nil {
					t.Error(err)
					return
				}
				_ = d.Templates()
				if _, err := d.DecodeSFlow(exp, flowdecodetest.SFlowDatagram(10, 1514), recvTime); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// Vectors from the spec repository's baseline/baseline_deflt.json. For
// ICMP the baseline lists (type, counterpart) for two-way types and
// (type, code) for one-way ones; the code of every two-way packet there is 0.
func TestCommunityID(t *testing.T) {
	tests := []struct {
		proto      uint8
		src, dst   string
		sport, dpt uint16 // for ICMP: type, code
		want       string
	}{
		{58, "fe80::200:86ff:fe05:80da", "fe80::260:97ff:fe07:69ea", 135, 0, "1:dGHyGvjMfljg6Bppwm3bg0LO8TY="},
		{58, "fe80::260:97ff:fe07:69ea", "fe80::200:86ff:fe05:80da", 136, 0, "1:dGHyGvjMfljg6Bppwm3bg0LO8TY="},
		{58, "fe80::260:97ff:fe07:69ea", "fe80::200:86ff:fe05:80da", 135, 0, "1:zavyT/cezQr1fmImYCwYnMXbgck="},
		{58, "fe80::200:86ff:fe05:80da", "fe80::260:97ff:fe07:69ea", 136, 0, "1:zavyT/cezQr1fmImYCwYnMXbgck="},
		{58, "3ffe:501:1800:2345::2", "3ffe:507:0:1:200:86ff:fe05:80da", 3, 0, "1:2ObVBgIn28oZvibYZhZMBgh7WdQ="},
		{58, "3ffe:501:410:0:2c0:dfff:fe47:33e", "3ffe:507:0:1:200:86ff:fe05:80da", 1, 4, "1:hLZd0XGWojozrvxqE0dWB1iM6R0="},
		{58, "3ffe:507:0:1:200:86ff:fe05:80da", "3ffe:501:0:1001::2", 128, 0, "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg="},
		{58, "3ffe:501:0:1001::2", "3ffe:507:0:1:200:86ff:fe05:80da", 129, 0, "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg="},
		{58, "fe80::200:86ff:fe05:80da", "ff02::2", 133, 0, "1:hO+sN4H+MG5MY/8hIrXPqc4ZQz0="},
		{58, "fe80::260:97ff:fe07:69ea", "ff02::1", 134, 0, "1:pkvHqCL88/tg1k4cPigmZXUtL00="},
		{1, "192.168.0.89", "192.168.0.1", 8, 0, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk="},
		{1, "192.168.0.1", "192.168.0.89", 0, 0, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk="},
		{1, "10.0.0.1", "10.0.0.2", 11, 0, "1:YHxtAirCG//0OzkcVAukqKQN9xM="},
		{6, "2001:470:e5bf:dead:4957:2174:e82c:4887", "2607:f8b0:400c:c03::1a", 63943, 25, "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4="},
		{6, "2607:f8b0:400c:c03::1a", "2001:470:e5bf:dead:4957:2174:e82c:4887", 25, 63943, "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4="},
		{132, "192.168.170.8", "192.168.170.56", 7, 7, "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs="},
		{132, "192.168.170.56", "192.168.170.8", 7, 7, "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs="},
		{6, "128.232.110.120", "66.35.250.204", 34855, 80, "1:LQU9qZlK+B5F3KDmev6m5PMibrg="},
		{6, "66.35.250.204", "128.232.110.120", 80, 34855, "1:LQU9qZlK+B5F3KDmev6m5PMibrg="},
		{17, "192.168.1.52", "8.8.8.8", 54585, 53, "1:d/FP5EW3wiY1vCndhwleRRKHowQ="},
		{17, "8.8.8.8", "192.168.1.52", 53, 54585, "1:d/FP5EW3wiY1vCndhwleRRKHowQ="},
		{46, "10.1.12.1", "10.1.12.2", 0, 0, "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw="},
		{46, "10.1.12.2", "10.1.12.1", 0, 0, "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw="},
	}
	for _, tt := range tests {
		t.Run(tt.src+"-"+tt.dst, func(t *testing.T) {
			if got := CommunityID(addr(tt.src), addr(tt.dst), tt.proto, tt.sport, tt.dpt); got != tt.want {
				t.Errorf("CommunityID = %q, want %q", got, tt.want)
			}
		})
	}
	if got := CommunityID(addr("10.0.0.1"), addr("2001:db8::1"), 6, 1, 2); got != "" {
		t.Errorf("mixed families: %q, want empty", got)
	}
}

// A template whose records take no bytes once made goflow2 loop forever on
// the next data set; an empty IPFIX template withdraws the template.
func TestDegenerateTemplates(t *testing.T) {
	d := New()
	_, err := d.DecodeNetFlow(exporterA, flowdecodetest.V9Datagram(7, flowdecodetest.Set(0, flowdecodetest.TemplateBody(256, flowdecodetest.Field{1, 0})), flowdecodetest.Set(256, flowdecodetest.Wire{}.U32(1))), recvTime)
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "every field has length 0") {
		t.Errorf("zero-length template: error = %v", err)
	}

	// More fields than bytes: each record would cost a step per field.
	fields := []flowdecodetest.Field{{2, 1}}
	for range 100 {
		fields = append(fields, flowdecodetest.Field{1, 0})
	}
	_, err = d.DecodeNetFlow(exporterA, flowdecodetest.V9Datagram(7, flowdecodetest.Set(0, flowdecodetest.TemplateBody(257, fields...))), recvTime)
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "101 fields in records of 1 bytes") {
		t.Errorf("zero-length fields: error = %v", err)
	}
	if err := New().LoadTemplates([]byte(`{"version":1,"templates":[{"netflow_version":9,"kind":"data","template_id":257,` +
		`"fields":[{"type":1,"length":0},{"type":2,"length":1},{"type":3,"length":0}]}]}`)); err == nil {
		t.Error("LoadTemplates accepted a template with more fields than bytes")
	}

	tmpl := flowdecodetest.Set(2, flowdecodetest.TemplateBody(300, flowdecodetest.Field{8, 4}, flowdecodetest.Field{12, 4}))
	data := flowdecodetest.Set(300, flowdecodetest.Wire{}.IP("192.0.2.10").IP("192.0.2.20"))
	if flows, err := d.DecodeNetFlow(exporterA, flowdecodetest.IPFIXDatagram(1, tmpl, data), recvTime); err != nil || len(flows) != 1 {
		t.Fatalf("template and data: %d flows, error %v", len(flows), err)
	}
	withdraw := flowdecodetest.Set(2, flowdecodetest.TemplateBody(300))
	flows, err := d.DecodeNetFlow(exporterA, flowdecodetest.IPFIXDatagram(1, withdraw, data), recvTime)
	if !errors.Is(err, ErrTemplateUnknown) || len(flows) != 0 {
		t.Errorf("after withdrawal: %d flows, error %v; want template unknown", len(flows), err)
	}
}
