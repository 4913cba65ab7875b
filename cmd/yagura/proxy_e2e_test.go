package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/agent"
	"github.com/yagura/yagura/internal/api"
)

// endToEnd marks a test that builds and runs the binary: -short skips it,
// except in CI, where nothing may be skipped.
func endToEnd(t *testing.T) {
	t.Helper()
	if testing.Short() {
		if os.Getenv("CI") == "true" {
			t.Fatal("-short would skip the end-to-end tests, which CI must run")
		}
		t.Skip("end-to-end test builds and runs the binary; skipped with -short")
	}
}

// requireTool finds a program the test needs: in CI a missing one is a
// failure (make test installs it), elsewhere a skip that says how to fix it.
func requireTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found: `make test` installs it (apt-get install -y %s)", name, pkg)
	}
	t.Skipf("%s not found; run `make test` or apt-get install -y %s", name, pkg)
	return ""
}

// startTinyproxy runs Debian's tinyproxy on loopback, requiring basic
// authentication, and returns its address and log file.
func startTinyproxy(t *testing.T, user, pass string) (addr, logFile string) {
	t.Helper()
	bin := requireTool(t, "tinyproxy", "tinyproxy")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	// Not t.TempDir(): its parents are private, and tinyproxy running as
	// root drops to "nobody" before it opens its log.
	dir, err := os.MkdirTemp("", "yagura-tinyproxy-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777)
	logFile = filepath.Join(dir, "tinyproxy.log")
	conf := filepath.Join(dir, "tinyproxy.conf")
	cfg := fmt.Sprintf(`Port %s
Listen 127.0.0.1
Timeout 600
MaxClients 50
Allow 127.0.0.1
BasicAuth %s %s
LogFile "%s"
LogLevel Connect
`, port, user, pass, logFile)
	if os.Geteuid() == 0 {
		cfg += "User nobody\nGroup nogroup\n"
	}
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-d", "-c", conf)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logFile)
			t.Logf("---- tinyproxy ----\n%s\n%s", out.String(), b)
		}
	})
	eventually(t, 10*time.Second, "tinyproxy to listen", func() (bool, string) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil, out.String()
	})
	return addr, logFile
}

func TestThroughAuthenticatingProxy(t *testing.T) {
	endToEnd(t)
	proxyAddr, proxyLog := startTinyproxy(t, "yagura", "s3cret")
	m := startManager(t, t.TempDir())
	if _, err := m.ctl(t, "settings", "set", "heartbeat.interval=2s"); err != nil {
		t.Fatal(err)
	}
	tok := m.token(t, "--max-uses", "3")
	good := "http://yagura:s3cret@" + proxyAddr
	bad := "http://yagura:wrong@" + proxyAddr

	t.Run("wrong proxy credentials are refused clearly", func(t *testing.T) {
		out, err := m.enroll(t, t.TempDir(), tok.Token, "--proxy", bad)
		if err == nil || !strings.Contains(out, "proxy refused this agent's credentials") {
			t.Fatalf("got %v: %s", err, out)
		}
		if strings.Contains(out, "wrong") {
			t.Errorf("the proxy password appears in the output: %s", out)
		}
	})

	dir := t.TempDir()
	if out, err := m.enroll(t, dir, tok.Token, "--proxy", good); err != nil {
		t.Fatalf("enrol through the proxy: %v\n%s", err, out)
	}
	id, _ := agent.LoadIdentity(dir)

	t.Run("no fingerprint: the probe goes through the proxy too", func(t *testing.T) {
		out, err := exec.Command(yaguraBin(t), "agent", "enroll", "--manager", m.url, "--token", tok.Token,
			"--proxy", good, "--data-dir", t.TempDir()).CombinedOutput()
		if err == nil || !strings.Contains(string(out), m.fp) {
			t.Fatalf("got %v: %s", err, out)
		}
	})

	a := startProc(t, "agent", "agent", "--data-dir", dir, "--proxy", good)
	eventually(t, 15*time.Second, "the agent online through the proxy", func() (bool, string) {
		return m.computers(t)[id.AgentID].Status == "online", ""
	})
	var j api.Job
	m.mustCtlJSON(t, &j, "jobs", "create", "heartbeat-now", "--computer", id.AgentID)
	eventually(t, 15*time.Second, "the job through the proxy", func() (bool, string) {
		var got api.Job
		m.mustCtlJSON(t, &got, "jobs", "show", j.ID)
		return got.Counts["succeeded"] == 1, fmt.Sprint(got.Counts)
	})
	b, _ := os.ReadFile(proxyLog)
	if !strings.Contains(string(b), "CONNECT") {
		t.Fatalf("the proxy saw no CONNECT; the traffic did not go through it:\n%s", b)
	}
	a.stop(t, syscall.SIGTERM)

	t.Run("an agent with wrong proxy credentials logs it and retries with backoff", func(t *testing.T) {
		w := startProc(t, "agent-wrong-proxy", "agent", "--data-dir", dir, "--proxy", bad)
		eventually(t, 20*time.Second, "two refusals logged", func() (bool, string) {
			return strings.Count(w.out.String(), "proxy refused this agent's credentials") >= 2, w.out.String()
		})
		if !strings.Contains(w.out.String(), "retry_in") {
			t.Errorf("no backoff in the log:\n%s", w.out.String())
		}
		if strings.Contains(w.out.String(), "wrong") {
			t.Errorf("the proxy password appears in the log")
		}
		w.stop(t, syscall.SIGTERM)
	})
}
