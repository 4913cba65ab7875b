// Package telemetrytest is the conformance suite every telemetry backend
// must pass, so DuckDB and ClickHouse answer the same questions the same way.
// Only tests may import it.
package telemetrytest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/yagura/yagura/internal/telemetry"
)

// Run runs the suite. open must return an empty store, closed by the test's
// cleanup.
func Run(t *testing.T, open func(t *testing.T) telemetry.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s telemetry.Store)
	}{
		{"InsertDedups", testInsertDedups},
		{"InsertRefusesInvalid", testInsertRefusesInvalid},
		{"RoundTrip", testRoundTrip},
		{"Filters", testFilters},
		{"OrderAndPaging", testOrderAndPaging},
		{"PagingAcrossDays", testPagingAcrossDays},
		{"ScanStopsOnError", testScanStopsOnError},
		{"TopEventTypes", testTopEventTypes},
		{"RetainByAge", testRetainByAge},
		{"RetainBySize", testRetainBySize},
		{"Stats", testStats},
		{"ConcurrentInserts", testConcurrentInserts},
		{"QueryValidation", testQueryValidation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, open(t))
		})
	}
}

// base is a fixed, recent instant (retention measures against "now", so a
// fixed old date would make every test an expiry test).
var base = time.Now().UTC().Truncate(time.Hour).Add(-6 * time.Hour)

func ev(computer, id, typ, sev string, at time.Time, data string) telemetry.Event {
	return telemetry.Event{ComputerID: computer, ID: id, Type: typ, Severity: sev, Time: at, ReceivedAt: at.Add(time.Second), Data: data}
}

func insert(t *testing.T, s telemetry.Store, evs ...telemetry.Event) int {
	t.Helper()
	n, err := s.InsertEvents(t.Context(), evs)
	if err != nil {
		t.Fatalf("insert %d events: %v", len(evs), err)
	}
	return n
}

func list(t *testing.T, s telemetry.Store, q telemetry.EventQuery) []telemetry.Event {
	t.Helper()
	evs, err := telemetry.ListEvents(t.Context(), s, q)
	if err != nil {
		t.Fatalf("list %+v: %v", q, err)
	}
	return evs
}

func ids(evs []telemetry.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ComputerID + "/" + e.ID
	}
	return out
}

func count(t *testing.T, s telemetry.Store, q telemetry.EventQuery) int64 {
	t.Helper()
	n, err := s.CountEvents(t.Context(), q)
	if err != nil {
		t.Fatalf("count %+v: %v", q, err)
	}
	return n
}

func testInsertDedups(t *testing.T, s telemetry.Store) {
	batch := []telemetry.Event{
		ev("c1", "e1", "firewall", "warning", base, `{"n":1}`),
		ev("c1", "e2", "firewall", "warning", base.Add(time.Second), `{"n":2}`),
		ev("c2", "e1", "firewall", "warning", base, `{"n":3}`), // same ID, other computer: distinct
	}
	if n := insert(t, s, batch...); n != 3 {
		t.Fatalf("first insert stored %d, want 3", n)
	}
	// A resend of the whole batch (the agent lost the acknowledgement) and a
	// batch repeating an event within itself store nothing twice.
	if n := insert(t, s, batch...); n != 0 {
		t.Fatalf("resend stored %d, want 0", n)
	}
	dup := ev("c3", "e9", "system", "info", base, "")
	if n := insert(t, s, dup, dup, batch[0]); n != 1 {
		t.Fatalf("batch with repeats stored %d, want 1", n)
	}
	if got := count(t, s, telemetry.EventQuery{}); got != 4 {
		t.Fatalf("count %d, want 4", got)
	}
	if n, err := s.InsertEvents(t.Context(), nil); err != nil || n != 0 {
		t.Fatalf("empty insert: %d, %v", n, err)
	}
}

