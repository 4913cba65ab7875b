package duckdb_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/telemetry"
	"github.com/yagura/yagura/internal/telemetry/duckdb"
	"github.com/yagura/yagura/internal/telemetry/telemetrytest"
)

func open(t *testing.T) telemetry.Store {
	t.Helper()
	s, err := duckdb.Open(t.Context(), filepath.Join(t.TempDir(), "telemetry.duckdb"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) { telemetrytest.Run(t, open) }

// TestResendAfterReopen: a batch resent to a restarted manager (the agent
// never got the acknowledgement) is stored once, whether its events are
// older or newer than what the store holds.
func TestResendAfterReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "telemetry.duckdb")
	now := time.Now().UTC()
	batch := telemetrytest.Events(500, now.Add(-time.Minute), time.Minute, 0)
	s, err := duckdb.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.InsertEvents(t.Context(), batch); err != nil || n != 500 {
		t.Fatalf("first insert: %d, %v", n, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = duckdb.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The resend, plus 100 events newer than anything stored.
	more := append(batch, telemetrytest.Events(100, now.Add(time.Second), time.Second, 500)...)
	if n, err := s.InsertEvents(t.Context(), more); err != nil || n != 100 {
		t.Fatalf("resend after reopen stored %d (err %v), want the 100 new ones", n, err)
	}
	if n, err := s.CountEvents(t.Context(), telemetry.EventQuery{}); err != nil || n != 600 {
		t.Fatalf("count %d (err %v), want 600", n, err)
	}
}
