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

// The outbox holds notifications until a dispatcher delivers them. Each is
// for one channel; a channel's notifications go out one at a time, oldest
// first, by one dispatcher at a time, so several manager nodes may run
// dispatchers on one store. A dispatcher claims them for a lease, renews
// the lease before each send, and then completes, retries or fails them;
// every such call names the lease owner and is refused (ErrConflict) once
// another dispatcher has taken the notification over.

// Notification statuses in the outbox.
const (
	NotificationPending = "pending"
	// NotificationFailed: given up on. It stays in the outbox, visible,
	// until an administrator requeues or discards it.
	NotificationFailed = "failed"
)

// Delivery statuses.
const (
	DeliveryDelivered = "delivered"
	DeliveryFailed    = "failed"
	DeliveryDiscarded = "discarded"
)

// Notification is a message for one channel in the outbox.
type Notification struct {
	// ID is derived from what the notification is about and the channel,
	// so the same cause never notifies a channel twice.
	ID        string
	ChannelID string
	Kind      string // alert, event, test
	Status    string // NotificationPending or NotificationFailed
	CreatedAt time.Time
	// NextAt: not sent before. Zero when enqueueing: CreatedAt.
	NextAt        time.Time
	Attempts      int // failed attempts so far
	LastError     string
	LastAttemptAt time.Time
	LeaseUntil    time.Time // claimed until then by LeaseOwner
	LeaseOwner    string
	Payload       string // JSON message
}

// Delivery is what became of a notification that left the outbox, or that
// failed.
type Delivery struct {
	ID         string
	ChannelID  string
	Kind       string
	Status     string // DeliveryDelivered, DeliveryFailed or DeliveryDiscarded
	Attempts   int    // every attempt, the last included
	CreatedAt  time.Time
	FinishedAt time.Time
	FinishedBy string // the dispatcher that delivered or gave up; who discarded
	LastError  string // the last error, even if a later attempt succeeded
}

// NotificationFilter selects notifications in the outbox; zero fields do
// not filter.
type NotificationFilter struct {
	Status    string
	ChannelID string
	Limit     int // 0: no limit
}

// DeliveryFilter selects deliveries; zero fields do not filter.
type DeliveryFilter struct {
	ChannelID string
	Status    string
	Since     time.Time // FinishedAt >= Since
	Limit     int       // 0: no limit
}

// OutboxStat counts one channel's notifications in the outbox.
type OutboxStat struct {
	Pending int
	Failed  int
	// Oldest is when the oldest pending notification was created (zero
	// when none is pending): how far behind the channel is.
	Oldest time.Time
}

const notificationColumns = "id, channel_id, kind, status, created_at, next_at, attempts, last_error, last_attempt_at, lease_until, lease_owner, payload"

const deliveryColumns = "id, channel_id, kind, status, attempts, created_at, finished_at, finished_by, last_error"

func scanNotification(s scanner) (Notification, error) {
	var n Notification
	var created, next, last, lease sql.NullInt64
	if err := s.Scan(&n.ID, &n.ChannelID, &n.Kind, &n.Status, &created, &next, &n.Attempts, &n.LastError,
		&last, &lease, &n.LeaseOwner, &n.Payload); err != nil {
		return Notification{}, err
	}
	n.CreatedAt, n.NextAt = fromMicros(created), fromMicros(next)
	n.LastAttemptAt, n.LeaseUntil = fromMicros(last), fromMicros(lease)
	return n, nil
}

func scanDelivery(s scanner) (Delivery, error) {
	var d Delivery
	var created, finished sql.NullInt64
	if err := s.Scan(&d.ID, &d.ChannelID, &d.Kind, &d.Status, &d.Attempts, &created, &finished, &d.FinishedBy, &d.LastError); err != nil {
		return Delivery{}, err
	}
	d.CreatedAt, d.FinishedAt = fromMicros(created), fromMicros(finished)
	return d, nil
}

func checkNotifications(ns []Notification) error {
	for _, n := range ns {
		if n.ID == "" || n.ChannelID == "" || n.Kind == "" || n.CreatedAt.IsZero() {
			return fmt.Errorf("notification %q for channel %q lacks ID, channel, kind or time: %w", n.ID, n.ChannelID, ErrInvalid)
		}
		if !json.Valid([]byte(n.Payload)) {
			return fmt.Errorf("notification %q: payload is not JSON: %w", n.ID, ErrInvalid)
		}
	}
	return nil
}

