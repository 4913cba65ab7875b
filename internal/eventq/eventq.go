// Package eventq provides the agent's durable event queue: events are
// written to an on-disk bbolt database before anything tries to send them,
// and leave it only when the manager has acknowledged a durable write.
//
// The queue has a size cap. When it is full the oldest events are dropped
// and counted; the count is turned into an "events-dropped" event the next
// time the sender takes a batch, so the loss is visible at the manager. It
// is linked into the agent: standard library and bbolt only.
package eventq

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/yagura/yagura/internal/proto"
)

// Event is an event as it travels to the manager; the queue keeps its JSON
// so a batch is sent without decoding and encoding it again.
type Event = proto.Event

// Record is a queued event with its position.
type Record struct {
	Seq uint64
	Raw []byte // the event's JSON
}

// DroppedType is the type of the event that reports dropped events.
const DroppedType = "events-dropped"

var (
	bEvents = []byte("events")
	bMeta   = []byte("meta")
	kBytes  = []byte("bytes")   // total size of queued event JSON
	kCount  = []byte("count")   // number of queued events
	kDrop   = []byte("dropped") // dropped and not yet reported
)

// Queue is safe for concurrent use.
type Queue struct {
	db     *bolt.DB
	cap    int64
	newID  func() (string, error)
	notify chan struct{}

	mu    sync.Mutex // serialises writers' view of size and drops
	bytes int64
	count int64
}

// Open opens (or creates) the queue at path, holding at most capBytes of
// event data. newID makes IDs for the events the queue itself creates.
func Open(path string, capBytes int64, newID func() (string, error)) (*Queue, error) {
	if capBytes <= 0 {
		return nil, fmt.Errorf("event queue cap %d: must be positive", capBytes)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("event queue folder: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open event queue %s: %w (is another agent running on this data folder?)", path, err)
	}
	q := &Queue{db: db, cap: capBytes, newID: newID, notify: make(chan struct{}, 1)}
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bEvents); err != nil {
			return err
		}
		m, err := tx.CreateBucketIfNotExists(bMeta)
		if err != nil {
			return err
		}
		q.bytes, q.count = getInt(m, kBytes), getInt(m, kCount)
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open event queue %s: %w", path, err)
	}
	return q, nil
}

// Close closes the database.
func (q *Queue) Close() error { return q.db.Close() }

// Notify signals (without blocking) when events were pushed.
func (q *Queue) Notify() <-chan struct{} { return q.notify }

// Len and Bytes describe what is queued.
func (q *Queue) Len() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.count
}

// Bytes is the size of the queued event data.
func (q *Queue) Bytes() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.bytes
}

// ErrTooLarge means a single event is larger than the whole queue.
var ErrTooLarge = errors.New("event larger than the queue's cap")

// Push writes events durably (fsync'd) before it returns. Events without
// an ID or time get one. If the queue would exceed its cap, the oldest
// events are dropped and counted.
func (q *Queue) Push(events ...Event) error { return q.PushWithMeta("", nil, events...) }

// PushWithMeta pushes events and stores a meta value in the same
// transaction, so a producer can record how far it got together with what
// it produced (nothing twice, nothing lost, across a crash).
func (q *Queue) PushWithMeta(name string, value []byte, events ...Event) error {
	raws := make([][]byte, len(events))
	var size int64
	for i := range events {
		e := &events[i]
		if e.ID == "" {
			id, err := q.newID()
			if err != nil {
				return err
			}
			e.ID = id
		}
		if e.Time.IsZero() {
			e.Time = time.Now().UTC()
		}
		// Refuse here what the manager would refuse: a bad event queued
		// would block every event behind it.
		if err := e.Validate(); err != nil {
			return fmt.Errorf("event %s: %w", e.ID, err)
		}
		b, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("encode event %s: %w", e.ID, err)
		}
		if int64(len(b)) > q.cap {
			return fmt.Errorf("event %s of %d bytes: %w", e.ID, len(b), ErrTooLarge)
		}
		raws[i], size = b, size+int64(len(b))
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	err := q.db.Update(func(tx *bolt.Tx) error {
		b, m := tx.Bucket(bEvents), tx.Bucket(bMeta)
		bytes, count, dropped := getInt(m, kBytes), getInt(m, kCount), getInt(m, kDrop)
		// Make room, oldest first.
		if over := bytes + size - q.cap; over > 0 {
			c := b.Cursor()
			for k, v := c.First(); k != nil && over > 0; k, v = c.First() {
				over -= int64(len(v))
				bytes -= int64(len(v))
				count--
				dropped++
				if err := c.Delete(); err != nil {
					return err
				}
			}
		}
		for _, raw := range raws {
			seq, err := b.NextSequence()
			if err != nil {
				return err
			}
			if err := b.Put(key(seq), raw); err != nil {
				return err
			}
		}
		if name != "" {
			if err := m.Put([]byte("x:"+name), value); err != nil {
				return err
			}
		}
		q.bytes, q.count = bytes+size, count+int64(len(raws))
		return putInts(m, q.bytes, q.count, dropped)
	})
	if err != nil {
		return fmt.Errorf("write events to the queue: %w", err)
	}
	select {
	case q.notify <- struct{}{}:
	default:
	}
	return nil
}

