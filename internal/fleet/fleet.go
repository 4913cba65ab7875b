// Package fleet provides the manager's live view of its computers: it takes
// every heartbeat, knows which computers are online, late or offline, raises
// and clears the "computer offline" and "clock drift" alerts, and writes
// presence to the state store in batches.
//
// Heartbeats arrive thousands of times a second, so they only touch memory;
// a single Run loop does all store I/O. The store stays the source of truth
// across restarts: Load reads it back, and Run flushes before returning.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/yagura/yagura/internal/proto"
	"github.com/yagura/yagura/internal/settings"
	"github.com/yagura/yagura/internal/store"
)

// Alert types raised by the fleet monitor.
const (
	AlertOffline    = "computer-offline"
	AlertClockDrift = "clock-drift"
	// AlertPolicyOutOfDate: an online agent has not enforced its
	// effective policy for three heartbeat intervals (it is told the new
	// fingerprint on its next beat and applies within seconds).
	AlertPolicyOutOfDate = "policy-out-of-date"
)

// ClearedBySystem marks alerts the manager cleared on its own.
const ClearedBySystem = "system"

// Status is a computer's liveness as administrators see it.
type Status string

// Statuses. Pending: enrolled, never heard from yet.
const (
	StatusOnline      Status = "online"
	StatusWarning     Status = "warning"
	StatusOffline     Status = "offline"
	StatusPending     Status = "pending"
	StatusDeactivated Status = "deactivated"
)

// Errors from Heartbeat.
var (
	ErrUnknown     = errors.New("unknown agent")
	ErrDeactivated = errors.New("agent deactivated")
)

// Store is what the fleet needs from the state store.
type Store interface {
	ListComputers(ctx context.Context) ([]store.Computer, error)
	UpdatePresence(ctx context.Context, p []store.Presence) error
	RaiseAlert(ctx context.Context, a store.Alert) (store.Alert, bool, error)
	ClearOpenAlerts(ctx context.Context, typ, computerID string, at time.Time, by string) (int, error)
	ListAlerts(ctx context.Context, f store.AlertFilter) ([]store.Alert, error)
	Settings(ctx context.Context) (map[string]string, error)
}

// Config tunes the monitor.
type Config struct {
	// FlushEvery is how often presence is written to the store.
	FlushEvery time.Duration `koanf:"flush_every"`
	// PersistSeenEvery bounds how stale the stored last-seen time may get
	// for a computer that keeps beating; changes in inventory are written at
	// the next flush regardless. Larger values mean fewer writes.
	PersistSeenEvery time.Duration `koanf:"persist_seen_every"`
	// SyncEvery is how often settings and deactivations made through
	// another manager node are read back from the store.
	SyncEvery time.Duration `koanf:"sync_every"`
}

// DefaultConfig returns the production defaults.
func DefaultConfig() Config {
	return Config{FlushEvery: 2 * time.Second, PersistSeenEvery: time.Minute, SyncEvery: 10 * time.Second}
}

// Live is a computer's current state.
type Live struct {
	Status      Status
	LastSeen    time.Time // zero: never
	Missed      int
	ClockOffset time.Duration
	Uptime      time.Duration
	// PolicyReported is the fingerprint of the configuration the agent
	// last said it enforces; PolicyExpected the one it should.
	PolicyReported, PolicyExpected string
	// Isolated: the agent reports that it isolates its host.
	Isolated bool
}

// PolicyStatus says whether the agent enforces its effective policy:
// "up-to-date", "out-of-date", or "unknown" before it has reported.
func (l Live) PolicyStatus() string {
	switch {
	case l.PolicyExpected == "" || l.PolicyReported == "":
		return "unknown"
	case l.PolicyReported == l.PolicyExpected:
		return "up-to-date"
	}
	return "out-of-date"
}

// Reply is what the manager answers a heartbeat with.
type Reply struct {
	Interval      time.Duration
	SendInventory bool
	Communication string // effective direction
	ListenPort    int
	// PolicyFingerprint is the configuration the agent should enforce,
	// set only when it differs from the one the agent reported.
	PolicyFingerprint string
}