// EnqueueNotifications adds pending notifications to the outbox in one
// transaction and says how many were new. A notification whose ID is in
// the outbox or in deliveries already is skipped, so a resent batch does
// not notify twice; so is one for a channel that does not exist (deleted
// since it was routed). Status, attempts, errors and leases of ns are
// ignored.
func (db *DB) EnqueueNotifications(ctx context.Context, ns []Notification) (int, error) {
	if len(ns) == 0 {
		return 0, nil
	}
	if err := checkNotifications(ns); err != nil {
		return 0, fmt.Errorf("enqueue notifications: %w", err)
	}
	var added int
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		added, err = db.enqueue(ctx, tx, ns)
		return err
	})
	if err != nil {
		return 0, db.fail(fmt.Sprintf("enqueue %d notifications", len(ns)), err)
	}
	return added, nil
}

// enqueue inserts checked notifications inside tx.
func (db *DB) enqueue(ctx context.Context, tx *sql.Tx, ns []Notification) (int, error) {
	if len(ns) == 0 {
		return 0, nil
	}
	channels := map[string]bool{}
	added := 0
	for _, n := range ns {
		known, ok := channels[n.ChannelID]
		if !ok {
			var one int
			err := tx.QueryRowContext(ctx, db.rb("SELECT 1 FROM channels WHERE id = ?"), n.ChannelID).Scan(&one)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return 0, err
			}
			known = err == nil
			channels[n.ChannelID] = known
		}
		if !known {
			continue
		}
		next := n.NextAt
		if next.IsZero() {
			next = n.CreatedAt
		}
		res, err := tx.ExecContext(ctx, db.rb(`INSERT INTO outbox (id, channel_id, kind, status, created_at, next_at, payload)
			VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`),
			n.ID, n.ChannelID, n.Kind, NotificationPending, micros(n.CreatedAt), micros(next), n.Payload)
		if err != nil {
			return 0, err
		}
		if k, err := res.RowsAffected(); err != nil || k == 0 {
			continue
		}
		// Checked after the insert, in a later statement. A dispatcher
		// completing the same ID concurrently moves it from the outbox to
		// deliveries in one transaction; on PostgreSQL our insert either
		// found its row and did nothing, or waited for its commit, which
		// this statement then sees.
		var one int
		err = tx.QueryRowContext(ctx, db.rb("SELECT 1 FROM deliveries WHERE id = ?"), n.ID).Scan(&one)
		switch {
		case err == nil:
			if _, err := tx.ExecContext(ctx, db.rb("DELETE FROM outbox WHERE id = ?"), n.ID); err != nil {
				return 0, err
			}
			continue
		case !errors.Is(err, sql.ErrNoRows):
			return 0, err
		}
		added++
	}
	return added, nil
}

// ClaimNotifications leases due notifications to owner until now+lease
// and returns them, each channel's in the order they must be sent (oldest
// first). It takes at most limit notifications per channel, and only from
// enabled channels whose oldest pending notification is due (next_at <=
// now: a channel waiting out a retry's backoff keeps its order) and not
// leased, by owner or another: a channel is worked by one dispatcher at a
// time, so its notifications are neither sent twice at once nor out of
// order. The leases are taken with conditional UPDATEs, so concurrent
// claimers (goroutines, manager nodes) never get the same notification.
func (db *DB) ClaimNotifications(ctx context.Context, owner string, now time.Time, lease time.Duration, limit int) ([]Notification, error) {
	if owner == "" || now.IsZero() || lease <= 0 || limit <= 0 {
		return nil, fmt.Errorf("claim notifications: empty owner, zero time, or non-positive lease or limit: %w", ErrInvalid)
	}
	nowUS, until := now.UnixMicro(), now.Add(lease)
	// Read first, outside a transaction: an idle outbox, polled every
	// second by every node, then costs no write lock (SQLite takes it at
	// BEGIN). The UPDATEs below re-check everything this read saw.
	channels, err := db.dueChannels(ctx, db.db, nowUS)
	if err != nil || len(channels) == 0 {
		if err != nil {
			return nil, db.fail("claim notifications for "+owner, err)
		}
		return nil, nil
	}
	var out []Notification
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		out = out[:0]
		for _, ch := range channels {
			ns, err := db.listNotifications(ctx, tx, NotificationFilter{ChannelID: ch, Status: NotificationPending, Limit: limit})
			if err != nil {
				return err
			}
			if len(ns) == 0 || ns[0].NextAt.After(now) || ns[0].LeaseUntil.After(now) {
				continue
			}
			// The oldest first: whoever leases it has the channel. Stop at
			// the first one that is not due or someone else holds.
			for _, n := range ns {
				if n.NextAt.After(now) {
					break
				}
				res, err := tx.ExecContext(ctx, db.rb(`UPDATE outbox SET lease_owner = ?, lease_until = ?
					WHERE id = ? AND status = ? AND (lease_until IS NULL OR lease_until <= ?)`),
					owner, until.UnixMicro(), n.ID, NotificationPending, nowUS)
				if err != nil {
					return err
				}
				if k, err := res.RowsAffected(); err != nil || k == 0 {
					break
				}
				n.LeaseOwner, n.LeaseUntil = owner, until.UTC().Truncate(time.Microsecond)
				out = append(out, n)
			}
		}
		return nil
	})
	if err != nil {
		return nil, db.fail("claim notifications for "+owner, err)
	}
	return out, nil
}

