package store

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// The same migration files run on every engine; see the header of
// migrations/00001_init.sql for the type conventions that makes possible.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// Dialect is what DB needs to know about an engine. The backend packages
// build it, so that this package imports no driver.
type Dialect struct {
	// Name is reported by [DB.DialectName]: "sqlite" or "postgres".
	Name string
	// GooseDialect selects goose's bookkeeping SQL for the engine.
	GooseDialect goose.Dialect
	// Rebind rewrites the ? placeholders the queries are written with to
	// $1, $2, … for drivers (pgx) that accept only those.
	Rebind bool
	// IsUniqueViolation recognises the driver's unique-constraint error,
	// which DB reports as ErrConflict.
	IsUniqueViolation func(error) bool
	// BinaryCollation, if set, is the SQL name of a collation that orders
	// text by its UTF-8 bytes, as Go and SQLite's default do. ORDER BY uses
	// it so that listings come out in the same order on every engine,
	// whatever collation the database was created with (PostgreSQL's
	// usual en_US.UTF-8 ignores case and punctuation at first).
	BinaryCollation string
	// MigrationLocker, if set, serialises migrations across processes
	// sharing the database (several manager nodes starting at once).
	MigrationLocker lock.SessionLocker
}

// DB is the state store: one SQL implementation over database/sql for every
// engine. It is safe for concurrent use.
type DB struct {
	db      *sql.DB
	d       Dialect
	q       queries
	collate string // " COLLATE x", or empty
}

// New migrates sqlDB to the newest schema and returns a store over it. On
// success the store owns sqlDB ([DB.Close] closes it); on error the caller
// still does.
func New(ctx context.Context, sqlDB *sql.DB, d Dialect) (*DB, error) {
	if sqlDB == nil || d.Name == "" || d.GooseDialect == "" || d.IsUniqueViolation == nil {
		return nil, fmt.Errorf("new state store: incomplete dialect %q", d.Name)
	}
	if err := migrate(ctx, sqlDB, d); err != nil {
		return nil, fmt.Errorf("migrate %s state store: %w", d.Name, err)
	}
	rebind := func(q string) string { return q }
	if d.Rebind {
		rebind = rebindDollar
	}
	var collate string
	if d.BinaryCollation != "" {
		collate = " COLLATE " + d.BinaryCollation
	}
	return &DB{db: sqlDB, d: d, q: newQueries(rebind, collate), collate: collate}, nil
}

func migrate(ctx context.Context, sqlDB *sql.DB, d Dialect) error {
	fsys, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return err
	}
	opts := []goose.ProviderOption{
		goose.WithDisableGlobalRegistry(true),
		// The default logger writes to the global log package on every open.
		goose.WithLogger(goose.NopLogger()),
	}
	if d.MigrationLocker != nil {
		opts = append(opts, goose.WithSessionLocker(d.MigrationLocker))
	}
	p, err := goose.NewProvider(d.GooseDialect, sqlDB, fsys, opts...)
	if err != nil {
		return err
	}
	// An older manager node must not run against a schema that a newer one
	// has already migrated further: its queries may no longer fit.
	current, target, err := p.GetVersions(ctx)
	if err != nil {
		return err
	}
	if current > target {
		return fmt.Errorf("database schema version %d is newer than this build knows (%d): upgrade yagura", current, target)
	}
	_, err = p.Up(ctx)
	return err
}

// Close closes the underlying database.
func (db *DB) Close() error { return db.db.Close() }

// Ping checks that the database answers, for readiness probes.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.db.PingContext(ctx); err != nil {
		return fmt.Errorf("ping %s state store: %w", db.d.Name, err)
	}
	return nil
}

// DialectName names the engine: "sqlite" or "postgres".
func (db *DB) DialectName() string { return db.d.Name }

