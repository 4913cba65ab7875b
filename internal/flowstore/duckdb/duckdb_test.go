package duckdb_test

import (
	"path/filepath"
	"testing"

	"github.com/yagura/yagura/internal/flowstore"
	"github.com/yagura/yagura/internal/flowstore/duckdb"
	"github.com/yagura/yagura/internal/flowstore/flowstoretest"
)

func open(t *testing.T) flowstore.Store {
	t.Helper()
	s, err := duckdb.Open(t.Context(), filepath.Join(t.TempDir(), "flows.duckdb"))
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

func TestConformance(t *testing.T) { flowstoretest.Run(t, open) }