// dueChannels lists the enabled channels with due pending notifications.
func (db *DB) dueChannels(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, nowUS int64) ([]string, error) {
	rows, err := q.QueryContext(ctx, db.rb(`SELECT DISTINCT o.channel_id FROM outbox o JOIN channels c ON c.id = o.channel_id
		WHERE o.status = ? AND o.next_at <= ? AND c.enabled = 1 ORDER BY o.channel_id`), NotificationPending, nowUS)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var channels []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		channels = append(channels, id)
	}
	return channels, rows.Err()
}

type rowQuerier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// notOwned explains why a conditional write of a notification leased to
// owner matched nothing: it is gone (ErrNotFound), or not pending, or
// leased to another (ErrConflict).
func (db *DB) notOwned(ctx context.Context, q rowQuerier, id, owner string) error {
	n, err := scanNotification(q.QueryRowContext(ctx, db.rb("SELECT "+notificationColumns+" FROM outbox WHERE id = ?"), id))
	if err != nil {
		return err
	}
	if n.Status != NotificationPending {
		return fmt.Errorf("notification is %s: %w", n.Status, ErrConflict)
	}
	return fmt.Errorf("notification is leased to %q, not %q: %w", n.LeaseOwner, owner, ErrConflict)
}

// notFailed explains why a write of a failed notification matched nothing.
func (db *DB) notFailed(ctx context.Context, q rowQuerier, id string) error {
	var status string
	if err := q.QueryRowContext(ctx, db.rb("SELECT status FROM outbox WHERE id = ?"), id).Scan(&status); err != nil {
		return err
	}
	return fmt.Errorf("notification is %s, not failed: %w", status, ErrConflict)
}

// RenewNotification extends owner's lease of a pending notification until
// the given time; a dispatcher renews before each send so that a slow
// channel cannot lose its lease mid-send. ErrConflict if another
// dispatcher has taken it over.
func (db *DB) RenewNotification(ctx context.Context, id, owner string, until time.Time) error {
	res, err := db.db.ExecContext(ctx, db.rb("UPDATE outbox SET lease_until = ? WHERE id = ? AND lease_owner = ? AND status = ?"),
		micros(until), id, owner, NotificationPending)
	if err == nil {
		if n, _ := res.RowsAffected(); n == 0 {
			err = db.notOwned(ctx, db.db, id, owner)
		}
	}
	if err != nil {
		return db.fail(fmt.Sprintf("renew lease of notification %q", id), err)
	}
	return nil
}

// ReleaseNotifications gives up owner's leases of the given notifications
// without counting an attempt, so that they can be claimed at once (by a
// dispatcher shutting down, or one that stops working a channel). Those
// no longer leased to owner are left alone.
func (db *DB) ReleaseNotifications(ctx context.Context, owner string, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	args := []any{owner}
	for _, id := range ids {
		args = append(args, id)
	}
	_, err := db.db.ExecContext(ctx, db.rb("UPDATE outbox SET lease_owner = '', lease_until = NULL WHERE lease_owner = ? AND id IN (?"+strings.Repeat(", ?", len(ids)-1)+")"), args...)
	if err != nil {
		return db.fail(fmt.Sprintf("release %d notifications", len(ids)), err)
	}
	return nil
}

