package flowdecode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/netsampler/goflow2/v2/decoders/netflow"
)

// Information elements used (RFC 3954 section 8 and the IANA IPFIX registry
// share numbers for these).
const (
	ieOctetDeltaCount          = 1
	iePacketDeltaCount         = 2
	ieProtocolIdentifier       = 4
	ieTCPControlBits           = 6
	ieSourceTransportPort      = 7
	ieSourceIPv4Address        = 8
	ieIngressInterface         = 10
	ieDestinationTransportPort = 11
	ieDestinationIPv4Address   = 12
	ieEgressInterface          = 14
	ieLastSwitched             = 21 // v9 LAST_SWITCHED, IPFIX flowEndSysUpTime
	ieFirstSwitched            = 22 // v9 FIRST_SWITCHED, IPFIX flowStartSysUpTime
	ieSourceIPv6Address        = 27
	ieDestinationIPv6Address   = 28
	ieICMPTypeCodeIPv4         = 32
	ieSamplingInterval         = 34
	ieFlowSamplerRandomIntv    = 50 // v9 FLOW_SAMPLER_RANDOM_INTERVAL
	ieIPVersion                = 60
	ieICMPTypeCodeIPv6         = 139
	ieFlowStartSeconds         = 150
	ieFlowEndSeconds           = 151
	ieFlowStartMilliseconds    = 152
	ieFlowEndMilliseconds      = 153
	ieSystemInitTimeMillis     = 160
	ieSamplingPacketInterval   = 305
)

const (
	v5HeaderLen = 24
	v5RecordLen = 48
)

// DecodeNetFlow decodes a datagram received on a NetFlow/IPFIX socket
// (NetFlow v5, v9 or IPFIX, told apart by the version field). exporter is
// the datagram's source address; now is the receive time, used when a record
// carries no usable time.
//
// Flows decoded before an error are returned with it. Data sets whose
// template is unknown yield a *TemplateError (wrapping ErrTemplateUnknown)
// joined into the error, and the datagram's other records are still returned.
// Other failures wrap ErrMalformed.
func (d *Decoder) DecodeNetFlow(exporter netip.Addr, payload []byte, now time.Time) ([]Flow, error) {
	return d.AppendNetFlow(nil, exporter, payload, now)
}

// AppendNetFlow is DecodeNetFlow appending to dst, so a collector can reuse
// one slice for every datagram. It returns dst extended by the flows
// decoded, even with an error.
func (d *Decoder) AppendNetFlow(dst []Flow, exporter netip.Addr, payload []byte, now time.Time) (flows []Flow, err error) {
	if len(payload) < 2 {
		return dst, fmt.Errorf("netflow from %s: %d bytes, no version: %w", exporter, len(payload), ErrMalformed)
	}
	switch v := binary.BigEndian.Uint16(payload); v {
	case 5:
		return d.decodeV5(dst, exporter, payload)
	case 9, 10:
		if !d.slowOnly {
			if flows, err, ok := d.decodeTemplatedFast(dst, exporter, payload, now, v); ok {
				return flows, err
			}
		}
		label := protocolLabel(ProtocolNetFlow9)
		if v == 10 {
			label = protocolLabel(ProtocolIPFIX)
		}
		n := len(dst)
		defer func() {
			if flows == nil {
				flows = dst[:n] // after a panic
			}
		}()
		defer guard(label, exporter, &err)
		return d.decodeTemplated(dst, exporter, payload, now, v, label)
	default:
		return dst, fmt.Errorf("netflow from %s: unknown version %d: %w", exporter, v, ErrMalformed)
	}
}

