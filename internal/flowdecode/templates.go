package flowdecode

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/netsampler/goflow2/v2/decoders/netflow"
)

type templateKey struct {
	exporter netip.Addr
	version  uint16
	domain   uint32
	id       uint16
}

// template is one of netflow.TemplateRecord, netflow.NFv9OptionsTemplateRecord
// or netflow.IPFIXOptionsTemplateRecord, the types goflow2's decoder switches on.
type template = any

// exporterTemplates adapts the Decoder's cache to goflow2's
// NetFlowTemplateSystem for one exporter: goflow2 keys templates by version,
// domain and ID only, and two exporters may reuse the same IDs.
type exporterTemplates struct {
	d        *Decoder
	exporter netip.Addr
}

var _ netflow.NetFlowTemplateSystem = exporterTemplates{}

func (t exporterTemplates) key(version uint16, domain uint32, id uint16) templateKey {
	return templateKey{exporter: t.exporter, version: version, domain: domain, id: id}
}

func (t exporterTemplates) AddTemplate(version uint16, domain uint32, id uint16, tmpl any) error {
	fields := templateFields(tmpl)
	t.d.mu.Lock()
	defer t.d.mu.Unlock()
	if len(fields) == 0 {
		// An IPFIX template withdrawal (RFC 7011 section 8.1) has no fields.
		delete(t.d.templates, t.key(version, domain, id))
		return nil
	}
	if err := checkTemplate(fields); err != nil {
		return fmt.Errorf("template %d: %w", id, err)
	}
	t.d.templates[t.key(version, domain, id)] = tmpl
	return nil
}

func templateFields(tmpl any) []netflow.Field {
	switch t := tmpl.(type) {
	case netflow.TemplateRecord:
		return t.Fields
	case netflow.NFv9OptionsTemplateRecord:
		return append(slices.Clip(t.Scopes), t.Options...)
	case netflow.IPFIXOptionsTemplateRecord:
		return append(slices.Clip(t.Scopes), t.Options...)
	}
	return nil
}

// checkTemplate refuses a template whose records would take no bytes:
// goflow2 decodes records while the set has at least a record's length left,
// so such a template makes it loop forever on the first data set.
//
// It also refuses more fields than a record has bytes (fields of length
// 0): decoding costs a step per field per record, so 16,000 such fields
// and a data set of one-byte records made a single datagram cost minutes
// of CPU. With at least a byte per field, the work is linear in the
// datagram's size.
func checkTemplate(fields []netflow.Field) error {
	size := 0
	for _, f := range fields {
		if f.Length == varLength {
			size++ // at least the length octet
		} else {
			size += int(f.Length)
		}
	}
	switch {
	case size == 0:
		return errors.New("every field has length 0")
	case len(fields) > size:
		return fmt.Errorf("%d fields in records of %d bytes (fields of length 0)", len(fields), size)
	}
	return nil
}

func (t exporterTemplates) GetTemplate(version uint16, domain uint32, id uint16) (any, error) {
	t.d.mu.RLock()
	defer t.d.mu.RUnlock()
	if tmpl, ok := t.d.templates[t.key(version, domain, id)]; ok {
		return tmpl, nil
	}
	return nil, netflow.ErrorTemplateNotFound
}

func (t exporterTemplates) RemoveTemplate(version uint16, domain uint32, id uint16) (any, error) {
	t.d.mu.Lock()
	defer t.d.mu.Unlock()
	k := t.key(version, domain, id)
	tmpl, ok := t.d.templates[k]
	if !ok {
		return nil, netflow.ErrorTemplateNotFound
	}
	delete(t.d.templates, k)
	return tmpl, nil
}

// GetTemplates returns this exporter's templates in goflow2's key format.
func (t exporterTemplates) GetTemplates() netflow.FlowBaseTemplateSet {
	t.d.mu.RLock()
	defer t.d.mu.RUnlock()
	out := make(netflow.FlowBaseTemplateSet)
	for k, v := range t.d.templates {
		if k.exporter == t.exporter {
			out[uint64(k.version)<<48|uint64(k.domain)<<16|uint64(k.id)] = v
		}
	}
	return out
}

// Persisted form of the caches. Version 1; the format is internal to Yagura
// but must stay readable across upgrades.
type savedState struct {
	Version   int             `json:"version"`
	Templates []savedTemplate `json:"templates"`
	Sampling  []savedSampling `json:"sampling,omitempty"`
}

