package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/yagura/yagura/internal/policy"
)

// Owner kinds of rule assignments.
const (
	OwnerPolicy   = "policy"
	OwnerComputer = "computer"
)

const policyColumns = "id, name, description, parent_id, settings, version, created_at, updated_at"

func scanPolicy(s scanner) (policy.Policy, error) {
	var p policy.Policy
	var parent sql.NullInt64
	var settings string
	var created, updated sql.NullInt64
	if err := s.Scan(&p.ID, &p.Name, &p.Description, &parent, &settings, &p.Version, &created, &updated); err != nil {
		return p, err
	}
	p.ParentID = int(parent.Int64)
	p.Settings = map[string]string{}
	if err := json.Unmarshal([]byte(settings), &p.Settings); err != nil {
		return p, fmt.Errorf("policy %d: stored settings: %w", p.ID, err)
	}
	p.Rules = map[int]bool{}
	p.CreatedAt, p.UpdatedAt = fromMicros(created), fromMicros(updated)
	return p, nil
}

func encodeSettings(m map[string]string) string {
	if len(m) == 0 {
		return "{}"
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func nullID(id int) sql.NullInt64 { return sql.NullInt64{Int64: int64(id), Valid: id != 0} }

// CreatePolicy stores a new policy with its settings and rule assignments
// and returns it with its ID and version 1. Settings are validated by the
// caller; the store checks the parent and the rules exist.
func (db *DB) CreatePolicy(ctx context.Context, p policy.Policy, now time.Time) (policy.Policy, error) {
	if strings.TrimSpace(p.Name) == "" {
		return p, fmt.Errorf("create policy: name is required: %w", ErrInvalid)
	}
	if p.Settings == nil {
		p.Settings = map[string]string{}
	}
	if p.Rules == nil {
		p.Rules = map[int]bool{}
	}
	err := db.retryConflict(func() error {
		return db.inTx(ctx, func(tx *sql.Tx) error {
			// First, so writers of anything a policy is made of queue on
			// this row (PostgreSQL) and checks below still hold at commit.
			if err := db.bumpPolicyRevision(ctx, tx); err != nil {
				return err
			}
			if err := db.checkPolicyRefs(ctx, tx, 0, p); err != nil {
				return err
			}
			id, err := db.nextID(ctx, tx, "policies")
			if err != nil {
				return err
			}
			p.ID, p.Version, p.CreatedAt, p.UpdatedAt = int(id), 1, now, now
			if _, err := tx.ExecContext(ctx, db.rb("INSERT INTO policies ("+policyColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
				p.ID, p.Name, p.Description, nullID(p.ParentID), encodeSettings(p.Settings), p.Version, micros(now), micros(now)); err != nil {
				return err
			}
			return db.replaceAssignments(ctx, tx, OwnerPolicy, strconv.Itoa(p.ID), p.Rules)
		})
	})
	if err != nil {
		if db.d.IsUniqueViolation(err) {
			return p, fmt.Errorf("create policy: a policy named %q exists already: %w", p.Name, ErrConflict)
		}
		return p, db.fail(fmt.Sprintf("create policy %q", p.Name), err)
	}
	return p, nil
}

// checkPolicyRefs checks a policy's parent exists and is not the policy or
// one of its descendants, and that its rules exist.
func (db *DB) checkPolicyRefs(ctx context.Context, tx *sql.Tx, self int, p policy.Policy) error {
	for parent := p.ParentID; parent != 0; {
		if parent == self {
			return fmt.Errorf("parent_id %d: a policy cannot be its own ancestor: %w", p.ParentID, ErrInvalid)
		}
		var next sql.NullInt64
		err := tx.QueryRowContext(ctx, db.rb("SELECT parent_id FROM policies WHERE id = ?"), parent).Scan(&next)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("parent_id %d: no such policy: %w", parent, ErrInvalid)
		}
		if err != nil {
			return err
		}
		parent = int(next.Int64)
	}
	return db.checkRulesExist(ctx, tx, p.Rules)
}

func (db *DB) checkRulesExist(ctx context.Context, tx *sql.Tx, rules map[int]bool) error {
	for _, id := range slices.Sorted(maps.Keys(rules)) {
		var one int
		err := tx.QueryRowContext(ctx, db.rb("SELECT 1 FROM firewall_rules WHERE id = ?"), id).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("rules: firewall rule %d does not exist: %w", id, ErrInvalid)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// replaceAssignments makes an owner's rule assignments exactly rules.
func (db *DB) replaceAssignments(ctx context.Context, tx *sql.Tx, kind, owner string, rules map[int]bool) error {
	if _, err := tx.ExecContext(ctx, db.rb("DELETE FROM rule_assignments WHERE owner_kind = ? AND owner_id = ?"), kind, owner); err != nil {
		return err
	}
	for _, id := range slices.Sorted(maps.Keys(rules)) {
		on := 0
		if rules[id] {
			on = 1
		}
		if _, err := tx.ExecContext(ctx, db.rb("INSERT INTO rule_assignments (owner_kind, owner_id, rule_id, assigned) VALUES (?, ?, ?, ?)"), kind, owner, id, on); err != nil {
			return err
		}
	}
	return nil
}

// GetPolicy returns one policy with its rule assignments.
func (db *DB) GetPolicy(ctx context.Context, id int) (policy.Policy, error) {
	p, err := scanPolicy(db.db.QueryRowContext(ctx, db.rb("SELECT "+policyColumns+" FROM policies WHERE id = ?"), id))
	if err != nil {
		return p, db.fail(fmt.Sprintf("get policy %d", id), err)
	}
	rules, err := db.assignments(ctx, OwnerPolicy, strconv.Itoa(id))
	if err != nil {
		return p, db.fail(fmt.Sprintf("get policy %d", id), err)
	}
	p.Rules = rules
	return p, nil
}

func (db *DB) assignments(ctx context.Context, kind, owner string) (map[int]bool, error) {
	rows, err := db.db.QueryContext(ctx, db.rb("SELECT rule_id, assigned FROM rule_assignments WHERE owner_kind = ? AND owner_id = ?"), kind, owner)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int]bool{}
	for rows.Next() {
		var id, on int
		if err := rows.Scan(&id, &on); err != nil {
			return nil, err
		}
		out[id] = on == 1
	}
	return out, rows.Err()
}

// allAssignments returns every owner's assignments of one kind.
func (db *DB) allAssignments(ctx context.Context, kind string) (map[string]map[int]bool, error) {
	rows, err := db.db.QueryContext(ctx, db.rb("SELECT owner_id, rule_id, assigned FROM rule_assignments WHERE owner_kind = ?"), kind)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]map[int]bool{}
	for rows.Next() {
		var owner string
		var id, on int
		if err := rows.Scan(&owner, &id, &on); err != nil {
			return nil, err
		}
		if out[owner] == nil {
			out[owner] = map[int]bool{}
		}
		out[owner][id] = on == 1
	}
	return out, rows.Err()
}

// ListPolicies returns every policy with its assignments, by ID.
func (db *DB) ListPolicies(ctx context.Context) ([]policy.Policy, error) {
	rows, err := db.db.QueryContext(ctx, "SELECT "+policyColumns+" FROM policies ORDER BY id")
	if err != nil {
		return nil, db.fail("list policies", err)
	}
	defer rows.Close()
	var out []policy.Policy
	for rows.Next() {
		p, err := scanPolicy(rows)
		if err != nil {
			return nil, db.fail("list policies", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, db.fail("list policies", err)
	}
	all, err := db.allAssignments(ctx, OwnerPolicy)
	if err != nil {
		return nil, db.fail("list policies", err)
	}
	for i := range out {
		if r := all[strconv.Itoa(out[i].ID)]; r != nil {
			out[i].Rules = r
		}
	}
	return out, nil
}

// UpdatePolicy replaces a policy's name, description, parent, settings and
// rule assignments. With ifVersion > 0 it refuses (ErrConflict) unless the
// stored version is that one, so two administrators cannot overwrite each
// other unseen. The returned policy has the next version.
func (db *DB) UpdatePolicy(ctx context.Context, p policy.Policy, ifVersion int64, now time.Time) (policy.Policy, error) {
	if strings.TrimSpace(p.Name) == "" {
		return p, fmt.Errorf("update policy %d: name is required: %w", p.ID, ErrInvalid)
	}
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if err := db.bumpPolicyRevision(ctx, tx); err != nil {
			return err
		}
		var cur int64
		var created sql.NullInt64
		err := tx.QueryRowContext(ctx, db.rb("SELECT version, created_at FROM policies WHERE id = ?"), p.ID).Scan(&cur, &created)
		if err != nil {
			return err
		}
		if ifVersion > 0 && cur != ifVersion {
			return fmt.Errorf("policy %d is at version %d, not %d (someone else changed it; reload and retry): %w", p.ID, cur, ifVersion, ErrConflict)
		}
		if err := db.checkPolicyRefs(ctx, tx, p.ID, p); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, db.rb(`UPDATE policies SET name = ?, description = ?, parent_id = ?, settings = ?, version = ?, updated_at = ?
			WHERE id = ? AND version = ?`), p.Name, p.Description, nullID(p.ParentID), encodeSettings(p.Settings), cur+1, micros(now), p.ID, cur)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("policy %d changed meanwhile: %w", p.ID, ErrConflict)
		}
		p.Version, p.UpdatedAt, p.CreatedAt = cur+1, now, fromMicros(created)
		return db.replaceAssignments(ctx, tx, OwnerPolicy, strconv.Itoa(p.ID), p.Rules)
	})
	if err != nil {
		if db.d.IsUniqueViolation(err) {
			return p, fmt.Errorf("update policy %d: a policy named %q exists already: %w", p.ID, p.Name, ErrConflict)
		}
		return p, db.fail(fmt.Sprintf("update policy %d", p.ID), err)
	}
	return p, nil
}

