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

	"github.com/yagura/yagura/internal/firewall"
)

// Firewall rules and the reusable lists they reference. Rules are kept in
// Deep Security's JSON form (firewall.Rule) so that what was imported is
// what is exported; the lists a rule uses are also written to
// firewall_rule_lists, so "who uses this list" needs no scan of rule
// bodies. Every write first bumps the policy revision: besides telling
// caches they are stale, on PostgreSQL its row lock queues concurrent
// firewall writers, so checks made inside a write (does the list exist,
// is the rule assigned) still hold when it commits.

// ListKind says what a reusable list holds.
type ListKind string

// List kinds.
const (
	ListIP   ListKind = "ip"
	ListMAC  ListKind = "mac"
	ListPort ListKind = "port"
)

// Valid reports whether k is a known kind.
func (k ListKind) Valid() bool { return k == ListIP || k == ListMAC || k == ListPort }

// Noun names the kind for messages: "IP list", "MAC list", "port list".
func (k ListKind) Noun() string {
	switch k {
	case ListIP:
		return "IP list"
	case ListMAC:
		return "MAC list"
	case ListPort:
		return "port list"
	case "":
		return "firewall list"
	}
	return fmt.Sprintf("%q list", string(k))
}

func (k ListKind) article() string {
	if k == ListIP {
		return "an " + k.Noun()
	}
	return "a " + k.Noun()
}

// List is a reusable IP, MAC or port list. IP, MAC and port lists share one
// ID space in the store (Deep Security numbers each kind on its own; an
// import remaps them).
type List struct {
	ID          int
	Kind        ListKind
	Name        string
	Description string
	Items       []string // entries as the user wrote them, comments included
}

// IPList converts l (of kind ListIP) to the firewall model.
func (l List) IPList() firewall.IPList {
	return firewall.IPList{ID: l.ID, Name: l.Name, Description: l.Description, Items: l.Items}
}

// MACList converts l (of kind ListMAC) to the firewall model.
func (l List) MACList() firewall.MACList {
	return firewall.MACList{ID: l.ID, Name: l.Name, Description: l.Description, Items: l.Items}
}

// PortList converts l (of kind ListPort) to the firewall model.
func (l List) PortList() firewall.PortList {
	return firewall.PortList{ID: l.ID, Name: l.Name, Description: l.Description, Items: l.Items}
}

// FirewallExport is a set of rules with the lists they use, in the JSON
// form of Deep Security's REST API (GET /api/firewallrules, /api/iplists,
// /api/maclists and /api/portlists in one document).
type FirewallExport struct {
	Rules     []firewall.Rule     `json:"firewallRules"`
	IPLists   []firewall.IPList   `json:"ipLists"`
	MACLists  []firewall.MACList  `json:"macLists"`
	PortLists []firewall.PortList `json:"portLists"`
}

// FirewallImport is what ImportFirewall reads: an export, from Yagura or
// from Deep Security.
type FirewallImport = FirewallExport

// FirewallImportResult maps the IDs an import file used to the IDs the
// store gave the rules and lists. Deep Security numbers each list kind on
// its own, hence one map per kind.
type FirewallImportResult struct {
	Rules     map[int]int
	IPLists   map[int]int
	MACLists  map[int]int
	PortLists map[int]int
}

// fwRef is one list reference of a rule: the field holding the list ID
// and the kind of list it must name.
type fwRef struct {
	field, typeField string
	kind             ListKind
	id               *int
}

// fwRefs returns the list references of r that its address, MAC and port
// types make effective, with pointers into r so an import can rewrite them.
func fwRefs(r *firewall.Rule) []fwRef {
	var out []fwRef
	add := func(typ, want, side, what string, kind ListKind, id *int) {
		if typ == want {
			out = append(out, fwRef{side + what + "ListID", side + what + "Type", kind, id})
		}
	}
	add(r.SourceIPType, firewall.TypeIPList, "source", "IP", ListIP, &r.SourceIPListID)
	add(r.DestinationIPType, firewall.TypeIPList, "destination", "IP", ListIP, &r.DestinationIPListID)
	add(r.SourceMACType, firewall.TypeMACList, "source", "MAC", ListMAC, &r.SourceMACListID)
	add(r.DestinationMACType, firewall.TypeMACList, "destination", "MAC", ListMAC, &r.DestinationMACListID)
	add(r.SourcePortType, firewall.TypePortList, "source", "Port", ListPort, &r.SourcePortListID)
	add(r.DestinationPortType, firewall.TypePortList, "destination", "Port", ListPort, &r.DestinationPortListID)
	return out
}

