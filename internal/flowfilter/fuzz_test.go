package flowfilter

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// addSeeds adds the filters of testdata/filters.txt and some broken ones.
func addSeeds(f *testing.F) {
	for _, c := range readFilters(f) {
		f.Add(c.filter)
	}
	for _, s := range []string{
		"", "(", ")", "not", "port", "port in [", "host in [1.2.3.4,", "net 10.0.0.0 255.0.0.0",
		"src and dst port 1 or dst or src host ::1", "exporter 'a\"b'", "bytes > 0xffffffffffffffff",
		"flags xX", "port 1 # c\n or port 2", "!(!(port 1))", "src host ::ffff:1.2.3.4",
	} {
		f.Add(s)
	}
}

// FuzzParse checks that Parse never panics and that what it accepts
// prints canonically (String parses back to the same Expr, and its String
// is stable) and compiles in both dialects with one "?" per argument.
func FuzzParse(f *testing.F) {
	addSeeds(f)
	flow := testFlows[0].Flow
	f.Fuzz(func(t *testing.T, s string) {
		e, err := Parse(s)
		if err != nil {
			se, ok := err.(*SyntaxError)
			if !ok {
				t.Fatalf("Parse(%q): error %T is not a *SyntaxError", s, err)
			}
			if se.Pos < 0 || se.Pos > len(s) || se.Col < 1 || se.Msg == "" {
				t.Fatalf("Parse(%q): bad error %#v", s, se)
			}
			return
		}
		canon := e.String()
		again, err := Parse(canon)
		if err != nil {
			t.Fatalf("Parse(%q).String() = %q, which does not parse: %v", s, canon, err)
		}
		if diff := cmp.Diff(again, e, exprOpts); diff != "" {
			t.Fatalf("Parse(%q) and Parse(%q) differ (-again +first):\n%s", s, canon, diff)
		}
		if again.String() != canon {
			t.Fatalf("String not stable: %q then %q", canon, again.String())
		}
		for _, d := range []Dialect{DuckDB, ClickHouse} {
			q, args, err := Compile(e, d, DefaultColumns())
			if err != nil {
				t.Fatalf("Compile(%q, %v): %v", s, d, err)
			}
			if n := strings.Count(q, "?"); n != len(args) {
				t.Fatalf("Compile(%q, %v): %d placeholders, %d args: %s", s, d, n, len(args), q)
			}
		}
		Match(e, flow)
	})
}

// FuzzMatchVsDuckDB checks that DuckDB selects the same test flows as
// Match for every filter that parses.
func FuzzMatchVsDuckDB(f *testing.F) {
	addSeeds(f)
	db := openTestDuckDB(f)
	f.Fuzz(func(t *testing.T, s string) {
		e, err := Parse(s)
		if err != nil {
			return
		}
		where, args, err := Compile(e, DuckDB, DefaultColumns())
		if err != nil {
			t.Fatal(err)
		}
		got, err := queryIDs(db, where, args)
		if err != nil {
			t.Fatalf("%q: WHERE %s: %v", s, where, err)
		}
		if diff := cmp.Diff(sortedIDs(got), matchIDs(e)); diff != "" {
			t.Fatalf("%q: DuckDB selects other flows than Match (-duckdb +Match):\nWHERE %s\n%s", s, where, diff)
		}
	})
}