// DeletePolicy removes a policy that has no child policies and no
// computers; otherwise ErrConflict names what still uses it.
func (db *DB) DeletePolicy(ctx context.Context, id int) error {
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if err := db.bumpPolicyRevision(ctx, tx); err != nil {
			return err
		}
		var name string
		if err := tx.QueryRowContext(ctx, db.rb("SELECT name FROM policies WHERE id = ?"), id).Scan(&name); err != nil {
			return err
		}
		var users []string
		rows, err := tx.QueryContext(ctx, db.rb("SELECT id, name FROM policies WHERE parent_id = ? ORDER BY id"), id)
		if err != nil {
			return err
		}
		for rows.Next() {
			var cid int
			var cname string
			if err := rows.Scan(&cid, &cname); err != nil {
				rows.Close()
				return err
			}
			users = append(users, fmt.Sprintf("policy %d %q", cid, cname))
		}
		rows.Close()
		rows, err = tx.QueryContext(ctx, db.rb("SELECT id, hostname FROM computers WHERE policy_id = ? AND state = ? ORDER BY id"), id, ComputerActive)
		if err != nil {
			return err
		}
		for rows.Next() {
			var cid, host string
			if err := rows.Scan(&cid, &host); err != nil {
				rows.Close()
				return err
			}
			users = append(users, fmt.Sprintf("computer %s (%s)", cid, host))
		}
		rows.Close()
		if len(users) > 0 {
			if len(users) > 10 {
				users = append(users[:10], fmt.Sprintf("and %d more", len(users)-10))
			}
			return fmt.Errorf("policy %d %q is used by %s; move them to another policy first: %w", id, name, strings.Join(users, ", "), ErrConflict)
		}
		// Retired computers may still name it; they fall back to the default.
		if _, err := tx.ExecContext(ctx, db.rb("UPDATE computers SET policy_id = NULL WHERE policy_id = ?"), id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, db.rb("DELETE FROM rule_assignments WHERE owner_kind = ? AND owner_id = ?"), OwnerPolicy, strconv.Itoa(id)); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, db.rb("DELETE FROM policies WHERE id = ?"), id)
		return err
	})
	if err != nil {
		return db.fail(fmt.Sprintf("delete policy %d", id), err)
	}
	return nil
}

