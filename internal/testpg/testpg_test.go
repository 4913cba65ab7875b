package testpg

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// recorder is a testing.TB that records how it was stopped instead of
// stopping.
type recorder struct {
	testing.TB
	skipped, fatal string
}

func (r *recorder) Helper()                        {}
func (r *recorder) Skipf(format string, a ...any)  { r.skipped = fmt.Sprintf(format, a...) }
func (r *recorder) Fatalf(format string, a ...any) { r.fatal = fmt.Sprintf(format, a...) }

// TestMissingBinaries: without PostgreSQL a local run skips and CI fails,
// both saying how to install it; neither is silent.
func TestMissingBinaries(t *testing.T) {
	t.Setenv(EnvDSN, "")
	t.Setenv("PATH", t.TempDir())
	for _, ci := range []string{"", "true"} {
		t.Run("CI="+ci, func(t *testing.T) {
			t.Setenv("CI", ci)
			r := &recorder{TB: t}
			if dsn := start(r, "/nonexistent/*/bin"); dsn != "" {
				t.Fatalf("start returned %q", dsn)
			}
			got, other := r.skipped, r.fatal
			if ci == "true" {
				got, other = r.fatal, r.skipped
			}
			if other != "" || !strings.Contains(got, "apt-get install -y postgresql") {
				t.Errorf("skipped %q, failed %q", r.skipped, r.fatal)
			}
		})
	}
}

func TestWithDatabase(t *testing.T) {
	tests := []struct{ in, want string }{
		{"postgres://u:p@h:5/postgres?sslmode=disable", "postgres://u:p@h:5/x?sslmode=disable"},
		{"postgresql://h", "postgresql://h/x"},
		{"host=h user=u dbname=postgres", "host=h user=u dbname=postgres dbname=x"},
	}
	for _, tt := range tests {
		got := withDatabase(tt.in, "x")
		if got != tt.want {
			t.Errorf("withDatabase(%q) = %q, want %q", tt.in, got, tt.want)
		}
		cfg, err := pgx.ParseConfig(got)
		if err != nil || cfg.Database != "x" {
			t.Errorf("withDatabase(%q) = %q names database %v (%v)", tt.in, got, cfg, err)
		}
	}
}

// TestStart: the database answers, is empty, and is ours to write.
func TestStart(t *testing.T) {
	dsn := Start(t)
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&n); err != nil || n != 0 {
		t.Errorf("public tables: %d, %v; want an empty database", n, err)
	}
	if _, err := conn.Exec(t.Context(), "CREATE TABLE t (id INTEGER)"); err != nil {
		t.Error(err)
	}
}
