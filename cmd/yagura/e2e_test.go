package main

// End-to-end tests: the real binary, as separate processes on loopback — one
// manager and several agents — driven through `yagura ctl` like an
// administrator would.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/agent"
	"github.com/yagura/yagura/internal/api"
	"github.com/yagura/yagura/internal/await"
	"github.com/yagura/yagura/internal/credentials"
	"github.com/yagura/yagura/internal/pki"
	"github.com/yagura/yagura/internal/proto"
	"github.com/yagura/yagura/internal/testdaemon"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// yaguraBin builds the binary once per test run.
func yaguraBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "yagura-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "yagura")
		out, err := exec.Command(goTool(t), "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("build yagura: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// syncBuffer collects a process's output for assertions and failure logs.
type syncBuffer = testdaemon.SyncBuffer

type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	return startCmd(t, name, exec.Command(yaguraBin(t), args...))
}

// startCmd starts a command (yagura, or yagura in a network namespace),
// collects its output and kills it when the test ends.
func startCmd(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{name: name, out: &syncBuffer{}, done: make(chan struct{}), cmd: cmd}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("---- output of %s ----\n%s", name, p.out.String())
		}
	})
	return p
}

// stop sends sig and requires a clean exit within the deadline.
func (p *proc) stop(t *testing.T, sig os.Signal) {
	t.Helper()
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		if p.err != nil {
			t.Errorf("%s did not exit cleanly on %v: %v", p.name, sig, p.err)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("%s did not stop within 20 s of %v", p.name, sig)
	}
}

func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// eventually adapts a (holds, what is seen) condition to await.Cond.
func eventually(t *testing.T, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	await.Cond(t, within, what, func() error {
		if ok, seen := cond(); !ok {
			return errors.New("last seen: " + seen)
		}
		return nil
	})
}

type manager struct {
	proc  *proc
	dir   string
	creds string
	url   string
	fp    string
}

// startManager runs `yagura server` on a free loopback port and waits for
// its credentials file.
func startManager(t *testing.T, dir string) *manager { return startManagerAt(t, dir, "127.0.0.1:0") }

// startManagerAt runs the manager on a given address, so a restarted one is
// where its agents expect it.
func startManagerAt(t *testing.T, dir, listen string) *manager {
	t.Helper()
	return startManagerWith(t, dir, listen)
}

// startManagerWith runs the manager with extra flags (such as --config).
func startManagerWith(t *testing.T, dir, listen string, extra ...string) *manager {
	t.Helper()
	p := startProc(t, "server", append([]string{"server", "--data-dir", dir, "--listen", listen, "--log-format", "json", "--log-level", "debug",
		"--netflow-listen", "127.0.0.1:0", "--ipfix-listen", "127.0.0.1:0", "--sflow-listen", "127.0.0.1:0"}, extra...)...)
	m := &manager{proc: p, dir: dir, creds: filepath.Join(dir, "admin-credentials.json")}
	eventually(t, 30*time.Second, "the manager to listen", func() (bool, string) {
		sc := bufio.NewScanner(strings.NewReader(p.out.String()))
		for sc.Scan() {
			var line struct{ Msg, URL, CAFingerprint string }
			var raw map[string]any
			if json.Unmarshal(sc.Bytes(), &raw) != nil || raw["msg"] != "manager listening" {
				continue
			}
			line.URL, _ = raw["url"].(string)
			line.CAFingerprint, _ = raw["ca_fingerprint"].(string)
			m.url, m.fp = line.URL, line.CAFingerprint
			return fileExists(m.creds), "credentials file missing"
		}
		select {
		case <-p.done:
			t.Fatalf("manager exited: %v", p.err)
		default:
		}
		return false, "no 'manager listening' line yet"
	})
	return m
}

