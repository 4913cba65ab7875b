package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// KeyPolicyRevision is the settings key counting changes to anything an
// effective policy is made of: policies, rules, lists, assignments, and
// computers' policies and overrides. Every such write bumps it in its own
// transaction, so a manager node that caches effective policies knows, with
// one cheap read, whether its cache is stale.
const KeyPolicyRevision = "policy.revision"

// PolicyRevision returns the current policy revision (0 before any change).
func (db *DB) PolicyRevision(ctx context.Context) (int64, error) {
	var v string
	err := db.db.QueryRowContext(ctx, db.rb("SELECT value FROM settings WHERE key = ?"), KeyPolicyRevision).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, db.fail("read policy revision", err)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read policy revision: stored value %q is not a number", v)
	}
	return n, nil
}

// bumpPolicyRevision increments the policy revision inside tx.
func (db *DB) bumpPolicyRevision(ctx context.Context, tx *sql.Tx) error {
	now := time.Now().UnixMicro()
	res, err := tx.ExecContext(ctx, db.rb(`UPDATE settings SET value = CAST(CAST(value AS BIGINT) + 1 AS TEXT), updated_at = ? WHERE key = ?`), now, KeyPolicyRevision)
	if err != nil {
		return fmt.Errorf("bump policy revision: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, db.rb("INSERT INTO settings (key, value, updated_at) VALUES (?, '1', ?)"), KeyPolicyRevision, now); err != nil {
		return fmt.Errorf("bump policy revision: %w", err)
	}
	return nil
}

// nextID allocates the next integer ID of table inside tx from a sequence
// kept in the settings table ("seq.<table>"), so an ID is never handed out
// twice, even after the row that had it is deleted: events and agents that
// remember rule 12 must not meet another rule 12. Two writers on
// PostgreSQL queue on the sequence row.
func (db *DB) nextID(ctx context.Context, tx *sql.Tx, table string) (int64, error) {
	return db.reserveIDs(ctx, tx, table, 1)
}

// reserveIDs allocates n consecutive IDs of table and returns the first.
// The sequence holds the last ID handed out.
func (db *DB) reserveIDs(ctx context.Context, tx *sql.Tx, table string, n int64) (int64, error) {
	key := "seq." + table
	now := time.Now().UnixMicro()
	var v string
	err := tx.QueryRowContext(ctx, db.rb(`UPDATE settings SET value = CAST(CAST(value AS BIGINT) + ? AS TEXT), updated_at = ? WHERE key = ? RETURNING value`),
		n, now, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		var first int64
		if err := tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(id), 0) + 1 FROM "+table).Scan(&first); err != nil {
			return 0, fmt.Errorf("allocate %s ID: %w", table, err)
		}
		if _, err := tx.ExecContext(ctx, db.rb("INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)"), key, strconv.FormatInt(first+n-1, 10), now); err != nil {
			return 0, fmt.Errorf("allocate %s ID: %w", table, err)
		}
		return first, nil
	}
	if err != nil {
		return 0, fmt.Errorf("allocate %s ID: %w", table, err)
	}
	last, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("allocate %s ID: sequence value %q is not a number", table, v)
	}
	return last - n + 1, nil
}

// retryConflict runs a write that allocates IDs with nextID again when it
// collided with a concurrent writer on the primary key.
func (db *DB) retryConflict(fn func() error) error {
	var err error
	for range 5 {
		err = fn()
		if err == nil || !db.d.IsUniqueViolation(err) {
			return err
		}
	}
	return err
}
