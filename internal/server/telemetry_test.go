package server

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/store"
	"github.com/yagura/yagura/internal/store/sqlite"
	"github.com/yagura/yagura/internal/telemetry"
	"github.com/yagura/yagura/internal/telemetry/duckdb"
)

// TestMoveLegacyEvents: events an earlier version kept in the state store
// end up in the telemetry store, each once, and leave the state store —
// also when a first attempt was cut short after some batches.
func TestMoveLegacyEvents(t *testing.T) {
	dir := t.TempDir()
	db, err := sqlite.Open(t.Context(), filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ts, err := duckdb.Open(t.Context(), filepath.Join(dir, "telemetry.duckdb"))
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	const n = 25_000
	now := time.Now().UTC().Truncate(time.Microsecond)
	var evs []store.Event
	for i := range n {
		evs = append(evs, store.Event{ComputerID: fmt.Sprint("c", i%7), ID: fmt.Sprint("e", i), Type: "firewall", Severity: "warning",
			Time: now.Add(-time.Duration(i) * time.Second), ReceivedAt: now, Data: fmt.Sprintf(`{"n":%d}`, i)})
	}
	if _, err := db.InsertEvents(t.Context(), evs); err != nil {
		t.Fatal(err)
	}
	// A first run stored one batch in the telemetry store and died before
	// deleting it from the state store.
	first, err := db.ListOldestEvents(t.Context(), 10_000)
	if err != nil {
		t.Fatal(err)
	}
	var pre []telemetry.Event
	for _, e := range first {
		pre = append(pre, telemetry.Event{ComputerID: e.ComputerID, ID: e.ID, Type: e.Type, Severity: e.Severity, Time: e.Time, ReceivedAt: e.ReceivedAt, Data: e.Data})
	}
	if _, err := ts.InsertEvents(t.Context(), pre); err != nil {
		t.Fatal(err)
	}
	if err := moveLegacyEvents(t.Context(), db, ts, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if got, err := ts.CountEvents(t.Context(), telemetry.EventQuery{}); err != nil || got != n {
		t.Fatalf("telemetry store holds %d events (err %v), want %d", got, err, n)
	}
	if left, err := db.CountEvents(t.Context(), store.EventFilter{}); err != nil || left != 0 {
		t.Fatalf("state store still holds %d events (err %v)", left, err)
	}
	got, err := telemetry.ListEvents(t.Context(), ts, telemetry.EventQuery{ComputerIDs: []string{"c3"}, Limit: 1})
	if err != nil || len(got) != 1 || got[0].Data == "" || !got[0].Time.Equal(now.Add(-3*time.Second)) {
		t.Fatalf("newest event of c3: %+v (err %v)", got, err)
	}
}
