// Package flowstore provides the store for network flow records: raw flows
// partitioned by time, 5-minute rollups for long-range charts, top-N
// statistics, time series, a newest-first listing, and retention by age and
// size. It is the flow half of the telemetry store (internal/telemetry holds
// events); the two share the engines (DuckDB embedded, ClickHouse at scale)
// but not tables, because flows arrive a thousand times faster and are
// never deduplicated.
//
// Filters are flowfilter expressions compiled to parameterised SQL; no
// user text is ever pasted into a query.
package flowstore

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/yagura/yagura/internal/flowdecode"
	"github.com/yagura/yagura/internal/flowfilter"
)

// ErrInvalid reports an argument the store refuses (an unknown aggregation
// key, a negative limit, an interval that is not a multiple of 5 minutes).
// Errors wrapping it are the caller's fault.
var ErrInvalid = errors.New("invalid argument")

// RollupInterval is the granularity of the rollups and of a profile, as in
// Flowmon and nfsen.
const RollupInterval = 5 * time.Minute

// Record is one stored flow. Bytes and Packets are already multiplied by
// SamplingRate (1 when unsampled); the exported values are Bytes /
// SamplingRate, exactly, because the product is stored.
type Record struct {
	TimeStart, TimeEnd time.Time // UTC, microsecond precision in the store
	Exporter           netip.Addr
	InIf, OutIf        uint32
	IPVersion          uint8 // 4 or 6
	SrcAddr, DstAddr   netip.Addr
	SrcPort, DstPort   uint16
	Proto              uint8
	TCPFlags           uint8
	Bytes, Packets     uint64
	SamplingRate       uint32 // ≥ 1
}

// RawBytes is the byte count the exporter sent.
func (r Record) RawBytes() uint64 { return r.Bytes / uint64(max(r.SamplingRate, 1)) }

// RawPackets is the packet count the exporter sent.
func (r Record) RawPackets() uint64 { return r.Packets / uint64(max(r.SamplingRate, 1)) }

// CommunityID is the flow's Community ID v1 (seed 0). It is computed from
// the 5-tuple rather than stored: it costs a SHA-1 per flow, which the
// collector cannot afford at a million flows a second, and it is the same
// every time.
func (r Record) CommunityID() string {
	return flowdecode.CommunityID(r.SrcAddr, r.DstAddr, r.Proto, r.SrcPort, r.DstPort)
}

// Key is what a top-N statistic aggregates by.
type Key string

// Aggregation keys. The names are Flowmon's (and nfdump's) where they have
// one.
const (
	KeySrcIP    Key = "srcip"
	KeyDstIP    Key = "dstip"
	KeySrcPort  Key = "srcport"
	KeyDstPort  Key = "dstport"
	KeyProto    Key = "proto"
	KeyExporter Key = "exporter"
	KeyInIf     Key = "inif"
	KeyOutIf    Key = "outif"
	KeyIPVer    Key = "ipver"
)

// Keys lists every aggregation key, in documentation order.
func Keys() []Key {
	return []Key{KeySrcIP, KeyDstIP, KeySrcPort, KeyDstPort, KeyProto, KeyExporter, KeyInIf, KeyOutIf, KeyIPVer}
}

// ParseKey returns the key named s.
func ParseKey(s string) (Key, error) {
	for _, k := range Keys() {
		if string(k) == s {
			return k, nil
		}
	}
	return "", fmt.Errorf("aggregation key %q: use one of srcip, dstip, srcport, dstport, proto, exporter, inif, outif, ipver: %w", s, ErrInvalid)
}

// Measure is what a statistic orders by or a series counts.
type Measure string

// Measures.
const (
	Bytes   Measure = "bytes"
	Packets Measure = "packets"
	Flows   Measure = "flows"
)

// ParseMeasure returns the measure named s.
func ParseMeasure(s string) (Measure, error) {
	switch m := Measure(s); m {
	case Bytes, Packets, Flows:
		return m, nil
	}
	return "", fmt.Errorf("measure %q: use bytes, packets or flows: %w", s, ErrInvalid)
}

// Query selects flows: those whose TimeStart is in [Since, Until) and that
// match Filter (nil: all). It is the part every operation shares.
type Query struct {
	Since, Until time.Time
	Filter       flowfilter.Expr
}

// Unfiltered reports whether q selects every flow in its time range: no
// filter, or one that matches everything. Such a series is answered from
// the rollups, which outlive raw flows.
func (q Query) Unfiltered() bool {
	if q.Filter == nil {
		return true
	}
	_, all := q.Filter.(flowfilter.All)
	return all
}