// fwListIDs returns the distinct list IDs rules reference.
func fwListIDs(rules []firewall.Rule) []int {
	seen := map[int]bool{}
	for i := range rules {
		for _, ref := range fwRefs(&rules[i]) {
			if *ref.id > 0 {
				seen[*ref.id] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// fwCheckRule normalises and checks r completely: on its own, its list
// references against kindOf (the kind of the list with an ID, if any), and
// by compiling it, which catches what only the combination of fields says
// (ports without tcp or udp, MAC matches on outgoing rules). Errors are
// *firewall.FieldError.
func fwCheckRule(r *firewall.Rule, kindOf func(id int) (ListKind, bool), notFound string) error {
	r.Normalize()
	if err := r.Validate(); err != nil {
		return err
	}
	set := firewall.Set{}
	for _, ref := range fwRefs(r) {
		id := *ref.id
		if id <= 0 {
			return &firewall.FieldError{Field: ref.field, Msg: fmt.Sprintf("is required when %s is %q", ref.typeField, *fwTypeOf(r, ref))}
		}
		k, ok := kindOf(id)
		if !ok {
			return &firewall.FieldError{Field: ref.field, Value: strconv.Itoa(id), Msg: "names no " + ref.kind.Noun() + notFound}
		}
		if k != ref.kind {
			return &firewall.FieldError{Field: ref.field, Value: strconv.Itoa(id), Msg: fmt.Sprintf("names %s, not %s", k.article(), ref.kind.article())}
		}
		// Empty stand-ins: compiling needs the references resolved, not
		// the lists' entries, which were checked when the lists were written.
		switch k {
		case ListIP:
			set.IPLists = append(set.IPLists, firewall.IPList{ID: id})
		case ListMAC:
			set.MACLists = append(set.MACLists, firewall.MACList{ID: id})
		case ListPort:
			set.PortLists = append(set.PortLists, firewall.PortList{ID: id})
		}
	}
	set.Rules = []firewall.Rule{*r}
	if _, err := firewall.Compile(&set); err != nil {
		var fe *firewall.FieldError
		if errors.As(err, &fe) {
			return fe
		}
		return &firewall.FieldError{Field: "rule", Msg: err.Error()}
	}
	return nil
}

func fwTypeOf(r *firewall.Rule, ref fwRef) *string {
	switch ref.typeField {
	case "sourceIPType":
		return &r.SourceIPType
	case "destinationIPType":
		return &r.DestinationIPType
	case "sourceMACType":
		return &r.SourceMACType
	case "destinationMACType":
		return &r.DestinationMACType
	case "sourcePortType":
		return &r.SourcePortType
	}
	return &r.DestinationPortType
}

// fwCheckList checks a list's kind, name and entries. Errors are
// *firewall.FieldError naming the entry ("items[3]").
func fwCheckList(l *List) error {
	if !l.Kind.Valid() {
		return &firewall.FieldError{Field: "kind", Value: string(l.Kind), Msg: "must be ip, mac or port"}
	}
	l.Name = strings.TrimSpace(l.Name)
	if l.Name == "" {
		return &firewall.FieldError{Field: "name", Msg: "is required"}
	}
	if len(l.Name) > 255 {
		return &firewall.FieldError{Field: "name", Msg: "is longer than 255 bytes"}
	}
	var err error
	switch l.Kind {
	case ListIP:
		_, err = firewall.ParseIPItems(l.Items)
	case ListMAC:
		_, err = firewall.ParseMACItems(l.Items)
	case ListPort:
		_, err = firewall.ParsePortItems(l.Items)
	}
	if err != nil {
		var fe *firewall.FieldError
		if errors.As(err, &fe) {
			return &firewall.FieldError{Field: "items" + fe.Field, Value: fe.Value, Msg: fe.Msg}
		}
		return &firewall.FieldError{Field: "items", Msg: err.Error()}
	}
	if l.Items == nil {
		l.Items = []string{}
	}
	return nil
}

// fwFail wraps a firewall write's error: field errors become ErrInvalid,
// the rest is mapped as usual.
func (db *DB) fwFail(op string, err error) error {
	var fe *firewall.FieldError
	if errors.As(err, &fe) {
		return fmt.Errorf("%s: %w: %w", op, ErrInvalid, err)
	}
	return db.fail(op, err)
}

// fwPrefix prefixes a field error's field ("ipLists[2]." + "items[3]").
func fwPrefix(prefix string, err error) error {
	var fe *firewall.FieldError
	if errors.As(err, &fe) {
		return &firewall.FieldError{Field: prefix + fe.Field, Value: fe.Value, Msg: fe.Msg}
	}
	return err
}

// fwInts renders IDs as an SQL list, "(1,2,3)". IDs are integers, so
// inlining them is safe, and it keeps large sets (10,000 rules) to one
// statement on every engine, whatever its limit on bound parameters.
func fwInts(ids []int) string {
	b := make([]byte, 0, 8*len(ids)+2)
	b = append(b, '(')
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(id), 10)
	}
	return string(append(b, ')'))
}

// fwChunk is how many IDs go into one IN list.
const fwChunk = 5000

// fwQuerier is what both *sql.DB and *sql.Tx offer.
type fwQuerier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func fwDistinct(ids []int) []int {
	out := slices.Clone(ids)
	slices.Sort(out)
	return slices.Compact(out)
}

// ---- rules ----

// fwRules reads rules by ID (ids sorted and distinct); missing IDs are left out.
// With all set, it reads every rule instead.
func (db *DB) fwRules(ctx context.Context, q fwQuerier, ids []int, all bool) ([]firewall.Rule, error) {
	var out []firewall.Rule
	read := func(where string) error {
		rows, err := q.QueryContext(ctx, "SELECT id, body FROM firewall_rules"+where+" ORDER BY id")
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id int
			var body string
			if err := rows.Scan(&id, &body); err != nil {
				return err
			}
			var r firewall.Rule
			if err := json.Unmarshal([]byte(body), &r); err != nil {
				return fmt.Errorf("rule %d: stored body: %w", id, err)
			}
			r.ID = id
			out = append(out, r)
		}
		return rows.Err()
	}
	if all {
		return out, read("")
	}
	for chunk := range slices.Chunk(ids, fwChunk) {
		if err := read(" WHERE id IN " + fwInts(chunk)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (db *DB) fwInsertRule(ctx context.Context, tx *sql.Tx, r firewall.Rule, now int64) error {
	id := r.ID
	r.ID = 0
	body, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, db.rb("INSERT INTO firewall_rules (id, name, body, created_at, updated_at) VALUES (?, ?, ?, ?, ?)"),
		id, r.Name, string(body), now, now); err != nil {
		return err
	}
	return db.fwLinkLists(ctx, tx, id, r)
}

// fwLinkLists records which lists rule id uses.
func (db *DB) fwLinkLists(ctx context.Context, tx *sql.Tx, id int, r firewall.Rule) error {
	for _, l := range fwListIDs([]firewall.Rule{r}) {
		if _, err := tx.ExecContext(ctx, db.rb("INSERT INTO firewall_rule_lists (rule_id, list_id) VALUES (?, ?)"), id, l); err != nil {
			return err
		}
	}
	return nil
}

// fwKinds returns the kinds of the lists with these IDs that exist.
func (db *DB) fwKinds(ctx context.Context, q fwQuerier, ids []int) (map[int]ListKind, error) {
	out := map[int]ListKind{}
	for chunk := range slices.Chunk(fwDistinct(ids), fwChunk) {
		rows, err := q.QueryContext(ctx, "SELECT id, kind FROM firewall_lists WHERE id IN "+fwInts(chunk))
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var id int
			var k string
			if err := rows.Scan(&id, &k); err != nil {
				rows.Close()
				return nil, err
			}
			out[id] = ListKind(k)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// fwCheckRuleTx checks r against the lists in the store.
func (db *DB) fwCheckRuleTx(ctx context.Context, tx *sql.Tx, r *firewall.Rule) error {
	var ids []int
	for _, ref := range fwRefs(r) {
		ids = append(ids, *ref.id)
	}
	kinds, err := db.fwKinds(ctx, tx, ids)
	if err != nil {
		return err
	}
	return fwCheckRule(r, func(id int) (ListKind, bool) { k, ok := kinds[id]; return k, ok }, "")
}

// CreateRule checks r (its fields, and that the lists it references exist
// and are of the right kind), stores it under a new ID and returns it as
// stored: normalised, with its ID. Invalid rules are refused with ErrInvalid
// wrapping a *firewall.FieldError that names the field.
func (db *DB) CreateRule(ctx context.Context, r firewall.Rule) (firewall.Rule, error) {
	op := fmt.Sprintf("create firewall rule %q", r.Name)
	var out firewall.Rule
	err := db.retryConflict(func() error {
		return db.inTx(ctx, func(tx *sql.Tx) error {
			if err := db.bumpPolicyRevision(ctx, tx); err != nil {
				return err
			}
			rr := r
			if err := db.fwCheckRuleTx(ctx, tx, &rr); err != nil {
				return err
			}
			id, err := db.nextID(ctx, tx, "firewall_rules")
			if err != nil {
				return err
			}
			rr.ID = int(id)
			if err := db.fwInsertRule(ctx, tx, rr, time.Now().UnixMicro()); err != nil {
				return err
			}
			out = rr
			return nil
		})
	})
	if err != nil {
		return firewall.Rule{}, db.fwFail(op, err)
	}
	return out, nil
}

// GetRule returns one rule, or ErrNotFound.
func (db *DB) GetRule(ctx context.Context, id int) (firewall.Rule, error) {
	rs, err := db.fwRules(ctx, db.db, []int{id}, false)
	if err == nil && len(rs) == 0 {
		err = sql.ErrNoRows
	}
	if err != nil {
		return firewall.Rule{}, db.fail(fmt.Sprintf("get firewall rule %d", id), err)
	}
	return rs[0], nil
}

// ListRules returns every rule, by ID.
func (db *DB) ListRules(ctx context.Context) ([]firewall.Rule, error) {
	rs, err := db.fwRules(ctx, db.db, nil, true)
	if err != nil {
		return nil, db.fail("list firewall rules", err)
	}
	return rs, nil
}

// RulesByID returns the rules with these IDs, by ID; IDs that name no rule
// are left out.
func (db *DB) RulesByID(ctx context.Context, ids []int) ([]firewall.Rule, error) {
	rs, err := db.fwRules(ctx, db.db, fwDistinct(ids), false)
	if err != nil {
		return nil, db.fail("get firewall rules", err)
	}
	return rs, nil
}

// UpdateRule replaces rule r.ID with r, checked as CreateRule checks it;
// ErrNotFound if there is no such rule. It returns the rule as stored.
func (db *DB) UpdateRule(ctx context.Context, r firewall.Rule) (firewall.Rule, error) {
	op := fmt.Sprintf("update firewall rule %d", r.ID)
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if err := db.bumpPolicyRevision(ctx, tx); err != nil {
			return err
		}
		if err := db.fwCheckRuleTx(ctx, tx, &r); err != nil {
			return err
		}
		stored := r
		stored.ID = 0
		body, err := json.Marshal(stored)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, db.rb("UPDATE firewall_rules SET name = ?, body = ?, updated_at = ? WHERE id = ?"),
			r.Name, string(body), time.Now().UnixMicro(), r.ID)
		if err != nil {
			return err
		}
		if err := expectOne(res); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, db.rb("DELETE FROM firewall_rule_lists WHERE rule_id = ?"), r.ID); err != nil {
			return err
		}
		return db.fwLinkLists(ctx, tx, r.ID, r)
	})
	if err != nil {
		return firewall.Rule{}, db.fwFail(op, err)
	}
	return r, nil
}

// fwNames cuts a list of names for a message.
func fwNames(names []string) string {
	if len(names) > 10 {
		names = append(names[:10:10], fmt.Sprintf("and %d more", len(names)-10))
	}
	return strings.Join(names, ", ")
}

// DeleteRule deletes a rule. While a policy or a computer has it assigned
// it refuses with ErrConflict, naming them. Assignments that remove the
// rule from what an owner inherits go with it.
func (db *DB) DeleteRule(ctx context.Context, id int) error {
	var inUse error
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if err := db.bumpPolicyRevision(ctx, tx); err != nil {
			return err
		}
		var name string
		if err := tx.QueryRowContext(ctx, db.rb("SELECT name FROM firewall_rules WHERE id = ?"), id).Scan(&name); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, db.rb(`SELECT a.owner_kind, a.owner_id, COALESCE(p.name, c.hostname, '')
			FROM rule_assignments a
			LEFT JOIN policies p ON a.owner_kind = ? AND CAST(p.id AS TEXT) = a.owner_id
			LEFT JOIN computers c ON a.owner_kind = ? AND c.id = a.owner_id
			WHERE a.rule_id = ? AND a.assigned = 1`), OwnerPolicy, OwnerComputer, id)
		if err != nil {
			return err
		}
		type owner struct{ kind, id, name string }
		var owners []owner
		for rows.Next() {
			var o owner
			if err := rows.Scan(&o.kind, &o.id, &o.name); err != nil {
				rows.Close()
				return err
			}
			owners = append(owners, o)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(owners) > 0 {
			// Policies first, by number; then computers.
			slices.SortFunc(owners, func(a, b owner) int {
				if a.kind != b.kind {
					return strings.Compare(b.kind, a.kind)
				}
				x, _ := strconv.Atoi(a.id)
				y, _ := strconv.Atoi(b.id)
				if x != y {
					return x - y
				}
				return strings.Compare(a.id, b.id)
			})
			names := make([]string, len(owners))
			for i, o := range owners {
				switch {
				case o.kind == OwnerPolicy && o.name != "":
					names[i] = fmt.Sprintf("policy %s %q", o.id, o.name)
				case o.kind == OwnerComputer && o.name != "":
					names[i] = fmt.Sprintf("computer %s (%s)", o.id, o.name)
				default:
					names[i] = o.kind + " " + o.id
				}
			}
			inUse = fmt.Errorf("rule %d %q is assigned to %s; unassign it first: %w", id, name, fwNames(names), ErrConflict)
			return inUse
		}
		if _, err := tx.ExecContext(ctx, db.rb("DELETE FROM rule_assignments WHERE rule_id = ?"), id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, db.rb("DELETE FROM firewall_rules WHERE id = ?"), id)
		return err
	})
	if inUse != nil {
		return inUse // it names the rule already
	}
	if err != nil {
		return db.fail(fmt.Sprintf("delete firewall rule %d", id), err)
	}
	return nil
}

