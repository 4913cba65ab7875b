package outbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/yagura/yagura/internal/outbox"
	"github.com/yagura/yagura/internal/store"
	"github.com/yagura/yagura/internal/store/sqlite"
)

// fakeNet is the receivers of every channel: it records what each got, in
// order, and can be told to refuse, or to be slow.
type fakeNet struct {
	mu      sync.Mutex
	down    map[string]bool          // channel ID → refusing everything
	refuse  map[string]error         // notification ID → refused with this error
	slow    map[string]time.Duration // channel ID → each send takes this long
	got     map[string][]string      // channel ID → notification IDs received, in order
	sends   map[string]int           // notification ID → Send calls
	active  map[string]int           // channel ID → sends in progress
	overlap []string                 // channels that had two sends at once
	dials   map[string]int           // channel ID → senders made
	closes  map[string]int           // channel ID → senders closed
	configs map[string][]string      // channel ID → configuration of each sender made
}

func newNet() *fakeNet {
	return &fakeNet{
		down: map[string]bool{}, refuse: map[string]error{}, slow: map[string]time.Duration{},
		got: map[string][]string{}, sends: map[string]int{}, active: map[string]int{},
		dials: map[string]int{}, closes: map[string]int{}, configs: map[string][]string{},
	}
}

func (f *fakeNet) dial(ch store.Channel) (outbox.Sender, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dials[ch.ID]++
	f.configs[ch.ID] = append(f.configs[ch.ID], ch.Config)
	return &fakeSender{net: f, channel: ch.ID}, nil
}

func (f *fakeNet) setDown(ch string, down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down[ch] = down
}

type fakeSender struct {
	net     *fakeNet
	channel string
	closed  bool
}

func (s *fakeSender) Send(ctx context.Context, payload []byte) error {
	f := s.net
	var m struct{ ID string }
	if err := json.Unmarshal(payload, &m); err != nil {
		return err
	}
	f.mu.Lock()
	if s.closed {
		f.mu.Unlock()
		return errors.New("send on a closed sender")
	}
	f.sends[m.ID]++
	f.active[s.channel]++
	if f.active[s.channel] > 1 {
		f.overlap = append(f.overlap, s.channel)
	}
	slow := f.slow[s.channel]
	f.mu.Unlock()
	if slow > 0 {
		select {
		case <-time.After(slow):
		case <-ctx.Done():
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.active[s.channel]--
	switch {
	case f.down[s.channel]:
		return errors.New("connection refused")
	case f.refuse[m.ID] != nil:
		return f.refuse[m.ID]
	case ctx.Err() != nil:
		return ctx.Err()
	}
	f.got[s.channel] = append(f.got[s.channel], m.ID)
	return nil
}

func (s *fakeSender) Close() error {
	s.net.mu.Lock()
	defer s.net.mu.Unlock()
	s.closed = true
	s.net.closes[s.channel]++
	return nil
}

// received returns a copy of what a channel received.
func (f *fakeNet) received(ch string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.got[ch])
}

// sent says how often a notification was sent.
func (f *fakeNet) sent(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sends[id]
}

// overlapping returns the channels that had two sends at once.
func (f *fakeNet) overlapping() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.overlap)
}

// permanent is an error retrying cannot help with.
type permanent struct{ msg string }

