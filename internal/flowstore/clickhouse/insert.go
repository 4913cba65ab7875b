package clickhouse

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/yagura/yagura/internal/flowfilter"
	"github.com/yagura/yagura/internal/flowstore"
)

// maxDaysPerBlock is how many partitions one insert may touch: newer
// servers refuse a block spanning more than 100
// (max_partitions_per_insert_block), which only a batch from an exporter
// whose clock wanders over months makes.
const maxDaysPerBlock = 100

// undoTimeout bounds taking back the rollups of a failed insert, which
// runs even when the caller's context is what failed it.
const undoTimeout = 30 * time.Second

// insertTimeout bounds one INSERT of a group of batches. It runs apart
// from the callers' contexts: one caller giving up must not fail the
// others' flows.
const insertTimeout = 2 * time.Minute

// Group commit: how many INSERTs run at once, and how many flows one may
// gather. One at a time gathers the most: four writers of 10,000-flow
// batches then make INSERTs of 25,000 on average instead of 13,000 with
// two at a time, and the server spends a quarter less CPU per flow
// (measured on 18.16), most of it merging parts; throughput was the same.
const (
	insertSlots  = 1
	maxGroupRows = 1 << 20
)

// InsertFlows stores flows and their rollups.
//
// Batches arriving while inserts are running are gathered, up to about a
// million flows, into one INSERT of their rollups (summed in Go per 5
// minutes and key) and one INSERT of their raw flows. Each INSERT makes
// parts that the server must later merge, at a cost that does not shrink
// with the part; gathering the collector workers' batches divides that
// cost and keeps the table under the server's limit of parts per
// partition. The caller returns when the INSERTs holding its batch have.
//
// Should the raw INSERT fail, the rollups are taken back by inserting
// their two's complement, which the UInt64 sums wrap back to what they
// were; so a failed call stores nothing and may be retried, unless the
// server failed between writing the flows and answering (the driver cannot
// tell) or a group spans more than 100 days (sent in blocks of 100 days,
// each all or nothing).
//
// When it returns nil, ClickHouse has written the parts: visible to
// queries, and on disk as the server is configured (it does not fsync an
// inserted part unless <merge_tree><fsync_after_insert> says so, on
// versions that have it).
//
// Each flow gets a sequence number, for the listing's cursor: the batch's
// flows take consecutive numbers from a random 64-bit base. Managers
// sharing a server need no coordination for that, and a number never
// changes once stored, so a cursor stays valid across merges and
// retention; two batches' ranges overlap with a probability of about
// n·N/2^64 (10,000-flow batches into 10^11 stored flows: 5·10^-5), and even
// then only flows of the same microsecond would be ordered ambiguously.
func (s *Store) InsertFlows(ctx context.Context, flows []flowstore.Record) error {
	if len(flows) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("clickhouse flow store: insert %d flows: %w", len(flows), err)
	}
	raw, rollups := build(flows, rand.Uint64N(math.MaxUint64-uint64(len(flows))))
	p := &pending{raw: raw, rollups: rollups, done: make(chan error, 1)}
	if err := s.commit(ctx, p); err != nil {
		return fmt.Errorf("clickhouse flow store: insert %d flows: %w", len(flows), err)
	}
	return nil
}

// pending is a batch waiting to be inserted.
type pending struct {
	raw     *rawColumns
	rollups *rollupColumns
	done    chan error // buffered: whoever inserts the batch never waits
}

// committer gathers batches into INSERTs. Whoever holds an insert slot
// inserts what is queued, its own batch or not, and tells each batch's
// caller the outcome; a caller waits for a slot or for another to have
// inserted its batch.
type committer struct {
	slots chan struct{}
	mu    sync.Mutex
	queue []*pending
}

func newCommitter() *committer {
	return &committer{slots: make(chan struct{}, insertSlots)}
}

