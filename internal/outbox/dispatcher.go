package outbox

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/yagura/yagura/internal/store"
)

// Store is what the dispatcher needs from the state store; *store.DB
// implements it. See the store's outbox methods for the lease protocol.
type Store interface {
	ListChannels(ctx context.Context) ([]store.Channel, error)
	ClaimNotifications(ctx context.Context, owner string, now time.Time, lease time.Duration, limit int) ([]store.Notification, error)
	RenewNotification(ctx context.Context, id, owner string, until time.Time) error
	ReleaseNotifications(ctx context.Context, owner string, ids []string) error
	CompleteNotification(ctx context.Context, id, owner string, at time.Time) error
	CompleteNotifications(ctx context.Context, ids []string, owner string, at time.Time) ([]string, error)
	RetryNotification(ctx context.Context, id, owner string, at, nextAt time.Time, lastErr string) error
	FailNotification(ctx context.Context, id, owner string, at time.Time, lastErr string) error
}

// Sender sends messages to one channel. The dispatcher calls Send from one
// goroutine at a time, and Close once, after the last Send. payload is the
// notification's JSON message; the sender must not keep it after Send
// returns.
//
// An error whose Permanent method returns true (found with errors.As) says
// that retrying cannot help (the receiver refused this message): the
// notification fails at once instead of holding up the channel until
// Config.GiveUpAfter.
type Sender interface {
	Send(ctx context.Context, payload []byte) error
	Close() error
}

// Dialer makes the sender of a channel from its configuration. It should
// not connect: senders connect when they send.
type Dialer func(ch store.Channel) (Sender, error)

// Config tunes the dispatcher.
type Config struct {
	// Owner names this dispatcher in leases; unique per process. Empty:
	// the host name and a random suffix.
	Owner string `koanf:"owner"`
	// Lease is how long a claimed notification stays this dispatcher's
	// without being renewed; another node takes over a crashed one's work
	// after that.
	Lease time.Duration `koanf:"lease"`
	// PollInterval is how often the outbox is checked for work that
	// Wake did not announce: retries that came due, other nodes' leases
	// that ran out.
	PollInterval time.Duration `koanf:"poll_interval"`
	// SendTimeout bounds one Send. It must be well under Lease.
	SendTimeout time.Duration `koanf:"send_timeout"`
	// BaseDelay and MaxDelay bound the backoff of a failing channel,
	// doubled at each consecutive failure, with jitter.
	BaseDelay time.Duration `koanf:"base_delay"`
	MaxDelay  time.Duration `koanf:"max_delay"`
	// GiveUpAfter is how long after its creation a notification that
	// still fails is given up on (left in the outbox as failed, for an
	// administrator to requeue or discard).
	GiveUpAfter time.Duration `koanf:"give_up_after"`
	// Batch is how many notifications of a channel are claimed at once.
	Batch int `koanf:"batch"`
}

// DefaultConfig returns the production defaults.
func DefaultConfig() Config {
	return Config{
		Lease:        time.Minute,
		PollInterval: time.Second,
		SendTimeout:  20 * time.Second,
		BaseDelay:    time.Second,
		MaxDelay:     5 * time.Minute,
		GiveUpAfter:  24 * time.Hour,
		Batch:        500,
	}
}

func (c Config) validate() error {
	switch {
	case c.Lease <= 0 || c.PollInterval <= 0 || c.SendTimeout <= 0 || c.BaseDelay <= 0 || c.GiveUpAfter <= 0 || c.Batch <= 0:
		return errors.New("lease, poll_interval, send_timeout, base_delay, give_up_after and batch must be positive")
	case c.MaxDelay < c.BaseDelay:
		return errors.New("max_delay must be at least base_delay")
	case c.SendTimeout >= c.Lease:
		// A send must end before the lease renewed for it runs out, or
		// another node could send the same notification meanwhile.
		return errors.New("send_timeout must be shorter than lease")
	}
	return nil
}

