package fleet

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/yagura/yagura/internal/proto"
	"github.com/yagura/yagura/internal/settings"
	"github.com/yagura/yagura/internal/store"
)

// memStore is an in-memory Store: the real thing for these tests' purpose.
type memStore struct {
	mu        sync.Mutex
	computers map[string]store.Computer
	alerts    []store.Alert
	presence  int // rows written
	settings  map[string]string
}

func newMemStore(cs ...store.Computer) *memStore {
	m := &memStore{computers: map[string]store.Computer{}, settings: map[string]string{}}
	for _, c := range cs {
		m.computers[c.ID] = c
	}
	return m
}

func (m *memStore) ListComputers(context.Context) ([]store.Computer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []store.Computer
	for _, c := range m.computers {
		out = append(out, c)
	}
	return out, nil
}

func (m *memStore) Settings(context.Context) (map[string]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.settings, nil
}

func (m *memStore) UpdatePresence(_ context.Context, ps []store.Presence) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range ps {
		c, ok := m.computers[p.ID]
		if !ok {
			continue
		}
		c.LastSeen, c.Hostname, c.IPs = p.LastSeen, p.Hostname, p.IPs
		m.computers[p.ID] = c
		m.presence++
	}
	return nil
}

func (m *memStore) RaiseAlert(_ context.Context, a store.Alert) (store.Alert, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, x := range m.alerts {
		if x.Type == a.Type && x.ComputerID == a.ComputerID && x.ClearedAt.IsZero() {
			return x, false, nil
		}
	}
	m.alerts = append(m.alerts, a)
	return a, true, nil
}

func (m *memStore) ClearOpenAlerts(_ context.Context, typ, id string, at time.Time, by string) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for i, x := range m.alerts {
		if x.Type == typ && x.ComputerID == id && x.ClearedAt.IsZero() {
			m.alerts[i].ClearedAt, m.alerts[i].ClearedBy = at, by
			n++
		}
	}
	return n, nil
}

func (m *memStore) ListAlerts(_ context.Context, f store.AlertFilter) ([]store.Alert, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []store.Alert
	for _, x := range m.alerts {
		if f.Open != nil && *f.Open != x.ClearedAt.IsZero() {
			continue
		}
		if len(f.Types) > 0 && !slices.Contains(f.Types, x.Type) {
			continue
		}
		out = append(out, x)
	}
	return out, nil
}

// clearByAdmin clears an alert as an administrator would.
func (m *memStore) clearByAdmin(typ, id string) {
	m.ClearOpenAlerts(context.Background(), typ, id, time.Now(), "admin")
}

func (m *memStore) alertsOf(typ string) (open, cleared int, clearedBy []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, x := range m.alerts {
		if x.Type != typ {
			continue
		}
		if x.ClearedAt.IsZero() {
			open++
		} else {
			cleared++
			clearedBy = append(clearedBy, x.ClearedBy)
		}
	}
	return
}

