package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/store"
)

// ---- alerts ----

func testAlertSubjects(t *testing.T, db *store.DB) {
	ctx := t.Context()
	raise := func(a store.Alert) (store.Alert, bool) {
		t.Helper()
		got, created, err := db.RaiseAlert(ctx, a)
		if err != nil {
			t.Fatalf("RaiseAlert(%s): %v", a.ID, err)
		}
		checkUTC(t, got)
		return got, created
	}
	a := store.Alert{ID: "a1", Type: "ssh-brute-force", Severity: store.SeverityCritical, ComputerID: "c1",
		Subject: "src 203.0.113.5", RuleID: "r1", Message: "5 failed logins", Data: `{"count":5}`, RaisedAt: base}
	if got, created := raise(a); !created {
		t.Fatal("RaiseAlert did not create")
	} else {
		diff(t, "raised alert", got, opened(a))
	}
	// Another subject of the same type and computer is another alert.
	b := a
	b.ID, b.Subject = "a2", "src 198.51.100.7"
	if _, created := raise(b); !created {
		t.Error("RaiseAlert of another subject did not create")
	}
	// The same subject counts on a1. Late occurrences do not move LastAt
	// back; the first alert's message and data stay.
	for i, at := range []time.Time{base.Add(2 * time.Minute), base.Add(time.Minute)} {
		dup := a
		dup.ID, dup.Message, dup.Data, dup.RaisedAt = fmt.Sprint("dup", i), "other", "", at
		if _, created := raise(dup); created {
			t.Errorf("RaiseAlert of an open subject created %s", dup.ID)
		}
	}
	want := opened(a)
	want.Occurrences, want.LastAt = 3, base.Add(2*time.Minute)
	diff(t, "alert after two more occurrences", getAlert(t, db, "a1"), want)

	// ClearOpenAlerts of a type clears every subject.
	n, err := db.ClearOpenAlerts(ctx, a.Type, "c1", base.Add(time.Hour), "system")
	checkErr(t, "ClearOpenAlerts", err, nil)
	if n != 2 {
		t.Errorf("ClearOpenAlerts cleared %d alerts, want 2", n)
	}
}

