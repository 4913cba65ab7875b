package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/yagura/yagura/internal/flowprofile"
)

// KeyFlowRevision is the settings key counting changes to flow exporters
// (names, overrides, new exporters) and flow profiles. A manager node
// compares it with the value it last applied to know, with one cheap read,
// whether another node changed an exporter's settings that its collector
// must apply too.
const KeyFlowRevision = "flows.revision"

// FlowRevision returns the current flow revision (0 before any change).
func (db *DB) FlowRevision(ctx context.Context) (int64, error) {
	var v string
	err := db.db.QueryRowContext(ctx, db.rb("SELECT value FROM settings WHERE key = ?"), KeyFlowRevision).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, db.fail("read flow revision", err)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read flow revision: stored value %q is not a number", v)
	}
	return n, nil
}

// bumpFlowRevision increments the flow revision inside tx.
func (db *DB) bumpFlowRevision(ctx context.Context, tx *sql.Tx) error {
	now := time.Now().UnixMicro()
	res, err := tx.ExecContext(ctx, db.rb(`UPDATE settings SET value = CAST(CAST(value AS BIGINT) + 1 AS TEXT), updated_at = ? WHERE key = ?`), now, KeyFlowRevision)
	if err != nil {
		return fmt.Errorf("bump flow revision: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, db.rb("INSERT INTO settings (key, value, updated_at) VALUES (?, '1', ?)"), KeyFlowRevision, now); err != nil {
		return fmt.Errorf("bump flow revision: %w", err)
	}
	return nil
}

// ---- flow exporters ----

// FlowExporter is what the state store keeps about a flow exporter: what
// administrators set, which the server pushes to the collector
// (api.ExporterSettings makes the collector's form). Its live status
// (counters, templates, the sampling rate in use) is the collector's.
type FlowExporter struct {
	Address netip.Addr // IPv4 unmapped
	Name    string     // "" or unique
	// SamplingRate, when not 0, overrides the rate the exporter reports.
	SamplingRate uint32
	FirstSeen    time.Time // first datagram; zero for one configured before it sent
	UpdatedAt    time.Time
	Version      int64 // 1 when registered, bumped by every change of name or rate
}

const flowExporterColumns = "address, name, sampling_rate, first_seen, updated_at, version"

// FlowExporterKey is how an exporter's address is stored, and how the flow
// store writes a flow's exporter (flowstore.ExporterText): netip's text,
// IPv4 unmapped.
func FlowExporterKey(a netip.Addr) string { return a.Unmap().String() }

func flowExporterAddr(a netip.Addr) (string, error) {
	if !a.IsValid() {
		return "", fmt.Errorf("no exporter address: %w", ErrInvalid)
	}
	return FlowExporterKey(a), nil
}

func scanFlowExporter(s scanner) (FlowExporter, error) {
	var e FlowExporter
	var addr string
	var rate int64
	var first, updated sql.NullInt64
	if err := s.Scan(&addr, &e.Name, &rate, &first, &updated, &e.Version); err != nil {
		return FlowExporter{}, err
	}
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return FlowExporter{}, fmt.Errorf("stored exporter address %q: %w", addr, err)
	}
	e.Address, e.SamplingRate = a, uint32(rate)
	e.FirstSeen, e.UpdatedAt = fromMicros(first), fromMicros(updated)
	return e, nil
}

// CheckFlowExporterName reports why name cannot name an exporter: filters
// refer to exporters by name or address ("exporter core1", "exporter
// 192.0.2.1"), so a name must not look like an address, and it must be
// quotable in a filter.
func CheckFlowExporterName(name string) error {
	switch {
	case name != strings.TrimSpace(name):
		return fmt.Errorf("exporter name %q: no leading or trailing spaces: %w", name, ErrInvalid)
	case strings.ContainsAny(name, "\x00\r\n\t"):
		return fmt.Errorf("exporter name %q: no control characters: %w", name, ErrInvalid)
	case strings.Contains(name, `"`) && strings.Contains(name, "'"):
		return fmt.Errorf("exporter name %q: a filter cannot quote a name with both ' and \": %w", name, ErrInvalid)
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return fmt.Errorf("exporter name %q is an address; filters could not tell them apart: choose a name such as core-router: %w", name, ErrInvalid)
	}
	return nil
}

