package outbox_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/yagura/yagura/internal/outbox"
	"github.com/yagura/yagura/internal/store"
	"github.com/yagura/yagura/internal/store/sqlite"
)

type countingSender struct{ n *atomic.Int64 }

func (s countingSender) Send(context.Context, []byte) error { s.n.Add(1); return nil }
func (s countingSender) Close() error                       { return nil }

// BenchmarkForward is what forwarding events to a channel costs on the
// embedded state store: enqueueing notifications in batches of 1,000 (as
// the event forwarder does per stored batch), then the dispatcher claiming,
// sending (to a receiver that accepts at once) and completing them.
func BenchmarkForward(b *testing.B) {
	db, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if _, err := db.CreateChannel(b.Context(), store.Channel{ID: "siem", Name: "siem", Kind: "syslog", Enabled: true, Config: `{}`, CreatedAt: time.Now()}); err != nil {
		b.Fatal(err)
	}
	const n = 20_000
	payload := `{"id":"x","kind":"event","type":"firewall","severity":"warning","title":"[warning] firewall - web01","text":"{\"action\":\"deny\",\"src\":\"203.0.113.5\",\"dpt\":22}"}`
	var enqueue, deliver time.Duration
	for i := 0; b.Loop(); i++ {
		t0 := time.Now()
		for k := 0; k < n; k += 1000 {
			ns := make([]store.Notification, 1000)
			for j := range ns {
				ns[j] = store.Notification{ID: fmt.Sprintf("%d-%d", i, k+j), ChannelID: "siem", Kind: "event", CreatedAt: time.Now(), Payload: payload}
			}
			if _, err := db.EnqueueNotifications(b.Context(), ns); err != nil {
				b.Fatal(err)
			}
		}
		enqueue += time.Since(t0)
		var sent atomic.Int64
		cfg := outbox.DefaultConfig()
		d, err := outbox.New(cfg, db, func(store.Channel) (outbox.Sender, error) { return countingSender{&sent}, nil }, quiet(), prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(b.Context())
		t1 := time.Now()
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		for {
			st, err := db.OutboxStats(b.Context())
			if err != nil {
				b.Fatal(err)
			}
			if st["siem"].Pending == 0 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		deliver += time.Since(t1)
		cancel()
		<-done
		if sent.Load() != n {
			b.Fatalf("sent %d of %d", sent.Load(), n)
		}
	}
	runs := float64(b.N)
	b.ReportMetric(n*runs/enqueue.Seconds(), "enqueued/s")
	b.ReportMetric(n*runs/deliver.Seconds(), "delivered/s")
}