// decodeV5 reads NetFlow v5 by hand: the format is fixed, and goflow2's
// reflective reads made up most of the cost of a datagram. The fuzz test
// FuzzV5MatchesGoflow2 checks it against goflow2's decoder.
func (d *Decoder) decodeV5(dst []Flow, exporter netip.Addr, payload []byte) ([]Flow, error) {
	if len(payload) < v5HeaderLen {
		return dst, fmt.Errorf("netflow v5 from %s: header truncated (%d bytes): %w", exporter, len(payload), ErrMalformed)
	}
	// Bytes after the header's count of records are ignored (as goflow2
	// did); a count the datagram cannot hold is refused.
	count := int(binary.BigEndian.Uint16(payload[2:]))
	if have := (len(payload) - v5HeaderLen) / v5RecordLen; count > have {
		return dst, fmt.Errorf("netflow v5 from %s: header says %d records, datagram holds %d: %w", exporter, count, have, ErrMalformed)
	}
	be := binary.BigEndian
	sysUptime := be.Uint32(payload[4:])
	export := time.Unix(int64(be.Uint32(payload[8:])), int64(be.Uint32(payload[12:]))).UTC()
	domain := uint32(payload[20])<<8 | uint32(payload[21])
	var rate uint32
	var source string
	if iv := be.Uint16(payload[22:]) & 0x3fff; iv != 0 {
		// The top two bits are the sampling mode; the interval is meaningful
		// for both the deterministic and random modes.
		rate, source = uint32(iv), SamplingV5Header
	}
	dst = slices.Grow(dst, count)
	for i := range count {
		r := payload[v5HeaderLen+i*v5RecordLen : v5HeaderLen+(i+1)*v5RecordLen]
		f := Flow{
			TimeStart:         uptimeToTime(export, sysUptime, be.Uint32(r[24:])),
			TimeEnd:           uptimeToTime(export, sysUptime, be.Uint32(r[28:])),
			Exporter:          exporter,
			ObservationDomain: domain,
			InIf:              uint32(be.Uint16(r[12:])),
			OutIf:             uint32(be.Uint16(r[14:])),
			IPVersion:         4,
			SrcAddr:           netip.AddrFrom4([4]byte(r[0:4])),
			DstAddr:           netip.AddrFrom4([4]byte(r[4:8])),
			SrcPort:           be.Uint16(r[32:]),
			DstPort:           be.Uint16(r[34:]),
			Proto:             r[38],
			TCPFlags:          r[37],
			Bytes:             uint64(be.Uint32(r[20:])),
			Packets:           uint64(be.Uint32(r[16:])),
			SamplingRate:      rate,
			SamplingSource:    source,
			Protocol:          ProtocolNetFlow5,
		}
		d.communityID(&f)
		dst = append(dst, f)
	}
	return dst, nil
}

// uptimeToTime converts a switched time (ms since the exporter booted) to
// wall time using the header's uptime at export. Uptime wraps after 49.7
// days; modular subtraction keeps a flow that started before the wrap right.
func uptimeToTime(export time.Time, sysUptime, switched uint32) time.Time {
	ago := sysUptime - switched
	if int32(ago) < 0 {
		// Switched after export: clock skew in the exporter. Clamp.
		ago = 0
	}
	return export.Add(-time.Duration(ago) * time.Millisecond)
}

// header holds what records need from the v9 or IPFIX message header.
type header struct {
	domain    uint32
	export    time.Time
	sysUptime uint32 // v9 only
	hasUptime bool
}

