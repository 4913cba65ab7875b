package storetest

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/yagura/yagura/internal/flowprofile"
	"github.com/yagura/yagura/internal/store"
)

// addrs compares netip.Addr values, which cmp cannot look into.
var addrs = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func diffFlows(t *testing.T, what string, got, want any) {
	t.Helper()
	if d := cmp.Diff(got, want, addrs); d != "" {
		t.Errorf("%s mismatch (-got +want):\n%s", what, d)
	}
}

func flowRevision(t *testing.T, db *store.DB) int64 {
	t.Helper()
	n, err := db.FlowRevision(t.Context())
	if err != nil {
		t.Fatalf("FlowRevision: %v", err)
	}
	return n
}

// checkFlowBumps fails unless the flow revision moved by want since
// before, and returns the new one.
func checkFlowBumps(t *testing.T, db *store.DB, what string, before, want int64) int64 {
	t.Helper()
	now := flowRevision(t, db)
	if now-before != want {
		t.Errorf("%s: flow revision went from %d to %d, want +%d", what, before, now, want)
	}
	return now
}

func testFlowExporters(t *testing.T, db *store.DB) {
	ctx := t.Context()
	a9, a10 := netip.MustParseAddr("192.0.2.9"), netip.MustParseAddr("192.0.2.10")
	v6 := netip.MustParseAddr("2001:db8::1")
	rev := flowRevision(t, db)

	// Heard for the first time: registered without name or override.
	got, err := db.UpsertFlowExporterSeen(ctx, a10, base)
	checkErr(t, "UpsertFlowExporterSeen", err, nil)
	checkUTC(t, got)
	want10 := store.FlowExporter{Address: a10, FirstSeen: base, UpdatedAt: base, Version: 1}
	diffFlows(t, "registered exporter", got, want10)
	rev = checkFlowBumps(t, db, "new exporter", rev, 1)
	// Heard again, by this or another manager node: nothing changes.
	got, err = db.UpsertFlowExporterSeen(ctx, a10, base.Add(time.Hour))
	checkErr(t, "UpsertFlowExporterSeen again", err, nil)
	diffFlows(t, "exporter heard again", got, want10)
	rev = checkFlowBumps(t, db, "known exporter", rev, 0)
	// An IPv4-mapped address is the same exporter.
	got, err = db.UpsertFlowExporterSeen(ctx, netip.AddrFrom16(a10.As16()), base.Add(2*time.Hour))
	checkErr(t, "UpsertFlowExporterSeen(mapped)", err, nil)
	diffFlows(t, "exporter heard on a mapped address", got, want10)

	// Named and overridden, conditionally.
	upd := store.FlowExporter{Address: a10, Name: "core-1", SamplingRate: 100, UpdatedAt: base.Add(time.Minute)}
	got, err = db.UpdateFlowExporter(ctx, upd, 1)
	checkErr(t, "UpdateFlowExporter", err, nil)
	want10 = store.FlowExporter{Address: a10, Name: "core-1", SamplingRate: 100, FirstSeen: base, UpdatedAt: base.Add(time.Minute), Version: 2}
	diffFlows(t, "updated exporter", got, want10)
	rev = checkFlowBumps(t, db, "update", rev, 1)
	_, err = db.UpdateFlowExporter(ctx, upd, 1)
	checkErr(t, "UpdateFlowExporter(stale version)", err, store.ErrConflict)
	// Heard after being named: the name and override stay.
	got, err = db.UpsertFlowExporterSeen(ctx, a10, base.Add(3*time.Hour))
	checkErr(t, "UpsertFlowExporterSeen after naming", err, nil)
	diffFlows(t, "named exporter heard", got, want10)

	// Configured before it sends: registered without a first-seen time,
	// which the first datagram fills in.
	got, err = db.UpdateFlowExporter(ctx, store.FlowExporter{Address: a9, Name: "edge 'A'", UpdatedAt: base}, 0)
	checkErr(t, "UpdateFlowExporter(unknown)", err, nil)
	want9 := store.FlowExporter{Address: a9, Name: "edge 'A'", UpdatedAt: base, Version: 1}
	diffFlows(t, "pre-configured exporter", got, want9)
	rev = checkFlowBumps(t, db, "pre-configure", rev, 1)
	got, err = db.UpsertFlowExporterSeen(ctx, a9, base.Add(time.Hour))
	checkErr(t, "UpsertFlowExporterSeen(pre-configured)", err, nil)
	want9.FirstSeen = base.Add(time.Hour)
	diffFlows(t, "pre-configured exporter heard", got, want9)
	checkFlowBumps(t, db, "pre-configured exporter heard", rev, 0)
	_, err = db.UpdateFlowExporter(ctx, store.FlowExporter{Address: netip.MustParseAddr("192.0.2.99"), UpdatedAt: base}, 3)
	checkErr(t, "UpdateFlowExporter(unknown, If-Match)", err, store.ErrNotFound)

	// Names are unique when set; several exporters may have none.
	_, err = db.UpdateFlowExporter(ctx, store.FlowExporter{Address: a9, Name: "core-1", UpdatedAt: base}, 0)
	checkErr(t, "UpdateFlowExporter(taken name)", err, store.ErrConflict)
	if err != nil && !strings.Contains(err.Error(), `exporter 192.0.2.10 is named "core-1"`) {
		t.Errorf("UpdateFlowExporter(taken name): %v, want the error to name the exporter that has it", err)
	}
	_, err = db.UpsertFlowExporterSeen(ctx, v6, base)
	checkErr(t, "UpsertFlowExporterSeen(IPv6)", err, nil)
	got, err = db.UpdateFlowExporter(ctx, store.FlowExporter{Address: a9, UpdatedAt: base.Add(time.Hour)}, 0)
	checkErr(t, "UpdateFlowExporter(clear name and override)", err, nil)
	want9.Name, want9.UpdatedAt, want9.Version = "", base.Add(time.Hour), 2
	diffFlows(t, "cleared exporter", got, want9)

	for name, bad := range map[string]store.FlowExporter{
		"address as name":   {Address: a9, Name: "192.0.2.1", UpdatedAt: base},
		"IPv6 as name":      {Address: a9, Name: "2001:db8::2", UpdatedAt: base},
		"both quotes":       {Address: a9, Name: `a"b'c`, UpdatedAt: base},
		"padded name":       {Address: a9, Name: " core ", UpdatedAt: base},
		"control character": {Address: a9, Name: "a\nb", UpdatedAt: base},
		"no address":        {Name: "x", UpdatedAt: base},
		"zero time":         {Address: a9, Name: "x"},
	} {
		_, err := db.UpdateFlowExporter(ctx, bad, 0)
		checkErr(t, "UpdateFlowExporter("+name+")", err, store.ErrInvalid)
	}
	_, err = db.UpsertFlowExporterSeen(ctx, netip.Addr{}, base)
	checkErr(t, "UpsertFlowExporterSeen(no address)", err, store.ErrInvalid)
	_, err = db.UpsertFlowExporterSeen(ctx, a9, time.Time{})
	checkErr(t, "UpsertFlowExporterSeen(zero time)", err, store.ErrInvalid)

	got, err = db.GetFlowExporter(ctx, a10)
	checkErr(t, "GetFlowExporter", err, nil)
	diffFlows(t, "GetFlowExporter", got, want10)
	_, err = db.GetFlowExporter(ctx, netip.MustParseAddr("198.51.100.1"))
	checkErr(t, "GetFlowExporter(unknown)", err, store.ErrNotFound)

	// Numeric order, IPv4 first.
	list, err := db.ListFlowExporters(ctx)
	checkErr(t, "ListFlowExporters", err, nil)
	var order []string
	for _, e := range list {
		order = append(order, e.Address.String())
	}
	diff(t, "ListFlowExporters order", order, []string{"192.0.2.9", "192.0.2.10", "2001:db8::1"})
}

