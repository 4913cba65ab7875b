package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"
)

// Errors of the OAuth2 token store.
var (
	// ErrTokenReused: a refresh token was presented a second time; its
	// whole family is now revoked.
	ErrTokenReused = errors.New("refresh token already used")
	// ErrTokenInvalid: unknown, expired or revoked.
	ErrTokenInvalid = errors.New("token unknown, expired or revoked")
)

const userColumns = "id, username, password_hash, role, created_at, disabled_at"

func scanUser(s interface{ Scan(...any) error }) (User, error) {
	var u User
	var c, d sql.NullInt64
	if err := s.Scan(&u.ID, &u.Username, &u.PasswordHash, &u.Role, &c, &d); err != nil {
		return User{}, err
	}
	u.CreatedAt, u.DisabledAt = fromMicros(c), fromMicros(d)
	return u, nil
}

// CreateUser stores a user; ErrConflict if the ID or username is taken.
func (db *DB) CreateUser(ctx context.Context, u User) error {
	if u.ID == "" || u.Username == "" || u.PasswordHash == "" || u.Role == "" {
		return fmt.Errorf("create user %q: %w", u.Username, ErrInvalid)
	}
	if _, err := db.db.ExecContext(ctx, db.rb("INSERT INTO users ("+userColumns+") VALUES (?, ?, ?, ?, ?, ?)"),
		u.ID, u.Username, u.PasswordHash, u.Role, micros(u.CreatedAt), micros(u.DisabledAt)); err != nil {
		return db.fail(fmt.Sprintf("create user %q", u.Username), err)
	}
	return nil
}

// GetUser returns a user by ID.
func (db *DB) GetUser(ctx context.Context, id string) (User, error) {
	u, err := scanUser(db.db.QueryRowContext(ctx, db.rb("SELECT "+userColumns+" FROM users WHERE id = ?"), id))
	if err != nil {
		return User{}, db.fail(fmt.Sprintf("get user %q", id), err)
	}
	return u, nil
}

// UserByName returns a user by username.
func (db *DB) UserByName(ctx context.Context, name string) (User, error) {
	u, err := scanUser(db.db.QueryRowContext(ctx, db.rb("SELECT "+userColumns+" FROM users WHERE username = ?"), name))
	if err != nil {
		return User{}, db.fail(fmt.Sprintf("get user %q", name), err)
	}
	return u, nil
}

