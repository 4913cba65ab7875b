package flowstore

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestSeriesBuckets(t *testing.T) {
	day := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name         string
		since, until time.Time
		interval     time.Duration
		start        time.Time
		n            int
	}{
		{"aligned", day, day.Add(10 * time.Minute), RollupInterval, day, 2},
		{"unaligned", day.Add(7 * time.Minute), day.Add(2*time.Hour + 3*time.Minute), 10 * time.Minute, day, 12},
		{"within one interval", day.Add(time.Minute), day.Add(4 * time.Minute), RollupInterval, day, 0},
		// 35 minutes does not divide a day: buckets count from the Unix
		// epoch, as SQL's integer division does, not from year 1.
		{"from the epoch", day, day.Add(time.Hour), 35 * time.Minute, time.UnixMicro(day.UnixMicro() / (35 * 60e6) * (35 * 60e6)).UTC(), 2},
		{"before the epoch", time.Unix(-600, 0), time.Unix(600, 0), RollupInterval, time.Unix(-600, 0).UTC(), 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := SeriesQuery{Query: Query{Since: tc.since, Until: tc.until}, Measure: Bytes, Interval: tc.interval}
			start, n := q.Buckets()
			if !start.Equal(tc.start) || n != tc.n {
				t.Errorf("Buckets() = %s, %d; want %s, %d", start, n, tc.start, tc.n)
			}
			pstart, ps := q.Points()
			if !pstart.Equal(tc.start) || len(ps) != tc.n {
				t.Errorf("Points() = %s, %d points; want %s, %d", pstart, len(ps), tc.start, tc.n)
			}
			for i, p := range ps {
				if want := tc.start.Add(time.Duration(i) * tc.interval); !p.Time.Equal(want) || p.Value != 0 {
					t.Errorf("point %d: %+v, want %s and 0", i, p, want)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	day := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	q := Query{Since: day, Until: day.Add(time.Hour)}
	for _, tc := range []struct {
		name string
		err  error
		ok   bool
	}{
		{"top", TopQuery{Query: q, By: []Key{KeySrcIP, KeyDstPort}, OrderBy: Bytes, Limit: 10}.Validate(), true},
		{"top limit max", TopQuery{Query: q, By: []Key{KeySrcIP}, OrderBy: Flows, Limit: MaxTopLimit}.Validate(), true},
		{"top no keys", TopQuery{Query: q, OrderBy: Bytes, Limit: 10}.Validate(), false},
		{"top bad key", TopQuery{Query: q, By: []Key{"port"}, OrderBy: Bytes, Limit: 10}.Validate(), false},
		{"top bad measure", TopQuery{Query: q, By: []Key{KeySrcIP}, OrderBy: "octets", Limit: 10}.Validate(), false},
		{"top limit 0", TopQuery{Query: q, By: []Key{KeySrcIP}, OrderBy: Bytes}.Validate(), false},
		{"top no range", TopQuery{By: []Key{KeySrcIP}, OrderBy: Bytes, Limit: 1}.Validate(), false},
		{"series", SeriesQuery{Query: q, Measure: Packets, Interval: time.Hour}.Validate(), true},
		{"series 4m", SeriesQuery{Query: q, Measure: Packets, Interval: 4 * time.Minute}.Validate(), false},
		{"series too long", SeriesQuery{Query: Query{Since: day, Until: day.Add(10 * 366 * 24 * time.Hour)}, Measure: Packets, Interval: RollupInterval}.Validate(), false},
		{"list", ListQuery{Query: q}.Validate(), true},
		{"list negative limit", ListQuery{Query: q, Limit: -1}.Validate(), false},
	} {
		if tc.ok && tc.err != nil {
			t.Errorf("%s: %v", tc.name, tc.err)
		}
		if !tc.ok && !errors.Is(tc.err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", tc.name, tc.err)
		}
	}
}

func TestAddrFrom16(t *testing.T) {
	for _, tc := range []struct {
		in   string // "" for 16 zero bytes
		want string
	}{
		{"192.0.2.1", "192.0.2.1"},
		{"0.0.0.0", "0.0.0.0"},
		{"2001:db8::1", "2001:db8::1"},
		{"", ""},
	} {
		b := make([]byte, 16)
		if tc.in != "" {
			a := netip.MustParseAddr(tc.in).As16()
			b = a[:]
		}
		if got := AddrText(b); got != tc.want {
			t.Errorf("AddrText(%s) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if a := AddrFrom16([]byte{1, 2, 3}); a.IsValid() {
		t.Errorf("AddrFrom16 of 3 bytes = %s, want invalid", a)
	}
	if got := ExporterText(netip.MustParseAddr("::ffff:192.0.2.9")); got != "192.0.2.9" {
		t.Errorf("ExporterText of a mapped address = %q", got)
	}
}