// finish removes a notification from the outbox, or marks it failed, and
// records the outcome in deliveries, in one transaction. take is a
// conditional statement returning channel_id, kind, attempts, created_at
// and last_error of the notification it matched.
func (db *DB) finish(ctx context.Context, op, id string, take string, takeArgs []any, explain func(*sql.Tx) error, status string, extraAttempt int, at time.Time, by, lastErr string) error {
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		d := Delivery{ID: id, Status: status, FinishedAt: at, FinishedBy: by}
		var created sql.NullInt64
		err := tx.QueryRowContext(ctx, db.rb(take), takeArgs...).Scan(&d.ChannelID, &d.Kind, &d.Attempts, &created, &d.LastError)
		if errors.Is(err, sql.ErrNoRows) {
			return explain(tx)
		}
		if err != nil {
			return err
		}
		d.Attempts += extraAttempt
		if lastErr != "" {
			d.LastError = lastErr
		}
		_, err = tx.ExecContext(ctx, db.rb(`INSERT INTO deliveries (`+deliveryColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET status = excluded.status, attempts = excluded.attempts,
				finished_at = excluded.finished_at, finished_by = excluded.finished_by, last_error = excluded.last_error`),
			d.ID, d.ChannelID, d.Kind, d.Status, d.Attempts, created, micros(d.FinishedAt), d.FinishedBy, d.LastError)
		return err
	})
	if err != nil {
		return db.fail(fmt.Sprintf("%s notification %q", op, id), err)
	}
	return nil
}

// CompleteNotification records that owner delivered a notification: it
// leaves the outbox and a delivered row enters deliveries, in one
// transaction. ErrConflict if owner no longer holds it.
func (db *DB) CompleteNotification(ctx context.Context, id, owner string, at time.Time) error {
	if at.IsZero() {
		return fmt.Errorf("complete notification %q: zero time: %w", id, ErrInvalid)
	}
	// RETURNING of a DELETE gives the row as it was.
	return db.finish(ctx, "complete", id,
		"DELETE FROM outbox WHERE id = ? AND lease_owner = ? AND status = ? RETURNING channel_id, kind, attempts, created_at, last_error",
		[]any{id, owner, NotificationPending}, func(tx *sql.Tx) error { return db.notOwned(ctx, tx, id, owner) },
		DeliveryDelivered, 1, at, owner, "")
}

// CompleteNotifications is CompleteNotification for several notifications
// in one transaction (a dispatcher records a run of sends at once, so a
// fast receiver is not held to one commit per message). It returns the IDs
// it completed; one owner no longer holds is skipped, not an error.
func (db *DB) CompleteNotifications(ctx context.Context, ids []string, owner string, at time.Time) ([]string, error) {
	if at.IsZero() {
		return nil, fmt.Errorf("complete %d notifications: zero time: %w", len(ids), ErrInvalid)
	}
	var done []string
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		done = done[:0]
		take, err := tx.PrepareContext(ctx, db.rb("DELETE FROM outbox WHERE id = ? AND lease_owner = ? AND status = ? RETURNING channel_id, kind, attempts, created_at, last_error"))
		if err != nil {
			return err
		}
		defer take.Close()
		put, err := tx.PrepareContext(ctx, db.rb(`INSERT INTO deliveries (`+deliveryColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET status = excluded.status, attempts = excluded.attempts,
				finished_at = excluded.finished_at, finished_by = excluded.finished_by, last_error = excluded.last_error`))
		if err != nil {
			return err
		}
		defer put.Close()
		for _, id := range ids {
			var ch, kind, lastErr string
			var attempts int
			var created sql.NullInt64
			err := take.QueryRowContext(ctx, id, owner, NotificationPending).Scan(&ch, &kind, &attempts, &created, &lastErr)
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			if err != nil {
				return err
			}
			if _, err := put.ExecContext(ctx, id, ch, kind, DeliveryDelivered, attempts+1, created, micros(at), owner, lastErr); err != nil {
				return err
			}
			done = append(done, id)
		}
		return nil
	})
	if err != nil {
		return nil, db.fail(fmt.Sprintf("complete %d notifications", len(ids)), err)
	}
	return done, nil
}