// ListUsers returns every user by username.
func (db *DB) ListUsers(ctx context.Context) ([]User, error) {
	rows, err := db.db.QueryContext(ctx, db.rb("SELECT "+userColumns+" FROM users ORDER BY username"+db.collate))
	if err != nil {
		return nil, db.fail("list users", err)
	}
	defer rows.Close()
	var out []User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, db.fail("list users", err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// UpdateUser changes a user's password hash, role or disabled time.
func (db *DB) UpdateUser(ctx context.Context, u User) error {
	res, err := db.db.ExecContext(ctx, db.rb("UPDATE users SET password_hash = ?, role = ?, disabled_at = ? WHERE id = ?"),
		u.PasswordHash, u.Role, micros(u.DisabledAt), u.ID)
	if err != nil {
		return db.fail(fmt.Sprintf("update user %q", u.ID), err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("update user %q: %w", u.ID, ErrNotFound)
	}
	return nil
}

const clientColumns = "id, secret_hash, description, role, created_by, created_at, expires_at, revoked_at"

func scanClient(s interface{ Scan(...any) error }) (APIClient, error) {
	var c APIClient
	var cr, ex, rv sql.NullInt64
	if err := s.Scan(&c.ID, &c.SecretHash, &c.Description, &c.Role, &c.CreatedBy, &cr, &ex, &rv); err != nil {
		return APIClient{}, err
	}
	c.CreatedAt, c.ExpiresAt, c.RevokedAt = fromMicros(cr), fromMicros(ex), fromMicros(rv)
	return c, nil
}

// CreateAPIClient stores an API client.
func (db *DB) CreateAPIClient(ctx context.Context, c APIClient) error {
	if c.ID == "" || c.SecretHash == "" || c.Role == "" {
		return fmt.Errorf("create API client %q: %w", c.ID, ErrInvalid)
	}
	if _, err := db.db.ExecContext(ctx, db.rb("INSERT INTO api_clients ("+clientColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
		c.ID, c.SecretHash, c.Description, c.Role, c.CreatedBy, micros(c.CreatedAt), micros(c.ExpiresAt), micros(c.RevokedAt)); err != nil {
		return db.fail(fmt.Sprintf("create API client %q", c.ID), err)
	}
	return nil
}

// GetAPIClient returns an API client.
func (db *DB) GetAPIClient(ctx context.Context, id string) (APIClient, error) {
	c, err := scanClient(db.db.QueryRowContext(ctx, db.rb("SELECT "+clientColumns+" FROM api_clients WHERE id = ?"), id))
	if err != nil {
		return APIClient{}, db.fail(fmt.Sprintf("get API client %q", id), err)
	}
	return c, nil
}

// ListAPIClients returns every API client, newest first.
func (db *DB) ListAPIClients(ctx context.Context) ([]APIClient, error) {
	rows, err := db.db.QueryContext(ctx, db.rb("SELECT "+clientColumns+" FROM api_clients ORDER BY created_at DESC, id"+db.collate))
	if err != nil {
		return nil, db.fail("list API clients", err)
	}
	defer rows.Close()
	var out []APIClient
	for rows.Next() {
		c, err := scanClient(rows)
		if err != nil {
			return nil, db.fail("list API clients", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// RevokeAPIClient revokes a client and every token issued to it.
func (db *DB) RevokeAPIClient(ctx context.Context, id string, at time.Time) error {
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, db.rb("UPDATE api_clients SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"), at.UnixMicro(), id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			if _, err := scanClient(tx.QueryRowContext(ctx, db.rb("SELECT "+clientColumns+" FROM api_clients WHERE id = ?"), id)); err != nil {
				return err
			}
			return fmt.Errorf("already revoked: %w", ErrConflict)
		}
		_, err = tx.ExecContext(ctx, db.rb("UPDATE oauth_tokens SET revoked_at = ? WHERE subject = ? AND revoked_at IS NULL"), at.UnixMicro(), "client:"+id)
		return err
	})
	if err != nil {
		return db.fail(fmt.Sprintf("revoke API client %q", id), err)
	}
	return nil
}

const oauthColumns = "hash, kind, family, subject, role, created_at, expires_at, used_at, revoked_at"

func scanOAuth(s interface{ Scan(...any) error }) (OAuthToken, error) {
	var t OAuthToken
	var c, e, u, r sql.NullInt64
	if err := s.Scan(&t.Hash, &t.Kind, &t.Family, &t.Subject, &t.Role, &c, &e, &u, &r); err != nil {
		return OAuthToken{}, err
	}
	t.CreatedAt, t.ExpiresAt, t.UsedAt, t.RevokedAt = fromMicros(c), fromMicros(e), fromMicros(u), fromMicros(r)
	return t, nil
}

// SaveOAuthToken stores an issued token.
func (db *DB) SaveOAuthToken(ctx context.Context, t OAuthToken) error {
	if t.Hash == "" || t.Family == "" || t.Subject == "" || t.ExpiresAt.IsZero() {
		return fmt.Errorf("save token: %w", ErrInvalid)
	}
	if _, err := db.db.ExecContext(ctx, db.rb("INSERT INTO oauth_tokens ("+oauthColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
		t.Hash, t.Kind, t.Family, t.Subject, t.Role, micros(t.CreatedAt), micros(t.ExpiresAt), micros(t.UsedAt), micros(t.RevokedAt)); err != nil {
		return db.fail("save token", err)
	}
	return nil
}

// OAuthToken returns a valid (unexpired, unrevoked) token of a kind by
// hash; ErrTokenInvalid otherwise.
func (db *DB) OAuthToken(ctx context.Context, hash, kind string, now time.Time) (OAuthToken, error) {
	t, err := scanOAuth(db.db.QueryRowContext(ctx, db.rb("SELECT "+oauthColumns+" FROM oauth_tokens WHERE hash = ? AND kind = ?"), hash, kind))
	if errors.Is(err, sql.ErrNoRows) {
		return OAuthToken{}, ErrTokenInvalid
	}
	if err != nil {
		return OAuthToken{}, db.fail("get token", err)
	}
	if !t.RevokedAt.IsZero() || !now.Before(t.ExpiresAt) {
		return OAuthToken{}, ErrTokenInvalid
	}
	return t, nil
}

// UseRefreshToken consumes a refresh token for rotation. A token presented
// twice is a sign it was stolen: the whole family is revoked and
// ErrTokenReused returned.
func (db *DB) UseRefreshToken(ctx context.Context, hash string, now time.Time) (OAuthToken, error) {
	var out OAuthToken
	reused := false
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		q := "SELECT " + oauthColumns + " FROM oauth_tokens WHERE hash = ? AND kind = 'refresh'"
		if db.d.Name == "postgres" {
			// Two requests with one refresh token must not both pass: the
			// second waits here and then sees it used (SQLite serialises
			// the transactions already).
			q += " FOR UPDATE"
		}
		t, err := scanOAuth(tx.QueryRowContext(ctx, db.rb(q), hash))
		if errors.Is(err, sql.ErrNoRows) {
			return ErrTokenInvalid
		}
		if err != nil {
			return err
		}
		if !t.RevokedAt.IsZero() || !now.Before(t.ExpiresAt) {
			return ErrTokenInvalid
		}
		if !t.UsedAt.IsZero() {
			reused = true
			_, err := tx.ExecContext(ctx, db.rb("UPDATE oauth_tokens SET revoked_at = ? WHERE family = ? AND revoked_at IS NULL"), now.UnixMicro(), t.Family)
			return err
		}
		res, err := tx.ExecContext(ctx, db.rb("UPDATE oauth_tokens SET used_at = ? WHERE hash = ? AND used_at IS NULL"), now.UnixMicro(), hash)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			// Used by a concurrent request: that is reuse too.
			reused = true
			_, err := tx.ExecContext(ctx, db.rb("UPDATE oauth_tokens SET revoked_at = ? WHERE family = ? AND revoked_at IS NULL"), now.UnixMicro(), t.Family)
			return err
		}
		out = t
		return nil
	})
	if reused {
		return OAuthToken{}, ErrTokenReused
	}
	if err != nil {
		if errors.Is(err, ErrTokenInvalid) {
			return OAuthToken{}, err
		}
		return OAuthToken{}, db.fail("use refresh token", err)
	}
	return out, nil
}

// RevokeOAuthFamily revokes every token of a family (RFC 7009 revocation
// of either token of a grant ends the grant).
func (db *DB) RevokeOAuthFamily(ctx context.Context, family string, at time.Time) error {
	if _, err := db.db.ExecContext(ctx, db.rb("UPDATE oauth_tokens SET revoked_at = ? WHERE family = ? AND revoked_at IS NULL"), at.UnixMicro(), family); err != nil {
		return db.fail("revoke token family", err)
	}
	return nil
}

// RevokeSubjectTokens revokes every token of a user or client.
func (db *DB) RevokeSubjectTokens(ctx context.Context, subject string, at time.Time) error {
	if _, err := db.db.ExecContext(ctx, db.rb("UPDATE oauth_tokens SET revoked_at = ? WHERE subject = ? AND revoked_at IS NULL"), at.UnixMicro(), subject); err != nil {
		return db.fail("revoke tokens", err)
	}
	return nil
}

// FamilyRevoked reports whether any token of a family was revoked.
func (db *DB) FamilyRevoked(ctx context.Context, family string) (bool, error) {
	var n int
	if err := db.db.QueryRowContext(ctx, db.rb("SELECT COUNT(*) FROM oauth_tokens WHERE family = ? AND revoked_at IS NOT NULL"), family).Scan(&n); err != nil {
		return false, db.fail("check token family", err)
	}
	return n > 0, nil
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// AppendAudit records an audit entry. Fields are clipped, so no caller can
// make one entry large.
func (db *DB) AppendAudit(ctx context.Context, e AuditEntry) error {
	if e.ID == "" || e.Time.IsZero() || e.Actor == "" {
		return fmt.Errorf("append audit entry: %w", ErrInvalid)
	}
	e.Actor, e.Remote, e.Route, e.Resource = clip(e.Actor, 200), clip(e.Remote, 100), clip(e.Route, 200), clip(e.Resource, 200)
	e.Summary = clip(e.Summary, 4096)
	if _, err := db.db.ExecContext(ctx, db.rb("INSERT INTO audit_log (id, time, actor, remote, method, route, resource, summary, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
		e.ID, micros(e.Time), e.Actor, e.Remote, e.Method, e.Route, e.Resource, e.Summary, e.Status); err != nil {
		return db.fail("append audit entry", err)
	}
	return nil
}

// ListAudit returns audit entries, newest first (IDs are time-ordered).
func (db *DB) ListAudit(ctx context.Context, f AuditFilter) ([]AuditEntry, error) {
	q := "SELECT id, time, actor, remote, method, route, resource, summary, status FROM audit_log WHERE 1 = 1"
	var args []any
	if f.Actor != "" {
		q += " AND actor = ?"
		args = append(args, f.Actor)
	}
	if !f.Since.IsZero() {
		q += " AND time >= ?"
		args = append(args, f.Since.UnixMicro())
	}
	if !f.Until.IsZero() {
		q += " AND time < ?"
		args = append(args, f.Until.UnixMicro())
	}
	if f.Before != "" {
		q += " AND id" + db.collate + " < ?"
		args = append(args, f.Before)
	}
	q += " ORDER BY id" + db.collate + " DESC"
	if f.Limit > 0 {
		q += " LIMIT ?"
		args = append(args, f.Limit)
	}
	rows, err := db.db.QueryContext(ctx, db.rb(q), args...)
	if err != nil {
		return nil, db.fail("list audit log", err)
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		var e AuditEntry
		var t sql.NullInt64
		if err := rows.Scan(&e.ID, &t, &e.Actor, &e.Remote, &e.Method, &e.Route, &e.Resource, &e.Summary, &e.Status); err != nil {
			return nil, db.fail("list audit log", err)
		}
		e.Time = fromMicros(t)
		out = append(out, e)
	}
	return out, rows.Err()
}

// SettingVersion is the settings key holding the settings' version, which
// the API turns into an ETag.
const SettingVersion = "settings.version"

// UpdateSettings stores settings like PutSettings and bumps their version,
// atomically. With ifVersion set, it refuses (ErrConflict) unless the
// stored version is that one: two administrators editing at once cannot
// overwrite each other unseen. It returns the new version.
func (db *DB) UpdateSettings(ctx context.Context, ifVersion string, kv map[string]string) (string, error) {
	var next string
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		cur := "0"
		err := tx.QueryRowContext(ctx, db.rb("SELECT value FROM settings WHERE key = ?"), SettingVersion).Scan(&cur)
		exists := err == nil
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if ifVersion != "" && ifVersion != cur {
			return fmt.Errorf("settings are at version %s, not %s: %w", cur, ifVersion, ErrConflict)
		}
		n, _ := strconv.ParseInt(cur, 10, 64)
		next = strconv.FormatInt(n+1, 10)
		now := time.Now().UnixMicro()
		if exists {
			// Conditional on the value read: a concurrent writer that got
			// there first makes this affect no row.
			res, err := tx.ExecContext(ctx, db.rb("UPDATE settings SET value = ?, updated_at = ? WHERE key = ? AND value = ?"), next, now, SettingVersion, cur)
			if err != nil {
				return err
			}
			if k, _ := res.RowsAffected(); k == 0 {
				return fmt.Errorf("settings changed meanwhile: %w", ErrConflict)
			}
		} else if _, err := tx.ExecContext(ctx, db.rb("INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)"), SettingVersion, next, now); err != nil {
			return err
		}
		stmt, err := tx.PrepareContext(ctx, db.q.putSetting)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, k := range slices.Sorted(maps.Keys(kv)) {
			if k == SettingVersion {
				continue
			}
			if _, err := stmt.ExecContext(ctx, k, kv[k], now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return "", db.fail("update settings", err)
	}
	return next, nil
}