// UpsertFlowExporterSeen registers an exporter the collector has just
// heard from, first seen at at, and returns it as stored. An exporter the
// store knows already keeps its name, override and version (only a
// missing first-seen time is filled in), so a manager restart or a second
// manager node hearing the same exporter changes nothing an administrator
// set. A new exporter bumps the flow revision (the "live" profile gains a
// channel).
func (db *DB) UpsertFlowExporterSeen(ctx context.Context, addr netip.Addr, at time.Time) (FlowExporter, error) {
	key, err := flowExporterAddr(addr)
	if err != nil {
		return FlowExporter{}, fmt.Errorf("register flow exporter: %w", err)
	}
	if at.IsZero() {
		return FlowExporter{}, fmt.Errorf("register flow exporter %s: zero time: %w", key, ErrInvalid)
	}
	var e FlowExporter
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, db.rb(`INSERT INTO flow_exporters (`+flowExporterColumns+`) VALUES (?, '', 0, ?, ?, 1)
			ON CONFLICT (address) DO NOTHING`), key, micros(at), micros(at))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 1 {
			if err := db.bumpFlowRevision(ctx, tx); err != nil {
				return err
			}
		} else if _, err := tx.ExecContext(ctx, db.rb("UPDATE flow_exporters SET first_seen = ? WHERE address = ? AND first_seen IS NULL"), micros(at), key); err != nil {
			return err
		}
		e, err = scanFlowExporter(tx.QueryRowContext(ctx, db.rb("SELECT "+flowExporterColumns+" FROM flow_exporters WHERE address = ?"), key))
		return err
	})
	if err != nil {
		return FlowExporter{}, db.fail("register flow exporter "+key, err)
	}
	return e, nil
}

// GetFlowExporter returns one exporter.
func (db *DB) GetFlowExporter(ctx context.Context, addr netip.Addr) (FlowExporter, error) {
	key, err := flowExporterAddr(addr)
	if err != nil {
		return FlowExporter{}, fmt.Errorf("get flow exporter: %w", err)
	}
	e, err := scanFlowExporter(db.db.QueryRowContext(ctx, db.rb("SELECT "+flowExporterColumns+" FROM flow_exporters WHERE address = ?"), key))
	if err != nil {
		return FlowExporter{}, db.fail("get flow exporter "+key, err)
	}
	return e, nil
}

