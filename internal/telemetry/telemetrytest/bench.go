package telemetrytest

import (
	"fmt"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/telemetry"
)

// eventTypes mimics a fleet: firewall events dominate, a long tail of others.
var eventTypes = func() []string {
	out := []string{"firewall", "firewall", "firewall", "firewall", "policy-applied", "agent-start", "agent-stop", "events-dropped"}
	for i := range 42 {
		out = append(out, fmt.Sprintf("detection-%02d", i))
	}
	return out
}()

// Events makes n synthetic events, spread evenly over [from, from+span),
// from 1,000 computers, with a firewall-like payload.
func Events(n int, from time.Time, span time.Duration, seq int) []telemetry.Event {
	evs := make([]telemetry.Event, n)
	step := span / time.Duration(max(n, 1))
	for i := range evs {
		k := seq + i
		at := from.Add(time.Duration(i) * step)
		evs[i] = telemetry.Event{
			ComputerID: fmt.Sprintf("0193a1b2-0000-7000-8000-%012d", k%1000),
			ID:         fmt.Sprintf("ev-%d", k),
			Type:       eventTypes[(k*7)%len(eventTypes)],
			Severity:   []string{"info", "warning", "error", "critical"}[k%4],
			Time:       at,
			ReceivedAt: at,
			Data:       fmt.Sprintf(`{"action":"deny","src":"203.0.113.%d","dst":"192.0.2.%d","dpt":%d,"proto":"tcp"}`, k%250, (k/250)%250, 1+k%1024),
		}
	}
	return evs
}

// BenchInsert measures sustained inserts of batches of size events,
// reporting events/s.
func BenchInsert(b *testing.B, s telemetry.Store, size int) {
	start := time.Now().UTC().Add(-time.Hour)
	b.ResetTimer()
	total := 0
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		evs := Events(size, start.Add(time.Duration(i)*time.Second), time.Second, i*size)
		b.StartTimer()
		n, err := s.InsertEvents(b.Context(), evs)
		if err != nil {
			b.Fatal(err)
		}
		if n != size {
			b.Fatalf("stored %d of %d", n, size)
		}
		total += n
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "events/s")
}

// BenchTopTypes loads n events over the last 24 hours (untimed) and times
// TopEventTypes over those 24 hours.
func BenchTopTypes(b *testing.B, s telemetry.Store, n int) {
	now := time.Now().UTC()
	from := now.Add(-24 * time.Hour)
	const batch = 100_000
	step := 24 * time.Hour / time.Duration(n/batch)
	loadStart := time.Now()
	for i := 0; i < n; i += batch {
		evs := Events(batch, from.Add(time.Duration(i/batch)*step), step, i)
		if _, err := s.InsertEvents(b.Context(), evs); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("loaded %d events in %v (%.0f events/s)", n, time.Since(loadStart), float64(n)/time.Since(loadStart).Seconds())
	q := telemetry.EventQuery{Since: from, Until: now.Add(time.Minute)}
	if c, err := s.CountEvents(b.Context(), q); err != nil || c != int64(n) {
		b.Fatalf("store holds %d events over 24 h (err %v), want %d", c, err, n)
	}
	b.ResetTimer()
	for b.Loop() {
		top, err := s.TopEventTypes(b.Context(), q, 10)
		if err != nil {
			b.Fatal(err)
		}
		if len(top) != 10 || top[0].Type != "firewall" {
			b.Fatalf("top types %v", top)
		}
	}
}
