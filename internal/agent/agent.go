// Package agent provides the Yagura host agent: enrolment with a manager,
// and the runtime that heartbeats, renews its certificate before it expires,
// delivers events from its durable queue, and runs jobs (and, in later
// issues, enforces policy).
//
// The agent always opens the connection (HTTPS, so it crosses NAT and
// proxies) and pins the manager CA by fingerprint. It is built without cgo
// and must not import manager-side packages (checked in cmd/yagura).
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/yagura/yagura/internal/eventq"
	"github.com/yagura/yagura/internal/firewall"
	"github.com/yagura/yagura/internal/pki"
	"github.com/yagura/yagura/internal/proto"
)

// Config configures the agent runtime.
type Config struct {
	// DataDir holds the identity (and later the event queue).
	DataDir string
	// Version is reported to the manager.
	Version string
	// QueueMaxBytes caps the on-disk event queue (default 1 GiB); when it
	// is full the oldest events are dropped, and counted in an
	// "events-dropped" event.
	QueueMaxBytes int64
	// ClockOffset shifts the clock the agent reports. Test use only: it
	// lets an end-to-end test provoke a clock-drift alert.
	ClockOffset time.Duration
	// TestEvents makes the agent emit that many numbered test events
	// (tests only).
	TestEvents int
	// Proxy is the HTTP proxy to reach the manager through (CONNECT, with
	// basic authentication from its user info); nil: HTTPS_PROXY/NO_PROXY.
	Proxy *url.URL
	// Listen is where to listen for the manager in the bidirectional and
	// manager-initiated directions; empty: every address, on the port the
	// manager says (4118 by default).
	Listen string
	// Firewall enforces the policy's firewall on the host; nil: the agent
	// tracks its policy but enforces nothing (tests, unsupported hosts).
	Firewall Enforcer
	// FirewallEvents, when set, is started with Run to deliver firewall
	// events (drops, log-only matches) into the agent's event queue.
	FirewallEvents func(ctx context.Context, emit func(firewall.Event)) error
}

// Agent is the running agent. Create it with New, then Run.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	idMu    sync.Mutex
	id      *Identity
	client  *Client
	q       *eventq.Queue
	started time.Time
	running runningJobs
	dir     *direction
	pol     policyState
	// stop ends Run early (after an uninstall job).
	stop        context.CancelFunc
	uninstalled atomic.Bool

	seq      uint64
	beatSoon atomic.Bool   // heartbeat again at once (a policy change, isolation)
	kick     chan struct{} // ends the wait for the next heartbeat
	interval time.Duration // read by other goroutines through heartbeatInterval
	ivl      atomic.Int64
	sentInv  *proto.Inventory
	counters map[string]uint64
	sentCtr  map[string]uint64 // counters as last acknowledged
}

