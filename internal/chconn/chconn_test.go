package chconn

import (
	"context"
	"strings"
	"testing"
)

func TestValidDatabase(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"default", true},
		{"yagura_flows", true},
		{"_x9", true},
		{strings.Repeat("a", 64), true},
		{"", false},
		{strings.Repeat("a", 65), false},
		{"9lives", false},
		{"x; DROP DATABASE y", false},
		{"flows-1", false},
		{"データ", false},
	}
	for _, tt := range tests {
		if got := ValidDatabase(tt.name); got != tt.want {
			t.Errorf("ValidDatabase(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestOpenRefusesBadName checks that Open itself never puts a name that is
// not an identifier into CREATE DATABASE, whatever its caller checked.
func TestOpenRefusesBadName(t *testing.T) {
	_, err := Open(context.Background(), Options{Addr: "127.0.0.1:1", Database: "x; DROP DATABASE y"})
	if err == nil || !strings.Contains(err.Error(), "not a plain identifier") {
		t.Errorf("Open = %v, want the name refused", err)
	}
}