// fail wraps err with op, mapping the driver's errors onto the sentinels.
// op is built by the caller only on the error path.
func (db *DB) fail(op string, err error) error {
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	case db.d.IsUniqueViolation(err):
		return fmt.Errorf("%s: %w: %w", op, ErrConflict, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// inTx runs fn in a transaction, committing if it returns nil.
func (db *DB) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := db.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// ---- CA ----

// LoadCA returns the internal CA, or ErrNotFound before one has been saved.
func (db *DB) LoadCA(ctx context.Context) (CA, error) {
	var ca CA
	var created sql.NullInt64
	err := db.db.QueryRowContext(ctx, db.q.loadCA).Scan(&ca.CertPEM, &ca.KeyPEM, &created)
	if err != nil {
		return CA{}, db.fail("load CA", err)
	}
	ca.CreatedAt = fromMicros(created)
	return ca, nil
}

// SaveCA stores the internal CA. Manager nodes starting together may each
// generate one; the first to save wins and the others get ErrConflict, after
// which they should LoadCA.
func (db *DB) SaveCA(ctx context.Context, ca CA) error {
	if ca.CertPEM == "" || ca.KeyPEM == "" {
		return fmt.Errorf("save CA: empty PEM: %w", ErrInvalid)
	}
	if _, err := db.db.ExecContext(ctx, db.q.saveCA, ca.CertPEM, ca.KeyPEM, micros(ca.CreatedAt)); err != nil {
		return db.fail("save CA", err)
	}
	return nil
}

// ---- settings ----

// Settings returns every setting; the map is empty, not nil, when there are
// none.
func (db *DB) Settings(ctx context.Context) (map[string]string, error) {
	rows, err := db.db.QueryContext(ctx, db.q.settings)
	if err != nil {
		return nil, db.fail("list settings", err)
	}
	defer rows.Close()
	m := make(map[string]string)
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, db.fail("list settings", err)
		}
		m[k] = v
	}
	if err := rows.Err(); err != nil {
		return nil, db.fail("list settings", err)
	}
	return m, nil
}

// PutSettings inserts or replaces the given settings atomically; others are
// left alone.
func (db *DB) PutSettings(ctx context.Context, settings map[string]string) error {
	if len(settings) == 0 {
		return nil
	}
	// A fixed order makes concurrent writers on PostgreSQL lock rows in the
	// same order, so they queue instead of deadlocking.
	keys := slices.Sorted(maps.Keys(settings))
	if keys[0] == "" {
		return fmt.Errorf("put settings: empty key: %w", ErrInvalid)
	}
	now := time.Now().UnixMicro()
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, db.q.putSetting)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, k := range keys {
			if _, err := stmt.ExecContext(ctx, k, settings[k], now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return db.fail("put settings", err)
	}
	return nil
}

// ---- activation tokens ----

// CreateToken stores a new activation token; ErrConflict if its ID or hash
// is taken.
func (db *DB) CreateToken(ctx context.Context, t Token) error {
	if t.ID == "" || t.Hash == "" {
		return fmt.Errorf("create token %q: empty ID or hash: %w", t.ID, ErrInvalid)
	}
	if t.MaxUses < 0 || t.Uses < 0 {
		return fmt.Errorf("create token %q: negative uses: %w", t.ID, ErrInvalid)
	}
	_, err := db.db.ExecContext(ctx, db.q.createToken,
		t.ID, t.Hash, t.Description, micros(t.CreatedAt), micros(t.ExpiresAt),
		t.MaxUses, t.Uses, micros(t.RevokedAt))
	if err != nil {
		return db.fail(fmt.Sprintf("create token %q", t.ID), err)
	}
	return nil
}

// ListTokens returns every token, newest first (ties by ID).
func (db *DB) ListTokens(ctx context.Context) ([]Token, error) {
	rows, err := db.db.QueryContext(ctx, db.q.listTokens)
	if err != nil {
		return nil, db.fail("list tokens", err)
	}
	defer rows.Close()
	var ts []Token
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, db.fail("list tokens", err)
		}
		ts = append(ts, t)
	}
	if err := rows.Err(); err != nil {
		return nil, db.fail("list tokens", err)
	}
	return ts, nil
}

