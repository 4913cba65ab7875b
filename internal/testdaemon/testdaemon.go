// Package testdaemon runs private instances of the daemons that
// notifications are delivered to — rsyslogd with TCP, TLS and UDP inputs
// ([StartRsyslog]) and Postfix delivering to Maildirs ([StartPostfix]) — on
// loopback ports, with a throwaway CA ([NewPKI]), and the small helpers
// their tests share. Only tests may import it.
//
// Without a daemon's package a test is skipped with an install hint, except
// under CI=true, where it fails: CI must never pass by not testing (`make
// test-deps` installs them).
package testdaemon

import (
	"bytes"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// RequireFile skips the test when none of paths exists, or fails it under
// CI=true: CI installs every daemon these tests use (make test-deps). pkg
// is the Debian package that provides the file.
func RequireFile(t testing.TB, pkg string, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is missing; CI must run this test: apt-get install %s (make test-deps installs it)", paths[0], pkg)
	}
	t.Skipf("%s is missing; install it to run this test: apt-get install %s", paths[0], pkg)
}

// RequireRoot does the same for tests that start daemons needing root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test starts a daemon that needs root; CI runs as root")
	}
	t.Skip("this test starts a daemon that needs root; run it as root")
}

// FreePort returns a loopback port ("tcp" or "udp") that was free a moment
// ago.
func FreePort(t testing.TB, network string) int {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// WaitFor polls cond every 50 ms until it holds, or fails the test after
// timeout naming what it waited for.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// SyncBuffer is a bytes.Buffer that a process writes while a test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// dialable reports whether a TCP listener accepts on addr.
func dialable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
