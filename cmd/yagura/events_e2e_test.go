package main

// End-to-end tests of durable events: no event lost or stored twice across
// manager crashes, agent restarts and days offline.

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/agent"
	"github.com/yagura/yagura/internal/store"
	"github.com/yagura/yagura/internal/store/sqlite"
)

// openStore opens the manager's SQLite store from the test process; WAL
// lets it read while the manager writes.
func openStore(t *testing.T, dataDir string) *store.DB {
	t.Helper()
	db, err := sqlite.Open(t.Context(), filepath.Join(dataDir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// checkTestEvents requires that computer holds exactly the test events
// numbered 0..n-1 except those dropped, each once.
func checkTestEvents(t *testing.T, db *store.DB, computer string, n int, mayDrop bool) (stored int) {
	t.Helper()
	evs, err := db.ListEvents(t.Context(), store.EventFilter{ComputerID: computer, Types: []string{"test"}})
	if err != nil {
		t.Fatal(err)
	}
	seen := make(map[int]bool, len(evs))
	for _, e := range evs {
		var d struct{ N *int }
		if err := json.Unmarshal([]byte(e.Data), &d); err != nil || d.N == nil {
			t.Fatalf("test event %s has data %q", e.ID, e.Data)
		}
		if seen[*d.N] {
			t.Fatalf("computer %s: test event %d stored twice", computer, *d.N)
		}
		if *d.N < 0 || *d.N >= n {
			t.Fatalf("computer %s: test event %d out of range", computer, *d.N)
		}
		seen[*d.N] = true
	}
	if !mayDrop && len(seen) != n {
		var missing []int
		for i := 0; i < n && len(missing) < 10; i++ {
			if !seen[i] {
				missing = append(missing, i)
			}
		}
		t.Fatalf("computer %s: %d of %d test events stored; first missing: %v", computer, len(seen), n, missing)
	}
	return len(seen)
}

func TestEventsSurviveManagerCrashes(t *testing.T) {
	endToEnd(t)
	const agents, each = 5, 20000
	dir := t.TempDir()
	m := startManager(t, dir)
	addr := strings.TrimPrefix(m.url, "https://")
	if _, err := m.ctl(t, "settings", "set", "heartbeat.interval=1s"); err != nil {
		t.Fatal(err)
	}
	tok := m.token(t, "--max-uses", "5")
	ids := make([]string, agents)
	for i := range agents {
		d := t.TempDir()
		if out, err := m.enroll(t, d, tok.Token); err != nil {
			t.Fatalf("enrol: %v\n%s", err, out)
		}
		id, _ := agent.LoadIdentity(d)
		ids[i] = id.AgentID
		startProc(t, fmt.Sprintf("agent%d", i), "agent", "--data-dir", d, "--test-events", fmt.Sprint(each))
	}
	db := openStore(t, dir)
	count := func() int {
		n, err := db.CountEvents(t.Context(), store.EventFilter{Types: []string{"test"}})
		if err != nil {
			t.Logf("count: %v", err)
		}
		return n
	}
	// Kill the manager twice while events flow, without warning.
	for crash := range 2 {
		eventually(t, 30*time.Second, "events flowing", func() (bool, string) {
			n := count()
			return n > (crash+1)*10000, fmt.Sprint(n)
		})
		m.proc.kill()
		t.Logf("manager killed with %d test events stored", count())
		m = startManagerAt(t, dir, addr)
	}
	eventually(t, 120*time.Second, "all test events stored", func() (bool, string) {
		n := count()
		return n >= agents*each, fmt.Sprint(n)
	})
	for _, id := range ids {
		checkTestEvents(t, db, id, each, false)
	}
	if n := count(); n != agents*each {
		t.Fatalf("%d test events stored, want exactly %d", n, agents*each)
	}
	m.proc.stop(t, syscall.SIGTERM)
}

func TestEventsQueuedOffline(t *testing.T) {
	endToEnd(t)
	dir := t.TempDir()
	m := startManager(t, dir)
	addr := strings.TrimPrefix(m.url, "https://")
	if _, err := m.ctl(t, "settings", "set", "heartbeat.interval=1s"); err != nil {
		t.Fatal(err)
	}
	tok := m.token(t, "--max-uses", "2")
	big, small := t.TempDir(), t.TempDir()
	var ids []string
	for _, d := range []string{big, small} {
		if out, err := m.enroll(t, d, tok.Token); err != nil {
			t.Fatalf("enrol: %v\n%s", err, out)
		}
		id, _ := agent.LoadIdentity(d)
		ids = append(ids, id.AgentID)
	}
	m.proc.stop(t, syscall.SIGTERM)

	// The manager is away. One agent queues 50,000 events and is restarted
	// twice; another has a queue too small for its 5,000.
	const many, few = 50000, 5000
	smallArgs := []string{"agent", "--data-dir", small, "--test-events", fmt.Sprint(few), "--queue-max-bytes", "100000"}
	s := startProc(t, "small", smallArgs...)
	for run := range 3 {
		a := startProc(t, fmt.Sprintf("offline-run%d", run), "agent", "--data-dir", big, "--test-events", fmt.Sprint(many))
		time.Sleep(3 * time.Second)
		if run < 2 {
			a.stop(t, syscall.SIGTERM)
		}
	}
	eventually(t, 60*time.Second, "the small agent to fill its queue", func() (bool, string) {
		return strings.Contains(s.out.String(), "test events queued"), ""
	})

	m = startManagerAt(t, dir, addr)
	db := openStore(t, dir)
	eventually(t, 120*time.Second, "50,000 queued events delivered", func() (bool, string) {
		n, _ := db.CountEvents(t.Context(), store.EventFilter{ComputerID: ids[0], Types: []string{"test"}})
		return n >= many, fmt.Sprint(n)
	})
	checkTestEvents(t, db, ids[0], many, false)

	// The small queue dropped its oldest events and said how many.
	var stored, dropped int
	eventually(t, 60*time.Second, "the small agent's drop report", func() (bool, string) {
		stored = checkTestEvents(t, db, ids[1], few, true)
		drops, _ := db.ListEvents(t.Context(), store.EventFilter{ComputerID: ids[1], Types: []string{"events-dropped"}})
		dropped = 0
		for _, e := range drops {
			var d struct{ Count int }
			json.Unmarshal([]byte(e.Data), &d)
			dropped += d.Count
		}
		return dropped > 0 && stored+dropped >= few, fmt.Sprintf("stored %d dropped %d", stored, dropped)
	})
	// Everything is accounted for: the start and stop events of the agent
	// may have been dropped too, so the reports may exceed the test events
	// by those.
	if stored+dropped < few || stored+dropped > few+4 {
		t.Fatalf("small queue: %d stored + %d reported dropped, want %d", stored, dropped, few)
	}
	t.Logf("small queue: %d delivered, %d dropped and reported", stored, dropped)
}
