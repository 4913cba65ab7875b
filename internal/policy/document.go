package policy

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/yagura/yagura/internal/firewall"
)

// DocumentVersion is the version of the document format.
const DocumentVersion = 1

// Document is the effective configuration an agent enforces: resolved
// settings and the firewall rule set with the lists its rules use. Its
// canonical form (Canonical) is what the fingerprint covers.
type Document struct {
	V        int               `json:"v"`
	Settings map[string]string `json:"settings"`
	Firewall firewall.Set      `json:"firewall"`
}

// Canonical sorts the document's rules and lists by ID, so two documents
// with the same content have the same bytes (encoding/json already sorts
// map keys).
func (d *Document) Canonical() {
	d.V = DocumentVersion
	if d.Settings == nil {
		d.Settings = map[string]string{}
	}
	slices.SortFunc(d.Firewall.Rules, func(a, b firewall.Rule) int { return cmp.Compare(a.ID, b.ID) })
	slices.SortFunc(d.Firewall.IPLists, func(a, b firewall.IPList) int { return cmp.Compare(a.ID, b.ID) })
	slices.SortFunc(d.Firewall.MACLists, func(a, b firewall.MACList) int { return cmp.Compare(a.ID, b.ID) })
	slices.SortFunc(d.Firewall.PortLists, func(a, b firewall.PortList) int { return cmp.Compare(a.ID, b.ID) })
	if d.Firewall.Rules == nil {
		d.Firewall.Rules = []firewall.Rule{}
	}
}

