// Package rollout provides the manager's policy delivery: it resolves every
// computer's effective configuration from the policy tree and its overrides,
// keeps the canonical documents by fingerprint, tells the fleet what each
// computer should enforce (so heartbeats carry "your policy changed"),
// wakes online agents when that changes, and answers agents' policy
// requests with a compact delta when they hold a previous version.
//
// Only manager-side code imports it.
package rollout

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/yagura/yagura/internal/firewall"
	"github.com/yagura/yagura/internal/policy"
	"github.com/yagura/yagura/internal/proto"
	"github.com/yagura/yagura/internal/settings"
	"github.com/yagura/yagura/internal/store"
)

// KeyDefaultPolicy is the manager setting naming the policy of computers
// that have none assigned.
const KeyDefaultPolicy = settings.KeyDefaultPolicy

// Store is what rollout reads from the state store.
type Store interface {
	PolicyRevision(ctx context.Context) (int64, error)
	Settings(ctx context.Context) (map[string]string, error)
	ListPolicies(ctx context.Context) ([]policy.Policy, error)
	ListComputers(ctx context.Context) ([]store.Computer, error)
	AllComputerRules(ctx context.Context) (map[string]map[int]bool, error)
	FirewallSet(ctx context.Context, ruleIDs []int) (firewall.Set, error)
	SavePolicyDocument(ctx context.Context, fingerprint string, body []byte, now time.Time) error
	PolicyDocument(ctx context.Context, fingerprint string) ([]byte, error)
	PrunePolicyDocuments(ctx context.Context, before time.Time, keep []string) (int, error)
}

// Fleet receives each computer's effective settings and fingerprint.
type Fleet interface {
	SetPolicy(id, fingerprint string, s *settings.Settings) bool
}

// Waker makes online agents heartbeat now.
type Waker interface {
	Wake(ids ...string)
}

// Config tunes the service.
type Config struct {
	// PollEvery is how often the policy revision is read back from the
	// store, which is how changes made through another manager node are
	// seen. Changes made through this node apply at once.
	PollEvery time.Duration `koanf:"poll_every"`
	// KeepDocuments is how long documents no computer uses are kept for
	// deltas.
	KeepDocuments time.Duration `koanf:"keep_documents"`
}

// DefaultConfig returns production defaults.
func DefaultConfig() Config {
	return Config{PollEvery: 2 * time.Second, KeepDocuments: 7 * 24 * time.Hour}
}

// Resolved is one computer's effective configuration.
type Resolved struct {
	Effective   policy.Effective
	Document    []byte // canonical JSON
	Fingerprint string
	Settings    settings.Settings
	// RuleNames are the names of the assigned rules, for the API.
	RuleNames map[int]string

	fullOnce sync.Once
	full     *Answer // the whole document as an agent gets it
}

type state struct {
	key       string // revision + settings the state was built from
	computers map[string]*Resolved
}

// Service resolves and delivers policies. Create it with New, call Refresh
// once, then Run.
type Service struct {
	cfg   Config
	store Store
	fleet Fleet
	waker Waker
	log   *slog.Logger
	now   func() time.Time

	mu sync.Mutex // serialises Refresh

	answersMu sync.Mutex
	answers   map[string]*Answer // by "have>target" fingerprints
	state     atomic.Pointer[state]
	kick      chan struct{}

	refreshes  prometheus.Counter
	deltas     *prometheus.CounterVec
	resolveErr prometheus.Counter
}

// New returns a service. It does no I/O.
func New(cfg Config, st Store, fl Fleet, waker Waker, log *slog.Logger, reg prometheus.Registerer) *Service {
	s := &Service{
		cfg: cfg, store: st, fleet: fl, waker: waker, log: log, now: time.Now, kick: make(chan struct{}, 1),
		answers: map[string]*Answer{},
		refreshes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "yagura_policy_refreshes_total", Help: "Times the effective policies of all computers were recomputed.",
		}),
		deltas: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "yagura_policy_sent_total", Help: "Policies sent to agents, as a delta or a full document.",
		}, []string{"form"}),
		resolveErr: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "yagura_policy_resolve_errors_total", Help: "Computers whose effective policy could not be resolved.",
		}),
	}
	s.state.Store(&state{computers: map[string]*Resolved{}})
	if reg != nil {
		reg.MustRegister(s.refreshes, s.deltas, s.resolveErr)
	}
	return s
}