func testInsertRefusesInvalid(t *testing.T, s telemetry.Store) {
	good := ev("c1", "ok", "firewall", "info", base, "")
	for _, bad := range []telemetry.Event{
		{ComputerID: "c1", Type: "x", Severity: "info", Time: base},
		{ComputerID: "c1", ID: "a", Severity: "info", Time: base},
		{ComputerID: "c1", ID: "a", Type: "x", Severity: "info"},
	} {
		_, err := s.InsertEvents(t.Context(), []telemetry.Event{good, bad})
		if !errors.Is(err, telemetry.ErrInvalid) {
			t.Fatalf("insert %+v: %v, want ErrInvalid", bad, err)
		}
	}
	if got := count(t, s, telemetry.EventQuery{}); got != 0 {
		t.Fatalf("a refused batch stored %d events", got)
	}
}

func testRoundTrip(t *testing.T, s telemetry.Store) {
	want := []telemetry.Event{
		{ComputerID: "0192f0c1-aaaa", ID: "0192f0c1-e1", Type: "firewall", Severity: "critical",
			Time: base.Add(123456 * time.Microsecond), ReceivedAt: base.Add(2 * time.Second),
			Data: `{"src":"203.0.113.5","msg":"ポート 22 への接続を拒否しました","q":"a\"b\\c"}`},
		{ComputerID: "", ID: "m1", Type: "notification-failed", Severity: "error", Time: base, ReceivedAt: base, Data: ""},
	}
	insert(t, s, want...)
	got := list(t, s, telemetry.EventQuery{})
	opt := cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })
	if d := cmp.Diff(want, got, opt); d != "" {
		t.Fatalf("events changed on the way through (-want +got):\n%s", d)
	}
	for _, e := range got {
		if e.Time.Location() != time.UTC {
			t.Fatalf("time %v not in UTC", e.Time)
		}
	}
}

