package flowfilter

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestAndAll(t *testing.T) {
	p1, p2, p3 := Port{N: 1}, Port{N: 2}, Port{N: 3}
	tests := []struct {
		name string
		in   []Expr
		want Expr
	}{
		// nil, not All: a store answers an unfiltered series from its rollups.
		{"nothing", nil, nil},
		{"only nil and All", []Expr{nil, All{}, nil}, nil},
		{"one term", []Expr{nil, p1, All{}}, p1},
		{"two terms", []Expr{p1, p2}, And{[]Expr{p1, p2}}},
		{"nested And flattened", []Expr{And{[]Expr{p1, p2}}, p3}, And{[]Expr{p1, p2, p3}}},
		{"Or kept whole", []Expr{Or{[]Expr{p1, p2}}, p3}, And{[]Expr{Or{[]Expr{p1, p2}}, p3}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(AndAll(tt.in...), tt.want, exprOpts); diff != "" {
				t.Errorf("AndAll (-got +want):\n%s", diff)
			}
		})
	}
}
