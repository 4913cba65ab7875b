package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/telemetry"
)

// memStore is an in-process Store for the writer's unit tests; the real
// backends run the conformance suite.
type memStore struct {
	telemetry.Store
	mu      sync.Mutex
	held    map[string]bool
	inserts int
	fail    error
	// refuse fails any insert holding an event of this ID, as a store
	// refuses a row it cannot hold.
	refuse string
}

func (m *memStore) InsertEvents(_ context.Context, evs []telemetry.Event) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return 0, m.fail
	}
	for _, e := range evs {
		if m.refuse != "" && e.ID == m.refuse {
			return 0, errors.New("refused")
		}
	}
	m.inserts++
	n := 0
	for _, e := range evs {
		k := e.ComputerID + "/" + e.ID
		if !m.held[k] {
			m.held[k] = true
			n++
		}
	}
	return n, nil
}

type observer struct {
	mu   sync.Mutex
	seen int
	fail error
}

func (o *observer) ObserveEvents(_ context.Context, evs []telemetry.Event) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seen += len(evs)
	return o.fail
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestWriterGroupsConcurrentWrites(t *testing.T) {
	st := &memStore{held: map[string]bool{}}
	w := telemetry.NewWriter(st, 20_000, quiet())
	obs := &observer{}
	w.Observe(obs)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()
	var wg sync.WaitGroup
	for g := range 50 {
		wg.Go(func() {
			for b := range 20 {
				evs := make([]telemetry.Event, 10)
				for i := range evs {
					evs[i] = telemetry.Event{ComputerID: fmt.Sprint("c", g), ID: fmt.Sprint(b, "-", i), Type: "t", Severity: "info", Time: time.Now()}
				}
				if err := w.Write(t.Context(), evs); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(st.held) != 50*20*10 || obs.seen != 50*20*10 {
		t.Fatalf("stored %d, observed %d, want %d", len(st.held), obs.seen, 50*20*10)
	}
	if st.inserts >= 50*20 {
		t.Fatalf("%d inserts for %d writes: nothing was grouped", st.inserts, 50*20)
	}
	t.Logf("%d writes in %d inserts", 50*20, st.inserts)
	if err := w.Write(t.Context(), []telemetry.Event{{ComputerID: "c", ID: "late", Type: "t", Time: time.Now()}}); !errors.Is(err, telemetry.ErrStopped) {
		t.Fatalf("write after stop: %v, want ErrStopped", err)
	}
}

func TestWriterReportsFailures(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   *memStore
		obs  *observer
	}{
		{"store fails", &memStore{held: map[string]bool{}, fail: errors.New("disk full")}, &observer{}},
		{"observer fails", &memStore{held: map[string]bool{}}, &observer{fail: errors.New("outbox unreachable")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := telemetry.NewWriter(tc.st, 100, quiet())
			w.Observe(tc.obs)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			go w.Run(ctx)
			err := w.Write(t.Context(), []telemetry.Event{{ComputerID: "c", ID: "1", Type: "t", Time: time.Now()}})
			if err == nil {
				t.Fatal("a failed batch was acknowledged")
			}
		})
	}
	w := telemetry.NewWriter(&memStore{held: map[string]bool{}}, 100, quiet())
	if err := w.Write(t.Context(), []telemetry.Event{{ComputerID: "c", Type: "t", Time: time.Now()}}); !errors.Is(err, telemetry.ErrInvalid) {
		t.Fatalf("invalid event: %v, want ErrInvalid", err)
	}
}

// TestWriterIsolatesABadBatch: a batch the store refuses fails alone; the
// others grouped with it are stored and acknowledged.
func TestWriterIsolatesABadBatch(t *testing.T) {
	st := &memStore{held: map[string]bool{}, refuse: "bad"}
	w := telemetry.NewWriter(st, 20_000, quiet())
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go w.Run(ctx)
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		wg.Go(func() {
			id := fmt.Sprint("ok-", i)
			if i == 7 {
				id = "bad"
			}
			errs[i] = w.Write(t.Context(), []telemetry.Event{{ComputerID: fmt.Sprint("c", i), ID: id, Type: "t", Time: time.Now()}})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if (err != nil) != (i == 7) {
			t.Errorf("write %d: %v", i, err)
		}
	}
	if len(st.held) != 19 {
		t.Fatalf("stored %d events, want the 19 good ones", len(st.held))
	}
}