// ListFlowExporters returns every exporter, by address (IPv4 before IPv6,
// numerically).
func (db *DB) ListFlowExporters(ctx context.Context) ([]FlowExporter, error) {
	rows, err := db.db.QueryContext(ctx, "SELECT "+flowExporterColumns+" FROM flow_exporters")
	if err != nil {
		return nil, db.fail("list flow exporters", err)
	}
	defer rows.Close()
	var out []FlowExporter
	for rows.Next() {
		e, err := scanFlowExporter(rows)
		if err != nil {
			return nil, db.fail("list flow exporters", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, db.fail("list flow exporters", err)
	}
	// Text order would put 192.0.2.10 before 192.0.2.9.
	slices.SortFunc(out, func(a, b FlowExporter) int { return a.Address.Compare(b.Address) })
	return out, nil
}

// UpdateFlowExporter sets an exporter's name and sampling-rate override
// (0 removes it), at e.UpdatedAt. An exporter the store does not know yet
// is registered, so that an administrator can name it and set its rate
// before it sends; its first-seen time stays empty until it does. With
// ifVersion > 0 it refuses (ErrConflict) unless the stored version is that
// one, and ErrNotFound for an unknown exporter. A name another exporter
// has gives ErrConflict; a name that is not allowed (see
// [CheckFlowExporterName]) ErrInvalid. The flow revision is bumped.
func (db *DB) UpdateFlowExporter(ctx context.Context, e FlowExporter, ifVersion int64) (FlowExporter, error) {
	key, err := flowExporterAddr(e.Address)
	if err != nil {
		return FlowExporter{}, fmt.Errorf("update flow exporter: %w", err)
	}
	if e.UpdatedAt.IsZero() {
		return FlowExporter{}, fmt.Errorf("update flow exporter %s: zero time: %w", key, ErrInvalid)
	}
	if err := CheckFlowExporterName(e.Name); err != nil {
		return FlowExporter{}, fmt.Errorf("update flow exporter %s: %w", key, err)
	}
	var out FlowExporter
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		var cur int64
		err := tx.QueryRowContext(ctx, db.rb("SELECT version FROM flow_exporters WHERE address = ?"), key).Scan(&cur)
		switch {
		case errors.Is(err, sql.ErrNoRows) && ifVersion > 0:
			return err
		case errors.Is(err, sql.ErrNoRows):
			_, err = tx.ExecContext(ctx, db.rb(`INSERT INTO flow_exporters (`+flowExporterColumns+`) VALUES (?, ?, ?, NULL, ?, 1)`),
				key, e.Name, int64(e.SamplingRate), micros(e.UpdatedAt))
		case err != nil:
			return err
		case ifVersion > 0 && cur != ifVersion:
			return fmt.Errorf("flow exporter %s is at version %d, not %d (someone else changed it; reload and retry): %w", key, cur, ifVersion, ErrConflict)
		default:
			var res sql.Result
			res, err = tx.ExecContext(ctx, db.rb("UPDATE flow_exporters SET name = ?, sampling_rate = ?, updated_at = ?, version = ? WHERE address = ? AND version = ?"),
				e.Name, int64(e.SamplingRate), micros(e.UpdatedAt), cur+1, key, cur)
			if err == nil {
				if n, _ := res.RowsAffected(); n == 0 {
					err = fmt.Errorf("flow exporter %s changed meanwhile: %w", key, ErrConflict)
				}
			}
		}
		if err != nil {
			return err
		}
		if err := db.bumpFlowRevision(ctx, tx); err != nil {
			return err
		}
		out, err = scanFlowExporter(tx.QueryRowContext(ctx, db.rb("SELECT "+flowExporterColumns+" FROM flow_exporters WHERE address = ?"), key))
		return err
	})
	if err != nil {
		if db.d.IsUniqueViolation(err) {
			var other string
			if db.db.QueryRowContext(ctx, db.rb("SELECT address FROM flow_exporters WHERE name = ?"), e.Name).Scan(&other) == nil && other != key {
				return FlowExporter{}, fmt.Errorf("update flow exporter %s: exporter %s is named %q already: %w", key, other, e.Name, ErrConflict)
			}
		}
		return FlowExporter{}, db.fail("update flow exporter "+key, err)
	}
	return out, nil
}

// ---- flow profiles ----

const flowProfileColumns = "id, name, description, filter, channels, version, created_at, updated_at"

func scanFlowProfile(s scanner) (flowprofile.Profile, error) {
	var p flowprofile.Profile
	var channels string
	var created, updated sql.NullInt64
	if err := s.Scan(&p.ID, &p.Name, &p.Description, &p.Filter, &channels, &p.Version, &created, &updated); err != nil {
		return flowprofile.Profile{}, err
	}
	if err := json.Unmarshal([]byte(channels), &p.Channels); err != nil {
		return flowprofile.Profile{}, fmt.Errorf("stored channels of flow profile %q: %w", p.ID, err)
	}
	if p.Channels == nil {
		p.Channels = []flowprofile.Channel{}
	}
	p.CreatedAt, p.UpdatedAt = fromMicros(created), fromMicros(updated)
	return p, nil
}