func (e permanent) Error() string   { return e.msg }
func (e permanent) Permanent() bool { return true }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// openStore opens a store in a temporary directory; inside a bubble, so
// that the pool's goroutines belong to it.
func openStore(t *testing.T) *store.DB {
	t.Helper()
	db, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func addChannel(t *testing.T, db *store.DB, id string) store.Channel {
	t.Helper()
	ch, err := db.CreateChannel(t.Context(), store.Channel{ID: id, Name: id, Kind: "webhook", Enabled: true,
		Config: `{"url":"https://` + id + `.example"}`, CreatedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// enqueue adds n notifications to a channel, named ch-000, ch-001, …,
// created a millisecond apart up to now, and returns their IDs.
func enqueue(t *testing.T, db *store.DB, ch string, n int) []string {
	t.Helper()
	var ids []string
	var ns []store.Notification
	now := time.Now()
	for i := range n {
		id := fmt.Sprintf("%s-%03d", ch, i)
		ids = append(ids, id)
		ns = append(ns, store.Notification{ID: id, ChannelID: ch, Kind: "alert", CreatedAt: now.Add(time.Duration(i-n+1) * time.Millisecond),
			Payload: `{"id":"` + id + `"}`})
	}
	if _, err := db.EnqueueNotifications(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	return ids
}

type running struct {
	d      *outbox.Dispatcher
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, db *store.DB, net *fakeNet, cfg outbox.Config) *running {
	t.Helper()
	reg := prometheus.NewRegistry()
	d, err := outbox.New(cfg, db, net.dial, quiet(), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{d: d, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- d.Run(ctx) }()
	return r
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	if err := <-r.done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// counter sums a counter over its channels.
func (r *running) counter(t *testing.T, name string) int {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return int(sum)
}

// waitFor advances the bubble's clock until cond holds, failing after max.
// The clock must move even for work that needs no waiting: SQLite sleeps
// briefly (on the bubble's clock) when connections contend, so
// synctest.Wait alone may return before such work is done.
func waitFor(t *testing.T, max time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(max)
	step := max / 200
	if step < 10*time.Millisecond {
		step = 10 * time.Millisecond
	}
	for {
		synctest.Wait()
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, max)
		}
		time.Sleep(step)
	}
}

// soon bounds work that should take no time but the store's own.
const soon = 500 * time.Millisecond

func receivedAll(net *fakeNet, ch string, want []string) func() bool {
	return func() bool { return len(net.received(ch)) >= len(want) }
}

func outboxEmpty(t *testing.T, db *store.DB) func() bool {
	return func() bool {
		ns, err := db.ListNotifications(t.Context(), store.NotificationFilter{Status: store.NotificationPending})
		if err != nil {
			t.Fatal(err)
		}
		return len(ns) == 0
	}
}

func config() outbox.Config {
	cfg := outbox.DefaultConfig()
	cfg.Batch = 7 // smaller than the backlogs, so batches follow each other
	return cfg
}

// TestOutage: a channel that is down holds only its own notifications,
// retried head first with growing delays; once it is back everything
// pending goes out at once, in order, each exactly once.
func TestOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := openStore(t)
		net := newNet()
		addChannel(t, db, "up")
		addChannel(t, db, "down")
		net.setDown("down", true)
		wantUp := enqueue(t, db, "up", 20)
		wantDown := enqueue(t, db, "down", 20)
		cfg := config()
		cfg.MaxDelay = 30 * time.Second
		r := start(t, db, net, cfg)
		defer r.stop(t)
		r.d.Wake()
		waitFor(t, soon, "healthy channel served", receivedAll(net, "up", wantUp))
		if d := cmp.Diff(net.received("up"), wantUp); d != "" {
			t.Errorf("healthy channel (-got +want):\n%s", d)
		}

		// Three minutes down: only the oldest is tried, ever less often.
		time.Sleep(3 * time.Minute)
		head, others := net.sent("down-000"), 0
		for _, id := range wantDown[1:] {
			others += net.sent(id)
		}
		// Delays of 1, 2, 4, 8, 16 s, then 30 s, each less up to half.
		if head < 8 || head > 20 || others != 0 {
			t.Errorf("while down: %d attempts at the oldest and %d at the others; want 8–20 and 0", head, others)
		}
		n, err := db.GetNotification(t.Context(), "down-000")
		if err != nil {
			t.Fatal(err)
		}
		if n.Attempts != head || n.LastError != "connection refused" || n.NextAt.Sub(time.Now()) > cfg.MaxDelay {
			t.Errorf("head while down = %+v", n)
		}

		// Back: by the head's next attempt (and a poll), all of it.
		net.setDown("down", false)
		time.Sleep(n.NextAt.Sub(time.Now()))
		waitFor(t, cfg.PollInterval+soon, "channel back served", receivedAll(net, "down", wantDown))
		if d := cmp.Diff(net.received("down"), wantDown); d != "" {
			t.Errorf("channel back (-got +want):\n%s", d)
		}
		if !outboxEmpty(t, db)() {
			t.Error("outbox not empty")
		}
		for _, id := range append(wantUp, wantDown[1:]...) {
			if n := net.sent(id); n != 1 {
				t.Errorf("%s sent %d times", id, n)
			}
		}
		if got := r.counter(t, "yagura_notifications_delivered_total"); got != 40 {
			t.Errorf("delivered counter = %d, want 40", got)
		}
		if got := r.counter(t, "yagura_notifications_retried_total"); got != head {
			t.Errorf("retried counter = %d, want %d", got, head)
		}
		ds, err := db.ListDeliveries(t.Context(), store.DeliveryFilter{ChannelID: "down", Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != 20 {
			t.Errorf("%d deliveries of the channel that was down, want 20", len(ds))
		}
		for _, d := range ds {
			if want := map[bool]int{true: head + 1, false: 1}[d.ID == "down-000"]; d.Status != store.DeliveryDelivered || d.Attempts != want {
				t.Errorf("delivery %+v, want delivered after %d attempts", d, want)
			}
		}
		if o := net.overlapping(); len(o) > 0 {
			t.Errorf("concurrent sends to %v", o)
		}
	})
}

// TestGiveUp: notifications that still fail after GiveUpAfter are left in
// the outbox as failed, visible, and do not hold up those behind them; a
// permanent error fails at once.
func TestGiveUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := openStore(t)
		net := newNet()
		addChannel(t, db, "dead")
		addChannel(t, db, "picky")
		net.setDown("dead", true)
		dead := enqueue(t, db, "dead", 3)
		enqueue(t, db, "picky", 3)
		net.refuse["picky-001"] = fmt.Errorf("HTTP 400: %w", permanent{"bad request"})
		cfg := config()
		cfg.GiveUpAfter = time.Minute
		r := start(t, db, net, cfg)
		defer r.stop(t)
		r.d.Wake()
		waitFor(t, soon, "picky channel served", func() bool { return len(net.received("picky")) == 2 })
		if d := cmp.Diff(net.received("picky"), []string{"picky-000", "picky-002"}); d != "" {
			t.Errorf("channel with a refused message (-got +want):\n%s", d)
		}
		if n := net.sent("picky-001"); n != 1 {
			t.Errorf("permanently refused notification sent %d times, want 1", n)
		}

		waitFor(t, 3*time.Minute, "dead channel's notifications given up", outboxEmpty(t, db))
		failed, err := db.ListNotifications(t.Context(), store.NotificationFilter{Status: store.NotificationFailed})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, n := range failed {
			ids = append(ids, n.ID)
			if n.ChannelID == "dead" && (n.LastError != "connection refused" || n.Attempts < 1) {
				t.Errorf("failed notification %+v", n)
			}
		}
		slices.Sort(ids)
		if d := cmp.Diff(ids, append(dead, "picky-001")); d != "" {
			t.Errorf("failed notifications (-got +want):\n%s", d)
		}
		ds, err := db.ListDeliveries(t.Context(), store.DeliveryFilter{Status: store.DeliveryFailed})
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != 4 {
			t.Errorf("%d failed deliveries recorded, want 4", len(ds))
		}
		if got := r.counter(t, "yagura_notifications_failed_total"); got != 4 {
			t.Errorf("failed counter = %d, want 4", got)
		}
	})
}

// TestSlowChannel: a receiver that takes its time delays only its own
// channel.
func TestSlowChannel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := openStore(t)
		net := newNet()
		addChannel(t, db, "slow")
		addChannel(t, db, "fast")
		net.slow["slow"] = 10 * time.Second
		slow := enqueue(t, db, "slow", 5)
		fast := enqueue(t, db, "fast", 5)
		r := start(t, db, net, config())
		defer r.stop(t)
		r.d.Wake()
		waitFor(t, soon, "fast channel served", receivedAll(net, "fast", fast))
		if d := cmp.Diff(net.received("fast"), fast); d != "" {
			t.Errorf("fast channel (-got +want):\n%s", d)
		}
		if got := net.received("slow"); len(got) != 0 {
			t.Errorf("slow channel got %v at once", got)
		}
		waitFor(t, time.Minute, "slow channel served", func() bool { return len(net.received("slow")) == 5 })
		if d := cmp.Diff(net.received("slow"), slow); d != "" {
			t.Errorf("slow channel (-got +want):\n%s", d)
		}
	})
}