func testFlowProfiles(t *testing.T, db *store.DB) {
	ctx := t.Context()
	rev := flowRevision(t, db)
	web := flowprofile.Profile{ID: "web", Name: "Web servers", Description: "HTTP(S) to the DMZ", Filter: "dst net 203.0.113.0/24 and dst port in [80, 443]",
		Channels:  []flowprofile.Channel{{ID: "http", Name: "HTTP", Filter: "dst port 80"}, {ID: "https", Name: "HTTPS", Filter: "dst port 443"}},
		CreatedAt: base, UpdatedAt: base.Add(time.Hour)}
	got, err := db.CreateFlowProfile(ctx, web)
	checkErr(t, "CreateFlowProfile", err, nil)
	checkUTC(t, got)
	want := web
	want.Version, want.UpdatedAt = 1, base
	diff(t, "created profile", got, want)
	rev = checkFlowBumps(t, db, "create", rev, 1)

	_, err = db.CreateFlowProfile(ctx, flowprofile.Profile{ID: "web", Name: "Other", CreatedAt: base})
	checkErr(t, "CreateFlowProfile(taken ID)", err, store.ErrConflict)
	_, err = db.CreateFlowProfile(ctx, flowprofile.Profile{ID: "web2", Name: "Web servers", CreatedAt: base})
	checkErr(t, "CreateFlowProfile(taken name)", err, store.ErrConflict)
	if err != nil && !strings.Contains(err.Error(), `named "Web servers"`) {
		t.Errorf("CreateFlowProfile(taken name): %v, want the error to name the name", err)
	}
	for name, bad := range map[string]flowprofile.Profile{
		"live":            {ID: "live", Name: "Mine", CreatedAt: base},
		"built in":        {ID: "x", Name: "x", Builtin: true, CreatedAt: base},
		"bad ID":          {ID: "Web Servers", Name: "x", CreatedAt: base},
		"no name":         {ID: "x", Name: " ", CreatedAt: base},
		"bad filter":      {ID: "x", Name: "x", Filter: "port 99999", CreatedAt: base},
		"bad channel":     {ID: "x", Name: "x", Channels: []flowprofile.Channel{{ID: "a", Filter: "proto"}}, CreatedAt: base},
		"channel ID used": {ID: "x", Name: "x", Channels: []flowprofile.Channel{{ID: "a"}, {ID: "a"}}, CreatedAt: base},
		"zero time":       {ID: "x", Name: "x"},
	} {
		_, err := db.CreateFlowProfile(ctx, bad)
		checkErr(t, "CreateFlowProfile("+name+")", err, store.ErrInvalid)
	}
	all, err := db.CreateFlowProfile(ctx, flowprofile.Profile{ID: "all-tcp", Name: "TCP", Filter: "proto tcp", CreatedAt: base})
	checkErr(t, "CreateFlowProfile(no channels)", err, nil)
	if all.Channels == nil || len(all.Channels) != 0 {
		t.Errorf("profile without channels has channels %#v, want an empty list", all.Channels)
	}
	rev = checkFlowBumps(t, db, "create another", rev, 1)

	list, err := db.ListFlowProfiles(ctx)
	checkErr(t, "ListFlowProfiles", err, nil)
	diff(t, "ListFlowProfiles", list, []flowprofile.Profile{all, want})
	diff(t, "GetFlowProfile", mustGet(t, db.GetFlowProfile, "web"), want)
	_, err = db.GetFlowProfile(ctx, "live")
	checkErr(t, "GetFlowProfile(live)", err, store.ErrNotFound)

	upd := want
	upd.Filter, upd.Channels, upd.UpdatedAt = "dst port 443", nil, base.Add(2*time.Hour)
	got, err = db.UpdateFlowProfile(ctx, upd, 1)
	checkErr(t, "UpdateFlowProfile", err, nil)
	upd.Version, upd.Channels = 2, []flowprofile.Channel{}
	diff(t, "updated profile", got, upd)
	rev = checkFlowBumps(t, db, "update", rev, 1)
	_, err = db.UpdateFlowProfile(ctx, upd, 1)
	checkErr(t, "UpdateFlowProfile(stale version)", err, store.ErrConflict)
	upd.CreatedAt = time.Time{} // ignored
	got, err = db.UpdateFlowProfile(ctx, upd, 0)
	checkErr(t, "UpdateFlowProfile(unconditional)", err, nil)
	if got.Version != 3 || !got.CreatedAt.Equal(base) {
		t.Errorf("unconditional update = %+v", got)
	}
	upd.Name = "TCP"
	_, err = db.UpdateFlowProfile(ctx, upd, 0)
	checkErr(t, "UpdateFlowProfile(taken name)", err, store.ErrConflict)
	_, err = db.UpdateFlowProfile(ctx, flowprofile.Profile{ID: "missing", Name: "m", UpdatedAt: base}, 0)
	checkErr(t, "UpdateFlowProfile(missing)", err, store.ErrNotFound)
	_, err = db.UpdateFlowProfile(ctx, flowprofile.Profile{ID: "web", Name: "m", Filter: "(", UpdatedAt: base}, 0)
	checkErr(t, "UpdateFlowProfile(bad filter)", err, store.ErrInvalid)
	_, err = db.UpdateFlowProfile(ctx, flowprofile.Profile{ID: "web", Name: "m"}, 0)
	checkErr(t, "UpdateFlowProfile(zero time)", err, store.ErrInvalid)
	rev = checkFlowBumps(t, db, "refused updates", rev, 1)

	// The store as a flowprofile.Source: live from the stored exporters.
	src := db.FlowProfiles()
	if _, err := db.UpsertFlowExporterSeen(ctx, netip.MustParseAddr("192.0.2.1"), base); err != nil {
		t.Fatal(err)
	}
	if _, err := db.UpdateFlowExporter(ctx, store.FlowExporter{Address: netip.MustParseAddr("2001:db8::1"), Name: "v6 router", UpdatedAt: base}, 0); err != nil {
		t.Fatal(err)
	}
	live, err := src.Profile(ctx, flowprofile.LiveID)
	checkErr(t, "Source.Profile(live)", err, nil)
	diff(t, "live channels", live.Channels, []flowprofile.Channel{
		{ID: "192.0.2.1", Name: "192.0.2.1", Filter: "exporter 192.0.2.1"},
		{ID: "2001-db8--1", Name: "v6 router", Filter: "exporter 2001:db8::1"},
	})
	p, err := src.Profile(ctx, "all-tcp")
	checkErr(t, "Source.Profile(all-tcp)", err, nil)
	diff(t, "Source.Profile(all-tcp)", p, all)
	_, err = src.Profile(ctx, "nope")
	checkErr(t, "Source.Profile(nope)", err, store.ErrNotFound)
	if !errors.Is(err, flowprofile.ErrNotFound) || !strings.Contains(err.Error(), "there are: live, all-tcp, web") {
		t.Errorf("Source.Profile(nope) = %v, want flowprofile.ErrNotFound naming the profiles", err)
	}
	// Exporter names in a profile's filters reach its users as addresses,
	// which is what the flow table holds.
	_, err = db.CreateFlowProfile(ctx, flowprofile.Profile{ID: "by-name", Name: "By name", Filter: `exporter "v6 router"`,
		Channels: []flowprofile.Channel{{ID: "v4", Filter: "exporter 192.0.2.1 and proto udp"}}, CreatedAt: base})
	checkErr(t, "CreateFlowProfile(by-name)", err, nil)
	p, err = src.Profile(ctx, "by-name")
	checkErr(t, "Source.Profile(by-name)", err, nil)
	if p.Filter != `exporter "2001:db8::1"` || len(p.Channels) != 1 || p.Channels[0].Filter != `exporter "192.0.2.1" and proto udp` {
		t.Errorf("Source.Profile(by-name) = %+v, want exporter names resolved to addresses", p)
	}
	checkErr(t, "DeleteFlowProfile(by-name)", db.DeleteFlowProfile(ctx, "by-name", 0), nil)
	rev = flowRevision(t, db)

	err = db.DeleteFlowProfile(ctx, "web", 2)
	checkErr(t, "DeleteFlowProfile(stale version)", err, store.ErrConflict)
	checkErr(t, "DeleteFlowProfile", db.DeleteFlowProfile(ctx, "web", 3), nil)
	checkErr(t, "DeleteFlowProfile again", db.DeleteFlowProfile(ctx, "web", 0), store.ErrNotFound)
	checkFlowBumps(t, db, "delete", rev, 1)
	// The name is free again.
	_, err = db.CreateFlowProfile(ctx, flowprofile.Profile{ID: "web-new", Name: "Web servers", CreatedAt: base})
	checkErr(t, "CreateFlowProfile(name of a deleted profile)", err, nil)
}
