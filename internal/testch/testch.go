// Package testch provides throwaway ClickHouse databases for tests: a fresh
// database on the server named by YAGURA_TEST_CLICKHOUSE_ADDR, or else on a
// private server started from the local clickhouse-server binary, once per
// test binary, and stopped when the tests end. Only tests may import it.
//
// Without ClickHouse a test is skipped with a hint, except under CI=true,
// where it fails: CI must never pass by not testing.
//
// A package whose tests use it should stop the private server after its
// tests:
//
//	func TestMain(m *testing.M) { testch.Main(m) }
//
// Without that the server still dies with the test binary (it gets SIGKILL
// when its parent exits), and the next run removes its folder.
package testch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// EnvAddr names the environment variable pointing tests at an existing
// server ("host:port" of its native protocol) instead of a private one. Its
// default user, without a password, must be allowed to create databases.
const EnvAddr = "YAGURA_TEST_CLICKHOUSE_ADDR"

const installHint = "install ClickHouse (`make test` does; or `apt-get install -y clickhouse-server`) or set " + EnvAddr

// debianServer is where Debian's clickhouse-server package puts the server.
const debianServer = "/usr/sbin/clickhouse-server"

// Database is an empty database on a ClickHouse server, reachable with the
// native protocol as the default user without a password.
type Database struct {
	Addr string // host:port
	Name string
}

// Start returns an empty database that is dropped when the test ends: on
// the server named by YAGURA_TEST_CLICKHOUSE_ADDR if set, otherwise on this
// test binary's private server, which the first call starts (about 0.5 s).
func Start(tb testing.TB) Database {
	tb.Helper()
	return start(tb, debianServer)
}

// Main runs the tests, then stops the private server if one was started.
// Call it from TestMain; the test binary exits with the tests' result.
func Main(m *testing.M) {
	m.Run()
	if shared.srv != nil {
		if err := shared.srv.close(); err != nil {
			fmt.Fprintf(os.Stderr, "testch: %v\n", err)
		}
	}
}

// shared is the test binary's private server. It is package state because
// starting a server per test would cost more than most tests; it lives until
// Main stops it or the process ends.
var shared struct {
	once sync.Once
	srv  *server
	err  error
}

func start(tb testing.TB, serverBinary string) Database {
	tb.Helper()
	if addr := os.Getenv(EnvAddr); addr != "" {
		return NewDatabase(tb, addr)
	}
	bin, err := findServer(serverBinary)
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("testch: %v; CI must run the ClickHouse tests: %s", err, installHint)
		} else {
			tb.Skipf("testch: skipping ClickHouse test: %v; %s", err, installHint)
		}
		return Database{} // not reached with a real testing.TB
	}
	shared.once.Do(func() { shared.srv, shared.err = startServer(bin) })
	if shared.err != nil {
		tb.Fatalf("testch: %v", shared.err)
	}
	return NewDatabase(tb, shared.srv.addr)
}

// NewDatabase creates a uniquely named database on the server at addr,
// drops it when the test ends, and returns it.
func NewDatabase(tb testing.TB, addr string) Database {
	tb.Helper()
	admin, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}, DialTimeout: 10 * time.Second})
	if err != nil {
		tb.Fatalf("testch: connect to %s: %v", addr, err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "test_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close()
		tb.Fatalf("testch: create database on %s: %v", addr, err)
	}
	tb.Cleanup(func() {
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name); err != nil {
			tb.Errorf("testch: drop database %s: %v", name, err)
		}
	})
	return Database{Addr: addr, Name: name}
}

// findServer looks where Debian puts the server, then on PATH (where
// ClickHouse's own packages link clickhouse-server to the clickhouse
// binary).
func findServer(debian string) (string, error) {
	if fi, err := os.Stat(debian); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return debian, nil
	}
	p, err := exec.LookPath("clickhouse-server")
	if err != nil {
		return "", fmt.Errorf("clickhouse-server not found at %s or in PATH: %w", debian, err)
	}
	return p, nil
}

// server is one private ClickHouse server.
type server struct {
	dir    string
	addr   string
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
}

// ownerFile, in a server's folder, holds the PID of the test binary that
// started it, so that a later run can remove the folders of binaries that
// exited without stopping their server.
const ownerFile = "owner.pid"

func startServer(bin string) (*server, error) {
	removeAbandoned(os.TempDir())
	dir, err := os.MkdirTemp(os.TempDir(), "yagura-ch-")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		return nil, errors.Join(err, os.RemoveAll(dir))
	}
	// The port is free when we pick it but may be taken before the server
	// binds it; try a few.
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			return nil, errors.Join(err, os.RemoveAll(dir))
		}
		s := &server{dir: dir, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
		if err := s.start(bin, port); err != nil {
			lastErr = err
			s.kill()
			continue
		}
		return s, nil
	}
	return nil, errors.Join(fmt.Errorf("start %s: %w", bin, lastErr), os.RemoveAll(dir))
}

