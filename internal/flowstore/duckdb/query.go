package duckdb

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"math/big"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/yagura/yagura/internal/flowfilter"
	"github.com/yagura/yagura/internal/flowstore"
)

// keyColumn is the column a top-N key groups by, and how its value is
// rendered.
type keyColumn struct {
	col  string
	kind keyKind
}

type keyKind uint8

const (
	kindNumber keyKind = iota
	kindAddr
	kindText
)

var keyColumns = map[flowstore.Key]keyColumn{
	flowstore.KeySrcIP:    {"src_addr", kindAddr},
	flowstore.KeyDstIP:    {"dst_addr", kindAddr},
	flowstore.KeySrcPort:  {"src_port", kindNumber},
	flowstore.KeyDstPort:  {"dst_port", kindNumber},
	flowstore.KeyProto:    {"proto", kindNumber},
	flowstore.KeyExporter: {"exporter", kindText},
	flowstore.KeyInIf:     {"in_if", kindNumber},
	flowstore.KeyOutIf:    {"out_if", kindNumber},
	flowstore.KeyIPVer:    {"ip_version", kindNumber},
}

// where returns the conditions selecting q's flows: the time range, then
// the filter compiled to parameters.
func where(q flowstore.Query, since, until time.Time) (string, []any, error) {
	w := "time_start >= ? AND time_start < ?"
	args := []any{since.UnixMicro(), until.UnixMicro()}
	if q.Filter != nil {
		f, fargs, err := flowfilter.Compile(q.Filter, flowfilter.DuckDB, flowfilter.DefaultColumns())
		if err != nil {
			return "", nil, fmt.Errorf("%w: %w", err, flowstore.ErrInvalid)
		}
		w += " AND " + f
		args = append(args, fargs...)
	}
	return w, args, nil
}

// sumCol is a sum of UBIGINTs, which DuckDB computes as a HUGEINT,
// brought back to UBIGINT saturated rather than failing on overflow.
func sumCol(expr string) string {
	return "CAST(least(" + expr + ", 18446744073709551615) AS UBIGINT)"
}

func keyText(k keyKind, v any) string {
	switch k {
	case kindAddr:
		b, _ := v.([]byte)
		return flowstore.AddrText(b)
	case kindText:
		s, _ := v.(string)
		return s
	}
	switch n := v.(type) {
	case uint8:
		return strconv.FormatUint(uint64(n), 10)
	case uint16:
		return strconv.FormatUint(uint64(n), 10)
	case uint32:
		return strconv.FormatUint(uint64(n), 10)
	case uint64:
		return strconv.FormatUint(n, 10)
	case int64:
		return strconv.FormatInt(n, 10)
	case *big.Int:
		return n.String()
	}
	return fmt.Sprint(v)
}

// Series returns one point per interval. Without a filter it reads the
// rollups, whatever the raw flows' retention left; with one, the raw
// flows.
func (s *Store) Series(ctx context.Context, q flowstore.SeriesQuery) ([]flowstore.Point, error) {
	if err := q.Validate(); err != nil {
		return nil, fmt.Errorf("duckdb flow store: %w", err)
	}
	start, out := q.Points()
	n := len(out)
	if n == 0 {
		return out, nil
	}
	end := start.Add(time.Duration(n) * q.Interval)
	hs := s.tables(start, end)
	err := s.series(ctx, q, start, end, hs, out)
	if err != nil && !q.Unfiltered() && s.dropped(hs) {
		// Retain dropped a day while the query ran: ask again without it.
		for i := range out {
			out[i].Value = 0
		}
		err = s.series(ctx, q, start, end, s.tables(start, end), out)
	}
	if err != nil {
		return nil, fmt.Errorf("duckdb flow store: series: %w", err)
	}
	return out, nil
}

