package collector

import (
	"encoding/binary"
	"net/netip"
)

// Builders of datagrams, after internal/flowdecode's test builders.

// wire builds big-endian datagrams.
type wire []byte

func (w wire) u8(v uint8) wire   { return append(w, v) }
func (w wire) u16(v uint16) wire { return binary.BigEndian.AppendUint16(w, v) }
func (w wire) u32(v uint32) wire { return binary.BigEndian.AppendUint32(w, v) }
func (w wire) u64(v uint64) wire { return binary.BigEndian.AppendUint64(w, v) }
func (w wire) ip(s string) wire  { return append(w, netip.MustParseAddr(s).AsSlice()...) }
func (w wire) raw(b []byte) wire { return append(w, b...) }
func (w wire) set16(at int, v uint16) wire {
	binary.BigEndian.PutUint16(w[at:], v)
	return w
}

// set returns a v9 flowset or IPFIX set with its length filled in.
func set(id uint16, body wire) wire {
	return wire{}.u16(id).u16(uint16(4 + len(body))).raw(body)
}

// field is a template field (type, length).
type field struct{ typ, length uint16 }

func templateBody(id uint16, fields ...field) wire {
	w := wire{}.u16(id).u16(uint16(len(fields)))
	for _, f := range fields {
		w = w.u16(f.typ).u16(f.length)
	}
	return w
}

const (
	testUptime = 100_000 // ms
	testUnix   = 1_700_000_000
)

func v9Datagram(sourceID uint32, sets ...wire) []byte {
	w := wire{}.u16(9).u16(uint16(len(sets))).u32(testUptime).u32(testUnix).u32(1).u32(sourceID)
	for _, s := range sets {
		w = w.raw(s)
	}
	return w
}

func ipfixDatagram(domain uint32, sets ...wire) []byte {
	w := wire{}.u16(10).u16(0).u32(testUnix).u32(1).u32(domain)
	for _, s := range sets {
		w = w.raw(s)
	}
	return w.set16(2, uint16(len(w)))
}

// v9 template 260: IPv4 5-tuple, counters, interfaces, switched times.
var v9Template260 = set(0, templateBody(260,
	field{8, 4}, field{12, 4}, field{7, 2}, field{11, 2}, field{4, 1}, field{6, 1},
	field{10, 2}, field{14, 2}, field{1, 4}, field{2, 4}, field{22, 4}, field{21, 4}))

func v9Record260(src, dst string, sport, dport uint16, bytes, pkts uint32) wire {
	return wire{}.ip(src).ip(dst).u16(sport).u16(dport).u8(6).u8(0x1b).
		u16(3).u16(4).u32(bytes).u32(pkts).u32(testUptime - 5000).u32(testUptime - 1000)
}

// v9 options template 270: scope System (1, 4 bytes), option samplingInterval (34, 4 bytes).
var v9OptionsTemplate270 = set(1, wire{}.u16(270).u16(4).u16(4).u16(1).u16(4).u16(34).u16(4))

func v9OptionsData270(rate uint32) wire {
	return set(270, wire{}.u32(0).u32(rate))
}

// IPFIX template 300: IPv6 5-tuple, counters, interfaces, absolute times.
var ipfixTemplate300 = set(2, templateBody(300,
	field{27, 16}, field{28, 16}, field{7, 2}, field{11, 2}, field{4, 1}, field{6, 1},
	field{10, 4}, field{14, 4}, field{1, 8}, field{2, 8}, field{152, 8}, field{153, 8}))

func ipfixRecord300(src, dst string, sport, dport uint16, bytes, pkts uint64, startMs, endMs uint64) wire {
	return wire{}.ip(src).ip(dst).u16(sport).u16(dport).u8(17).u8(0).
		u32(10).u32(20).u64(bytes).u64(pkts).u64(startMs).u64(endMs)
}

// v5Record is one NetFlow v5 record's varying fields.
type v5Record struct {
	src, dst     string
	sport, dport uint16
	proto        uint8
	pkts, octets uint32
}

// v5Datagram builds a NetFlow v5 datagram; sampling is the header's
// sampling_interval field (mode in the top two bits).
func v5Datagram(sampling uint16, recs ...v5Record) []byte {
	w := wire{}.u16(5).u16(uint16(len(recs))).u32(testUptime).u32(testUnix).u32(500_000_000).u32(42).
		u8(1).u8(2).u16(sampling)
	for _, r := range recs {
		w = w.ip(r.src).ip(r.dst).ip("0.0.0.0").u16(1).u16(2).u32(r.pkts).u32(r.octets).
			u32(testUptime - 3000).u32(testUptime - 2000).u16(r.sport).u16(r.dport).u8(0).u8(0x12).u8(r.proto).u8(0).
			u16(0).u16(0).u8(24).u8(24).u16(0)
	}
	return w
}

// sflowDatagram builds an sFlow v5 datagram (sFlow v5 spec, "sample_datagram_v5")
// from agent 192.0.2.50, sub-agent 3, with one flow sample (format 1) at
// the given sampling rate carrying a sampled Ethernet/IPv4/TCP header
// (flow record format 1, header_protocol 1).
func sflowDatagram(rate uint32, frameLength uint32) []byte {
	frame := wire{}.raw([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}).u16(0x0800).
		u8(0x45).u8(0).u16(40).u16(1).u16(0x4000).u8(64).u8(6).u16(0).ip("128.232.110.120").ip("66.35.250.204").
		u16(34855).u16(80).u32(1).u32(0).u8(0x50).u8(0x02).u16(1024).u16(0).u16(0)
	// sampled_header: header_protocol, frame_length, stripped, header length, header bytes (padded to 4).
	rec := wire{}.u32(1).u32(frameLength).u32(4).u32(uint32(len(frame))).raw(frame)
	for len(rec)%4 != 0 {
		rec = rec.u8(0)
	}
	// flow_sample: sequence, source_id (ifIndex 5), sampling_rate, sample_pool, drops, input, output, records.
	sample := wire{}.u32(7).u32(5).u32(rate).u32(1000).u32(0).u32(5).u32(6).u32(1).
		u32(1).u32(uint32(len(rec))).raw(rec)
	// Header: version 5, agent address type 1 (IPv4), agent, sub-agent, sequence, uptime, samples;
	// then sample format 1 (flow_sample) and its length.
	return wire{}.u32(5).u32(1).ip("192.0.2.50").u32(3).u32(9).u32(123456).u32(1).
		u32(1).u32(uint32(len(sample))).raw(sample)
}
