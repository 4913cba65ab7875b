// Package testpg provides throwaway PostgreSQL databases for tests: a fresh
// database on a server named by YAGURA_TEST_POSTGRES_DSN, or else a private
// cluster started from the local PostgreSQL binaries and removed afterwards.
// Only tests may import it.
//
// Without PostgreSQL a test is skipped with a hint, except under CI=true,
// where it fails: CI must never pass by not testing.
package testpg

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// EnvDSN names the environment variable pointing tests at an existing
// server instead of a private cluster. Its user must be allowed to create
// databases.
const EnvDSN = "YAGURA_TEST_POSTGRES_DSN"

const installHint = "install PostgreSQL (`make test` does; or `apt-get install -y postgresql`) or set " + EnvDSN

// Start returns the DSN of an empty database that lives until the test
// ends: on the server named by YAGURA_TEST_POSTGRES_DSN if set, otherwise on
// a new private cluster (about 1–2 s to create). Callers that need many
// databases should Start once and call [NewDatabase] per database.
func Start(tb testing.TB) (dsn string) {
	tb.Helper()
	return start(tb, debianBinaries)
}

// debianBinaries is where Debian's postgresql packages put the server
// binaries, one directory per major version.
const debianBinaries = "/usr/lib/postgresql/*/bin"

func start(tb testing.TB, binGlob string) string {
	tb.Helper()
	if server := os.Getenv(EnvDSN); server != "" {
		return NewDatabase(tb, server)
	}
	initdb, pgctl, err := findBinaries(binGlob)
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("testpg: %v; CI must run the PostgreSQL tests: %s", err, installHint)
		} else {
			tb.Skipf("testpg: skipping PostgreSQL test: %v; %s", err, installHint)
		}
		return "" // not reached with a real testing.TB
	}
	return startCluster(tb, initdb, pgctl)
}

// NewDatabase creates a uniquely named database on the server at
// serverDSN, drops it when the test ends, and returns its DSN.
func NewDatabase(tb testing.TB, serverDSN string) string {
	tb.Helper()
	cfg, err := pgx.ParseConfig(serverDSN)
	if err != nil {
		tb.Fatalf("testpg: parse server DSN: %v", err)
	}
	admin := stdlib.OpenDB(*cfg)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "yagura_test_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close()
		tb.Fatalf("testpg: create database on %s:%d: %v", cfg.Host, cfg.Port, err)
	}
	tb.Cleanup(func() {
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// FORCE: a test that failed may have left connections open.
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("testpg: drop database %s: %v", name, err)
		}
	})
	return withDatabase(serverDSN, name)
}

// withDatabase returns dsn pointing at database name instead.
func withDatabase(dsn, name string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + name
		return u.String()
	}
	// key=value form: a later keyword overrides an earlier one.
	return dsn + " dbname=" + name
}