// series fills the values of out, the intervals from start to end, from
// the rollups or, with a filter, from the day tables hs.
func (s *Store) series(ctx context.Context, q flowstore.SeriesQuery, start, end time.Time, hs []int64, out []flowstore.Point) error {
	iv := q.Interval.Microseconds()
	proto, protoArgs := "", []any(nil)
	if q.Proto != 0 {
		proto, protoArgs = " AND proto = ?", []any{q.Proto}
	}
	scan := func(rows *sql.Rows) error {
		var i int64
		var v uint64
		if err := rows.Scan(&i, &v); err != nil {
			return err
		}
		if i >= 0 && i < int64(len(out)) {
			out[i].Value = v
		}
		return nil
	}
	if q.Unfiltered() {
		// The rollups table, plus the rollups of the flows still in the
		// spool, summed from its files.
		m := map[flowstore.Measure]string{flowstore.Bytes: "bytes", flowstore.Packets: "packets", flowstore.Flows: "flows"}[q.Measure]
		rollups := "SELECT (bucket - ?) // ? AS i, " + m + " AS v FROM rollups WHERE bucket >= ? AND bucket < ?" + proto
		args := append([]any{start.UnixMicro(), iv, start.UnixMicro(), end.UnixMicro()}, protoArgs...)
		return s.query(ctx, hs, func(v *snapshot) (string, []any) {
			var files []*spoolFile
			for _, d := range hs {
				files = append(files, v.files[d]...)
			}
			union, uargs := rollups, args
			if len(files) > 0 {
				sm := map[flowstore.Measure]string{flowstore.Bytes: "bytes", flowstore.Packets: "packets", flowstore.Flows: "1"}[q.Measure]
				union += " UNION ALL SELECT (time_start - ?) // ? AS i, " + sm + " AS v FROM " + parquetList(files) + " WHERE time_start >= ? AND time_start < ?" + proto
				uargs = append(slices.Clone(args), args...)
			}
			return "SELECT i, " + sumCol("sum(v)") + " FROM (" + union + ") GROUP BY i", uargs
		}, scan)
	}
	if len(hs) == 0 {
		return nil
	}
	w, wargs, err := where(q.Query, start, end)
	if err != nil {
		return err
	}
	m := map[flowstore.Measure]string{flowstore.Bytes: sumCol("sum(bytes)"), flowstore.Packets: sumCol("sum(packets)"), flowstore.Flows: "CAST(count(*) AS UBIGINT)"}[q.Measure]
	args := append(append([]any{start.UnixMicro(), iv}, wargs...), protoArgs...)
	return s.query(ctx, hs, func(v *snapshot) (string, []any) {
		return "SELECT (time_start - ?) // ? AS i, " + m + " FROM " + v.from(hs) + " WHERE " + w + proto + " GROUP BY i", args
	}, scan)
}

// ScanFlows streams the selected flows newest first, a day's table at a
// time from the newest: a page reads only the days it needs, and an
// export of a month never sorts more than a day.
func (s *Store) ScanFlows(ctx context.Context, q flowstore.ListQuery, fn func(flowstore.Record, flowstore.Cursor) error) error {
	if err := q.Validate(); err != nil {
		return fmt.Errorf("duckdb flow store: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("duckdb flow store: scan flows: %w", err)
	}
	w, wargs, err := where(q.Query, q.Since, q.Until)
	if err != nil {
		return fmt.Errorf("duckdb flow store: scan flows: %w", err)
	}
	hs := s.tables(q.Since, q.Until)
	last := int64(math.MaxInt64)
	if q.After != nil {
		// Later days hold nothing the page wants.
		c := q.After.TimeStart.UnixMicro()
		last = dayOf(c)
		w += " AND (time_start < ? OR (time_start = ? AND seq < ?))"
		seq := min(q.After.Seq, math.MaxInt64)
		wargs = append(wargs, c, c, int64(seq))
	}
	left := q.Limit
	for i := len(hs) - 1; i >= 0; i-- {
		if hs[i] > last {
			continue
		}
		limit := ""
		if q.Limit > 0 {
			limit = " LIMIT " + strconv.Itoa(left)
		}
		n, err := s.scanDay(ctx, hs[i], func(src string) (string, []any) {
			return "SELECT seq, " + flowColumns + " FROM " + src + " WHERE " + w + " ORDER BY time_start DESC, seq DESC" + limit, wargs
		}, fn)
		if err != nil {
			if n == 0 && s.dropped(hs[i:i+1]) {
				continue // expired while the scan ran
			}
			return err
		}
		if q.Limit > 0 {
			if left -= n; left <= 0 {
				return nil
			}
		}
	}
	return nil
}

// scanDay runs a listing of day d's flows, calling fn for each, and
// returns how many it called it for.
func (s *Store) scanDay(ctx context.Context, d int64, build func(src string) (string, []any), fn func(flowstore.Record, flowstore.Cursor) error) (int, error) {
	n := 0
	err := s.query(ctx, []int64{d}, func(v *snapshot) (string, []any) { return build(v.from([]int64{d})) }, func(rows *sql.Rows) error {
		var (
			r           flowstore.Record
			seq, ts, te int64
			exporter    string
			src, dst    []byte
		)
		if err := rows.Scan(&seq, &ts, &te, &exporter, &r.InIf, &r.OutIf, &r.IPVersion, &src, &dst,
			&r.SrcPort, &r.DstPort, &r.Proto, &r.TCPFlags, &r.Bytes, &r.Packets, &r.SamplingRate); err != nil {
			return err
		}
		r.TimeStart, r.TimeEnd = time.UnixMicro(ts).UTC(), time.UnixMicro(te).UTC()
		r.SrcAddr, r.DstAddr = flowstore.AddrFrom16(src), flowstore.AddrFrom16(dst)
		if exporter != "" {
			r.Exporter, _ = netip.ParseAddr(exporter)
		}
		n++
		return fn(r, flowstore.Cursor{TimeStart: r.TimeStart, Seq: uint64(seq)})
	})
	if err != nil {
		return n, fmt.Errorf("duckdb flow store: scan flows: %w", err)
	}
	return n, nil
}
