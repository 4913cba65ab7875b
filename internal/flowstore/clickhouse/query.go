package clickhouse

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/yagura/yagura/internal/flowfilter"
	"github.com/yagura/yagura/internal/flowstore"
)

// where returns the conditions selecting the raw flows that started in
// [sinceUS, untilUS) and match f, with their arguments. The day and minute
// conditions are what let the server skip partitions and granules: it
// cannot derive them from time_start. The driver binds arguments by
// quoting them into the query; no caller's text is pasted in.
func where(sinceUS, untilUS int64, f flowfilter.Expr) (string, []any, error) {
	last := untilUS - 1
	w := " WHERE day >= ? AND day <= ? AND minute >= ? AND minute <= ? AND time_start >= ? AND time_start < ?"
	args := []any{dayOf(sinceUS), dayOf(last), minuteOf(sinceUS), minuteOf(last), sinceUS, untilUS}
	if f != nil {
		cond, fargs, err := flowfilter.Compile(f, flowfilter.ClickHouse, flowfilter.DefaultColumns())
		if err != nil {
			return "", nil, fmt.Errorf("filter: %w: %w", err, flowstore.ErrInvalid)
		}
		w += " AND " + cond
		args = append(args, fargs...)
	}
	return w, args, nil
}

// and adds a condition with its arguments to a WHERE clause.
func and(w string, args []any, cond string, condArgs ...any) (string, []any) {
	return w + " AND " + cond, append(slices.Clip(args), condArgs...)
}

// keyKind is how a key's column is scanned and rendered.
type keyKind uint8

const (
	kindAddr   keyKind = iota // FixedString(16), rendered by flowstore.AddrText
	kindString                // String, as stored
	kindUint8
	kindUint16
	kindUint32
)

// keyColumn is where an aggregation key is stored.
func keyColumn(k flowstore.Key) (string, keyKind) {
	switch k {
	case flowstore.KeySrcIP:
		return "src_addr", kindAddr
	case flowstore.KeyDstIP:
		return "dst_addr", kindAddr
	case flowstore.KeySrcPort:
		return "src_port", kindUint16
	case flowstore.KeyDstPort:
		return "dst_port", kindUint16
	case flowstore.KeyProto:
		return "proto", kindUint8
	case flowstore.KeyExporter:
		return "exporter", kindString
	case flowstore.KeyInIf:
		return "in_if", kindUint32
	case flowstore.KeyOutIf:
		return "out_if", kindUint32
	case flowstore.KeyIPVer:
		return "ip_version", kindUint8
	}
	return "", 0 // Validate refused it
}

// keyDest is a scan destination for a key column and its text.
type keyDest struct {
	kind keyKind
	s    string
	u8   uint8
	u16  uint16
	u32  uint32
}

func (d *keyDest) ptr() any {
	switch d.kind {
	case kindAddr, kindString:
		return &d.s
	case kindUint8:
		return &d.u8
	case kindUint16:
		return &d.u16
	}
	return &d.u32
}

func (d *keyDest) text() string {
	switch d.kind {
	case kindAddr:
		return flowstore.AddrText([]byte(d.s))
	case kindString:
		return d.s
	case kindUint8:
		return strconv.FormatUint(uint64(d.u8), 10)
	case kindUint16:
		return strconv.FormatUint(uint64(d.u16), 10)
	}
	return strconv.FormatUint(uint64(d.u32), 10)
}

// measureAlias names a measure's aggregate in Top's query. The aliases
// differ from the columns: ClickHouse aliases are visible in the whole
// query, so "sum(bytes) AS bytes" would change what a filter on bytes
// means.
func measureAlias(m flowstore.Measure) string {
	switch m {
	case flowstore.Packets:
		return "s_packets"
	case flowstore.Flows:
		return "s_flows"
	}
	return "s_bytes"
}