// ComputerPolicy is what an administrator sets on one computer: its
// policy (0: the default policy) and its overrides. Communication is the
// override of agent.communication, kept in its own column from before
// policies ("" : none).
type ComputerPolicy struct {
	PolicyID      int
	Settings      map[string]string
	Rules         map[int]bool
	Communication string
}

// SetComputerPolicy replaces a computer's policy and overrides, in one
// transaction: a refused rule or policy leaves everything as it was.
func (db *DB) SetComputerPolicy(ctx context.Context, id string, cp ComputerPolicy) (Computer, error) {
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if err := db.bumpPolicyRevision(ctx, tx); err != nil {
			return err
		}
		if cp.PolicyID != 0 {
			var one int
			err := tx.QueryRowContext(ctx, db.rb("SELECT 1 FROM policies WHERE id = ?"), cp.PolicyID).Scan(&one)
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("policy %d does not exist: %w", cp.PolicyID, ErrInvalid)
			}
			if err != nil {
				return err
			}
		}
		if err := db.checkRulesExist(ctx, tx, cp.Rules); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, db.rb("UPDATE computers SET policy_id = ?, settings = ?, communication = ? WHERE id = ?"),
			nullID(cp.PolicyID), encodeSettings(cp.Settings), cp.Communication, id)
		if err != nil {
			return err
		}
		if err := expectOne(res); err != nil {
			return err
		}
		return db.replaceAssignments(ctx, tx, OwnerComputer, id, cp.Rules)
	})
	if err != nil {
		return Computer{}, db.fail(fmt.Sprintf("set policy of computer %q", id), err)
	}
	return db.GetComputer(ctx, id)
}

