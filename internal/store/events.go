package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// InsertEvents stores events in one transaction, skipping any that are
// already stored (same computer and ID): agents resend a batch whose
// acknowledgement they did not get, and each event must be stored once. It
// returns how many were new. When it returns nil the events are committed.
func (db *DB) InsertEvents(ctx context.Context, events []Event) (int, error) {
	if len(events) == 0 {
		return 0, nil
	}
	for _, e := range events {
		if e.ComputerID == "" || e.ID == "" || e.Type == "" || e.Time.IsZero() {
			return 0, fmt.Errorf("insert events: event %q of %q lacks computer, ID, type or time: %w", e.ID, e.ComputerID, ErrInvalid)
		}
	}
	inserted := 0
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, db.q.insertEvent)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, e := range events {
			res, err := stmt.ExecContext(ctx, e.ComputerID, e.ID, e.Type, e.Severity, micros(e.Time), micros(e.ReceivedAt), e.Data)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			inserted += int(n)
		}
		return nil
	})
	if err != nil {
		return 0, db.fail(fmt.Sprintf("insert %d events", len(events)), err)
	}
	return inserted, nil
}

const eventColumns = "computer_id, id, type, severity, time, received_at, data"

// ListEvents returns matching events, newest first.
func (db *DB) ListEvents(ctx context.Context, f EventFilter) ([]Event, error) {
	if f.Limit < 0 {
		return nil, fmt.Errorf("list events: negative limit: %w", ErrInvalid)
	}
	where, args := db.eventWhere(f)
	q := "SELECT " + eventColumns + " FROM events" + where + " ORDER BY time DESC, computer_id" + db.collate + ", id" + db.collate
	if f.Limit > 0 {
		q += " LIMIT ?"
		args = append(args, f.Limit)
	}
	return db.queryEvents(ctx, "list events", q, args...)
}

func (db *DB) queryEvents(ctx context.Context, what, q string, args ...any) ([]Event, error) {
	if db.d.Rebind {
		q = rebindDollar(q)
	}
	rows, err := db.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, db.fail(what, err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var e Event
		var t, r sql.NullInt64
		if err := rows.Scan(&e.ComputerID, &e.ID, &e.Type, &e.Severity, &t, &r, &e.Data); err != nil {
			return nil, db.fail(what, err)
		}
		e.Time, e.ReceivedAt = fromMicros(t), fromMicros(r)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, db.fail(what, err)
	}
	return out, nil
}

// CountEvents counts matching events.
func (db *DB) CountEvents(ctx context.Context, f EventFilter) (int, error) {
	where, args := db.eventWhere(f)
	q := "SELECT COUNT(*) FROM events" + where
	if db.d.Rebind {
		q = rebindDollar(q)
	}
	var n int
	if err := db.db.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
		return 0, db.fail("count events", err)
	}
	return n, nil
}

func (db *DB) eventWhere(f EventFilter) (string, []any) {
	var conds []string
	var args []any
	if f.ComputerID != "" {
		conds = append(conds, "computer_id = ?")
		args = append(args, f.ComputerID)
	}
	if len(f.Types) > 0 {
		conds = append(conds, "type IN (?"+strings.Repeat(", ?", len(f.Types)-1)+")")
		for _, t := range f.Types {
			args = append(args, t)
		}
	}
	if !f.Since.IsZero() {
		conds = append(conds, "time >= ?")
		args = append(args, f.Since.UnixMicro())
	}
	if !f.Until.IsZero() {
		conds = append(conds, "time < ?")
		args = append(args, f.Until.UnixMicro())
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

// MoveEvents hands the oldest events, up to batch of them, to fn and deletes
// them once fn returns nil, returning how many moved (0 when none are left).
// Events now live in the telemetry store; this empties the table earlier
// versions filled.
func (db *DB) MoveEvents(ctx context.Context, batch int, fn func([]Event) error) (int, error) {
	evs, err := db.ListOldestEvents(ctx, batch)
	if err != nil || len(evs) == 0 {
		return 0, err
	}
	if err := fn(evs); err != nil {
		return 0, err
	}
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		q := "DELETE FROM events WHERE computer_id = ? AND id = ?"
		if db.d.Rebind {
			q = rebindDollar(q)
		}
		stmt, err := tx.PrepareContext(ctx, q)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, e := range evs {
			if _, err := stmt.ExecContext(ctx, e.ComputerID, e.ID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, db.fail(fmt.Sprintf("delete %d moved events", len(evs)), err)
	}
	return len(evs), nil
}

// ListOldestEvents returns up to n events, oldest first.
func (db *DB) ListOldestEvents(ctx context.Context, n int) ([]Event, error) {
	return db.queryEvents(ctx, "list oldest events", "SELECT "+eventColumns+" FROM events ORDER BY time, computer_id"+db.collate+", id"+db.collate+" LIMIT ?", n)
}
