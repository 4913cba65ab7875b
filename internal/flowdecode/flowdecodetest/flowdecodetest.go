// Package flowdecodetest builds NetFlow v5, v9, IPFIX and sFlow v5
// datagrams byte by byte, so the decoder's and the collector's tests feed
// the same packets. Only tests may import it.
package flowdecodetest

import (
	"encoding/binary"
	"net/netip"
)

// Wire builds a big-endian datagram; each method returns the extended slice.
type Wire []byte

func (w Wire) U8(v uint8) Wire   { return append(w, v) }
func (w Wire) U16(v uint16) Wire { return binary.BigEndian.AppendUint16(w, v) }
func (w Wire) U32(v uint32) Wire { return binary.BigEndian.AppendUint32(w, v) }
func (w Wire) U64(v uint64) Wire { return binary.BigEndian.AppendUint64(w, v) }

// IP appends the 4 or 16 bytes of an address; s must parse.
func (w Wire) IP(s string) Wire  { return append(w, netip.MustParseAddr(s).AsSlice()...) }
func (w Wire) Raw(b []byte) Wire { return append(w, b...) }

// Pad appends n zero bytes.
func (w Wire) Pad(n int) Wire { return append(w, make([]byte, n)...) }
func (w Wire) Bytes() []byte  { return []byte(w) }

// Set16 overwrites the two bytes at offset at, for lengths known only at the end.
func (w Wire) Set16(at int, v uint16) Wire {
	binary.BigEndian.PutUint16(w[at:], v)
	return w
}

// Set returns a v9 flowset or IPFIX set with its length filled in.
func Set(id uint16, body Wire) Wire {
	return Wire{}.U16(id).U16(uint16(4 + len(body))).Raw(body)
}

// Field is a template field: {type, length}. An array rather than a struct,
// so callers can write Field{8, 4}.
type Field [2]uint16

// TemplateBody is one template record: its id, field count and fields.
func TemplateBody(id uint16, fields ...Field) Wire {
	w := Wire{}.U16(id).U16(uint16(len(fields)))
	for _, f := range fields {
		w = w.U16(f[0]).U16(f[1])
	}
	return w
}

// Header times of every v5 and v9 datagram built here.
const (
	Uptime = 100_000 // exporter uptime, ms
	Unix   = 1_700_000_000
)

// V9Datagram is a NetFlow v9 datagram from source ID sourceID holding sets.
func V9Datagram(sourceID uint32, sets ...Wire) []byte {
	w := Wire{}.U16(9).U16(uint16(len(sets))).U32(Uptime).U32(Unix).U32(1).U32(sourceID)
	for _, s := range sets {
		w = w.Raw(s)
	}
	return w
}

// IPFIXDatagram is an IPFIX message for observation domain domain holding sets.
func IPFIXDatagram(domain uint32, sets ...Wire) []byte {
	w := Wire{}.U16(10).U16(0).U32(Unix).U32(1).U32(domain)
	for _, s := range sets {
		w = w.Raw(s)
	}
	return w.Set16(2, uint16(len(w)))
}

// V9Template260 is a v9 template flowset for template 260: IPv4 5-tuple,
// counters, interfaces, switched times.
func V9Template260() Wire {
	return Set(0, TemplateBody(260,
		Field{8, 4}, Field{12, 4}, Field{7, 2}, Field{11, 2}, Field{4, 1}, Field{6, 1},
		Field{10, 2}, Field{14, 2}, Field{1, 4}, Field{2, 4}, Field{22, 4}, Field{21, 4}))
}

// V9Record260 is one TCP record of template 260, interfaces 3 → 4, from 5 s
// to 1 s before the header's uptime.
func V9Record260(src, dst string, sport, dport uint16, bytes, pkts uint32) Wire {
	return Wire{}.IP(src).IP(dst).U16(sport).U16(dport).U8(6).U8(0x1b).
		U16(3).U16(4).U32(bytes).U32(pkts).U32(Uptime - 5000).U32(Uptime - 1000)
}

// V9OptionsTemplate270 is a v9 options template flowset for template 270:
// scope System (1, 4 bytes), option samplingInterval (34, 4 bytes).
func V9OptionsTemplate270() Wire {
	return Set(1, Wire{}.U16(270).U16(4).U16(4).U16(1).U16(4).U16(34).U16(4))
}

// V9OptionsData270 is the options data flowset announcing sampling rate rate.
func V9OptionsData270(rate uint32) Wire {
	return Set(270, Wire{}.U32(0).U32(rate))
}

// V5Record is one 48-byte NetFlow v5 record, from 3 s to 2 s before the
// header's uptime.
func V5Record(src, dst string, sport, dport uint16, proto uint8, pkts, octets uint32) Wire {
	return Wire{}.IP(src).IP(dst).IP("0.0.0.0").U16(1).U16(2).U32(pkts).U32(octets).
		U32(Uptime - 3000).U32(Uptime - 2000).U16(sport).U16(dport).U8(0).U8(0x12).U8(proto).U8(0).
		U16(0).U16(0).U8(24).U8(24).U16(0)
}

// V5Datagram is a NetFlow v5 datagram of recs (each from V5Record); sampling
// is the header's sampling_interval field (mode in the top two bits).
func V5Datagram(sampling uint16, recs ...Wire) []byte {
	w := Wire{}.U16(5).U16(uint16(len(recs))).U32(Uptime).U32(Unix).U32(500_000_000).U32(42).
		U8(1).U8(2).U16(sampling)
	for _, r := range recs {
		w = w.Raw(r)
	}
	return w
}

// SFlowDatagram builds an sFlow v5 datagram (sFlow v5 spec, "sample_datagram_v5")
// from agent 192.0.2.50, sub-agent 3, with one flow sample (format 1) at
// the given sampling rate carrying a sampled Ethernet/IPv4/TCP header
// (flow record format 1, header_protocol 1) of a frame frameLength bytes long.
func SFlowDatagram(rate uint32, frameLength uint32) []byte {
	frame := Wire{}.Raw([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}).U16(0x0800).
		U8(0x45).U8(0).U16(40).U16(1).U16(0x4000).U8(64).U8(6).U16(0).IP("128.232.110.120").IP("66.35.250.204").
		U16(34855).U16(80).U32(1).U32(0).U8(0x50).U8(0x02).U16(1024).U16(0).U16(0)
	// sampled_header: header_protocol, frame_length, stripped, header length, header bytes (padded to 4).
	rec := Wire{}.U32(1).U32(frameLength).U32(4).U32(uint32(len(frame))).Raw(frame)
	for len(rec)%4 != 0 {
		rec = rec.U8(0)
	}
	// flow_sample: sequence, source_id (ifIndex 5), sampling_rate, sample_pool, drops, input, output, records.
	sample := Wire{}.U32(7).U32(5).U32(rate).U32(1000).U32(0).U32(5).U32(6).U32(1).
		U32(1).U32(uint32(len(rec))).Raw(rec)
	// Header: version 5, agent address type 1 (IPv4), agent, sub-agent, sequence, uptime, samples;
	// then sample format 1 (flow_sample) and its length.
	return Wire{}.U32(5).U32(1).IP("192.0.2.50").U32(3).U32(9).U32(123456).U32(1).
		U32(1).U32(uint32(len(sample))).Raw(sample)
}
