package server

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/yagura/yagura/internal/alerting"
	"github.com/yagura/yagura/internal/notify"
	"github.com/yagura/yagura/internal/outbox"
	"github.com/yagura/yagura/internal/store"
)

// notifications ties alert rules, routing and the outbox dispatcher
// together and implements api.Notifications.
type notifications struct {
	db         *store.DB
	router     atomic.Pointer[outbox.Router]
	engine     *alerting.Engine
	notifier   *alerting.Notifier
	dispatcher *outbox.Dispatcher
	log        *slog.Logger
	// syncEvery reloads rules and channels changed through other nodes.
	syncEvery time.Duration
	// keepDeliveries is how long the delivery history is kept (0: forever).
	keepDeliveries time.Duration
	reloadMu       sync.Mutex
	// version is the manager's, for CEF's Device Version and the
	// User-Agent of mail and webhooks.
	version string
}

func newNotifications(ctx context.Context, cfg outbox.Config, keep time.Duration, db *store.DB, hostname func(string) string, version string, log *slog.Logger, reg prometheus.Registerer) (*notifications, error) {
	n := &notifications{db: db, log: log, syncEvery: 10 * time.Second, keepDeliveries: keep, version: version}
	n.router.Store(&outbox.Router{})
	d, err := outbox.New(cfg, db, n.dial, log.With("component", "outbox"), reg)
	if err != nil {
		return nil, err
	}
	n.dispatcher = d
	d.OnFail = n.failed
	n.notifier = alerting.NewNotifier(db, n, outbox.NotificationID, hostname, d.Wake)
	n.engine = alerting.NewEngine(n.notifier, hostname, log.With("component", "alerting"))
	if err := n.reload(ctx); err != nil {
		return nil, err
	}
	return n, nil
}

// Match routes through the current channels.
func (n *notifications) Match(source, typ, severity string) []store.Channel {
	return n.router.Load().Match(source, typ, severity)
}

func (n *notifications) reload(ctx context.Context) error {
	// An edit's reload and the periodic one must not interleave, or the
	// older view of the channels could be stored last.
	n.reloadMu.Lock()
	defer n.reloadMu.Unlock()
	rules, err := n.db.ListAlertRules(ctx)
	if err != nil {
		return fmt.Errorf("load alert rules: %w", err)
	}
	n.engine.SetRules(rules)
	chans, err := n.db.ListChannels(ctx)
	if err != nil {
		return fmt.Errorf("load notification channels: %w", err)
	}
	r, err := outbox.NewRouter(chans)
	if err != nil {
		// The others still route; the bad one is named.
		n.log.Error("a notification channel's routes are invalid; it receives nothing", "err", err)
	}
	n.router.Store(r)
	return nil
}

// Changed reloads after an edit through the API.
func (n *notifications) Changed(ctx context.Context) {
	if err := n.reload(context.WithoutCancel(ctx)); err != nil {
		n.log.Error("reload alert rules and channels", "err", err)
	}
}

// Wake starts delivery now.
func (n *notifications) Wake() { n.dispatcher.Wake() }

// Test sends a test message over ch directly.
func (n *notifications) Test(ctx context.Context, ch store.Channel, by string) error {
	s, err := n.sender(ch)
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Send(ctx, alerting.TestMessage(ch.ID, ch.Name, by, time.Now()))
}

func (n *notifications) sender(ch store.Channel) (notify.Sender, error) {
	var cfg notify.Config
	if err := json.Unmarshal([]byte(ch.Config), &cfg); err != nil {
		return nil, fmt.Errorf("channel %q: stored configuration: %w", ch.Name, err)
	}
	opts := []notify.Option{notify.WithLogger(n.log.With("component", "notify", "channel", ch.Name))}
	if n.version != "" {
		opts = append(opts, notify.WithProductVersion(n.version))
	}
	return notify.New(cfg, opts...)
}

// dial adapts a notify sender to the dispatcher, which hands over the
// stored JSON message.
func (n *notifications) dial(ch store.Channel) (outbox.Sender, error) {
	s, err := n.sender(ch)
	if err != nil {
		return nil, err
	}
	return payloadSender{s}, nil
}

type payloadSender struct{ s notify.Sender }

func (p payloadSender) Send(ctx context.Context, payload []byte) error {
	var m notify.Message
	if err := json.Unmarshal(payload, &m); err != nil {
		return permanent{fmt.Errorf("stored notification is not a message: %w", err)}
	}
	err := p.s.Send(ctx, m)
	if err != nil && notify.IsPermanent(err) {
		// The receiver refused this message (a 4xx, a 5xx SMTP reply):
		// retrying cannot help, so the dispatcher fails it at once.
		return permanent{err}
	}
	return err
}

func (p payloadSender) Close() error { return p.s.Close() }

// permanent marks an error retrying cannot fix.
type permanent struct{ error }

func (permanent) Permanent() bool { return true }
func (p permanent) Unwrap() error { return p.error }

// failed raises a "notification-failed" alert for the channel: one open
// alert per channel, whose occurrences count the notifications given up on.
func (n *notifications) failed(ctx context.Context, ch store.Channel, note store.Notification, lastErr string) {
	a := store.Alert{
		ID: alerting.NewID(), Type: alerting.AlertNotificationFailed, Severity: "error", Subject: "channel=" + ch.Name,
		Message:  fmt.Sprintf("Notifications to channel %q are failing; %s notification %s was given up on after %d attempts: %s", ch.Name, note.Kind, note.ID, note.Attempts+1, lastErr),
		RaisedAt: time.Now(), Data: fmt.Sprintf(`{"channel_id":%q,"notification":%q}`, ch.ID, note.ID),
	}
	if _, _, err := n.notifier.Raise(ctx, a, 0); err != nil {
		n.log.Error("raise notification-failed alert", "channel", ch.Name, "err", err)
	}
}

// start runs, in g, the dispatcher, the rule engine's sweeps, the delivery
// history's pruning and the reload of rules and channels changed through
// other nodes, until ctx ends.
func (n *notifications) start(g *errgroup.Group, ctx context.Context) {
	g.Go(func() error { return n.engine.Run(ctx) })
	g.Go(func() error {
		if n.keepDeliveries == 0 {
			return nil // kept as long as events: forever
		}
		t := time.NewTicker(time.Hour)
		defer t.Stop()
		for {
			if _, err := n.db.PruneDeliveries(ctx, time.Now().Add(-n.keepDeliveries)); err != nil && ctx.Err() == nil {
				n.log.Error("prune delivery history", "err", err)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
	})
	g.Go(func() error {
		t := time.NewTicker(n.syncEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				if err := n.reload(ctx); err != nil && ctx.Err() == nil {
					n.log.Error("reload alert rules and channels", "err", err)
				}
			}
		}
	})
	g.Go(func() error { return n.dispatcher.Run(ctx) })
}