func testFilters(t *testing.T, s telemetry.Store) {
	insert(t, s,
		ev("c1", "1", "firewall", "warning", base, `{"src":"203.0.113.5","action":"deny"}`),
		ev("c1", "2", "firewall", "info", base.Add(time.Minute), `{"src":"198.51.100.7","action":"allow"}`),
		ev("c2", "3", "agent-start", "info", base.Add(2*time.Minute), `{"version":"1.0"}`),
		ev("c2", "4", "policy-applied", "info", base.Add(3*time.Minute), `{"note":"ポリシーを適用しました"}`),
		ev("c3", "5", "events-dropped", "warning", base.Add(4*time.Minute), `{"dropped":12}`),
		ev("c3", "6", "Firewall-Legacy", "critical", base.Add(5*time.Minute), ""),
	)
	tests := []struct {
		name string
		q    telemetry.EventQuery
		want []string
	}{
		{"all", telemetry.EventQuery{}, []string{"c3/6", "c3/5", "c2/4", "c2/3", "c1/2", "c1/1"}},
		{"since", telemetry.EventQuery{Since: base.Add(4 * time.Minute)}, []string{"c3/6", "c3/5"}},
		{"until is exclusive", telemetry.EventQuery{Until: base.Add(time.Minute)}, []string{"c1/1"}},
		{"range", telemetry.EventQuery{Since: base.Add(time.Minute), Until: base.Add(3 * time.Minute)}, []string{"c2/3", "c1/2"}},
		{"computers", telemetry.EventQuery{ComputerIDs: []string{"c1", "c3"}}, []string{"c3/6", "c3/5", "c1/2", "c1/1"}},
		{"types", telemetry.EventQuery{Types: []string{"firewall", "agent-start"}}, []string{"c2/3", "c1/2", "c1/1"}},
		{"severities", telemetry.EventQuery{Severities: []string{"warning", "critical"}}, []string{"c3/6", "c3/5", "c1/1"}},
		{"text in data", telemetry.EventQuery{Text: "203.0.113"}, []string{"c1/1"}},
		{"text ignores ASCII case", telemetry.EventQuery{Text: "DENY"}, []string{"c1/1"}},
		{"text in type", telemetry.EventQuery{Text: "firewall"}, []string{"c3/6", "c1/2", "c1/1"}},
		{"text in Japanese", telemetry.EventQuery{Text: "ポリシー"}, []string{"c2/4"}},
		{"text with SQL", telemetry.EventQuery{Text: "' OR 1=1 --"}, nil},
		{"text with wildcards", telemetry.EventQuery{Text: "%"}, nil},
		{"text with underscore", telemetry.EventQuery{Text: "_"}, nil},
		{"combined", telemetry.EventQuery{ComputerIDs: []string{"c1"}, Types: []string{"firewall"}, Severities: []string{"info"}, Since: base}, []string{"c1/2"}},
		{"limit", telemetry.EventQuery{Limit: 2}, []string{"c3/6", "c3/5"}},
		{"nothing", telemetry.EventQuery{ComputerIDs: []string{"nope"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ids(list(t, s, tt.q))
			if len(got) == 0 {
				got = nil
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Fatalf("(-want +got):\n%s", d)
			}
			q := tt.q
			q.Limit = 0
			if n := count(t, s, q); tt.q.Limit == 0 && n != int64(len(tt.want)) {
				t.Fatalf("count %d, want %d", n, len(tt.want))
			}
		})
	}
}

func testOrderAndPaging(t *testing.T, s telemetry.Store) {
	// Ties in time are ordered by computer, then ID, so pages never repeat or
	// skip an event.
	var all []telemetry.Event
	for i := range 50 {
		at := base.Add(time.Duration(i/5) * time.Second)
		all = append(all, ev(fmt.Sprintf("c%d", i%3), fmt.Sprintf("e%03d", i), "firewall", "info", at, ""))
	}
	insert(t, s, all...)
	want := slices.Clone(all)
	slices.SortFunc(want, func(a, b telemetry.Event) int {
		if c := b.Time.Compare(a.Time); c != 0 {
			return c
		}
		if a.ComputerID != b.ComputerID {
			if a.ComputerID < b.ComputerID {
				return -1
			}
			return 1
		}
		if a.ID < b.ID {
			return -1
		}
		return 1
	})
	if d := cmp.Diff(ids(want), ids(list(t, s, telemetry.EventQuery{}))); d != "" {
		t.Fatalf("order (-want +got):\n%s", d)
	}
	var paged []telemetry.Event
	q := telemetry.EventQuery{Limit: 7}
	for range 20 {
		page := list(t, s, q)
		paged = append(paged, page...)
		if len(page) < q.Limit {
			break
		}
		q.After = telemetry.CursorOf(page[len(page)-1])
	}
	if d := cmp.Diff(ids(want), ids(paged)); d != "" {
		t.Fatalf("pages (-want +got):\n%s", d)
	}
}

func testScanStopsOnError(t *testing.T, s telemetry.Store) {
	for i := range 10 {
		insert(t, s, ev("c1", fmt.Sprint(i), "firewall", "info", base.Add(time.Duration(i)*time.Second), ""))
	}
	stop := errors.New("enough")
	seen := 0
	err := s.ScanEvents(t.Context(), telemetry.EventQuery{}, func(telemetry.Event) error {
		seen++
		if seen == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || seen != 3 {
		t.Fatalf("scan returned %v after %d events, want the callback's error after 3", err, seen)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.ScanEvents(ctx, telemetry.EventQuery{}, func(telemetry.Event) error { return nil }); err == nil {
		t.Fatal("scan with a cancelled context succeeded")
	}
}

func testTopEventTypes(t *testing.T, s telemetry.Store) {
	var evs []telemetry.Event
	n := 0
	add := func(typ string, k int, at time.Time) {
		for range k {
			n++
			evs = append(evs, ev("c1", fmt.Sprint(n), typ, "info", at, ""))
		}
	}
	add("firewall", 7, base)
	add("agent-start", 3, base)
	add("policy-applied", 3, base)
	add("events-dropped", 1, base)
	add("old", 50, base.Add(-48*time.Hour))
	insert(t, s, evs...)
	got, err := s.TopEventTypes(t.Context(), telemetry.EventQuery{Since: base.Add(-24 * time.Hour)}, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := []telemetry.TypeCount{{Type: "firewall", Count: 7}, {Type: "agent-start", Count: 3}, {Type: "policy-applied", Count: 3}}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("top types (-want +got):\n%s", d)
	}
	got, err = s.TopEventTypes(t.Context(), telemetry.EventQuery{Severities: []string{"critical"}}, 10)
	if err != nil || len(got) != 0 {
		t.Fatalf("top types of nothing: %v, %v", got, err)
	}
	if _, err := s.TopEventTypes(t.Context(), telemetry.EventQuery{}, -1); !errors.Is(err, telemetry.ErrInvalid) {
		t.Fatalf("negative n: %v, want ErrInvalid", err)
	}
}

func testRetainByAge(t *testing.T, s telemetry.Store) {
	now := time.Now().UTC()
	insert(t, s,
		ev("c1", "ancient", "firewall", "info", now.Add(-40*24*time.Hour), ""),
		ev("c1", "old", "firewall", "info", now.Add(-30*24*time.Hour), ""),
		ev("c1", "recent", "firewall", "info", now.Add(-27*24*time.Hour), ""),
		ev("c1", "new", "firewall", "info", now.Add(-time.Hour), ""),
	)
	res, err := s.Retain(t.Context(), telemetry.Retention{MaxAge: 28 * 24 * time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	// Backends may drop whole days, so an event up to a day past the cut
	// may survive; none younger than the cut may go.
	got := ids(list(t, s, telemetry.EventQuery{}))
	if !slices.Contains(got, "c1/new") || !slices.Contains(got, "c1/recent") {
		t.Fatalf("retention by age dropped young events: left %v", got)
	}
	if slices.Contains(got, "c1/ancient") || slices.Contains(got, "c1/old") {
		t.Fatalf("retention by age kept old events: %v", got)
	}
	if res.Events != -1 && res.Events != 2 {
		t.Fatalf("retain reported %d removed, want 2", res.Events)
	}
	// A zero retention keeps everything.
	if _, err := s.Retain(t.Context(), telemetry.Retention{}, now); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, telemetry.EventQuery{}); n != 2 {
		t.Fatalf("zero retention removed events: %d left", n)
	}
	// Removed events can be stored again (the dedup state went with them).
	if n := insert(t, s, ev("c1", "old", "firewall", "info", now.Add(-time.Minute), "")); n != 1 {
		t.Fatalf("re-inserting a removed ID stored %d", n)
	}
}

func testRetainBySize(t *testing.T, s telemetry.Store) {
	now := time.Now().UTC()
	// Ten days of events with incompressible-ish data, oldest day first.
	payload := make([]byte, 200)
	for day := 10; day >= 1; day-- {
		var evs []telemetry.Event
		for i := range 2000 {
			for j := range payload {
				payload[j] = byte('a' + (i*7+j*13+day)%26)
			}
			evs = append(evs, ev("c1", fmt.Sprintf("d%d-%d", day, i), "firewall", "info",
				now.Add(-time.Duration(day)*24*time.Hour).Add(time.Duration(i)*time.Second), `{"p":"`+string(payload)+`"}`))
		}
		insert(t, s, evs...)
	}
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Bytes <= 0 {
		t.Fatalf("stats report %d bytes for 20,000 events", st.Bytes)
	}
	if _, err := s.Retain(t.Context(), telemetry.Retention{MaxBytes: st.Bytes / 2}, now); err != nil {
		t.Fatal(err)
	}
	after, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if after.Bytes > st.Bytes/2 {
		t.Fatalf("size retention left %d bytes, limit %d", after.Bytes, st.Bytes/2)
	}
	if after.Events == 0 || after.Events >= st.Events {
		t.Fatalf("size retention left %d of %d events; want some but not all", after.Events, st.Events)
	}
	// The oldest go first: the newest day is intact.
	if n := count(t, s, telemetry.EventQuery{Since: now.Add(-24 * time.Hour)}); n != 2000 {
		t.Fatalf("newest day has %d events after size retention, want 2000", n)
	}
	if n := count(t, s, telemetry.EventQuery{Until: now.Add(-9 * 24 * time.Hour)}); n != 0 {
		t.Fatalf("oldest day kept %d events while newer ones were dropped", n)
	}
}

func testStats(t *testing.T, s telemetry.Store) {
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Events != 0 || st.Backend == "" {
		t.Fatalf("empty store stats: %+v", st)
	}
	insert(t, s, ev("c1", "a", "x", "info", base, ""), ev("c1", "b", "x", "info", base.Add(time.Hour), ""))
	st, err = s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Events != 2 || !st.Oldest.Equal(base) || !st.Newest.Equal(base.Add(time.Hour)) {
		t.Fatalf("stats %+v, want 2 events from %v to %v", st, base, base.Add(time.Hour))
	}
}

func testConcurrentInserts(t *testing.T, s telemetry.Store) {
	// Eight writers, each resending its batches once: every event is stored
	// exactly once.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for b := range 5 {
				var evs []telemetry.Event
				for i := range 200 {
					evs = append(evs, ev(fmt.Sprintf("c%d", w), fmt.Sprintf("%d-%d", b, i), "firewall", "info", base.Add(time.Duration(b*200+i)*time.Millisecond), ""))
				}
				for range 2 {
					if _, err := s.InsertEvents(context.Background(), evs); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := count(t, s, telemetry.EventQuery{}); n != 8*5*200 {
		t.Fatalf("count %d, want %d", n, 8*5*200)
	}
}

func testQueryValidation(t *testing.T, s telemetry.Store) {
	for _, q := range []telemetry.EventQuery{
		{Limit: -1},
		{Since: base, Until: base.Add(-time.Second)},
	} {
		err := s.ScanEvents(t.Context(), q, func(telemetry.Event) error { return nil })
		if !errors.Is(err, telemetry.ErrInvalid) {
			t.Fatalf("scan %+v: %v, want ErrInvalid", q, err)
		}
	}
}

// testPagingAcrossDays: pages and a full scan run newest first across day
// boundaries (backends may store each day apart).
func testPagingAcrossDays(t *testing.T, s telemetry.Store) {
	day := time.Now().UTC().Truncate(24 * time.Hour)
	var want []string
	for d := range 5 {
		for i := range 4 {
			// Newest first: the latest day first, and within a day the
			// latest event (23:59:5x) first.
			at := day.Add(-time.Duration(d) * 24 * time.Hour).Add(-time.Duration(i+1) * time.Second)
			e := ev("c1", fmt.Sprintf("d%d-%d", d, i), "firewall", "info", at, "")
			insert(t, s, e)
			want = append(want, "c1/"+e.ID)
		}
	}
	if d := cmp.Diff(want, ids(list(t, s, telemetry.EventQuery{}))); d != "" {
		t.Fatalf("full scan (-want +got):\n%s", d)
	}
	for _, size := range []int{1, 3, 4, 7} {
		var got []telemetry.Event
		q := telemetry.EventQuery{Limit: size}
		for range 30 {
			page := list(t, s, q)
			got = append(got, page...)
			if len(page) < size {
				break
			}
			q.After = telemetry.CursorOf(page[len(page)-1])
		}
		if d := cmp.Diff(want, ids(got)); d != "" {
			t.Fatalf("pages of %d (-want +got):\n%s", size, d)
		}
	}
}
