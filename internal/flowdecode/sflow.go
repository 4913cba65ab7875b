package flowdecode

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/netsampler/goflow2/v2/decoders/sflow"
)

// sFlow sampled_header header_protocol values (SFLOW-STRUCTS5).
const (
	sflowHeaderEthernet = 1
	sflowHeaderIPv4     = 11
	sflowHeaderIPv6     = 12
)

// DecodeSFlow decodes an sFlow v5 datagram (from the sFlow socket). Each
// flow sample with a sampled packet header, or a sampled IPv4/IPv6 record,
// becomes one Flow with Packets 1 and Bytes the sampled frame's length; the
// sample's sampling rate is in SamplingRate. Counter samples are ignored.
// sFlow carries no flow times, so TimeStart and TimeEnd are now.
func (d *Decoder) DecodeSFlow(exporter netip.Addr, payload []byte, now time.Time) ([]Flow, error) {
	return d.AppendSFlow(nil, exporter, payload, now)
}

// AppendSFlow is DecodeSFlow appending to dst, so a collector can reuse one
// slice for every datagram. It returns dst extended by the flows decoded.
func (d *Decoder) AppendSFlow(dst []Flow, exporter netip.Addr, payload []byte, now time.Time) (flows []Flow, err error) {
	n := len(dst)
	defer func() {
		if flows == nil {
			flows = dst[:n] // after a panic
		}
	}()
	defer guard("sflow v5", exporter, &err)
	if err := checkSFlowCounts(payload); err != nil {
		return dst, fmt.Errorf("sflow v5 from %s: %v: %w", exporter, err, ErrMalformed)
	}
	var p sflow.Packet
	if err := sflow.DecodeMessageVersion(bytes.NewBuffer(payload), &p); err != nil {
		return dst, fmt.Errorf("sflow v5 from %s: %v: %w", exporter, err, ErrMalformed)
	}
	flows = dst
	now = now.UTC()
	for _, s := range p.Samples {
		var (
			rate        uint32
			inIf, outIf uint32
			records     []sflow.FlowRecord
		)
		switch s := s.(type) {
		case sflow.FlowSample:
			rate, records = s.SamplingRate, s.Records
			inIf, outIf = sflowInterface(s.Input), sflowInterface(s.Output)
		case sflow.ExpandedFlowSample:
			rate, records = s.SamplingRate, s.Records
			if s.InputIfFormat == 0 {
				inIf = s.InputIfValue
			}
			if s.OutputIfFormat == 0 {
				outIf = s.OutputIfValue
			}
		default:
			continue
		}
		f := Flow{
			TimeStart: now, TimeEnd: now,
			Exporter:          exporter,
			ObservationDomain: p.SubAgentId,
			InIf:              inIf,
			OutIf:             outIf,
			Packets:           1,
			Protocol:          ProtocolSFlow5,
		}
		if rate != 0 {
			f.SamplingRate, f.SamplingSource = rate, SamplingSFlowHeader
		}
		if !fillFromRecords(&f, records) {
			continue
		}
		d.communityID(&f)
		flows = append(flows, f)
	}
	return flows, nil
}

// sflowInterface returns the ifIndex of a compact interface value, or 0 for
// the "discarded" and "multiple interfaces" formats.
func sflowInterface(v uint32) uint32 {
	if v>>30 != 0 {
		return 0
	}
	return v & 0x3fffffff
}

// fillFromRecords fills f from a sample's records, preferring a sampled
// header (which has the TCP flags) to a sampled IPv4/IPv6 record. It reports
// whether any IP information was found.
func fillFromRecords(f *Flow, records []sflow.FlowRecord) bool {
	for _, r := range records {
		if h, ok := r.Data.(sflow.SampledHeader); ok {
			f.Bytes = uint64(h.FrameLength)
			if parseSampledHeader(f, h.Protocol, h.HeaderData) {
				return true
			}
		}
	}
	for _, r := range records {
		var base sflow.SampledIPBase
		switch d := r.Data.(type) {
		case sflow.SampledIPv4:
			base, f.IPVersion = d.SampledIPBase, 4
		case sflow.SampledIPv6:
			base, f.IPVersion = d.SampledIPBase, 6
		default:
			continue
		}
		f.SrcAddr, _ = netip.AddrFromSlice(base.SrcIP)
		f.DstAddr, _ = netip.AddrFromSlice(base.DstIP)
		f.Proto = uint8(base.Protocol)
		f.SrcPort, f.DstPort = uint16(base.SrcPort), uint16(base.DstPort)
		f.TCPFlags = uint8(base.TcpFlags)
		if f.Bytes == 0 {
			f.Bytes = uint64(base.Length)
		}
		return true
	}
	return false
}

