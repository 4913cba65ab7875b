package eventq

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

func counterIDs() func() (string, error) {
	var n atomic.Int64
	return func() (string, error) { return fmt.Sprintf("id-%06d", n.Add(1)), nil }
}

func open(t *testing.T, path string, capBytes int64) *Queue {
	t.Helper()
	q, err := Open(path, capBytes, counterIDs())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func ev(n int) Event {
	return Event{Type: "test", Severity: "info", Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))}
}

func decode(t *testing.T, recs []Record) []Event {
	t.Helper()
	out := make([]Event, len(recs))
	for i, r := range recs {
		if err := json.Unmarshal(r.Raw, &out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestPushPeekAck(t *testing.T) {
	q := open(t, filepath.Join(t.TempDir(), "q.db"), 1<<20)
	for i := range 10 {
		if err := q.Push(ev(i)); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := q.Peek(4, 1<<20)
	if err != nil || len(recs) != 4 {
		t.Fatalf("Peek: %d records, %v", len(recs), err)
	}
	evs := decode(t, recs)
	if string(evs[0].Data) != `{"n":0}` || evs[0].ID == "" || evs[0].Time.IsZero() {
		t.Fatalf("oldest first, with ID and time: %+v", evs[0])
	}
	if err := q.Ack([]uint64{recs[0].Seq, recs[1].Seq, recs[0].Seq}); err != nil {
		t.Fatal(err)
	}
	if q.Len() != 8 {
		t.Fatalf("Len %d after acking 2 of 10, want 8", q.Len())
	}
	recs, _ = q.Peek(100, 1<<20)
	if got := decode(t, recs); len(got) != 8 || string(got[0].Data) != `{"n":2}` {
		t.Fatalf("after ack: %d events starting %s", len(got), got[0].Data)
	}
	// maxBytes bounds a batch but never to zero.
	recs, _ = q.Peek(100, 1)
	if len(recs) != 1 {
		t.Fatalf("Peek with a tiny byte budget: %d records, want 1", len(recs))
	}
}

func TestRestartKeepsQueue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	q, err := Open(path, 1<<20, counterIDs())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		q.Push(ev(i))
	}
	bytes := q.Bytes()
	q.Close()
	q2 := open(t, path, 1<<20)
	if q2.Len() != 100 || q2.Bytes() != bytes {
		t.Fatalf("after reopening: %d events, %d bytes; want 100, %d", q2.Len(), q2.Bytes(), bytes)
	}
	recs, _ := q2.Peek(1000, 1<<30)
	if len(recs) != 100 {
		t.Fatalf("%d events readable after restart", len(recs))
	}
}

func TestCapDropsOldestAndReports(t *testing.T) {
	q := open(t, filepath.Join(t.TempDir(), "q.db"), 2000)
	for i := range 200 {
		if err := q.Push(ev(i)); err != nil {
			t.Fatal(err)
		}
	}
	if q.Bytes() > 2000 {
		t.Fatalf("queue holds %d bytes over a cap of 2000", q.Bytes())
	}
	kept := q.Len()
	dropped, _ := q.Dropped()
	if kept+dropped != 200 || dropped == 0 {
		t.Fatalf("kept %d + dropped %d != 200", kept, dropped)
	}
	recs, err := q.Peek(1000, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	evs := decode(t, recs)
	// The newest events survive; the drop report carries the count.
	last := evs[len(evs)-1]
	if last.Type != DroppedType || last.Severity != "warning" {
		t.Fatalf("last event %+v, want the drop report", last)
	}
	var body struct{ Count int64 }
	json.Unmarshal(last.Data, &body)
	if body.Count != dropped {
		t.Fatalf("drop report says %d, dropped %d", body.Count, dropped)
	}
	if string(evs[len(evs)-2].Data) != `{"n":199}` {
		t.Fatalf("newest event lost: %s", evs[len(evs)-2].Data)
	}
	if d, _ := q.Dropped(); d != 0 {
		t.Fatalf("%d drops still unreported after the report", d)
	}
	if _, err := q.Peek(10, 100); err != nil {
		t.Fatal(err)
	}
	if recs2, _ := q.Peek(1000, 1<<20); len(recs2) != len(recs) {
		t.Fatal("a second Peek reported the drops again")
	}
}

func TestTooLarge(t *testing.T) {
	q := open(t, filepath.Join(t.TempDir(), "q.db"), 100)
	big := Event{Type: "x", Data: json.RawMessage(`"` + string(make([]byte, 0)) + fmt.Sprintf("%0200d", 0) + `"`)}
	if err := q.Push(big); err == nil {
		t.Fatal("an event larger than the cap was accepted")
	}
}

func TestConcurrentPush(t *testing.T) {
	q := open(t, filepath.Join(t.TempDir(), "q.db"), 1<<24)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 50 {
				if err := q.Push(ev(w*1000 + i)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	recs, _ := q.Peek(1000, 1<<30)
	seen := map[string]bool{}
	for _, e := range decode(t, recs) {
		if seen[string(e.Data)] {
			t.Fatalf("duplicate %s", e.Data)
		}
		seen[string(e.Data)] = true
	}
	if len(seen) != 400 || q.Len() != 400 {
		t.Fatalf("%d distinct, Len %d; want 400", len(seen), q.Len())
	}
}