// Top returns a top-N statistic over the raw flows, with the totals of
// every flow the query selects from the same scan (WITH TOTALS). Groups
// with the same measure are ordered by their keys: numbers numerically,
// addresses by their 16 stored bytes, exporters as strings.
func (s *Store) Top(ctx context.Context, q flowstore.TopQuery) (flowstore.TopResult, error) {
	var res flowstore.TopResult
	if err := q.Validate(); err != nil {
		return res, fmt.Errorf("clickhouse flow store: %w", err)
	}
	w, args, err := where(q.Since.UnixMicro(), q.Until.UnixMicro(), q.Filter)
	if err != nil {
		return res, fmt.Errorf("clickhouse flow store: top: %w", err)
	}
	cols := make([]string, len(q.By))
	dests := make([]keyDest, len(q.By))
	for i, k := range q.By {
		cols[i], dests[i].kind = keyColumn(k)
	}
	keys := strings.Join(cols, ", ")
	query := "SELECT " + keys + ", sum(bytes) AS s_bytes, sum(packets) AS s_packets, count() AS s_flows, min(time_start), max(time_end)" +
		" FROM flows" + w + " GROUP BY " + keys + " WITH TOTALS ORDER BY " + measureAlias(q.OrderBy) + " DESC, " + keys + " LIMIT ?"
	rows, err := s.conn.Query(ctx, query, append(args, q.Limit)...)
	if err != nil {
		return res, fmt.Errorf("clickhouse flow store: top: %w", err)
	}
	defer rows.Close()
	var first, last int64
	scan := make([]any, 0, len(dests)+5)
	for i := range dests {
		scan = append(scan, dests[i].ptr())
	}
	row := flowstore.TopRow{}
	scan = append(scan, &row.Bytes, &row.Packets, &row.Flows, &first, &last)
	for rows.Next() {
		if err := rows.Scan(scan...); err != nil {
			return res, fmt.Errorf("clickhouse flow store: top: %w", err)
		}
		r := row
		r.Keys = make([]string, len(dests))
		for i := range dests {
			r.Keys[i] = dests[i].text()
		}
		r.FirstSeen, r.LastSeen = time.UnixMicro(first).UTC(), time.UnixMicro(last).UTC()
		res.Rows = append(res.Rows, r)
	}
	if err := rows.Err(); err != nil {
		return res, fmt.Errorf("clickhouse flow store: top: %w", err)
	}
	switch err := rows.Totals(scan...); {
	case errors.Is(err, sql.ErrNoRows):
		// No flow selected: the server sends no totals.
	case err != nil:
		return res, fmt.Errorf("clickhouse flow store: top: totals: %w", err)
	case row.Flows > 0:
		res.Total = flowstore.TopRow{Bytes: row.Bytes, Packets: row.Packets, Flows: row.Flows,
			FirstSeen: time.UnixMicro(first).UTC(), LastSeen: time.UnixMicro(last).UTC()}
	}
	return res, nil
}

