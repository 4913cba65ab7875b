package flowstoretest

import (
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/flowfilter"

	"github.com/yagura/yagura/internal/flowstore"
)

// BenchDay is the first day of benchmark data.
var BenchDay = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

// BenchFlows is how many flows the top-N benchmarks load:
// YAGURA_BENCH_FLOWS, or def when unset.
func BenchFlows(tb testing.TB, def int) int {
	tb.Helper()
	v := os.Getenv("YAGURA_BENCH_FLOWS")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		tb.Fatalf("YAGURA_BENCH_FLOWS=%q: want a positive number of flows", v)
	}
	return n
}

// BenchInsert measures InsertFlows from writers goroutines at once, each
// inserting batches of batch flows (generated before the timer starts),
// and reports flows/s. Each of the b.N iterations is one batch per
// writer.
func BenchInsert(b *testing.B, s flowstore.Store, writers, batch int) {
	b.Helper()
	// Two batches per writer, alternated: the store sees varied data
	// without the benchmark holding b.N batches in memory.
	const ring = 2
	data := make([][ring][]flowstore.Record, writers)
	for w := range data {
		for i := range ring {
			data[w][i] = Flows(batch, BenchDay.Add(time.Duration(w*ring+i)*time.Minute), time.Minute, uint64(w*ring+i))
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	b.ResetTimer()
	for w := range writers {
		wg.Go(func() {
			for i := range b.N {
				if err := s.InsertFlows(b.Context(), data[w][i%ring]); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N*writers*batch)/b.Elapsed().Seconds(), "flows/s")
}

// Load inserts n flows made by Flows spread over [from, from+span), in
// batches of 100,000 from two writers, and logs the rate. Backends with a
// faster bulk path (INSERT … SELECT in SQL) use that for large n instead.
func Load(tb testing.TB, s flowstore.Store, n int, from time.Time, span time.Duration) {
	tb.Helper()
	const batch = 100_000
	start := time.Now()
	batches := (n + batch - 1) / batch
	step := span / time.Duration(max(batches, 1))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	next := make(chan int)
	for range 2 {
		wg.Go(func() {
			for i := range next {
				size := min(batch, n-i*batch)
				if err := s.InsertFlows(tb.Context(), Flows(size, from.Add(time.Duration(i)*step), step, uint64(i))); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
				}
			}
		})
	}
	for i := range batches {
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		tb.Fatalf("load %d flows: %v", n, firstErr)
	}
	el := time.Since(start)
	tb.Logf("loaded %d flows in %v (%.0f flows/s)", n, el.Round(time.Millisecond), float64(n)/el.Seconds())
}

// BenchTop times the top 10 source addresses by bytes over [since,
// until), which must hold flows flows, of the flows filter matches (nil:
// all of them), and reports ms/top.
func BenchTop(b *testing.B, s flowstore.Store, since, until time.Time, flows int64, filter flowfilter.Expr) {
	b.Helper()
	q := flowstore.TopQuery{
		Query:   flowstore.Query{Since: since, Until: until, Filter: filter},
		By:      []flowstore.Key{flowstore.KeySrcIP},
		OrderBy: flowstore.Bytes,
		Limit:   10,
	}
	// Once untimed, to check the answer and warm the caches.
	res, err := s.Top(b.Context(), q)
	if err != nil {
		b.Fatal(err)
	}
	if int64(res.Total.Flows) != flows || len(res.Rows) != 10 {
		b.Fatalf("top over the benchmark range: %d rows, %d flows in total, want 10 rows and %d flows", len(res.Rows), res.Total.Flows, flows)
	}
	b.Logf("top source %s: %d bytes in %d flows", res.Rows[0].Keys[0], res.Rows[0].Bytes, res.Rows[0].Flows)
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Top(b.Context(), q); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/top")
}