// GetToken returns one token by ID.
func (db *DB) GetToken(ctx context.Context, id string) (Token, error) {
	t, err := scanToken(db.db.QueryRowContext(ctx, db.q.getToken, id))
	if err != nil {
		return Token{}, db.fail(fmt.Sprintf("get token %q", id), err)
	}
	return t, nil
}

// RevokeToken marks a token revoked at the given time and returns it;
// ErrConflict if it was revoked already.
func (db *DB) RevokeToken(ctx context.Context, id string, at time.Time) (Token, error) {
	if at.IsZero() {
		return Token{}, fmt.Errorf("revoke token %q: zero time: %w", id, ErrInvalid)
	}
	t, err := scanToken(db.db.QueryRowContext(ctx, db.q.revokeToken, micros(at), id))
	if errors.Is(err, sql.ErrNoRows) {
		// Nothing matched: tell an unknown token from a revoked one.
		if _, err := db.GetToken(ctx, id); err != nil {
			return Token{}, fmt.Errorf("revoke token: %w", err)
		}
		return Token{}, fmt.Errorf("revoke token %q: already revoked: %w", id, ErrConflict)
	}
	if err != nil {
		return Token{}, db.fail(fmt.Sprintf("revoke token %q", id), err)
	}
	return t, nil
}

// checkToken reports why t cannot enrol a computer at now, in the order
// EnrollComputer documents.
func checkToken(t Token, now time.Time) error {
	switch {
	case !t.RevokedAt.IsZero():
		return ErrTokenRevoked
	case !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt):
		return ErrTokenExpired
	case t.MaxUses > 0 && t.Uses >= t.MaxUses:
		return ErrTokenUsedUp
	}
	return nil
}

// ---- computers ----

// EnrollComputer spends one use of the activation token whose hash is
// tokenHash and records c as an active computer enrolled with it, in one
// transaction. It returns the token as it is after the use.
//
// The token is checked in this order: ErrTokenUnknown, ErrTokenRevoked,
// ErrTokenExpired (now is at or after ExpiresAt), ErrTokenUsedUp. The use is
// counted by a guarded UPDATE, so concurrent enrolments — on one node or
// several — never exceed MaxUses. A computer ID that exists already gives
// ErrConflict and leaves the token unspent. EnrolledAt defaults to now.
func (db *DB) EnrollComputer(ctx context.Context, tokenHash string, now time.Time, c Computer) (Token, error) {
	if c.ID == "" || now.IsZero() {
		return Token{}, fmt.Errorf("enrol computer %q: empty ID or zero time: %w", c.ID, ErrInvalid)
	}
	if c.EnrolledAt.IsZero() {
		c.EnrolledAt = now
	}
	var tok Token
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		t, err := scanToken(tx.QueryRowContext(ctx, db.q.tokenByHash, tokenHash))
		if errors.Is(err, sql.ErrNoRows) {
			return ErrTokenUnknown
		}
		if err != nil {
			return err
		}
		if err := checkToken(t, now); err != nil {
			return err
		}
		err = tx.QueryRowContext(ctx, db.q.useToken, t.ID).Scan(&t.Uses)
		if errors.Is(err, sql.ErrNoRows) {
			// Another enrolment or a revocation got in between the read
			// and the UPDATE (PostgreSQL, read committed); re-read to say
			// which.
			t, err = scanToken(tx.QueryRowContext(ctx, db.q.getToken, t.ID))
			if err != nil {
				return err
			}
			if err := checkToken(t, now); err != nil {
				return err
			}
			return ErrTokenUsedUp
		}
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, db.q.insertComputer,
			c.ID, c.Hostname, c.OS, c.OSVersion, c.AgentVersion, encodeIPs(nil, c.IPs),
			ComputerActive, t.ID, micros(c.EnrolledAt), micros(c.LastSeen),
			int64(c.Uptime), int64(c.ClockOffset), c.CertSerial, micros(c.CertNotAfter))
		if err != nil {
			return err
		}
		tok = t
		// A new computer needs its effective policy resolved, on every
		// manager node.
		return db.bumpPolicyRevision(ctx, tx)
	})
	if err != nil {
		return Token{}, db.fail(fmt.Sprintf("enrol computer %q", c.ID), err)
	}
	return tok, nil
}

