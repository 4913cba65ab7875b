package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// ErrStopped is returned by Write once the writer has stopped.
var ErrStopped = errors.New("telemetry writer stopped")

// Observer sees every batch the writer stored, after the store committed it
// and before the senders are answered. An error fails the whole batch: the
// senders retry, the store skips what it already holds, and the observer
// sees the events again — so observers must be idempotent (the outbox
// forwarder uses deterministic notification IDs). Observers see a resent
// event again even when the store skipped it.
type Observer interface {
	ObserveEvents(ctx context.Context, events []Event) error
}

// Writer merges concurrent writes into few store inserts (group commit):
// while one insert runs, the writes that arrive queue up and go in the next
// one. Each Write returns only once its events are durable, so the gateway
// can acknowledge an agent's batch — and the agent delete it — safely.
type Writer struct {
	s         Store
	in        chan *pending
	maxEvents int
	observers []Observer
	log       *slog.Logger
	done      chan struct{}
}

type pending struct {
	evs []Event
	err chan error
}

// NewWriter returns a writer over s that puts at most maxEvents events in
// one insert (a single larger write still goes in one piece).
func NewWriter(s Store, maxEvents int, log *slog.Logger) *Writer {
	if maxEvents <= 0 {
		maxEvents = 20_000
	}
	return &Writer{s: s, in: make(chan *pending, 1024), maxEvents: maxEvents, log: log, done: make(chan struct{})}
}

// Observe adds an observer. Call before Run.
func (w *Writer) Observe(o Observer) { w.observers = append(w.observers, o) }

// Write stores events and returns when they are durable and observed.
func (w *Writer) Write(ctx context.Context, evs []Event) error {
	if len(evs) == 0 {
		return nil
	}
	for _, e := range evs {
		if err := e.Validate(); err != nil {
			return err
		}
	}
	p := &pending{evs: evs, err: make(chan error, 1)}
	select {
	case <-w.done:
		return ErrStopped
	default:
	}
	select {
	case w.in <- p:
	case <-w.done:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-p.err:
		return err
	case <-w.done:
		// Stopped after this write was queued: it may have been answered
		// just before.
		select {
		case err := <-p.err:
			return err
		default:
			return ErrStopped
		}
	case <-ctx.Done():
		// The batch may still be stored; the sender retries and the store
		// keeps one copy.
		return ctx.Err()
	}
}

// Run writes batches until ctx is cancelled, then fails what is queued (its
// senders retry later) and returns.
func (w *Writer) Run(ctx context.Context) error {
	defer close(w.done)
	for {
		var first *pending
		select {
		case first = <-w.in:
		case <-ctx.Done():
			w.drain(ErrStopped)
			return nil
		}
		group := []*pending{first}
		n := len(first.evs)
	more:
		for n < w.maxEvents {
			select {
			case p := <-w.in:
				group = append(group, p)
				n += len(p.evs)
			default:
				break more
			}
		}
		err := w.flush(context.WithoutCancel(ctx), group, n)
		if err != nil && len(group) > 1 {
			// One sender's bad batch must not fail everyone's: try each on
			// its own, so only the bad one is refused (the store keeps one
			// copy of whatever the group insert had already stored).
			for _, p := range group {
				p.err <- w.flush(context.WithoutCancel(ctx), []*pending{p}, len(p.evs))
			}
			continue
		}
		for _, p := range group {
			p.err <- err
		}
	}
}

func (w *Writer) drain(err error) {
	for {
		select {
		case p := <-w.in:
			p.err <- err
		default:
			return
		}
	}
}

func (w *Writer) flush(ctx context.Context, group []*pending, n int) error {
	evs := group[0].evs
	if len(group) > 1 {
		evs = make([]Event, 0, n)
		for _, p := range group {
			evs = append(evs, p.evs...)
		}
	}
	start := time.Now()
	stored, err := w.s.InsertEvents(ctx, evs)
	if err != nil {
		w.log.Error("store events", "events", len(evs), "err", err)
		return fmt.Errorf("store %d events: %w", len(evs), err)
	}
	for _, o := range w.observers {
		if err := o.ObserveEvents(ctx, evs); err != nil {
			w.log.Error("observe events", "events", len(evs), "err", err)
			return fmt.Errorf("after storing %d events: %w", len(evs), err)
		}
	}
	w.log.Debug("events stored", "writes", len(group), "events", len(evs), "new", stored, "took", time.Since(start))
	return nil
}