// parseSampledHeader parses the Ethernet (with 802.1Q/802.1ad tags), IPv4 or
// IPv6, and TCP/UDP/SCTP/ICMP headers of a sampled packet. IPv6 extension
// headers are not walked: such packets keep Proto as the next header and no
// ports. It reports whether an IP header was found.
func parseSampledHeader(f *Flow, proto uint32, b []byte) bool {
	etherType := uint16(0)
	switch proto {
	case sflowHeaderEthernet:
		if len(b) < 14 {
			return false
		}
		etherType, b = binary.BigEndian.Uint16(b[12:]), b[14:]
		for (etherType == 0x8100 || etherType == 0x88a8) && len(b) >= 4 {
			etherType, b = binary.BigEndian.Uint16(b[2:]), b[4:]
		}
	case sflowHeaderIPv4:
		etherType = 0x0800
	case sflowHeaderIPv6:
		etherType = 0x86dd
	default:
		return false
	}
	var l4 []byte
	switch etherType {
	case 0x0800:
		if len(b) < 20 || b[0]>>4 != 4 {
			return false
		}
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || len(b) < ihl {
			return false
		}
		f.IPVersion = 4
		f.Proto = b[9]
		f.SrcAddr = netip.AddrFrom4([4]byte(b[12:16]))
		f.DstAddr = netip.AddrFrom4([4]byte(b[16:20]))
		if binary.BigEndian.Uint16(b[6:])&0x1fff != 0 {
			return true // non-first fragment: no transport header
		}
		l4 = b[ihl:]
	case 0x86dd:
		if len(b) < 40 || b[0]>>4 != 6 {
			return false
		}
		f.IPVersion = 6
		f.Proto = b[6]
		f.SrcAddr = netip.AddrFrom16([16]byte(b[8:24]))
		f.DstAddr = netip.AddrFrom16([16]byte(b[24:40]))
		l4 = b[40:]
	default:
		return false
	}
	switch f.Proto {
	case protoTCP:
		if len(l4) >= 14 {
			f.SrcPort, f.DstPort = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
			f.TCPFlags = l4[13]
		}
	case protoUDP, protoSCTP:
		if len(l4) >= 4 {
			f.SrcPort, f.DstPort = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
		}
	case protoICMP, protoICMPv6:
		if len(l4) >= 2 {
			f.DstPort = uint16(l4[0])<<8 | uint16(l4[1])
		}
	}
	return true
}

// checkSFlowCounts walks the datagram's sample headers and refuses an
// expanded flow sample whose record count its length cannot hold: goflow2
// allocates that count up front without the cap it applies to other sample
// formats, so a hostile datagram could otherwise make it allocate gigabytes.
func checkSFlowCounts(b []byte) error {
	if len(b) < 8 {
		return nil // goflow2 reports the truncation
	}
	off := 8
	switch binary.BigEndian.Uint32(b[4:]) {
	case 1:
		off += 4
	case 2:
		off += 16
	default:
		return nil
	}
	off += 12 // sub-agent, sequence, uptime
	if len(b) < off+4 {
		return nil
	}
	n := binary.BigEndian.Uint32(b[off:])
	off += 4
	for i := uint32(0); i < n && len(b)-off >= 8; i++ {
		format := binary.BigEndian.Uint32(b[off:])
		length := int(binary.BigEndian.Uint32(b[off+4:]))
		off += 8
		if length < 0 || length > len(b)-off {
			return nil
		}
		body := b[off : off+length]
		off += length
		if format != sflow.SAMPLE_FORMAT_EXPANDED_FLOW || len(body) < 44 {
			continue
		}
		count := binary.BigEndian.Uint32(body[40:])
		if int64(count) > int64(len(body)-44)/8 {
			return fmt.Errorf("sample %d: %d flow records in %d bytes", i+1, count, len(body))
		}
	}
	return nil
}