// GetComputer returns one computer by ID.
func (db *DB) GetComputer(ctx context.Context, id string) (Computer, error) {
	c, err := scanComputer(db.db.QueryRowContext(ctx, db.q.getComputer, id))
	if err != nil {
		return Computer{}, db.fail(fmt.Sprintf("get computer %q", id), err)
	}
	return c, nil
}

// ListComputers returns every computer ordered by hostname, then ID.
func (db *DB) ListComputers(ctx context.Context) ([]Computer, error) {
	rows, err := db.db.QueryContext(ctx, db.q.listComputers)
	if err != nil {
		return nil, db.fail("list computers", err)
	}
	defer rows.Close()
	var cs []Computer
	for rows.Next() {
		c, err := scanComputer(rows)
		if err != nil {
			return nil, db.fail("list computers", err)
		}
		cs = append(cs, c)
	}
	if err := rows.Err(); err != nil {
		return nil, db.fail("list computers", err)
	}
	return cs, nil
}

// DeactivateComputer marks a computer deactivated at the given time and
// returns it; ErrConflict if it was deactivated already.
func (db *DB) DeactivateComputer(ctx context.Context, id string, at time.Time) (Computer, error) {
	if at.IsZero() {
		return Computer{}, fmt.Errorf("deactivate computer %q: zero time: %w", id, ErrInvalid)
	}
	c, err := scanComputer(db.db.QueryRowContext(ctx, db.q.deactivateComputer, ComputerDeactivated, micros(at), id, ComputerActive))
	if errors.Is(err, sql.ErrNoRows) {
		if _, err := db.GetComputer(ctx, id); err != nil {
			return Computer{}, fmt.Errorf("deactivate computer: %w", err)
		}
		return Computer{}, fmt.Errorf("deactivate computer %q: already deactivated: %w", id, ErrConflict)
	}
	if err != nil {
		return Computer{}, db.fail(fmt.Sprintf("deactivate computer %q", id), err)
	}
	return c, nil
}

// UpdatePresence records a batch of heartbeats in one transaction. Unknown
// IDs are ignored: the computer may have been removed since it heartbeated.
// ps is not modified.
func (db *DB) UpdatePresence(ctx context.Context, ps []Presence) error {
	if len(ps) == 0 {
		return nil
	}
	// Lock rows in ID order so that two manager nodes writing overlapping
	// batches on PostgreSQL queue rather than deadlock. Batches usually
	// arrive sorted, in which case this costs one pass and no allocation.
	var order []int
	if !slices.IsSortedFunc(ps, func(a, b Presence) int { return strings.Compare(a.ID, b.ID) }) {
		order = make([]int, len(ps))
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(a, b int) int { return strings.Compare(ps[a].ID, ps[b].ID) })
	}
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, db.q.updatePresence)
		if err != nil {
			return err
		}
		defer stmt.Close()
		var buf []byte
		for i := range ps {
			p := &ps[i]
			if order != nil {
				p = &ps[order[i]]
			}
			buf = appendIPs(buf[:0], p.IPs)
			_, err := stmt.ExecContext(ctx,
				micros(p.LastSeen), p.Hostname, p.OS, p.OSVersion, p.AgentVersion,
				string(buf), int64(p.Uptime), int64(p.ClockOffset), p.ID)
			if err != nil {
				return fmt.Errorf("computer %q: %w", p.ID, err)
			}
		}
		return nil
	})
	if err != nil {
		return db.fail(fmt.Sprintf("update presence of %d computers", len(ps)), err)
	}
	return nil
}

