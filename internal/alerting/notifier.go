package alerting

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/yagura/yagura/internal/notify"
	"github.com/yagura/yagura/internal/store"
	"github.com/yagura/yagura/internal/telemetry"
)

// Routes picks the channels a notification goes to.
type Routes interface {
	Match(source, typ, severity string) []store.Channel
}

// Store is where alerts and their notifications are written.
type Store interface {
	RaiseAlertSuppressed(ctx context.Context, a store.Alert, window time.Duration, notes []store.Notification) (store.Alert, bool, error)
	EnqueueNotifications(ctx context.Context, notes []store.Notification) (int, error)
}

// Notifier raises alerts together with the notifications their routes ask
// for, and forwards events to the channels that want them. It implements
// Raiser and telemetry.Observer.
type Notifier struct {
	store    Store
	routes   Routes
	id       func(channelID, key string) string
	hostname func(id string) string
	now      func() time.Time
	// wake tells the dispatcher there is work (nil: it polls).
	wake func()
}

// NewNotifier returns a notifier. id makes a notification's ID from its
// channel and cause (outbox.NotificationID); wake may be nil.
func NewNotifier(s Store, r Routes, id func(channelID, key string) string, hostname func(string) string, wake func()) *Notifier {
	return &Notifier{store: s, routes: r, id: id, hostname: hostname, now: time.Now, wake: wake}
}

// Raise stores a and, when it is newly raised, its notifications — in one
// transaction.
func (n *Notifier) Raise(ctx context.Context, a store.Alert, suppress time.Duration) (store.Alert, bool, error) {
	var notes []store.Notification
	if chans := n.routes.Match("alerts", a.Type, a.Severity); len(chans) > 0 {
		payload, err := json.Marshal(AlertMessage(a, n.hostname(AlertComputer(a))))
		if err != nil {
			return store.Alert{}, false, fmt.Errorf("encode notification of alert %s: %w", a.ID, err)
		}
		for _, ch := range chans {
			notes = append(notes, store.Notification{
				ID: n.id(ch.ID, "alert:"+a.ID), ChannelID: ch.ID, Kind: "alert", CreatedAt: a.RaisedAt, Payload: string(payload),
			})
		}
	}
	got, raised, err := n.store.RaiseAlertSuppressed(ctx, a, suppress, notes)
	if err == nil && raised && len(notes) > 0 && n.wake != nil {
		n.wake()
	}
	return got, raised, err
}

// RaiseAlert is Raise without suppression, for the fleet monitor.
func (n *Notifier) RaiseAlert(ctx context.Context, a store.Alert) (store.Alert, bool, error) {
	return n.Raise(ctx, a, 0)
}

// ObserveEvents enqueues the events that channels' routes select. A resent
// batch makes the same notification IDs, which the outbox skips.
func (n *Notifier) ObserveEvents(ctx context.Context, evs []telemetry.Event) error {
	var notes []store.Notification
	for _, e := range evs {
		chans := n.routes.Match("events", e.Type, e.Severity)
		if len(chans) == 0 {
			continue
		}
		payload, err := json.Marshal(EventMessage(e, n.hostname(e.ComputerID)))
		if err != nil {
			return fmt.Errorf("encode notification of event %s: %w", e.ID, err)
		}
		for _, ch := range chans {
			notes = append(notes, store.Notification{
				ID: n.id(ch.ID, "event:"+e.ComputerID+"/"+e.ID), ChannelID: ch.ID, Kind: "event", CreatedAt: n.now(), Payload: string(payload),
			})
		}
	}
	if len(notes) == 0 {
		return nil
	}
	if _, err := n.store.EnqueueNotifications(ctx, notes); err != nil {
		return fmt.Errorf("enqueue %d event notifications: %w", len(notes), err)
	}
	if n.wake != nil {
		n.wake()
	}
	return nil
}

// Japanese names of the built-in alert types, for subjects and bodies.
var alertTypeJA = map[string]string{
	"computer-offline":      "コンピューターがオフラインです",
	"clock-drift":           "コンピューターの時刻がずれています",
	"policy-out-of-date":    "ポリシーが最新ではありません",
	AlertEventsDropped:      "エージェントがイベントを破棄しました",
	AlertPolicyFailed:       "ポリシーを適用できませんでした",
	AlertIsolationFailed:    "ネットワーク隔離に失敗しました",
	AlertNotificationFailed: "通知を配信できませんでした",
}