// checkFlowProfile validates p for storing and returns its channels as
// JSON.
func checkFlowProfile(p flowprofile.Profile) (string, error) {
	if p.Builtin {
		return "", fmt.Errorf("profile %s: built-in profiles are not stored: %w", p.ID, ErrInvalid)
	}
	if err := p.Validate(); err != nil {
		return "", fmt.Errorf("%w: %w", err, ErrInvalid)
	}
	if p.Channels == nil {
		p.Channels = []flowprofile.Channel{}
	}
	b, err := json.Marshal(p.Channels)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// CreateFlowProfile stores a new profile, created at p.CreatedAt, and
// returns it at version 1. ErrInvalid unless p.Validate accepts it (the
// built-in "live" cannot be stored); ErrConflict if its ID or name is
// taken.
func (db *DB) CreateFlowProfile(ctx context.Context, p flowprofile.Profile) (flowprofile.Profile, error) {
	channels, err := checkFlowProfile(p)
	if err != nil {
		return flowprofile.Profile{}, fmt.Errorf("create flow profile: %w", err)
	}
	if p.CreatedAt.IsZero() {
		return flowprofile.Profile{}, fmt.Errorf("create flow profile %q: zero time: %w", p.ID, ErrInvalid)
	}
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, db.rb("INSERT INTO flow_profiles ("+flowProfileColumns+") VALUES (?, ?, ?, ?, ?, 1, ?, ?)"),
			p.ID, p.Name, p.Description, p.Filter, channels, micros(p.CreatedAt), micros(p.CreatedAt)); err != nil {
			return err
		}
		return db.bumpFlowRevision(ctx, tx)
	})
	if err != nil {
		return flowprofile.Profile{}, db.nameConflict(ctx, "create flow profile", "flow_profiles", "a flow profile", p.ID, p.Name, err)
	}
	return db.GetFlowProfile(ctx, p.ID)
}

// GetFlowProfile returns one stored profile (never the built-in "live").
func (db *DB) GetFlowProfile(ctx context.Context, id string) (flowprofile.Profile, error) {
	p, err := scanFlowProfile(db.db.QueryRowContext(ctx, db.rb("SELECT "+flowProfileColumns+" FROM flow_profiles WHERE id = ?"), id))
	if err != nil {
		return flowprofile.Profile{}, db.fail(fmt.Sprintf("get flow profile %q", id), err)
	}
	return p, nil
}

