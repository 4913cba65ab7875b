package collector

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/yagura/yagura/internal/flowdecode"
)

// protocolBits numbers the flowdecode protocols for exporterState.protocols.
var protocolBits = []string{flowdecode.ProtocolNetFlow5, flowdecode.ProtocolNetFlow9, flowdecode.ProtocolIPFIX, flowdecode.ProtocolSFlow5}

func protocolBit(p string) uint32 {
	for i, q := range protocolBits {
		if p == q {
			return 1 << i
		}
	}
	return 0
}

// exporterState is what the collector keeps per exporter. Counters are
// atomics because every socket's reader may update them; the rest is
// guarded by mu and changes rarely.
type exporterState struct {
	addr      netip.Addr
	firstSeen time.Time

	lastSeen       atomic.Int64 // unix nanoseconds
	packets        atomic.Uint64
	flows          atomic.Uint64
	decodeErrors   atomic.Uint64
	templateMisses atomic.Uint64
	protocols      atomic.Uint32 // protocolBit of each seen
	override       atomic.Uint32 // ExporterSettings.SamplingRate

	mu      sync.Mutex
	name    string
	domains map[uint32]rateSeen // reported rate per observation domain
	rate    uint32              // latest reported rate, 0 when none
	source  string              // its flowdecode.Sampling* source
	hadRate bool                // some domain ever reported a rate
	warning string
}

// rateSeen is a sampling rate an exporter reported and where it came from.
type rateSeen struct {
	rate   uint32
	source string
}

// observeSampling records the rate a flow from domain came with (0: none).
// Workers call it only when the rate differs from the last they saw for
// that exporter and domain, so the lock is rare.
func (e *exporterState) observeSampling(domain uint32, seen rateSeen, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	prev, known := e.domains[domain]
	if known && prev == seen {
		return
	}
	where := ""
	if domain != 0 {
		where = fmt.Sprintf(" (observation domain %d)", domain)
	}
	at := now.UTC().Format(time.RFC3339)
	switch {
	case seen.rate == 0 && e.hadRate && (!known || prev.rate != 0):
		// v9 and IPFIX need not carry a rate at all; it is missing only
		// if this exporter had one.
		was := prev.rate
		if !known {
			was = e.rate
		}
		e.warning = fmt.Sprintf("sampling rate missing since %s%s (was 1:%d): flows are stored unscaled; "+
			"check the exporter's sampling configuration or set the rate on the exporter in Yagura", at, where, was)
	case known && prev.rate != 0 && seen.rate != 0 && prev.rate != seen.rate:
		e.warning = fmt.Sprintf("sampling rate changed from 1:%d to 1:%d at %s%s", prev.rate, seen.rate, at, where)
	}
	if e.domains == nil {
		e.domains = make(map[uint32]rateSeen)
	}
	e.domains[domain] = seen
	e.rate, e.source = seen.rate, seen.source
	if seen.rate != 0 {
		e.hadRate = true
	}
}

// registry holds the exporters seen, looked up on every datagram.
type registry struct {
	max int

	mu       sync.RWMutex
	byAddr   map[netip.Addr]*exporterState
	settings map[netip.Addr]ExporterSettings

	onNew   atomic.Pointer[func(ExporterStatus)]
	newMu   sync.Mutex
	pending []*exporterState // first seen, not yet announced
	wake    chan struct{}
}

func newRegistry(max int) *registry {
	return &registry{max: max, byAddr: map[netip.Addr]*exporterState{}, wake: make(chan struct{}, 1)}
}

// get returns addr's state, creating it on the first datagram. It returns
// nil when addr is new and MaxExporters are already known.
func (r *registry) get(addr netip.Addr, now time.Time) *exporterState {
	r.mu.RLock()
	e := r.byAddr[addr]
	r.mu.RUnlock()
	if e != nil {
		return e
	}
	r.mu.Lock()
	if e = r.byAddr[addr]; e != nil {
		r.mu.Unlock()
		return e
	}
	if len(r.byAddr) >= r.max {
		r.mu.Unlock()
		return nil
	}
	e = &exporterState{addr: addr, firstSeen: now.UTC()}
	e.lastSeen.Store(now.UnixNano())
	s := r.settings[addr]
	e.name = s.Name
	e.override.Store(s.SamplingRate)
	r.byAddr[addr] = e
	r.mu.Unlock()

	r.newMu.Lock()
	r.pending = append(r.pending, e)
	r.newMu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
	return e
}

// setSettings replaces the administrators' settings.
func (r *registry) setSettings(m map[netip.Addr]ExporterSettings) {
	m = cloneSettings(m)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.settings = m
	for addr, e := range r.byAddr {
		s := m[addr]
		e.override.Store(s.SamplingRate)
		e.mu.Lock()
		e.name = s.Name
		e.mu.Unlock()
	}
}

func cloneSettings(m map[netip.Addr]ExporterSettings) map[netip.Addr]ExporterSettings {
	out := make(map[netip.Addr]ExporterSettings, len(m))
	for a, s := range m {
		out[a.Unmap()] = s
	}
	return out
}

// announce calls the OnNewExporter callback for exporters first seen since
// the last call. It runs on its own goroutine, so a slow callback (the
// server writes to the state store) never holds up reading.
func (r *registry) announce(templates map[netip.Addr]int) {
	r.newMu.Lock()
	pending := r.pending
	r.pending = nil
	r.newMu.Unlock()
	fn := r.onNew.Load()
	if fn == nil {
		return
	}
	for _, e := range pending {
		(*fn)(e.status(templates[e.addr]))
	}
}

// all returns every exporter's status, sorted by address.
func (r *registry) all(templates map[netip.Addr]int) []ExporterStatus {
	r.mu.RLock()
	list := make([]*exporterState, 0, len(r.byAddr))
	for _, e := range r.byAddr {
		list = append(list, e)
	}
	r.mu.RUnlock()
	out := make([]ExporterStatus, 0, len(list))
	for _, e := range list {
		out = append(out, e.status(templates[e.addr]))
	}
	slices.SortFunc(out, func(a, b ExporterStatus) int { return a.Address.Compare(b.Address) })
	return out
}

func (e *exporterState) status(templates int) ExporterStatus {
	st := ExporterStatus{
		Address:        e.addr,
		FirstSeen:      e.firstSeen,
		LastSeen:       time.Unix(0, e.lastSeen.Load()).UTC(),
		Packets:        e.packets.Load(),
		Flows:          e.flows.Load(),
		DecodeErrors:   e.decodeErrors.Load(),
		TemplateMisses: e.templateMisses.Load(),
		Templates:      templates,
		Protocols:      []string{},
	}
	bits := e.protocols.Load()
	for i, p := range protocolBits {
		if bits&(1<<i) != 0 {
			st.Protocols = append(st.Protocols, p)
		}
	}
	slices.Sort(st.Protocols)
	e.mu.Lock()
	st.Name, st.SamplingWarning = e.name, e.warning
	rate, source := e.rate, e.source
	e.mu.Unlock()
	switch ov := e.override.Load(); {
	case ov != 0:
		st.SamplingRate, st.SamplingSource = ov, SamplingOverride
	case rate != 0:
		st.SamplingRate, st.SamplingSource = rate, source
	default:
		st.SamplingRate, st.SamplingSource = 1, SamplingNone
	}
	return st
}
