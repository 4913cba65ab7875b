// Package telemetry provides the store for append-heavy, time-ordered data:
// the events agents send (and, later, network flows). It is separate from
// the state store (internal/store) because the two are used differently: the
// state store holds few rows that change often and must be transactional
// across nodes; telemetry is written in large batches, never updated, read
// by time range, and thrown away by age or size.
//
// Two backends implement Store and pass one conformance suite
// (telemetrytest): DuckDB, embedded in the data folder, and ClickHouse, for
// scale-out.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrInvalid reports an argument the store refuses (an event without an ID,
// a negative limit). Errors wrapping it are the caller's fault.
var ErrInvalid = errors.New("invalid argument")

// Severities of events, most severe first. Agents may send any of them.
const (
	SeverityCritical = "critical"
	SeverityError    = "error"
	SeverityWarning  = "warning"
	SeverityInfo     = "info"
)

// SeverityRank orders severities: critical 4, error 3, warning 2, info 1,
// anything else 0.
func SeverityRank(s string) int {
	switch s {
	case SeverityCritical:
		return 4
	case SeverityError:
		return 3
	case SeverityWarning:
		return 2
	case SeverityInfo:
		return 1
	}
	return 0
}

// Event is one security or system event. An event is identified by the
// computer it is about and the ID its sender gave it; storing the same
// (ComputerID, ID) twice keeps one.
type Event struct {
	ComputerID string    `json:"computer_id"` // "" for the manager's own events
	ID         string    `json:"id"`
	Type       string    `json:"type"`
	Severity   string    `json:"severity"`
	Time       time.Time `json:"time"`        // when it happened, by the sender's clock
	ReceivedAt time.Time `json:"received_at"` // when the manager stored it
	Data       string    `json:"data,omitempty"`
}

// Validate reports what makes e unstorable.
func (e Event) Validate() error {
	switch {
	case e.ID == "":
		return fmt.Errorf("event of %q: empty ID: %w", e.ComputerID, ErrInvalid)
	case e.Type == "":
		return fmt.Errorf("event %q of %q: empty type: %w", e.ID, e.ComputerID, ErrInvalid)
	case e.Time.IsZero():
		return fmt.Errorf("event %q of %q: zero time: %w", e.ID, e.ComputerID, ErrInvalid)
	}
	return nil
}

// Cursor is the position after an event in newest-first order; a query with
// After set returns only events after it, so paging is stable while new
// events arrive.
type Cursor struct {
	Time       time.Time
	ComputerID string
	ID         string
}

// CursorOf returns the cursor just after e.
func CursorOf(e Event) *Cursor { return &Cursor{Time: e.Time, ComputerID: e.ComputerID, ID: e.ID} }

// EventQuery selects events. Zero fields do not filter; several values in a
// list match any of them.
type EventQuery struct {
	Since       time.Time // Time >= Since
	Until       time.Time // Time < Until
	ComputerIDs []string
	Types       []string
	Severities  []string
	// Text matches events whose type or data contains it, ignoring ASCII
	// case (whether other scripts' case is folded depends on the backend;
	// Japanese has none).
	Text  string
	After *Cursor
	Limit int // 0: no limit
}

// Validate reports what is wrong with q.
func (q EventQuery) Validate() error {
	if q.Limit < 0 {
		return fmt.Errorf("event query: negative limit %d: %w", q.Limit, ErrInvalid)
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && q.Until.Before(q.Since) {
		return fmt.Errorf("event query: until %s is before since %s: %w", q.Until.Format(time.RFC3339), q.Since.Format(time.RFC3339), ErrInvalid)
	}
	return nil
}

// TypeCount is how many events of a type a query matched.
type TypeCount struct {
	Type  string `json:"type"`
	Count int64  `json:"count"`
}

// Retention says how much to keep. Zero fields keep everything.
type Retention struct {
	MaxAge   time.Duration // drop events whose Time is older than now-MaxAge
	MaxBytes int64         // then drop the oldest days until the store is under this
}

// Retained reports what Retain removed.
type Retained struct {
	Events int64 // how many events were removed, when the backend knows (else -1)
	Before time.Time
}

// Stats describes what a store holds.
type Stats struct {
	Backend string    `json:"backend"`
	Events  int64     `json:"events"`
	Bytes   int64     `json:"bytes"` // on disk, as the engine reports it
	Oldest  time.Time `json:"oldest"`
	Newest  time.Time `json:"newest"`
}

// Store is a telemetry backend. Implementations are safe for concurrent use.
type Store interface {
	// InsertEvents stores events, skipping any whose (ComputerID, ID) is
	// already stored or repeated in the batch, and returns how many were new.
	// When it returns nil the events are durable. An invalid event fails the
	// whole batch before anything is stored.
	InsertEvents(ctx context.Context, events []Event) (int, error)
	// ScanEvents calls fn for each event q selects, newest first (ties by
	// ComputerID, then ID), without holding them all in memory. An error
	// from fn stops the scan and is returned.
	ScanEvents(ctx context.Context, q EventQuery, fn func(Event) error) error
	// CountEvents counts the events q selects (Limit and After ignored).
	CountEvents(ctx context.Context, q EventQuery) (int64, error)
	// TopEventTypes returns the n most frequent event types among those q
	// selects, most frequent first (ties by type).
	TopEventTypes(ctx context.Context, q EventQuery, n int) ([]TypeCount, error)
	// Retain removes what r does not keep, measured against now.
	Retain(ctx context.Context, r Retention, now time.Time) (Retained, error)
	// Stats reports what the store holds.
	Stats(ctx context.Context) (Stats, error)
	Close() error
}

// ListEvents collects what ScanEvents returns; for small, limited queries.
func ListEvents(ctx context.Context, s Store, q EventQuery) ([]Event, error) {
	var out []Event
	err := s.ScanEvents(ctx, q, func(e Event) error {
		out = append(out, e)
		return nil
	})
	return out, err
}