// findBinaries looks in Debian's versioned directories, newest first, then
// on PATH.
func findBinaries(binGlob string) (initdb, pgctl string, err error) {
	dirs, _ := filepath.Glob(binGlob)
	version := func(dir string) int {
		v, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
		return v
	}
	slices.SortFunc(dirs, func(a, b string) int { return version(b) - version(a) })
	for _, dir := range dirs {
		i, p := filepath.Join(dir, "initdb"), filepath.Join(dir, "pg_ctl")
		if isExecutable(i) && isExecutable(p) {
			return i, p, nil
		}
	}
	initdb, err1 := exec.LookPath("initdb")
	pgctl, err2 := exec.LookPath("pg_ctl")
	if err := errors.Join(err1, err2); err != nil {
		return "", "", fmt.Errorf("PostgreSQL server binaries not found in %s or PATH: %w", binGlob, err)
	}
	return initdb, pgctl, nil
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// cluster is one private PostgreSQL server.
type cluster struct {
	dir    string
	pgctl  string
	asUser *user.User // nil: run as ourselves
}

func startCluster(tb testing.TB, initdb, pgctl string) string {
	tb.Helper()
	// Not t.TempDir(): its parents are 0700, which the postgres user,
	// when we are root, cannot traverse.
	dir, err := os.MkdirTemp(os.TempDir(), "yagura-pg-")
	if err != nil {
		tb.Fatalf("testpg: %v", err)
	}
	c := &cluster{dir: dir, pgctl: pgctl}
	tb.Cleanup(func() {
		c.stop(tb)
		if err := os.RemoveAll(dir); err != nil {
			tb.Errorf("testpg: %v", err)
		}
	})

	// initdb refuses to run as root.
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			tb.Fatalf("testpg: running as root needs a postgres user to run the server as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			tb.Fatalf("testpg: %v", err)
		}
		c.asUser = u
	}

	data := filepath.Join(dir, "data")
	initArgs := []string{"-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"}
	// Production clusters usually default to a linguistic collation such
	// as en_US.UTF-8, under which "B" sorts before "a" is false; so should
	// ours, or tests would pass only under "C". ICU gives one even where no
	// system locale but C is installed; older or ICU-less builds fall back.
	if out, err := c.run(initdb, append(initArgs, "--locale-provider=icu", "--icu-locale=en-US")...); err != nil {
		tb.Logf("testpg: initdb with an ICU collation failed, using the default: %v\n%s", err, out)
		if err := os.RemoveAll(data); err != nil {
			tb.Fatalf("testpg: %v", err)
		}
		if out, err := c.run(initdb, initArgs...); err != nil {
			tb.Fatalf("testpg: initdb: %v\n%s", err, out)
		}
	}

	// The port is free when we pick it but may be taken before the server
	// binds it; try a few.
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			tb.Fatalf("testpg: %v", err)
		}
		opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off", port, dir)
		out, err := c.run(pgctl, "-D", data, "-o", opts, "-w", "-t", "60", "-l", filepath.Join(dir, "log"), "start")
		if err == nil {
			return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
		}
		lastErr = fmt.Errorf("%v\n%s\nserver log:\n%s", err, out, c.logTail())
		c.stop(tb) // in case it half-started
	}
	tb.Fatalf("testpg: pg_ctl start: %v", lastErr)
	return ""
}

// run runs a PostgreSQL binary, as the postgres user when we are root.
func (c *cluster) run(name string, args ...string) ([]byte, error) {
	if c.asUser != nil {
		args = append([]string{"-u", c.asUser.Username, "--", name}, args...)
		name = "runuser"
	}
	cmd := exec.Command(name, args...)
	// The postgres user may not be able to read our working directory.
	cmd.Dir = c.dir
	// With -l, pg_ctl points the server's output at the log file, so the
	// server does not hold the pipe open and this returns.
	return cmd.CombinedOutput()
}

// stop shuts the server down, if it runs, immediately: the data is thrown
// away.
func (c *cluster) stop(tb testing.TB) {
	tb.Helper()
	pid := c.pid()
	if pid <= 0 {
		return
	}
	if out, err := c.run(c.pgctl, "-D", filepath.Join(c.dir, "data"), "-m", "immediate", "-w", "stop"); err != nil {
		// The PID file may be stale and the PID reused: kill only a
		// postgres.
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		tb.Logf("testpg: pg_ctl stop: %v\n%s; killing %d (%s)", err, out, pid, bytes.TrimSpace(comm))
		if string(bytes.TrimSpace(comm)) == "postgres" {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// pid reads the postmaster's PID, 0 if it is not running.
func (c *cluster) pid() int {
	b, err := os.ReadFile(filepath.Join(c.dir, "data", "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}

// logTail returns the end of the server log, where the reason a start
// failed is.
func (c *cluster) logTail() string {
	b, err := os.ReadFile(filepath.Join(c.dir, "log"))
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	const max = 4 << 10
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
