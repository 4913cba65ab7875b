package flowgen

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Wire sizes.
const (
	v5HeaderLen    = 24
	v5RecordLen    = 48
	v9HeaderLen    = 20
	ipfixHeaderLen = 16
	setHeaderLen   = 4

	// MaxV5Flows is the most records a NetFlow v5 datagram may carry.
	MaxV5Flows = 30
	// targetSize is what v9 and IPFIX datagrams are filled to: below a
	// 1,500-byte Ethernet MTU with IP and UDP headers, as exporters do.
	targetSize = 1400

	templateID = 256
)

// field is a template field: information element and length.
type field struct{ ie, length uint16 }

// v9Fields is a Cisco-like IPv4 template (RFC 3954 field types). Interfaces
// are 2 bytes and counters 4, as on most routers.
var v9Fields = []field{
	{1, 4},  // IN_BYTES
	{2, 4},  // IN_PKTS
	{4, 1},  // PROTOCOL
	{5, 1},  // SRC_TOS
	{6, 1},  // TCP_FLAGS
	{7, 2},  // L4_SRC_PORT
	{8, 4},  // IPV4_SRC_ADDR
	{9, 1},  // SRC_MASK
	{10, 2}, // INPUT_SNMP
	{11, 2}, // L4_DST_PORT
	{12, 4}, // IPV4_DST_ADDR
	{13, 1}, // DST_MASK
	{14, 2}, // OUTPUT_SNMP
	{15, 4}, // IPV4_NEXT_HOP
	{21, 4}, // LAST_SWITCHED
	{22, 4}, // FIRST_SWITCHED
}

// ipfixFields is the IPFIX equivalent with the IANA elements exporters
// use today: 8-byte counters, 4-byte interfaces, absolute millisecond times.
var ipfixFields = []field{
	{1, 8},   // octetDeltaCount
	{2, 8},   // packetDeltaCount
	{4, 1},   // protocolIdentifier
	{5, 1},   // ipClassOfService
	{6, 1},   // tcpControlBits (reduced-size encoding)
	{7, 2},   // sourceTransportPort
	{8, 4},   // sourceIPv4Address
	{9, 1},   // sourceIPv4PrefixLength
	{10, 4},  // ingressInterface
	{11, 2},  // destinationTransportPort
	{12, 4},  // destinationIPv4Address
	{13, 1},  // destinationIPv4PrefixLength
	{14, 4},  // egressInterface
	{15, 4},  // ipNextHopIPv4Address
	{152, 8}, // flowStartMilliseconds
	{153, 8}, // flowEndMilliseconds
}

func recordLen(fields []field) int {
	n := 0
	for _, f := range fields {
		n += int(f.length)
	}
	return n
}

var (
	v9RecordLen    = recordLen(v9Fields)
	ipfixRecordLen = recordLen(ipfixFields)
)

// DefaultFlowsPerDatagram is how many flows a datagram of p carries unless
// configured otherwise: 30 for v5, and for v9 and IPFIX as many as fit in
// about 1,400 bytes with a template set.
func DefaultFlowsPerDatagram(p Protocol) int {
	switch p {
	case NetFlow9:
		return (targetSize - v9HeaderLen - 2*setHeaderLen - 4 - 4*len(v9Fields) - 3) / v9RecordLen
	case IPFIX:
		return (targetSize - ipfixHeaderLen - 2*setHeaderLen - 4 - 4*len(ipfixFields) - 3) / ipfixRecordLen
	}
	return MaxV5Flows
}

// MaxFlowsPerDatagram is the most flows a datagram of p can carry: 30 for
// v5 (the header says so), and for v9 and IPFIX what fits in 65,507 bytes.
func MaxFlowsPerDatagram(p Protocol) int {
	switch p {
	case NetFlow9:
		return (65507 - v9HeaderLen - 2*setHeaderLen - 4 - 4*len(v9Fields) - 3) / v9RecordLen
	case IPFIX:
		return (65507 - ipfixHeaderLen - 2*setHeaderLen - 4 - 4*len(ipfixFields) - 3) / ipfixRecordLen
	}
	return MaxV5Flows
}

// DefaultTemplateEvery is how often (in datagrams) v9 and IPFIX templates
// are re-sent: Cisco's default template refresh is every 20 packets.
const DefaultTemplateEvery = 20

// Encoder builds the datagrams of one exporter (one observation domain):
// it keeps the sequence numbers and the template schedule. It is not safe
// for concurrent use; give each sending goroutine its own.
type Encoder struct {
	proto         Protocol
	seed          uint64
	domain        uint32
	templateEvery uint64
	bootMs        int64 // exporter boot time for sysUpTime fields, Unix ms

	datagrams uint64 // sent so far
	flows     uint64 // records sent so far
}