// TestWake: enqueued work goes out on Wake, without waiting for a poll.
func TestWake(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := openStore(t)
		net := newNet()
		addChannel(t, db, "ch")
		cfg := config()
		cfg.PollInterval = time.Hour
		r := start(t, db, net, cfg)
		defer r.stop(t)
		time.Sleep(time.Second) // Run has found the outbox empty
		want := enqueue(t, db, "ch", 3)
		r.d.Wake()
		waitFor(t, soon, "delivered after Wake", receivedAll(net, "ch", want))
		if d := cmp.Diff(net.received("ch"), want); d != "" {
			t.Errorf("after Wake (-got +want):\n%s", d)
		}
	})
}

// TestTwoDispatchers: two nodes on one store, with flaky receivers, deliver
// every notification exactly once, each channel's in order and one at a
// time.
func TestTwoDispatchers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := openStore(t)
		net := newNet()
		want := map[string][]string{}
		for c := range 5 {
			ch := fmt.Sprint("ch", c)
			addChannel(t, db, ch)
			want[ch] = enqueue(t, db, ch, 30)
			net.slow[ch] = time.Duration(c) * 100 * time.Millisecond
		}
		// Every channel is down for a while, at different times.
		flapped := make(chan struct{})
		defer func() { <-flapped }()
		go func() {
			defer close(flapped)
			for c := range 5 {
				ch := fmt.Sprint("ch", c)
				time.Sleep(time.Duration(c) * 700 * time.Millisecond)
				net.setDown(ch, true)
				time.Sleep(3 * time.Second)
				net.setDown(ch, false)
			}
		}()
		cfg := config()
		cfg.Owner = "node-1"
		r1 := start(t, db, net, cfg)
		defer r1.stop(t)
		cfg.Owner = "node-2"
		r2 := start(t, db, net, cfg)
		defer r2.stop(t)
		r1.d.Wake()
		r2.d.Wake()
		waitFor(t, 10*time.Minute, "everything delivered", outboxEmpty(t, db))
		for ch, ids := range want {
			if d := cmp.Diff(net.received(ch), ids); d != "" {
				t.Errorf("channel %s (-got +want):\n%s", ch, d)
			}
		}
		if o := net.overlapping(); len(o) > 0 {
			t.Errorf("concurrent sends to %v", o)
		}
		d1 := r1.counter(t, "yagura_notifications_delivered_total")
		d2 := r2.counter(t, "yagura_notifications_delivered_total")
		if d1+d2 != 150 {
			t.Errorf("delivered by node 1: %d, node 2: %d; want 150 together", d1, d2)
		}
		t.Logf("delivered by node 1: %d, node 2: %d", d1, d2)
	})
}

