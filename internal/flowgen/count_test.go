package flowgen

import (
	"math"
	"testing"
)

func TestParseCount(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
		ok   bool
	}{
		{"0", 0, true},
		{"1000", 1000, true},
		{"250k", 250_000, true},
		{"250K", 250_000, true},
		{"1.5M", 1_500_000, true},
		{"4M", 4_000_000, true},
		{"2G", 2e9, true},
		{"10_000_000", 1e7, true},
		{"10,000", 1e4, true},
		{" 7 ", 7, true},
		{"", 0, false},
		{"k", 0, false},
		{"-5", 0, false},
		{"1e6", 0, false}, // ambiguous next to the suffixes: say 1M
		{"0x10", 0, false},
		{"NaN", 0, false},
		{"Inf", 0, false},
		{"5m", 0, false}, // milli is not a count
		{"1MB", 0, false},
	} {
		got, err := ParseCount(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("ParseCount(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func FuzzParseCount(f *testing.F) {
	for _, s := range []string{"1M", "250k", "1.5G", "10_000", "", "-1", "1e9", "∞"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseCount(s)
		if err == nil && (v < 0 || math.IsNaN(v) || math.IsInf(v, 0)) {
			t.Fatalf("ParseCount(%q) = %v without an error", s, v)
		}
	})
}