// NewEncoder returns an encoder for protocol p, flows of seed, observation
// domain (v9 source ID, IPFIX observation domain ID, v5 engine type<<8 |
// engine ID), templates every templateEvery datagrams (0: every 20) and an
// exporter that booted at boot (for sysUpTime-relative times; it must be
// before any export time and within 49 days of it).
func NewEncoder(p Protocol, seed uint64, domain uint32, templateEvery int, boot time.Time) (*Encoder, error) {
	switch p {
	case NetFlow5:
		if domain > 0xffff {
			return nil, fmt.Errorf("netflow v5 engine type and ID are one byte each: domain %d is over 65535", domain)
		}
	case NetFlow9, IPFIX:
	default:
		return nil, fmt.Errorf("protocol %q: use v5, v9 or ipfix", p)
	}
	if templateEvery <= 0 {
		templateEvery = DefaultTemplateEvery
	}
	return &Encoder{proto: p, seed: seed, domain: domain, templateEvery: uint64(templateEvery), bootMs: boot.UnixMilli()}, nil
}

// ExportTime returns the reference time flows of a datagram exported at
// now are relative to, as a receiver will reconstruct it: v9 headers carry
// whole seconds, so v9 times are relative to now truncated to the second;
// v5 and IPFIX keep milliseconds.
func (e *Encoder) ExportTime(now time.Time) time.Time {
	if e.proto == NetFlow9 {
		return time.Unix(now.Unix(), 0)
	}
	return time.UnixMilli(now.UnixMilli())
}

// SendsTemplate reports whether the next datagram carries the template.
func (e *Encoder) SendsTemplate() bool {
	return e.proto != NetFlow5 && e.datagrams%e.templateEvery == 0
}

// Append appends to dst one datagram carrying flows [first, first+n) of
// the run, exported at now (see [Encoder.ExportTime]), and returns it with
// the totals of those flows. n must be between 1 and
// [MaxFlowsPerDatagram].
func (e *Encoder) Append(dst []byte, first uint64, n int, now time.Time) ([]byte, Totals) {
	if n < 1 || n > MaxFlowsPerDatagram(e.proto) {
		panic(fmt.Sprintf("flowgen: %d flows in one %s datagram", n, e.proto))
	}
	var t Totals
	switch e.proto {
	case NetFlow5:
		dst, t = e.appendV5(dst, first, n, now)
	case NetFlow9:
		dst, t = e.appendV9(dst, first, n, now)
	case IPFIX:
		dst, t = e.appendIPFIX(dst, first, n, now)
	}
	e.datagrams++
	e.flows += uint64(n)
	t.Datagrams = 1
	return dst, t
}

// grow extends b by n bytes and returns the extended slice and the new
// part, so the encoders write with PutUintNN instead of appending field by
// field.
func grow(b []byte, n int) ([]byte, []byte) {
	l := len(b)
	if cap(b)-l < n {
		nb := make([]byte, l, 2*cap(b)+n)
		copy(nb, b)
		b = nb
	}
	b = b[:l+n]
	return b, b[l:]
}

var be = binary.BigEndian

func (e *Encoder) appendV5(dst []byte, first uint64, n int, now time.Time) ([]byte, Totals) {
	exportMs := now.UnixMilli()
	uptime := uint32(exportMs - e.bootMs)
	dst, w := grow(dst, v5HeaderLen+n*v5RecordLen)
	be.PutUint16(w[0:], 5)
	be.PutUint16(w[2:], uint16(n))
	be.PutUint32(w[4:], uptime)
	be.PutUint32(w[8:], uint32(exportMs/1000))
	be.PutUint32(w[12:], uint32(exportMs%1000)*1_000_000)
	be.PutUint32(w[16:], uint32(e.flows)) // flow_sequence: flows seen before this datagram
	w[20] = byte(e.domain >> 8)           // engine_type
	w[21] = byte(e.domain)                // engine_id
	be.PutUint16(w[22:], 0)               // sampling: none
	var t Totals
	r := w[v5HeaderLen:]
	for i := range n {
		f := flowAt(e.seed, first+uint64(i))
		t.Packets += uint64(f.packets)
		t.Bytes += uint64(f.bytes)
		last := uptime - f.endAgo
		be.PutUint32(r[0:], f.src)
		be.PutUint32(r[4:], f.dst)
		be.PutUint32(r[8:], 0) // nexthop
		be.PutUint16(r[12:], f.inIf)
		be.PutUint16(r[14:], f.outIf)
		be.PutUint32(r[16:], f.packets)
		be.PutUint32(r[20:], f.bytes)
		be.PutUint32(r[24:], last-f.duration)
		be.PutUint32(r[28:], last)
		be.PutUint16(r[32:], f.sport)
		be.PutUint16(r[34:], f.dport)
		r[36] = 0 // pad1
		r[37] = f.flags
		r[38] = f.proto
		r[39] = f.tos
		be.PutUint32(r[40:], 0) // src_as, dst_as
		r[44] = 8               // src_mask
		r[45] = 24              // dst_mask
		be.PutUint16(r[46:], 0) // pad2
		r = r[v5RecordLen:]
	}
	t.Flows = uint64(n)
	return dst, t
}

