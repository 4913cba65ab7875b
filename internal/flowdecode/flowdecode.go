// Package flowdecode turns one UDP datagram from a flow exporter (NetFlow v5,
// NetFlow v9, IPFIX or sFlow v5) into flow records. It keeps the per-exporter
// state the protocols need (v9/IPFIX templates, sampling rates learned from
// options data) but opens no socket and stores nothing; the flow collector
// owns those. Any package may import it.
package flowdecode

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// Protocol names carried in Flow.Protocol.
const (
	ProtocolNetFlow5 = "netflow5"
	ProtocolNetFlow9 = "netflow9"
	ProtocolIPFIX    = "ipfix"
	ProtocolSFlow5   = "sflow5"
)

// Where Flow.SamplingRate came from.
const (
	SamplingOptionsTemplate = "options-template"
	SamplingFlowRecord      = "flow-record"
	SamplingSFlowHeader     = "sflow-header"
	SamplingV5Header        = "v5-header"
)

var (
	// ErrTemplateUnknown is wrapped by errors for data sets whose template has
	// not been received yet from that exporter and observation domain. It is
	// expected after a restart or for a new exporter and should be counted,
	// not treated as corruption.
	ErrTemplateUnknown = errors.New("template unknown (waiting for a template)")
	// ErrMalformed is wrapped by errors for datagrams that cannot be decoded.
	ErrMalformed = errors.New("malformed datagram")
)

// Flow is one flow record, whatever protocol carried it. Bytes and Packets
// are as exported; multiplying by SamplingRate is the caller's job.
type Flow struct {
	TimeStart, TimeEnd time.Time // UTC
	Exporter           netip.Addr
	// ObservationDomain is the v9 source ID, the IPFIX observation domain,
	// the sFlow sub-agent ID, or for NetFlow v5 engine_type<<8|engine_id.
	ObservationDomain uint32
	InIf, OutIf       uint32
	IPVersion         uint8
	SrcAddr, DstAddr  netip.Addr
	// For ICMP and ICMPv6, SrcPort is 0 and DstPort is type<<8|code, the
	// convention NetFlow exporters use.
	SrcPort, DstPort uint16
	Proto            uint8
	TCPFlags         uint8
	Bytes, Packets   uint64
	SamplingRate     uint32 // 0 when unknown
	SamplingSource   string // one of the Sampling* constants, "" when unknown
	CommunityID      string // Community ID v1, seed 0; "" without addresses
	Protocol         string // one of the Protocol* constants
}

// TemplateError reports a data set that could not be decoded because its
// template is unknown. It wraps ErrTemplateUnknown.
type TemplateError struct {
	Protocol          string
	Exporter          netip.Addr
	ObservationDomain uint32
	FlowSet           int // 1-based position in the datagram
	TemplateID        uint16
}

func (e *TemplateError) Error() string {
	return fmt.Sprintf("%s from %s: domain %d: flowset %d: template %d unknown (waiting for a template)",
		protocolLabel(e.Protocol), e.Exporter, e.ObservationDomain, e.FlowSet, e.TemplateID)
}

func (e *TemplateError) Unwrap() error { return ErrTemplateUnknown }

func protocolLabel(p string) string {
	switch p {
	case ProtocolNetFlow5:
		return "netflow v5"
	case ProtocolNetFlow9:
		return "netflow v9"
	case ProtocolIPFIX:
		return "ipfix"
	case ProtocolSFlow5:
		return "sflow v5"
	}
	return "flow"
}

// Decoder decodes datagrams and keeps the per-exporter state between them.
// It is safe for concurrent use by several workers; datagrams from one
// exporter may be decoded in any order, as they may arrive over UDP.
type Decoder struct {
	opts      Options
	mu        sync.RWMutex
	templates map[templateKey]template
	sampling  map[domainKey]uint32
	// slowOnly disables the hand-written fast paths, so tests can compare
	// them with goflow2's decoders.
	slowOnly bool
}

// Options change what a Decoder computes.
type Options struct {
	// SkipCommunityID leaves Flow.CommunityID empty. Computing it is a
	// SHA-1 per flow, about a third of the cost of decoding a NetFlow v5
	// record; a collector that stores flows can compute it when reading
	// them (flowstore.Record.CommunityID).
	SkipCommunityID bool
}

type domainKey struct {
	exporter netip.Addr
	domain   uint32
}

// New returns a Decoder with empty template and sampling caches.
func New() *Decoder { return NewWithOptions(Options{}) }

// NewWithOptions returns a Decoder with empty caches that decodes as opts
// say.
func NewWithOptions(opts Options) *Decoder {
	return &Decoder{
		opts:      opts,
		templates: make(map[templateKey]template),
		sampling:  make(map[domainKey]uint32),
	}
}

// communityID sets f.CommunityID unless the options skip it.
func (d *Decoder) communityID(f *Flow) {
	if !d.opts.SkipCommunityID {
		f.CommunityID = communityIDForFlow(f)
	}
}

// guard turns a panic in a third-party decoder into an error. goflow2's
// decoders are fuzzed upstream but not guaranteed panic-free on hostile
// input, and one bad datagram must not stop a collector worker.
func guard(label string, exporter netip.Addr, err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%s from %s: decoder panic: %v: %w", label, exporter, r, ErrMalformed)
	}
}