type savedTemplate struct {
	Exporter   netip.Addr      `json:"exporter"`
	Version    uint16          `json:"netflow_version"`
	Domain     uint32          `json:"domain"`
	TemplateID uint16          `json:"template_id"`
	Kind       string          `json:"kind"` // "data", "nfv9-options", "ipfix-options"
	Scopes     []netflow.Field `json:"scopes,omitempty"`
	Fields     []netflow.Field `json:"fields"`
}

type savedSampling struct {
	Exporter netip.Addr `json:"exporter"`
	Domain   uint32     `json:"domain"`
	Rate     uint32     `json:"rate"`
}

// Templates returns the template and sampling caches as JSON, for
// LoadTemplates after a restart.
func (d *Decoder) Templates() []byte {
	d.mu.RLock()
	st := savedState{Version: 1}
	for k, v := range d.templates {
		s := savedTemplate{Exporter: k.exporter, Version: k.version, Domain: k.domain, TemplateID: k.id}
		switch t := v.(type) {
		case netflow.TemplateRecord:
			s.Kind, s.Fields = "data", t.Fields
		case netflow.NFv9OptionsTemplateRecord:
			s.Kind, s.Scopes, s.Fields = "nfv9-options", t.Scopes, t.Options
		case netflow.IPFIXOptionsTemplateRecord:
			s.Kind, s.Scopes, s.Fields = "ipfix-options", t.Scopes, t.Options
		default:
			continue
		}
		st.Templates = append(st.Templates, s)
	}
	for k, r := range d.sampling {
		st.Sampling = append(st.Sampling, savedSampling{Exporter: k.exporter, Domain: k.domain, Rate: r})
	}
	d.mu.RUnlock()
	slices.SortFunc(st.Templates, func(a, b savedTemplate) int {
		return cmp.Or(a.Exporter.Compare(b.Exporter), cmp.Compare(a.Version, b.Version),
			cmp.Compare(a.Domain, b.Domain), cmp.Compare(a.TemplateID, b.TemplateID))
	})
	slices.SortFunc(st.Sampling, func(a, b savedSampling) int {
		return cmp.Or(a.Exporter.Compare(b.Exporter), cmp.Compare(a.Domain, b.Domain))
	})
	b, err := json.Marshal(st)
	if err != nil {
		// Only plain structs of numbers and addresses: cannot fail.
		panic(fmt.Sprintf("flowdecode: marshal templates: %v", err))
	}
	return b
}

// LoadTemplates merges caches saved by Templates into d. Entries already in
// d are overwritten. On error d is unchanged.
func (d *Decoder) LoadTemplates(data []byte) error {
	var st savedState
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("load flow templates: %w", err)
	}
	if st.Version != 1 {
		return fmt.Errorf("load flow templates: unsupported version %d", st.Version)
	}
	loaded := make(map[templateKey]template, len(st.Templates))
	for i, s := range st.Templates {
		if s.Version != 9 && s.Version != 10 {
			return fmt.Errorf("load flow templates: template %d: netflow version %d", i, s.Version)
		}
		k := templateKey{exporter: s.Exporter, version: s.Version, domain: s.Domain, id: s.TemplateID}
		switch s.Kind {
		case "data":
			loaded[k] = netflow.TemplateRecord{TemplateId: s.TemplateID, FieldCount: uint16(len(s.Fields)), Fields: s.Fields}
		case "nfv9-options":
			loaded[k] = netflow.NFv9OptionsTemplateRecord{TemplateId: s.TemplateID,
				ScopeLength: uint16(4 * len(s.Scopes)), OptionLength: uint16(4 * len(s.Fields)),
				Scopes: s.Scopes, Options: s.Fields}
		case "ipfix-options":
			loaded[k] = netflow.IPFIXOptionsTemplateRecord{TemplateId: s.TemplateID,
				FieldCount: uint16(len(s.Scopes) + len(s.Fields)), ScopeFieldCount: uint16(len(s.Scopes)),
				Scopes: s.Scopes, Options: s.Fields}
		default:
			return fmt.Errorf("load flow templates: template %d: unknown kind %q", i, s.Kind)
		}
	}
	for k, v := range loaded {
		if err := checkTemplate(templateFields(v)); err != nil {
			return fmt.Errorf("load flow templates: template %d from %s: %w", k.id, k.exporter, err)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, v := range loaded {
		d.templates[k] = v
	}
	for _, s := range st.Sampling {
		d.sampling[domainKey{s.Exporter, s.Domain}] = s.Rate
	}
	return nil
}

// TemplateCounts returns how many v9/IPFIX templates (data and options)
// each exporter has in the cache, for a collector's status page.
func (d *Decoder) TemplateCounts() map[netip.Addr]int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	out := make(map[netip.Addr]int)
	for k := range d.templates {
		out[k.exporter]++
	}
	return out
}