// Series returns one point per interval, zeros included: from the
// rollups without a filter (so a chart reaches back as far as they are
// kept), from the raw flows with one. Both are summed per 5 minutes (the
// raw flows per minute) and folded into intervals here, so the two agree
// wherever both are kept.
func (s *Store) Series(ctx context.Context, q flowstore.SeriesQuery) ([]flowstore.Point, error) {
	if err := q.Validate(); err != nil {
		return nil, fmt.Errorf("clickhouse flow store: %w", err)
	}
	start, out := q.Points()
	n := len(out)
	if n == 0 {
		return out, nil
	}
	startUS := start.UnixMicro()
	ivUS := q.Interval.Microseconds()
	endUS := startUS + int64(n)*ivUS
	var query string
	var args []any
	if q.Unfiltered() {
		sum := map[flowstore.Measure]string{flowstore.Bytes: "sum(bytes)", flowstore.Packets: "sum(packets)", flowstore.Flows: "sum(flows)"}[q.Measure]
		query = "SELECT bucket, " + sum + " FROM flows_5m WHERE day >= ? AND day <= ? AND bucket >= ? AND bucket < ?"
		args = []any{dayOf(startUS), dayOf(endUS - 1), startUS, endUS}
		if q.Proto != 0 {
			query += " AND proto = ?"
			args = append(args, q.Proto)
		}
		query += " GROUP BY bucket"
	} else {
		w, wargs, err := where(startUS, endUS, q.Filter)
		if err != nil {
			return nil, fmt.Errorf("clickhouse flow store: series: %w", err)
		}
		if q.Proto != 0 {
			w, wargs = and(w, wargs, "proto = ?", q.Proto)
		}
		sum := map[flowstore.Measure]string{flowstore.Bytes: "sum(bytes)", flowstore.Packets: "sum(packets)", flowstore.Flows: "count()"}[q.Measure]
		query = "SELECT minute * 60000000, " + sum + " FROM flows" + w + " GROUP BY minute"
		args = wargs
	}
	rows, err := s.conn.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("clickhouse flow store: series: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var at int64
		var v uint64
		if err := rows.Scan(&at, &v); err != nil {
			return nil, fmt.Errorf("clickhouse flow store: series: %w", err)
		}
		if i := floorDiv(at-startUS, ivUS); i >= 0 && i < int64(n) {
			out[i].Value += v
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("clickhouse flow store: series: %w", err)
	}
	return out, nil
}

// defaultChunkRows is about how many flows ScanFlows has the server sort
// at once. 18.16 sorts by reading every column of every row it sorts,
// whatever the limit; a million flows is about 100 MB.
const defaultChunkRows = 1 << 20

// ScanFlows streams the flows q selects, newest first, ties in time broken
// by sequence number, highest first.
//
// It never has the server sort more than a chunk of about a million flows:
// it counts the flows per minute over a window reaching back from the
// newest time it may return (Until or the cursor), first as wide as the
// flows per minute of the days in range suggest, then widening eightfold
// while it finds few, and streams consecutive minutes of about that many
// flows at a time, each sorted. With a limit, a chunk larger than
// the page is first narrowed to the page's time span by sorting only its
// times, so that the newest 100 of ten million flows a minute cost about a
// sort of ten million integers.
func (s *Store) ScanFlows(ctx context.Context, q flowstore.ListQuery, fn func(flowstore.Record, flowstore.Cursor) error) error {
	if err := q.Validate(); err != nil {
		return fmt.Errorf("clickhouse flow store: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("clickhouse flow store: list flows: %w", err)
	}
	sinceUS, untilUS := q.Since.UnixMicro(), q.Until.UnixMicro()
	w, args, err := where(sinceUS, untilUS, q.Filter)
	if err != nil {
		return fmt.Errorf("clickhouse flow store: list flows: %w", err)
	}
	newest := untilUS - 1
	if c := q.After; c != nil {
		us := c.TimeStart.UnixMicro()
		w, args = and(w, args, "(time_start < ? OR (time_start = ? AND seq < ?))", us, us, c.Seq)
		newest = min(newest, us)
	}
	remaining := q.Limit
	if remaining == 0 {
		remaining = math.MaxInt
	}
	lo, hi := minuteOf(sinceUS), minuteOf(newest)
	if newest < sinceUS {
		return nil
	}
	window, err := s.firstWindow(ctx, lo, hi, min(uint64(remaining), s.chunkRows))
	if err != nil {
		return fmt.Errorf("clickhouse flow store: list flows: %w", err)
	}
	for window > 0 && hi >= lo {
		from := max(hi-window+1, lo)
		counts, err := s.minuteCounts(ctx, w, args, from, hi)
		if err != nil {
			return fmt.Errorf("clickhouse flow store: list flows: %w", err)
		}
		var found uint64
		for _, c := range counts {
			found += c.n
		}
		// Consecutive minutes, newest first, in chunks of about s.chunkRows.
		for len(counts) > 0 {
			end, rows := 0, uint64(0)
			for end < len(counts) && (end == 0 || rows+counts[end].n <= s.chunkRows) {
				rows += counts[end].n
				end++
			}
			chunkHi, chunkLo := counts[0].minute, counts[end-1].minute
			counts = counts[end:]
			n, err := s.streamChunk(ctx, w, args, chunkLo, chunkHi, rows, remaining, fn)
			if err != nil {
				return err
			}
			remaining -= n
			if remaining == 0 {
				return nil
			}
		}
		hi = from - 1
		if found < s.chunkRows/2 {
			window = min(window*8, 1<<40)
		}
	}
	return nil
}

// firstWindow estimates how many minutes back from minute hi hold need
// flows, from how many flows the days of [lo, hi] hold (system.parts
// knows without reading them), or returns 0 if they hold none. A guess
// that falls short costs a wider look; one far too wide, a count over more
// flows than needed.
func (s *Store) firstWindow(ctx context.Context, lo, hi int64, need uint64) (int64, error) {
	parts, err := s.partitions(ctx, "flows")
	if err != nil {
		return 0, err
	}
	loDay, hiDay := dayOf(lo*minuteUS), dayOf(hi*minuteUS)
	var rows uint64
	first, last := int64(math.MaxInt64), int64(math.MinInt64)
	for _, p := range parts {
		if p.day < loDay || p.day > hiDay || p.rows == 0 {
			continue
		}
		rows += uint64(p.rows)
		start := minuteOf(dayStart(p.day).UnixMicro())
		first, last = min(first, start), max(last, start+24*60-1)
	}
	if rows == 0 {
		return 0, nil
	}
	minutes := min(hi, last) - max(lo, first) + 1
	if minutes <= 0 || minutes > 1<<40 {
		return 1, nil
	}
	// Twice the minutes the average density needs, for the filter and
	// unevenness.
	window := 2*need*uint64(minutes)/rows + 1
	return int64(min(window, uint64(hi-lo+1))), nil
}

type minuteCount struct {
	minute int64
	n      uint64
}

// minuteCounts counts the flows w selects in each minute of [from, to],
// newest first, leaving out minutes without any.
func (s *Store) minuteCounts(ctx context.Context, w string, args []any, from, to int64) ([]minuteCount, error) {
	w, args = and(w, args, "minute >= ? AND minute <= ?", from, to)
	rows, err := s.conn.Query(ctx, "SELECT minute, count() FROM flows"+w+" GROUP BY minute ORDER BY minute DESC", args...)
	if err != nil {
		return nil, fmt.Errorf("count flows per minute: %w", err)
	}
	defer rows.Close()
	var out []minuteCount
	for rows.Next() {
		var c minuteCount
		if err := rows.Scan(&c.minute, &c.n); err != nil {
			return nil, fmt.Errorf("count flows per minute: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count flows per minute: %w", err)
	}
	return out, nil
}

// streamChunk streams the flows w selects in minutes [from, to], which
// hold about rows of them, newest first, at most limit; it returns how
// many it handed to fn.
func (s *Store) streamChunk(ctx context.Context, w string, args []any, from, to int64, rows uint64, limit int, fn func(flowstore.Record, flowstore.Cursor) error) (int, error) {
	w, args = and(w, args, "minute >= ? AND minute <= ?", from, to)
	// Counts are a moment old: a limit is always stated, lest flows
	// inserted since overrun it.
	limited := limit < math.MaxInt
	if limited && rows > 4*uint64(limit) {
		// Sorting times alone is cheap next to sorting whole rows.
		var n uint64
		var oldest int64
		err := s.conn.QueryRow(ctx, "SELECT count(), min(time_start) FROM (SELECT time_start FROM flows"+w+" ORDER BY time_start DESC LIMIT ?)",
			append(slices.Clip(args), limit)...).Scan(&n, &oldest)
		if err != nil {
			return 0, fmt.Errorf("clickhouse flow store: list flows: find the page: %w", err)
		}
		if n == 0 {
			return 0, nil
		}
		w, args = and(w, args, "time_start >= ?", oldest)
	}
	query := "SELECT " + recordColumnList + " FROM flows" + w + " ORDER BY time_start DESC, seq DESC"
	if limited {
		query += " LIMIT ?"
		args = append(args, limit)
	}
	// Closing rows reads the rest of the result; cancelling first makes
	// the server stop sending it when fn stops the scan early.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	res, err := s.conn.Query(ctx, query, args...)
	if err != nil {
		return 0, fmt.Errorf("clickhouse flow store: list flows: %w", err)
	}
	defer func() {
		cancel()
		res.Close()
	}()
	var (
		n                int
		start, end       int64
		seq              uint64
		exporter, src    string
		dst              string
		lastExporter     string
		lastExporterAddr netip.Addr
	)
	r := flowstore.Record{}
	dest := []any{&start, &end, &seq, &exporter, &r.InIf, &r.OutIf, &r.IPVersion, &src, &dst,
		&r.SrcPort, &r.DstPort, &r.Proto, &r.TCPFlags, &r.Bytes, &r.Packets, &r.SamplingRate}
	for res.Next() {
		if err := res.Scan(dest...); err != nil {
			return n, fmt.Errorf("clickhouse flow store: list flows: %w", err)
		}
		if exporter != lastExporter || !lastExporterAddr.IsValid() {
			lastExporterAddr, _ = netip.ParseAddr(exporter) // "" (none): the invalid Addr
			lastExporter = exporter
		}
		rec := r
		rec.TimeStart, rec.TimeEnd = time.UnixMicro(start).UTC(), time.UnixMicro(end).UTC()
		rec.Exporter = lastExporterAddr
		rec.SrcAddr, rec.DstAddr = flowstore.AddrFrom16([]byte(src)), flowstore.AddrFrom16([]byte(dst))
		n++
		if err := fn(rec, flowstore.Cursor{TimeStart: rec.TimeStart, Seq: seq}); err != nil {
			return n, err
		}
	}
	if err := res.Err(); err != nil {
		return n, fmt.Errorf("clickhouse flow store: list flows: %w", err)
	}
	return n, nil
}