// full completes test settings with the defaults of the fields a test does
// not care about, so their stored form is valid.
func full(s settings.Settings) settings.Settings {
	d := settings.Default()
	if s.Communication == "" {
		s.Communication = d.Communication
	}
	if s.AgentPort == 0 {
		s.AgentPort = d.AgentPort
	}
	return s
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func beat(clock time.Time) *proto.Heartbeat {
	return &proto.Heartbeat{V: 1, Seq: 1, ClockMillis: clock.UnixMilli(), Inventory: &proto.Inventory{Hostname: "web01", OS: "linux"}}
}

// start runs a fleet of one computer in a synctest bubble.
func start(t *testing.T, s settings.Settings) (*Fleet, *memStore, context.CancelFunc, chan error) {
	t.Helper()
	st := newMemStore(store.Computer{ID: "c1", State: store.ComputerActive, EnrolledAt: time.Now()})
	f, cancel, done := run(t, DefaultConfig(), st, s)
	return f, st, cancel, done
}

// run loads a fleet from st with settings s and runs it; stop ends it.
func run(t *testing.T, cfg Config, st *memStore, s settings.Settings) (*Fleet, context.CancelFunc, chan error) {
	t.Helper()
	s = full(s)
	st.settings = s.Map() // the store is the truth the fleet syncs from
	f := New(cfg, st, s, quiet(), nil)
	if err := f.Load(context.Background(), time.Now()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	return f, cancel, done
}

func stop(t *testing.T, cancel context.CancelFunc, done chan error) {
	t.Helper()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestOfflineAlertRaisedAndCleared(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := settings.Settings{HeartbeatInterval: 10 * time.Second, OfflineAfterMissed: 3}
		f, st, cancel, done := start(t, s)
		defer stop(t, cancel, done)

		// Beating on time: online, no alert.
		for range 5 {
			if _, err := f.Heartbeat("c1", beat(time.Now()), time.Now()); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Second)
		}
		if l, _ := f.Live("c1", time.Now()); l.Status != StatusOnline {
			t.Fatalf("status %s after regular beats, want online", l.Status)
		}
		// Silence. One missed beat is late (warning), not offline.
		time.Sleep(6 * time.Second) // 16 s since the last beat: 1 missed
		if l, _ := f.Live("c1", time.Now()); l.Status != StatusWarning || l.Missed != 1 {
			t.Fatalf("got %s with %d missed, want warning with 1", l.Status, l.Missed)
		}
		time.Sleep(15 * time.Second) // 31 s: 2 missed, still under 3
		if open, _, _ := st.alertsOf(AlertOffline); open != 0 {
			t.Fatal("offline alert raised after 2 missed beats with N=3")
		}
		time.Sleep(10 * time.Second) // 41 s: 3 missed
		synctest.Wait()
		if open, _, _ := st.alertsOf(AlertOffline); open != 1 {
			t.Fatalf("%d open offline alerts after 3 missed beats, want 1", open)
		}
		if l, _ := f.Live("c1", time.Now()); l.Status != StatusOffline {
			t.Fatalf("status %s, want offline", l.Status)
		}
		time.Sleep(time.Minute) // staying offline raises no second alert
		if open, _, _ := st.alertsOf(AlertOffline); open != 1 {
			t.Fatalf("%d open offline alerts, want still 1", open)
		}
		// Back: cleared by the system.
		f.Heartbeat("c1", beat(time.Now()), time.Now())
		time.Sleep(2 * time.Second)
		if open, cleared, by := st.alertsOf(AlertOffline); open != 0 || cleared != 1 || by[0] != ClearedBySystem {
			t.Fatalf("after return: open %d cleared %d by %v", open, cleared, by)
		}
	})
}

func TestUnlimitedNeverAlerts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, st, cancel, done := start(t, settings.Settings{HeartbeatInterval: time.Second, OfflineAfterMissed: 0})
		defer stop(t, cancel, done)
		f.Heartbeat("c1", beat(time.Now()), time.Now())
		time.Sleep(time.Hour)
		if open, _, _ := st.alertsOf(AlertOffline); open != 0 {
			t.Fatal("offline alert with unlimited missed heartbeats")
		}
		// The console still shows the laptop as away.
		if l, _ := f.Live("c1", time.Now()); l.Status != StatusOffline {
			t.Fatalf("status %s, want offline", l.Status)
		}
	})
}

func TestClockDrift(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, st, cancel, done := start(t, settings.Settings{HeartbeatInterval: 10 * time.Second, OfflineAfterMissed: 3, MaxClockDrift: 5 * time.Minute})
		defer stop(t, cancel, done)
		// Within tolerance: nothing.
		f.Heartbeat("c1", beat(time.Now().Add(4*time.Minute)), time.Now())
		time.Sleep(2 * time.Second)
		if open, _, _ := st.alertsOf(AlertClockDrift); open != 0 {
			t.Fatal("alert for a drift under the limit")
		}
		// Beyond: one alert, however many drifting beats follow.
		for range 3 {
			f.Heartbeat("c1", beat(time.Now().Add(-6*time.Minute)), time.Now())
			time.Sleep(10 * time.Second)
		}
		if open, _, _ := st.alertsOf(AlertClockDrift); open != 1 {
			t.Fatalf("%d open drift alerts, want 1", open)
		}
		if l, _ := f.Live("c1", time.Now()); l.Status != StatusWarning {
			t.Fatalf("status %s with an open drift alert, want warning", l.Status)
		}
		// It stays when the clock is fixed: an administrator clears it.
		f.Heartbeat("c1", beat(time.Now()), time.Now())
		time.Sleep(5 * time.Second)
		if open, _, _ := st.alertsOf(AlertClockDrift); open != 1 {
			t.Fatal("drift alert cleared by itself; it must wait for an administrator")
		}
		st.clearByAdmin(AlertClockDrift, "c1")
		time.Sleep(5 * time.Second)
		if open, _, _ := st.alertsOf(AlertClockDrift); open != 0 {
			t.Fatal("cleared drift alert came back without a drifting beat")
		}
		// Drifting again raises a new one.
		f.Heartbeat("c1", beat(time.Now().Add(time.Hour)), time.Now())
		time.Sleep(2 * time.Second)
		if open, cleared, _ := st.alertsOf(AlertClockDrift); open != 1 || cleared != 1 {
			t.Fatalf("open %d cleared %d, want 1 and 1", open, cleared)
		}
	})
}

func TestStartGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// A computer last seen a day ago, when the manager starts, gets a
		// full window to beat before it is called offline.
		st := newMemStore(store.Computer{ID: "c1", State: store.ComputerActive, LastSeen: time.Now().Add(-24 * time.Hour), Hostname: "h"})
		_, cancel, done := run(t, DefaultConfig(), st, settings.Settings{HeartbeatInterval: 10 * time.Second, OfflineAfterMissed: 2})
		defer stop(t, cancel, done)
		time.Sleep(5 * time.Second)
		if open, _, _ := st.alertsOf(AlertOffline); open != 0 {
			t.Fatal("offline alert right after start")
		}
		time.Sleep(30 * time.Second)
		if open, _, _ := st.alertsOf(AlertOffline); open != 1 {
			t.Fatal("no offline alert after the grace window")
		}
	})
}

func TestDeactivated(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, st, cancel, done := start(t, settings.Settings{HeartbeatInterval: time.Second, OfflineAfterMissed: 1})
		defer stop(t, cancel, done)
		time.Sleep(5 * time.Second)
		if open, _, _ := st.alertsOf(AlertOffline); open != 1 {
			t.Fatal("expected an offline alert for a silent computer")
		}
		f.Deactivate("c1")
		if _, err := f.Heartbeat("c1", beat(time.Now()), time.Now()); err != ErrDeactivated {
			t.Fatalf("heartbeat after deactivation: %v, want ErrDeactivated", err)
		}
		time.Sleep(2 * time.Second)
		if open, _, _ := st.alertsOf(AlertOffline); open != 0 {
			t.Fatal("a deactivated computer keeps its offline alert")
		}
		if _, err := f.Heartbeat("nobody", beat(time.Now()), time.Now()); err != ErrUnknown {
			t.Fatalf("unknown agent: %v, want ErrUnknown", err)
		}
	})
}

func TestPresenceFlush(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := Config{FlushEvery: 2 * time.Second, PersistSeenEvery: time.Minute}
		st := newMemStore(store.Computer{ID: "c1", State: store.ComputerActive, EnrolledAt: time.Now()})
		f, cancel, done := run(t, cfg, st, settings.Settings{HeartbeatInterval: time.Second, OfflineAfterMissed: 3})

		// First beat with inventory: written at the next flush.
		f.Heartbeat("c1", beat(time.Now()), time.Now())
		time.Sleep(3 * time.Second)
		st.mu.Lock()
		c, rows := st.computers["c1"], st.presence
		st.mu.Unlock()
		if c.Hostname != "web01" || rows != 1 {
			t.Fatalf("after first flush: hostname %q, %d rows", c.Hostname, rows)
		}
		// Beats without changes within PersistSeenEvery: no writes.
		for range 20 {
			f.Heartbeat("c1", &proto.Heartbeat{V: 1, ClockMillis: time.Now().UnixMilli()}, time.Now())
			time.Sleep(time.Second)
		}
		st.mu.Lock()
		rows = st.presence
		st.mu.Unlock()
		if rows != 1 {
			t.Fatalf("%d presence rows for unchanged beats within a minute, want 1", rows)
		}
		// Shutdown writes the newest last-seen.
		last := time.Now()
		f.Heartbeat("c1", &proto.Heartbeat{V: 1, ClockMillis: last.UnixMilli()}, last)
		stop(t, cancel, done)
		st.mu.Lock()
		defer st.mu.Unlock()
		if got := st.computers["c1"].LastSeen; !got.Equal(last) {
			t.Fatalf("last seen after shutdown %v, want %v", got, last)
		}
	})
}