// SetComputerCert records the newest certificate issued to a computer.
func (db *DB) SetComputerCert(ctx context.Context, id, serial string, notAfter time.Time) error {
	res, err := db.db.ExecContext(ctx, db.q.setComputerCert, serial, micros(notAfter), id)
	if err == nil {
		err = expectOne(res)
	}
	if err != nil {
		return db.fail(fmt.Sprintf("set certificate of computer %q", id), err)
	}
	return nil
}

// expectOne turns "no row changed" into sql.ErrNoRows. Both engines count
// matched rows, so an UPDATE that writes the same values still counts.
func expectOne(res sql.Result) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return sql.ErrNoRows
	}
	return nil
}

// ---- alerts ----

// RaiseAlert records a as an open alert unless one of the same Type,
// ComputerID and Subject is open already, in which case it counts an
// occurrence on that one (Occurrences, LastAt) and returns it with false.
// The partial unique index on open alerts arbitrates races between
// goroutines and manager nodes. Occurrences, LastAt and the acknowledged
// and cleared fields of a are ignored.
func (db *DB) RaiseAlert(ctx context.Context, a Alert) (Alert, bool, error) {
	return db.raiseAlert(ctx, a, 0, nil)
}

// GetAlert returns one alert by ID.
func (db *DB) GetAlert(ctx context.Context, id string) (Alert, error) {
	a, err := scanAlert(db.db.QueryRowContext(ctx, db.q.getAlert, id))
	if err != nil {
		return Alert{}, db.fail(fmt.Sprintf("get alert %q", id), err)
	}
	return a, nil
}

// ClearAlert clears an open alert and returns it; ErrConflict if it was
// cleared already.
func (db *DB) ClearAlert(ctx context.Context, id string, at time.Time, by string) (Alert, error) {
	if at.IsZero() {
		return Alert{}, fmt.Errorf("clear alert %q: zero time: %w", id, ErrInvalid)
	}
	a, err := scanAlert(db.db.QueryRowContext(ctx, db.q.clearAlert, micros(at), by, id))
	if errors.Is(err, sql.ErrNoRows) {
		if _, err := db.GetAlert(ctx, id); err != nil {
			return Alert{}, fmt.Errorf("clear alert: %w", err)
		}
		return Alert{}, fmt.Errorf("clear alert %q: already cleared: %w", id, ErrConflict)
	}
	if err != nil {
		return Alert{}, db.fail(fmt.Sprintf("clear alert %q", id), err)
	}
	return a, nil
}

// ClearOpenAlerts clears the open alert of type typ about computerID (""
// for the manager itself) and reports how many it cleared. An empty typ
// clears the computer's open alerts of every type, e.g. when it is
// deactivated.
func (db *DB) ClearOpenAlerts(ctx context.Context, typ, computerID string, at time.Time, by string) (int, error) {
	if at.IsZero() {
		return 0, fmt.Errorf("clear open %q alerts of computer %q: zero time: %w", typ, computerID, ErrInvalid)
	}
	var res sql.Result
	var err error
	if typ == "" {
		res, err = db.db.ExecContext(ctx, db.q.clearOpenAlertsAll, micros(at), by, computerID)
	} else {
		res, err = db.db.ExecContext(ctx, db.q.clearOpenAlerts, micros(at), by, computerID, typ)
	}
	var n int64
	if err == nil {
		n, err = res.RowsAffected()
	}
	if err != nil {
		return 0, db.fail(fmt.Sprintf("clear open %q alerts of computer %q", typ, computerID), err)
	}
	return int(n), nil
}

