// Package jobs provides the manager's job service: commands for one or many
// computers (heartbeat-now, collect-logs, uninstall) with a status per
// target, their delivery with heartbeats and a long poll, the agents'
// reports, expiry, and the files agents upload for them (resumable).
package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/yagura/yagura/internal/firewall"
	"github.com/yagura/yagura/internal/proto"
	"github.com/yagura/yagura/internal/store"
)

// Store is what the job service needs from the state store.
type Store interface {
	CreateJob(ctx context.Context, j store.Job, computers []string) error
	GetJob(ctx context.Context, id string) (store.Job, error)
	UnfinishedJobs(ctx context.Context, computerID string, now time.Time) ([]store.Job, error)
	MarkDelivered(ctx context.Context, computerID string, jobIDs []string, now time.Time) error
	UpdateJobTarget(ctx context.Context, t store.JobTarget, now time.Time) (store.JobTarget, error)
	CancelJob(ctx context.Context, id string, now time.Time) (store.Job, error)
	ExpireJobs(ctx context.Context, now time.Time) (int, error)
	JobTargets(ctx context.Context, jobID string) ([]store.JobTarget, error)
	PendingComputers(ctx context.Context) ([]string, error)
	ListComputers(ctx context.Context) ([]store.Computer, error)
	MarkUninstalled(ctx context.Context, id string, at time.Time) error
	SetComputerIsolation(ctx context.Context, id, state string) error
	CreateFile(ctx context.Context, f store.File) error
	GetFile(ctx context.Context, id string) (store.File, error)
	SetFileReceived(ctx context.Context, id string, received int64, complete time.Time) error
	ReplaceFile(ctx context.Context, f store.File) error
}

// Fleet is told when a computer uninstalled itself.
type Fleet interface {
	Deactivate(id string)
}

// Config tunes the service.
type Config struct {
	// DefaultExpiry is how long a job waits for computers that are away.
	DefaultExpiry time.Duration `koanf:"default_expiry"`
	// MaxUploadBytes caps one uploaded file (collect-logs).
	MaxUploadBytes int64 `koanf:"max_upload_bytes"`
	// FilesDir holds uploaded files; default DATA/files.
	FilesDir string `koanf:"files_dir"`
}

// DefaultConfig returns production defaults.
func DefaultConfig() Config {
	return Config{DefaultExpiry: 24 * time.Hour, MaxUploadBytes: 1 << 30}
}

// Errors with a meaning for the API.
var (
	ErrInvalid = errors.New("invalid job")
	ErrNoMatch = errors.New("no computer matches")
)

// Service runs jobs. Create it with New, Load, then Run.
type Service struct {
	cfg   Config
	st    Store
	fleet Fleet
	log   *slog.Logger

	mu      sync.Mutex
	pending map[string]bool // computers with unfinished targets
	// fresh are computers with something new for them (a job not yet
	// delivered, a running job cancelled): their long poll returns at once.
	// Unfinished but delivered jobs do not count, or an agent running a
	// long job would poll in a tight loop.
	fresh   map[string]bool
	waiters map[string]chan struct{} // agents in a long poll
	// released is closed when the manager shuts down: long polls end at
	// once instead of holding the HTTP server's shutdown for their minute.
	released    chan struct{}
	releaseOnce sync.Once
	// uploads serialises appends to one file.
	uploads sync.Map // file ID → *sync.Mutex

	created   prometheus.Counter
	delivered prometheus.Counter

	// nudge reaches agents that are not in a long poll (bidirectional and
	// manager-initiated communication); may be nil.
	nudge func(ids ...string)
}

// SetNudger sets how to reach agents that are not waiting in a long poll.
// Call before Run.
func (s *Service) SetNudger(n func(ids ...string)) { s.nudge = n }