// SetWaker sets who wakes agents (the job service, created later).
func (s *Service) SetWaker(w Waker) { s.waker = w }

// Changed asks for a refresh now: the API calls it after a write.
func (s *Service) Changed() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Run refreshes on Changed and every PollEvery until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.PollEvery)
	defer t.Stop()
	prune := time.NewTicker(time.Hour)
	defer prune.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-s.kick:
		case <-prune.C:
			s.prune(ctx)
			continue
		}
		if err := s.Refresh(ctx, false); err != nil && ctx.Err() == nil {
			s.log.Error("refreshing effective policies failed; retrying", "err", err)
		}
	}
}

func (s *Service) prune(ctx context.Context) {
	st := s.state.Load()
	keep := make([]string, 0, len(st.computers))
	for _, r := range st.computers {
		keep = append(keep, r.Fingerprint)
	}
	if n, err := s.store.PrunePolicyDocuments(ctx, s.now().Add(-s.cfg.KeepDocuments), keep); err != nil {
		s.log.Error("prune old policy documents", "err", err)
	} else if n > 0 {
		s.log.Info("pruned old policy documents", "count", n)
	}
}

// Refresh recomputes every computer's effective configuration if anything
// it depends on changed (or force), tells the fleet, and wakes the online
// agents whose configuration changed.
func (s *Service) Refresh(ctx context.Context, force bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rev, err := s.store.PolicyRevision(ctx)
	if err != nil {
		return err
	}
	manager, err := s.store.Settings(ctx)
	if err != nil {
		return fmt.Errorf("load settings: %w", err)
	}
	key := strconv.FormatInt(rev, 10) + "/" + manager[store.SettingVersion] + "/" + manager[KeyDefaultPolicy]
	old := s.state.Load()
	if !force && key == old.key {
		return nil
	}
	next, err := s.build(ctx, key, manager)
	if err != nil {
		return err
	}
	s.state.Store(next)
	s.refreshes.Inc()
	var changed []string
	for id, r := range next.computers {
		s.fleet.SetPolicy(id, r.Fingerprint, &r.Settings)
		if o, ok := old.computers[id]; ok && o.Fingerprint != r.Fingerprint {
			changed = append(changed, id)
		}
	}
	if len(changed) > 0 && s.waker != nil {
		s.log.Info("effective policies changed; waking agents", "computers", len(changed))
		s.waker.Wake(changed...)
	}
	return nil
}

// build resolves all computers. Computers sharing a policy and overrides
// share one resolution: a fleet of thousands usually has a handful.
func (s *Service) build(ctx context.Context, key string, manager map[string]string) (*state, error) {
	base, defaults, policies, err := s.inputs(ctx, manager)
	if err != nil {
		return nil, err
	}
	computers, err := s.store.ListComputers(ctx)
	if err != nil {
		return nil, err
	}
	rules, err := s.store.AllComputerRules(ctx)
	if err != nil {
		return nil, err
	}
	defPolicy, _ := strconv.Atoi(manager[KeyDefaultPolicy])
	if _, ok := policies[defPolicy]; !ok {
		defPolicy = 0
	}
	next := &state{key: key, computers: make(map[string]*Resolved, len(computers))}
	groups := map[string]*Resolved{}
	sets := map[string]firewall.Set{}
	for _, c := range computers {
		if c.State != store.ComputerActive {
			continue
		}
		pid := c.PolicyID
		if pid == 0 {
			pid = defPolicy
		}
		ov := Override(c, rules[c.ID])
		gk := groupKey(pid, ov)
		r, ok := groups[gk]
		if !ok {
			r, err = s.resolve(ctx, defaults, base, policies, pid, ov, sets)
			if err != nil {
				s.resolveErr.Inc()
				s.log.Error("cannot resolve a computer's policy; it keeps its current one", "computer", c.ID, "policy", pid, "err", err)
				continue
			}
			groups[gk] = r
		}
		next.computers[c.ID] = r
	}
	return next, nil
}