// SetRuleAssignment records that an owner (OwnerPolicy with the policy's ID
// in decimal, or OwnerComputer with the computer's ID) has rule ruleID
// assigned (true), or has it removed from what it would inherit (false).
// ErrNotFound if there is no such rule. The owner is not checked: its
// caller knows it.
func (db *DB) SetRuleAssignment(ctx context.Context, ownerKind, ownerID string, ruleID int, assigned bool) error {
	op := fmt.Sprintf("assign firewall rule %d to %s %s", ruleID, ownerKind, ownerID)
	switch ownerKind {
	case OwnerPolicy:
		n, err := strconv.Atoi(ownerID)
		if err != nil || n <= 0 || strconv.Itoa(n) != ownerID {
			return fmt.Errorf("%s: a policy ID is a positive decimal number: %w", op, ErrInvalid)
		}
	case OwnerComputer:
		if ownerID == "" {
			return fmt.Errorf("%s: empty computer ID: %w", op, ErrInvalid)
		}
	default:
		return fmt.Errorf("%s: owner kind must be %s or %s: %w", op, OwnerPolicy, OwnerComputer, ErrInvalid)
	}
	on := 0
	if assigned {
		on = 1
	}
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if err := db.bumpPolicyRevision(ctx, tx); err != nil {
			return err
		}
		var one int
		if err := tx.QueryRowContext(ctx, db.rb("SELECT 1 FROM firewall_rules WHERE id = ?"), ruleID).Scan(&one); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, db.rb(`INSERT INTO rule_assignments (owner_kind, owner_id, rule_id, assigned) VALUES (?, ?, ?, ?)
			ON CONFLICT (owner_kind, owner_id, rule_id) DO UPDATE SET assigned = excluded.assigned`), ownerKind, ownerID, ruleID, on)
		return err
	})
	if err != nil {
		return db.fail(op, err)
	}
	return nil
}