// TestRestartKeepsOpenAlerts: a manager restarting with an open offline
// alert neither clears it nor calls the silent host online; the alert
// clears when the host beats again.
func TestRestartKeepsOpenAlerts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newMemStore(store.Computer{ID: "c1", State: store.ComputerActive, LastSeen: time.Now().Add(-24 * time.Hour), Hostname: "h"})
		st.alerts = []store.Alert{{ID: "a1", Type: AlertOffline, ComputerID: "c1", RaisedAt: time.Now().Add(-23 * time.Hour)}}
		f, cancel, done := run(t, DefaultConfig(), st, settings.Settings{HeartbeatInterval: 10 * time.Second, OfflineAfterMissed: 2})
		defer stop(t, cancel, done)
		time.Sleep(3 * time.Second)
		if open, cleared, _ := st.alertsOf(AlertOffline); open != 1 || cleared != 0 {
			t.Fatalf("after restart: open %d cleared %d, want the alert kept open", open, cleared)
		}
		if l, _ := f.Live("c1", time.Now()); l.Status != StatusOffline {
			t.Fatalf("status %s right after restart for a host silent for a day, want offline", l.Status)
		}
		time.Sleep(time.Minute)
		if open, _, _ := st.alertsOf(AlertOffline); open != 1 {
			t.Fatalf("%d open alerts, want still the original one", open)
		}
		f.Heartbeat("c1", beat(time.Now()), time.Now())
		time.Sleep(2 * time.Second)
		if open, cleared, _ := st.alertsOf(AlertOffline); open != 0 || cleared != 1 {
			t.Fatalf("after the host returned: open %d cleared %d", open, cleared)
		}
	})
}

// TestSyncFromOtherNodes: settings changed and computers deactivated or
// enrolled through another manager node reach this one.
func TestSyncFromOtherNodes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := settings.Settings{HeartbeatInterval: 10 * time.Second, OfflineAfterMissed: 3}
		f, st, cancel, done := start(t, s)
		defer stop(t, cancel, done)
		st.mu.Lock()
		st.settings = full(settings.Settings{HeartbeatInterval: 30 * time.Second, OfflineAfterMissed: 5}).Map()
		c := st.computers["c1"]
		c.State = store.ComputerDeactivated
		st.computers["c1"] = c
		st.computers["c2"] = store.Computer{ID: "c2", State: store.ComputerActive, EnrolledAt: time.Now()}
		st.mu.Unlock()
		time.Sleep(DefaultConfig().SyncEvery + time.Second)
		if got := f.Settings().HeartbeatInterval; got != 30*time.Second {
			t.Errorf("interval %s, want the other node's 30s", got)
		}
		if _, err := f.Heartbeat("c1", beat(time.Now()), time.Now()); err != ErrDeactivated {
			t.Errorf("c1 deactivated elsewhere: heartbeat %v, want ErrDeactivated", err)
		}
		if _, err := f.Heartbeat("c2", beat(time.Now()), time.Now()); err != nil {
			t.Errorf("c2 enrolled elsewhere: %v", err)
		}
	})
}

func TestPolicyOutOfDate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, st, cancel, done := start(t, settings.Settings{HeartbeatInterval: 10 * time.Second, OfflineAfterMissed: 3})
		defer stop(t, cancel, done)
		withPolicy := func(fp string) *proto.Heartbeat {
			hb := beat(time.Now())
			hb.PolicyFingerprint = fp
			return hb
		}
		f.SetPolicy("c1", "fp-1", nil)
		// Applied promptly: no alert.
		for range 4 {
			f.Heartbeat("c1", withPolicy("fp-1"), time.Now())
			time.Sleep(10 * time.Second)
		}
		f.SetPolicy("c1", "fp-2", nil)
		f.Heartbeat("c1", withPolicy("fp-1"), time.Now())
		time.Sleep(10 * time.Second)
		f.Heartbeat("c1", withPolicy("fp-2"), time.Now())
		time.Sleep(10 * time.Second)
		if open, _, _ := st.alertsOf(AlertPolicyOutOfDate); open != 0 {
			t.Fatal("alert for a policy applied within one interval")
		}
		// Stuck on the old one for three intervals: one warning.
		f.SetPolicy("c1", "fp-3", nil)
		for range 5 {
			f.Heartbeat("c1", withPolicy("fp-2"), time.Now())
			time.Sleep(10 * time.Second)
		}
		synctest.Wait()
		if open, _, _ := st.alertsOf(AlertPolicyOutOfDate); open != 1 {
			t.Fatalf("%d open policy-out-of-date alerts, want 1", open)
		}
		// Applied at last: cleared by the system.
		f.Heartbeat("c1", withPolicy("fp-3"), time.Now())
		time.Sleep(5 * time.Second)
		if open, cleared, by := st.alertsOf(AlertPolicyOutOfDate); open != 0 || cleared != 1 || by[0] != ClearedBySystem {
			t.Fatalf("after applying: open %d cleared %d by %v", open, cleared, by)
		}
	})
}