// RetryNotification records owner's failed attempt at a (at, lastErr) and
// schedules the next one at nextAt; the lease is released. ErrConflict if
// owner no longer holds it.
func (db *DB) RetryNotification(ctx context.Context, id, owner string, at, nextAt time.Time, lastErr string) error {
	if at.IsZero() || nextAt.IsZero() {
		return fmt.Errorf("retry notification %q: zero time: %w", id, ErrInvalid)
	}
	res, err := db.db.ExecContext(ctx, db.rb(`UPDATE outbox SET attempts = attempts + 1, last_error = ?, last_attempt_at = ?, next_at = ?,
		lease_owner = '', lease_until = NULL WHERE id = ? AND lease_owner = ? AND status = ?`),
		lastErr, micros(at), micros(nextAt), id, owner, NotificationPending)
	if err == nil {
		if n, _ := res.RowsAffected(); n == 0 {
			err = db.notOwned(ctx, db.db, id, owner)
		}
	}
	if err != nil {
		return db.fail(fmt.Sprintf("retry notification %q", id), err)
	}
	return nil
}

// FailNotification records owner's last, failed attempt at a notification
// and gives up on it: it stays in the outbox as failed, visible, and a
// failed row enters deliveries. ErrConflict if owner no longer holds it.
func (db *DB) FailNotification(ctx context.Context, id, owner string, at time.Time, lastErr string) error {
	if at.IsZero() {
		return fmt.Errorf("fail notification %q: zero time: %w", id, ErrInvalid)
	}
	return db.finish(ctx, "fail", id,
		`UPDATE outbox SET status = ?, attempts = attempts + 1, last_error = ?, last_attempt_at = ?, lease_owner = '', lease_until = NULL
			WHERE id = ? AND lease_owner = ? AND status = ? RETURNING channel_id, kind, attempts, created_at, last_error`,
		[]any{NotificationFailed, lastErr, micros(at), id, owner, NotificationPending},
		func(tx *sql.Tx) error { return db.notOwned(ctx, tx, id, owner) },
		DeliveryFailed, 0, at, owner, lastErr)
}

// RequeueNotification makes a failed notification pending again, due at
// at, for an administrator who retries it; its attempts are kept and its
// failed delivery row is removed. ErrConflict unless it is failed.
func (db *DB) RequeueNotification(ctx context.Context, id string, at time.Time) error {
	if at.IsZero() {
		return fmt.Errorf("requeue notification %q: zero time: %w", id, ErrInvalid)
	}
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, db.rb("UPDATE outbox SET status = ?, next_at = ?, lease_owner = '', lease_until = NULL WHERE id = ? AND status = ?"),
			NotificationPending, micros(at), id, NotificationFailed)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return db.notFailed(ctx, tx, id)
		}
		_, err = tx.ExecContext(ctx, db.rb("DELETE FROM deliveries WHERE id = ?"), id)
		return err
	})
	if err != nil {
		return db.fail(fmt.Sprintf("requeue notification %q", id), err)
	}
	return nil
}

// DiscardNotification removes a failed notification from the outbox at
// at, by the given principal, recorded as discarded in deliveries.
// ErrConflict unless it is failed.
func (db *DB) DiscardNotification(ctx context.Context, id string, at time.Time, by string) error {
	if at.IsZero() {
		return fmt.Errorf("discard notification %q: zero time: %w", id, ErrInvalid)
	}
	return db.finish(ctx, "discard", id,
		"DELETE FROM outbox WHERE id = ? AND status = ? RETURNING channel_id, kind, attempts, created_at, last_error",
		[]any{id, NotificationFailed}, func(tx *sql.Tx) error { return db.notFailed(ctx, tx, id) },
		DeliveryDiscarded, 0, at, by, "")
}

// GetNotification returns one notification in the outbox.
func (db *DB) GetNotification(ctx context.Context, id string) (Notification, error) {
	n, err := scanNotification(db.db.QueryRowContext(ctx, db.rb("SELECT "+notificationColumns+" FROM outbox WHERE id = ?"), id))
	if err != nil {
		return Notification{}, db.fail(fmt.Sprintf("get notification %q", id), err)
	}
	return n, nil
}

