// Package flowprofile provides profiles and channels, Flowmon's (and
// nfsen's) way of slicing the flows: a profile is a saved filter over all
// flows, such as one per site or application, and its channels split it,
// such as one per exporter. A query names a profile and some of its
// channels; it selects the flows that match the profile's filter and any
// of those channels' filters.
//
// The built-in profile "live" is all flows, with one channel per exporter.
package flowprofile

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/yagura/yagura/internal/flowfilter"
)

// LiveID is the built-in profile of all sources.
const LiveID = "live"

// ErrNotFound is wrapped when a profile or channel does not exist.
var ErrNotFound = errors.New("not found")

// ErrInvalid is wrapped when a profile is malformed.
var ErrInvalid = errors.New("invalid profile")

// Profile is a saved filter over all flows, split into channels.
type Profile struct {
	ID          string    `json:"id"` // [a-z0-9][a-z0-9_-]{0,63}, as in Flowmon's CLI names
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	Filter      string    `json:"filter"` // flowfilter expression; "" or "any": all flows
	Channels    []Channel `json:"channels"`
	Builtin     bool      `json:"builtin"`
	Version     int64     `json:"version"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Channel is one slice of a profile.
type Channel struct {
	ID     string `json:"id"` // unique within the profile, same form as profile IDs
	Name   string `json:"name"`
	Filter string `json:"filter"`
}

var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

// Validate reports what is wrong with p, naming the field.
func (p Profile) Validate() error {
	if !idPattern.MatchString(p.ID) {
		return fmt.Errorf("profile id %q: lower-case letters, digits, '.', '_' and '-', at most 64, starting with a letter or digit: %w", p.ID, ErrInvalid)
	}
	if p.ID == LiveID && !p.Builtin {
		return fmt.Errorf("profile id %q is the built-in profile of all sources: choose another: %w", p.ID, ErrInvalid)
	}
	if strings.TrimSpace(p.Name) == "" {
		return fmt.Errorf("profile %s: name is required: %w", p.ID, ErrInvalid)
	}
	if _, err := parse(p.Filter); err != nil {
		return fmt.Errorf("profile %s: filter: %w", p.ID, err)
	}
	seen := map[string]bool{}
	for i, c := range p.Channels {
		if !idPattern.MatchString(c.ID) {
			return fmt.Errorf("profile %s: channels[%d].id %q: lower-case letters, digits, '.', '_' and '-': %w", p.ID, i, c.ID, ErrInvalid)
		}
		if seen[c.ID] {
			return fmt.Errorf("profile %s: channels[%d].id %q is used twice: %w", p.ID, i, c.ID, ErrInvalid)
		}
		seen[c.ID] = true
		if _, err := parse(c.Filter); err != nil {
			return fmt.Errorf("profile %s: channels[%d] (%s): filter: %w", p.ID, i, c.ID, err)
		}
	}
	return nil
}

// parse reads a filter; "" means all flows. The flowfilter syntax error
// says where the expression is wrong.
func parse(s string) (flowfilter.Expr, error) {
	if strings.TrimSpace(s) == "" {
		return flowfilter.All{}, nil
	}
	return flowfilter.Parse(s)
}

// ChannelID turns an exporter into a channel ID: its address with ':'
// replaced, since IPv6 colons are not allowed.
func ChannelID(exporter netip.Addr) string {
	return strings.ReplaceAll(exporter.String(), ":", "-")
}

// Exporter is what Live needs to know of an exporter.
type Exporter struct {
	Address netip.Addr
	Name    string
}

// Live returns the built-in profile: all flows, a channel per exporter.
func Live(exporters []Exporter) Profile {
	p := Profile{ID: LiveID, Name: "All Sources", Description: "All flows from every exporter (built in).", Filter: "", Builtin: true}
	for _, e := range exporters {
		name := e.Name
		if name == "" {
			name = e.Address.String()
		}
		p.Channels = append(p.Channels, Channel{ID: ChannelID(e.Address), Name: name, Filter: "exporter " + e.Address.String()})
	}
	return p
}

// Select returns the filter of a query over profile p restricted to the
// channels named (none: all of them). A channel may be named by ID or by
// name.
func Select(p Profile, channels []string) (flowfilter.Expr, error) {
	pf, err := parse(p.Filter)
	if err != nil {
		return nil, fmt.Errorf("profile %s: filter: %w", p.ID, err)
	}
	if len(channels) == 0 {
		return pf, nil
	}
	var terms []flowfilter.Expr
	for _, name := range channels {
		var found *Channel
		for i := range p.Channels {
			if p.Channels[i].ID == name || p.Channels[i].Name == name {
				found = &p.Channels[i]
				break
			}
		}
		if found == nil {
			ids := make([]string, len(p.Channels))
			for i, c := range p.Channels {
				ids[i] = c.ID
			}
			return nil, fmt.Errorf("profile %s has no channel %q (it has: %s): %w", p.ID, name, strings.Join(ids, ", "), ErrNotFound)
		}
		cf, err := parse(found.Filter)
		if err != nil {
			return nil, fmt.Errorf("profile %s: channel %s: filter: %w", p.ID, found.ID, err)
		}
		terms = append(terms, cf)
	}
	var ch flowfilter.Expr = flowfilter.Or{Terms: terms}
	if len(terms) == 1 {
		ch = terms[0]
	}
	if _, all := pf.(flowfilter.All); all {
		return ch, nil
	}
	return flowfilter.And{Terms: []flowfilter.Expr{pf, ch}}, nil
}

// Source looks profiles up; the state store holds user profiles, the
// collector knows the exporters for "live".
type Source interface {
	Profile(ctx context.Context, id string) (Profile, error)
}

// Resolve returns the filter for profile id and channels, from src.
func Resolve(ctx context.Context, src Source, id string, channels []string) (flowfilter.Expr, error) {
	if id == "" {
		id = LiveID
	}
	p, err := src.Profile(ctx, id)
	if err != nil {
		return nil, err
	}
	return Select(p, channels)
}

// ResolveExporterNames rewrites the "exporter NAME" terms of e to the
// exporter's address, which is what the flow table holds; an address is
// written in its stored form (IPv4 unmapped). An unknown name is an error
// that lists the named exporters.
func ResolveExporterNames(e flowfilter.Expr, exporters []Exporter) (flowfilter.Expr, error) {
	list := func(terms []flowfilter.Expr) ([]flowfilter.Expr, error) {
		out := make([]flowfilter.Expr, len(terms))
		for i, t := range terms {
			r, err := ResolveExporterNames(t, exporters)
			if err != nil {
				return nil, err
			}
			out[i] = r
		}
		return out, nil
	}
	switch e := e.(type) {
	case flowfilter.And:
		terms, err := list(e.Terms)
		return flowfilter.And{Terms: terms}, err
	case flowfilter.Or:
		terms, err := list(e.Terms)
		return flowfilter.Or{Terms: terms}, err
	case flowfilter.Not:
		inner, err := ResolveExporterNames(e.X, exporters)
		return flowfilter.Not{X: inner}, err
	case flowfilter.Exporter:
		if addr, err := netip.ParseAddr(e.Name); err == nil {
			return flowfilter.Exporter{Name: addr.Unmap().String()}, nil
		}
		var known []string
		for _, ex := range exporters {
			if ex.Name == e.Name {
				return flowfilter.Exporter{Name: ex.Address.Unmap().String()}, nil
			}
			if ex.Name != "" {
				known = append(known, fmt.Sprintf("%q (%s)", ex.Name, ex.Address))
			}
		}
		if len(known) == 0 {
			return nil, fmt.Errorf("no exporter is named %q (none has a name yet: use its address, or name it with PATCH /api/v1/flows/exporters/{address})", e.Name)
		}
		return nil, fmt.Errorf("no exporter is named %q; the named exporters are %s (or use an address)", e.Name, strings.Join(known, ", "))
	}
	return e, nil
}

// ResolveNames returns p with the exporter names in its filter and its
// channels' filters replaced by addresses, so that it can be compiled for
// the flow store.
func ResolveNames(p Profile, exporters []Exporter) (Profile, error) {
	resolve := func(s string) (string, error) {
		if strings.TrimSpace(s) == "" {
			return s, nil
		}
		e, err := flowfilter.Parse(s)
		if err != nil {
			return "", err
		}
		if e, err = ResolveExporterNames(e, exporters); err != nil {
			return "", err
		}
		return e.String(), nil
	}
	out := p
	var err error
	if out.Filter, err = resolve(p.Filter); err != nil {
		return Profile{}, fmt.Errorf("profile %s: filter: %w", p.ID, err)
	}
	out.Channels = make([]Channel, len(p.Channels))
	for i, c := range p.Channels {
		out.Channels[i] = c
		if out.Channels[i].Filter, err = resolve(c.Filter); err != nil {
			return Profile{}, fmt.Errorf("profile %s: channel %s: filter: %w", p.ID, c.ID, err)
		}
	}
	return out, nil
}