// ListAlerts returns the alerts f selects, newest first (ties by ID).
func (db *DB) ListAlerts(ctx context.Context, f AlertFilter) ([]Alert, error) {
	if f.Limit < 0 {
		return nil, fmt.Errorf("list alerts: negative limit: %w", ErrInvalid)
	}
	var b strings.Builder
	args := make([]any, 0, 2+len(f.Types))
	b.WriteString("SELECT " + alertColumns + " FROM alerts")
	and := " WHERE "
	if f.Open != nil {
		b.WriteString(and)
		if *f.Open {
			b.WriteString("cleared_at IS NULL")
		} else {
			b.WriteString("cleared_at IS NOT NULL")
		}
		and = " AND "
	}
	if f.Acked != nil {
		b.WriteString(and)
		if *f.Acked {
			b.WriteString("acked_at IS NOT NULL")
		} else {
			b.WriteString("acked_at IS NULL")
		}
		and = " AND "
	}
	for _, c := range []struct{ col, v string }{{"computer_id", f.ComputerID}, {"subject", f.Subject}, {"rule_id", f.RuleID}} {
		if c.v != "" {
			b.WriteString(and + c.col + " = ?")
			args = append(args, c.v)
			and = " AND "
		}
	}
	if len(f.Types) > 0 {
		b.WriteString(and + "type IN (")
		for i, t := range f.Types {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("?")
			args = append(args, t)
		}
		b.WriteString(")")
	}
	b.WriteString(" ORDER BY raised_at DESC, id" + db.collate)
	if f.Limit > 0 {
		b.WriteString(" LIMIT ?")
		args = append(args, f.Limit)
	}
	q := b.String()
	if db.d.Rebind {
		q = rebindDollar(q)
	}
	rows, err := db.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, db.fail("list alerts", err)
	}
	defer rows.Close()
	var as []Alert
	for rows.Next() {
		a, err := scanAlert(rows)
		if err != nil {
			return nil, db.fail("list alerts", err)
		}
		as = append(as, a)
	}
	if err := rows.Err(); err != nil {
		return nil, db.fail("list alerts", err)
	}
	return as, nil
}

// ---- encoding ----

