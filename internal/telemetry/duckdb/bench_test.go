package duckdb_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/yagura/yagura/internal/telemetry/duckdb"
	"github.com/yagura/yagura/internal/telemetry/telemetrytest"
)

func benchStore(b *testing.B) *duckdb.Store {
	s, err := duckdb.Open(b.Context(), filepath.Join(b.TempDir(), "telemetry.duckdb"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// BenchmarkInsertEvents is sustained ingest straight into the store, in the
// batch size the manager's group commit produces.
func BenchmarkInsertEvents(b *testing.B) {
	for _, size := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			telemetrytest.BenchInsert(b, benchStore(b), size)
		})
	}
}

// BenchmarkTopEventTypes10M is the "top event types over 24 h" query over
// ten million events.
func BenchmarkTopEventTypes10M(b *testing.B) {
	telemetrytest.BenchTopTypes(b, benchStore(b), 10_000_000)
}
