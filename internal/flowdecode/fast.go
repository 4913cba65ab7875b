package flowdecode

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"time"

	"github.com/netsampler/goflow2/v2/decoders/netflow"
)

const (
	v9HeaderLen    = 20
	ipfixHeaderLen = 16
	setHeaderLen   = 4
	// varLength in a template field marks an IPFIX variable-length field.
	varLength = 0xffff
)

// decodeTemplatedFast decodes a v9 or IPFIX datagram made only of data sets
// whose templates are known data templates: what an exporter sends between
// its periodic templates, so nearly every datagram. It reads fields
// straight from the payload, where goflow2 allocates a value per field.
//
// ok is false when the datagram holds anything else (a template, options
// data, a malformed set); the caller then decodes it with goflow2. The fast
// path changes no state, so falling back after a partial decode is safe.
// It follows goflow2's reading rules exactly (how many sets, truncated sets,
// variable-length fields), which FuzzFastPathMatchesGoflow2 checks.
func (d *Decoder) decodeTemplatedFast(dst []Flow, exporter netip.Addr, payload []byte, now time.Time, version uint16) (flows []Flow, err error, ok bool) {
	be := binary.BigEndian
	var (
		h        header
		body     []byte
		protocol string
		more     func(sets, read int) bool
	)
	switch version {
	case 9:
		if len(payload) < v9HeaderLen {
			return nil, nil, false
		}
		count := int(be.Uint16(payload[2:]))
		h = header{domain: be.Uint32(payload[16:]), export: time.Unix(int64(be.Uint32(payload[8:])), 0).UTC(),
			sysUptime: be.Uint32(payload[4:]), hasUptime: true}
		body, protocol = payload[v9HeaderLen:], ProtocolNetFlow9
		// goflow2 reads at most the header's count of flowsets.
		more = func(sets, _ int) bool { return sets < count }
	default:
		if len(payload) < ipfixHeaderLen {
			return nil, nil, false
		}
		// goflow2 reads sets while fewer than length-16 bytes (in uint16
		// arithmetic) have been read.
		size := be.Uint16(payload[2:]) - ipfixHeaderLen
		h = header{domain: be.Uint32(payload[12:]), export: time.Unix(int64(be.Uint32(payload[4:])), 0).UTC()}
		body, protocol = payload[ipfixHeaderLen:], ProtocolIPFIX
		more = func(_, read int) bool { return uint16(read) < size }
	}
	if h.export.Unix() == 0 {
		h.export = now.UTC()
	}

	d.mu.RLock()
	defer d.mu.RUnlock()
	learned := d.sampling[domainKey{exporter, h.domain}]
	n := len(dst)
	var errs []error
	for i, off := 0, 0; more(i, off) && off < len(body); i++ {
		if len(body)-off < setHeaderLen {
			return dst[:n], nil, false
		}
		id, length := be.Uint16(body[off:]), int(be.Uint16(body[off+2:]))
		if id < 256 || length < setHeaderLen {
			return dst[:n], nil, false
		}
		off += setHeaderLen
		end := min(off+length-setHeaderLen, len(body))
		set := body[off:end]
		off = end

		tmpl, found := d.templates[templateKey{exporter: exporter, version: version, domain: h.domain, id: id}]
		if !found {
			errs = append(errs, &TemplateError{Protocol: protocol, Exporter: exporter,
				ObservationDomain: h.domain, FlowSet: i + 1, TemplateID: id})
			continue
		}
		t, isData := tmpl.(netflow.TemplateRecord)
		if !isData {
			return dst[:n], nil, false // options data: goflow2 decodes it and learns the rate
		}
		fixed := 0
		for _, f := range t.Fields {
			if f.Length != varLength {
				fixed += int(f.Length)
			}
		}
		for len(set) >= fixed {
			// Built in place: a Flow is large enough for copies to show.
			dst = append(dst, Flow{Exporter: exporter, ObservationDomain: h.domain})
			b := flowBuilder{f: &dst[len(dst)-1]}
			for _, f := range t.Fields {
				l := int(f.Length)
				if f.Length == varLength {
					// RFC 7011 section 7: one length octet, or 255 and two.
					if len(set) < 1 {
						return dst[:n], nil, false
					}
					l, set = int(set[0]), set[1:]
					if l == 0xff {
						if len(set) < 2 {
							return dst[:n], nil, false
						}
						l, set = int(be.Uint16(set)), set[2:]
					}
				}
				// Like bytes.Buffer.Next, a short value takes what is left.
				l = min(l, len(set))
				b.field(f.Type, f.PenProvided, set[:l])
				set = set[l:]
			}
			d.finishRecord(&b, h, protocol, learned)
		}
	}
	return dst, errors.Join(errs...), true
}
