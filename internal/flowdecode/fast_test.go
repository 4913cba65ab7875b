package flowdecode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"maps"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/netsampler/goflow2/v2/decoders/netflowlegacy"

	"github.com/yagura/yagura/internal/flowdecode/flowdecodetest"
)

// decodeV5Goflow2 is the NetFlow v5 decoder flowdecode used before it read
// v5 by hand, kept as the reference the hand-written one must match.
func decodeV5Goflow2(exporter netip.Addr, payload []byte) ([]Flow, error) {
	var p netflowlegacy.PacketNetFlowV5
	if err := netflowlegacy.DecodeMessageVersion(bytes.NewBuffer(payload), &p); err != nil {
		return nil, err
	}
	export := time.Unix(int64(p.UnixSecs), int64(p.UnixNSecs)).UTC()
	var rate uint32
	var source string
	if iv := p.SamplingInterval & 0x3fff; iv != 0 {
		rate, source = uint32(iv), SamplingV5Header
	}
	var flows []Flow
	for _, r := range p.Records {
		f := Flow{
			TimeStart:         uptimeToTime(export, p.SysUptime, r.First),
			TimeEnd:           uptimeToTime(export, p.SysUptime, r.Last),
			Exporter:          exporter,
			ObservationDomain: uint32(p.EngineType)<<8 | uint32(p.EngineId),
			InIf:              uint32(r.Input),
			OutIf:             uint32(r.Output),
			IPVersion:         4,
			SrcAddr:           v4(uint32(r.SrcAddr)),
			DstAddr:           v4(uint32(r.DstAddr)),
			SrcPort:           r.SrcPort,
			DstPort:           r.DstPort,
			Proto:             r.Proto,
			TCPFlags:          r.TCPFlags,
			Bytes:             uint64(r.DOctets),
			Packets:           uint64(r.DPkts),
			SamplingRate:      rate,
			SamplingSource:    source,
			Protocol:          ProtocolNetFlow5,
		}
		f.CommunityID = communityIDForFlow(&f)
		flows = append(flows, f)
	}
	return flows, nil
}

func v4(u uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], u)
	return netip.AddrFrom4(b)
}

func diffFlows(got, want []Flow) string {
	return cmp.Diff(got, want, cmpopts.EquateComparable(netip.Addr{}), cmpopts.EquateEmpty())
}

// FuzzV5MatchesGoflow2 checks the hand-written NetFlow v5 decoder against
// goflow2's on any datagram both accept.
func FuzzV5MatchesGoflow2(f *testing.F) {
	f.Add(v5Datagram())
	f.Add(v5Datagram30())
	f.Fuzz(func(t *testing.T, payload []byte) {
		if len(payload) < 2 || payload[0] != 0 || payload[1] != 5 {
			return
		}
		got, err := New().DecodeNetFlow(exporterA, payload, recvTime)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		want, err := decodeV5Goflow2(exporterA, payload)
		if err != nil {
			t.Fatalf("flowdecode accepts what goflow2 refuses (%v)", err)
		}
		if diff := diffFlows(got, want); diff != "" {
			t.Fatalf("flows (-hand +goflow2):\n%s", diff)
		}
	})
}

// fastPathSeeds are datagrams for the v9/IPFIX fast path: data sets after
// the templates in primeTemplates.
func fastPathSeeds() [][]byte {
	return [][]byte{
		v9Datagram30(),
		ipfixDatagram30(),
		flowdecodetest.V9Datagram(7, flowdecodetest.Set(260, flowdecodetest.V9Record260("10.1.1.1", "10.2.2.2", 1234, 80, 10, 1)), flowdecodetest.Set(999, flowdecodetest.Wire{}.U32(1))),
		flowdecodetest.IPFIXDatagram(42, flowdecodetest.Set(301, flowdecodetest.Wire{}.IP("2001:db8::1").U8(3).Raw([]byte("abc")).U8(255).U16(2).U16(7))),
		flowdecodetest.IPFIXDatagram(42, flowdecodetest.Set(300, flowdecodetest.Wire{}.IP("10.0.0.1"))),                                                     // truncated record
		flowdecodetest.V9Datagram(7, flowdecodetest.Set(270, flowdecodetest.Wire{}.U32(0).U32(100)), flowdecodetest.Set(260, flowdecodetest.Wire{}.Pad(3))), // options data: slow path
	}
}

// clone copies d's caches into a new Decoder.
func (d *Decoder) clone() *Decoder {
	c := NewWithOptions(d.opts)
	c.templates, c.sampling = maps.Clone(d.templates), maps.Clone(d.sampling)
	return c
}