// inputs reads what every resolution starts from: the manager-wide
// settings (and the defaults they give root policies) and the policy tree.
func (s *Service) inputs(ctx context.Context, manager map[string]string) (settings.Settings, map[string]string, map[int]policy.Policy, error) {
	base, err := settings.FromMap(manager)
	if err != nil {
		return base, nil, nil, fmt.Errorf("manager settings: %w", err)
	}
	defaults := policy.Defaults()
	for k, v := range base.Map() {
		defaults[k] = v
	}
	list, err := s.store.ListPolicies(ctx)
	if err != nil {
		return base, nil, nil, err
	}
	policies := make(map[int]policy.Policy, len(list))
	for _, p := range list {
		policies[p.ID] = p
	}
	return base, defaults, policies, nil
}

// Override returns a computer's overrides in the policy model. The older
// per-computer communication column counts as an override of that setting.
func Override(c store.Computer, rules map[int]bool) policy.Override {
	ov := policy.Override{Settings: maps.Clone(c.Settings), Rules: rules}
	if c.Communication != "" {
		if ov.Settings == nil {
			ov.Settings = map[string]string{}
		}
		ov.Settings[policy.KeyCommunication] = c.Communication
	}
	return ov
}

func groupKey(pid int, ov policy.Override) string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(pid))
	for _, k := range slices.Sorted(maps.Keys(ov.Settings)) {
		fmt.Fprintf(&b, "|%s=%s", k, ov.Settings[k])
	}
	for _, id := range slices.Sorted(maps.Keys(ov.Rules)) {
		fmt.Fprintf(&b, "|%d:%t", id, ov.Rules[id])
	}
	return b.String()
}

func (s *Service) resolve(ctx context.Context, defaults map[string]string, base settings.Settings, policies map[int]policy.Policy, pid int, ov policy.Override, sets map[string]firewall.Set) (*Resolved, error) {
	chain, err := policy.Chain(policies, pid)
	if err != nil {
		return nil, err
	}
	eff := policy.Resolve(defaults, chain, ov)
	ids := eff.RuleIDs()
	setKey := fmt.Sprint(ids)
	set, ok := sets[setKey]
	if !ok {
		if set, err = s.store.FirewallSet(ctx, ids); err != nil {
			return nil, fmt.Errorf("load firewall rules %v: %w", ids, err)
		}
		sets[setKey] = set
	}
	doc := policy.Document{Settings: eff.SettingValues(), Firewall: set}
	body, err := doc.Marshal()
	if err != nil {
		return nil, err
	}
	fp := policy.FingerprintOf(body)
	if err := s.store.SavePolicyDocument(ctx, fp, body, s.now()); err != nil {
		return nil, err
	}
	st, err := toSettings(base, eff)
	if err != nil {
		return nil, err
	}
	names := make(map[int]string, len(set.Rules))
	for _, r := range set.Rules {
		names[r.ID] = r.Name
	}
	return &Resolved{Effective: eff, Document: body, Fingerprint: fp, Settings: st, RuleNames: names}, nil
}

// toSettings turns the heartbeat and communication values of an effective
// configuration into the fleet's settings.
func toSettings(base settings.Settings, eff policy.Effective) (settings.Settings, error) {
	changes := map[string]string{}
	for _, k := range []string{policy.KeyHeartbeat, policy.KeyOfflineAfter, policy.KeyMaxClockDrift, policy.KeyCommunication} {
		if v, ok := eff.Settings[k]; ok {
			changes[k] = v.Value
		}
	}
	return base.Apply(changes)
}

// Computer returns a computer's resolved configuration.
func (s *Service) Computer(id string) (*Resolved, bool) {
	r, ok := s.state.Load().computers[id]
	return r, ok
}