func testLastAlert(t *testing.T, db *store.DB) {
	ctx := t.Context()
	_, err := db.LastAlert(ctx, "t", "c1", "s")
	checkErr(t, "LastAlert on an empty store", err, store.ErrNotFound)
	for i, at := range []time.Time{base, base.Add(time.Hour), base.Add(2 * time.Hour)} {
		a := store.Alert{ID: fmt.Sprint("a", i), Type: "t", ComputerID: "c1", Subject: "s", RaisedAt: at}
		if _, created, err := db.RaiseAlert(ctx, a); err != nil || !created {
			t.Fatalf("RaiseAlert(%s) = %v, %v", a.ID, created, err)
		}
		if i < 2 {
			if _, err := db.ClearAlert(ctx, a.ID, at.Add(time.Minute), "system"); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Other keys do not count.
	for _, a := range []store.Alert{
		{ID: "o1", Type: "t", ComputerID: "c1", Subject: "other", RaisedAt: base.Add(3 * time.Hour)},
		{ID: "o2", Type: "t", ComputerID: "c2", Subject: "s", RaisedAt: base.Add(3 * time.Hour)},
		{ID: "o3", Type: "u", ComputerID: "c1", Subject: "s", RaisedAt: base.Add(3 * time.Hour)},
	} {
		if _, _, err := db.RaiseAlert(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	got, err := db.LastAlert(ctx, "t", "c1", "s")
	checkErr(t, "LastAlert", err, nil)
	checkUTC(t, got)
	if got.ID != "a2" {
		t.Errorf("LastAlert = %s, want a2", got.ID)
	}
	if _, err := db.ClearAlert(ctx, "a2", base.Add(3*time.Hour), "system"); err != nil {
		t.Fatal(err)
	}
	if got, err := db.LastAlert(ctx, "t", "c1", "s"); err != nil || got.ID != "a2" || got.ClearedAt.IsZero() {
		t.Errorf("LastAlert after clearing = %+v, %v; want the cleared a2", got, err)
	}
}

func testRaiseAlertNotify(t *testing.T, db *store.DB) {
	ctx := t.Context()
	createChannel(t, db, "ch1", "mail")
	createChannel(t, db, "ch2", "hook")
	notes := func(alertID string, chs ...string) []store.Notification {
		var ns []store.Notification
		for _, ch := range chs {
			ns = append(ns, store.Notification{ID: alertID + "@" + ch, ChannelID: ch, Kind: "alert", CreatedAt: base, Payload: `{"id":"` + alertID + `"}`})
		}
		return ns
	}
	a := store.Alert{ID: "a1", Type: "t", ComputerID: "c1", RaisedAt: base}
	got, created, err := db.RaiseAlertNotify(ctx, a, notes("a1", "ch1", "ch2"))
	checkErr(t, "RaiseAlertNotify", err, nil)
	if !created {
		t.Fatal("RaiseAlertNotify did not create")
	}
	diff(t, "raised alert", got, opened(a))
	wantIDs(t, db, store.NotificationFilter{}, "a1@ch1", "a1@ch2")
	n, err := db.GetNotification(ctx, "a1@ch1")
	checkErr(t, "GetNotification", err, nil)
	checkUTC(t, n)
	diff(t, "enqueued notification", n, store.Notification{
		ID: "a1@ch1", ChannelID: "ch1", Kind: "alert", Status: store.NotificationPending,
		CreatedAt: base, NextAt: base, Payload: `{"id":"a1"}`,
	})

	// Open already: counted, nothing enqueued.
	got, created, err = db.RaiseAlertNotify(ctx, store.Alert{ID: "a2", Type: "t", ComputerID: "c1", RaisedAt: base.Add(time.Minute)}, notes("a2", "ch1"))
	checkErr(t, "RaiseAlertNotify of an open alert", err, nil)
	if created || got.ID != "a1" || got.Occurrences != 2 {
		t.Errorf("RaiseAlertNotify of an open alert = %s (%d occurrences), %v; want a1 (2), false", got.ID, got.Occurrences, created)
	}
	wantIDs(t, db, store.NotificationFilter{}, "a1@ch1", "a1@ch2")

	// A failed raise enqueues nothing: the ID is taken.
	_, _, err = db.RaiseAlertNotify(ctx, store.Alert{ID: "a1", Type: "other", RaisedAt: base}, notes("a1x", "ch1"))
	checkErr(t, "RaiseAlertNotify with a taken ID", err, store.ErrConflict)
	// An invalid notification raises nothing.
	_, _, err = db.RaiseAlertNotify(ctx, store.Alert{ID: "a3", Type: "other", RaisedAt: base}, []store.Notification{{ID: "x", ChannelID: "ch1", Kind: "alert", CreatedAt: base, Payload: "{"}})
	checkErr(t, "RaiseAlertNotify with a bad payload", err, store.ErrInvalid)
	_, err = db.GetAlert(ctx, "a3")
	checkErr(t, "GetAlert of the refused alert", err, store.ErrNotFound)
	wantIDs(t, db, store.NotificationFilter{}, "a1@ch1", "a1@ch2")

	// A notification for an unknown channel is skipped; the alert is raised.
	_, created, err = db.RaiseAlertNotify(ctx, store.Alert{ID: "a4", Type: "other", RaisedAt: base}, notes("a4", "gone", "ch2"))
	checkErr(t, "RaiseAlertNotify to a deleted channel", err, nil)
	if !created {
		t.Error("RaiseAlertNotify to a deleted channel did not create")
	}
	wantIDs(t, db, store.NotificationFilter{}, "a1@ch1", "a1@ch2", "a4@ch2")
}

func testRaiseAlertSuppressed(t *testing.T, db *store.DB) {
	ctx := t.Context()
	createChannel(t, db, "ch1", "mail")
	const window = 10 * time.Minute
	raise := func(id string, at time.Time) (store.Alert, bool) {
		t.Helper()
		a := store.Alert{ID: id, Type: "t", ComputerID: "c1", Subject: "s", RaisedAt: at}
		got, created, err := db.RaiseAlertSuppressed(ctx, a, window, []store.Notification{
			{ID: id + "@ch1", ChannelID: "ch1", Kind: "alert", CreatedAt: at, Payload: "{}"},
		})
		if err != nil {
			t.Fatalf("RaiseAlertSuppressed(%s): %v", id, err)
		}
		return got, created
	}
	if _, created := raise("a1", base); !created {
		t.Fatal("first raise did not create")
	}
	if got, created := raise("a2", base.Add(time.Minute)); created || got.ID != "a1" || got.Occurrences != 2 {
		t.Errorf("raise while open = %s (%d), %v; want a1 (2), false", got.ID, got.Occurrences, created)
	}
	if _, err := db.ClearAlert(ctx, "a1", base.Add(2*time.Minute), "alice"); err != nil {
		t.Fatal(err)
	}
	// Within the window of a1's raising: counted on the cleared a1.
	got, created := raise("a3", base.Add(window-time.Microsecond))
	if created || got.ID != "a1" || got.Occurrences != 3 || got.ClearedAt.IsZero() || !got.LastAt.Equal(base.Add(window-time.Microsecond)) {
		t.Errorf("raise within the window = %+v, %v; want the cleared a1 with 3 occurrences", got, created)
	}
	// At the end of the window: a new alert.
	if got, created := raise("a4", base.Add(window)); !created || got.ID != "a4" {
		t.Errorf("raise after the window = %s, %v; want a4, true", got.ID, created)
	}
	wantIDs(t, db, store.NotificationFilter{}, "a1@ch1", "a4@ch1")
	// Another subject is not suppressed by this one.
	a := store.Alert{ID: "b1", Type: "t", ComputerID: "c1", Subject: "other", RaisedAt: base.Add(time.Minute)}
	if _, created, err := db.RaiseAlertSuppressed(ctx, a, window, nil); err != nil || !created {
		t.Errorf("raise of another subject = %v, %v", created, err)
	}
	_, _, err := db.RaiseAlertSuppressed(ctx, store.Alert{ID: "x", Type: "t", RaisedAt: base}, -time.Second, nil)
	checkErr(t, "RaiseAlertSuppressed with a negative window", err, store.ErrInvalid)
}

func testAckAlert(t *testing.T, db *store.DB) {
	ctx := t.Context()
	for _, a := range []store.Alert{
		{ID: "a1", Type: "t", ComputerID: "c1", RaisedAt: base},
		{ID: "a2", Type: "u", ComputerID: "c1", RaisedAt: base},
	} {
		if _, _, err := db.RaiseAlert(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	at := base.Add(time.Minute)
	got, err := db.AckAlert(ctx, "a1", at, "alice")
	checkErr(t, "AckAlert", err, nil)
	checkUTC(t, got)
	if !got.AckedAt.Equal(at) || got.AckedBy != "alice" || !got.ClearedAt.IsZero() {
		t.Errorf("AckAlert = %+v", got)
	}
	diff(t, "acknowledged alert", getAlert(t, db, "a1"), got)
	_, err = db.AckAlert(ctx, "a1", at, "bob")
	checkErr(t, "second AckAlert", err, store.ErrConflict)
	if got := getAlert(t, db, "a1"); got.AckedBy != "alice" {
		t.Errorf("a second AckAlert changed AckedBy to %q", got.AckedBy)
	}
	// An acknowledged alert still counts occurrences and can be cleared.
	if got, created, err := db.RaiseAlert(ctx, store.Alert{ID: "a3", Type: "t", ComputerID: "c1", RaisedAt: at}); err != nil || created || got.Occurrences != 2 || got.AckedBy != "alice" {
		t.Errorf("RaiseAlert of an acknowledged alert = %+v, %v, %v", got, created, err)
	}
	if _, err := db.ClearAlert(ctx, "a1", at, "bob"); err != nil {
		t.Errorf("ClearAlert of an acknowledged alert: %v", err)
	}
	if _, err := db.ClearAlert(ctx, "a2", at, "bob"); err != nil {
		t.Fatal(err)
	}
	_, err = db.AckAlert(ctx, "a2", at, "alice")
	checkErr(t, "AckAlert of a cleared alert", err, store.ErrConflict)
	_, err = db.AckAlert(ctx, "missing", at, "alice")
	checkErr(t, "AckAlert(missing)", err, store.ErrNotFound)
	_, err = db.AckAlert(ctx, "a1", time.Time{}, "alice")
	checkErr(t, "AckAlert at zero time", err, store.ErrInvalid)
}

func testListAlertFilters(t *testing.T, db *store.DB) {
	ctx := t.Context()
	for _, a := range []store.Alert{
		{ID: "a", Type: "t", ComputerID: "c1", Subject: "s1", RuleID: "r1", RaisedAt: base},
		{ID: "b", Type: "t", ComputerID: "c1", Subject: "s2", RuleID: "r1", RaisedAt: base.Add(time.Minute)},
		{ID: "c", Type: "u", ComputerID: "c2", Subject: "s1", RuleID: "r2", RaisedAt: base.Add(2 * time.Minute)},
		{ID: "d", Type: "computer-offline", ComputerID: "c2", RaisedAt: base.Add(3 * time.Minute)},
	} {
		if _, _, err := db.RaiseAlert(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.AckAlert(ctx, "b", base.Add(time.Hour), "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.AckAlert(ctx, "d", base.Add(time.Hour), "alice"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		f    store.AlertFilter
		want []string
	}{
		{"subject", store.AlertFilter{Subject: "s1"}, []string{"c", "a"}},
		{"rule", store.AlertFilter{RuleID: "r1"}, []string{"b", "a"}},
		{"acknowledged", store.AlertFilter{Acked: ptr(true)}, []string{"d", "b"}},
		{"unacknowledged", store.AlertFilter{Acked: ptr(false)}, []string{"c", "a"}},
		{"combined", store.AlertFilter{RuleID: "r1", Acked: ptr(false), Subject: "s1", ComputerID: "c1"}, []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			as, err := db.ListAlerts(t.Context(), tt.f)
			checkErr(t, "ListAlerts", err, nil)
			var got []string
			for _, a := range as {
				got = append(got, a.ID)
			}
			diff(t, "ListAlerts", got, tt.want)
		})
	}
}

// ---- alert rules and channels ----

func testAlertRules(t *testing.T, db *store.DB) {
	ctx := t.Context()
	r := store.AlertRule{ID: "r1", Name: "SSH brute force", Enabled: true, Severity: store.SeverityCritical,
		Definition: `{"filter":{"type":"auth-failed"},"threshold":5,"window":"1m"}`, Description: "d",
		CreatedAt: base, CreatedBy: "alice"}
	got, err := db.CreateAlertRule(ctx, r)
	checkErr(t, "CreateAlertRule", err, nil)
	checkUTC(t, got)
	want := r
	want.Version, want.UpdatedAt, want.UpdatedBy = 1, base, "alice"
	diff(t, "created rule", got, want)

	_, err = db.CreateAlertRule(ctx, store.AlertRule{ID: "r2", Name: "SSH brute force", CreatedAt: base})
	checkErr(t, "CreateAlertRule(taken name)", err, store.ErrConflict)
	if err != nil && !strings.Contains(err.Error(), `named "SSH brute force"`) {
		t.Errorf("CreateAlertRule(taken name): %v, want the error to name the name", err)
	}
	_, err = db.CreateAlertRule(ctx, store.AlertRule{ID: "r1", Name: "Other", CreatedAt: base})
	checkErr(t, "CreateAlertRule(taken ID)", err, store.ErrConflict)
	for name, bad := range map[string]store.AlertRule{
		"no ID":     {Name: "x", CreatedAt: base},
		"no name":   {ID: "x", Name: " ", CreatedAt: base},
		"bad JSON":  {ID: "x", Name: "x", Definition: "{", CreatedAt: base},
		"zero time": {ID: "x", Name: "x"},
	} {
		_, err := db.CreateAlertRule(ctx, bad)
		checkErr(t, "CreateAlertRule("+name+")", err, store.ErrInvalid)
	}
	r2, err := db.CreateAlertRule(ctx, store.AlertRule{ID: "r2", Name: "Admin login", CreatedAt: base})
	checkErr(t, "CreateAlertRule(r2)", err, nil)
	if r2.Definition != "{}" || r2.Enabled {
		t.Errorf("CreateAlertRule with defaults = %+v, want definition {} and disabled", r2)
	}

	list, err := db.ListAlertRules(ctx)
	checkErr(t, "ListAlertRules", err, nil)
	diff(t, "ListAlertRules", list, []store.AlertRule{r2, want})

	// Conditional update.
	upd := want
	upd.Enabled, upd.Definition, upd.UpdatedAt, upd.UpdatedBy = false, `{"threshold":10}`, base.Add(time.Hour), "bob"
	got, err = db.UpdateAlertRule(ctx, upd, 1)
	checkErr(t, "UpdateAlertRule", err, nil)
	upd.Version = 2
	diff(t, "updated rule", got, upd)
	diff(t, "stored rule", mustGet(t, db.GetAlertRule, "r1"), upd)
	_, err = db.UpdateAlertRule(ctx, upd, 1)
	checkErr(t, "UpdateAlertRule(stale version)", err, store.ErrConflict)
	// Version 0: unconditional. CreatedAt/By of the argument are ignored.
	upd.CreatedAt, upd.CreatedBy = time.Time{}, "mallory"
	got, err = db.UpdateAlertRule(ctx, upd, 0)
	checkErr(t, "UpdateAlertRule(unconditional)", err, nil)
	if got.Version != 3 || !got.CreatedAt.Equal(base) || got.CreatedBy != "alice" {
		t.Errorf("unconditional update = %+v", got)
	}
	upd.Name = "Admin login"
	_, err = db.UpdateAlertRule(ctx, upd, 0)
	checkErr(t, "UpdateAlertRule(taken name)", err, store.ErrConflict)
	_, err = db.UpdateAlertRule(ctx, store.AlertRule{ID: "missing", Name: "m", UpdatedAt: base}, 0)
	checkErr(t, "UpdateAlertRule(missing)", err, store.ErrNotFound)
	_, err = db.UpdateAlertRule(ctx, store.AlertRule{ID: "r1", Name: "m"}, 0)
	checkErr(t, "UpdateAlertRule(zero time)", err, store.ErrInvalid)

	checkErr(t, "DeleteAlertRule", db.DeleteAlertRule(ctx, "r1"), nil)
	checkErr(t, "DeleteAlertRule again", db.DeleteAlertRule(ctx, "r1"), store.ErrNotFound)
	_, err = db.GetAlertRule(ctx, "r1")
	checkErr(t, "GetAlertRule(deleted)", err, store.ErrNotFound)
	// The name is free again.
	_, err = db.CreateAlertRule(ctx, store.AlertRule{ID: "r3", Name: "SSH brute force", CreatedAt: base})
	checkErr(t, "CreateAlertRule(name of a deleted rule)", err, nil)
}

func testChannels(t *testing.T, db *store.DB) {
	ctx := t.Context()
	c := store.Channel{ID: "ch1", Name: "SOC mail", Kind: "smtp", Enabled: true,
		Config: `{"kind":"smtp","smtp":{"host":"mail","password":"secret"}}`, Routes: `[{"source":"alerts"}]`,
		CreatedAt: base, CreatedBy: "alice"}
	got, err := db.CreateChannel(ctx, c)
	checkErr(t, "CreateChannel", err, nil)
	checkUTC(t, got)
	want := c
	want.Version, want.UpdatedAt, want.UpdatedBy = 1, base, "alice"
	diff(t, "created channel", got, want)

	_, err = db.CreateChannel(ctx, store.Channel{ID: "ch2", Name: "SOC mail", Kind: "webhook", CreatedAt: base})
	checkErr(t, "CreateChannel(taken name)", err, store.ErrConflict)
	if err != nil && !strings.Contains(err.Error(), `named "SOC mail"`) {
		t.Errorf("CreateChannel(taken name): %v, want the error to name the name", err)
	}
	for name, bad := range map[string]store.Channel{
		"no kind":    {ID: "x", Name: "x", CreatedAt: base},
		"bad config": {ID: "x", Name: "x", Kind: "k", Config: "nope", CreatedAt: base},
		"bad routes": {ID: "x", Name: "x", Kind: "k", Routes: "[", CreatedAt: base},
	} {
		_, err := db.CreateChannel(ctx, bad)
		checkErr(t, "CreateChannel("+name+")", err, store.ErrInvalid)
	}
	hook, err := db.CreateChannel(ctx, store.Channel{ID: "ch2", Name: "Hook", Kind: "webhook", CreatedAt: base})
	checkErr(t, "CreateChannel(ch2)", err, nil)
	if hook.Config != "{}" || hook.Routes != "[]" {
		t.Errorf("CreateChannel with defaults = %+v", hook)
	}
	list, err := db.ListChannels(ctx)
	checkErr(t, "ListChannels", err, nil)
	diff(t, "ListChannels", list, []store.Channel{hook, want})

	upd := want
	upd.Enabled, upd.Routes, upd.UpdatedAt, upd.UpdatedBy = false, `[]`, base.Add(time.Hour), "bob"
	got, err = db.UpdateChannel(ctx, upd, 1)
	checkErr(t, "UpdateChannel", err, nil)
	upd.Version = 2
	diff(t, "updated channel", got, upd)
	_, err = db.UpdateChannel(ctx, upd, 1)
	checkErr(t, "UpdateChannel(stale version)", err, store.ErrConflict)
	upd.Name = "Hook"
	_, err = db.UpdateChannel(ctx, upd, 2)
	checkErr(t, "UpdateChannel(taken name)", err, store.ErrConflict)

	// Deleting a channel discards what its outbox still holds.
	enqueue(t, db, note("n1", "ch1", base), note("n2", "ch1", base), note("n3", "ch2", base))
	checkErr(t, "DeleteChannel", db.DeleteChannel(ctx, "ch1", base.Add(2*time.Hour), "carol"), nil)
	checkErr(t, "DeleteChannel again", db.DeleteChannel(ctx, "ch1", base.Add(2*time.Hour), "carol"), store.ErrNotFound)
	wantIDs(t, db, store.NotificationFilter{}, "n3")
	ds, err := db.ListDeliveries(ctx, store.DeliveryFilter{ChannelID: "ch1"})
	checkErr(t, "ListDeliveries", err, nil)
	diff(t, "deliveries of a deleted channel", ds, []store.Delivery{
		{ID: "n1", ChannelID: "ch1", Kind: "alert", Status: store.DeliveryDiscarded, CreatedAt: base, FinishedAt: base.Add(2 * time.Hour), FinishedBy: "carol"},
		{ID: "n2", ChannelID: "ch1", Kind: "alert", Status: store.DeliveryDiscarded, CreatedAt: base, FinishedAt: base.Add(2 * time.Hour), FinishedBy: "carol"},
	})
}

// ---- outbox ----

func createChannel(t *testing.T, db *store.DB, id, name string) store.Channel {
	t.Helper()
	c, err := db.CreateChannel(t.Context(), store.Channel{ID: id, Name: name, Kind: "webhook", Enabled: true, CreatedAt: base})
	if err != nil {
		t.Fatalf("CreateChannel(%s): %v", id, err)
	}
	return c
}

func note(id, channel string, at time.Time) store.Notification {
	return store.Notification{ID: id, ChannelID: channel, Kind: "alert", CreatedAt: at, Payload: `{"id":"` + id + `"}`}
}

func enqueue(t *testing.T, db *store.DB, ns ...store.Notification) int {
	t.Helper()
	n, err := db.EnqueueNotifications(t.Context(), ns)
	if err != nil {
		t.Fatalf("EnqueueNotifications: %v", err)
	}
	return n
}

// wantIDs checks the IDs of the notifications f selects, in order.
func wantIDs(t *testing.T, db *store.DB, f store.NotificationFilter, want ...string) {
	t.Helper()
	ns, err := db.ListNotifications(t.Context(), f)
	if err != nil {
		t.Fatalf("ListNotifications: %v", err)
	}
	diff(t, fmt.Sprintf("notifications %+v", f), ids(ns), want)
}

func ids(ns []store.Notification) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.ID)
	}
	return out
}

func mustGet[T any](t *testing.T, get func(ctx context.Context, id string) (T, error), id string) T {
	t.Helper()
	v, err := get(t.Context(), id)
	if err != nil {
		t.Fatalf("get %q: %v", id, err)
	}
	checkUTC(t, v)
	return v
}

func claim(t *testing.T, db *store.DB, owner string, now time.Time, limit int) []string {
	t.Helper()
	ns, err := db.ClaimNotifications(t.Context(), owner, now, time.Minute, limit)
	if err != nil {
		t.Fatalf("ClaimNotifications(%s): %v", owner, err)
	}
	for _, n := range ns {
		checkUTC(t, n)
		if n.LeaseOwner != owner || !n.LeaseUntil.Equal(now.Add(time.Minute)) {
			t.Errorf("claimed %s: lease %q until %v, want %q until %v", n.ID, n.LeaseOwner, n.LeaseUntil, owner, now.Add(time.Minute))
		}
	}
	return ids(ns)
}

func testEnqueueNotifications(t *testing.T, db *store.DB) {
	ctx := t.Context()
	createChannel(t, db, "ch1", "one")
	if n := enqueue(t, db, note("n1", "ch1", base), note("n2", "ch1", base.Add(time.Second)), note("n1", "ch1", base)); n != 2 {
		t.Errorf("EnqueueNotifications = %d, want 2 (n1 twice in a batch)", n)
	}
	// Resent: nothing new. Unknown channel: skipped.
	if n := enqueue(t, db, note("n1", "ch1", base), note("x", "nope", base)); n != 0 {
		t.Errorf("EnqueueNotifications of a resent batch = %d, want 0", n)
	}
	// Delivered, then resent: still nothing new.
	if got := claim(t, db, "d1", base.Add(time.Minute), 10); len(got) != 2 {
		t.Fatalf("claimed %v", got)
	}
	checkErr(t, "CompleteNotification", db.CompleteNotification(ctx, "n1", "d1", base.Add(time.Minute)), nil)
	if n := enqueue(t, db, note("n1", "ch1", base)); n != 0 {
		t.Errorf("EnqueueNotifications of a delivered notification = %d, want 0", n)
	}
	wantIDs(t, db, store.NotificationFilter{}, "n2")
	// NextAt defers the first attempt.
	later := note("n3", "ch1", base)
	later.NextAt = base.Add(time.Hour)
	enqueue(t, db, later)
	if n, err := db.GetNotification(ctx, "n3"); err != nil || !n.NextAt.Equal(base.Add(time.Hour)) {
		t.Errorf("GetNotification(n3) = %+v, %v", n, err)
	}
	for name, bad := range map[string]store.Notification{
		"no ID":      {ChannelID: "ch1", Kind: "alert", CreatedAt: base, Payload: "{}"},
		"no channel": {ID: "x", Kind: "alert", CreatedAt: base, Payload: "{}"},
		"no kind":    {ID: "x", ChannelID: "ch1", CreatedAt: base, Payload: "{}"},
		"no time":    {ID: "x", ChannelID: "ch1", Kind: "alert", Payload: "{}"},
		"no payload": {ID: "x", ChannelID: "ch1", Kind: "alert", CreatedAt: base},
	} {
		_, err := db.EnqueueNotifications(ctx, []store.Notification{note("ok", "ch1", base), bad})
		checkErr(t, "EnqueueNotifications("+name+")", err, store.ErrInvalid)
	}
	_, err := db.GetNotification(ctx, "ok")
	checkErr(t, "GetNotification of a refused batch", err, store.ErrNotFound)
}

func testClaimNotifications(t *testing.T, db *store.DB) {
	ctx := t.Context()
	createChannel(t, db, "a", "a")
	createChannel(t, db, "b", "b")
	off := createChannel(t, db, "off", "off")
	off.Enabled, off.UpdatedAt = false, base
	if _, err := db.UpdateChannel(ctx, off, 0); err != nil {
		t.Fatal(err)
	}
	// Created out of order; ties broken by ID.
	enqueue(t, db,
		note("a3", "a", base.Add(3*time.Second)), note("a1", "a", base.Add(time.Second)), note("a2", "a", base.Add(time.Second)),
		note("a4", "a", base.Add(4*time.Second)),
		note("b1", "b", base.Add(2*time.Second)), note("b2", "b", base.Add(5*time.Second)),
		note("o1", "off", base))
	now := base.Add(10 * time.Second)

	// At most 2 per channel, each channel's in order; none of a disabled
	// channel.
	got := claim(t, db, "d1", now, 2)
	diff(t, "first claim", got, []string{"a1", "a2", "b1", "b2"})
	// The channels are d1's while it holds them, for others and for d1.
	diff(t, "claim by another", claim(t, db, "d2", now, 2), []string(nil))
	diff(t, "claim by the holder", claim(t, db, "d1", now, 2), []string(nil))

	// d1 delivers a1, a2 and b1, and releases b2: a goes on with a3, a4,
	// to whoever claims first; b2 is free.
	for _, id := range []string{"a1", "a2", "b1"} {
		checkErr(t, "CompleteNotification("+id+")", db.CompleteNotification(ctx, id, "d1", now), nil)
	}
	checkErr(t, "ReleaseNotifications", db.ReleaseNotifications(ctx, "d1", []string{"b2"}), nil)
	diff(t, "claim after completing", claim(t, db, "d2", now, 10), []string{"a3", "a4", "b2"})

	// d2 fails a3 for a while: a4 waits behind it, even though it is due.
	checkErr(t, "RetryNotification", db.RetryNotification(ctx, "a3", "d2", now, now.Add(time.Minute), "boom"), nil)
	checkErr(t, "ReleaseNotifications", db.ReleaseNotifications(ctx, "d2", []string{"a4", "b2"}), nil)
	diff(t, "claim during a3's backoff", claim(t, db, "d1", now.Add(30*time.Second), 10), []string{"b2"})
	diff(t, "claim after a3's backoff", claim(t, db, "d1", now.Add(time.Minute), 10), []string{"a3", "a4"})

	// A lease that ran out is taken over; the old holder is refused.
	later := now.Add(3 * time.Minute)
	diff(t, "claim of expired leases", claim(t, db, "d3", later, 1), []string{"a3", "b2"})
	err := db.CompleteNotification(ctx, "a3", "d1", later)
	checkErr(t, "CompleteNotification by the old holder", err, store.ErrConflict)
	checkErr(t, "RetryNotification by the old holder", db.RetryNotification(ctx, "a3", "d1", later, later, "x"), store.ErrConflict)
	checkErr(t, "FailNotification by the old holder", db.FailNotification(ctx, "a3", "d1", later, "x"), store.ErrConflict)
	checkErr(t, "RenewNotification by the old holder", db.RenewNotification(ctx, "a3", "d1", later.Add(time.Hour)), store.ErrConflict)
	// d1's release does not free d3's leases.
	checkErr(t, "ReleaseNotifications by the old holder", db.ReleaseNotifications(ctx, "d1", []string{"a3", "a4"}), nil)
	diff(t, "claim after a stale release", claim(t, db, "d1", later, 10), []string(nil))
	// Renewed, a lease outlives its first term.
	checkErr(t, "RenewNotification", db.RenewNotification(ctx, "a3", "d3", later.Add(5*time.Minute)), nil)
	diff(t, "claim of a renewed lease", claim(t, db, "d1", later.Add(2*time.Minute), 10), []string{"b2"})
	checkErr(t, "RenewNotification(missing)", db.RenewNotification(ctx, "missing", "d3", later), store.ErrNotFound)
	checkErr(t, "CompleteNotification(missing)", db.CompleteNotification(ctx, "missing", "d3", later), store.ErrNotFound)

	// Re-enabled, the disabled channel's backlog goes out.
	off.Enabled, off.UpdatedAt = true, later
	if _, err := db.UpdateChannel(ctx, off, 0); err != nil {
		t.Fatal(err)
	}
	diff(t, "claim of a re-enabled channel", claim(t, db, "d4", later, 10), []string{"o1"})

	for name, call := range map[string]func() error{
		"no owner": func() error { _, err := db.ClaimNotifications(ctx, "", now, time.Minute, 1); return err },
		"no time":  func() error { _, err := db.ClaimNotifications(ctx, "d", time.Time{}, time.Minute, 1); return err },
		"no lease": func() error { _, err := db.ClaimNotifications(ctx, "d", now, 0, 1); return err },
		"no limit": func() error { _, err := db.ClaimNotifications(ctx, "d", now, time.Minute, 0); return err },
	} {
		checkErr(t, "ClaimNotifications("+name+")", call(), store.ErrInvalid)
	}
}

func testNotificationLifecycle(t *testing.T, db *store.DB) {
	ctx := t.Context()
	createChannel(t, db, "ch1", "one")
	createChannel(t, db, "ch2", "two")
	enqueue(t, db, note("n1", "ch1", base), note("n2", "ch1", base.Add(time.Second)), note("m1", "ch2", base))
	t1 := base.Add(time.Minute)
	claim(t, db, "d1", t1, 10)

	// Two failed attempts, then delivered.
	checkErr(t, "RetryNotification", db.RetryNotification(ctx, "n1", "d1", t1, t1.Add(time.Second), "connection refused"), nil)
	n, err := db.GetNotification(ctx, "n1")
	checkErr(t, "GetNotification", err, nil)
	want := store.Notification{ID: "n1", ChannelID: "ch1", Kind: "alert", Status: store.NotificationPending, CreatedAt: base,
		NextAt: t1.Add(time.Second), Attempts: 1, LastError: "connection refused", LastAttemptAt: t1, Payload: `{"id":"n1"}`}
	diff(t, "retried notification", n, want)
	checkErr(t, "ReleaseNotifications", db.ReleaseNotifications(ctx, "d1", []string{"n2"}), nil)
	t2 := t1.Add(time.Second)
	claim(t, db, "d1", t2, 1)
	checkErr(t, "RetryNotification", db.RetryNotification(ctx, "n1", "d1", t2, t2, "timeout"), nil)
	claim(t, db, "d1", t2, 1)
	checkErr(t, "CompleteNotification", db.CompleteNotification(ctx, "n1", "d1", t2.Add(time.Second)), nil)
	_, err = db.GetNotification(ctx, "n1")
	checkErr(t, "GetNotification of a delivered notification", err, store.ErrNotFound)
	checkErr(t, "CompleteNotification again", db.CompleteNotification(ctx, "n1", "d1", t2), store.ErrNotFound)

	// m1 fails for good: it stays, failed, and is recorded.
	checkErr(t, "FailNotification", db.FailNotification(ctx, "m1", "d1", t2, "HTTP 410"), nil)
	n, err = db.GetNotification(ctx, "m1")
	checkErr(t, "GetNotification of a failed notification", err, nil)
	if n.Status != store.NotificationFailed || n.Attempts != 1 || n.LastError != "HTTP 410" || n.LeaseOwner != "" || !n.LeaseUntil.IsZero() {
		t.Errorf("failed notification = %+v", n)
	}
	diff(t, "claim of a failed notification", claim(t, db, "d2", t2.Add(time.Hour), 10), []string{"n2"})
	checkErr(t, "FailNotification again", db.FailNotification(ctx, "m1", "d1", t2, "x"), store.ErrConflict)
	checkErr(t, "RequeueNotification of a pending one", db.RequeueNotification(ctx, "n2", t2), store.ErrConflict)
	checkErr(t, "DiscardNotification of a pending one", db.DiscardNotification(ctx, "n2", t2, "alice"), store.ErrConflict)
	checkErr(t, "RequeueNotification(missing)", db.RequeueNotification(ctx, "missing", t2), store.ErrNotFound)
	checkErr(t, "DiscardNotification(missing)", db.DiscardNotification(ctx, "missing", t2, "alice"), store.ErrNotFound)
	if n := enqueue(t, db, note("m1", "ch2", base)); n != 0 {
		t.Errorf("EnqueueNotifications of a failed notification = %d, want 0", n)
	}

	ds, err := db.ListDeliveries(ctx, store.DeliveryFilter{})
	checkErr(t, "ListDeliveries", err, nil)
	for _, d := range ds {
		checkUTC(t, d)
	}
	delivered := store.Delivery{ID: "n1", ChannelID: "ch1", Kind: "alert", Status: store.DeliveryDelivered, Attempts: 3,
		CreatedAt: base, FinishedAt: t2.Add(time.Second), FinishedBy: "d1", LastError: "timeout"}
	failed := store.Delivery{ID: "m1", ChannelID: "ch2", Kind: "alert", Status: store.DeliveryFailed, Attempts: 1,
		CreatedAt: base, FinishedAt: t2, FinishedBy: "d1", LastError: "HTTP 410"}
	diff(t, "deliveries", ds, []store.Delivery{delivered, failed})

	stats, err := db.OutboxStats(ctx)
	checkErr(t, "OutboxStats", err, nil)
	diff(t, "OutboxStats", stats, map[string]store.OutboxStat{
		"ch1": {Pending: 1, Oldest: base.Add(time.Second)},
		"ch2": {Failed: 1},
	})

	// An administrator retries m1: pending again, attempts kept, no longer
	// in deliveries; it fails again and is discarded.
	t3 := t2.Add(time.Hour)
	checkErr(t, "RequeueNotification", db.RequeueNotification(ctx, "m1", t3), nil)
	n, err = db.GetNotification(ctx, "m1")
	checkErr(t, "GetNotification of a requeued notification", err, nil)
	if n.Status != store.NotificationPending || n.Attempts != 1 || !n.NextAt.Equal(t3) {
		t.Errorf("requeued notification = %+v", n)
	}
	diff(t, "claim before the requeue time", claim(t, db, "d1", t3.Add(-time.Second), 10), []string(nil))
	diff(t, "claim of a requeued notification", claim(t, db, "d1", t3, 10), []string{"m1"})
	checkErr(t, "FailNotification", db.FailNotification(ctx, "m1", "d1", t3, "HTTP 410 again"), nil)
	checkErr(t, "DiscardNotification", db.DiscardNotification(ctx, "m1", t3.Add(time.Minute), "alice"), nil)
	_, err = db.GetNotification(ctx, "m1")
	checkErr(t, "GetNotification of a discarded notification", err, store.ErrNotFound)
	discarded := store.Delivery{ID: "m1", ChannelID: "ch2", Kind: "alert", Status: store.DeliveryDiscarded, Attempts: 2,
		CreatedAt: base, FinishedAt: t3.Add(time.Minute), FinishedBy: "alice", LastError: "HTTP 410 again"}

	tests := []struct {
		name string
		f    store.DeliveryFilter
		want []store.Delivery
	}{
		{"all", store.DeliveryFilter{}, []store.Delivery{discarded, delivered}},
		{"channel", store.DeliveryFilter{ChannelID: "ch1"}, []store.Delivery{delivered}},
		{"status", store.DeliveryFilter{Status: store.DeliveryDiscarded}, []store.Delivery{discarded}},
		{"since", store.DeliveryFilter{Since: t3}, []store.Delivery{discarded}},
		{"limit", store.DeliveryFilter{Limit: 1}, []store.Delivery{discarded}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := db.ListDeliveries(t.Context(), tt.f)
			checkErr(t, "ListDeliveries", err, nil)
			diff(t, "ListDeliveries", got, tt.want)
		})
	}
	wantIDs(t, db, store.NotificationFilter{Status: store.NotificationPending, ChannelID: "ch1", Limit: 5}, "n2")
	wantIDs(t, db, store.NotificationFilter{Status: store.NotificationFailed})

	pruned, err := db.PruneDeliveries(ctx, t3)
	checkErr(t, "PruneDeliveries", err, nil)
	if pruned != 1 {
		t.Errorf("PruneDeliveries = %d, want 1", pruned)
	}
	got, err := db.ListDeliveries(ctx, store.DeliveryFilter{})
	checkErr(t, "ListDeliveries after pruning", err, nil)
	diff(t, "deliveries after pruning", got, []store.Delivery{discarded})

	_, err = db.ListNotifications(ctx, store.NotificationFilter{Limit: -1})
	checkErr(t, "ListNotifications with a negative limit", err, store.ErrInvalid)
	_, err = db.ListDeliveries(ctx, store.DeliveryFilter{Limit: -1})
	checkErr(t, "ListDeliveries with a negative limit", err, store.ErrInvalid)
}

// testClaimRace: dispatchers claiming at once never share a notification,
// nor a channel.
func testClaimRace(t *testing.T, db *store.DB) {
	const channels, perChannel, owners = 4, 30, 8
	var all []store.Notification
	for c := range channels {
		ch := fmt.Sprint("ch", c)
		createChannel(t, db, ch, ch)
		for i := range perChannel {
			all = append(all, note(fmt.Sprintf("%s-%03d", ch, i), ch, base.Add(time.Duration(i)*time.Millisecond)))
		}
	}
	enqueue(t, db, all...)
	now := base.Add(time.Minute)
	var mu sync.Mutex
	claimedBy := map[string]string{}   // notification → owner
	channelOf := map[string][]string{} // channel → owners
	var wg sync.WaitGroup
	for o := range owners {
		owner := fmt.Sprint("d", o)
		wg.Go(func() {
			ns, err := db.ClaimNotifications(t.Context(), owner, now, time.Minute, 5)
			if err != nil {
				t.Errorf("ClaimNotifications(%s): %v", owner, err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, n := range ns {
				if prev, ok := claimedBy[n.ID]; ok {
					t.Errorf("%s claimed by %s and %s", n.ID, prev, owner)
				}
				claimedBy[n.ID] = owner
				if !slices.Contains(channelOf[n.ChannelID], owner) {
					channelOf[n.ChannelID] = append(channelOf[n.ChannelID], owner)
				}
			}
		})
	}
	wg.Wait()
	for ch, os := range channelOf {
		if len(os) != 1 {
			t.Errorf("channel %s claimed by %v, want one dispatcher", ch, os)
		}
	}
	if len(channelOf) != channels {
		t.Errorf("%d channels claimed, want all %d", len(channelOf), channels)
	}
}

// testCompleteNotifications: a run of deliveries is recorded in one call;
// one the caller does not hold is skipped, not recorded.
func testCompleteNotifications(t *testing.T, db *store.DB) {
	ctx := t.Context()
	createChannel(t, db, "ch1", "one")
	enqueue(t, db, note("a1", "ch1", base), note("a2", "ch1", base.Add(time.Second)), note("a3", "ch1", base.Add(2*time.Second)))
	t1 := base.Add(time.Minute)
	// d1 holds a1 and a2, not a3.
	diff(t, "claim", claim(t, db, "d1", t1, 2), []string{"a1", "a2"})
	done, err := db.CompleteNotifications(ctx, []string{"a1", "a2", "a3", "missing"}, "d1", t1.Add(time.Second))
	checkErr(t, "CompleteNotifications", err, nil)
	diff(t, "completed", done, []string{"a1", "a2"})
	for _, id := range []string{"a1", "a2"} {
		_, err := db.GetNotification(ctx, id)
		checkErr(t, "GetNotification of a delivered one", err, store.ErrNotFound)
	}
	if _, err := db.GetNotification(ctx, "a3"); err != nil {
		t.Errorf("a3, not held by d1, left the outbox: %v", err)
	}
	ds, err := db.ListDeliveries(ctx, store.DeliveryFilter{Status: store.DeliveryDelivered})
	checkErr(t, "ListDeliveries", err, nil)
	if len(ds) != 2 || ds[0].FinishedBy != "d1" || ds[0].Attempts != 1 {
		t.Errorf("deliveries %+v, want a1 and a2 by d1 after one attempt", ds)
	}
	if _, err := db.CompleteNotifications(ctx, []string{"a3"}, "d2", time.Time{}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("CompleteNotifications without a time: %v, want ErrInvalid", err)
	}
}