// ---- lists ----

const fwListColumns = "id, kind, name, description, items"

func fwScanList(s scanner) (List, error) {
	var l List
	var kind, items string
	if err := s.Scan(&l.ID, &kind, &l.Name, &l.Description, &items); err != nil {
		return List{}, err
	}
	l.Kind = ListKind(kind)
	if err := json.Unmarshal([]byte(items), &l.Items); err != nil {
		return List{}, fmt.Errorf("list %d: stored items: %w", l.ID, err)
	}
	if l.Items == nil {
		l.Items = []string{}
	}
	return l, nil
}

func (db *DB) fwLists(ctx context.Context, q fwQuerier, where string, args ...any) ([]List, error) {
	rows, err := q.QueryContext(ctx, db.rb("SELECT "+fwListColumns+" FROM firewall_lists"+where+" ORDER BY id"), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []List
	for rows.Next() {
		l, err := fwScanList(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

func (db *DB) fwListsByID(ctx context.Context, q fwQuerier, ids []int) ([]List, error) {
	var out []List
	for chunk := range slices.Chunk(ids, fwChunk) {
		ls, err := db.fwLists(ctx, q, " WHERE id IN "+fwInts(chunk))
		if err != nil {
			return nil, err
		}
		out = append(out, ls...)
	}
	return out, nil
}

func (db *DB) fwInsertList(ctx context.Context, tx *sql.Tx, l List, now int64) error {
	items, err := json.Marshal(l.Items)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, db.rb("INSERT INTO firewall_lists (id, kind, name, description, items, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"),
		l.ID, string(l.Kind), l.Name, l.Description, string(items), now, now)
	return err
}

// CreateList checks l (kind, name, every entry) and stores it under a new
// ID, which it returns with the list. Invalid lists are refused with
// ErrInvalid wrapping a *firewall.FieldError ("items[3]: …").
func (db *DB) CreateList(ctx context.Context, l List) (List, error) {
	op := fmt.Sprintf("create %s %q", l.Kind.Noun(), l.Name)
	if err := fwCheckList(&l); err != nil {
		return List{}, db.fwFail(op, err)
	}
	err := db.retryConflict(func() error {
		return db.inTx(ctx, func(tx *sql.Tx) error {
			if err := db.bumpPolicyRevision(ctx, tx); err != nil {
				return err
			}
			id, err := db.nextID(ctx, tx, "firewall_lists")
			if err != nil {
				return err
			}
			l.ID = int(id)
			return db.fwInsertList(ctx, tx, l, time.Now().UnixMicro())
		})
	})
	if err != nil {
		return List{}, db.fwFail(op, err)
	}
	return l, nil
}

// GetList returns a list of a kind ("" for any kind); ErrNotFound if there
// is no list with that ID or it is of another kind.
func (db *DB) GetList(ctx context.Context, kind ListKind, id int) (List, error) {
	ls, err := db.fwLists(ctx, db.db, " WHERE id = ?", id)
	if err == nil && (len(ls) == 0 || kind != "" && ls[0].Kind != kind) {
		err = sql.ErrNoRows
	}
	if err != nil {
		return List{}, db.fail(fmt.Sprintf("get %s %d", kind.Noun(), id), err)
	}
	return ls[0], nil
}

// ListLists returns the lists of a kind ("" for every kind), by ID.
func (db *DB) ListLists(ctx context.Context, kind ListKind) ([]List, error) {
	var ls []List
	var err error
	if kind == "" {
		ls, err = db.fwLists(ctx, db.db, "")
	} else {
		ls, err = db.fwLists(ctx, db.db, " WHERE kind = ?", string(kind))
	}
	if err != nil {
		return nil, db.fail(fmt.Sprintf("list %ss", kind.Noun()), err)
	}
	return ls, nil
}

// ListsByID returns the lists with these IDs, of any kind, by ID; IDs that
// name no list are left out.
func (db *DB) ListsByID(ctx context.Context, ids []int) ([]List, error) {
	ls, err := db.fwListsByID(ctx, db.db, fwDistinct(ids))
	if err != nil {
		return nil, db.fail("get firewall lists", err)
	}
	return ls, nil
}

// UpdateList replaces the name, description and entries of list l.ID, which
// must be of kind l.Kind (a list's kind never changes: rules rely on it);
// ErrNotFound otherwise.
func (db *DB) UpdateList(ctx context.Context, l List) (List, error) {
	op := fmt.Sprintf("update %s %d", l.Kind.Noun(), l.ID)
	if err := fwCheckList(&l); err != nil {
		return List{}, db.fwFail(op, err)
	}
	items, err := json.Marshal(l.Items)
	if err != nil {
		return List{}, err
	}
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		if err := db.bumpPolicyRevision(ctx, tx); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, db.rb("UPDATE firewall_lists SET name = ?, description = ?, items = ?, updated_at = ? WHERE id = ? AND kind = ?"),
			l.Name, l.Description, string(items), time.Now().UnixMicro(), l.ID, string(l.Kind))
		if err != nil {
			return err
		}
		return expectOne(res)
	})
	if err != nil {
		return List{}, db.fwFail(op, err)
	}
	return l, nil
}