// New returns a service; it does no I/O.
func New(cfg Config, st Store, fl Fleet, log *slog.Logger, reg prometheus.Registerer) *Service {
	s := &Service{
		cfg: cfg, st: st, fleet: fl, log: log,
		pending: map[string]bool{}, fresh: map[string]bool{}, waiters: map[string]chan struct{}{}, released: make(chan struct{}),
		created:   prometheus.NewCounter(prometheus.CounterOpts{Name: "yagura_jobs_created_total", Help: "Jobs created."}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{Name: "yagura_jobs_delivered_total", Help: "Job deliveries to agents (first delivery per target)."}),
	}
	if reg != nil {
		reg.MustRegister(s.created, s.delivered)
	}
	return s
}

// Load reads which computers have unfinished jobs. It only adds (jobs
// created through another manager node): ForAgent removes computers whose
// jobs are done, so a refresh cannot drop a job created meanwhile.
func (s *Service) Load(ctx context.Context) error {
	ids, err := s.st.PendingComputers(ctx)
	if err != nil {
		return fmt.Errorf("load pending jobs: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if !s.pending[id] {
			// New to this node: it may not have been delivered yet.
			s.pending[id], s.fresh[id] = true, true
		}
	}
	return nil
}

// Run expires jobs and refreshes the pending set (jobs created through
// another manager node) until ctx is cancelled.
func (s *Service) Run(ctx context.Context) error {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if n, err := s.st.ExpireJobs(ctx, time.Now()); err != nil {
			s.log.Error("expire jobs", "err", err)
		} else if n > 0 {
			s.log.Info("job targets expired", "count", n)
		}
		if err := s.Load(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("refresh pending jobs", "err", err)
		}
	}
}

// CreateRequest describes a new job.
type CreateRequest struct {
	Kind        string
	Params      json.RawMessage
	Computers   []string // explicit targets, or
	All         bool     // every active computer
	ExpiresIn   time.Duration
	Description string
	By          string
}

// Create validates and stores a job, and wakes its online targets.
func (s *Service) Create(ctx context.Context, r CreateRequest, now time.Time) (store.Job, []string, error) {
	params, err := checkParams(r.Kind, r.Params, s.cfg.MaxUploadBytes)
	if err != nil {
		return store.Job{}, nil, err
	}
	if r.All == (len(r.Computers) > 0) {
		return store.Job{}, nil, fmt.Errorf("%w: give either computers or all, not both or neither", ErrInvalid)
	}
	targets := slices.Clone(r.Computers)
	cs, err := s.st.ListComputers(ctx)
	if err != nil {
		return store.Job{}, nil, err
	}
	active := map[string]bool{}
	for _, c := range cs {
		if c.State == store.ComputerActive {
			active[c.ID] = true
		}
	}
	if r.All {
		for id := range active {
			targets = append(targets, id)
		}
	} else {
		for _, id := range targets {
			if !active[id] {
				return store.Job{}, nil, fmt.Errorf("%w: computer %q (unknown, deactivated or uninstalled)", ErrNoMatch, id)
			}
		}
	}
	slices.Sort(targets)
	targets = slices.Compact(targets)
	if len(targets) == 0 {
		return store.Job{}, nil, fmt.Errorf("%w: no active computer", ErrNoMatch)
	}
	exp := r.ExpiresIn
	if exp <= 0 {
		exp = s.cfg.DefaultExpiry
	}
	id, err := uuid.NewV7()
	if err != nil {
		return store.Job{}, nil, err
	}
	j := store.Job{
		ID: id.String(), Kind: r.Kind, Params: params, Description: r.Description, CreatedBy: r.By,
		CreatedAt: now.UTC().Truncate(time.Microsecond), ExpiresAt: now.Add(exp).UTC().Truncate(time.Microsecond),
	}
	if err := s.st.CreateJob(ctx, j, targets); err != nil {
		return store.Job{}, nil, err
	}
	s.created.Inc()
	s.mu.Lock()
	for _, t := range targets {
		s.pending[t], s.fresh[t] = true, true
	}
	s.mu.Unlock()
	s.Wake(targets...)
	return j, targets, nil
}

