package flowstore

import (
	"fmt"
	"net/netip"
	"time"
)

// MaxTopLimit is the largest TopQuery.Limit a store accepts.
const MaxTopLimit = 10000

// MaxSeriesPoints bounds the points a series may ask for (a year at 5
// minutes is about 105,000), so that a careless range cannot make a store
// allocate without bound.
const MaxSeriesPoints = 1_000_000

// Validate reports what is wrong with q, wrapping ErrInvalid.
func (q TopQuery) Validate() error {
	if err := q.Query.Validate(); err != nil {
		return err
	}
	if len(q.By) == 0 {
		return fmt.Errorf("top: no aggregation key: name at least one of srcip, dstip, srcport, dstport, proto, exporter, inif, outif, ipver: %w", ErrInvalid)
	}
	for _, k := range q.By {
		if _, err := ParseKey(string(k)); err != nil {
			return fmt.Errorf("top: %w", err)
		}
	}
	if _, err := ParseMeasure(string(q.OrderBy)); err != nil {
		return fmt.Errorf("top: order by: %w", err)
	}
	if q.Limit < 1 || q.Limit > MaxTopLimit {
		return fmt.Errorf("top: limit %d: use 1 to %d: %w", q.Limit, MaxTopLimit, ErrInvalid)
	}
	return nil
}

// Validate reports what is wrong with q, wrapping ErrInvalid.
func (q SeriesQuery) Validate() error {
	if err := q.Query.Validate(); err != nil {
		return err
	}
	if _, err := ParseMeasure(string(q.Measure)); err != nil {
		return fmt.Errorf("series: %w", err)
	}
	if q.Interval <= 0 || q.Interval%RollupInterval != 0 {
		return fmt.Errorf("series: interval %s: use a multiple of %s: %w", q.Interval, RollupInterval, ErrInvalid)
	}
	if _, n := q.Buckets(); n > MaxSeriesPoints {
		return fmt.Errorf("series: %d points of %s from %s to %s: use a longer interval or a shorter range (at most %d points): %w",
			n, q.Interval, q.Since.UTC().Format(time.RFC3339), q.Until.UTC().Format(time.RFC3339), MaxSeriesPoints, ErrInvalid)
	}
	return nil
}

// Buckets returns the first interval of the series q asks for and the
// number of intervals: Since and Until truncated to multiples of Interval
// counted from the Unix epoch (which is what SQL's integer division of
// microseconds does; time.Truncate counts from year 1 and differs for
// intervals that do not divide a day). Call it after Validate.
func (q SeriesQuery) Buckets() (start time.Time, n int) {
	iv := q.Interval.Microseconds()
	if iv <= 0 {
		return time.Time{}, 0
	}
	lo := floorDiv(q.Since.UnixMicro(), iv) * iv
	hi := floorDiv(q.Until.UnixMicro(), iv) * iv
	return time.UnixMicro(lo).UTC(), int((hi - lo) / iv)
}

// Points returns the series' intervals (see Buckets), each with its time
// and a zero value for a store to fill.
func (q SeriesQuery) Points() (start time.Time, out []Point) {
	start, n := q.Buckets()
	out = make([]Point, n)
	for i := range out {
		out[i].Time = start.Add(time.Duration(i) * q.Interval)
	}
	return start, out
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// Validate reports what is wrong with q, wrapping ErrInvalid.
func (q ListQuery) Validate() error {
	if err := q.Query.Validate(); err != nil {
		return err
	}
	if q.Limit < 0 {
		return fmt.Errorf("list flows: negative limit %d: %w", q.Limit, ErrInvalid)
	}
	return nil
}

// AddrFrom16 is the address stored as the 16 bytes b (see
// flowfilter.Addr16): IPv4-mapped addresses come back as IPv4, all zeros
// (an address the exporter did not send) as the invalid Addr.
func AddrFrom16(b []byte) netip.Addr {
	if len(b) != 16 {
		return netip.Addr{}
	}
	a := netip.AddrFrom16([16]byte(b))
	if a.IsUnspecified() {
		return netip.Addr{}
	}
	return a.Unmap()
}

// AddrText is how Top renders an address key: netip's text, IPv4 for
// IPv4-mapped addresses, "" for none.
func AddrText(b []byte) string {
	a := AddrFrom16(b)
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// ExporterText is how a record's exporter is stored: the address as text,
// "" for none.
func ExporterText(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.Unmap().String()
}

// Value is the row's measure m.
func (r TopRow) Value(m Measure) uint64 {
	switch m {
	case Packets:
		return r.Packets
	case Flows:
		return r.Flows
	}
	return r.Bytes
}
