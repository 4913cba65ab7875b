package main

// End-to-end tests of jobs: delivery within seconds, collect-logs with a
// resumed upload, cancellation, no second run after a restart, uninstall.

import (
	"archive/zip"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/agent"
	"github.com/yagura/yagura/internal/api"
)

// forwarder relays TCP from a local port to the manager and can cut every
// connection once, after a given number of bytes went upstream on one.
type forwarder struct {
	ln       net.Listener
	target   string
	cutAfter atomic.Int64 // 0: never
	cuts     atomic.Int32
	mu       sync.Mutex
	conns    []net.Conn
}

func newForwarder(t *testing.T, target string) *forwarder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); f.closeAll() })
	go f.serve()
	return f
}

func (f *forwarder) url() string { return "https://" + f.ln.Addr().String() }

func (f *forwarder) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
}

func (f *forwarder) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", f.target)
		if err != nil {
			c.Close()
			continue
		}
		f.mu.Lock()
		f.conns = append(f.conns, c, u)
		f.mu.Unlock()
		go func() {
			var up int64
			buf := make([]byte, 32<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					up += int64(n)
					if limit := f.cutAfter.Load(); limit > 0 && up > limit && f.cutAfter.CompareAndSwap(limit, 0) {
						f.cuts.Add(1)
						f.closeAll()
						return
					}
					if _, werr := u.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					u.Close()
					return
				}
			}
		}()
		go func() { io.Copy(c, u); c.Close() }()
	}
}

func (m *manager) job(t *testing.T, id string) api.Job {
	t.Helper()
	var j api.Job
	m.mustCtlJSON(t, &j, "jobs", "show", id)
	return j
}

func (m *manager) waitJob(t *testing.T, id string, within time.Duration) api.Job {
	t.Helper()
	var j api.Job
	eventually(t, within, "job "+id+" to finish", func() (bool, string) {
		j = m.job(t, id)
		return finishedTargets(&j) == j.Total, fmt.Sprint(j.Counts, " ", j.Targets)
	})
	return j
}

func finishedTargets(j *api.Job) int {
	return j.Counts["succeeded"] + j.Counts["failed"] + j.Counts["expired"] + j.Counts["cancelled"]
}