// ListFlowProfiles returns every stored profile, by ID.
func (db *DB) ListFlowProfiles(ctx context.Context) ([]flowprofile.Profile, error) {
	rows, err := db.db.QueryContext(ctx, "SELECT "+flowProfileColumns+" FROM flow_profiles ORDER BY id"+db.collate)
	if err != nil {
		return nil, db.fail("list flow profiles", err)
	}
	defer rows.Close()
	var out []flowprofile.Profile
	for rows.Next() {
		p, err := scanFlowProfile(rows)
		if err != nil {
			return nil, db.fail("list flow profiles", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, db.fail("list flow profiles", err)
	}
	return out, nil
}

// UpdateFlowProfile replaces a profile's name, description, filter and
// channels, updated at p.UpdatedAt. With ifVersion > 0 it refuses
// (ErrConflict) unless the stored version is that one. The returned
// profile has the next version.
func (db *DB) UpdateFlowProfile(ctx context.Context, p flowprofile.Profile, ifVersion int64) (flowprofile.Profile, error) {
	channels, err := checkFlowProfile(p)
	if err != nil {
		return flowprofile.Profile{}, fmt.Errorf("update flow profile: %w", err)
	}
	if p.UpdatedAt.IsZero() {
		return flowprofile.Profile{}, fmt.Errorf("update flow profile %q: zero time: %w", p.ID, ErrInvalid)
	}
	err = db.updateVersioned(ctx, "flow_profiles", "flow profile", p.ID, ifVersion, func(tx *sql.Tx, cur int64) (sql.Result, error) {
		res, err := tx.ExecContext(ctx, db.rb(`UPDATE flow_profiles SET name = ?, description = ?, filter = ?, channels = ?,
			version = ?, updated_at = ? WHERE id = ? AND version = ?`),
			p.Name, p.Description, p.Filter, channels, cur+1, micros(p.UpdatedAt), p.ID, cur)
		if err == nil {
			err = db.bumpFlowRevision(ctx, tx)
		}
		return res, err
	})
	if err != nil {
		return flowprofile.Profile{}, db.nameConflict(ctx, "update flow profile", "flow_profiles", "a flow profile", p.ID, p.Name, err)
	}
	return db.GetFlowProfile(ctx, p.ID)
}

// DeleteFlowProfile removes a profile. With ifVersion > 0 it refuses
// (ErrConflict) unless the stored version is that one.
func (db *DB) DeleteFlowProfile(ctx context.Context, id string, ifVersion int64) error {
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		var cur int64
		if err := tx.QueryRowContext(ctx, db.rb("SELECT version FROM flow_profiles WHERE id = ?"), id).Scan(&cur); err != nil {
			return err
		}
		if ifVersion > 0 && cur != ifVersion {
			return fmt.Errorf("flow profile %q is at version %d, not %d (someone else changed it; reload and retry): %w", id, cur, ifVersion, ErrConflict)
		}
		res, err := tx.ExecContext(ctx, db.rb("DELETE FROM flow_profiles WHERE id = ? AND version = ?"), id, cur)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("flow profile %q changed meanwhile: %w", id, ErrConflict)
		}
		return db.bumpFlowRevision(ctx, tx)
	})
	if err != nil {
		return db.fail(fmt.Sprintf("delete flow profile %q", id), err)
	}
	return nil
}

// FlowProfiles returns the state store as a [flowprofile.Source]: stored
// profiles, and "live" made from the stored exporters (which the server
// registers as the collector hears them). Errors for an unknown profile
// wrap both ErrNotFound and flowprofile.ErrNotFound, and name the
// profiles there are.
func (db *DB) FlowProfiles() flowprofile.Source { return flowProfileSource{db} }

type flowProfileSource struct{ db *DB }

func (s flowProfileSource) Profile(ctx context.Context, id string) (flowprofile.Profile, error) {
	if id == flowprofile.LiveID {
		xs, err := s.exporters(ctx)
		if err != nil {
			return flowprofile.Profile{}, err
		}
		return flowprofile.Live(xs), nil
	}
	p, err := s.db.GetFlowProfile(ctx, id)
	if errors.Is(err, ErrNotFound) {
		ids := []string{flowprofile.LiveID}
		if ps, lerr := s.db.ListFlowProfiles(ctx); lerr == nil {
			for _, p := range ps {
				ids = append(ids, p.ID)
			}
		}
		return flowprofile.Profile{}, fmt.Errorf("flow profile %q does not exist (there are: %s): %w: %w",
			id, strings.Join(ids, ", "), flowprofile.ErrNotFound, ErrNotFound)
	}
	if err != nil {
		return p, err
	}
	// The flow table holds exporters' addresses: names in the profile's
	// filters are resolved now, so every caller can compile them.
	xs, err := s.exporters(ctx)
	if err != nil {
		return flowprofile.Profile{}, err
	}
	return flowprofile.ResolveNames(p, xs)
}

func (s flowProfileSource) exporters(ctx context.Context) ([]flowprofile.Exporter, error) {
	es, err := s.db.ListFlowExporters(ctx)
	if err != nil {
		return nil, err
	}
	xs := make([]flowprofile.Exporter, len(es))
	for i, e := range es {
		xs[i] = flowprofile.Exporter{Address: e.Address, Name: e.Name}
	}
	return xs, nil
}