// DeleteList deletes a list of a kind. While rules use it, it refuses with
// ErrConflict, naming them.
func (db *DB) DeleteList(ctx context.Context, kind ListKind, id int) error {
	var inUse error
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if err := db.bumpPolicyRevision(ctx, tx); err != nil {
			return err
		}
		var name string
		if err := tx.QueryRowContext(ctx, db.rb("SELECT name FROM firewall_lists WHERE id = ? AND kind = ?"), id, string(kind)).Scan(&name); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, db.rb(`SELECT r.id, r.name FROM firewall_rule_lists u JOIN firewall_rules r ON r.id = u.rule_id
			WHERE u.list_id = ? ORDER BY r.id`), id)
		if err != nil {
			return err
		}
		var users []string
		for rows.Next() {
			var rid int
			var rname string
			if err := rows.Scan(&rid, &rname); err != nil {
				rows.Close()
				return err
			}
			users = append(users, fmt.Sprintf("rule %d %q", rid, rname))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(users) > 0 {
			inUse = fmt.Errorf("%s %d %q is used by %s; change or delete those rules first: %w", kind.Noun(), id, name, fwNames(users), ErrConflict)
			return inUse
		}
		_, err = tx.ExecContext(ctx, db.rb("DELETE FROM firewall_lists WHERE id = ?"), id)
		return err
	})
	if inUse != nil {
		return inUse
	}
	if err != nil {
		return db.fail(fmt.Sprintf("delete %s %d", kind.Noun(), id), err)
	}
	return nil
}

