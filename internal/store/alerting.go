package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ---- alerts raised with notifications ----

// RaiseAlertNotify is [DB.RaiseAlert] that also enqueues notes (as
// [DB.EnqueueNotifications] does) when, and only when, the alert is newly
// raised, in the same transaction: the alert and its notifications commit
// together or not at all, so a crash can neither lose a notification nor
// send one for an alert that was never stored.
func (db *DB) RaiseAlertNotify(ctx context.Context, a Alert, notes []Notification) (Alert, bool, error) {
	return db.raiseAlert(ctx, a, 0, notes)
}

// RaiseAlertSuppressed is [DB.RaiseAlertNotify] with a suppression window:
// when no alert of the key (Type, ComputerID, Subject) is open but the
// newest one, now cleared, was raised less than window before a.RaisedAt,
// no alert is raised: the occurrence is counted on that cleared alert,
// which is returned with false. Checking and raising happen in one
// transaction, so manager nodes evaluating the same rule cannot both raise.
func (db *DB) RaiseAlertSuppressed(ctx context.Context, a Alert, window time.Duration, notes []Notification) (Alert, bool, error) {
	if window < 0 {
		return Alert{}, false, fmt.Errorf("raise alert %q: negative suppression window: %w", a.ID, ErrInvalid)
	}
	return db.raiseAlert(ctx, a, window, notes)
}

func (db *DB) raiseAlert(ctx context.Context, a Alert, window time.Duration, notes []Notification) (Alert, bool, error) {
	if a.ID == "" || a.Type == "" || a.RaisedAt.IsZero() {
		return Alert{}, false, fmt.Errorf("raise alert %q: empty ID or type, or zero time: %w", a.ID, ErrInvalid)
	}
	if err := checkNotifications(notes); err != nil {
		return Alert{}, false, fmt.Errorf("raise alert %q: %w", a.ID, err)
	}
	at := micros(a.RaisedAt)
	var got Alert
	var raised bool
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		// The open alert found below may be cleared before we count on it,
		// and the insert may lose to a concurrent one (PostgreSQL, read
		// committed): each statement sees what committed before it, so a
		// few rounds settle it.
		for range 5 {
			var err error
			got, err = scanAlert(tx.QueryRowContext(ctx, db.q.countOpenAlert, at, at, a.Type, a.ComputerID, a.Subject))
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			if window > 0 {
				last, err := scanAlert(tx.QueryRowContext(ctx, db.q.lastAlert, a.Type, a.ComputerID, a.Subject))
				switch {
				case err == nil && !last.ClearedAt.IsZero() && a.RaisedAt.Before(last.RaisedAt.Add(window)):
					got, err = scanAlert(tx.QueryRowContext(ctx, db.q.countAlert, at, at, last.ID))
					return err
				case err != nil && !errors.Is(err, sql.ErrNoRows):
					return err
				}
			}
			got, err = scanAlert(tx.QueryRowContext(ctx, db.q.insertAlert,
				a.ID, a.Type, a.Severity, a.ComputerID, a.Subject, a.RuleID, a.Message, a.Data, at, at))
			if err == nil {
				raised = true
				_, err = db.enqueue(ctx, tx, notes)
				return err
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		return fmt.Errorf("open %s alert for computer %q keeps changing: %w", a.Type, a.ComputerID, ErrConflict)
	})
	if err != nil {
		return Alert{}, false, db.fail(fmt.Sprintf("raise alert %q", a.ID), err)
	}
	return got, raised, nil
}

// LastAlert returns the newest alert, open or cleared, of a type, computer
// and subject; ErrNotFound if there was none.
func (db *DB) LastAlert(ctx context.Context, typ, computerID, subject string) (Alert, error) {
	a, err := scanAlert(db.db.QueryRowContext(ctx, db.q.lastAlert, typ, computerID, subject))
	if err != nil {
		return Alert{}, db.fail(fmt.Sprintf("last %s alert of computer %q subject %q", typ, computerID, subject), err)
	}
	return a, nil
}

