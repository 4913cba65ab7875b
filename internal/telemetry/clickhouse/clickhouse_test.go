package clickhouse_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"

	"github.com/yagura/yagura/internal/telemetry"
	"github.com/yagura/yagura/internal/telemetry/clickhouse"
	"github.com/yagura/yagura/internal/telemetry/telemetrytest"
	"github.com/yagura/yagura/internal/testch"
)

func TestMain(m *testing.M) { testch.Main(m) }

func open(t testing.TB) *clickhouse.Store {
	t.Helper()
	db := testch.Start(t)
	s, err := clickhouse.Open(context.Background(), clickhouse.Config{Addr: db.Addr, Database: db.Name, Username: "default"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	telemetrytest.Run(t, func(t *testing.T) telemetry.Store { return open(t) })
}

func ev(computer, id, typ string, at time.Time) telemetry.Event {
	return telemetry.Event{ComputerID: computer, ID: id, Type: typ, Severity: "info", Time: at, ReceivedAt: at.Add(time.Second), Data: `{"k":"v"}`}
}

func insert(t *testing.T, s telemetry.Store, evs ...telemetry.Event) int {
	t.Helper()
	n, err := s.InsertEvents(t.Context(), evs)
	if err != nil {
		t.Fatalf("insert %d events: %v", len(evs), err)
	}
	return n
}

func count(t *testing.T, s telemetry.Store, q telemetry.EventQuery) int64 {
	t.Helper()
	n, err := s.CountEvents(t.Context(), q)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestOpenIsIdempotent: opening a database that has the table keeps its
// events.
func TestOpenIsIdempotent(t *testing.T) {
	db := testch.Start(t)
	cfg := clickhouse.Config{Addr: db.Addr, Database: db.Name}
	for i := range 2 {
		s, err := clickhouse.Open(t.Context(), cfg)
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		insert(t, s, ev("c1", fmt.Sprint(i), "x", time.Now()))
		if n := count(t, s, telemetry.EventQuery{}); n != int64(i+1) {
			t.Errorf("open %d: %d events, want %d", i, n, i+1)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOpenFails: errors say what failed, and a missing address is the
// caller's fault.
func TestOpenFails(t *testing.T) {
	if _, err := clickhouse.Open(t.Context(), clickhouse.Config{}); !errors.Is(err, telemetry.ErrInvalid) {
		t.Errorf("open without address: %v, want ErrInvalid", err)
	}
	if _, err := clickhouse.Open(t.Context(), clickhouse.Config{Addr: "127.0.0.1:9", Database: "x; DROP DATABASE y"}); !errors.Is(err, telemetry.ErrInvalid) {
		t.Errorf("open with a database name that is not an identifier: %v, want ErrInvalid", err)
	}
	_, err := clickhouse.Open(t.Context(), clickhouse.Config{Addr: "127.0.0.1:9", Database: "yagura"})
	if err == nil {
		t.Fatal("opened a server that is not there")
	}
	if got := err.Error(); !strings.Contains(got, "clickhouse: open 127.0.0.1:9") {
		t.Errorf("error %q does not say what failed", got)
	}
	// A missing database is created, as the DuckDB file is on first start.
	db := testch.Start(t)
	name := "created_" + strings.ReplaceAll(db.Name, "-", "_")
	s, err := clickhouse.Open(t.Context(), clickhouse.Config{Addr: db.Addr, Database: name})
	if err != nil {
		t.Fatalf("open a database to create: %v", err)
	}
	defer s.Close()
	if n, err := s.InsertEvents(t.Context(), []telemetry.Event{ev("c1", "1", "x", time.Now())}); err != nil || n != 1 {
		t.Fatalf("insert into the created database: %d, %v", n, err)
	}
}

// TestInsertAcrossManyDays: a batch from a computer whose clock wandered
// over months (more partitions than one insert block may touch, more day
// spans than the duplicate check lists) is stored once, and its resend is
// recognised.
func TestInsertAcrossManyDays(t *testing.T) {
	s := open(t)
	start := time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)
	var evs []telemetry.Event
	for i := range 250 {
		evs = append(evs, ev("c1", fmt.Sprint(i), "x", start.AddDate(0, 0, i)))
	}
	if n := insert(t, s, evs...); n != 250 {
		t.Fatalf("stored %d, want 250", n)
	}
	if n := insert(t, s, evs...); n != 0 {
		t.Fatalf("resend stored %d, want 0", n)
	}
	if n := count(t, s, telemetry.EventQuery{}); n != 250 {
		t.Fatalf("count %d, want 250", n)
	}
}

// TestTimes: times keep microseconds (finer is dropped) and come back in
// UTC; query bounds are truncated alike, so an event's own time, as sent,
// selects it.
func TestTimes(t *testing.T) {
	s := open(t)
	at := time.Date(2025, 3, 1, 10, 0, 0, 1_234_567, time.FixedZone("JST", 9*3600))
	insert(t, s, ev("c1", "a", "x", at))
	got, err := telemetry.ListEvents(t.Context(), s, telemetry.EventQuery{})
	if err != nil || len(got) != 1 {
		t.Fatalf("list: %v, %v", got, err)
	}
	stored := at.Truncate(time.Microsecond).UTC()
	if got[0].Time != stored || got[0].ReceivedAt != stored.Add(time.Second) {
		t.Errorf("time %v, received %v; want %v and a second later", got[0].Time, got[0].ReceivedAt, stored)
	}
	tests := []struct {
		name string
		q    telemetry.EventQuery
		want int64
	}{
		{"since its time", telemetry.EventQuery{Since: at}, 1},
		{"since the stored time", telemetry.EventQuery{Since: stored}, 1},
		{"since a microsecond later", telemetry.EventQuery{Since: at.Add(time.Microsecond)}, 0},
		{"until its time", telemetry.EventQuery{Until: at}, 0},
		{"until a microsecond later", telemetry.EventQuery{Until: at.Add(time.Microsecond)}, 1},
		{"the day around it, UTC", telemetry.EventQuery{Since: stored.Truncate(24 * time.Hour), Until: stored.Truncate(24 * time.Hour).Add(24 * time.Hour)}, 1},
		{"the day before, UTC", telemetry.EventQuery{Until: stored.Truncate(24 * time.Hour)}, 0},
	}
	for _, tt := range tests {
		if n := count(t, s, tt.q); n != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, n, tt.want)
		}
	}
	// The cursor of the event as sent is after it.
	evs, err := telemetry.ListEvents(t.Context(), s, telemetry.EventQuery{After: &telemetry.Cursor{Time: at, ComputerID: "c1", ID: "a"}})
	if err != nil || len(evs) != 0 {
		t.Errorf("after its own cursor: %v, %v; want nothing", evs, err)
	}
}

// TestPages: a limited scan finds its page however far back from now, the
// cursor or Until the events are (it looks back over widening windows), and
// pages through them in order.
func TestPages(t *testing.T) {
	s := open(t)
	now := time.Now().UTC()
	// Clusters of events from a day in the future (a fast clock) to three
	// years back, each of a few types.
	var all []telemetry.Event
	for c, back := range []time.Duration{-24 * time.Hour, 30 * time.Second, 5 * time.Minute, 3 * time.Hour, 20 * 24 * time.Hour, 3 * 365 * 24 * time.Hour} {
		for i := range 30 {
			e := ev(fmt.Sprintf("c%d", i%4), fmt.Sprintf("%d-%02d", c, i), fmt.Sprintf("t%d", i%3), now.Add(-back).Add(time.Duration(i/2)*time.Millisecond))
			all = append(all, e)
		}
	}
	insert(t, s, all...)
	slices.SortFunc(all, func(a, b telemetry.Event) int {
		if c := b.Time.Compare(a.Time); c != 0 {
			return c
		}
		return cmp.Compare(a.ComputerID+"\x00"+a.ID, b.ComputerID+"\x00"+b.ID)
	})
	keys := func(evs []telemetry.Event) []string {
		var out []string
		for _, e := range evs {
			out = append(out, e.ComputerID+"/"+e.ID)
		}
		return out
	}
	tests := []struct {
		name string
		q    telemetry.EventQuery
		keep func(telemetry.Event) bool
	}{
		{"all", telemetry.EventQuery{}, func(telemetry.Event) bool { return true }},
		{"a type", telemetry.EventQuery{Types: []string{"t1"}}, func(e telemetry.Event) bool { return e.Type == "t1" }},
		{"nothing", telemetry.EventQuery{Types: []string{"none"}}, func(telemetry.Event) bool { return false }},
		{"since a year ago", telemetry.EventQuery{Since: now.AddDate(-1, 0, 0)}, func(e telemetry.Event) bool { return !e.Time.Before(now.AddDate(-1, 0, 0)) }},
		{"until an hour ago", telemetry.EventQuery{Until: now.Add(-time.Hour)}, func(e telemetry.Event) bool { return e.Time.Before(now.Add(-time.Hour)) }},
	}
	for _, tt := range tests {
		for _, limit := range []int{7, 30, 1000} {
			t.Run(fmt.Sprintf("%s/%d", tt.name, limit), func(t *testing.T) {
				want := keys(slices.DeleteFunc(slices.Clone(all), func(e telemetry.Event) bool { return !tt.keep(e) }))
				var got []string
				q := tt.q
				q.Limit = limit
				for range 200 {
					page, err := telemetry.ListEvents(t.Context(), s, q)
					if err != nil {
						t.Fatal(err)
					}
					got = append(got, keys(page)...)
					if len(page) < limit {
						break
					}
					q.After = telemetry.CursorOf(page[len(page)-1])
				}
				if d := gocmp.Diff(want, got); d != "" {
					t.Errorf("pages (-want +got):\n%s", d)
				}
			})
		}
	}
}

// TestRetainWithinDay: age retention removes exactly the events older than
// the cut, including those of the day the cut falls in, and says how many.
func TestRetainWithinDay(t *testing.T) {
	s := open(t)
	day := time.Date(2025, 6, 10, 0, 0, 0, 0, time.UTC)
	insert(t, s,
		ev("c1", "prev", "x", day.Add(-time.Hour)),
		ev("c1", "early", "x", day.Add(time.Hour)),
		ev("c1", "cut", "x", day.Add(12*time.Hour)),
		ev("c1", "late", "x", day.Add(20*time.Hour)),
		ev("c1", "next", "x", day.Add(30*time.Hour)),
	)
	now := day.Add(12*time.Hour + 28*24*time.Hour)
	res, err := s.Retain(t.Context(), telemetry.Retention{MaxAge: 28 * 24 * time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	want := telemetry.Retained{Events: 2, Before: day.Add(12 * time.Hour)}
	if d := gocmp.Diff(want, res); d != "" {
		t.Errorf("retained (-want +got):\n%s", d)
	}
	var left []string
	err = s.ScanEvents(t.Context(), telemetry.EventQuery{}, func(e telemetry.Event) error {
		left = append(left, e.ID)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := gocmp.Diff([]string{"next", "late", "cut"}, left); d != "" {
		t.Errorf("left (-want +got):\n%s", d)
	}
	// Nothing more to remove: no mutation, nothing reported.
	res, err = s.Retain(t.Context(), telemetry.Retention{MaxAge: 28 * 24 * time.Hour}, now)
	if err != nil || res.Events != 0 {
		t.Errorf("second retain: %+v, %v", res, err)
	}
}

// TestScanStopsEarly: a scan stopped by its callback after one event of
// many returns at once, without reading the rest.
func TestScanStopsEarly(t *testing.T) {
	s := open(t)
	base := time.Now().Add(-time.Hour)
	var evs []telemetry.Event
	for i := range 200_000 {
		evs = append(evs, ev("c1", fmt.Sprint(i), "x", base.Add(time.Duration(i)*time.Millisecond)))
	}
	insert(t, s, evs...)
	stop := errors.New("stop")
	start := time.Now()
	err := s.ScanEvents(t.Context(), telemetry.EventQuery{}, func(telemetry.Event) error { return stop })
	if !errors.Is(err, stop) {
		t.Fatalf("scan: %v", err)
	}
	t.Logf("stopped after %v", time.Since(start))
	// The store is still usable.
	if n := count(t, s, telemetry.EventQuery{}); n != 200_000 {
		t.Fatalf("count %d", n)
	}
}

// TestTextIsNotSQL: text and list values reach the server as values, also
// with quotes, backslashes and NUL bytes.
func TestTextIsNotSQL(t *testing.T) {
	s := open(t)
	odd := []string{`it's`, `back\slash`, "nul\x00byte", `"; DROP TABLE events; --`, `\'`}
	for i, o := range odd {
		e := ev(o, fmt.Sprint(i), o, time.Now())
		e.Data = "x" + o + "y"
		insert(t, s, e)
	}
	for _, o := range odd {
		for name, q := range map[string]telemetry.EventQuery{
			"text":     {Text: o},
			"computer": {ComputerIDs: []string{o}},
			"type":     {Types: []string{o}},
		} {
			if n := count(t, s, q); n != 1 {
				t.Errorf("%s %q: %d events, want 1", name, o, n)
			}
		}
	}
}

// The benchmarks are telemetrytest's, as for DuckDB, so the figures
// compare:
//
//	go test -run '^$' -bench . -benchtime 20x -timeout 30m ./internal/telemetry/clickhouse/

// BenchmarkInsertEvents is sustained ingest of new events into a growing
// table, in the batch sizes the manager's group commit produces.
func BenchmarkInsertEvents(b *testing.B) {
	for _, size := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			telemetrytest.BenchInsert(b, open(b), size)
		})
	}
}

// BenchmarkTopEventTypes10M loads ten million events over 24 hours (about
// a minute on two cores, untimed) and times TopEventTypes over them.
func BenchmarkTopEventTypes10M(b *testing.B) {
	telemetrytest.BenchTopTypes(b, open(b), 10_000_000)
}
