package duckdb_test

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/yagura/yagura/internal/flowstore"
	"github.com/yagura/yagura/internal/flowstore/duckdb"
	"github.com/yagura/yagura/internal/flowstore/flowstoretest"
)

func open(t *testing.T) *duckdb.Store {
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

// compacting compacts the spool after every every-th insert, so that
// queries read flows from the day tables alone (every 1) or from tables
// and spool files together (every 2).
type compacting struct {
	*duckdb.Store
	every, n int64
	calls    atomic.Int64
}

func (c *compacting) InsertFlows(ctx context.Context, flows []flowstore.Record) error {
	if err := c.Store.InsertFlows(ctx, flows); err != nil {
		return err
	}
	if c.calls.Add(1)%c.every == 0 {
		return c.Compact(ctx)
	}
	return nil
}

// TestConformance runs the suite on flows in the spool (the compactor
// waits a minute), in the day tables, and split between the two.
func TestConformance(t *testing.T) {
	t.Run("spool", func(t *testing.T) {
		flowstoretest.Run(t, func(t *testing.T) flowstore.Store { return open(t) })
	})
	t.Run("tables", func(t *testing.T) {
		flowstoretest.Run(t, func(t *testing.T) flowstore.Store { return &compacting{Store: open(t), every: 1} })
	})
	t.Run("both", func(t *testing.T) {
		flowstoretest.Run(t, func(t *testing.T) flowstore.Store { return &compacting{Store: open(t), every: 2} })
	})
}
