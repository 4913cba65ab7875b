package sqlite_test

import (
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pressly/goose/v3"

	"github.com/yagura/yagura/internal/store"
	"github.com/yagura/yagura/internal/store/sqlite"
	"github.com/yagura/yagura/internal/store/storetest"
)

func open(tb testing.TB, path string) *store.DB {
	tb.Helper()
	db, err := sqlite.Open(tb.Context(), path)
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
	storetest.Run(t, func(t *testing.T) *store.DB {
		return open(t, filepath.Join(t.TempDir(), "state.db"))
	})
}

// TestFileMode: the store holds the CA's private key, so the database and
// its WAL must be readable by the owner only, and so must a new directory.
func TestFileMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "dir")
	path := filepath.Join(dir, "state.db")
	db := open(t, path)
	// Write something so that the WAL and shared-memory files exist.
	if err := db.SaveCA(t.Context(), store.CA{CertPEM: "c", KeyPEM: "k", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		path string
		want os.FileMode
	}{
		{dir, 0o700 | os.ModeDir},
		{path, 0o600},
		{path + "-wal", 0o600},
		{path + "-shm", 0o600},
	} {
		fi, err := os.Stat(tt.path)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if got := fi.Mode(); got != tt.want {
			t.Errorf("mode of %s = %v, want %v", tt.path, got, tt.want)
		}
	}
}

// TestReopen: opening an already migrated database migrates nothing and
// keeps the data.
func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	ca := store.CA{CertPEM: "c", KeyPEM: "k", CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)}
	if err := db.SaveCA(t.Context(), ca); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		db = open(t, path)
		got, err := db.LoadCA(t.Context())
		if err != nil || !got.CreatedAt.Equal(ca.CreatedAt) || got.CertPEM != ca.CertPEM {
			t.Fatalf("LoadCA after reopening = %+v, %v; want %+v", got, err, ca)
		}
	}
	// Both pools at once, as when a second process opens the file.
	db2 := open(t, path)
	if err := db2.SaveCA(t.Context(), ca); !errors.Is(err, store.ErrConflict) {
		t.Errorf("SaveCA through a second handle: %v, want ErrConflict", err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"", filepath.Join(dir, "a?b.db"), filepath.Join(notDir, "state.db")} {
		if db, err := sqlite.Open(t.Context(), path); err == nil {
			db.Close()
			t.Errorf("Open(%q) succeeded", path)
		}
	}
}

func BenchmarkUpdatePresence(b *testing.B) {
	storetest.BenchUpdatePresence(b, open(b, filepath.Join(b.TempDir(), "state.db")))
}

// TestNewerSchema: a node must refuse a database a newer release has
// migrated past what it knows, rather than run mismatched queries.
func TestNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	open(t, path) // migrate
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.ExecContext(t.Context(), "INSERT INTO goose_db_version (version_id, is_applied) VALUES (99999, 1)"); err != nil {
		t.Fatal(err)
	}
	if db, err := sqlite.Open(t.Context(), path); err == nil {
		db.Close()
		t.Fatal("Open of a database with a newer schema succeeded")
	} else if !strings.Contains(err.Error(), "newer") {
		t.Errorf("Open: %v, want an error saying the schema is newer", err)
	}
}

func TestNotificationsDownUp(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	storetest.NotificationsDownUp(t, open(t, path), raw, goose.DialectSQLite3, func(t *testing.T) *store.DB { return open(t, path) })
}