// TestRestart: a dispatcher stopped mid-way finishes the send in progress
// and gives back the rest, which the next one delivers at once; nothing is
// lost or sent twice.
func TestRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := openStore(t)
		net := newNet()
		addChannel(t, db, "ch")
		net.slow["ch"] = time.Second
		want := enqueue(t, db, "ch", 10)
		cfg := config()
		cfg.Owner = "first"
		r := start(t, db, net, cfg)
		r.d.Wake()
		time.Sleep(3500 * time.Millisecond) // three sent, the fourth in progress
		r.stop(t)
		if got := net.received("ch"); len(got) != 4 {
			t.Errorf("first dispatcher delivered %v, want the first 4 (the one in progress finishes)", got)
		}
		ns, err := db.ListNotifications(t.Context(), store.NotificationFilter{})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range ns {
			if n.LeaseOwner != "" {
				t.Errorf("%s still leased to %q after a clean stop", n.ID, n.LeaseOwner)
			}
		}
		if net.dials["ch"] != net.closes["ch"] {
			t.Errorf("%d senders made, %d closed", net.dials["ch"], net.closes["ch"])
		}

		cfg.Owner, cfg.PollInterval = "second", time.Hour
		r = start(t, db, net, cfg)
		defer r.stop(t)
		r.d.Wake()
		waitFor(t, time.Minute, "the rest delivered", outboxEmpty(t, db))
		if d := cmp.Diff(net.received("ch"), want); d != "" {
			t.Errorf("after the restart (-got +want):\n%s", d)
		}
	})
}

