package main

// End-to-end tests of durable events: no event lost or stored twice across
// manager crashes, agent restarts and days offline.

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/agent"
	"github.com/yagura/yagura/internal/api"
	"github.com/yagura/yagura/internal/credentials"
	"github.com/yagura/yagura/internal/ctl"
)

// client signs in to the manager's API as the bootstrap administrator.
func (m *manager) client(t *testing.T) *ctl.Client {
	t.Helper()
	f, err := credentials.Load(m.creds)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ctl.NewClient(ctl.Target{URL: m.url, CAFingerprint: m.fp, User: f.User, Password: f.Password})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// eventQuery selects events over all time (the API's default is a day).
func eventQuery(computer string, types ...string) url.Values {
	q := url.Values{"since": {"2000-01-01T00:00:00Z"}, "until": {time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339)}}
	if computer != "" {
		q.Set("computer", computer)
	}
	for _, typ := range types {
		q.Add("type", typ)
	}
	return q
}

// countEvents counts events through the API; -1 while the manager does not
// answer (it is being restarted).
func (m *manager) countEvents(t *testing.T, c *ctl.Client, q url.Values) int {
	t.Helper()
	var out struct{ Count int }
	if err := c.Do(t.Context(), http.MethodGet, "/api/v1/events/count", q, nil, &out); err != nil {
		t.Logf("count events: %v", err)
		return -1
	}
	return out.Count
}

// events reads every event q selects through the streamed JSON export.
func (m *manager) events(t *testing.T, c *ctl.Client, q url.Values) []api.Event {
	t.Helper()
	q = maps.Clone(q)
	q.Set("format", "json")
	resp, err := c.Stream(t.Context(), "/api/v1/events/export", q)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []api.Event
	dec := json.NewDecoder(resp.Body)
	for {
		var e api.Event
		if err := dec.Decode(&e); err == io.EOF {
			return out
		} else if err != nil {
			t.Fatalf("export: %v", err)
		}
		if e.ID == "" {
			t.Fatalf("export ended with an error line")
		}
		out = append(out, e)
	}
}

// checkTestEvents requires that computer holds exactly the test events
// numbered 0..n-1 except those dropped, each once.
func checkTestEvents(t *testing.T, m *manager, c *ctl.Client, computer string, n int, mayDrop bool) (stored int) {
	t.Helper()
	evs := m.events(t, c, eventQuery(computer, "test"))
	seen := make(map[int]bool, len(evs))
	for _, e := range evs {
		var d struct{ N *int }
		if err := json.Unmarshal(e.Data, &d); err != nil || d.N == nil {
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
	count := func() int { return m.countEvents(t, m.client(t), eventQuery("", "test")) }
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
	c := m.client(t)
	for _, id := range ids {
		checkTestEvents(t, m, c, id, each, false)
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
	c := m.client(t)
	eventually(t, 120*time.Second, "50,000 queued events delivered", func() (bool, string) {
		n := m.countEvents(t, c, eventQuery(ids[0], "test"))
		return n >= many, fmt.Sprint(n)
	})
	checkTestEvents(t, m, c, ids[0], many, false)

	// The small queue dropped its oldest events and said how many.
	var stored, dropped int
	eventually(t, 60*time.Second, "the small agent's drop report", func() (bool, string) {
		stored = checkTestEvents(t, m, c, ids[1], few, true)
		drops := m.events(t, c, eventQuery(ids[1], "events-dropped"))
		dropped = 0
		for _, e := range drops {
			var d struct{ Count int }
			json.Unmarshal(e.Data, &d)
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