func (d *Decoder) decodeTemplated(flows []Flow, exporter netip.Addr, payload []byte, now time.Time, version uint16, label string) ([]Flow, error) {
	var (
		v9    netflow.NFv9Packet
		ipfix netflow.IPFIXPacket
	)
	decErr := netflow.DecodeMessageVersion(bytes.NewBuffer(payload), exporterTemplates{d, exporter}, &v9, &ipfix)

	var (
		h        header
		sets     []any
		protocol string
	)
	if version == 9 {
		h = header{domain: v9.SourceId, export: time.Unix(int64(v9.UnixSeconds), 0).UTC(), sysUptime: v9.SystemUptime, hasUptime: true}
		sets, protocol = v9.FlowSets, ProtocolNetFlow9
	} else {
		h = header{domain: ipfix.ObservationDomainId, export: time.Unix(int64(ipfix.ExportTime), 0).UTC()}
		sets, protocol = ipfix.FlowSets, ProtocolIPFIX
	}
	if h.export.Unix() == 0 {
		h.export = now.UTC()
	}

	var errs []error
	// Options data first, so a sampling rate sent in the same datagram
	// applies to its flows.
	for _, s := range sets {
		if o, ok := s.(netflow.OptionsDataFlowSet); ok {
			d.learnSampling(exporter, h.domain, o)
		}
	}
	d.mu.RLock()
	learned := d.sampling[domainKey{exporter, h.domain}]
	d.mu.RUnlock()

	for i, s := range sets {
		switch s := s.(type) {
		case netflow.DataFlowSet:
			for _, rec := range s.Records {
				flows = append(flows, Flow{Exporter: exporter, ObservationDomain: h.domain})
				b := flowBuilder{f: &flows[len(flows)-1]}
				for _, v := range rec.Values {
					val, _ := v.Value.([]byte)
					b.field(v.Type, v.PenProvided, val)
				}
				d.finishRecord(&b, h, protocol, learned)
			}
		case netflow.RawFlowSet:
			// goflow2 leaves a data set raw only when its template is missing.
			errs = append(errs, &TemplateError{Protocol: protocol, Exporter: exporter,
				ObservationDomain: h.domain, FlowSet: i + 1, TemplateID: s.Id})
		}
	}
	// goflow2 joins missing-template errors (reported above from the raw
	// sets) and stops at the first other error, returning it alone.
	if decErr != nil && !errors.Is(decErr, netflow.ErrorTemplateNotFound) {
		errs = append(errs, fmt.Errorf("%s from %s: flowset %d: %v: %w", label, exporter, len(sets)+1, decErr, ErrMalformed))
	}
	return flows, errors.Join(errs...)
}

func (d *Decoder) learnSampling(exporter netip.Addr, domain uint32, o netflow.OptionsDataFlowSet) {
	for _, rec := range o.Records {
		for _, v := range rec.OptionsValues {
			if v.PenProvided {
				continue
			}
			switch v.Type {
			case ieSamplingInterval, ieSamplingPacketInterval, ieFlowSamplerRandomIntv:
				b, _ := v.Value.([]byte)
				if r, ok := uintValue(b); ok && r != 0 && r <= 1<<32-1 {
					d.mu.Lock()
					d.sampling[domainKey{exporter, domain}] = uint32(r)
					d.mu.Unlock()
				}
			}
		}
	}
}

func uintValue(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 8 {
		return 0, false
	}
	var u uint64
	for _, c := range b {
		u = u<<8 | uint64(c)
	}
	return u, true
}

func addrValue(b []byte, n int) (netip.Addr, bool) {
	if len(b) != n {
		return netip.Addr{}, false
	}
	return netip.AddrFromSlice(b)
}

// flowBuilder collects one v9/IPFIX data record's fields, whichever decoder
// read them, so the fast path and goflow2's agree by construction.
type flowBuilder struct {
	f                  *Flow
	start, end         time.Time
	first, last        uint32
	hasFirst, hasLast  bool
	initMillis         uint64
	hasInit            bool
	icmpTypeCode       uint16
	hasICMP, hasIPVers bool
}