// ListNotifications returns the notifications in the outbox f selects,
// oldest first (ties by ID).
func (db *DB) ListNotifications(ctx context.Context, f NotificationFilter) ([]Notification, error) {
	if f.Limit < 0 {
		return nil, fmt.Errorf("list notifications: negative limit: %w", ErrInvalid)
	}
	ns, err := db.listNotifications(ctx, db.db, f)
	if err != nil {
		return nil, db.fail("list notifications", err)
	}
	return ns, nil
}

func (db *DB) listNotifications(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, f NotificationFilter) ([]Notification, error) {
	var conds []string
	var args []any
	if f.Status != "" {
		conds = append(conds, "status = ?")
		args = append(args, f.Status)
	}
	if f.ChannelID != "" {
		conds = append(conds, "channel_id = ?")
		args = append(args, f.ChannelID)
	}
	s := "SELECT " + notificationColumns + " FROM outbox"
	if len(conds) > 0 {
		s += " WHERE " + strings.Join(conds, " AND ")
	}
	s += " ORDER BY created_at, id" + db.collate
	if f.Limit > 0 {
		s += " LIMIT ?"
		args = append(args, f.Limit)
	}
	rows, err := q.QueryContext(ctx, db.rb(s), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Notification
	for rows.Next() {
		n, err := scanNotification(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// ListDeliveries returns the deliveries f selects, newest first (ties by
// ID).
func (db *DB) ListDeliveries(ctx context.Context, f DeliveryFilter) ([]Delivery, error) {
	if f.Limit < 0 {
		return nil, fmt.Errorf("list deliveries: negative limit: %w", ErrInvalid)
	}
	var conds []string
	var args []any
	if f.ChannelID != "" {
		conds = append(conds, "channel_id = ?")
		args = append(args, f.ChannelID)
	}
	if f.Status != "" {
		conds = append(conds, "status = ?")
		args = append(args, f.Status)
	}
	if !f.Since.IsZero() {
		conds = append(conds, "finished_at >= ?")
		args = append(args, f.Since.UnixMicro())
	}
	s := "SELECT " + deliveryColumns + " FROM deliveries"
	if len(conds) > 0 {
		s += " WHERE " + strings.Join(conds, " AND ")
	}
	s += " ORDER BY finished_at DESC, id" + db.collate
	if f.Limit > 0 {
		s += " LIMIT ?"
		args = append(args, f.Limit)
	}
	rows, err := db.db.QueryContext(ctx, db.rb(s), args...)
	if err != nil {
		return nil, db.fail("list deliveries", err)
	}
	defer rows.Close()
	var out []Delivery
	for rows.Next() {
		d, err := scanDelivery(rows)
		if err != nil {
			return nil, db.fail("list deliveries", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, db.fail("list deliveries", err)
	}
	return out, nil
}

// PruneDeliveries deletes deliveries finished before the given time and
// says how many. A notification whose delivery is pruned could be
// enqueued again, so keep them longer than causes are resent.
func (db *DB) PruneDeliveries(ctx context.Context, before time.Time) (int, error) {
	res, err := db.db.ExecContext(ctx, db.rb("DELETE FROM deliveries WHERE finished_at < ?"), micros(before))
	if err != nil {
		return 0, db.fail("prune deliveries", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, db.fail("prune deliveries", err)
	}
	return int(n), nil
}

// OutboxStats counts the notifications in the outbox by channel ID;
// channels with none are absent.
func (db *DB) OutboxStats(ctx context.Context) (map[string]OutboxStat, error) {
	rows, err := db.db.QueryContext(ctx, "SELECT channel_id, status, COUNT(*), MIN(created_at) FROM outbox GROUP BY channel_id, status")
	if err != nil {
		return nil, db.fail("outbox stats", err)
	}
	defer rows.Close()
	out := map[string]OutboxStat{}
	for rows.Next() {
		var ch, status string
		var n int
		var oldest sql.NullInt64
		if err := rows.Scan(&ch, &status, &n, &oldest); err != nil {
			return nil, db.fail("outbox stats", err)
		}
		s := out[ch]
		switch status {
		case NotificationPending:
			s.Pending, s.Oldest = n, fromMicros(oldest)
		case NotificationFailed:
			s.Failed = n
		}
		out[ch] = s
	}
	if err := rows.Err(); err != nil {
		return nil, db.fail("outbox stats", err)
	}
	return out, nil
}