// AckAlert acknowledges an open alert and returns it; ErrConflict if it was
// acknowledged or cleared already.
func (db *DB) AckAlert(ctx context.Context, id string, at time.Time, by string) (Alert, error) {
	if at.IsZero() {
		return Alert{}, fmt.Errorf("acknowledge alert %q: zero time: %w", id, ErrInvalid)
	}
	a, err := scanAlert(db.db.QueryRowContext(ctx, db.q.ackAlert, micros(at), by, id))
	if errors.Is(err, sql.ErrNoRows) {
		cur, err := db.GetAlert(ctx, id)
		switch {
		case err != nil:
			return Alert{}, fmt.Errorf("acknowledge alert: %w", err)
		case !cur.ClearedAt.IsZero():
			return Alert{}, fmt.Errorf("acknowledge alert %q: already cleared: %w", id, ErrConflict)
		}
		return Alert{}, fmt.Errorf("acknowledge alert %q: already acknowledged by %q: %w", id, cur.AckedBy, ErrConflict)
	}
	if err != nil {
		return Alert{}, db.fail(fmt.Sprintf("acknowledge alert %q", id), err)
	}
	return a, nil
}

// ---- alert rules ----

// AlertRule is a condition on events that raises alerts. The store keeps
// its definition as the rule engine's JSON without interpreting it.
type AlertRule struct {
	ID          string
	Name        string
	Enabled     bool
	Severity    string
	Definition  string // JSON object: filter, threshold, window, group-by, suppression
	Description string
	Version     int64 // 1 when created, bumped by every update
	CreatedAt   time.Time
	CreatedBy   string
	UpdatedAt   time.Time
	UpdatedBy   string
}

const alertRuleColumns = "id, name, enabled, severity, definition, description, version, created_at, created_by, updated_at, updated_by"

func scanAlertRule(s scanner) (AlertRule, error) {
	var r AlertRule
	var enabled int
	var created, updated sql.NullInt64
	if err := s.Scan(&r.ID, &r.Name, &enabled, &r.Severity, &r.Definition, &r.Description, &r.Version,
		&created, &r.CreatedBy, &updated, &r.UpdatedBy); err != nil {
		return AlertRule{}, err
	}
	r.Enabled = enabled != 0
	r.CreatedAt, r.UpdatedAt = fromMicros(created), fromMicros(updated)
	return r, nil
}

func checkAlertRule(r *AlertRule) error {
	if r.ID == "" || strings.TrimSpace(r.Name) == "" {
		return fmt.Errorf("ID and name are required: %w", ErrInvalid)
	}
	if r.Definition == "" {
		r.Definition = "{}"
	}
	if !json.Valid([]byte(r.Definition)) {
		return fmt.Errorf("definition is not JSON: %w", ErrInvalid)
	}
	return nil
}

