package storetest

import (
	"database/sql"
	"os"
	"testing"
	"time"

	"github.com/pressly/goose/v3"

	"github.com/yagura/yagura/internal/store"
)

// NotificationsDownUp checks that migration 7 (alert subjects, rules,
// channels, outbox) reverses and applies again on a store with data. db is
// the migrated store, raw a second handle on its database, reopen opens
// the store again (migrating it). The migrations are read from
// ../migrations, relative to the backend's test directory.
func NotificationsDownUp(t *testing.T, db *store.DB, raw *sql.DB, dialect goose.Dialect, reopen func(t *testing.T) *store.DB) {
	ctx := t.Context()
	createChannel(t, db, "ch1", "one")
	enqueue(t, db, note("n1", "ch1", base))
	for _, a := range []store.Alert{
		{ID: "a1", Type: "t", ComputerID: "c1", RaisedAt: base},
		{ID: "a2", Type: "t", ComputerID: "c1", Subject: "s1", RaisedAt: base},
		{ID: "a3", Type: "t", ComputerID: "c1", Subject: "s2", RaisedAt: base},
	} {
		if _, created, err := db.RaiseAlert(ctx, a); err != nil || !created {
			t.Fatalf("RaiseAlert(%s) = %v, %v", a.ID, created, err)
		}
	}
	p, err := goose.NewProvider(dialect, raw, os.DirFS("../migrations"),
		goose.WithDisableGlobalRegistry(true), goose.WithLogger(goose.NopLogger()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.DownTo(ctx, 6); err != nil {
		t.Fatalf("migrate down to 6: %v", err)
	}
	// Only a1 is open: the alerts of a subject were cleared, as the old
	// unique index allows one open alert per type and computer.
	var open int
	if err := raw.QueryRowContext(ctx, "SELECT COUNT(*) FROM alerts WHERE cleared_at IS NULL").Scan(&open); err != nil {
		t.Fatal(err)
	}
	if open != 1 {
		t.Errorf("%d open alerts after migrating down, want 1", open)
	}
	for _, q := range []string{"SELECT subject FROM alerts", "SELECT 1 FROM channels", "SELECT 1 FROM outbox"} {
		if _, err := raw.ExecContext(ctx, q); err == nil {
			t.Errorf("%s succeeded after migrating down", q)
		}
	}
	db = reopen(t)
	a, err := db.GetAlert(ctx, "a1")
	if err != nil || a.Occurrences != 1 || !a.LastAt.Equal(base) {
		t.Errorf("GetAlert(a1) after migrating up again = %+v, %v; want 1 occurrence, last at raising", a, err)
	}
	if _, created, err := db.RaiseAlert(ctx, store.Alert{ID: "a4", Type: "t", ComputerID: "c1", Subject: "s1", RaisedAt: base.Add(time.Hour)}); err != nil || !created {
		t.Errorf("RaiseAlert after migrating up again = %v, %v", created, err)
	}
}