// commit queues p and returns once an INSERT has stored it or failed.
func (s *Store) commit(ctx context.Context, p *pending) error {
	c := s.committer
	c.mu.Lock()
	c.queue = append(c.queue, p)
	c.mu.Unlock()
	select {
	case c.slots <- struct{}{}:
	case err := <-p.done:
		return err
	case <-ctx.Done():
		if c.withdraw(p) {
			return ctx.Err()
		}
		return <-p.done // being inserted: the outcome is the caller's
	}
	for {
		group := c.take()
		if len(group) > 0 {
			err := s.insertGroup(context.WithoutCancel(ctx), group)
			for _, g := range group {
				g.done <- err
			}
		}
		select {
		case err := <-p.done:
			<-c.slots
			return err
		default:
		}
		if len(group) == 0 {
			// Not queued, not done: another slot is inserting it.
			<-c.slots
			return <-p.done
		}
	}
}

// take removes the oldest batches from the queue, up to maxGroupRows flows
// and at least one.
func (c *committer) take() []*pending {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, rows := 0, 0
	for n < len(c.queue) && (n == 0 || rows+c.queue[n].raw.len() <= maxGroupRows) {
		rows += c.queue[n].raw.len()
		n++
	}
	group := slices.Clone(c.queue[:n])
	c.queue = slices.Delete(c.queue, 0, n)
	return group
}

// withdraw removes p from the queue, and reports whether it was there.
func (c *committer) withdraw(p *pending) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.Index(c.queue, p)
	if i < 0 {
		return false
	}
	c.queue = slices.Delete(c.queue, i, i+1)
	return true
}

// insertGroup inserts the batches of group: their rollups, then their raw
// flows, taking the rollups back if the flows fail.
func (s *Store) insertGroup(ctx context.Context, group []*pending) error {
	ctx, cancel := context.WithTimeout(ctx, insertTimeout)
	defer cancel()
	raws := make([]*rawColumns, len(group))
	rollups := make([]*rollupColumns, len(group))
	for i, p := range group {
		raws[i], rollups[i] = p.raw, p.rollups
	}
	raw, rollup := concatRaw(raws), concatRollups(rollups)
	if err := s.sendRollups(ctx, rollup); err != nil {
		return fmt.Errorf("rollups: %w", err)
	}
	if err := s.sendFlows(ctx, raw); err != nil {
		rollup.negate()
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
		defer cancel()
		if uerr := s.sendRollups(uctx, rollup); uerr != nil {
			return fmt.Errorf("%w; their rollups were stored and could not be taken back, so charts without a filter count them (%v)", err, uerr)
		}
		return err
	}
	return nil
}

// addrColumn is a FixedString(16) column's bytes, 16 per row, in one
// allocation.
type addrColumn []byte

func (c addrColumn) append(a netip.Addr) addrColumn {
	b := flowfilter.Addr16(a)
	return append(c, b[:]...)
}

// rows returns c as the driver takes it: a slice per row, each a view of
// c.
func (c addrColumn) rows() [][]byte {
	out := make([][]byte, len(c)/16)
	for i := range out {
		out[i] = c[16*i : 16*i+16 : 16*i+16]
	}
	return out
}

// rawColumns are flows as the flows table's columns, in flowColumnList order.
type rawColumns struct {
	day             []uint32
	minute          []int64
	start, end      []int64
	seq             []uint64
	exporter        []string
	inIf, outIf     []uint32
	ipVersion       []uint8
	src, dst        addrColumn
	srcPort         []uint16
	dstPort         []uint16
	proto, tcpFlags []uint8
	bytes, packets  []uint64
	rate            []uint32
}

func (c *rawColumns) len() int { return len(c.day) }

func (c *rawColumns) all() []any {
	return []any{c.day, c.minute, c.start, c.end, c.seq, c.exporter, c.inIf, c.outIf, c.ipVersion,
		c.src.rows(), c.dst.rows(), c.srcPort, c.dstPort, c.proto, c.tcpFlags, c.bytes, c.packets, c.rate}
}

