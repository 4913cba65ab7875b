package duckdb_test

import (
	"path/filepath"
	"testing"

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
