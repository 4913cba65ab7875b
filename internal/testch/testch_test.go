package testch

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2"
)

func TestMain(m *testing.M) { Main(m) }

// recorder is a testing.TB that records how it was stopped instead of
// stopping.
type recorder struct {
	testing.TB
	skipped, fatal string
}

func (r *recorder) Helper()                        {}
func (r *recorder) Skipf(format string, a ...any)  { r.skipped = fmt.Sprintf(format, a...) }
func (r *recorder) Fatalf(format string, a ...any) { r.fatal = fmt.Sprintf(format, a...) }

// TestMissingServer: without ClickHouse a local run skips and CI fails,
// both saying how to install it; neither is silent.
func TestMissingServer(t *testing.T) {
	t.Setenv(EnvAddr, "")
	t.Setenv("PATH", t.TempDir())
	for _, ci := range []string{"", "true"} {
		t.Run("CI="+ci, func(t *testing.T) {
			t.Setenv("CI", ci)
			r := &recorder{TB: t}
			if db := start(r, "/nonexistent/clickhouse-server"); db != (Database{}) {
				t.Fatalf("start returned %+v", db)
			}
			got, other := r.skipped, r.fatal
			if ci == "true" {
				got, other = r.fatal, r.skipped
			}
			if other != "" || !strings.Contains(got, "apt-get install -y clickhouse-server") {
				t.Errorf("skipped %q, failed %q", r.skipped, r.fatal)
			}
		})
	}
}

// TestStart: each test gets its own empty database, writable, on one shared
// server, and the database is gone when the test ends.
func TestStart(t *testing.T) {
	var first Database
	t.Run("first", func(t *testing.T) {
		first = Start(t)
		conn := connect(t, first)
		var n uint64
		if err := conn.QueryRow(t.Context(), "SELECT count() FROM system.tables WHERE database = ?", first.Name).Scan(&n); err != nil || n != 0 {
			t.Errorf("tables in %s: %d, %v; want an empty database", first.Name, n, err)
		}
		if err := conn.Exec(t.Context(), "CREATE TABLE t (id Int64) ENGINE = MergeTree ORDER BY id"); err != nil {
			t.Fatal(err)
		}
		batch, err := conn.PrepareBatch(t.Context(), "INSERT INTO t (id)")
		if err != nil {
			t.Fatal(err)
		}
		if err := batch.Append(int64(1)); err != nil {
			t.Fatal(err)
		}
		if err := batch.Send(); err != nil {
			t.Fatal(err)
		}
	})
	second := Start(t)
	if second.Addr != first.Addr || second.Name == first.Name {
		t.Errorf("second database %+v, first %+v: want another database on the same server", second, first)
	}
	var n uint64
	if err := connect(t, second).QueryRow(t.Context(), "SELECT count() FROM system.databases WHERE name = ?", first.Name).Scan(&n); err != nil || n != 0 {
		t.Errorf("database %s after its test: %d, %v; want it dropped", first.Name, n, err)
	}
}

// TestRemoveAbandoned: the folders of servers whose test binary is gone are
// removed; live ones and strangers' are kept.
func TestRemoveAbandoned(t *testing.T) {
	tmp := t.TempDir()
	mk := func(name, owner string) string {
		dir := filepath.Join(tmp, name)
		if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
			t.Fatal(err)
		}
		if owner != "" {
			if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(owner), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	// PIDs above pid_max (at most 2^22) do not exist.
	dead := mk("yagura-ch-dead", strconv.Itoa(1<<22+1))
	live := mk("yagura-ch-live", strconv.Itoa(os.Getpid()))
	stranger := mk("yagura-ch-stranger", "")
	other := mk("other", strconv.Itoa(1<<22+1))
	removeAbandoned(tmp)
	for dir, want := range map[string]bool{dead: false, live: true, stranger: true, other: true} {
		if _, err := os.Stat(dir); (err == nil) != want {
			t.Errorf("%s: exists %v, want %v", filepath.Base(dir), err == nil, want)
		}
	}
}

func connect(t *testing.T, db Database) clickhouse.Conn {
	t.Helper()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{db.Addr}, Auth: clickhouse.Auth{Database: db.Name}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	return conn
}