// ComputerRules returns one computer's rule assignment overrides.
func (db *DB) ComputerRules(ctx context.Context, id string) (map[int]bool, error) {
	r, err := db.assignments(ctx, OwnerComputer, id)
	if err != nil {
		return nil, db.fail(fmt.Sprintf("rule overrides of computer %q", id), err)
	}
	return r, nil
}

// AllComputerRules returns every computer's rule assignment overrides.
func (db *DB) AllComputerRules(ctx context.Context) (map[string]map[int]bool, error) {
	r, err := db.allAssignments(ctx, OwnerComputer)
	if err != nil {
		return nil, db.fail("rule overrides of computers", err)
	}
	return r, nil
}

// SetComputerIsolation records the isolation an isolate or release job left
// ("isolated" or ""), so it shows while the computer is offline.
func (db *DB) SetComputerIsolation(ctx context.Context, id, state string) error {
	res, err := db.db.ExecContext(ctx, db.rb("UPDATE computers SET isolation = ? WHERE id = ?"), state, id)
	if err == nil {
		err = expectOne(res)
	}
	if err != nil {
		return db.fail(fmt.Sprintf("set isolation of computer %q", id), err)
	}
	return nil
}

// SavePolicyDocument keeps an effective document by its fingerprint, so
// deltas can be computed from it later. Saving one twice is not an error.
func (db *DB) SavePolicyDocument(ctx context.Context, fingerprint string, body []byte, now time.Time) error {
	if fingerprint == "" {
		return fmt.Errorf("save policy document: empty fingerprint: %w", ErrInvalid)
	}
	_, err := db.db.ExecContext(ctx, db.rb("INSERT INTO policy_documents (fingerprint, body, created_at) VALUES (?, ?, ?) ON CONFLICT (fingerprint) DO NOTHING"),
		fingerprint, string(body), micros(now))
	if err != nil {
		return db.fail("save policy document "+fingerprint, err)
	}
	return nil
}

// PolicyDocument returns a saved document, or ErrNotFound.
func (db *DB) PolicyDocument(ctx context.Context, fingerprint string) ([]byte, error) {
	var body string
	err := db.db.QueryRowContext(ctx, db.rb("SELECT body FROM policy_documents WHERE fingerprint = ?"), fingerprint).Scan(&body)
	if err != nil {
		return nil, db.fail("load policy document "+fingerprint, err)
	}
	return []byte(body), nil
}

// PrunePolicyDocuments deletes documents saved before t, except those in
// keep (the ones computers still hold or should hold).
func (db *DB) PrunePolicyDocuments(ctx context.Context, before time.Time, keep []string) (int, error) {
	var n int
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, db.rb("SELECT fingerprint FROM policy_documents WHERE created_at < ?"), micros(before))
		if err != nil {
			return err
		}
		var old []string
		for rows.Next() {
			var fp string
			if err := rows.Scan(&fp); err != nil {
				rows.Close()
				return err
			}
			if !slices.Contains(keep, fp) {
				old = append(old, fp)
			}
		}
		rows.Close()
		for _, fp := range old {
			if _, err := tx.ExecContext(ctx, db.rb("DELETE FROM policy_documents WHERE fingerprint = ?"), fp); err != nil {
				return err
			}
		}
		n = len(old)
		return nil
	})
	if err != nil {
		return 0, db.fail("prune policy documents", err)
	}
	return n, nil
}