// ---- sets, export, import ----

// FirewallSet returns the rules with these IDs, by ID, and every list they
// reference: what a host with those rules enforces. An ID that names no
// rule is an error (ErrNotFound): a set silently smaller than asked for
// would open the firewall. It reads rules and lists in separate
// statements, not in one snapshot; a caller that caches the result keys it
// by PolicyRevision read before the call.
func (db *DB) FirewallSet(ctx context.Context, ruleIDs []int) (firewall.Set, error) {
	ids := fwDistinct(ruleIDs)
	set, err := db.fwSet(ctx, ids, false)
	if err == nil && len(set.Rules) != len(ids) {
		var missing []string
		have := map[int]bool{}
		for _, r := range set.Rules {
			have[r.ID] = true
		}
		for _, id := range ids {
			if !have[id] {
				missing = append(missing, strconv.Itoa(id))
			}
		}
		return firewall.Set{}, fmt.Errorf("no firewall rule %s: %w", fwNames(missing), ErrNotFound)
	}
	if err != nil {
		return firewall.Set{}, db.fail("firewall set", err)
	}
	return set, nil
}

func (db *DB) fwSet(ctx context.Context, ids []int, all bool) (firewall.Set, error) {
	rules, err := db.fwRules(ctx, db.db, ids, all)
	if err != nil {
		return firewall.Set{}, err
	}
	lists, err := db.fwListsByID(ctx, db.db, fwListIDs(rules))
	if err != nil {
		return firewall.Set{}, err
	}
	set := firewall.Set{Rules: rules}
	if set.Rules == nil {
		set.Rules = []firewall.Rule{}
	}
	for _, l := range lists {
		switch l.Kind {
		case ListIP:
			set.IPLists = append(set.IPLists, l.IPList())
		case ListMAC:
			set.MACLists = append(set.MACLists, l.MACList())
		case ListPort:
			set.PortLists = append(set.PortLists, l.PortList())
		}
	}
	return set, nil
}