// Peek returns the oldest events, at most max of them and about maxBytes.
// If events were dropped since the last report, it first queues the
// "events-dropped" event carrying their count.
func (q *Queue) Peek(max int, maxBytes int) ([]Record, error) {
	if err := q.reportDrops(); err != nil {
		return nil, err
	}
	var out []Record
	err := q.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bEvents).Cursor()
		size := 0
		for k, v := c.First(); k != nil && len(out) < max; k, v = c.Next() {
			if len(out) > 0 && size+len(v) > maxBytes {
				break
			}
			size += len(v)
			out = append(out, Record{Seq: binary.BigEndian.Uint64(k), Raw: append([]byte(nil), v...)})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the event queue: %w", err)
	}
	return out, nil
}

// Dropped is how many events were dropped and not yet reported.
func (q *Queue) Dropped() (int64, error) {
	var n int64
	err := q.db.View(func(tx *bolt.Tx) error { n = getInt(tx.Bucket(bMeta), kDrop); return nil })
	return n, err
}

func (q *Queue) reportDrops() error {
	if n, err := q.Dropped(); err != nil || n == 0 {
		return err
	}
	id, err := q.newID()
	if err != nil {
		return err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.db.Update(func(tx *bolt.Tx) error {
		b, m := tx.Bucket(bEvents), tx.Bucket(bMeta)
		n := getInt(m, kDrop) // re-read: a Push may have dropped more
		data, _ := json.Marshal(map[string]int64{"count": n})
		raw, err := json.Marshal(Event{ID: id, Type: DroppedType, Time: time.Now().UTC(), Severity: "warning", Data: data})
		if err != nil {
			return err
		}
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		if err := b.Put(key(seq), raw); err != nil {
			return err
		}
		q.bytes, q.count = getInt(m, kBytes)+int64(len(raw)), getInt(m, kCount)+1
		return putInts(m, q.bytes, q.count, 0)
	})
}

// Ack deletes events the manager has stored.
func (q *Queue) Ack(seqs []uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.db.Update(func(tx *bolt.Tx) error {
		b, m := tx.Bucket(bEvents), tx.Bucket(bMeta)
		bytes, count := getInt(m, kBytes), getInt(m, kCount)
		for _, s := range seqs {
			k := key(s)
			v := b.Get(k)
			if v == nil {
				continue // dropped meanwhile, or acknowledged twice
			}
			bytes -= int64(len(v))
			count--
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		q.bytes, q.count = bytes, count
		return putInts(m, bytes, count, getInt(m, kDrop))
	})
}

// Meta reads a small value the agent keeps with its queue (for example
// which jobs it ran); Put stores one. Both are durable like events.
func (q *Queue) Meta(name string) ([]byte, error) {
	var out []byte
	err := q.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bMeta).Get([]byte("x:" + name)); v != nil {
			out = append([]byte(nil), v...)
		}
		return nil
	})
	return out, err
}

// PutMeta stores a small value durably.
func (q *Queue) PutMeta(name string, value []byte) error {
	return q.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bMeta).Put([]byte("x:"+name), value) })
}

func key(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

func getInt(b *bolt.Bucket, k []byte) int64 {
	v := b.Get(k)
	if len(v) != 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(v))
}

// putInts stores the queue's bookkeeping in the same transaction as the
// change it describes.
func putInts(m *bolt.Bucket, bytes, count, dropped int64) error {
	for _, kv := range []struct {
		k []byte
		v int64
	}{{kBytes, bytes}, {kCount, count}, {kDrop, dropped}} {
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], uint64(kv.v))
		if err := m.Put(kv.k, v[:]); err != nil {
			return err
		}
	}
	return nil
}
