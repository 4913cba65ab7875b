package postgres_test

import (
	"database/sql"
	"errors"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/yagura/yagura/internal/store"
	"github.com/yagura/yagura/internal/store/postgres"
	"github.com/yagura/yagura/internal/store/storetest"
	"github.com/yagura/yagura/internal/testpg"
)

func open(tb testing.TB, dsn string) *store.DB {
	tb.Helper()
	db, err := postgres.Open(tb.Context(), dsn)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := db.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return db
}

func TestConformance(t *testing.T) {
	// One server; a fresh database per subtest.
	server := testpg.Start(t)
	storetest.Run(t, func(t *testing.T) *store.DB {
		return open(t, testpg.NewDatabase(t, server))
	})
}

// TestConcurrentOpen: manager nodes starting together migrate the same
// database; the advisory lock must let each of them through, and reopening
// a migrated database must keep its data.
func TestConcurrentOpen(t *testing.T) {
	dsn := testpg.Start(t)
	const nodes = 4
	dbs := make([]*store.DB, nodes)
	errs := make([]error, nodes)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() { dbs[i], errs[i] = postgres.Open(t.Context(), dsn) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
		t.Cleanup(func() { dbs[i].Close() })
	}
	ca := store.CA{CertPEM: "c", KeyPEM: "k", CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)}
	if err := dbs[0].SaveCA(t.Context(), ca); err != nil {
		t.Fatal(err)
	}
	if err := dbs[1].SaveCA(t.Context(), ca); !errors.Is(err, store.ErrConflict) {
		t.Errorf("SaveCA on a second node: %v, want ErrConflict", err)
	}
	got, err := open(t, dsn).LoadCA(t.Context())
	if err != nil || !got.CreatedAt.Equal(ca.CreatedAt) {
		t.Errorf("LoadCA after reopening = %+v, %v", got, err)
	}
}

func TestOpenErrors(t *testing.T) {
	for _, dsn := range []string{"postgres://%zz", "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=2"} {
		if db, err := postgres.Open(t.Context(), dsn); err == nil {
			db.Close()
			t.Errorf("Open(%q) succeeded", dsn)
		} else {
			t.Logf("Open(%q): %v", dsn, err)
		}
	}
}

func BenchmarkUpdatePresence(b *testing.B) {
	storetest.BenchUpdatePresence(b, open(b, testpg.Start(b)))
}

func TestNotificationsDownUp(t *testing.T) {
	dsn := testpg.Start(t)
	raw, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	storetest.NotificationsDownUp(t, open(t, dsn), raw, goose.DialectPostgres, func(t *testing.T) *store.DB { return open(t, dsn) })
}