// maxErrorLen bounds the error text kept with a notification.
const maxErrorLen = 1000

// Dispatcher sends the notifications in the outbox. Each channel is worked
// by one goroutine at a time, oldest notification first, so a slow or
// unreachable receiver delays only its own channel. When a send fails the
// notification is retried after a backoff, and the channel's later
// notifications wait behind it (the store claims a channel only when its
// oldest notification is due): a receiver that is down is not hammered,
// and once it answers everything pending flows at once.
type Dispatcher struct {
	cfg  Config
	st   Store
	dial Dialer
	log  *slog.Logger
	wake chan struct{}

	// OnFail, when set before Run, hears of every notification given up
	// on (the manager raises an alert: a receiver is missing messages).
	OnFail func(ctx context.Context, ch store.Channel, n store.Notification, lastErr string)

	delivered, retried, failed *prometheus.CounterVec
	storeErrs                  prometheus.Counter
}

// New returns a dispatcher; it does nothing until Run.
func New(cfg Config, st Store, dial Dialer, log *slog.Logger, reg prometheus.Registerer) (*Dispatcher, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("outbox dispatcher: %w", err)
	}
	if cfg.Owner == "" {
		host, _ := os.Hostname()
		cfg.Owner = host + "-" + crand.Text()[:8]
	}
	d := &Dispatcher{
		cfg: cfg, st: st, dial: dial, log: log,
		wake: make(chan struct{}, 1),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "yagura_notifications_delivered_total", Help: "Notifications delivered, by channel ID.",
		}, []string{"channel"}),
		retried: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "yagura_notifications_retried_total", Help: "Failed sends of notifications that will be retried, by channel ID.",
		}, []string{"channel"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "yagura_notifications_failed_total", Help: "Notifications given up on (left in the outbox as failed), by channel ID.",
		}, []string{"channel"}),
		storeErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "yagura_outbox_store_errors_total", Help: "Outbox operations the state store refused (retried, or the lease runs out).",
		}),
	}
	if reg != nil {
		reg.MustRegister(d.delivered, d.retried, d.failed, d.storeErrs)
	}
	return d, nil
}

// Owner is the name this dispatcher leases notifications under.
func (d *Dispatcher) Owner() string { return d.cfg.Owner }

// Wake makes Run look for work now, e.g. after notifications were
// enqueued, rather than at the next poll. It never blocks.
func (d *Dispatcher) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// channelState is a channel's sender and backoff. While a worker runs for
// the channel it owns the state; otherwise Run does.
type channelState struct {
	sender   Sender
	version  int64 // of the channel the sender was dialled for
	updated  time.Time
	failures int // consecutive failed sends
}

