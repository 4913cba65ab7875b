package cef

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func readJSON(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

// TestEscaping checks Encode and Parse against the lines in
// testdata/escaping.json, both ways.
func TestEscaping(t *testing.T) {
	var cases []struct {
		Name   string
		Record Record
		Line   string
	}
	readJSON(t, "testdata/escaping.json", &cases)
	if len(cases) == 0 {
		t.Fatal("no cases")
	}
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			if err := tc.Record.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if got := Encode(tc.Record); got != tc.Line {
				t.Errorf("Encode:\n got %s\nwant %s", got, tc.Line)
			}
			got, err := Parse(tc.Line)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(got, tc.Record, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Parse (-got +want):\n%s", diff)
			}
			// A receiver's line ending is not part of the record.
			for _, end := range []string{"\n", "\r\n"} {
				got, err := Parse(tc.Line + end)
				if err != nil {
					t.Fatalf("Parse with %q: %v", end, err)
				}
				if diff := cmp.Diff(got, tc.Record, cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("Parse with %q (-got +want):\n%s", end, diff)
				}
			}
		})
	}
}

// TestParseErrors checks that each malformed line in
// testdata/parse-errors.json is refused with the expected reason and offset.
func TestParseErrors(t *testing.T) {
	var cases []struct {
		Name   string
		Line   string
		Offset int
		Error  string
	}
	readJSON(t, "testdata/parse-errors.json", &cases)
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			_, err := Parse(tc.Line)
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse(%q) = %v, want a *ParseError", tc.Line, err)
			}
			if pe.Offset != tc.Offset {
				t.Errorf("offset = %d, want %d (%v)", pe.Offset, tc.Offset, err)
			}
			if !strings.Contains(err.Error(), tc.Error) {
				t.Errorf("error %q does not contain %q", err, tc.Error)
			}
		})
	}
}

// TestSamples parses the lines of testdata/samples.cef (the specification's
// examples, Deep Security's forms and Yagura's own) and checks that each
// survives Encode and Parse again.
func TestSamples(t *testing.T) {
	b, err := os.ReadFile("testdata/samples.cef")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i, line := range lines {
		r, err := Parse(line)
		if err != nil {
			t.Errorf("line %d: %v", i+1, err)
			continue
		}
		again, err := Parse(Encode(r))
		if err != nil {
			t.Errorf("line %d re-encoded: %v", i+1, err)
			continue
		}
		if diff := cmp.Diff(again, r, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("line %d (-got +want):\n%s", i+1, diff)
		}
	}
	want := map[int][]Extension{
		2: {{"src", "10.0.0.1"}, {"act", "blocked a |"}, {"dst", "1.1.1.1"}},
		3: {{"src", "10.0.0.1"}, {"act", `blocked a \`}, {"dst", "1.1.1.1"}},
		4: {{"src", "10.0.0.1"}, {"act", "blocked a ="}, {"dst", "1.1.1.1"}},
		5: {{"msg", "Detected a threat.\n No action needed."}},
		9: {{"cs1", ""}, {"cs2", " "}, {"cs3", "x"}},
	}
	for n, ext := range want {
		r, _ := Parse(lines[n-1])
		if diff := cmp.Diff(r.Extensions, ext); diff != "" {
			t.Errorf("line %d extensions (-got +want):\n%s", n, diff)
		}
	}
	if r, _ := Parse(lines[1]); r.Name != "detected a | in message" {
		t.Errorf("line 2 name %q", r.Name)
	}
}

func TestParseLenient(t *testing.T) {
	// Some producers escape "|" in the extension too; it means "|".
	r, err := Parse(`CEF:0|v|p|1|s|n|3|  msg=a\|b act=x`)
	if err != nil {
		t.Fatal(err)
	}
	want := []Extension{{"msg", "a|b"}, {"act", "x"}}
	if diff := cmp.Diff(r.Extensions, want); diff != "" {
		t.Errorf("(-got +want):\n%s", diff)
	}
	if v, ok := r.Get("act"); !ok || v != "x" {
		t.Errorf(`Get("act") = %q, %v`, v, ok)
	}
	if _, ok := r.Get("nope"); ok {
		t.Error(`Get("nope") found something`)
	}
}

func TestValidate(t *testing.T) {
	ok := Record{Severity: "7", Extensions: []Extension{{"cs1", "x"}}}
	tests := []struct {
		name string
		edit func(*Record)
		want string
	}{
		{"version", func(r *Record) { r.Version = 2 }, "version 2"},
		{"severity empty", func(r *Record) { r.Severity = "" }, `severity ""`},
		{"severity padded", func(r *Record) { r.Severity = "07" }, `severity "07"`},
		{"severity word", func(r *Record) { r.Severity = "Critical" }, `severity "Critical"`},
		{"key space", func(r *Record) { r.Extensions[0].Key = "a b" }, `key "a b"`},
		{"key equals", func(r *Record) { r.Extensions[0].Key = "a=b" }, `key "a=b"`},
		{"key empty", func(r *Record) { r.Extensions[0].Key = "" }, `key ""`},
		{"key long", func(r *Record) { r.Extensions[0].Key = strings.Repeat("k", 129) }, "key"},
	}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := ok
			r.Extensions = append([]Extension(nil), ok.Extensions...)
			tc.edit(&r)
			err := r.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want it to mention %q", err, tc.want)
			}
			// Even an invalid record stays on one line.
			if line := Encode(r); strings.ContainsAny(line, "\r\n") {
				t.Errorf("Encode wrote a line break: %q", line)
			}
		})
	}
	for _, s := range []string{"0", "10", "unknown", "LOW", "Medium", "high", "very-high"} {
		if !ValidSeverity(s) {
			t.Errorf("ValidSeverity(%q) = false", s)
		}
	}
}

func TestEscapeHelpers(t *testing.T) {
	if got, want := EscapeHeader("a|b\\c=d\n"), `a\|b\\c=d\n`; got != want {
		t.Errorf("EscapeHeader = %q, want %q", got, want)
	}
	if got, want := EscapeValue("a|b\\c=d\r"), `a|b\\c\=d\r`; got != want {
		t.Errorf("EscapeValue = %q, want %q", got, want)
	}
}