// slice returns rows [i, j).
func (c *rawColumns) slice(i, j int) *rawColumns {
	return &rawColumns{
		day: c.day[i:j], minute: c.minute[i:j], start: c.start[i:j], end: c.end[i:j], seq: c.seq[i:j],
		exporter: c.exporter[i:j], inIf: c.inIf[i:j], outIf: c.outIf[i:j], ipVersion: c.ipVersion[i:j],
		src: c.src[16*i : 16*j], dst: c.dst[16*i : 16*j], srcPort: c.srcPort[i:j], dstPort: c.dstPort[i:j],
		proto: c.proto[i:j], tcpFlags: c.tcpFlags[i:j], bytes: c.bytes[i:j], packets: c.packets[i:j], rate: c.rate[i:j],
	}
}

// rollupKey is what a rollup row sums over.
type rollupKey struct {
	bucket      int64
	exporter    netip.Addr
	inIf, outIf uint32
	proto       uint8
	ipVersion   uint8
}

// rollupColumns are rollup rows as the flows_5m table's columns, in
// rollupColumnList order.
type rollupColumns struct {
	day                   []uint32
	bucket                []int64
	exporter              []string
	inIf, outIf           []uint32
	proto, ipVersion      []uint8
	bytes, packets, flows []uint64
}

func (c *rollupColumns) all() []any {
	return []any{c.day, c.bucket, c.exporter, c.inIf, c.outIf, c.proto, c.ipVersion, c.bytes, c.packets, c.flows}
}

func (c *rollupColumns) len() int { return len(c.day) }

func (c *rollupColumns) slice(i, j int) *rollupColumns {
	return &rollupColumns{
		day: c.day[i:j], bucket: c.bucket[i:j], exporter: c.exporter[i:j], inIf: c.inIf[i:j], outIf: c.outIf[i:j],
		proto: c.proto[i:j], ipVersion: c.ipVersion[i:j], bytes: c.bytes[i:j], packets: c.packets[i:j], flows: c.flows[i:j],
	}
}

// negate turns each sum into its two's complement, which added to it in
// UInt64 gives zero.
func (c *rollupColumns) negate() {
	for _, col := range [][]uint64{c.bytes, c.packets, c.flows} {
		for i := range col {
			col[i] = -col[i]
		}
	}
}

// build turns flows into the flows table's columns, numbered from seq
// on, and their rollups.
func build(flows []flowstore.Record, seq uint64) (*rawColumns, *rollupColumns) {
	n := len(flows)
	c := &rawColumns{
		day: make([]uint32, n), minute: make([]int64, n), start: make([]int64, n), end: make([]int64, n),
		seq: make([]uint64, n), exporter: make([]string, n), inIf: make([]uint32, n), outIf: make([]uint32, n),
		ipVersion: make([]uint8, n), src: make(addrColumn, 0, 16*n), dst: make(addrColumn, 0, 16*n),
		srcPort: make([]uint16, n), dstPort: make([]uint16, n), proto: make([]uint8, n), tcpFlags: make([]uint8, n),
		bytes: make([]uint64, n), packets: make([]uint64, n), rate: make([]uint32, n),
	}
	type sums struct{ bytes, packets, flows uint64 }
	rollups := make(map[rollupKey]*sums)
	// A batch holds a handful of exporters: format each once.
	names := make(map[netip.Addr]string, 4)
	var lastAddr netip.Addr
	var lastName string
	var lastDayUS int64 = math.MinInt64 // start of the day lastDay is, in µs
	var lastDay uint32
	for i := range flows {
		f := &flows[i]
		start := f.TimeStart.UnixMicro()
		// Flows of a batch mostly share a day: work it out once.
		if start < lastDayUS || start >= lastDayUS+int64(24*time.Hour/time.Microsecond) {
			lastDay = dayOf(start)
			lastDayUS = floorDiv(start, int64(24*time.Hour/time.Microsecond)) * int64(24*time.Hour/time.Microsecond)
		}
		if f.Exporter != lastAddr || i == 0 {
			name, ok := names[f.Exporter]
			if !ok {
				name = flowstore.ExporterText(f.Exporter)
				names[f.Exporter] = name
			}
			lastAddr, lastName = f.Exporter, name
		}
		c.day[i] = lastDay
		c.minute[i] = minuteOf(start)
		c.start[i] = start
		c.end[i] = f.TimeEnd.UnixMicro()
		c.seq[i] = seq + uint64(i)
		c.exporter[i] = lastName
		c.inIf[i], c.outIf[i] = f.InIf, f.OutIf
		c.ipVersion[i] = f.IPVersion
		c.src = c.src.append(f.SrcAddr)
		c.dst = c.dst.append(f.DstAddr)
		c.srcPort[i], c.dstPort[i] = f.SrcPort, f.DstPort
		c.proto[i], c.tcpFlags[i] = f.Proto, f.TCPFlags
		c.bytes[i], c.packets[i] = f.Bytes, f.Packets
		c.rate[i] = max(f.SamplingRate, 1) // 0 is a rate nobody set: unsampled

		k := rollupKey{bucket: bucketOf(start), exporter: f.Exporter, inIf: f.InIf, outIf: f.OutIf, proto: f.Proto, ipVersion: f.IPVersion}
		sm := rollups[k]
		if sm == nil {
			sm = &sums{}
			rollups[k] = sm
		}
		sm.bytes += f.Bytes
		sm.packets += f.Packets
		sm.flows++
	}
	m := len(rollups)
	r := &rollupColumns{
		day: make([]uint32, 0, m), bucket: make([]int64, 0, m), exporter: make([]string, 0, m),
		inIf: make([]uint32, 0, m), outIf: make([]uint32, 0, m), proto: make([]uint8, 0, m), ipVersion: make([]uint8, 0, m),
		bytes: make([]uint64, 0, m), packets: make([]uint64, 0, m), flows: make([]uint64, 0, m),
	}
	for k, sm := range rollups {
		r.day = append(r.day, dayOf(k.bucket))
		r.bucket = append(r.bucket, k.bucket)
		r.exporter = append(r.exporter, names[k.exporter])
		r.inIf = append(r.inIf, k.inIf)
		r.outIf = append(r.outIf, k.outIf)
		r.proto = append(r.proto, k.proto)
		r.ipVersion = append(r.ipVersion, k.ipVersion)
		r.bytes = append(r.bytes, sm.bytes)
		r.packets = append(r.packets, sm.packets)
		r.flows = append(r.flows, sm.flows)
	}
	return c, r
}

