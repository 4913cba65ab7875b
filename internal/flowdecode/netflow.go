package flowdecode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/netsampler/goflow2/v2/decoders/netflow"
	"github.com/netsampler/goflow2/v2/decoders/netflowlegacy"
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
func (d *Decoder) DecodeNetFlow(exporter netip.Addr, payload []byte, now time.Time) (flows []Flow, err error) {
	if len(payload) < 2 {
		return nil, fmt.Errorf("netflow from %s: %d bytes, no version: %w", exporter, len(payload), ErrMalformed)
	}
	switch v := binary.BigEndian.Uint16(payload); v {
	case 5:
		defer guard("netflow v5", exporter, &err)
		return decodeV5(exporter, payload)
	case 9, 10:
		label := protocolLabel(ProtocolNetFlow9)
		if v == 10 {
			label = protocolLabel(ProtocolIPFIX)
		}
		defer guard(label, exporter, &err)
		return d.decodeTemplated(exporter, payload, now, v, label)
	default:
		return nil, fmt.Errorf("netflow from %s: unknown version %d: %w", exporter, v, ErrMalformed)
	}
}

func decodeV5(exporter netip.Addr, payload []byte) ([]Flow, error) {
	if len(payload) < v5HeaderLen {
		return nil, fmt.Errorf("netflow v5 from %s: header truncated (%d bytes): %w", exporter, len(payload), ErrMalformed)
	}
	// goflow2 allocates the header's count of records up front; refuse counts
	// the datagram cannot hold before it does.
	count := int(binary.BigEndian.Uint16(payload[2:]))
	if have := (len(payload) - v5HeaderLen) / v5RecordLen; count > have {
		return nil, fmt.Errorf("netflow v5 from %s: header says %d records, datagram holds %d: %w", exporter, count, have, ErrMalformed)
	}
	var p netflowlegacy.PacketNetFlowV5
	if err := netflowlegacy.DecodeMessageVersion(bytes.NewBuffer(payload), &p); err != nil {
		return nil, fmt.Errorf("netflow v5 from %s: %v: %w", exporter, err, ErrMalformed)
	}
	export := time.Unix(int64(p.UnixSecs), int64(p.UnixNSecs)).UTC()
	var rate uint32
	var source string
	if iv := p.SamplingInterval & 0x3fff; iv != 0 {
		// The top two bits are the sampling mode; the interval is meaningful
		// for both the deterministic and random modes.
		rate, source = uint32(iv), SamplingV5Header
	}
	flows := make([]Flow, 0, len(p.Records))
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

func v4(u uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], u)
	return netip.AddrFrom4(b)
}

// header holds what records need from the v9 or IPFIX message header.
type header struct {
	domain    uint32
	export    time.Time
	sysUptime uint32 // v9 only
	hasUptime bool
}

func (d *Decoder) decodeTemplated(exporter netip.Addr, payload []byte, now time.Time, version uint16, label string) ([]Flow, error) {
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

	var flows []Flow
	for i, s := range sets {
		switch s := s.(type) {
		case netflow.DataFlowSet:
			for _, rec := range s.Records {
				f := recordToFlow(rec.Values, h, exporter)
				f.Protocol = protocol
				if f.SamplingRate == 0 && learned != 0 {
					f.SamplingRate, f.SamplingSource = learned, SamplingOptionsTemplate
				}
				f.CommunityID = communityIDForFlow(&f)
				flows = append(flows, f)
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
				if r, ok := uintValue(v.Value); ok && r != 0 && r <= 1<<32-1 {
					d.mu.Lock()
					d.sampling[domainKey{exporter, domain}] = uint32(r)
					d.mu.Unlock()
				}
			}
		}
	}
}

func uintValue(v any) (uint64, bool) {
	b, ok := v.([]byte)
	if !ok || len(b) == 0 || len(b) > 8 {
		return 0, false
	}
	var u uint64
	for _, c := range b {
		u = u<<8 | uint64(c)
	}
	return u, true
}

func addrValue(v any, n int) (netip.Addr, bool) {
	b, ok := v.([]byte)
	if !ok || len(b) != n {
		return netip.Addr{}, false
	}
	a, ok := netip.AddrFromSlice(b)
	return a, ok
}

func recordToFlow(values []netflow.DataField, h header, exporter netip.Addr) Flow {
	f := Flow{Exporter: exporter, ObservationDomain: h.domain}
	var (
		start, end         time.Time
		first, last        uint32
		hasFirst, hasLast  bool
		initMillis         uint64
		hasInit            bool
		icmpTypeCode       uint16
		hasICMP, hasIPVers bool
	)
	for _, v := range values {
		if v.PenProvided {
			continue
		}
		u, isUint := uintValue(v.Value)
		switch v.Type {
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
			if a, ok := addrValue(v.Value, 4); ok {
				f.SrcAddr = a
			}
		case ieDestinationIPv4Address:
			if a, ok := addrValue(v.Value, 4); ok {
				f.DstAddr = a
			}
		case ieSourceIPv6Address:
			if a, ok := addrValue(v.Value, 16); ok {
				f.SrcAddr = a
			}
		case ieDestinationIPv6Address:
			if a, ok := addrValue(v.Value, 16); ok {
				f.DstAddr = a
			}
		case ieIPVersion:
			f.IPVersion, hasIPVers = uint8(u), isUint
		case ieICMPTypeCodeIPv4, ieICMPTypeCodeIPv6:
			icmpTypeCode, hasICMP = uint16(u), isUint
		case ieFirstSwitched:
			first, hasFirst = uint32(u), isUint
		case ieLastSwitched:
			last, hasLast = uint32(u), isUint
		case ieSystemInitTimeMillis:
			initMillis, hasInit = u, isUint
		case ieFlowStartSeconds:
			start = time.Unix(int64(u), 0).UTC()
		case ieFlowEndSeconds:
			end = time.Unix(int64(u), 0).UTC()
		case ieFlowStartMilliseconds:
			start = time.UnixMilli(int64(u)).UTC()
		case ieFlowEndMilliseconds:
			end = time.UnixMilli(int64(u)).UTC()
		case ieSamplingInterval, ieSamplingPacketInterval, ieFlowSamplerRandomIntv:
			if isUint && u != 0 && u <= 1<<32-1 {
				f.SamplingRate, f.SamplingSource = uint32(u), SamplingFlowRecord
			}
		}
	}
	// Times: absolute IEs win; then sysUpTime-relative ones (v9 against the
	// header, IPFIX against systemInitTimeMilliseconds); else export time.
	if start.IsZero() && hasFirst {
		switch {
		case h.hasUptime:
			start = uptimeToTime(h.export, h.sysUptime, first)
		case hasInit:
			start = time.UnixMilli(int64(initMillis) + int64(first)).UTC()
		}
	}
	if end.IsZero() && hasLast {
		switch {
		case h.hasUptime:
			end = uptimeToTime(h.export, h.sysUptime, last)
		case hasInit:
			end = time.UnixMilli(int64(initMillis) + int64(last)).UTC()
		}
	}
	if end.IsZero() {
		end = h.export
	}
	if start.IsZero() {
		start = end
	}
	f.TimeStart, f.TimeEnd = start, end

	if !hasIPVers || (f.IPVersion != 4 && f.IPVersion != 6) {
		switch {
		case f.SrcAddr.Is4():
			f.IPVersion = 4
		case f.SrcAddr.Is6():
			f.IPVersion = 6
		}
	}
	if hasICMP && (f.Proto == 1 || f.Proto == 58) && f.DstPort == 0 {
		f.DstPort = icmpTypeCode
	}
	return f
}