// ctl runs `yagura ctl` with the manager's credentials file.
func (m *manager) ctl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(yaguraBin(t), append([]string{"ctl", "--credentials", m.creds}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("ctl %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

func (m *manager) mustCtlJSON(t *testing.T, out any, args ...string) {
	t.Helper()
	s, err := m.ctl(t, append(args, "-o", "json")...)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(s), out); err != nil {
		t.Fatalf("ctl %v: %v\n%s", args, err, s)
	}
}

func (m *manager) token(t *testing.T, args ...string) api.Token {
	t.Helper()
	var tok api.Token
	m.mustCtlJSON(t, &tok, append([]string{"tokens", "create"}, args...)...)
	if tok.Token == "" {
		t.Fatal("created token has no secret")
	}
	return tok
}

// enroll runs `yagura agent enroll` and returns its combined output.
func (m *manager) enroll(t *testing.T, dir, token string, extra ...string) (string, error) {
	t.Helper()
	args := append([]string{"agent", "enroll", "--manager", m.url, "--token", token, "--ca-fingerprint", m.fp, "--data-dir", dir}, extra...)
	out, err := exec.Command(yaguraBin(t), args...).CombinedOutput()
	return string(out), err
}

func (m *manager) computers(t *testing.T) map[string]api.Computer {
	t.Helper()
	var cs []api.Computer
	m.mustCtlJSON(t, &cs, "computers", "list")
	out := map[string]api.Computer{}
	for _, c := range cs {
		out[c.ID] = c
	}
	return out
}

func (m *manager) alerts(t *testing.T, state string) []api.Alert {
	t.Helper()
	var as []api.Alert
	m.mustCtlJSON(t, &as, "alerts", "list", "--state", state)
	return as
}

func findAlert(as []api.Alert, typ, computer string) *api.Alert {
	for i := range as {
		if as[i].Type == typ && as[i].ComputerID == computer {
			return &as[i]
		}
	}
	return nil
}

func TestEndToEnd(t *testing.T) {
	endToEnd(t)
	m := startManager(t, t.TempDir())
	top := t // processes outlive the subtests that start them
	if _, err := m.ctl(t, "settings", "set", "heartbeat.interval=1s", "heartbeat.offline_after_missed=2", "heartbeat.max_clock_drift=1m"); err != nil {
		t.Fatal(err)
	}
	tok := m.token(t, "--max-uses", "10", "--expires", "1h", "--description", "e2e")

	// Three agents, each its own process.
	dirs := make([]string, 3)
	ids := make([]string, 3)
	agents := make([]*proc, 3)
	for i := range dirs {
		dirs[i] = t.TempDir()
		out, err := m.enroll(t, dirs[i], tok.Token)
		if err != nil {
			t.Fatalf("enrol agent %d: %v\n%s", i, err, out)
		}
		id, err := agent.LoadIdentity(dirs[i])
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id.AgentID
		agents[i] = startProc(t, fmt.Sprintf("agent%d", i), "agent", "--data-dir", dirs[i])
	}
	eventually(t, 15*time.Second, "three agents online", func() (bool, string) {
		cs := m.computers(t)
		state := fmt.Sprint(cs)
		for _, id := range ids {
			if cs[id].Status != "online" {
				return false, state
			}
		}
		return true, ""
	})

	t.Run("re-enrolling is refused without --force", func(t *testing.T) {
		out, err := m.enroll(t, dirs[0], tok.Token)
		if err == nil || !strings.Contains(out, "already enrolled") || !strings.Contains(out, "--force") {
			t.Fatalf("got %v: %s", err, out)
		}
	})

	t.Run("killed agent raises offline, restart clears it", func(t *testing.T) {
		agents[1].kill()
		eventually(t, 15*time.Second, "computer-offline alert", func() (bool, string) {
			a := findAlert(m.alerts(t, "open"), "computer-offline", ids[1])
			return a != nil && m.computers(t)[ids[1]].Status == "offline", fmt.Sprint(m.alerts(t, "all"))
		})
		a := findAlert(m.alerts(t, "open"), "computer-offline", ids[1])
		if a.Severity != "critical" || !strings.Contains(a.Message, "missed") {
			t.Errorf("offline alert: %+v", a)
		}
		agents[1] = startProc(top, "agent1-again", "agent", "--data-dir", dirs[1])
		eventually(t, 15*time.Second, "offline alert cleared", func() (bool, string) {
			all := m.alerts(t, "all")
			c := findAlert(all, "computer-offline", ids[1])
			return c != nil && !c.Open && c.ClearedBy == "system" && m.computers(t)[ids[1]].Status == "online", fmt.Sprint(all)
		})
	})

	t.Run("clock offset raises clock drift", func(t *testing.T) {
		agents[2].stop(t, syscall.SIGTERM)
		agents[2] = startProc(top, "agent2-drift", "agent", "--data-dir", dirs[2], "--test-clock-offset", "10m")
		eventually(t, 15*time.Second, "clock-drift alert", func() (bool, string) {
			as := m.alerts(t, "open")
			return findAlert(as, "clock-drift", ids[2]) != nil, fmt.Sprint(as)
		})
		a := findAlert(m.alerts(t, "open"), "clock-drift", ids[2])
		if _, err := m.ctl(t, "alerts", "clear", a.ID); err != nil {
			t.Fatal(err)
		}
		var cleared []api.Alert
		m.mustCtlJSON(t, &cleared, "alerts", "list", "--state", "cleared", "--type", "clock-drift")
		if c := findAlert(cleared, "clock-drift", ids[2]); c == nil || c.ClearedBy != "admin" || c.ClearedAt == nil {
			t.Fatalf("cleared drift alert: %+v", cleared)
		}
		if _, err := m.ctl(t, "alerts", "clear", a.ID); err == nil || !strings.Contains(err.Error(), "already cleared") {
			t.Errorf("clearing twice: %v", err)
		}
	})

	t.Run("wrong token", func(t *testing.T) {
		out, err := m.enroll(t, t.TempDir(), "yat_nosuchtokenatall")
		if err == nil || !strings.Contains(out, "unknown activation token") {
			t.Fatalf("got %v: %s", err, out)
		}
	})
	t.Run("expired token", func(t *testing.T) {
		exp := m.token(t, "--expires", "1s")
		time.Sleep(1500 * time.Millisecond)
		out, err := m.enroll(t, t.TempDir(), exp.Token)
		if err == nil || !strings.Contains(out, "activation token expired") {
			t.Fatalf("got %v: %s", err, out)
		}
	})
	t.Run("revoked token used again", func(t *testing.T) {
		rev := m.token(t, "--max-uses", "5")
		if out, err := m.enroll(t, t.TempDir(), rev.Token); err != nil {
			t.Fatalf("first use: %v\n%s", err, out)
		}
		if _, err := m.ctl(t, "tokens", "revoke", rev.ID); err != nil {
			t.Fatal(err)
		}
		out, err := m.enroll(t, t.TempDir(), rev.Token)
		if err == nil || !strings.Contains(out, "activation token was revoked") {
			t.Fatalf("got %v: %s", err, out)
		}
	})
	t.Run("token without uses left", func(t *testing.T) {
		one := m.token(t, "--max-uses", "1")
		m.enroll(t, t.TempDir(), one.Token)
		out, err := m.enroll(t, t.TempDir(), one.Token)
		if err == nil || !strings.Contains(out, "no uses left") {
			t.Fatalf("got %v: %s", err, out)
		}
	})
	t.Run("wrong CA fingerprint", func(t *testing.T) {
		other, _ := pki.NewCA("other", time.Now(), time.Hour)
		out, err := exec.Command(yaguraBin(t), "agent", "enroll", "--manager", m.url, "--token", tok.Token,
			"--ca-fingerprint", other.Fingerprint(), "--data-dir", t.TempDir()).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "does not chain to the pinned CA") {
			t.Fatalf("got %v: %s", err, out)
		}
	})
	t.Run("no fingerprint, non-interactive", func(t *testing.T) {
		out, err := exec.Command(yaguraBin(t), "agent", "enroll", "--manager", m.url, "--token", tok.Token,
			"--data-dir", t.TempDir()).CombinedOutput()
		if err == nil || !strings.Contains(string(out), m.fp) || !strings.Contains(string(out), "--accept-fingerprint") {
			t.Fatalf("got %v: %s", err, out)
		}
	})

	host := strings.TrimPrefix(m.url, "https://")
	t.Run("TLS 1.1 client refused", func(t *testing.T) {
		d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}}
		conn, err := d.DialContext(context.Background(), "tcp", host)
		if err == nil {
			conn.Close()
			t.Fatal("TLS 1.1 handshake succeeded")
		}
		if !strings.Contains(err.Error(), "protocol version") {
			t.Errorf("TLS 1.1 refusal: %v (want a protocol version alert)", err)
		}
	})
	t.Run("client certificate from another CA refused", func(t *testing.T) {
		other, _ := pki.NewCA("intruder", time.Now(), time.Hour)
		keyPEM, csrPEM, _ := pki.NewAgentKey("intruder")
		cert, _ := other.SignAgentCSR(csrPEM, ids[0], time.Now(), time.Hour) // even claiming a real agent's ID
		kp, _ := tls.X509KeyPair(pki.CertificatePEM(cert), keyPEM)
		c, err := agent.NewClient(agent.ClientOptions{Manager: m.url, CAFingerprint: m.fp, Cert: &kp})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, err = c.Heartbeat(context.Background(), &proto.Heartbeat{V: 1, ClockMillis: time.Now().UnixMilli()})
		if err == nil || !strings.Contains(err.Error(), "refused this agent's certificate") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("deactivated agent refused", func(t *testing.T) {
		if _, err := m.ctl(t, "computers", "deactivate", ids[0]); err != nil {
			t.Fatal(err)
		}
		id, _ := agent.LoadIdentity(dirs[0])
		cert, _ := id.TLSCertificate()
		c, _ := agent.NewClient(agent.ClientOptions{Manager: m.url, CAFingerprint: m.fp, Cert: cert})
		defer c.Close()
		_, err := c.Heartbeat(context.Background(), &proto.Heartbeat{V: 1, ClockMillis: time.Now().UnixMilli()})
		var pe *agent.ProblemError
		if !errors.As(err, &pe) || pe.Code != proto.CodeAgentDeactivate || pe.Status != 403 {
			t.Fatalf("got %v, want 403 agent-deactivated", err)
		}
		eventually(t, 10*time.Second, "the running agent to report the refusal", func() (bool, string) {
			return strings.Contains(agents[0].out.String(), "deactivated by an administrator"), ""
		})
		if st := m.computers(t)[ids[0]].Status; st != "deactivated" {
			t.Errorf("status %q, want deactivated", st)
		}
	})

	t.Run("every change is in the audit log with its actor", func(t *testing.T) {
		var entries []api.AuditEntry
		m.mustCtlJSON(t, &entries, "audit", "list", "--limit", "1000")
		seen := map[string]int{}
		for _, e := range entries {
			if e.Actor != "user:admin" && !strings.HasPrefix(e.Route, "/oauth/") {
				t.Errorf("entry with actor %q: %+v", e.Actor, e)
			}
			seen[e.Method+" "+e.Route]++
		}
		for _, want := range []string{
			"PATCH /api/v1/settings", "POST /api/v1/activation-tokens",
			"POST /api/v1/activation-tokens/{id}/revoke", "POST /api/v1/alerts/{id}/clear",
			"POST /api/v1/computers/{id}/deactivate", "POST /oauth/token",
		} {
			if seen[want] == 0 {
				t.Errorf("no audit entry for %s (have %v)", want, seen)
			}
		}
		// Tokens made in this test: 5 (e2e, expired, revoked, one-use, ×1).
		if seen["POST /api/v1/activation-tokens"] < 4 {
			t.Errorf("%d token creations audited", seen["POST /api/v1/activation-tokens"])
		}
		csv, err := m.ctl(t, "audit", "export", "--format", "csv")
		if err != nil || !strings.HasPrefix(csv, "id,time,actor,remote,method,route,resource,status,summary") || !strings.Contains(csv, "/api/v1/settings") {
			t.Errorf("CSV export: %v\n%.300s", err, csv)
		}
		for _, secretish := range []string{tok.Token, "yak_"} {
			if strings.Contains(csv, secretish) {
				t.Errorf("the audit log holds a secret (%q)", secretish)
			}
		}
	})

	// Everything stops cleanly.
	for _, a := range agents {
		a.stop(t, syscall.SIGTERM)
	}
	m.proc.stop(t, syscall.SIGTERM)
	if !strings.Contains(m.proc.out.String(), `"manager stopped"`) {
		t.Error("manager did not log a clean stop")
	}
}

func TestDevFirstLook(t *testing.T) {
	endToEnd(t)
	dir := filepath.Join(t.TempDir(), "data")
	run := func() (*proc, *credentials.File) {
		p := startProc(t, "dev", "dev", "--data-dir", dir, "--listen", "127.0.0.1:0",
			"--netflow-listen", "127.0.0.1:0", "--ipfix-listen", "127.0.0.1:0", "--sflow-listen", "127.0.0.1:0")
		eventually(t, 60*time.Second, "yagura dev banner", func() (bool, string) {
			return strings.Contains(p.out.String(), "Local agent"), p.out.String()
		})
		f, err := credentials.Load(filepath.Join(dir, "dev-credentials.json"))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{f.URL, f.CAFingerprint, f.Password} {
			if !strings.Contains(p.out.String(), want) {
				t.Errorf("banner lacks %q", want)
			}
		}
		return p, f
	}
	p, f := run()
	m := &manager{dir: dir, creds: filepath.Join(dir, "dev-credentials.json"), url: f.URL, fp: f.CAFingerprint}
	var localID string
	eventually(t, 15*time.Second, "the local agent online", func() (bool, string) {
		for id, c := range m.computers(t) {
			if c.Status == "online" {
				localID = id
				return true, ""
			}
		}
		return false, fmt.Sprint(m.computers(t))
	})
	p.stop(t, os.Interrupt)

	// A second run reuses the data folder: same CA, same agent, same key,
	// and the agent follows the manager to its new port.
	restarted := time.Now()
	p2, f2 := run()
	if f2.CAFingerprint != f.CAFingerprint || f2.Password != f.Password || f.Password == "" {
		t.Error("second run changed the CA or the admin credential")
	}
	m.url = f2.URL
	eventually(t, 15*time.Second, "the same local agent beating again", func() (bool, string) {
		cs := m.computers(t)
		c := cs[localID]
		return len(cs) == 1 && c.Status == "online" && c.LastSeen != nil && c.LastSeen.After(restarted), fmt.Sprint(cs)
	})
	p2.stop(t, os.Interrupt)
}