// byDay splits rows [0, n) of a table whose day column is days into runs
// of at most maxDaysPerBlock days, calling send with each. Nearly always
// there is one run: the rows as they are.
func byDay[C interface{ slice(i, j int) C }](cols C, days []uint32, sort func(C, []int) C, send func(C) error) error {
	distinct := map[uint32]struct{}{}
	for _, d := range days {
		distinct[d] = struct{}{}
		if len(distinct) > maxDaysPerBlock {
			break
		}
	}
	if len(distinct) <= maxDaysPerBlock {
		return send(cols)
	}
	order := make([]int, len(days))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(days[a], days[b]) })
	sorted := sort(cols, order)
	sortedDays := make([]uint32, len(days))
	for i, o := range order {
		sortedDays[i] = days[o]
	}
	start, n := 0, 1
	for i := 1; i <= len(sortedDays); i++ {
		if i == len(sortedDays) {
			return send(sorted.slice(start, i))
		}
		if sortedDays[i] != sortedDays[i-1] {
			if n == maxDaysPerBlock {
				if err := send(sorted.slice(start, i)); err != nil {
					return err
				}
				start, n = i, 0
			}
			n++
		}
	}
	return nil
}

// permute returns s reordered: element i of the result is s[order[i]].
func permute[T any](s []T, order []int) []T {
	out := make([]T, len(s))
	for i, o := range order {
		out[i] = s[o]
	}
	return out
}

func (c *rawColumns) permute(order []int) *rawColumns {
	src := make(addrColumn, 0, len(c.src))
	dst := make(addrColumn, 0, len(c.dst))
	for _, o := range order {
		src = append(src, c.src[16*o:16*o+16]...)
		dst = append(dst, c.dst[16*o:16*o+16]...)
	}
	return &rawColumns{
		day: permute(c.day, order), minute: permute(c.minute, order), start: permute(c.start, order), end: permute(c.end, order),
		seq: permute(c.seq, order), exporter: permute(c.exporter, order), inIf: permute(c.inIf, order), outIf: permute(c.outIf, order),
		ipVersion: permute(c.ipVersion, order), src: src, dst: dst, srcPort: permute(c.srcPort, order), dstPort: permute(c.dstPort, order),
		proto: permute(c.proto, order), tcpFlags: permute(c.tcpFlags, order), bytes: permute(c.bytes, order),
		packets: permute(c.packets, order), rate: permute(c.rate, order),
	}
}