// appendTemplateSet writes a v9 template flowset (set ID 0) or an IPFIX
// template set (set ID 2) with the one template.
func appendTemplateSet(dst []byte, setID uint16, fields []field) []byte {
	dst, w := grow(dst, setHeaderLen+4+4*len(fields))
	be.PutUint16(w[0:], setID)
	be.PutUint16(w[2:], uint16(len(w)))
	be.PutUint16(w[4:], templateID)
	be.PutUint16(w[6:], uint16(len(fields)))
	for i, f := range fields {
		be.PutUint16(w[8+4*i:], f.ie)
		be.PutUint16(w[10+4*i:], f.length)
	}
	return dst
}

// dataSet reserves a data set of n records of size recLen padded to 4
// bytes (RFC 3954 section 5.3 and RFC 7011 section 3.3.1 allow padding; v9
// exporters pad) and returns the extended slice and the records' bytes.
func dataSet(dst []byte, n, recLen int) ([]byte, []byte) {
	body := n * recLen
	pad := (4 - body%4) % 4
	dst, w := grow(dst, setHeaderLen+body+pad)
	be.PutUint16(w[0:], templateID)
	be.PutUint16(w[2:], uint16(len(w)))
	clear(w[setHeaderLen+body:])
	return dst, w[setHeaderLen : setHeaderLen+body]
}

func (e *Encoder) appendV9(dst []byte, first uint64, n int, now time.Time) ([]byte, Totals) {
	exportS := now.Unix()
	// sysUpTime as of the whole second in the header, so that a receiver
	// computing unix_secs - (sysUpTime - switched) gets the exact times.
	uptime := uint32(exportS*1000 - e.bootMs)
	dst, w := grow(dst, v9HeaderLen)
	count := n
	tmpl := e.SendsTemplate()
	if tmpl {
		count++
	}
	be.PutUint16(w[0:], 9)
	be.PutUint16(w[2:], uint16(count)) // records of all kinds, templates included
	be.PutUint32(w[4:], uptime)
	be.PutUint32(w[8:], uint32(exportS))
	be.PutUint32(w[12:], uint32(e.datagrams)) // v9 counts export packets
	be.PutUint32(w[16:], e.domain)
	if tmpl {
		dst = appendTemplateSet(dst, 0, v9Fields)
	}
	dst, r := dataSet(dst, n, v9RecordLen)
	var t Totals
	for i := range n {
		f := flowAt(e.seed, first+uint64(i))
		t.Packets += uint64(f.packets)
		t.Bytes += uint64(f.bytes)
		last := uptime - f.endAgo
		be.PutUint32(r[0:], f.bytes)
		be.PutUint32(r[4:], f.packets)
		r[8] = f.proto
		r[9] = f.tos
		r[10] = f.flags
		be.PutUint16(r[11:], f.sport)
		be.PutUint32(r[13:], f.src)
		r[17] = 8
		be.PutUint16(r[18:], f.inIf)
		be.PutUint16(r[20:], f.dport)
		be.PutUint32(r[22:], f.dst)
		r[26] = 24
		be.PutUint16(r[27:], f.outIf)
		be.PutUint32(r[29:], 0)
		be.PutUint32(r[33:], last)
		be.PutUint32(r[37:], last-f.duration)
		r = r[v9RecordLen:]
	}
	t.Flows = uint64(n)
	return dst, t
}

func (e *Encoder) appendIPFIX(dst []byte, first uint64, n int, now time.Time) ([]byte, Totals) {
	exportMs := now.UnixMilli()
	start := len(dst)
	dst, w := grow(dst, ipfixHeaderLen)
	be.PutUint16(w[0:], 10)
	be.PutUint32(w[4:], uint32(exportMs/1000))
	be.PutUint32(w[8:], uint32(e.flows)) // IPFIX counts data records
	be.PutUint32(w[12:], e.domain)
	if e.SendsTemplate() {
		dst = appendTemplateSet(dst, 2, ipfixFields)
	}
	dst, r := dataSet(dst, n, ipfixRecordLen)
	var t Totals
	for i := range n {
		f := flowAt(e.seed, first+uint64(i))
		t.Packets += uint64(f.packets)
		t.Bytes += uint64(f.bytes)
		end := uint64(exportMs) - uint64(f.endAgo)
		be.PutUint64(r[0:], uint64(f.bytes))
		be.PutUint64(r[8:], uint64(f.packets))
		r[16] = f.proto
		r[17] = f.tos
		r[18] = f.flags
		be.PutUint16(r[19:], f.sport)
		be.PutUint32(r[21:], f.src)
		r[25] = 8
		be.PutUint32(r[26:], uint32(f.inIf))
		be.PutUint16(r[30:], f.dport)
		be.PutUint32(r[32:], f.dst)
		r[36] = 24
		be.PutUint32(r[37:], uint32(f.outIf))
		be.PutUint32(r[41:], 0)
		be.PutUint64(r[45:], end-uint64(f.duration))
		be.PutUint64(r[53:], end)
		r = r[ipfixRecordLen:]
	}
	be.PutUint16(dst[start+2:], uint16(len(dst)-start)) // message length
	t.Flows = uint64(n)
	return dst, t
}
