package duckdb

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/yagura/yagura/internal/flowstore"
)

// Top returns a top-N statistic in three queries over the days in range,
// because computing every aggregate for every group is what costs: on 2M
// flows with 117k sources, the one-query form (all five aggregates per
// group, addresses as min/max BLOBs) took about five times as long as a
// grouping that computes only the ordering measure.
//
//  1. rank: group by the keys computing only the measure, and keep the top
//     Limit groups. Address keys are grouped by a 64-bit hash of their 16
//     bytes with any_value of the address (grouping by the BLOB took about
//     1.5 times as long);
//  2. totals: the sums over all selected flows, without grouping;
//  3. detail: every aggregate, grouped by the exact key values, over the
//     flows whose keys are among the ranked ones.
//
// Two addresses sharing a hash (about one chance in 10^9 for a million
// distinct addresses in range) would merge into one ranked group; the
// detail then finds that group's address with a smaller measure than its
// rank said, and Top runs again grouping by the addresses themselves. A
// collision elsewhere cannot change the answer: it only adds one group's
// counts to another that still ranks below the rows returned.
func (s *Store) Top(ctx context.Context, q flowstore.TopQuery) (flowstore.TopResult, error) {
	if err := q.Validate(); err != nil {
		return flowstore.TopResult{}, fmt.Errorf("duckdb flow store: %w", err)
	}
	hs := s.tables(q.Since, q.Until)
	if len(hs) == 0 {
		return flowstore.TopResult{}, nil
	}
	res, collided, err := s.top(ctx, q, hs, false)
	if err != nil && s.dropped(hs) {
		// Retain dropped a day while the query ran: ask again without it.
		if hs = s.tables(q.Since, q.Until); len(hs) == 0 {
			return flowstore.TopResult{}, nil
		}
		res, collided, err = s.top(ctx, q, hs, false)
	}
	if err == nil && collided {
		res, _, err = s.top(ctx, q, hs, true)
	}
	if err != nil {
		return flowstore.TopResult{}, fmt.Errorf("duckdb flow store: top: %w", err)
	}
	return res, nil
}

// ranked is a group from the rank query: its keys' stored values and its
// measure.
type ranked struct {
	keys    []any
	measure uint64
}