// CreateAlertRule stores a new rule, created at r.CreatedAt by r.CreatedBy,
// and returns it at version 1. ErrConflict if its ID or name is taken.
func (db *DB) CreateAlertRule(ctx context.Context, r AlertRule) (AlertRule, error) {
	if err := checkAlertRule(&r); err != nil {
		return AlertRule{}, fmt.Errorf("create alert rule %q: %w", r.Name, err)
	}
	if r.CreatedAt.IsZero() {
		return AlertRule{}, fmt.Errorf("create alert rule %q: zero time: %w", r.Name, ErrInvalid)
	}
	r.Version, r.UpdatedAt, r.UpdatedBy = 1, r.CreatedAt, r.CreatedBy
	_, err := db.db.ExecContext(ctx, db.rb("INSERT INTO alert_rules ("+alertRuleColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
		r.ID, r.Name, boolInt(r.Enabled), r.Severity, r.Definition, r.Description, r.Version,
		micros(r.CreatedAt), r.CreatedBy, micros(r.UpdatedAt), r.UpdatedBy)
	if err != nil {
		return AlertRule{}, db.nameConflict(ctx, "create alert rule", "alert_rules", "an alert rule", r.ID, r.Name, err)
	}
	return db.GetAlertRule(ctx, r.ID)
}

// GetAlertRule returns one rule.
func (db *DB) GetAlertRule(ctx context.Context, id string) (AlertRule, error) {
	r, err := scanAlertRule(db.db.QueryRowContext(ctx, db.rb("SELECT "+alertRuleColumns+" FROM alert_rules WHERE id = ?"), id))
	if err != nil {
		return AlertRule{}, db.fail(fmt.Sprintf("get alert rule %q", id), err)
	}
	return r, nil
}

// ListAlertRules returns every rule, by name.
func (db *DB) ListAlertRules(ctx context.Context) ([]AlertRule, error) {
	rows, err := db.db.QueryContext(ctx, "SELECT "+alertRuleColumns+" FROM alert_rules ORDER BY name"+db.collate)
	if err != nil {
		return nil, db.fail("list alert rules", err)
	}
	defer rows.Close()
	var out []AlertRule
	for rows.Next() {
		r, err := scanAlertRule(rows)
		if err != nil {
			return nil, db.fail("list alert rules", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, db.fail("list alert rules", err)
	}
	return out, nil
}

// UpdateAlertRule replaces a rule's name, state, severity, definition and
// description, updated at r.UpdatedAt by r.UpdatedBy. With ifVersion > 0
// it refuses (ErrConflict) unless the stored version is that one, as
// [DB.UpdatePolicy] does. The returned rule has the next version.
func (db *DB) UpdateAlertRule(ctx context.Context, r AlertRule, ifVersion int64) (AlertRule, error) {
	if err := checkAlertRule(&r); err != nil {
		return AlertRule{}, fmt.Errorf("update alert rule %q: %w", r.ID, err)
	}
	if r.UpdatedAt.IsZero() {
		return AlertRule{}, fmt.Errorf("update alert rule %q: zero time: %w", r.ID, ErrInvalid)
	}
	err := db.updateVersioned(ctx, "alert_rules", "alert rule", r.ID, ifVersion, func(tx *sql.Tx, cur int64) (sql.Result, error) {
		return tx.ExecContext(ctx, db.rb(`UPDATE alert_rules SET name = ?, enabled = ?, severity = ?, definition = ?, description = ?,
			version = ?, updated_at = ?, updated_by = ? WHERE id = ? AND version = ?`),
			r.Name, boolInt(r.Enabled), r.Severity, r.Definition, r.Description, cur+1, micros(r.UpdatedAt), r.UpdatedBy, r.ID, cur)
	})
	if err != nil {
		return AlertRule{}, db.nameConflict(ctx, "update alert rule", "alert_rules", "an alert rule", r.ID, r.Name, err)
	}
	return db.GetAlertRule(ctx, r.ID)
}

// DeleteAlertRule removes a rule. The alerts it raised stay.
func (db *DB) DeleteAlertRule(ctx context.Context, id string) error {
	res, err := db.db.ExecContext(ctx, db.rb("DELETE FROM alert_rules WHERE id = ?"), id)
	if err == nil {
		err = expectOne(res)
	}
	if err != nil {
		return db.fail(fmt.Sprintf("delete alert rule %q", id), err)
	}
	return nil
}

// ---- notification channels ----

// Channel is where notifications go: a mail relay, a syslog server, a
// webhook. Config holds the sender's JSON configuration, secrets included
// (callers showing it must redact them); Routes the JSON list of routes
// that select what the channel receives.
type Channel struct {
	ID        string
	Name      string
	Kind      string // smtp, syslog, webhook
	Enabled   bool
	Config    string // JSON object
	Routes    string // JSON array
	Version   int64  // 1 when created, bumped by every update
	CreatedAt time.Time
	CreatedBy string
	UpdatedAt time.Time
	UpdatedBy string
}

const channelColumns = "id, name, kind, enabled, config, routes, version, created_at, created_by, updated_at, updated_by"

func scanChannel(s scanner) (Channel, error) {
	var c Channel
	var enabled int
	var created, updated sql.NullInt64
	if err := s.Scan(&c.ID, &c.Name, &c.Kind, &enabled, &c.Config, &c.Routes, &c.Version,
		&created, &c.CreatedBy, &updated, &c.UpdatedBy); err != nil {
		return Channel{}, err
	}
	c.Enabled = enabled != 0
	c.CreatedAt, c.UpdatedAt = fromMicros(created), fromMicros(updated)
	return c, nil
}

func checkChannel(c *Channel) error {
	if c.ID == "" || strings.TrimSpace(c.Name) == "" || c.Kind == "" {
		return fmt.Errorf("ID, name and kind are required: %w", ErrInvalid)
	}
	if c.Config == "" {
		c.Config = "{}"
	}
	if c.Routes == "" {
		c.Routes = "[]"
	}
	if !json.Valid([]byte(c.Config)) || !json.Valid([]byte(c.Routes)) {
		return fmt.Errorf("config or routes is not JSON: %w", ErrInvalid)
	}
	return nil
}

// CreateChannel stores a new channel, created at c.CreatedAt by
// c.CreatedBy, and returns it at version 1. ErrConflict if its ID or name
// is taken.
func (db *DB) CreateChannel(ctx context.Context, c Channel) (Channel, error) {
	if err := checkChannel(&c); err != nil {
		return Channel{}, fmt.Errorf("create channel %q: %w", c.Name, err)
	}
	if c.CreatedAt.IsZero() {
		return Channel{}, fmt.Errorf("create channel %q: zero time: %w", c.Name, ErrInvalid)
	}
	c.Version, c.UpdatedAt, c.UpdatedBy = 1, c.CreatedAt, c.CreatedBy
	_, err := db.db.ExecContext(ctx, db.rb("INSERT INTO channels ("+channelColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
		c.ID, c.Name, c.Kind, boolInt(c.Enabled), c.Config, c.Routes, c.Version,
		micros(c.CreatedAt), c.CreatedBy, micros(c.UpdatedAt), c.UpdatedBy)
	if err != nil {
		return Channel{}, db.nameConflict(ctx, "create channel", "channels", "a channel", c.ID, c.Name, err)
	}
	return db.GetChannel(ctx, c.ID)
}

// GetChannel returns one channel.
func (db *DB) GetChannel(ctx context.Context, id string) (Channel, error) {
	c, err := scanChannel(db.db.QueryRowContext(ctx, db.rb("SELECT "+channelColumns+" FROM channels WHERE id = ?"), id))
	if err != nil {
		return Channel{}, db.fail(fmt.Sprintf("get channel %q", id), err)
	}
	return c, nil
}

// ListChannels returns every channel, by name.
func (db *DB) ListChannels(ctx context.Context) ([]Channel, error) {
	rows, err := db.db.QueryContext(ctx, "SELECT "+channelColumns+" FROM channels ORDER BY name"+db.collate)
	if err != nil {
		return nil, db.fail("list channels", err)
	}
	defer rows.Close()
	var out []Channel
	for rows.Next() {
		c, err := scanChannel(rows)
		if err != nil {
			return nil, db.fail("list channels", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, db.fail("list channels", err)
	}
	return out, nil
}

// UpdateChannel replaces a channel's name, kind, state, config and routes,
// updated at c.UpdatedAt by c.UpdatedBy. With ifVersion > 0 it refuses
// (ErrConflict) unless the stored version is that one. The returned
// channel has the next version. Notifications already in the outbox go out
// with the new configuration.
func (db *DB) UpdateChannel(ctx context.Context, c Channel, ifVersion int64) (Channel, error) {
	if err := checkChannel(&c); err != nil {
		return Channel{}, fmt.Errorf("update channel %q: %w", c.ID, err)
	}
	if c.UpdatedAt.IsZero() {
		return Channel{}, fmt.Errorf("update channel %q: zero time: %w", c.ID, ErrInvalid)
	}
	err := db.updateVersioned(ctx, "channels", "channel", c.ID, ifVersion, func(tx *sql.Tx, cur int64) (sql.Result, error) {
		return tx.ExecContext(ctx, db.rb(`UPDATE channels SET name = ?, kind = ?, enabled = ?, config = ?, routes = ?,
			version = ?, updated_at = ?, updated_by = ? WHERE id = ? AND version = ?`),
			c.Name, c.Kind, boolInt(c.Enabled), c.Config, c.Routes, cur+1, micros(c.UpdatedAt), c.UpdatedBy, c.ID, cur)
	})
	if err != nil {
		return Channel{}, db.nameConflict(ctx, "update channel", "channels", "a channel", c.ID, c.Name, err)
	}
	return db.GetChannel(ctx, c.ID)
}

// DeleteChannel removes a channel. Its notifications still in the outbox
// are discarded at the given time by the given principal, recorded in
// deliveries, in the same transaction.
func (db *DB) DeleteChannel(ctx context.Context, id string, at time.Time, by string) error {
	if at.IsZero() {
		return fmt.Errorf("delete channel %q: zero time: %w", id, ErrInvalid)
	}
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, db.rb("DELETE FROM channels WHERE id = ?"), id)
		if err != nil {
			return err
		}
		if err := expectOne(res); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, db.rb(`INSERT INTO deliveries (`+deliveryColumns+`)
			SELECT id, channel_id, kind, CAST(? AS TEXT), attempts, created_at, CAST(? AS BIGINT), CAST(? AS TEXT), last_error FROM outbox WHERE channel_id = ?
			ON CONFLICT (id) DO UPDATE SET status = excluded.status, attempts = excluded.attempts,
				finished_at = excluded.finished_at, finished_by = excluded.finished_by, last_error = excluded.last_error`),
			DeliveryDiscarded, micros(at), by, id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, db.rb("DELETE FROM outbox WHERE channel_id = ?"), id)
		return err
	})
	if err != nil {
		return db.fail(fmt.Sprintf("delete channel %q", id), err)
	}
	return nil
}

// ---- helpers ----

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// updateVersioned runs update, a conditional UPDATE of the row id of table
// from version cur to cur+1, after checking ifVersion (when > 0) against
// the stored version.
func (db *DB) updateVersioned(ctx context.Context, table, what, id string, ifVersion int64, update func(tx *sql.Tx, cur int64) (sql.Result, error)) error {
	return db.inTx(ctx, func(tx *sql.Tx) error {
		var cur int64
		if err := tx.QueryRowContext(ctx, db.rb("SELECT version FROM "+table+" WHERE id = ?"), id).Scan(&cur); err != nil {
			return err
		}
		if ifVersion > 0 && cur != ifVersion {
			return fmt.Errorf("%s %q is at version %d, not %d (someone else changed it; reload and retry): %w", what, id, cur, ifVersion, ErrConflict)
		}
		res, err := update(tx, cur)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%s %q changed meanwhile: %w", what, id, ErrConflict)
		}
		return nil
	})
}

// nameConflict wraps a failed write of a named record, saying which of
// its ID and its name is taken when the engine reports a unique violation.
func (db *DB) nameConflict(ctx context.Context, op, table, a, id, name string, err error) error {
	if !db.d.IsUniqueViolation(err) {
		return db.fail(fmt.Sprintf("%s %q", op, name), err)
	}
	var other string
	qerr := db.db.QueryRowContext(ctx, db.rb("SELECT id FROM "+table+" WHERE name = ?"), name).Scan(&other)
	if qerr == nil && other != id {
		return fmt.Errorf("%s: %s named %q exists already: %w", op, a, name, ErrConflict)
	}
	return fmt.Errorf("%s %q: ID %q is taken: %w", op, name, id, ErrConflict)
}