// New loads the identity and prepares the client; it does no network I/O.
func New(cfg Config, log *slog.Logger) (*Agent, error) {
	id, err := LoadIdentity(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	cert, err := id.TLSCertificate()
	if err != nil {
		return nil, err
	}
	a := &Agent{
		cfg: cfg, log: log, id: id, started: time.Now(), dir: newDirection(),
		interval: time.Minute, counters: map[string]uint64{}, kick: make(chan struct{}, 1),
	}
	a.client, err = NewClient(ClientOptions{
		Manager: id.Manager, CAFingerprint: id.CAFingerprint, Roots: id.Roots(), Cert: cert, Proxy: cfg.Proxy,
		Dial: a.dial,
		// A manager-initiated agent talks on the manager's sockets: no
		// proxy in between.
		NoProxy: func() bool { mode, _ := a.dir.current(); return mode == managerInitiated },
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// beatNow makes the agent heartbeat at once (from any goroutine), to report
// a change the console should see within seconds.
func (a *Agent) beatNow() {
	a.beatSoon.Store(true)
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// heartbeatInterval is the interval, safe from any goroutine.
func (a *Agent) heartbeatInterval() time.Duration {
	if v := a.ivl.Load(); v > 0 {
		return time.Duration(v)
	}
	return time.Minute
}

// identity is the current identity (renewal replaces it), safe from any
// goroutine.
func (a *Agent) identity() *Identity {
	a.idMu.Lock()
	defer a.idMu.Unlock()
	return a.id
}

// ID is the agent ID.
func (a *Agent) ID() string { return a.id.AgentID }

// Run heartbeats, runs jobs and delivers events until ctx is cancelled. It
// returns ErrUninstalled after an uninstall job.
func (a *Agent) Run(ctx context.Context) (err error) {
	defer a.client.Close()
	ctx, a.stop = context.WithCancel(ctx)
	defer a.stop()
	a.running.cancels = map[string]context.CancelFunc{}
	defer func() {
		if a.uninstalled.Load() {
			// Deferred first, so it runs last: the queue is closed by now.
			if rerr := a.removeState(); rerr != nil {
				err = errors.Join(ErrUninstalled, rerr)
				return
			}
			a.log.Info("agent uninstalled: identity and state removed")
			err = ErrUninstalled
		}
	}()
	q, err := openQueue(a.cfg.DataDir, a.cfg.QueueMaxBytes)
	if err != nil {
		return err
	}
	a.q = q
	defer q.Close()
	var wg sync.WaitGroup
	defer wg.Wait() // before the queue closes
	defer a.running.wg.Wait()
	sctx, stopSender := context.WithCancel(ctx)
	defer stopSender()
	wg.Go(func() { a.sendEvents(sctx) })
	if a.cfg.TestEvents > 0 {
		wg.Go(func() {
			if err := a.emitTestEvents(sctx, a.cfg.TestEvents); err != nil {
				a.log.Error("emit test events", "err", err)
			}
		})
	}
	if err := a.Emit("agent-started", "info", map[string]string{"version": a.cfg.Version}); err != nil {
		return err
	}
	defer func() {
		if err := a.Emit("agent-stopped", "info", nil); err != nil {
			a.log.Error("queue the stop event", "err", err)
		}
	}()
	a.restoreDirection(ctx)
	defer a.dir.stopListening()
	a.loadPolicy(ctx)
	// The host's own rules come back when the agent stops (Deep Security
	// does the same), on a fresh context: ctx is cancelled by then.
	defer a.removeFirewall(context.WithoutCancel(ctx))
	if a.cfg.FirewallEvents != nil {
		wg.Go(func() {
			err := a.cfg.FirewallEvents(sctx, func(e firewall.Event) {
				sev := "warning"
				if e.Verdict == firewall.Pass {
					sev = "info"
				}
				if err := a.Emit("firewall", sev, e); err != nil {
					a.log.Error("queue firewall event", "err", err)
				}
			})
			if err != nil && sctx.Err() == nil {
				a.log.Error("firewall events stopped", "err", err)
			}
		})
	}
	a.log.Info("agent started", "agent", a.id.AgentID, "manager", a.id.Manager, "queued_events", q.Len())
	failures := 0
	var refused string
	for {
		err := a.beat(ctx)
		wait := a.interval
		if a.beatSoon.Swap(false) {
			// A new policy was applied: report its fingerprint now, so the
			// console shows the computer up to date within seconds.
			wait = 100 * time.Millisecond
		}
		switch {
		case err == nil:
			if failures > 0 || refused != "" {
				a.log.Info("manager reachable again", "after_failures", failures)
			}
			failures, refused = 0, ""
			a.maybeRenew(ctx)
		case ctx.Err() != nil:
			return nil
		case IsProblem(err, proto.CodeAgentDeactivate), IsProblem(err, proto.CodeAgentUnknown), IsProblem(err, proto.CodeCertExpired):
			// The manager will not take this agent back by itself; say so
			// once, then keep knocking slowly in case it is re-enrolled.
			if code := problemCode(err); code != refused {
				a.log.Error("manager refuses this agent", "err", err)
				refused = code
			}
		default:
			failures++
			a.counters["heartbeat_failures"]++
			wait = backoff(failures, a.interval)
			a.log.Warn("heartbeat failed", "err", err, "retry_in", wait.Round(time.Millisecond), "failures", failures)
		}
		mode, _ := a.dir.current()
		switch {
		case mode == managerInitiated && err == nil:
			// The manager calls again at its next interval: deliver what is
			// queued on this connection and hang up.
			a.flushEvents(ctx)
			a.client.Close()
		case mode == managerInitiated:
			a.client.Close()
			sleep(ctx, time.Second)
		case err == nil && mode == agentInitiated:
			a.waitForManager(ctx, wait)
		default:
			a.pause(ctx, wait)
		}
		if ctx.Err() != nil {
			a.log.Info("agent stopped")
			return nil
		}
	}
}

// waitForManager waits until the next heartbeat is due, in long polls so
// that a job reaches an online agent within a second or two. Without long
// polls (an older manager, a proxy that cuts them) it simply sleeps.
func (a *Agent) waitForManager(ctx context.Context, d time.Duration) {
	deadline := time.Now().Add(d)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-a.kick:
			cancel()
		case <-ctx.Done():
		}
	}()
	for ctx.Err() == nil {
		left := time.Until(deadline)
		if left < time.Second {
			sleep(ctx, left)
			return
		}
		woken, err := a.client.Wait(ctx, min(left, 55*time.Second))
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var pe *ProblemError
			if errors.As(err, &pe) {
				// The manager refuses or lacks long polls: just sleep.
				a.log.Debug("long poll refused; sleeping until the next heartbeat", "err", err)
				sleep(ctx, time.Until(deadline))
				return
			}
			// A cut connection: poll again soon, jobs should not wait a
			// whole interval for it.
			a.log.Debug("long poll interrupted; polling again", "err", err)
			sleep(ctx, min(2*time.Second, time.Until(deadline)))
			continue
		}
		if woken {
			return
		}
	}
}

func problemCode(err error) string {
	var pe *ProblemError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// backoff grows exponentially from one second up to the heartbeat interval,
// with jitter so that agents cut off together do not return together.
func backoff(failures int, interval time.Duration) time.Duration {
	d := time.Second << min(failures-1, 10)
	d = min(d, interval)
	return d/2 + rand.N(d/2+1)
}

func (a *Agent) beat(ctx context.Context) error {
	a.seq++
	hb := &proto.Heartbeat{
		V:             proto.Version,
		Seq:           a.seq,
		ClockMillis:   time.Now().Add(a.cfg.ClockOffset).UnixMilli(),
		UptimeSeconds: int64(hostUptime(a.started) / time.Second),
	}
	// Counters travel only when they changed: most beats carry none, which
	// keeps the heartbeat small.
	if !maps.Equal(a.counters, a.sentCtr) {
		hb.Counters = maps.Clone(a.counters)
	}
	inv := Inventory(a.cfg.Version)
	inv.ListenPort = a.dir.listenPort()
	if a.sentInv == nil || !a.sentInv.Equal(&inv) {
		hb.Inventory = &inv
	}
	hb.PolicyFingerprint, hb.Isolated = a.policyFingerprint()
	timeout := 30 * time.Second
	if mode, _ := a.dir.current(); mode == managerInitiated {
		// The "dial" waits for the manager's next call.
		timeout += 2 * a.interval
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := a.client.Heartbeat(rctx, hb)
	if err != nil {
		return err
	}
	a.setDirection(ctx, resp.Communication, resp.ListenPort)
	if resp.PolicyFingerprint != "" {
		// Failures are retried at the next heartbeat: the manager keeps
		// announcing the fingerprint until the agent reports it.
		if err := a.updatePolicy(ctx, resp.PolicyFingerprint); err != nil {
			a.log.Error("policy update failed; retrying at the next heartbeat", "err", err)
		} else {
			a.beatSoon.Store(true)
		}
	}
	if len(resp.Jobs) > 0 {
		a.handleJobs(ctx, resp.Jobs)
	}
	if hb.Counters != nil {
		a.sentCtr = hb.Counters
	}
	if hb.Inventory != nil {
		a.sentInv = hb.Inventory
	}
	if resp.SendInventory {
		a.sentInv = nil
	}
	if iv := proto.FromMillis(resp.IntervalMillis); iv > 0 && iv != a.interval {
		a.log.Info("heartbeat interval set by manager", "interval", iv)
		a.interval = iv
		a.ivl.Store(int64(iv))
	}
	return nil
}

// maybeRenew renews the certificate when a third of its life is left. A
// failure is retried after the next heartbeat; the old certificate is still
// valid meanwhile.
func (a *Agent) maybeRenew(ctx context.Context) {
	cert, err := a.id.Certificate()
	if err != nil || !NeedsRenewal(cert, time.Now()) {
		return
	}
	if err := a.renew(ctx); err != nil {
		a.log.Warn("certificate renewal failed; will retry", "err", err, "expires", cert.NotAfter)
		return
	}
	a.counters["renewals"]++
}

func (a *Agent) renew(ctx context.Context) error {
	host, _ := os.Hostname()
	csr, err := pki.CSRForKey(a.id.KeyPEM, host)
	if err != nil {
		return err
	}
	resp, err := a.client.Renew(ctx, &proto.RenewRequest{V: proto.Version, CSR: string(csr)})
	if err != nil {
		return err
	}
	next := *a.id
	next.CertPEM = []byte(resp.Certificate)
	tc, err := next.TLSCertificate()
	if err != nil {
		return fmt.Errorf("renewed certificate: %w", err)
	}
	if err := next.Save(a.cfg.DataDir); err != nil {
		return err
	}
	a.idMu.Lock()
	a.id = &next
	a.idMu.Unlock()
	a.client.SetCertificate(tc)
	c, _ := next.Certificate()
	a.log.Info("agent certificate renewed", "not_after", c.NotAfter)
	return nil
}