func (s *Store) top(ctx context.Context, q flowstore.TopQuery, hs []int64, exact bool) (res flowstore.TopResult, collided bool, err error) {
	w, wargs, err := where(q.Query, q.Since, q.Until)
	if err != nil {
		return res, false, err
	}
	// The flows of whole summed hours come from the host sums, where a
	// row stands for n flows.
	kind, useHosts := hostsKind(q)
	source := func(v *snapshot) string {
		if useHosts {
			return v.hostsFrom(hs, kind, q.Since, q.Until)
		}
		return v.from(hs)
	}
	cnt := "CAST(count(*) AS UBIGINT)"
	if useHosts {
		cnt = "CAST(coalesce(sum(n), 0) AS UBIGINT)"
	}
	cols := make([]keyColumn, len(q.By))
	for i, k := range q.By {
		cols[i] = keyColumns[k]
	}

	// 1. Rank.
	var sel, group, order []string
	for i, c := range cols {
		k := "k" + strconv.Itoa(i)
		if c.kind == kindAddr && !exact {
			sel = append(sel, "any_value("+c.col+") AS "+k)
			group = append(group, "hash("+c.col+")")
		} else {
			sel = append(sel, c.col+" AS "+k)
			group = append(group, c.col)
		}
		order = append(order, k)
	}
	m := map[flowstore.Measure]string{flowstore.Bytes: sumCol("sum(bytes)"), flowstore.Packets: sumCol("sum(packets)"), flowstore.Flows: cnt}[q.OrderBy]
	rankQ := func(v *snapshot) (string, []any) {
		src := source(v)
		return "SELECT " + strings.Join(sel, ", ") + ", " + m + " AS m FROM " + src + " WHERE " + w +
			" GROUP BY " + strings.Join(group, ", ") + " ORDER BY m DESC, " + strings.Join(order, ", ") + " LIMIT " + strconv.Itoa(q.Limit), wargs
	}
	var top []ranked
	err = s.query(ctx, hs, rankQ, func(rows *sql.Rows) error {
		r := ranked{keys: make([]any, len(cols))}
		dest := make([]any, 0, len(cols)+1)
		for i := range r.keys {
			dest = append(dest, &r.keys[i])
		}
		if err := rows.Scan(append(dest, &r.measure)...); err != nil {
			return err
		}
		top = append(top, r)
		return nil
	})
	if err != nil {
		return res, false, fmt.Errorf("rank: %w", err)
	}

	// 2. Totals.
	totalQ := func(v *snapshot) (string, []any) {
		src := source(v)
		return "SELECT " + sumCol("coalesce(sum(bytes), 0)") + ", " + sumCol("coalesce(sum(packets), 0)") + ", " + cnt + ", min(time_start), max(time_end) FROM " + src + " WHERE " + w, wargs
	}
	err = s.query(ctx, hs, totalQ, func(rows *sql.Rows) error {
		return scanAggregates(rows, nil, &res.Total)
	})
	if err != nil {
		return res, false, fmt.Errorf("totals: %w", err)
	}
	if len(top) == 0 {
		return res, false, nil
	}

	// 3. Detail of the ranked groups: each key column restricted to the
	// values ranked, which selects a superset of their flows (every
	// combination of the values); the groups not ranked are dropped here.
	detailW, detailArgs := w, wargs
	sel = sel[:0]
	for i, c := range cols {
		sel = append(sel, c.col+" AS k"+strconv.Itoa(i))
		seen := map[string]bool{}
		var in []string
		for _, r := range top {
			id := fmt.Sprint(r.keys[i])
			if seen[id] {
				continue
			}
			seen[id] = true
			in = append(in, "?")
			detailArgs = append(detailArgs, r.keys[i])
		}
		detailW += " AND " + c.col + " IN (" + strings.Join(in, ", ") + ")"
	}
	detailArgs = append([]any(nil), detailArgs...)
	detailQ := func(v *snapshot) (string, []any) {
		src := source(v)
		return "SELECT " + strings.Join(sel, ", ") + ", " + sumCol("sum(bytes)") + ", " + sumCol("sum(packets)") + ", " + cnt + ", min(time_start), max(time_end) FROM " + src + " WHERE " + detailW + " GROUP BY ALL", detailArgs
	}
	detail := make(map[string]flowstore.TopRow, len(top))
	err = s.query(ctx, hs, detailQ, func(rows *sql.Rows) error {
		keys := make([]any, len(cols))
		var row flowstore.TopRow
		if err := scanAggregates(rows, keys, &row); err != nil {
			return err
		}
		detail[tupleID(keys)] = row
		return nil
	})
	if err != nil {
		return res, false, fmt.Errorf("detail: %w", err)
	}
	for _, r := range top {
		row, ok := detail[tupleID(r.keys)]
		if !ok || row.Value(q.OrderBy) != r.measure {
			// The ranked group held more than its key: a hash collision.
			return res, true, nil
		}
		row.Keys = make([]string, len(cols))
		for i, c := range cols {
			row.Keys[i] = keyText(c.kind, r.keys[i])
		}
		res.Rows = append(res.Rows, row)
	}
	return res, false, nil
}

// queryRows runs q and calls fn for each row.
func queryRows(ctx context.Context, db *sql.DB, q string, args []any, fn func(*sql.Rows) error) error {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return err
	}
	return eachRow(rows, fn)
}

// queryRowsConn is queryRows on one connection (inside its transaction).
func queryRowsConn(ctx context.Context, conn *sql.Conn, q string, args []any, fn func(*sql.Rows) error) error {
	rows, err := conn.QueryContext(ctx, q, args...)
	if err != nil {
		return err
	}
	return eachRow(rows, fn)
}

// eachRow calls fn for each of rows, and closes them.
func eachRow(rows *sql.Rows, fn func(*sql.Rows) error) error {
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// scanAggregates scans keys (into the elements of keys) then bytes,
// packets, flows, first and last seen.
func scanAggregates(rows *sql.Rows, keys []any, row *flowstore.TopRow) error {
	var fs, ls sql.NullInt64
	dest := make([]any, 0, len(keys)+5)
	for i := range keys {
		dest = append(dest, &keys[i])
	}
	if err := rows.Scan(append(dest, &row.Bytes, &row.Packets, &row.Flows, &fs, &ls)...); err != nil {
		return err
	}
	if fs.Valid {
		row.FirstSeen = time.UnixMicro(fs.Int64).UTC()
	}
	if ls.Valid {
		row.LastSeen = time.UnixMicro(ls.Int64).UTC()
	}
	return nil
}

// tupleID identifies a group by its keys' stored values.
func tupleID(keys []any) string {
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%T:%v\x00", k, k)
	}
	return b.String()
}