func (c *rollupColumns) permute(order []int) *rollupColumns {
	return &rollupColumns{
		day: permute(c.day, order), bucket: permute(c.bucket, order), exporter: permute(c.exporter, order),
		inIf: permute(c.inIf, order), outIf: permute(c.outIf, order), proto: permute(c.proto, order),
		ipVersion: permute(c.ipVersion, order), bytes: permute(c.bytes, order), packets: permute(c.packets, order),
		flows: permute(c.flows, order),
	}
}

func (s *Store) sendFlows(ctx context.Context, c *rawColumns) error {
	return byDay(c, c.day, (*rawColumns).permute, func(c *rawColumns) error {
		return s.send(ctx, "flows", flowColumnList, c.all())
	})
}

func (s *Store) sendRollups(ctx context.Context, c *rollupColumns) error {
	if c.len() == 0 {
		return nil
	}
	return byDay(c, c.day, (*rollupColumns).permute, func(c *rollupColumns) error {
		return s.send(ctx, "flows_5m", rollupColumnList, c.all())
	})
}

// send inserts one block into table, column by column.
func (s *Store) send(ctx context.Context, table, columns string, cols []any) error {
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+table+" ("+columns+")")
	if err != nil {
		return fmt.Errorf("insert into %s: prepare: %w", table, err)
	}
	defer batch.Close()
	for i, col := range cols {
		if err := batch.Column(i).Append(col); err != nil {
			return fmt.Errorf("insert into %s: column %d: %w", table, i, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert into %s: %w", table, err)
	}
	return nil
}

// concatRaw returns the rows of cs one after the other.
func concatRaw(cs []*rawColumns) *rawColumns {
	if len(cs) == 1 {
		return cs[0]
	}
	out := &rawColumns{}
	for _, c := range cs {
		out.day = append(out.day, c.day...)
		out.minute = append(out.minute, c.minute...)
		out.start = append(out.start, c.start...)
		out.end = append(out.end, c.end...)
		out.seq = append(out.seq, c.seq...)
		out.exporter = append(out.exporter, c.exporter...)
		out.inIf = append(out.inIf, c.inIf...)
		out.outIf = append(out.outIf, c.outIf...)
		out.ipVersion = append(out.ipVersion, c.ipVersion...)
		out.src = append(out.src, c.src...)
		out.dst = append(out.dst, c.dst...)
		out.srcPort = append(out.srcPort, c.srcPort...)
		out.dstPort = append(out.dstPort, c.dstPort...)
		out.proto = append(out.proto, c.proto...)
		out.tcpFlags = append(out.tcpFlags, c.tcpFlags...)
		out.bytes = append(out.bytes, c.bytes...)
		out.packets = append(out.packets, c.packets...)
		out.rate = append(out.rate, c.rate...)
	}
	return out
}

// concatRollups returns the rows of cs one after the other. Rows of the
// same key from different batches stay apart: SummingMergeTree adds them
// up, and queries sum anyway.
func concatRollups(cs []*rollupColumns) *rollupColumns {
	if len(cs) == 1 {
		return cs[0]
	}
	out := &rollupColumns{}
	for _, c := range cs {
		out.day = append(out.day, c.day...)
		out.bucket = append(out.bucket, c.bucket...)
		out.exporter = append(out.exporter, c.exporter...)
		out.inIf = append(out.inIf, c.inIf...)
		out.outIf = append(out.outIf, c.outIf...)
		out.proto = append(out.proto, c.proto...)
		out.ipVersion = append(out.ipVersion, c.ipVersion...)
		out.bytes = append(out.bytes, c.bytes...)
		out.packets = append(out.packets, c.packets...)
		out.flows = append(out.flows, c.flows...)
	}
	return out
}
