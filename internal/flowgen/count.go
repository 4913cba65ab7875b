package flowgen

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ParseCount parses a count or rate as `yagura flowgen` takes them: a
// decimal number with an optional SI suffix, k (thousand), M (million) or
// G (billion), and optional _ or , separators: "250k", "1.5M", "10_000_000".
func ParseCount(s string) (float64, error) {
	t := strings.NewReplacer("_", "", ",", "").Replace(strings.TrimSpace(s))
	mult := 1.0
	if t != "" {
		switch t[len(t)-1] {
		case 'k', 'K':
			mult = 1e3
		case 'M':
			mult = 1e6
		case 'G':
			mult = 1e9
		}
		if mult != 1 {
			t = t[:len(t)-1]
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || strings.ContainsAny(t, "xXpPeEiInN") {
		return 0, fmt.Errorf("%q is not a count: use digits with an optional k, M or G suffix, e.g. 250k or 1.5M", s)
	}
	return v * mult, nil
}