const nShards = 64

type shard struct {
	mu sync.Mutex
	m  map[string]*entry
}

type entry struct {
	id            string
	deactivated   bool
	enrolledAt    time.Time
	lastSeen      time.Time
	persistedSeen time.Time
	toldInterval  time.Duration
	uptime        time.Duration
	clockOffset   time.Duration
	inv           proto.Inventory
	haveInv       bool
	invDirty      bool
	addr          string // host of the last heartbeat's connection
	communication string // per-computer override, or ""
	// cfg are the computer's effective settings from its policy; nil: the
	// manager-wide settings.
	cfg            *settings.Settings
	policyExpected string
	policyReported string
	// staleSince is when the tick loop first saw the reported policy
	// differ from the expected one; zero while they agree.
	staleSince time.Time
	isolated   bool
}

// conf returns the settings that apply to e.
func (e *entry) conf(global *settings.Settings) *settings.Settings {
	if e.cfg != nil {
		return e.cfg
	}
	return global
}

type alertKey struct{ typ, computer string }

// driftSeen is a clock offset beyond what the computer's policy allows.
type driftSeen struct{ offset, allowed time.Duration }

// Fleet tracks every computer's liveness. Create it with New, fill it with
// Load, then call Run; Heartbeat and the readers are safe for concurrent use.
type Fleet struct {
	cfg      Config
	store    Store
	log      *slog.Logger
	seed     maphash.Seed
	shards   [nShards]shard
	settings atomic.Pointer[settings.Settings]
	started  time.Time

	driftMu sync.Mutex
	drift   map[string]driftSeen // computer → offset seen, waiting for the loop

	openMu sync.RWMutex
	open   map[alertKey]bool // open fleet alerts, refreshed from the store each tick

	heartbeats prometheus.Counter
	raised     *prometheus.CounterVec
	flushes    prometheus.Counter
	flushErrs  prometheus.Counter
	flushed    prometheus.Counter
}

// New returns a fleet with no computers. It does no I/O.
func New(cfg Config, st Store, s settings.Settings, log *slog.Logger, reg prometheus.Registerer) *Fleet {
	f := &Fleet{
		cfg:   cfg,
		store: st,
		log:   log,
		seed:  maphash.MakeSeed(),
		drift: map[string]driftSeen{},
		open:  map[alertKey]bool{},
		heartbeats: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "yagura_heartbeats_total", Help: "Heartbeats accepted from agents.",
		}),
		raised: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "yagura_fleet_alerts_raised_total", Help: "Alerts raised by the fleet monitor, by type.",
		}, []string{"type"}),
		flushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "yagura_presence_flushes_total", Help: "Batched presence writes to the state store.",
		}),
		flushErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "yagura_presence_flush_errors_total", Help: "Presence batches the state store refused (retried next flush).",
		}),
		flushed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "yagura_presence_rows_written_total", Help: "Computer presence rows written to the state store.",
		}),
	}
	for i := range f.shards {
		f.shards[i].m = map[string]*entry{}
	}
	f.settings.Store(&s)
	if reg != nil {
		reg.MustRegister(f.heartbeats, f.raised, f.flushes, f.flushErrs, f.flushed, &statusCollector{f: f})
	}
	return f
}

// SetSettings makes new settings effective at once.
func (f *Fleet) SetSettings(s settings.Settings) { f.settings.Store(&s) }

// Settings returns the settings in effect.
func (f *Fleet) Settings() settings.Settings { return *f.settings.Load() }

// SetPolicy records a computer's effective settings and the fingerprint of
// the configuration it should enforce. It reports whether the computer is
// known.
func (f *Fleet) SetPolicy(id, fingerprint string, s *settings.Settings) bool {
	sh := f.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, ok := sh.m[id]
	if ok {
		e.policyExpected, e.cfg = fingerprint, s
	}
	return ok
}

func (f *Fleet) shard(id string) *shard {
	return &f.shards[maphash.String(f.seed, id)%nShards]
}

