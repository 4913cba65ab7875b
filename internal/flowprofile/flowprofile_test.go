package flowprofile

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

var exporters = []Exporter{
	{Address: netip.MustParseAddr("192.0.2.1"), Name: "core"},
	{Address: netip.MustParseAddr("2001:db8::1")},
}

func TestValidate(t *testing.T) {
	ok := Profile{ID: "site-a", Name: "Site A", Filter: "net 10.1.0.0/16", Channels: []Channel{{ID: "web", Filter: "port 443"}}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid profile: %v", err)
	}
	for _, tc := range []struct {
		name   string
		modify func(*Profile)
		want   string
	}{
		{"bad id", func(p *Profile) { p.ID = "Site A" }, `profile id "Site A"`},
		{"live", func(p *Profile) { p.ID = LiveID }, "built-in profile"},
		{"no name", func(p *Profile) { p.Name = " " }, "name is required"},
		{"bad filter", func(p *Profile) { p.Filter = "proto tcp and" }, "profile site-a: filter:"},
		{"bad channel id", func(p *Profile) { p.Channels[0].ID = "" }, "channels[0].id"},
		{"duplicate channel", func(p *Profile) { p.Channels = append(p.Channels, p.Channels[0]) }, "channels[1].id \"web\" is used twice"},
		{"bad channel filter", func(p *Profile) { p.Channels[0].Filter = "port x" }, "channels[0] (web): filter:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := ok
			p.Channels = append([]Channel(nil), ok.Channels...)
			tc.modify(&p)
			err := p.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestSelect(t *testing.T) {
	live := Live(exporters)
	if len(live.Channels) != 2 || live.Channels[0].Name != "core" || live.Channels[1].ID != "2001-db8--1" || live.Channels[1].Name != "2001:db8::1" {
		t.Fatalf("live channels = %+v", live.Channels)
	}
	p := Profile{ID: "p", Name: "P", Filter: "proto tcp", Channels: []Channel{{ID: "a", Name: "Alpha", Filter: "port 22"}, {ID: "b", Filter: "port 443"}}}
	for _, tc := range []struct {
		p        Profile
		channels []string
		want     string
	}{
		{live, nil, "any"},
		{live, []string{"192.0.2.1"}, `exporter "192.0.2.1"`},
		{live, []string{"core", "2001-db8--1"}, `exporter "192.0.2.1" or exporter "2001:db8::1"`},
		{p, nil, "proto tcp"},
		{p, []string{"Alpha", "b"}, "proto tcp and (port 22 or port 443)"},
	} {
		e, err := Select(tc.p, tc.channels)
		if err != nil {
			t.Errorf("Select(%s, %v): %v", tc.p.ID, tc.channels, err)
			continue
		}
		if got := e.String(); got != tc.want {
			t.Errorf("Select(%s, %v) = %s, want %s", tc.p.ID, tc.channels, got, tc.want)
		}
	}
	if _, err := Select(p, []string{"c"}); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "it has: a, b") {
		t.Errorf("unknown channel: %v", err)
	}
}

type source map[string]Profile

func (s source) Profile(_ context.Context, id string) (Profile, error) {
	p, ok := s[id]
	if !ok {
		return Profile{}, ErrNotFound
	}
	return p, nil
}

func TestResolve(t *testing.T) {
	src := source{LiveID: Live(exporters)}
	e, err := Resolve(context.Background(), src, "", []string{"core"})
	if err != nil || e.String() != `exporter "192.0.2.1"` {
		t.Errorf("Resolve(live, core) = %v, %v", e, err)
	}
	if _, err := Resolve(context.Background(), src, "nope", nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown profile: %v", err)
	}
}

func TestResolveNames(t *testing.T) {
	p := Profile{ID: "p", Name: "P", Filter: "exporter core and not exporter 2001:db8::1", Channels: []Channel{{ID: "a", Filter: "exporter ::ffff:192.0.2.1 or port 22"}}}
	got, err := ResolveNames(p, exporters)
	if err != nil {
		t.Fatal(err)
	}
	if want := `exporter "192.0.2.1" and not exporter "2001:db8::1"`; got.Filter != want {
		t.Errorf("filter = %s, want %s", got.Filter, want)
	}
	if want := `exporter "192.0.2.1" or port 22`; got.Channels[0].Filter != want {
		t.Errorf("channel filter = %s, want %s", got.Channels[0].Filter, want)
	}
	if p.Channels[0].Filter != "exporter ::ffff:192.0.2.1 or port 22" {
		t.Error("ResolveNames changed its argument's channels")
	}
	p.Channels[0].Filter = "exporter edge"
	if _, err := ResolveNames(p, exporters); err == nil || !strings.Contains(err.Error(), `channel a: filter: no exporter is named "edge"; the named exporters are "core" (192.0.2.1)`) {
		t.Errorf("unknown name: %v", err)
	}
	if _, err := ResolveNames(p, nil); err == nil || !strings.Contains(err.Error(), "none has a name yet") {
		t.Errorf("no names: %v", err)
	}
}