func TestJobs(t *testing.T) {
	endToEnd(t)
	m := startManager(t, t.TempDir())
	// A long interval: only the long poll can make delivery fast.
	if _, err := m.ctl(t, "settings", "set", "heartbeat.interval=30s", "heartbeat.offline_after_missed=unlimited"); err != nil {
		t.Fatal(err)
	}
	tok := m.token(t, "--max-uses", "10")
	fwd := newForwarder(t, strings.TrimPrefix(m.url, "https://"))
	enrol := func(manager string) (string, string) {
		dir := t.TempDir()
		out, err := exec.Command(yaguraBin(t), "agent", "enroll", "--manager", manager, "--token", tok.Token,
			"--ca-fingerprint", m.fp, "--data-dir", dir).CombinedOutput()
		if err != nil {
			t.Fatalf("enrol: %v\n%s", err, out)
		}
		id, _ := agent.LoadIdentity(dir)
		return dir, id.AgentID
	}
	dirA, idA := enrol(m.url)
	dirB, idB := enrol(fwd.url()) // through the forwarder that cuts connections
	top := t
	a := startProc(t, "agentA", "agent", "--data-dir", dirA)
	b := startProc(t, "agentB", "agent", "--data-dir", dirB)
	eventually(t, 15*time.Second, "both agents online", func() (bool, string) {
		cs := m.computers(t)
		return cs[idA].Status == "online" && cs[idB].Status == "online", fmt.Sprint(cs)
	})
	time.Sleep(time.Second) // both agents are in their long poll now

	t.Run("heartbeat-now reaches online agents within 2 s", func(t *testing.T) {
		var j api.Job
		m.mustCtlJSON(t, &j, "jobs", "create", "heartbeat-now", "--all")
		j = m.waitJob(t, j.ID, 10*time.Second)
		for _, tg := range j.Targets {
			if tg.Status != "succeeded" || tg.DeliveredAt == nil {
				t.Fatalf("target %+v", tg)
			}
			if d := tg.DeliveredAt.Sub(j.CreatedAt); d > 2*time.Second {
				t.Errorf("delivered to %s after %s (heartbeat interval 30s), want within 2s", tg.ComputerID, d)
			}
		}
		// Each finished job is a system event of its computer.
		c := m.client(t)
		for _, tg := range j.Targets {
			evs := m.events(t, c, eventQuery(tg.ComputerID, "job-succeeded"))
			found := false
			for _, e := range evs {
				found = found || e.ID == "job:"+j.ID
			}
			if !found {
				t.Errorf("no job-succeeded event for job %s on %s: %+v", j.ID, tg.ComputerID, evs)
			}
		}
	})

	t.Run("collect-logs resumes after a cut connection", func(t *testing.T) {
		logs := t.TempDir()
		big := make([]byte, 5<<20) // random: does not compress, so the upload is large
		rand.Read(big)
		os.WriteFile(filepath.Join(logs, "big.log"), big, 0o644)
		os.WriteFile(filepath.Join(logs, "small.log"), []byte("hello\n"), 0o644)
		os.WriteFile(filepath.Join(logs, "skip.txt"), []byte("not matched\n"), 0o644)
		fwd.cutAfter.Store(2 << 20)
		var j api.Job
		m.mustCtlJSON(t, &j, "jobs", "create", "collect-logs", "--computer", idB, "--path", filepath.Join(logs, "*.log"))
		j = m.waitJob(t, j.ID, 60*time.Second)
		tg := j.Targets[0]
		if tg.Status != "succeeded" || tg.FileID == "" {
			t.Fatalf("collect-logs: %+v", tg)
		}
		if fwd.cuts.Load() != 1 {
			t.Fatalf("the connection was cut %d times, want once", fwd.cuts.Load())
		}
		out := filepath.Join(t.TempDir(), "logs.zip")
		if s, err := m.ctl(t, "jobs", "download", tg.FileID, "-O", out); err != nil || !strings.Contains(s, "verified") {
			t.Fatalf("download: %v %s", err, s)
		}
		zr, err := zip.OpenReader(out)
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		got := map[string][]byte{}
		for _, f := range zr.File {
			rc, _ := f.Open()
			got[filepath.Base(f.Name)], _ = io.ReadAll(rc)
			rc.Close()
		}
		if !bytes.Equal(got["big.log"], big) || string(got["small.log"]) != "hello\n" || got["skip.txt"] != nil || len(got) != 2 {
			t.Fatalf("archive holds %d files (big matches: %v)", len(got), bytes.Equal(got["big.log"], big))
		}
		var res struct{ Files int }
		json.Unmarshal(tg.Result, &res)
		if res.Files != 2 {
			t.Errorf("result %s", tg.Result)
		}
	})

	t.Run("a job cancelled before delivery never runs", func(t *testing.T) {
		a.stop(t, syscall.SIGTERM)
		var j api.Job
		m.mustCtlJSON(t, &j, "jobs", "create", "heartbeat-now", "--computer", idA)
		if _, err := m.ctl(t, "jobs", "cancel", j.ID); err != nil {
			t.Fatal(err)
		}
		a = startProc(top, "agentA-again", "agent", "--data-dir", dirA)
		eventually(t, 15*time.Second, "agent A back", func() (bool, string) {
			c := m.computers(t)[idA]
			return c.LastSeen != nil && time.Since(*c.LastSeen) < 5*time.Second, ""
		})
		time.Sleep(time.Second)
		if got := m.job(t, j.ID); got.Targets[0].Status != "cancelled" {
			t.Fatalf("cancelled job: %+v", got.Targets[0])
		}
		if strings.Contains(a.out.String(), j.ID) {
			t.Fatalf("the agent saw the cancelled job:\n%s", a.out.String())
		}
	})

	t.Run("a job is not run twice across an agent restart", func(t *testing.T) {
		logs := t.TempDir()
		big := make([]byte, 40<<20)
		rand.Read(big)
		os.WriteFile(filepath.Join(logs, "huge.log"), big, 0o644)
		var j api.Job
		m.mustCtlJSON(t, &j, "jobs", "create", "collect-logs", "--computer", idA, "--path", filepath.Join(logs, "huge.log"), "--max-bytes", "100000000")
		eventually(t, 10*time.Second, "the job to start", func() (bool, string) {
			return strings.Contains(a.out.String(), "job started") && strings.Contains(a.out.String(), j.ID), ""
		})
		a.kill() // mid-job
		a = startProc(top, "agentA-third", "agent", "--data-dir", dirA)
		j = m.waitJob(t, j.ID, 30*time.Second)
		tg := j.Targets[0]
		if tg.Status != "failed" || !strings.Contains(string(tg.Result), "interrupted") {
			t.Fatalf("after a restart mid-job: %+v %s", tg, tg.Result)
		}
		if strings.Contains(a.out.String(), "job started") {
			t.Fatalf("the restarted agent ran the job again:\n%s", a.out.String())
		}
	})

	t.Run("uninstall", func(t *testing.T) {
		var j api.Job
		m.mustCtlJSON(t, &j, "jobs", "create", "uninstall", "--computer", idB)
		j = m.waitJob(t, j.ID, 15*time.Second)
		if j.Targets[0].Status != "succeeded" {
			t.Fatalf("uninstall: %+v", j.Targets[0])
		}
		select {
		case <-b.done:
			if b.err != nil {
				t.Errorf("agent exited with %v after uninstall, want 0", b.err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("agent still running after uninstall")
		}
		if _, err := agent.LoadIdentity(dirB); err == nil {
			t.Error("identity still on disk after uninstall")
		}
		if _, err := os.Stat(filepath.Join(dirB, "events.db")); err == nil {
			t.Error("event queue still on disk after uninstall")
		}
		if st := m.computers(t)[idB].State; st != "uninstalled" {
			t.Errorf("computer state %q, want uninstalled", st)
		}
	})
	// Agent A sits in its long poll (the interval is 30 s): stopping the
	// manager must end the poll, not wait for it.
	time.Sleep(2 * time.Second)
	start := time.Now()
	m.proc.stop(t, syscall.SIGTERM)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the manager took %s to stop with an agent in its long poll", d.Round(time.Millisecond))
	}
	a.stop(t, syscall.SIGTERM)
}
