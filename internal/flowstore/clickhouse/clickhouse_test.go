package clickhouse_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	chgo "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/google/go-cmp/cmp"

	"github.com/yagura/yagura/internal/flowfilter"
	"github.com/yagura/yagura/internal/flowstore"
	"github.com/yagura/yagura/internal/flowstore/clickhouse"
	"github.com/yagura/yagura/internal/flowstore/flowstoretest"
	"github.com/yagura/yagura/internal/testch"
)

func TestMain(m *testing.M) { testch.Main(m) }

// open returns a store in a fresh database, closed when the test ends.
func open(tb testing.TB) *clickhouse.Store {
	tb.Helper()
	db := testch.Start(tb)
	s, err := clickhouse.Open(context.Background(), clickhouse.Config{Addr: db.Addr, Database: db.Name, Username: "default"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	flowstoretest.Run(t, func(t *testing.T) flowstore.Store { return open(t) })
}

var day0 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

func insert(t *testing.T, s flowstore.Store, rs []flowstore.Record) {
	t.Helper()
	if err := s.InsertFlows(t.Context(), rs); err != nil {
		t.Fatalf("insert %d flows: %v", len(rs), err)
	}
}

func total(t *testing.T, s flowstore.Store, q flowstore.Query) flowstore.TopRow {
	t.Helper()
	res, err := s.Top(t.Context(), flowstore.TopQuery{Query: q, By: []flowstore.Key{flowstore.KeyProto}, OrderBy: flowstore.Flows, Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	return res.Total
}

// TestOpen: the database is created on first start; opening again keeps
// the flows; errors say what failed, and a bad configuration is the
// caller's fault.
func TestOpen(t *testing.T) {
	db := testch.Start(t)
	name := "created_" + db.Name
	t.Cleanup(func() {
		// testch drops only the database it made.
		conn, err := chgo.Open(&chgo.Options{Addr: []string{db.Addr}})
		if err != nil {
			t.Errorf("drop database %s: %v", name, err)
			return
		}
		defer conn.Close()
		if err := conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	cfg := clickhouse.Config{Addr: db.Addr, Database: name}
	rs := flowstoretest.Flows(100, day0, time.Hour, 1)
	for i := range 2 {
		s, err := clickhouse.Open(t.Context(), cfg)
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		insert(t, s, rs)
		if n := total(t, s, flowstore.Query{Since: day0, Until: day0.Add(time.Hour)}).Flows; n != uint64(100*(i+1)) {
			t.Errorf("open %d: %d flows, want %d", i, n, 100*(i+1))
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}

	for _, tc := range []struct {
		name    string
		cfg     clickhouse.Config
		invalid bool
		msg     string
	}{
		{"no address", clickhouse.Config{}, true, "no server address"},
		{"database not an identifier", clickhouse.Config{Addr: db.Addr, Database: "x; DROP DATABASE y"}, true, `database name "x; DROP DATABASE y"`},
		{"no server", clickhouse.Config{Addr: "127.0.0.1:9", Database: "yagura"}, false, "clickhouse flow store: open 127.0.0.1:9"},
	} {
		_, err := clickhouse.Open(t.Context(), tc.cfg)
		if err == nil {
			t.Errorf("%s: opened", tc.name)
			continue
		}
		if errors.Is(err, flowstore.ErrInvalid) != tc.invalid {
			t.Errorf("%s: %v: ErrInvalid %v, want %v", tc.name, err, !tc.invalid, tc.invalid)
		}
		if !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: error %q does not say %q", tc.name, err, tc.msg)
		}
	}
}

// TestFilterValuesAreNotSQL: filter values reach the server as values,
// quotes and backslashes included.
func TestFilterValuesAreNotSQL(t *testing.T) {
	s := open(t)
	rs := flowstoretest.Flows(50, day0, time.Hour, 2)
	insert(t, s, rs)
	q := flowstore.Query{Since: day0, Until: day0.Add(time.Hour)}
	var tcp uint64
	for _, r := range rs {
		if r.Proto == 6 {
			tcp++
		}
	}
	for _, name := range []string{`it's`, `back\slash`, `'; DROP TABLE flows; --`, `\'`, `a?b`, `\?`} {
		quote := `"`
		if strings.Contains(name, `"`) {
			quote = `'`
		}
		f, err := flowfilter.Parse("exporter " + quote + name + quote + " or proto tcp")
		if err != nil {
			t.Fatalf("parse: %v", err)
		}
		q.Filter = f
		// No exporter has that name: the TCP flows.
		if got := total(t, s, q).Flows; got != tcp {
			t.Errorf("exporter %q or tcp: %d flows, want %d", name, got, tcp)
		}
	}
	if got := total(t, s, flowstore.Query{Since: day0, Until: day0.Add(time.Hour)}).Flows; got != 50 {
		t.Errorf("%d flows after the filters, want 50", got)
	}
}

// TestScanLargePages: listing pages through minutes holding more flows
// than a page, where a page is found by sorting times first.
func TestScanLargePages(t *testing.T) {
	s := open(t)
	// 60,000 flows in 3 minutes, a third of them in one microsecond.
	rs := flowstoretest.Flows(40_000, day0.Add(time.Hour), 3*time.Minute, 3)
	tie := flowstoretest.Flows(20_000, day0.Add(time.Hour+90*time.Second), 0, 4)
	insert(t, s, rs)
	insert(t, s, tie)
	q := flowstore.Query{Since: day0, Until: day0.Add(2 * time.Hour)}
	var n int
	var after *flowstore.Cursor
	seen := map[flowstore.Cursor]bool{}
	var last flowstore.Cursor
	for pages := 0; pages < 100; pages++ {
		got := 0
		err := s.ScanFlows(t.Context(), flowstore.ListQuery{Query: q, After: after, Limit: 1000}, func(r flowstore.Record, c flowstore.Cursor) error {
			if seen[c] {
				t.Fatalf("cursor %+v twice", c)
			}
			seen[c] = true
			if n > 0 && (c.TimeStart.After(last.TimeStart) || c.TimeStart.Equal(last.TimeStart) && c.Seq > last.Seq) {
				t.Fatalf("cursor %+v after %+v", c, last)
			}
			last = c
			got++
			n++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if got < 1000 {
			break
		}
		after = &last
	}
	if n != 60_000 {
		t.Errorf("paged through %d flows, want 60000", n)
	}
}

// TestExporterText: exporters are stored as text, as filters and Top see
// them; IPv4-mapped exporters as IPv4.
func TestExporterText(t *testing.T) {
	s := open(t)
	r := flowstoretest.Flows(1, day0, 0, 5)[0]
	r.Exporter = netip.MustParseAddr("::ffff:192.0.2.7")
	insert(t, s, []flowstore.Record{r})
	res, err := s.Top(t.Context(), flowstore.TopQuery{Query: flowstore.Query{Since: day0, Until: day0.Add(time.Hour), Filter: mustParse(t, `exporter "192.0.2.7"`)},
		By: []flowstore.Key{flowstore.KeyExporter}, OrderBy: flowstore.Bytes, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"192.0.2.7"}
	if len(res.Rows) != 1 || !cmp.Equal(res.Rows[0].Keys, want) {
		t.Errorf("top exporters: %+v, want one row of %v", res.Rows, want)
	}
}

func mustParse(t *testing.T, s string) flowfilter.Expr {
	t.Helper()
	e, err := flowfilter.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return e
}