var severityJA = map[string]string{"critical": "重大", "error": "エラー", "warning": "警告", "info": "情報"}

// AlertMessage is the notification for an alert, in Japanese and English.
func AlertMessage(a store.Alert, hostname string) notify.Message {
	ja := alertTypeJA[a.Type]
	if strings.HasPrefix(a.Type, RuleAlertPrefix) {
		var d struct {
			Rule string `json:"rule"`
		}
		_ = json.Unmarshal([]byte(a.Data), &d)
		ja = "アラートルール「" + d.Rule + "」の条件に達しました"
	}
	if ja == "" {
		ja = a.Type
	}
	sev := severityJA[a.Severity] + " / " + a.Severity
	computer := AlertComputer(a)
	who := hostname
	if who == "" {
		who = computer
	}
	title := fmt.Sprintf("【Yagura】[%s] %s", sev, ja)
	if who != "" {
		title += " - " + who
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n%s\n\n", ja, a.Message)
	fmt.Fprintf(&b, "種類 / Type:         %s\n", a.Type)
	fmt.Fprintf(&b, "重要度 / Severity:   %s\n", sev)
	if who != "" {
		fmt.Fprintf(&b, "コンピューター / Computer: %s (%s)\n", who, computer)
	}
	if a.Subject != "" {
		fmt.Fprintf(&b, "対象 / Subject:      %s\n", a.Subject)
	}
	fmt.Fprintf(&b, "発生 / Raised:       %s\n", a.RaisedAt.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "アラート ID / Alert: %s\n", a.ID)
	fields := map[string]string{"alert_id": a.ID}
	if a.Subject != "" {
		if k, v, ok := strings.Cut(a.Subject, "="); ok {
			fields[k] = v
		}
	}
	if a.RuleID != "" {
		fields["rule_id"] = a.RuleID
	}
	return notify.Message{
		ID: a.ID, Kind: "alert", Time: a.RaisedAt.UTC(), Type: a.Type, Severity: a.Severity,
		Title: title, Text: b.String(), ComputerID: computer, Hostname: hostname, Fields: fields,
	}
}

// AlertComputer is the computer an alert is about: its own, or for a rule
// grouped by a data field, the one computer its burst came from (if one).
func AlertComputer(a store.Alert) string {
	if a.ComputerID != "" || a.Data == "" {
		return a.ComputerID
	}
	var d struct {
		ComputerID string `json:"computer_id"`
	}
	_ = json.Unmarshal([]byte(a.Data), &d)
	return d.ComputerID
}

// EventMessage is the notification forwarding an event: its top-level data
// fields become message fields (src, dst, action… map onto CEF keys).
func EventMessage(e telemetry.Event, hostname string) notify.Message {
	fields := map[string]string{}
	ev := decode(e)
	for k := range ev.fields() {
		if v, ok := ev.field(k); ok {
			fields[k] = v
		}
	}
	title := fmt.Sprintf("[%s] %s", e.Severity, e.Type)
	if hostname != "" {
		title += " - " + hostname
	}
	return notify.Message{
		ID: e.ComputerID + "/" + e.ID, Kind: "event", Time: e.Time.UTC(), Type: e.Type, Severity: e.Severity,
		Title: title, Text: e.Data, ComputerID: e.ComputerID, Hostname: hostname, Fields: fields,
	}
}

// TestMessage is what "send test" delivers: it says which channel, who
// asked and when, in Japanese and English.
func TestMessage(channelID, channelName, by string, at time.Time) notify.Message {
	id := "test-" + NewID()
	return notify.Message{
		ID: id, Kind: "test", Time: at.UTC(), Type: "test", Severity: "info",
		Title: "【Yagura】テスト通知 / Test notification: " + channelName,
		Text: fmt.Sprintf("これは Yagura からのテスト通知です。このメッセージが届いていれば、通知チャネル「%s」は正しく設定されています。\n"+
			"This is a test notification from Yagura. If you can read it, the channel %q works.\n\n"+
			"チャネル / Channel: %s (%s)\n送信者 / Sent by: %s\n日時 / Time: %s\n", channelName, channelName, channelName, channelID, by, at.UTC().Format(time.RFC3339)),
		Fields: map[string]string{"channel": channelName, "requested_by": by},
	}
}