// Run dispatches until ctx is cancelled, then lets sends in progress end
// (within SendTimeout), records their outcome, releases the notifications
// it claimed but did not send, closes the senders and returns nil.
func (d *Dispatcher) Run(ctx context.Context) error {
	states := map[string]*channelState{}
	busy := map[string]bool{}
	done := make(chan string)
	var wg sync.WaitGroup
	defer func() {
		for len(busy) > 0 {
			delete(busy, <-done)
		}
		wg.Wait()
		for id, s := range states {
			d.closeSender(id, s)
		}
	}()
	for {
		if err := d.dispatch(ctx, states, busy, done, &wg); err != nil && ctx.Err() == nil {
			d.storeErrs.Inc()
			d.log.Warn("checking the outbox failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case id := <-done:
			delete(busy, id)
		case <-d.wake:
		case <-time.After(d.cfg.PollInterval):
		}
	}
}

// dispatch claims due notifications and starts a worker per channel.
func (d *Dispatcher) dispatch(ctx context.Context, states map[string]*channelState, busy map[string]bool, done chan<- string, wg *sync.WaitGroup) error {
	now := time.Now()
	ns, err := d.st.ClaimNotifications(ctx, d.cfg.Owner, now, d.cfg.Lease, d.cfg.Batch)
	if err != nil {
		return fmt.Errorf("claim notifications: %w", err)
	}
	chs, err := d.st.ListChannels(ctx)
	if err != nil {
		d.release(ctx, ns)
		return fmt.Errorf("list channels: %w", err)
	}
	byID := make(map[string]store.Channel, len(chs))
	for _, ch := range chs {
		byID[ch.ID] = ch
	}
	// Senders of channels that are gone, disabled or reconfigured are
	// closed while no worker uses them.
	for id, s := range states {
		ch, ok := byID[id]
		if !busy[id] && (!ok || !ch.Enabled || s.version != ch.Version || !s.updated.Equal(ch.UpdatedAt)) {
			d.closeSender(id, s)
			if !ok {
				delete(states, id)
			}
		}
	}
	for len(ns) > 0 {
		// Claimed notifications come grouped by channel, in order.
		id := ns[0].ChannelID
		n := 1
		for n < len(ns) && ns[n].ChannelID == id {
			n++
		}
		batch := ns[:n:n]
		ns = ns[n:]
		ch, ok := byID[id]
		if !ok || busy[id] {
			// Deleted since the claim, or (should the store ever hand out
			// a channel a worker holds) already being worked.
			d.release(ctx, batch)
			continue
		}
		s := states[id]
		if s == nil {
			s = &channelState{}
			states[id] = s
		}
		busy[id] = true
		wg.Go(func() {
			d.work(ctx, ch, s, batch)
			done <- id
		})
	}
	return nil
}

// work sends one channel's batch in order. It stops at the first failure
// that will be retried, releasing the rest: they wait behind it.
func (d *Dispatcher) work(ctx context.Context, ch store.Channel, s *channelState, batch []store.Notification) {
	// Sends and their bookkeeping outlive ctx: a send in progress at
	// shutdown ends and is recorded, so it is not sent again.
	bg := context.WithoutCancel(ctx)
	log := d.log.With("channel", ch.Name, "channel_id", ch.ID)
	// Deliveries are recorded together, in one transaction per run of
	// successful sends, before anything else is recorded or the batch is
	// left: a crash in between sends those again (receivers dedup by ID),
	// and a fast receiver is not held to one commit per message.
	var sent []string
	flush := func() bool {
		if len(sent) == 0 {
			return true
		}
		done, err := d.st.CompleteNotifications(bg, sent, d.cfg.Owner, time.Now())
		if err != nil {
			// They were sent; if the leases run out before this is
			// recorded, they will be sent again.
			d.storeErrs.Inc()
			log.Error("cannot record delivered notifications", "notifications", len(sent), "err", err)
			return false
		}
		if len(done) < len(sent) {
			log.Warn("some delivered notifications had been taken over by another dispatcher", "delivered", len(sent), "recorded", len(done))
		}
		sent = sent[:0]
		return true
	}
	defer flush()
	for i, n := range batch {
		if ctx.Err() != nil {
			d.release(bg, batch[i:])
			return
		}
		if time.Until(n.LeaseUntil) < d.cfg.SendTimeout+d.cfg.SendTimeout/2 {
			if !flush() {
				d.release(bg, batch[i:])
				return
			}
			if err := d.st.RenewNotification(bg, n.ID, d.cfg.Owner, time.Now().Add(d.cfg.Lease)); err != nil {
				// Taken over (our lease ran out) or the store is down:
				// either way not ours to send now.
				d.storeErrs.Inc()
				log.Warn("cannot renew the lease of a notification; leaving the channel for now", "notification", n.ID, "err", err)
				d.release(bg, batch[i:])
				return
			}
		}
		err := d.send(bg, ch, s, n)
		now := time.Now()
		if err == nil {
			s.failures = 0
			d.delivered.WithLabelValues(ch.ID).Inc()
			sent = append(sent, n.ID)
			// Recorded every 50 at the latest: a crash resends at most
			// that many (mail and syslog receivers do not dedup by ID).
			if len(sent) >= 50 && !flush() {
				d.release(bg, batch[i+1:])
				return
			}
			continue
		}
		if !flush() {
			d.release(bg, batch[i:])
			return
		}
		msg := err.Error()
		if len(msg) > maxErrorLen {
			msg = msg[:maxErrorLen]
		}
		if isPermanent(err) || now.Sub(n.CreatedAt) >= d.cfg.GiveUpAfter {
			d.failed.WithLabelValues(ch.ID).Inc()
			log.Error("notification failed; giving up", "notification", n.ID, "kind", n.Kind, "attempts", n.Attempts+1, "created", n.CreatedAt, "err", err)
			if err := d.st.FailNotification(bg, n.ID, d.cfg.Owner, now, msg); err != nil {
				d.storeErrs.Inc()
				log.Error("cannot record a failed notification", "notification", n.ID, "err", err)
				d.release(bg, batch[i+1:])
				return
			}
			if d.OnFail != nil {
				d.OnFail(bg, ch, n, msg)
			}
			continue
		}
		s.failures++
		delay := d.backoff(max(s.failures, n.Attempts+1))
		d.retried.WithLabelValues(ch.ID).Inc()
		log.Warn("sending a notification failed; retrying", "notification", n.ID, "attempts", n.Attempts+1, "retry_in", delay, "err", err)
		if err := d.st.RetryNotification(bg, n.ID, d.cfg.Owner, now, now.Add(delay), msg); err != nil {
			d.storeErrs.Inc()
			log.Error("cannot record a failed attempt", "notification", n.ID, "err", err)
		}
		d.release(bg, batch[i+1:])
		return
	}
}

// send sends n with the channel's sender, dialling it first if there is
// none or the channel changed since.
func (d *Dispatcher) send(ctx context.Context, ch store.Channel, s *channelState, n store.Notification) error {
	if s.sender != nil && (s.version != ch.Version || !s.updated.Equal(ch.UpdatedAt)) {
		d.closeSender(ch.ID, s)
	}
	if s.sender == nil {
		snd, err := d.dial(ch)
		if err != nil {
			return fmt.Errorf("set up %s channel: %w", ch.Kind, err)
		}
		s.sender, s.version, s.updated = snd, ch.Version, ch.UpdatedAt
	}
	sctx, cancel := context.WithTimeout(ctx, d.cfg.SendTimeout)
	defer cancel()
	return s.sender.Send(sctx, []byte(n.Payload))
}

func (d *Dispatcher) closeSender(id string, s *channelState) {
	if s.sender == nil {
		return
	}
	if err := s.sender.Close(); err != nil {
		d.log.Warn("closing a channel's sender failed", "channel_id", id, "err", err)
	}
	s.sender = nil
}

// release gives claimed notifications back, so that they can be claimed
// again at once rather than when their lease runs out.
func (d *Dispatcher) release(ctx context.Context, ns []store.Notification) {
	if len(ns) == 0 {
		return
	}
	ids := make([]string, len(ns))
	for i, n := range ns {
		ids[i] = n.ID
	}
	if err := d.st.ReleaseNotifications(context.WithoutCancel(ctx), d.cfg.Owner, ids); err != nil {
		d.storeErrs.Inc()
		d.log.Warn("releasing notifications failed; their leases will run out", "count", len(ids), "err", err)
	}
}

// backoff is the delay after the k-th consecutive failure: BaseDelay
// doubled k-1 times, at most MaxDelay, of which a random half is taken off
// so that nodes and channels do not retry in step.
func (d *Dispatcher) backoff(k int) time.Duration {
	delay := d.cfg.MaxDelay
	if k-1 < 32 {
		if b := d.cfg.BaseDelay << (k - 1); b > 0 && b < delay {
			delay = b
		}
	}
	half := delay / 2
	return half + rand.N(delay-half+1)
}

func isPermanent(err error) bool {
	var p interface{ Permanent() bool }
	return errors.As(err, &p) && p.Permanent()
}