// checkParams validates a kind's parameters and returns their stored form.
func checkParams(kind string, raw json.RawMessage, maxUpload int64) (string, error) {
	empty := len(raw) == 0 || string(raw) == "null" || string(raw) == "{}"
	switch kind {
	case proto.JobHeartbeatNow, proto.JobUninstall, proto.JobRelease:
		if !empty {
			return "", fmt.Errorf("%w: %s takes no parameters", ErrInvalid, kind)
		}
		return "", nil
	case proto.JobCollectLogs:
		var p proto.CollectLogsParams
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if empty || dec.Decode(&p) != nil {
			return "", fmt.Errorf(`%w: collect-logs needs {"paths": ["/var/log/syslog", "/var/log/*.log"], "max_bytes": 50000000}`, ErrInvalid)
		}
		if len(p.Paths) == 0 || len(p.Paths) > 64 {
			return "", fmt.Errorf("%w: collect-logs: give 1 to 64 paths", ErrInvalid)
		}
		for i, path := range p.Paths {
			if path == "" || len(path) > 1024 {
				return "", fmt.Errorf("%w: collect-logs: paths[%d] must be 1 to 1024 bytes", ErrInvalid, i)
			}
		}
		if p.MaxBytes == 0 {
			p.MaxBytes = 50 << 20
		}
		if p.MaxBytes < 0 || p.MaxBytes > maxUpload {
			return "", fmt.Errorf("%w: collect-logs: max_bytes must be 1 to %d", ErrInvalid, maxUpload)
		}
		b, _ := json.Marshal(p)
		return string(b), nil
	case proto.JobIsolate:
		var p proto.IsolateParams
		if !empty {
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.DisallowUnknownFields()
			if dec.Decode(&p) != nil {
				return "", fmt.Errorf(`%w: isolate takes {"allow": ["udp 192.0.2.53:53", "tcp 10.0.0.0/8:443"]} or nothing`, ErrInvalid)
			}
		}
		if len(p.Allow) > 256 {
			return "", fmt.Errorf("%w: isolate: at most 256 allow entries", ErrInvalid)
		}
		if _, err := firewall.IsolationRules(p.Allow); err != nil {
			return "", fmt.Errorf("%w: isolate: %w", ErrInvalid, err)
		}
		b, _ := json.Marshal(p)
		return string(b), nil
	}
	return "", fmt.Errorf("%w: unknown kind %q (heartbeat-now, collect-logs, uninstall, isolate, release)", ErrInvalid, kind)
}

// Cancel cancels a job.
func (s *Service) Cancel(ctx context.Context, id string, now time.Time) (store.Job, error) {
	j, err := s.st.CancelJob(ctx, id, now)
	if err != nil {
		return j, err
	}
	// Agents running it learn at their next heartbeat; wake them now.
	ts, err := s.st.JobTargets(ctx, id)
	if err == nil {
		for _, t := range ts {
			if t.Status == store.JobRunning {
				s.mu.Lock()
				s.fresh[t.ComputerID] = true
				s.mu.Unlock()
				s.Wake(t.ComputerID)
			}
		}
	}
	return j, nil
}

// ForAgent returns the jobs an agent has to run or finish, marking new ones
// delivered. It costs nothing for agents without jobs, which is almost all
// heartbeats.
func (s *Service) ForAgent(ctx context.Context, id string, now time.Time) ([]proto.Job, error) {
	s.mu.Lock()
	has := s.pending[id]
	s.mu.Unlock()
	if !has {
		return nil, nil
	}
	js, err := s.st.UnfinishedJobs(ctx, id, now)
	if err != nil {
		return nil, err
	}
	if len(js) == 0 {
		s.mu.Lock()
		delete(s.pending, id)
		delete(s.fresh, id)
		s.mu.Unlock()
		return nil, nil
	}
	out := make([]proto.Job, len(js))
	ids := make([]string, len(js))
	for i, j := range js {
		out[i] = proto.Job{ID: j.ID, Kind: j.Kind, ExpiresAt: j.ExpiresAt, Cancelled: !j.CancelledAt.IsZero()}
		if j.Params != "" {
			out[i].Params = json.RawMessage(j.Params)
		}
		ids[i] = j.ID
	}
	if err := s.st.MarkDelivered(ctx, id, ids, now); err != nil {
		return nil, err
	}
	s.mu.Lock()
	delete(s.fresh, id)
	s.mu.Unlock()
	return out, nil
}