func (s *server) start(bin string, port int) error {
	for _, d := range []string{"data", "tmp", "user_files", "format_schemas", "log"} {
		if err := os.MkdirAll(filepath.Join(s.dir, d), 0o700); err != nil {
			return err
		}
	}
	// A failed attempt's log would explain nothing about this one.
	for _, f := range []string{"log/server.log", "log/server.err.log", "log/stdout.log"} {
		_ = os.Remove(filepath.Join(s.dir, f))
	}
	if err := os.WriteFile(filepath.Join(s.dir, "users.xml"), []byte(usersXML), 0o600); err != nil {
		return err
	}
	config := filepath.Join(s.dir, "config.xml")
	if err := os.WriteFile(config, []byte(configXML(s.dir, port)), 0o600); err != nil {
		return err
	}
	out, err := os.Create(filepath.Join(s.dir, "log", "stdout.log"))
	if err != nil {
		return err
	}
	defer out.Close()

	s.cmd = exec.Command(bin, "--config-file="+config)
	s.cmd.Dir = s.dir
	s.cmd.Stdout, s.cmd.Stderr = out, out
	// The server dies with the test binary even when Main does not stop
	// it. Pdeathsig fires when the thread that started the child exits, so
	// start it from a thread that lives as long as the process.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	s.exited = make(chan struct{})
	go func() {
		// Never unlocked: the thread ends with this goroutine, after the
		// server.
		runtime.LockOSThread()
		defer close(s.exited)
		if err := s.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = s.cmd.Wait()
	}()
	if err := <-started; err != nil {
		return err
	}
	return s.waitReady(60 * time.Second)
}

// waitReady waits until the server answers a query, fails, or timeout
// passes.
func (s *server) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("server exited: %v\n%s", s.cmd.ProcessState, s.logTail())
		default:
		}
		if lastErr = s.ping(); lastErr == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("server did not answer on %s within %s: %v\n%s", s.addr, timeout, lastErr, s.logTail())
}

func (s *server) ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{s.addr}, DialTimeout: time.Second})
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Ping(ctx)
}

// close kills the server and removes its folder.
func (s *server) close() error {
	s.kill()
	return os.RemoveAll(s.dir)
}

// kill stops the server, if it runs, at once: the data is thrown away, so
// there is nothing to shut down cleanly.
func (s *server) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.exited:
	default:
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// logTail returns the end of the server's logs, where the reason a start
// failed is.
func (s *server) logTail() string {
	var b strings.Builder
	for _, f := range []string{"log/stdout.log", "log/server.err.log"} {
		data, err := os.ReadFile(filepath.Join(s.dir, f))
		if err != nil {
			continue
		}
		const max = 4 << 10
		if len(data) > max {
			data = data[len(data)-max:]
		}
		fmt.Fprintf(&b, "%s:\n%s\n", f, data)
	}
	if b.Len() == 0 {
		return "(no server log)"
	}
	return b.String()
}

// removeAbandoned removes the folders of private servers whose test binary
// has exited (killed, or without calling Main).
func removeAbandoned(tmp string) {
	dirs, _ := filepath.Glob(filepath.Join(tmp, "yagura-ch-*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue // not ours, or being created
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = os.RemoveAll(dir)
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// configXML is the server's configuration: everything under dir, the
// native protocol only, on 127.0.0.1:port, with caches sized for tests.
// Times are UTC so that what the server prints matches what tests expect.
func configXML(dir string, port int) string {
	return `<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <log>` + filepath.Join(dir, "log", "server.log") + `</log>
    <errorlog>` + filepath.Join(dir, "log", "server.err.log") + `</errorlog>
    <size>10M</size>
    <count>1</count>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>` + strconv.Itoa(port) + `</tcp_port>
  <path>` + filepath.Join(dir, "data") + `/</path>
  <tmp_path>` + filepath.Join(dir, "tmp") + `/</tmp_path>
  <user_files_path>` + filepath.Join(dir, "user_files") + `/</user_files_path>
  <format_schema_path>` + filepath.Join(dir, "format_schemas") + `/</format_schema_path>
  <users_config>` + filepath.Join(dir, "users.xml") + `</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
`
}

// usersXML lets the default user in from this host only, without a
// password.
const usersXML = `<?xml version="1.0"?>
<yandex>
  <profiles>
    <default>
      <max_memory_usage>4000000000</max_memory_usage>
    </default>
  </profiles>
  <users>
    <default>
      <password></password>
      <networks>
        <ip>127.0.0.1</ip>
        <ip>::1</ip>
      </networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas>
    <default>
      <interval>
        <duration>3600</duration>
        <queries>0</queries>
        <errors>0</errors>
        <result_rows>0</result_rows>
        <read_rows>0</read_rows>
        <execution_time>0</execution_time>
      </interval>
    </default>
  </quotas>
</yandex>
`