// micros encodes a time as Unix microseconds, the zero time as NULL.
func micros(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

// fromMicros decodes micros; times come back in UTC.
func fromMicros(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.UnixMicro(v.Int64).UTC()
}

func encodeIPs(buf []byte, ips []string) string { return string(appendIPs(buf, ips)) }

// appendIPs appends ips as a JSON array. Addresses need no escaping, so the
// hot path (UpdatePresence) skips encoding/json unless a string does.
func appendIPs(b []byte, ips []string) []byte {
	b = append(b, '[')
	for i, s := range ips {
		if i > 0 {
			b = append(b, ',')
		}
		if plainJSON(s) {
			b = append(b, '"')
			b = append(b, s...)
			b = append(b, '"')
			continue
		}
		q, _ := json.Marshal(s) // a string always marshals
		b = append(b, q...)
	}
	return append(b, ']')
}

func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// decodeIPs decodes appendIPs's output; an empty list decodes as nil.
func decodeIPs(s string) ([]string, error) {
	if s == "" || s == "[]" {
		return nil, nil
	}
	var ips []string
	if err := json.Unmarshal([]byte(s), &ips); err != nil {
		return nil, fmt.Errorf("decode IPs %q: %w", s, err)
	}
	if len(ips) == 0 {
		return nil, nil
	}
	return ips, nil
}

type scanner interface {
	Scan(dest ...any) error
}

func scanToken(s scanner) (Token, error) {
	var t Token
	var created, expires, revoked sql.NullInt64
	if err := s.Scan(&t.ID, &t.Hash, &t.Description, &created, &expires, &t.MaxUses, &t.Uses, &revoked); err != nil {
		return Token{}, err
	}
	t.CreatedAt, t.ExpiresAt, t.RevokedAt = fromMicros(created), fromMicros(expires), fromMicros(revoked)
	return t, nil
}

func scanComputer(s scanner) (Computer, error) {
	var c Computer
	var ips string
	var enrolled, deactivated, lastSeen, notAfter sql.NullInt64
	var uptime, offset int64
	var policyID sql.NullInt64
	var overrides string
	err := s.Scan(&c.ID, &c.Hostname, &c.OS, &c.OSVersion, &c.AgentVersion, &ips, &c.State, &c.TokenID,
		&enrolled, &deactivated, &lastSeen, &uptime, &offset, &c.CertSerial, &notAfter, &c.Communication,
		&policyID, &overrides, &c.Isolation)
	if err != nil {
		return Computer{}, err
	}
	c.PolicyID = int(policyID.Int64)
	if overrides != "" && overrides != "{}" {
		if err := json.Unmarshal([]byte(overrides), &c.Settings); err != nil {
			return Computer{}, fmt.Errorf("computer %q: stored setting overrides: %w", c.ID, err)
		}
	}
	if c.IPs, err = decodeIPs(ips); err != nil {
		return Computer{}, err
	}
	c.EnrolledAt, c.DeactivatedAt = fromMicros(enrolled), fromMicros(deactivated)
	c.LastSeen, c.CertNotAfter = fromMicros(lastSeen), fromMicros(notAfter)
	c.Uptime, c.ClockOffset = time.Duration(uptime), time.Duration(offset)
	return c, nil
}

func scanAlert(s scanner) (Alert, error) {
	var a Alert
	var raised, last, acked, cleared sql.NullInt64
	if err := s.Scan(&a.ID, &a.Type, &a.Severity, &a.ComputerID, &a.Message, &raised, &cleared, &a.ClearedBy,
		&a.Subject, &a.RuleID, &a.Occurrences, &last, &acked, &a.AckedBy, &a.Data); err != nil {
		return Alert{}, err
	}
	a.RaisedAt, a.ClearedAt = fromMicros(raised), fromMicros(cleared)
	a.LastAt, a.AckedAt = fromMicros(last), fromMicros(acked)
	return a, nil
}

// ---- queries ----

const (
	tokenColumns    = "id, hash, description, created_at, expires_at, max_uses, uses, revoked_at"
	computerColumns = "id, hostname, os, os_version, agent_version, ips, state, token_id, " +
		"enrolled_at, deactivated_at, last_seen, uptime, clock_offset, cert_serial, cert_not_after, communication, " +
		"policy_id, settings, isolation"
	alertColumns = "id, type, severity, computer_id, message, raised_at, cleared_at, cleared_by, " +
		"subject, rule_id, occurrences, last_at, acked_at, acked_by, data"
)

// queries holds every fixed statement, rebound for the dialect once in New
// so that calls do not rewrite SQL.
type queries struct {
	insertEvent                                         string
	loadCA, saveCA                                      string
	settings, putSetting                                string
	createToken, listTokens, getToken, tokenByHash      string
	revokeToken, useToken                               string
	insertComputer, getComputer, listComputers          string
	deactivateComputer, updatePresence, setComputerCert string
	insertAlert, countOpenAlert, countAlert, lastAlert  string
	getAlert, clearAlert, ackAlert                      string
	clearOpenAlerts, clearOpenAlertsAll                 string
}

func newQueries(rebind func(string) string, collate string) queries {
	return queries{
		insertEvent: rebind(`INSERT INTO events (` + eventColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (computer_id, id) DO NOTHING`),
		loadCA: rebind(`SELECT cert_pem, key_pem, created_at FROM ca WHERE id = 1`),
		saveCA: rebind(`INSERT INTO ca (id, cert_pem, key_pem, created_at) VALUES (1, ?, ?, ?)`),

		settings: rebind(`SELECT key, value FROM settings`),
		putSetting: rebind(`INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`),

		createToken: rebind(`INSERT INTO activation_tokens (` + tokenColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
		// NULLS LAST: the engines disagree on where NULLs sort by default.
		listTokens:  rebind(`SELECT ` + tokenColumns + ` FROM activation_tokens ORDER BY created_at DESC NULLS LAST, id` + collate),
		getToken:    rebind(`SELECT ` + tokenColumns + ` FROM activation_tokens WHERE id = ?`),
		tokenByHash: rebind(`SELECT ` + tokenColumns + ` FROM activation_tokens WHERE hash = ?`),
		revokeToken: rebind(`UPDATE activation_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL
			RETURNING ` + tokenColumns),
		// The guard repeats the checks of checkToken that can change under
		// us; expiry cannot.
		useToken: rebind(`UPDATE activation_tokens SET uses = uses + 1
			WHERE id = ? AND revoked_at IS NULL AND (max_uses = 0 OR uses < max_uses)
			RETURNING uses`),

		insertComputer: rebind(`INSERT INTO computers (id, hostname, os, os_version, agent_version, ips,
			state, token_id, enrolled_at, last_seen, uptime, clock_offset, cert_serial, cert_not_after)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		getComputer:   rebind(`SELECT ` + computerColumns + ` FROM computers WHERE id = ?`),
		listComputers: rebind(`SELECT ` + computerColumns + ` FROM computers ORDER BY hostname` + collate + `, id` + collate),
		deactivateComputer: rebind(`UPDATE computers SET state = ?, deactivated_at = ? WHERE id = ? AND state = ?
			RETURNING ` + computerColumns),
		updatePresence: rebind(`UPDATE computers SET last_seen = ?, hostname = ?, os = ?, os_version = ?,
			agent_version = ?, ips = ?, uptime = ?, clock_offset = ? WHERE id = ?`),
		setComputerCert: rebind(`UPDATE computers SET cert_serial = ?, cert_not_after = ? WHERE id = ?`),

		// The conflict target repeats the partial index's predicate: both
		// engines need it to pick that index as the arbiter.
		insertAlert: rebind(`INSERT INTO alerts (id, type, severity, computer_id, subject, rule_id, message, data, raised_at, last_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (type, computer_id, subject) WHERE cleared_at IS NULL DO NOTHING
			RETURNING ` + alertColumns),
		// An occurrence may be reported late: last_at only moves forward.
		countOpenAlert: rebind(`UPDATE alerts SET occurrences = occurrences + 1,
			last_at = CASE WHEN last_at IS NULL OR last_at < ? THEN ? ELSE last_at END
			WHERE type = ? AND computer_id = ? AND subject = ? AND cleared_at IS NULL
			RETURNING ` + alertColumns),
		countAlert: rebind(`UPDATE alerts SET occurrences = occurrences + 1,
			last_at = CASE WHEN last_at IS NULL OR last_at < ? THEN ? ELSE last_at END
			WHERE id = ?
			RETURNING ` + alertColumns),
		lastAlert: rebind(`SELECT ` + alertColumns + ` FROM alerts
			WHERE type = ? AND computer_id = ? AND subject = ?
			ORDER BY raised_at DESC, id` + collate + ` DESC LIMIT 1`),
		ackAlert: rebind(`UPDATE alerts SET acked_at = ?, acked_by = ? WHERE id = ? AND acked_at IS NULL AND cleared_at IS NULL
			RETURNING ` + alertColumns),
		getAlert: rebind(`SELECT ` + alertColumns + ` FROM alerts WHERE id = ?`),
		clearAlert: rebind(`UPDATE alerts SET cleared_at = ?, cleared_by = ? WHERE id = ? AND cleared_at IS NULL
			RETURNING ` + alertColumns),
		clearOpenAlerts: rebind(`UPDATE alerts SET cleared_at = ?, cleared_by = ?
			WHERE computer_id = ? AND type = ? AND cleared_at IS NULL`),
		clearOpenAlertsAll: rebind(`UPDATE alerts SET cleared_at = ?, cleared_by = ?
			WHERE computer_id = ? AND cleared_at IS NULL`),
	}
}

// rebindDollar rewrites ? placeholders to $1, $2, … outside quoted strings
// and identifiers.
func rebindDollar(q string) string {
	b := make([]byte, 0, len(q)+8)
	n := 0
	var quote byte
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '?':
			n++
			b = append(b, '$')
			b = strconv.AppendInt(b, int64(n), 10)
			continue
		}
		b = append(b, c)
	}
	return string(b)
}