// Marshal returns the canonical JSON of the document.
func (d *Document) Marshal() ([]byte, error) {
	d.Canonical()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(d); err != nil {
		return nil, fmt.Errorf("encode policy document: %w", err)
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// Fingerprint is the hash of the canonical form: the first 16 bytes of its
// SHA-256 in unpadded base64url (22 characters, small in every heartbeat).
func (d *Document) Fingerprint() (string, error) {
	b, err := d.Marshal()
	if err != nil {
		return "", err
	}
	return FingerprintOf(b), nil
}

// FingerprintOf hashes canonical document bytes.
func FingerprintOf(canonical []byte) string {
	sum := sha256.Sum256(canonical)
	return base64.RawURLEncoding.EncodeToString(sum[:16])
}

// Delta turns one document into another: settings set and unset, rules and
// lists put (added or replaced, by ID) and removed. It carries both
// fingerprints so the agent can check it holds the base and got the target.
type Delta struct {
	Base        string              `json:"base"`
	Target      string              `json:"target"`
	Set         map[string]string   `json:"set,omitempty"`
	Unset       []string            `json:"unset,omitempty"`
	PutRules    []firewall.Rule     `json:"put_rules,omitempty"`
	DelRules    []int               `json:"del_rules,omitempty"`
	PutIPLists  []firewall.IPList   `json:"put_ip_lists,omitempty"`
	PutMACLists []firewall.MACList  `json:"put_mac_lists,omitempty"`
	PutPortList []firewall.PortList `json:"put_port_lists,omitempty"`
	// DelLists removes lists of any kind (lists share one ID space).
	DelLists []int `json:"del_lists,omitempty"`
}

// Diff returns the delta from old to new. Both must be canonical (their
// fingerprints are recomputed here).
func Diff(old, new *Document) (*Delta, error) {
	base, err := old.Fingerprint()
	if err != nil {
		return nil, err
	}
	target, err := new.Fingerprint()
	if err != nil {
		return nil, err
	}
	d := &Delta{Base: base, Target: target}
	for k, v := range new.Settings {
		if ov, ok := old.Settings[k]; !ok || ov != v {
			if d.Set == nil {
				d.Set = map[string]string{}
			}
			d.Set[k] = v
		}
	}
	for _, k := range slices.Sorted(maps.Keys(old.Settings)) {
		if _, ok := new.Settings[k]; !ok {
			d.Unset = append(d.Unset, k)
		}
	}
	d.PutRules, d.DelRules = diffByID(old.Firewall.Rules, new.Firewall.Rules, func(r firewall.Rule) int { return r.ID })
	var dl []int
	d.PutIPLists, dl = diffByID(old.Firewall.IPLists, new.Firewall.IPLists, func(l firewall.IPList) int { return l.ID })
	d.DelLists = append(d.DelLists, dl...)
	d.PutMACLists, dl = diffByID(old.Firewall.MACLists, new.Firewall.MACLists, func(l firewall.MACList) int { return l.ID })
	d.DelLists = append(d.DelLists, dl...)
	d.PutPortList, dl = diffByID(old.Firewall.PortLists, new.Firewall.PortLists, func(l firewall.PortList) int { return l.ID })
	d.DelLists = append(d.DelLists, dl...)
	slices.Sort(d.DelLists)
	return d, nil
}

// diffByID returns the items of b that are new or changed relative to a,
// and the IDs in a that b lacks. Items are compared by their JSON.
func diffByID[T any](a, b []T, id func(T) int) (put []T, del []int) {
	old := make(map[int][]byte, len(a))
	for _, x := range a {
		j, _ := json.Marshal(x)
		old[id(x)] = j
	}
	for _, x := range b {
		j, _ := json.Marshal(x)
		if o, ok := old[id(x)]; !ok || !bytes.Equal(o, j) {
			put = append(put, x)
		}
		delete(old, id(x))
	}
	del = slices.Sorted(maps.Keys(old))
	return put, del
}

// ErrBaseMismatch: the delta does not start from the document it is
// applied to; fetch the whole document instead.
var ErrBaseMismatch = errors.New("policy delta does not apply to the document held")

// Apply returns the document d turned by delta. It checks that d is the
// delta's base and that the result is its target.
func (d *Document) Apply(delta *Delta) (*Document, error) {
	base, err := d.Fingerprint()
	if err != nil {
		return nil, err
	}
	if base != delta.Base {
		return nil, fmt.Errorf("%w (holds %s, delta from %s)", ErrBaseMismatch, base, delta.Base)
	}
	out := &Document{V: DocumentVersion, Settings: maps.Clone(d.Settings)}
	if out.Settings == nil {
		out.Settings = map[string]string{}
	}
	maps.Copy(out.Settings, delta.Set)
	for _, k := range delta.Unset {
		delete(out.Settings, k)
	}
	delLists := map[int]bool{}
	for _, id := range delta.DelLists {
		delLists[id] = true
	}
	out.Firewall.Rules = patch(d.Firewall.Rules, delta.PutRules, delta.DelRules, func(r firewall.Rule) int { return r.ID })
	out.Firewall.IPLists = patchSet(d.Firewall.IPLists, delta.PutIPLists, delLists, func(l firewall.IPList) int { return l.ID })
	out.Firewall.MACLists = patchSet(d.Firewall.MACLists, delta.PutMACLists, delLists, func(l firewall.MACList) int { return l.ID })
	out.Firewall.PortLists = patchSet(d.Firewall.PortLists, delta.PutPortList, delLists, func(l firewall.PortList) int { return l.ID })
	got, err := out.Fingerprint()
	if err != nil {
		return nil, err
	}
	if got != delta.Target {
		return nil, fmt.Errorf("%w: result %s is not the delta's target %s", ErrBaseMismatch, got, delta.Target)
	}
	return out, nil
}

func patch[T any](items, put []T, del []int, id func(T) int) []T {
	gone := make(map[int]bool, len(del))
	for _, x := range del {
		gone[x] = true
	}
	return patchSet(items, put, gone, id)
}

func patchSet[T any](items, put []T, gone map[int]bool, id func(T) int) []T {
	byID := make(map[int]T, len(items)+len(put))
	for _, x := range items {
		if !gone[id(x)] {
			byID[id(x)] = x
		}
	}
	for _, x := range put {
		byID[id(x)] = x
	}
	out := make([]T, 0, len(byID))
	for _, k := range slices.Sorted(maps.Keys(byID)) {
		out = append(out, byID[k])
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