// Report records an agent's report on one of its jobs.
func (s *Service) Report(ctx context.Context, agentID string, r *proto.JobStatus, now time.Time) (store.JobTarget, error) {
	if r.FileID != "" {
		// Only a file this agent uploaded for this job may be linked.
		f, err := s.st.GetFile(ctx, r.FileID)
		if err != nil || f.ComputerID != agentID || f.JobID != r.JobID || f.CompleteAt.IsZero() {
			return store.JobTarget{}, fmt.Errorf("%w: file %s is not a complete upload of this agent for job %s", ErrNotYours, r.FileID, r.JobID)
		}
	}
	t, err := s.st.UpdateJobTarget(ctx, store.JobTarget{
		JobID: r.JobID, ComputerID: agentID, Status: r.Status, Result: string(r.Result), FileID: r.FileID,
	}, now)
	if err != nil {
		return t, err
	}
	if t.Status == store.JobSucceeded {
		j, err := s.st.GetJob(ctx, r.JobID)
		if err != nil {
			return t, nil // the job's own record is written; the side effects below are best effort
		}
		switch j.Kind {
		case proto.JobUninstall:
			if err := s.st.MarkUninstalled(ctx, agentID, now); err != nil {
				return t, err
			}
			s.fleet.Deactivate(agentID)
			s.log.Info("computer uninstalled its agent", "computer", agentID, "job", r.JobID)
		case proto.JobIsolate, proto.JobRelease:
			// Kept in the store so the console shows an isolated computer
			// as isolated even while it is offline, across manager restarts.
			state := ""
			if j.Kind == proto.JobIsolate {
				state = "isolated"
			}
			if err := s.st.SetComputerIsolation(ctx, agentID, state); err != nil {
				return t, err
			}
		}
	}
	return t, nil
}

// Wait blocks until the agent should heartbeat (a job or nudge for it) or
// max passes or ctx ends; it reports whether it was woken.
func (s *Service) Wait(ctx context.Context, id string, max time.Duration) bool {
	s.mu.Lock()
	if s.fresh[id] {
		s.mu.Unlock()
		return true
	}
	ch := make(chan struct{})
	if old, ok := s.waiters[id]; ok {
		close(old) // a newer poll from the same agent supersedes the old one
	}
	s.waiters[id] = ch
	s.mu.Unlock()
	t := time.NewTimer(max)
	defer t.Stop()
	woken := false
	select {
	case <-ch:
		woken = true
	case <-t.C:
	case <-ctx.Done():
	case <-s.released:
	}
	s.mu.Lock()
	if s.waiters[id] == ch {
		delete(s.waiters, id)
	}
	s.mu.Unlock()
	return woken
}

// ReleaseWaiters ends every long poll, now and from now on, without jobs:
// the manager is stopping (http.Server.RegisterOnShutdown).
func (s *Service) ReleaseWaiters() { s.releaseOnce.Do(func() { close(s.released) }) }

// Wake ends the long polls of these agents, and nudges the others.
func (s *Service) Wake(ids ...string) {
	var missed []string
	s.mu.Lock()
	for _, id := range ids {
		if ch, ok := s.waiters[id]; ok {
			close(ch)
			delete(s.waiters, id)
		} else {
			missed = append(missed, id)
		}
	}
	s.mu.Unlock()
	if s.nudge != nil && len(missed) > 0 {
		s.nudge(missed...)
	}
}