// primeTemplates gives d the templates fastPathSeeds refer to.
func primeTemplates(t testing.TB, d *Decoder) {
	t.Helper()
	for _, p := range [][]byte{
		flowdecodetest.V9Datagram(7, flowdecodetest.V9Template260(), flowdecodetest.V9OptionsTemplate270()),
		flowdecodetest.IPFIXDatagram(42, ipfixTemplate300, flowdecodetest.Set(2, flowdecodetest.TemplateBody(301, flowdecodetest.Field{27, 16}, flowdecodetest.Field{82, 0xffff}, flowdecodetest.Field{1, 0xffff}))),
	} {
		if _, err := d.DecodeNetFlow(exporterA, p, recvTime); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzFastPathMatchesGoflow2 decodes each input with the fast path and with
// goflow2 alone, from the same templates, and wants the same flows and the
// same error.
func FuzzFastPathMatchesGoflow2(f *testing.F) {
	for _, s := range fastPathSeeds() {
		f.Add(s)
	}
	for _, s := range netflowSeeds() {
		f.Add(s)
	}
	primed := New()
	primeTemplates(f, primed)
	f.Fuzz(func(t *testing.T, payload []byte) {
		fast, slow := primed.clone(), primed.clone()
		slow.slowOnly = true
		got, gotErr := fast.DecodeNetFlow(exporterA, payload, recvTime)
		want, wantErr := slow.DecodeNetFlow(exporterA, payload, recvTime)
		if diff := diffFlows(got, want); diff != "" {
			t.Fatalf("flows (-fast +goflow2):\n%s", diff)
		}
		if (gotErr == nil) != (wantErr == nil) || (gotErr != nil && gotErr.Error() != wantErr.Error()) {
			t.Fatalf("error: fast %v, goflow2 %v", gotErr, wantErr)
		}
		if !reflect.DeepEqual(fast.templates, slow.templates) || !maps.Equal(fast.sampling, slow.sampling) {
			t.Fatal("caches differ after the same datagram")
		}
	})
}

func TestFastPathSeeds(t *testing.T) {
	d := New()
	primeTemplates(t, d)
	// The seeds must exercise the fast path, not only fall back.
	for i, p := range fastPathSeeds()[:4] {
		if _, _, ok := d.decodeTemplatedFast(nil, exporterA, p, recvTime, uint16(p[1])); !ok {
			t.Errorf("seed %d: fast path declined", i)
		}
	}
	got, err := d.DecodeNetFlow(exporterA, fastPathSeeds()[3], recvTime)
	if err != nil {
		t.Fatal(err)
	}
	want := []Flow{{TimeStart: exportT, TimeEnd: exportT, Exporter: exporterA, ObservationDomain: 42, IPVersion: 6,
		SrcAddr: addr("2001:db8::1"), Bytes: 7, Protocol: ProtocolIPFIX}}
	if diff := diffFlows(got, want); diff != "" {
		t.Errorf("variable-length fields (-got +want):\n%s", diff)
	}
}

func TestSkipCommunityID(t *testing.T) {
	d := NewWithOptions(Options{SkipCommunityID: true})
	for _, p := range [][]byte{v5Datagram(), flowdecodetest.V9Datagram(7, flowdecodetest.V9Template260(), flowdecodetest.Set(260, flowdecodetest.V9Record260("10.1.1.1", "10.2.2.2", 1, 2, 3, 4)))} {
		flows, err := d.DecodeNetFlow(exporterA, p, recvTime)
		if err != nil || len(flows) == 0 {
			t.Fatalf("%d flows, error %v", len(flows), err)
		}
		for _, f := range flows {
			if f.CommunityID != "" {
				t.Errorf("CommunityID = %q, want empty", f.CommunityID)
			}
		}
	}
	flows, err := d.DecodeSFlow(exporterA, flowdecodetest.SFlowDatagram(10, 1514), recvTime)
	if err != nil || len(flows) != 1 || flows[0].CommunityID != "" {
		t.Errorf("sflow: %+v, %v", flows, err)
	}
}

func TestAppendKeepsPrefix(t *testing.T) {
	d := New()
	prefix := []Flow{{Protocol: "x"}}
	flows, err := d.AppendNetFlow(prefix, exporterA, v5Datagram(), recvTime)
	if err != nil || len(flows) != 3 || flows[0].Protocol != "x" {
		t.Fatalf("append: %d flows, %v", len(flows), err)
	}
	flows, err = d.AppendNetFlow(prefix, exporterA, []byte{0, 9, 0}, recvTime)
	if err == nil || len(flows) != 1 || flows[0].Protocol != "x" {
		t.Fatalf("append on error: %d flows, %v", len(flows), err)
	}
	flows, err = d.AppendSFlow(prefix, exporterA, []byte{0, 0, 0, 5}, recvTime)
	if err == nil || len(flows) != 1 {
		t.Fatalf("sflow append on error: %d flows, %v", len(flows), err)
	}
	if n := d.TemplateCounts()[exporterA]; n != 0 {
		t.Errorf("TemplateCounts = %d, want 0", n)
	}
	primeTemplates(t, d)
	if n := d.TemplateCounts()[exporterA]; n != 4 {
		t.Errorf("TemplateCounts = %d, want 4", n)
	}
}