// Load reads every computer from the store. Computers are treated as seen
// no earlier than now, so a manager that was down does not greet its agents
// with a storm of offline alerts before they have had a chance to beat.
func (f *Fleet) Load(ctx context.Context, now time.Time) error {
	cs, err := f.store.ListComputers(ctx)
	if err != nil {
		return fmt.Errorf("load computers: %w", err)
	}
	f.started = now
	for _, c := range cs {
		f.Add(c)
	}
	if err := f.refreshOpen(ctx); err != nil {
		return err
	}
	f.log.Info("fleet loaded", "computers", len(cs))
	return nil
}

// Add starts tracking a computer (after enrolment, or when another manager
// node enrolled it). Adding a known computer refreshes its lifecycle state.
func (f *Fleet) Add(c store.Computer) {
	sh := f.shard(c.ID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, ok := sh.m[c.ID]
	if !ok {
		e = &entry{id: c.ID}
		sh.m[c.ID] = e
		e.lastSeen = c.LastSeen
		e.persistedSeen = c.LastSeen
		e.uptime = c.Uptime
		e.clockOffset = c.ClockOffset
		if c.Hostname != "" {
			e.inv = proto.Inventory{Hostname: c.Hostname, OS: c.OS, OSVersion: c.OSVersion, AgentVersion: c.AgentVersion, IPs: c.IPs}
			e.haveInv = true
		}
	}
	e.enrolledAt = c.EnrolledAt
	e.deactivated = c.State != store.ComputerActive
	e.communication = c.Communication
}

// Deactivate stops accepting heartbeats from a computer.
func (f *Fleet) Deactivate(id string) {
	sh := f.shard(id)
	sh.mu.Lock()
	if e, ok := sh.m[id]; ok {
		e.deactivated = true
	}
	sh.mu.Unlock()
}

// Active returns nil if the agent may talk to the manager, else ErrUnknown
// or ErrDeactivated.
func (f *Fleet) Active(id string) error {
	sh := f.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, ok := sh.m[id]
	switch {
	case !ok:
		return ErrUnknown
	case e.deactivated:
		return ErrDeactivated
	}
	return nil
}

// Heartbeat records a heartbeat received at now. It returns ErrUnknown for
// an agent this node has not loaded and ErrDeactivated for one that may no
// longer talk to the manager.
func (f *Fleet) Heartbeat(id string, hb *proto.Heartbeat, now time.Time) (Reply, error) {
	return f.HeartbeatFrom(id, "", hb, now)
}

// HeartbeatFrom is Heartbeat with the remote host the beat came from, which
// the manager dials in bidirectional and manager-initiated modes.
func (f *Fleet) HeartbeatFrom(id, host string, hb *proto.Heartbeat, now time.Time) (Reply, error) {
	global := f.settings.Load()
	offset := time.UnixMilli(hb.ClockMillis).Sub(now)
	sh := f.shard(id)
	sh.mu.Lock()
	e, ok := sh.m[id]
	if !ok {
		sh.mu.Unlock()
		return Reply{}, ErrUnknown
	}
	if e.deactivated {
		sh.mu.Unlock()
		return Reply{}, ErrDeactivated
	}
	s := e.conf(global)
	e.lastSeen = now
	e.policyReported = hb.PolicyFingerprint
	e.isolated = hb.Isolated
	e.toldInterval = s.HeartbeatInterval
	if host != "" {
		e.addr = host
	}
	e.uptime = time.Duration(hb.UptimeSeconds) * time.Second
	e.clockOffset = offset
	if hb.Inventory != nil && (!e.haveInv || !e.inv.Equal(hb.Inventory)) {
		e.inv = *hb.Inventory
		e.inv.IPs = slices.Clone(hb.Inventory.IPs)
		e.haveInv = true
		e.invDirty = true
	}
	reply := Reply{Interval: s.HeartbeatInterval, SendInventory: !e.haveInv, Communication: effective(e, s), ListenPort: s.AgentPort}
	if e.policyExpected != "" && e.policyExpected != hb.PolicyFingerprint {
		reply.PolicyFingerprint = e.policyExpected
	}
	sh.mu.Unlock()

	f.heartbeats.Inc()
	if s.MaxClockDrift > 0 && abs(offset) > s.MaxClockDrift {
		f.driftMu.Lock()
		f.drift[id] = driftSeen{offset, s.MaxClockDrift}
		f.driftMu.Unlock()
	}
	return reply, nil
}

func effective(e *entry, s *settings.Settings) string {
	if e.communication != "" {
		return e.communication
	}
	return s.Communication
}

// Reach is how the manager can open a connection to an agent.
type Reach struct {
	Communication string
	Addr          string // host:port, empty if unknown
	LastSeen      time.Time
	Interval      time.Duration
}

// Reach says whether and where the manager may connect to an agent.
func (f *Fleet) Reach(id string) (Reach, bool) {
	s := f.settings.Load()
	sh := f.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, ok := sh.m[id]
	if !ok || e.deactivated {
		return Reach{}, false
	}
	return f.reachLocked(e, s), true
}

func (f *Fleet) reachLocked(e *entry, global *settings.Settings) Reach {
	s := e.conf(global)
	r := Reach{Communication: effective(e, s), LastSeen: e.lastSeen, Interval: max(s.HeartbeatInterval, e.toldInterval)}
	// Only the address a heartbeat actually came from: an agent must not
	// be able to point the manager at a host of its choosing.
	host := e.addr
	port := e.inv.ListenPort
	if port == 0 {
		port = s.AgentPort
	}
	if host != "" {
		r.Addr = net.JoinHostPort(host, strconv.Itoa(port))
	}
	return r
}

// ManagerInitiated lists the computers the manager must connect to itself.
func (f *Fleet) ManagerInitiated() map[string]Reach {
	s := f.settings.Load()
	out := map[string]Reach{}
	for i := range f.shards {
		sh := &f.shards[i]
		sh.mu.Lock()
		for id, e := range sh.m {
			if !e.deactivated && effective(e, e.conf(s)) == settings.ManagerInitiated {
				out[id] = f.reachLocked(e, s)
			}
		}
		sh.mu.Unlock()
	}
	return out
}

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// Live returns a computer's current state.
func (f *Fleet) Live(id string, now time.Time) (Live, bool) {
	s := f.settings.Load()
	sh := f.shard(id)
	sh.mu.Lock()
	e, ok := sh.m[id]
	var l Live
	if ok {
		l = f.liveLocked(e, s, now)
	}
	sh.mu.Unlock()
	return l, ok
}

func (f *Fleet) liveLocked(e *entry, global *settings.Settings, now time.Time) Live {
	s := e.conf(global)
	l := Live{LastSeen: e.lastSeen, ClockOffset: e.clockOffset, Uptime: e.uptime,
		PolicyReported: e.policyReported, PolicyExpected: e.policyExpected, Isolated: e.isolated}
	if e.deactivated {
		l.Status = StatusDeactivated
		return l
	}
	l.Missed = f.missed(e, s, now, false)
	threshold := s.OfflineAfterMissed
	if threshold == 0 {
		// Unlimited only silences the alert; the console still has to say
		// that a laptop is away.
		threshold = settings.Default().OfflineAfterMissed
	}
	switch {
	case l.Missed >= threshold:
		l.Status = StatusOffline
	case e.lastSeen.IsZero():
		l.Status = StatusPending
	case l.Missed > 0 || f.isOpen(AlertClockDrift, e.id):
		l.Status = StatusWarning
	default:
		l.Status = StatusOnline
	}
	return l
}

// missed counts heartbeats that are overdue. A beat is overdue half an
// interval after it was due, so network jitter does not flap the status.
// The interval is the longer of the current setting and the one the agent
// was last told, so shortening the interval does not make every agent late.
//
// With grace, a computer counts as seen no earlier than the manager's start:
// that is what raising alerts uses, so a manager that was down gives its
// agents a full window to come back before calling them offline. The status
// shown and the clearing of alerts use the real last-seen time: a host that
// has been silent for a day is offline, restart or not.
func (f *Fleet) missed(e *entry, s *settings.Settings, now time.Time, grace bool) int {
	interval := max(s.HeartbeatInterval, e.toldInterval)
	since := e.lastSeen
	if since.IsZero() {
		since = e.enrolledAt
	}
	if grace && since.Before(f.started) {
		since = f.started
	}
	late := now.Sub(since) - interval/2
	if late < 0 {
		return 0
	}
	return int(late / interval)
}

func (f *Fleet) isOpen(typ, id string) bool {
	f.openMu.RLock()
	defer f.openMu.RUnlock()
	return f.open[alertKey{typ, id}]
}

// Counts returns how many computers are in each status.
func (f *Fleet) Counts(now time.Time) map[Status]int {
	s := f.settings.Load()
	counts := map[Status]int{}
	for i := range f.shards {
		sh := &f.shards[i]
		sh.mu.Lock()
		for _, e := range sh.m {
			counts[f.liveLocked(e, s, now).Status]++
		}
		sh.mu.Unlock()
	}
	return counts
}

// tickEvery is how often the loop looks for missed heartbeats: often enough
// to raise an alert within a fraction of an interval.
func tickEvery(s settings.Settings) time.Duration {
	return min(max(s.HeartbeatInterval/4, 100*time.Millisecond), time.Second)
}

// Run evaluates liveness and flushes presence until ctx is cancelled, then
// flushes once more so a clean shutdown loses nothing.
func (f *Fleet) Run(ctx context.Context) error {
	lastFlush, lastSync := time.Now(), time.Now()
	for {
		wait := tickEvery(f.Settings())
		select {
		case <-ctx.Done():
			// The store outlives this loop (stopped in reverse order), so a
			// fresh context lets the final flush finish.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			return f.flush(fctx, time.Now(), true)
		case <-time.After(wait):
		}
		now := time.Now()
		if err := f.tick(ctx, now); err != nil && ctx.Err() == nil {
			f.log.Error("fleet check failed; retrying next tick", "err", err)
		}
		if f.cfg.SyncEvery > 0 && now.Sub(lastSync) >= f.cfg.SyncEvery {
			lastSync = now
			if err := f.sync(ctx); err != nil && ctx.Err() == nil {
				f.log.Error("reading settings and computers back from the store failed; retrying", "err", err)
			}
		}
		if now.Sub(lastFlush) >= f.cfg.FlushEvery {
			lastFlush = now
			if err := f.flush(ctx, now, false); err != nil && ctx.Err() == nil {
				f.flushErrs.Inc()
				f.log.Error("presence flush failed; retrying next flush", "err", err)
			}
		}
	}
}

// sync reads back what other manager nodes may have changed: settings, new
// computers and deactivations. On a single node it changes nothing.
func (f *Fleet) sync(ctx context.Context) error {
	stored, err := f.store.Settings(ctx)
	if err != nil {
		return fmt.Errorf("load settings: %w", err)
	}
	s, err := settings.FromMap(stored)
	if err != nil {
		return fmt.Errorf("stored settings: %w", err)
	}
	if s != f.Settings() {
		f.SetSettings(s)
	}
	cs, err := f.store.ListComputers(ctx)
	if err != nil {
		return fmt.Errorf("load computers: %w", err)
	}
	for _, c := range cs {
		f.Add(c)
	}
	return nil
}

func (f *Fleet) refreshOpen(ctx context.Context) error {
	yes := true
	alerts, err := f.store.ListAlerts(ctx, store.AlertFilter{Open: &yes, Types: []string{AlertOffline, AlertClockDrift, AlertPolicyOutOfDate}})
	if err != nil {
		return fmt.Errorf("list open fleet alerts: %w", err)
	}
	open := make(map[alertKey]bool, len(alerts))
	for _, a := range alerts {
		open[alertKey{a.Type, a.ComputerID}] = true
	}
	f.openMu.Lock()
	f.open = open
	f.openMu.Unlock()
	return nil
}

type pendingAlert struct {
	typ          string
	id, hostname string
	missed       int
	lastSeen     time.Time
	offset       time.Duration
}

// tick raises and clears alerts. It reads the open alerts from the store
// first, so an administrator's clear (through any manager node) is seen.
func (f *Fleet) tick(ctx context.Context, now time.Time) error {
	if err := f.refreshOpen(ctx); err != nil {
		return err
	}
	s := f.settings.Load()
	var raise, clear []pendingAlert
	f.openMu.RLock()
	for i := range f.shards {
		sh := &f.shards[i]
		sh.mu.Lock()
		for id, e := range sh.m {
			isOpen := f.open[alertKey{AlertOffline, id}]
			if e.deactivated {
				if isOpen {
					clear = append(clear, pendingAlert{typ: AlertOffline, id: id})
				}
				if f.open[alertKey{AlertPolicyOutOfDate, id}] {
					clear = append(clear, pendingAlert{typ: AlertPolicyOutOfDate, id: id})
				}
				continue
			}
			es := e.conf(s)
			switch {
			case !isOpen && es.OfflineAfterMissed > 0:
				if m := f.missed(e, es, now, true); m >= es.OfflineAfterMissed {
					raise = append(raise, pendingAlert{typ: AlertOffline, id: id, hostname: e.inv.Hostname, missed: f.missed(e, es, now, false), lastSeen: e.lastSeen})
				}
			case isOpen && f.missed(e, es, now, false) == 0:
				clear = append(clear, pendingAlert{typ: AlertOffline, id: id})
			}
			stale := e.policyExpected != "" && e.policyReported != "" && e.policyExpected != e.policyReported
			polOpen := f.open[alertKey{AlertPolicyOutOfDate, id}]
			switch {
			case !stale:
				e.staleSince = time.Time{}
				if polOpen {
					clear = append(clear, pendingAlert{typ: AlertPolicyOutOfDate, id: id})
				}
			case e.staleSince.IsZero():
				e.staleSince = now
			case !polOpen && now.Sub(e.staleSince) >= 3*max(es.HeartbeatInterval, e.toldInterval) && f.missed(e, es, now, false) == 0:
				// Only for agents that are beating: an offline one has its
				// own alert, and learns of the change when it is back.
				raise = append(raise, pendingAlert{typ: AlertPolicyOutOfDate, id: id, hostname: e.inv.Hostname, lastSeen: e.staleSince})
			}
		}
		sh.mu.Unlock()
	}
	f.openMu.RUnlock()

	f.driftMu.Lock()
	drift := f.drift
	f.drift = map[string]driftSeen{}
	f.driftMu.Unlock()

	var errs []error
	for _, p := range raise {
		if p.typ == AlertPolicyOutOfDate {
			errs = append(errs, f.raise(ctx, now, AlertPolicyOutOfDate, store.SeverityWarning, p.id,
				fmt.Sprintf("Computer %s has not applied its policy since %s", name(p.hostname, p.id), p.lastSeen.UTC().Format(time.RFC3339))))
			continue
		}
		last := "never"
		if !p.lastSeen.IsZero() {
			last = p.lastSeen.UTC().Format(time.RFC3339)
		}
		errs = append(errs, f.raise(ctx, now, AlertOffline, store.SeverityCritical, p.id,
			fmt.Sprintf("Computer %s missed %d heartbeats (last seen %s)", name(p.hostname, p.id), p.missed, last)))
	}
	for _, p := range clear {
		if _, err := f.store.ClearOpenAlerts(ctx, p.typ, p.id, now, ClearedBySystem); err != nil {
			errs = append(errs, fmt.Errorf("clear %s alert of %s: %w", p.typ, p.id, err))
		}
	}
	for id, d := range drift {
		if f.isOpen(AlertClockDrift, id) {
			continue
		}
		errs = append(errs, f.raise(ctx, now, AlertClockDrift, store.SeverityWarning, id,
			fmt.Sprintf("Computer %s clock differs from the manager's by %s (allowed %s)", name(f.hostname(id), id), d.offset.Round(time.Second), d.allowed)))
	}
	if len(raise)+len(clear)+len(drift) > 0 {
		return errors.Join(append(errs, f.refreshOpen(ctx))...)
	}
	return errors.Join(errs...)
}

// Hostname returns a computer's host name as its agent last reported it
// ("" if unknown).
func (f *Fleet) Hostname(id string) string { return f.hostname(id) }

func (f *Fleet) hostname(id string) string {
	sh := f.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e, ok := sh.m[id]; ok {
		return e.inv.Hostname
	}
	return ""
}

func name(hostname, id string) string {
	if hostname == "" {
		return id
	}
	return fmt.Sprintf("%s (%s)", hostname, id)
}

func (f *Fleet) raise(ctx context.Context, now time.Time, typ, sev, id, msg string) error {
	aid, err := uuid.NewV7()
	if err != nil {
		return err
	}
	a, created, err := f.store.RaiseAlert(ctx, store.Alert{
		ID: aid.String(), Type: typ, Severity: sev, ComputerID: id, Message: msg, RaisedAt: now,
	})
	if err != nil {
		return fmt.Errorf("raise %s alert for %s: %w", typ, id, err)
	}
	if created {
		f.raised.WithLabelValues(typ).Inc()
		f.log.Warn("alert raised", "type", typ, "computer", id, "alert", a.ID, "message", msg)
	}
	return nil
}

// flush writes presence that changed. With all set it writes every computer
// whose last-seen time moved, as on shutdown.
func (f *Fleet) flush(ctx context.Context, now time.Time, all bool) error {
	var batch []store.Presence
	var written []*entry
	for i := range f.shards {
		sh := &f.shards[i]
		sh.mu.Lock()
		for _, e := range sh.m {
			moved := e.lastSeen.After(e.persistedSeen)
			if !e.invDirty && !(moved && (all || e.persistedSeen.IsZero() || e.lastSeen.Sub(e.persistedSeen) >= f.cfg.PersistSeenEvery)) {
				continue
			}
			batch = append(batch, store.Presence{
				ID: e.id, LastSeen: e.lastSeen, Hostname: e.inv.Hostname, OS: e.inv.OS, OSVersion: e.inv.OSVersion,
				AgentVersion: e.inv.AgentVersion, IPs: e.inv.IPs, Uptime: e.uptime, ClockOffset: e.clockOffset,
			})
			written = append(written, e)
		}
		sh.mu.Unlock()
	}
	if len(batch) == 0 {
		return nil
	}
	if err := f.store.UpdatePresence(ctx, batch); err != nil {
		return fmt.Errorf("write presence of %d computers: %w", len(batch), err)
	}
	f.flushes.Inc()
	f.flushed.Add(float64(len(batch)))
	// Mark what was written as persisted, unless a newer beat changed it
	// meanwhile; that one goes out next flush.
	for i, e := range written {
		sh := f.shard(e.id)
		sh.mu.Lock()
		if e.persistedSeen.Before(batch[i].LastSeen) {
			e.persistedSeen = batch[i].LastSeen
		}
		if e.inv.Equal(&proto.Inventory{Hostname: batch[i].Hostname, OS: batch[i].OS, OSVersion: batch[i].OSVersion, AgentVersion: batch[i].AgentVersion, IPs: batch[i].IPs, ListenPort: e.inv.ListenPort}) {
			e.invDirty = false
		}
		sh.mu.Unlock()
	}
	return nil
}

// statusCollector exports computers by status without a goroutine keeping
// gauges up to date.
type statusCollector struct{ f *Fleet }

var statusDesc = prometheus.NewDesc("yagura_computers", "Computers by status.", []string{"status"}, nil)

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) { ch <- statusDesc }

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.f.Counts(time.Now())
	for _, st := range []Status{StatusOnline, StatusWarning, StatusOffline, StatusPending, StatusDeactivated} {
		ch <- prometheus.MustNewConstMetric(statusDesc, prometheus.GaugeValue, float64(counts[st]), string(st))
	}
}
