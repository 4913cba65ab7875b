package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/yagura/yagura/internal/eventq"
	"github.com/yagura/yagura/internal/proto"
)

// DefaultQueueMaxBytes caps the on-disk event queue.
const DefaultQueueMaxBytes = 1 << 30

func openQueue(dir string, capBytes int64) (*eventq.Queue, error) {
	if capBytes <= 0 {
		capBytes = DefaultQueueMaxBytes
	}
	return eventq.Open(filepath.Join(dir, "events.db"), capBytes, newEventID)
}

func newEventID() (string, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("new event ID: %w", err)
	}
	return id.String(), nil
}

// Emit queues an event durably; it reaches the manager when it can.
func (a *Agent) Emit(typ, severity string, data any) error {
	var raw json.RawMessage
	if data != nil {
		b, err := json.Marshal(data)
		if err != nil {
			return fmt.Errorf("encode %s event: %w", typ, err)
		}
		raw = b
	}
	return a.q.Push(proto.Event{Type: typ, Severity: severity, Data: raw})
}

// Batch limits: what the manager accepts, with room to spare.
const (
	batchEvents = 500
	batchBytes  = 1 << 20
)

// sendEvents delivers the queue: a batch is deleted only after the manager
// acknowledged storing it, so a crash on either side resends it, and the
// manager stores each event ID once.
func (a *Agent) sendEvents(ctx context.Context) {
	failures := 0
	for ctx.Err() == nil {
		if mode, changed := a.dir.current(); mode == managerInitiated {
			// The heartbeat loop sends on the manager's connections.
			select {
			case <-ctx.Done():
			case <-changed:
			}
			continue
		}
		sent, err := a.sendBatch(ctx)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			failures++
			wait := backoff(failures, max(a.heartbeatInterval(), 10*time.Second))
			if failures == 1 || failures%20 == 0 {
				a.log.Warn("sending events failed; they stay queued", "err", err, "queued", a.q.Len(), "retry_in", wait.Round(time.Millisecond))
			}
			sleep(ctx, wait)
		case !sent:
			_, changed := a.dir.current()
			select {
			case <-ctx.Done():
			case <-a.q.Notify():
			case <-changed:
			case <-time.After(10 * time.Second):
			}
		default:
			failures = 0
		}
	}
}

// flushEvents sends batches until the queue is empty or sending fails.
func (a *Agent) flushEvents(ctx context.Context) {
	for ctx.Err() == nil {
		sent, err := a.sendBatch(ctx)
		if err != nil {
			a.log.Warn("sending events failed; they stay queued", "err", err, "queued", a.q.Len())
			return
		}
		if !sent {
			return
		}
	}
}

// sendBatch sends the oldest queued events; sent is false when there were
// none.
func (a *Agent) sendBatch(ctx context.Context) (sent bool, err error) {
	recs, err := a.q.Peek(batchEvents, batchBytes)
	if err != nil {
		return false, fmt.Errorf("read the event queue: %w", err)
	}
	if len(recs) == 0 {
		return false, nil
	}
	// The queue holds each event's JSON: splice them into a batch.
	var body bytes.Buffer
	body.WriteString(`{"v":` + strconv.Itoa(proto.Version) + `,"events":[`)
	seqs := make([]uint64, len(recs))
	for i, r := range recs {
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(r.Raw)
		seqs[i] = r.Seq
	}
	body.WriteString("]}")
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	ack, err := a.client.SendEvents(rctx, body.Bytes())
	cancel()
	if err != nil {
		return false, err
	}
	if err := a.q.Ack(seqs); err != nil {
		// Not fatal: the batch is resent and the manager skips it.
		a.log.Error("remove delivered events from the queue", "err", err)
	}
	a.log.Debug("events delivered", "stored", ack.Stored, "duplicates", ack.Duplicates, "queued", a.q.Len())
	return true, nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// emitTestEvents produces n numbered test events (data {"n": i}), for the
// end-to-end tests that check none is lost or duplicated. Progress is kept
// in the queue with the events themselves, so a restarted agent continues
// where it stopped and never emits a number twice.
func (a *Agent) emitTestEvents(ctx context.Context, n int) error {
	const progress = "test-events-emitted"
	v, err := a.q.Meta(progress)
	if err != nil {
		return err
	}
	done, _ := strconv.Atoi(string(v))
	for done < n && ctx.Err() == nil {
		k := min(100, n-done)
		evs := make([]proto.Event, k)
		for i := range evs {
			evs[i] = proto.Event{Type: "test", Severity: "info", Data: json.RawMessage(`{"n":` + strconv.Itoa(done+i) + `}`)}
		}
		if err := a.q.PushWithMeta(progress, []byte(strconv.Itoa(done+k)), evs...); err != nil {
			return err
		}
		done += k
	}
	if done >= n {
		a.log.Info("test events queued", "count", n)
	}
	return nil
}
