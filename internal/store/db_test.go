package store

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRebindDollar(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"none", "SELECT 1", "SELECT 1"},
		{"several", "UPDATE t SET a = ?, b = ? WHERE id = ?", "UPDATE t SET a = $1, b = $2 WHERE id = $3"},
		{"more than nine", "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"},
		{"quoted", `SELECT '?', "a?b", ? FROM t WHERE x = '' AND y = ?`, `SELECT '?', "a?b", $1 FROM t WHERE x = '' AND y = $2`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := rebindDollar(tt.in); got != tt.want {
				t.Errorf("rebindDollar(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// FuzzIPs: the hand-rolled fast path must produce the JSON encoding/json
// reads back, for any strings.
func FuzzIPs(f *testing.F) {
	f.Add("192.0.2.1", "2001:db8::1")
	f.Add(`a"b\c`, "日本")
	f.Add("\x00\x7f", "\xff")
	f.Fuzz(func(t *testing.T, a, b string) {
		in := []string{a, b}
		enc := appendIPs(nil, in)
		if !json.Valid(enc) {
			t.Fatalf("appendIPs(%q) = %s, not JSON", in, enc)
		}
		got, err := decodeIPs(string(enc))
		if err != nil {
			t.Fatal(err)
		}
		// encoding/json replaces invalid UTF-8, as PostgreSQL would refuse
		// it anyway; compare with what it makes of the input.
		var want []string
		std, _ := json.Marshal(in)
		if err := json.Unmarshal(std, &want); err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(got, want); d != "" {
			t.Errorf("round trip of %q (-got +want):\n%s", in, d)
		}
	})
}