func (b *flowBuilder) field(typ uint16, pen bool, value []byte) {
	if pen {
		return
	}
	f := b.f
	u, isUint := uintValue(value)
	switch typ {
	case ieOctetDeltaCount:
		f.Bytes = u
	case iePacketDeltaCount:
		f.Packets = u
	case ieProtocolIdentifier:
		f.Proto = uint8(u)
	case ieTCPControlBits:
		f.TCPFlags = uint8(u) // IPFIX allows 2 octets; the low byte holds the classic flags
	case ieSourceTransportPort:
		f.SrcPort = uint16(u)
	case ieDestinationTransportPort:
		f.DstPort = uint16(u)
	case ieIngressInterface:
		f.InIf = uint32(u)
	case ieEgressInterface:
		f.OutIf = uint32(u)
	case ieSourceIPv4Address:
		if a, ok := addrValue(value, 4); ok {
			f.SrcAddr = a
		}
	case ieDestinationIPv4Address:
		if a, ok := addrValue(value, 4); ok {
			f.DstAddr = a
		}
	case ieSourceIPv6Address:
		if a, ok := addrValue(value, 16); ok {
			f.SrcAddr = a
		}
	case ieDestinationIPv6Address:
		if a, ok := addrValue(value, 16); ok {
			f.DstAddr = a
		}
	case ieIPVersion:
		f.IPVersion, b.hasIPVers = uint8(u), isUint
	case ieICMPTypeCodeIPv4, ieICMPTypeCodeIPv6:
		b.icmpTypeCode, b.hasICMP = uint16(u), isUint
	case ieFirstSwitched:
		b.first, b.hasFirst = uint32(u), isUint
	case ieLastSwitched:
		b.last, b.hasLast = uint32(u), isUint
	case ieSystemInitTimeMillis:
		b.initMillis, b.hasInit = u, isUint
	case ieFlowStartSeconds:
		b.start = time.Unix(int64(u), 0).UTC()
	case ieFlowEndSeconds:
		b.end = time.Unix(int64(u), 0).UTC()
	case ieFlowStartMilliseconds:
		b.start = time.UnixMilli(int64(u)).UTC()
	case ieFlowEndMilliseconds:
		b.end = time.UnixMilli(int64(u)).UTC()
	case ieSamplingInterval, ieSamplingPacketInterval, ieFlowSamplerRandomIntv:
		if isUint && u != 0 && u <= 1<<32-1 {
			f.SamplingRate, f.SamplingSource = uint32(u), SamplingFlowRecord
		}
	}
}

// finishRecord completes a record's flow: times, IP version, ICMP type and
// code, the sampling rate learned from options data, the Community ID.
func (d *Decoder) finishRecord(b *flowBuilder, h header, protocol string, learned uint32) {
	f := b.f
	start, end := b.start, b.end
	// Times: absolute IEs win; then sysUpTime-relative ones (v9 against the
	// header, IPFIX against systemInitTimeMilliseconds); else export time.
	if start.IsZero() && b.hasFirst {
		switch {
		case h.hasUptime:
			start = uptimeToTime(h.export, h.sysUptime, b.first)
		case b.hasInit:
			start = time.UnixMilli(int64(b.initMillis) + int64(b.first)).UTC()
		}
	}
	if end.IsZero() && b.hasLast {
		switch {
		case h.hasUptime:
			end = uptimeToTime(h.export, h.sysUptime, b.last)
		case b.hasInit:
			end = time.UnixMilli(int64(b.initMillis) + int64(b.last)).UTC()
		}
	}
	if end.IsZero() {
		end = h.export
	}
	if start.IsZero() {
		start = end
	}
	f.TimeStart, f.TimeEnd = start, end

	if !b.hasIPVers || (f.IPVersion != 4 && f.IPVersion != 6) {
		switch {
		case f.SrcAddr.Is4():
			f.IPVersion = 4
		case f.SrcAddr.Is6():
			f.IPVersion = 6
		}
	}
	if b.hasICMP && (f.Proto == 1 || f.Proto == 58) && f.DstPort == 0 {
		f.DstPort = b.icmpTypeCode
	}
	f.Protocol = protocol
	if f.SamplingRate == 0 && learned != 0 {
		f.SamplingRate, f.SamplingSource = learned, SamplingOptionsTemplate
	}
	d.communityID(f)
}