// Validate reports what is wrong with q.
func (q Query) Validate() error {
	if q.Since.IsZero() || q.Until.IsZero() {
		return fmt.Errorf("flow query: since and until are required: %w", ErrInvalid)
	}
	if !q.Until.After(q.Since) {
		return fmt.Errorf("flow query: until %s is not after since %s: %w", q.Until.Format(time.RFC3339), q.Since.Format(time.RFC3339), ErrInvalid)
	}
	return nil
}

// TopQuery asks for the Limit largest groups of flows by OrderBy, grouped by
// the keys in By (at least one).
type TopQuery struct {
	Query
	By      []Key
	OrderBy Measure
	Limit   int // 1..10000
}

// TopRow is one group of a top-N statistic. Keys holds the group's value
// for each key of TopQuery.By, in order, as text: addresses as netip
// strings, numbers in decimal, the exporter as stored.
type TopRow struct {
	Keys      []string  `json:"keys"`
	Bytes     uint64    `json:"bytes"`
	Packets   uint64    `json:"packets"`
	Flows     uint64    `json:"flows"`
	FirstSeen time.Time `json:"first_seen"` // earliest TimeStart in the group
	LastSeen  time.Time `json:"last_seen"`  // latest TimeEnd in the group
}

// TopResult is a top-N statistic plus the totals over all flows the query
// selected, so a client can show each row's share.
type TopResult struct {
	Rows  []TopRow `json:"rows"`
	Total TopRow   `json:"total"` // Keys is nil
}

// SeriesQuery asks for Measure per Interval over [Since, Until), one value
// per interval starting at Since truncated to Interval. Proto 0 counts all
// protocols; otherwise only that IP protocol number. Intervals are
// multiples of RollupInterval, and Since/Until are truncated to them.
type SeriesQuery struct {
	Query
	Measure  Measure
	Interval time.Duration
	Proto    uint8
}

// Point is one interval of a series.
type Point struct {
	Time  time.Time `json:"time"` // start of the interval
	Value uint64    `json:"value"`
}

// ListQuery asks for raw flows, newest TimeStart first. After continues a
// listing after the last record of the previous page.
type ListQuery struct {
	Query
	After *Cursor
	Limit int // 0: no limit
}

// Cursor is a position in a listing. It is opaque to clients (the API
// encodes it).
type Cursor struct {
	TimeStart time.Time
	// Seq breaks ties between flows that started in the same microsecond;
	// backends give each stored flow a sequence number.
	Seq uint64
}

// Retention says how much to keep. Zero fields keep everything.
type Retention struct {
	MaxAge   time.Duration
	MaxBytes int64
	// RollupMaxAge is how long the 5-minute rollups are kept, apart from
	// the raw flows: they take a few hundred bytes per interval and key
	// where raw flows take gigabytes, and long-range charts (a year of
	// traffic, as Flowmon and nfsen draw) need them long after the flows
	// are gone. A series without a filter over a range whose raw flows
	// have expired is still answered from them. MaxBytes drops only raw
	// flows (oldest first), though the size it compares includes the
	// rollups.
	RollupMaxAge time.Duration
}

// Stats describes what a store holds.
type Stats struct {
	Backend string    `json:"backend"`
	Flows   int64     `json:"flows"`
	Bytes   int64     `json:"bytes"` // on disk, as the engine reports it
	Oldest  time.Time `json:"oldest"`
	Newest  time.Time `json:"newest"`
}

// Store is a flow backend. Implementations are safe for concurrent use, and
// InsertFlows may be called from several goroutines at once (each collector
// worker writes its own batches).
type Store interface {
	// InsertFlows stores flows and their rollups. When it returns nil they
	// are durable and visible to queries.
	InsertFlows(ctx context.Context, flows []Record) error
	// Top returns a top-N statistic.
	Top(ctx context.Context, q TopQuery) (TopResult, error)
	// Series returns one point per interval, zeros included. A query
	// without a filter is answered from the rollups.
	Series(ctx context.Context, q SeriesQuery) ([]Point, error)
	// ScanFlows calls fn for each flow q selects, newest TimeStart first,
	// without holding them all in memory; fn gets each record's cursor, to
	// continue after it. An error from fn stops the scan and is returned.
	ScanFlows(ctx context.Context, q ListQuery, fn func(Record, Cursor) error) error
	// Retain removes what r does not keep, measured against now.
	Retain(ctx context.Context, r Retention, now time.Time) error
	Stats(ctx context.Context) (Stats, error)
	Close() error
}