// ExportFirewall returns the rules with these IDs (none: every rule) with
// the lists they use, in the form ImportFirewall and Deep Security read.
// Unknown IDs are ErrNotFound.
func (db *DB) ExportFirewall(ctx context.Context, ruleIDs []int) (FirewallExport, error) {
	var set firewall.Set
	var err error
	if len(ruleIDs) == 0 {
		set, err = db.fwSet(ctx, nil, true)
		if err != nil {
			err = db.fail("export firewall rules", err)
		}
	} else {
		set, err = db.FirewallSet(ctx, ruleIDs)
	}
	if err != nil {
		return FirewallExport{}, err
	}
	out := FirewallExport{Rules: set.Rules, IPLists: set.IPLists, MACLists: set.MACLists, PortLists: set.PortLists}
	if out.IPLists == nil {
		out.IPLists = []firewall.IPList{}
	}
	if out.MACLists == nil {
		out.MACLists = []firewall.MACList{}
	}
	if out.PortLists == nil {
		out.PortLists = []firewall.PortList{}
	}
	return out, nil
}

// fwImportList is a list of an import file with where it came from.
type fwImportList struct {
	List
	field string // "ipLists[2]"
	oldID int
}

// ImportFirewall stores the lists and rules of an export (Yagura's or Deep
// Security's) in one transaction: all of them or, on any error, none. Every
// list and rule gets a new ID; rules' references to lists of the file are
// rewritten to the lists' new IDs, and references to lists not in the file
// must name a list of the right kind already in the store. Errors name the
// rule or list and the field (ErrInvalid wrapping a *firewall.FieldError
// whose field is like "firewallRules[2].sourceIPListID").
func (db *DB) ImportFirewall(ctx context.Context, in FirewallImport) (FirewallImportResult, error) {
	const op = "import firewall rules"
	res := FirewallImportResult{Rules: map[int]int{}, IPLists: map[int]int{}, MACLists: map[int]int{}, PortLists: map[int]int{}}
	remap := map[ListKind]map[int]int{ListIP: res.IPLists, ListMAC: res.MACLists, ListPort: res.PortLists}

	// Everything that needs no database is checked first.
	var lists []fwImportList
	inFile := map[ListKind]map[int]bool{ListIP: {}, ListMAC: {}, ListPort: {}}
	addList := func(kind ListKind, i int, id int, name, desc string, items []string) error {
		field := map[ListKind]string{ListIP: "ipLists", ListMAC: "macLists", ListPort: "portLists"}[kind] + "[" + strconv.Itoa(i) + "]"
		l := fwImportList{List: List{Kind: kind, Name: name, Description: desc, Items: items}, field: field, oldID: id}
		if err := fwCheckList(&l.List); err != nil {
			return fmt.Errorf("%s %q: %w", kind.Noun(), name, fwPrefix(field+".", err))
		}
		if id != 0 {
			if inFile[kind][id] {
				return fmt.Errorf("%s %q: %w", kind.Noun(), name, &firewall.FieldError{Field: field + ".ID", Value: strconv.Itoa(id), Msg: "is the ID of an earlier " + kind.Noun() + " of the file too"})
			}
			inFile[kind][id] = true
		}
		lists = append(lists, l)
		return nil
	}
	for i, l := range in.IPLists {
		if err := addList(ListIP, i, l.ID, l.Name, l.Description, l.Items); err != nil {
			return res, db.fwFail(op, err)
		}
	}
	for i, l := range in.MACLists {
		if err := addList(ListMAC, i, l.ID, l.Name, l.Description, l.Items); err != nil {
			return res, db.fwFail(op, err)
		}
	}
	for i, l := range in.PortLists {
		if err := addList(ListPort, i, l.ID, l.Name, l.Description, l.Items); err != nil {
			return res, db.fwFail(op, err)
		}
	}
	rules := slices.Clone(in.Rules)
	seenRule := map[int]bool{}
	var outside []int // list IDs the file references but does not hold
	for i := range rules {
		r := &rules[i]
		if r.ID != 0 {
			if seenRule[r.ID] {
				return res, db.fwFail(op, fmt.Errorf("rule %q: %w", r.Name, &firewall.FieldError{
					Field: fmt.Sprintf("firewallRules[%d].ID", i), Value: strconv.Itoa(r.ID), Msg: "is the ID of an earlier rule of the file too"}))
			}
			seenRule[r.ID] = true
		}
		for _, ref := range fwRefs(r) {
			if !inFile[ref.kind][*ref.id] {
				outside = append(outside, *ref.id)
			}
		}
	}

	err := db.retryConflict(func() error {
		for _, m := range remap {
			clear(m)
		}
		clear(res.Rules)
		return db.inTx(ctx, func(tx *sql.Tx) error {
			if err := db.bumpPolicyRevision(ctx, tx); err != nil {
				return err
			}
			stored, err := db.fwKinds(ctx, tx, outside)
			if err != nil {
				return err
			}
			now := time.Now().UnixMicro()
			next, err := db.reserveIDs(ctx, tx, "firewall_lists", int64(max(len(lists), 1)))
			if err != nil {
				return err
			}
			for _, l := range lists {
				l.ID = int(next)
				next++
				if err := db.fwInsertList(ctx, tx, l.List, now); err != nil {
					return err
				}
				if l.oldID != 0 {
					remap[l.Kind][l.oldID] = l.ID
				}
			}
			nextRule, err := db.reserveIDs(ctx, tx, "firewall_rules", int64(max(len(rules), 1)))
			if err != nil {
				return err
			}
			for i := range rules {
				r := rules[i] // a copy: a retry starts from the file's IDs again
				// A reference names a list of the file if the file has one
				// of that kind with that ID, else a list already stored.
				resolved := map[int]ListKind{}
				for _, ref := range fwRefs(&r) {
					if id, ok := remap[ref.kind][*ref.id]; ok {
						*ref.id = id
						resolved[id] = ref.kind
					} else if k, ok := stored[*ref.id]; ok {
						resolved[*ref.id] = k
					}
				}
				kindOf := func(id int) (ListKind, bool) { k, ok := resolved[id]; return k, ok }
				if err := fwCheckRule(&r, kindOf, " in the file or the store"); err != nil {
					return fmt.Errorf("rule %q: %w", r.Name, fwPrefix(fmt.Sprintf("firewallRules[%d].", i), err))
				}
				old := r.ID
				r.ID = int(nextRule)
				nextRule++
				if err := db.fwInsertRule(ctx, tx, r, now); err != nil {
					return err
				}
				if old != 0 {
					res.Rules[old] = r.ID
				}
			}
			return nil
		})
	})
	if err != nil {
		return FirewallImportResult{}, db.fwFail(op, err)
	}
	return res, nil
}