// Preview resolves a configuration that no computer may have yet: a
// policy's own (for the API), or a computer's with other overrides.
func (s *Service) Preview(ctx context.Context, policyID int, ov policy.Override) (*Resolved, error) {
	manager, err := s.store.Settings(ctx)
	if err != nil {
		return nil, err
	}
	base, defaults, policies, err := s.inputs(ctx, manager)
	if err != nil {
		return nil, err
	}
	if policyID == 0 {
		policyID, _ = strconv.Atoi(manager[KeyDefaultPolicy])
	}
	if _, ok := policies[policyID]; !ok {
		policyID = 0
	}
	return s.resolve(ctx, defaults, base, policies, policyID, ov, map[string]firewall.Set{})
}

// ErrNoPolicy: the computer has no resolved configuration (unknown,
// deactivated, or its policy cannot be resolved).
var ErrNoPolicy = errors.New("no effective policy for this computer")

// Answer is an encoded policy response (proto.PolicyResponse). It is built
// once and shared by every agent asking for the same change — after a
// policy edit, thousands ask for the same one — and gzipped once, the first
// time an agent accepts that.
type Answer struct {
	Body  []byte
	Delta bool // a delta, not the whole document

	gzOnce sync.Once
	gz     []byte
}

// Gzip returns Body gzipped.
func (a *Answer) Gzip() []byte {
	a.gzOnce.Do(func() {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
		_, _ = zw.Write(a.Body)
		_ = zw.Close()
		a.gz = buf.Bytes()
	})
	return a.gz
}

func newAnswer(fp string, doc, delta []byte) *Answer {
	b, _ := json.Marshal(proto.PolicyResponse{V: proto.Version, Fingerprint: fp, Document: doc, Delta: delta})
	return &Answer{Body: b, Delta: delta != nil}
}

// maxAnswers bounds the cache of deltas; it is emptied when full.
const maxAnswers = 1024

// ForAgent answers an agent's policy request: a delta from the document it
// holds when this manager still has that document and the delta is
// smaller, else the whole document.
func (s *Service) ForAgent(ctx context.Context, id, have string) (*Answer, error) {
	r, ok := s.Computer(id)
	if !ok {
		return nil, ErrNoPolicy
	}
	if have == r.Fingerprint {
		return newAnswer(r.Fingerprint, nil, nil), nil
	}
	a := s.answer(ctx, have, r)
	form := "full"
	if a.Delta {
		form = "delta"
	}
	s.deltas.WithLabelValues(form).Inc()
	return a, nil
}

// answer returns the cached answer for the change from have to r, making
// it on first use.
func (s *Service) answer(ctx context.Context, have string, r *Resolved) *Answer {
	key := have + ">" + r.Fingerprint
	s.answersMu.Lock()
	a, ok := s.answers[key]
	s.answersMu.Unlock()
	if ok {
		return a
	}
	if d, ok := s.delta(ctx, have, r); ok {
		a = newAnswer(r.Fingerprint, nil, d)
	} else {
		r.fullOnce.Do(func() { r.full = newAnswer(r.Fingerprint, r.Document, nil) })
		a = r.full
	}
	s.answersMu.Lock()
	if len(s.answers) >= maxAnswers {
		clear(s.answers)
	}
	s.answers[key] = a
	s.answersMu.Unlock()
	return a
}

func (s *Service) delta(ctx context.Context, have string, r *Resolved) ([]byte, bool) {
	if have == "" {
		return nil, false
	}
	oldBody, err := s.store.PolicyDocument(ctx, have)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.log.Error("load the agent's previous policy document", "fingerprint", have, "err", err)
		}
		return nil, false
	}
	var oldDoc, newDoc policy.Document
	if json.Unmarshal(oldBody, &oldDoc) != nil || json.Unmarshal(r.Document, &newDoc) != nil {
		return nil, false
	}
	d, err := policy.Diff(&oldDoc, &newDoc)
	if err != nil {
		return nil, false
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if enc.Encode(d) != nil || buf.Len() >= len(r.Document) {
		return nil, false
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), true
}