// TestCrashTakeover: what a node that died had claimed is delivered by
// another once the lease runs out.
func TestCrashTakeover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := openStore(t)
		net := newNet()
		addChannel(t, db, "ch")
		want := enqueue(t, db, "ch", 5)
		cfg := config()
		claimed, err := db.ClaimNotifications(t.Context(), "dead-node", time.Now(), cfg.Lease, 3)
		if err != nil || len(claimed) != 3 {
			t.Fatalf("ClaimNotifications = %d, %v", len(claimed), err)
		}
		r := start(t, db, net, cfg)
		defer r.stop(t)
		r.d.Wake()
		time.Sleep(cfg.Lease / 2)
		if got := net.received("ch"); len(got) != 0 {
			t.Errorf("delivered %v while another node held the channel", got)
		}
		waitFor(t, cfg.Lease+2*cfg.PollInterval, "taken over", outboxEmpty(t, db))
		if d := cmp.Diff(net.received("ch"), want); d != "" {
			t.Errorf("after the takeover (-got +want):\n%s", d)
		}
	})
}

// TestRedial: a changed channel gets a new sender with its new
// configuration; senders are closed when replaced and on shutdown.
func TestRedial(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := openStore(t)
		net := newNet()
		ch := addChannel(t, db, "ch")
		r := start(t, db, net, config())
		enqueue(t, db, "ch", 1)
		r.d.Wake()
		waitFor(t, soon, "first delivered", func() bool { return len(net.received("ch")) == 1 })
		ch.Config, ch.UpdatedAt = `{"url":"https://new.example"}`, time.Now()
		if _, err := db.UpdateChannel(t.Context(), ch, ch.Version); err != nil {
			t.Fatal(err)
		}
		if _, err := db.EnqueueNotifications(t.Context(), []store.Notification{
			{ID: "later", ChannelID: "ch", Kind: "alert", CreatedAt: time.Now(), Payload: `{"id":"later"}`},
		}); err != nil {
			t.Fatal(err)
		}
		r.d.Wake()
		waitFor(t, soon, "second delivered", func() bool { return len(net.received("ch")) == 2 })
		r.stop(t)
		if d := cmp.Diff(net.received("ch"), []string{"ch-000", "later"}); d != "" {
			t.Errorf("received (-got +want):\n%s", d)
		}
		if d := cmp.Diff(net.configs["ch"], []string{`{"url":"https://ch.example"}`, `{"url":"https://new.example"}`}); d != "" {
			t.Errorf("senders made with (-got +want):\n%s", d)
		}
		if net.closes["ch"] != 2 {
			t.Errorf("%d senders closed, want 2", net.closes["ch"])
		}
	})
}
