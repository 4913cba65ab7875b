package duckdb

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/snappy"

	"github.com/yagura/yagura/internal/flowfilter"
	"github.com/yagura/yagura/internal/flowstore"
)

// The spool is where raw flows land: each InsertFlows writes its flows
// as a Parquet file per day (Snappy, one row group) next to the database,
// and a background compactor later moves whole files into the day tables
// in one large INSERT … SELECT each.
//
// Why: appending to DuckDB costs about 2.5 µs of CPU per flow at the
// collector's batch sizes (its log, checkpoint compression and the
// appender's per-value calls), which held the collector to ~250k flows/s
// on two cores. Writing the same batch as Parquet from Go costs ~0.3 µs a
// flow, and DuckDB's vectorised INSERT from Parquet, done in bulk off the
// collector's path, about a third of the appender's cost. Queries read the
// day tables and the spool files together (read_parquet), so a flow is
// queryable as soon as InsertFlows returns, as before.
//
// Consistency: a query lists the spool files and starts its statement
// (which fixes DuckDB's snapshot) under view's read lock; the compactor
// commits its INSERT and removes the files from the list under the write
// lock, so every statement sees each flow exactly once. A file still read
// by a running statement is deleted when that statement finishes.
//
// Rollups: a file's 5-minute rollups are summed from it by the queries
// that need them until its compaction appends them to the rollups table,
// in the transaction that moves its flows, so they always agree.
//
// Crash safety: a batch's files are written as .tmp, synced, and renamed
// once all are; leftover .tmp files are deleted at open. A compaction
// commits the rows with their seq, so a file whose seq range is found in
// its day table at open was compacted before a crash and is deleted
// rather than read twice.

const (
	spoolExt = ".parquet"
	// compactMaxFiles bounds one compaction transaction (and the memory
	// DuckDB needs for it): 256 batches of 50,000 flows.
	compactMaxFiles = 256
	// aggregatePerTick bounds the hours the compactor sums at a time.
	aggregatePerTick = 6
)

// spoolRow is a flow in a spool file; the names and types are the day
// tables' (parquet-go writes unsigned integers with their width, which
// DuckDB reads back as UTINYINT … UBIGINT, and [16]byte as BLOB).
type spoolRow struct {
	TimeStart    int64    `parquet:"time_start"`
	TimeEnd      int64    `parquet:"time_end"`
	Exporter     string   `parquet:"exporter,dict"`
	InIf         uint32   `parquet:"in_if"`
	OutIf        uint32   `parquet:"out_if"`
	IPVersion    uint8    `parquet:"ip_version"`
	SrcAddr      [16]byte `parquet:"src_addr"`
	DstAddr      [16]byte `parquet:"dst_addr"`
	SrcPort      uint16   `parquet:"src_port"`
	DstPort      uint16   `parquet:"dst_port"`
	Proto        uint8    `parquet:"proto"`
	TCPFlags     uint8    `parquet:"tcp_flags"`
	Bytes        uint64   `parquet:"bytes"`
	Packets      uint64   `parquet:"packets"`
	SamplingRate uint32   `parquet:"sampling_rate"`
	Seq          int64    `parquet:"seq"`
}

// spoolFile is one file of the spool; refs and gone are guarded by
// Store.mu.
type spoolFile struct {
	path    string
	day     int64
	first   int64 // seq of its first flow
	rows    int64
	size    int64 // bytes on disk
	written time.Time
	refs    int  // statements reading it
	gone    bool // compacted or dropped: delete when refs reaches 0
}

func (s *Store) spoolDir() string { return s.path + ".spool" }

func (s *Store) dayDir(d int64) string {
	return filepath.Join(s.spoolDir(), strings.TrimPrefix(tableName(d), tablePrefix))
}

// writeSpool writes the flows of b, numbered from first on, as one .tmp
// file per day, synced; each file's seqs are consecutive. The caller
// renames them into place with publish.
func (s *Store) writeSpool(b *batch, first int64) ([]*spoolFile, error) {
	var out []*spoolFile
	// The rows are reused from batch to batch: at 1M flows/s a new slice
	// per batch is 100 MB/s of garbage holding strings, which the GC scans.
	rp, _ := s.rowsPool.Get().(*[]spoolRow)
	if rp == nil {
		rp = new([]spoolRow)
	}
	rows := (*rp)[:0]
	defer func() {
		clear(rows) // drop the exporter strings
		*rp = rows[:0]
		s.rowsPool.Put(rp)
	}()
	for _, d := range b.days {
		rows = rows[:0]
		seq0 := first
		var exporter netip.Addr
		var exporterText string
		for i := range b.flows {
			if b.dayIdx[i] != d {
				continue
			}
			r := &b.flows[i]
			if r.Exporter != exporter || exporterText == "" {
				exporter, exporterText = r.Exporter, flowstore.ExporterText(r.Exporter)
			}
			rows = append(rows, spoolRow{
				TimeStart: r.TimeStart.UnixMicro(), TimeEnd: r.TimeEnd.UnixMicro(),
				Exporter: exporterText, InIf: r.InIf, OutIf: r.OutIf, IPVersion: r.IPVersion,
				SrcAddr: flowfilter.Addr16(r.SrcAddr), DstAddr: flowfilter.Addr16(r.DstAddr),
				SrcPort: r.SrcPort, DstPort: r.DstPort, Proto: r.Proto, TCPFlags: r.TCPFlags,
				Bytes: r.Bytes, Packets: r.Packets, SamplingRate: max(r.SamplingRate, 1),
				Seq: first,
			})
			first++
		}
		f := &spoolFile{day: d, first: seq0, rows: int64(len(rows))}
		f.path = filepath.Join(s.dayDir(d), fmt.Sprintf("%020d%s", seq0, spoolExt))
		size, err := writeParquet(f.path+".tmp", rows)
		if err != nil {
			removeTmp(out)
			return nil, err
		}
		f.size = size
		out = append(out, f)
	}
	return out, nil
}

func writeParquet(path string, rows []spoolRow) (size int64, err error) {
	if err := mkdirSynced(filepath.Dir(path)); err != nil {
		return 0, err
	}
	fh, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, fmt.Errorf("spool: %w", err)
	}
	defer func() {
		if cerr := fh.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("spool: close %s: %w", path, cerr)
		}
		if err != nil {
			os.Remove(path) //nolint:errcheck // the write's error is what matters
		}
	}()
	w := parquet.NewGenericWriter[spoolRow](fh, parquet.Compression(&fastSnappy{}), parquet.MaxRowsPerRowGroup(int64(max(len(rows), 1))))
	if _, err := w.Write(rows); err != nil {
		return 0, fmt.Errorf("spool: write %s: %w", path, err)
	}
	if err := w.Close(); err != nil {
		return 0, fmt.Errorf("spool: write %s: %w", path, err)
	}
	// Synced like DuckDB's own commit: a batch InsertFlows accepted
	// survives a power cut.
	if err := fh.Sync(); err != nil {
		return 0, fmt.Errorf("spool: sync %s: %w", path, err)
	}
	fi, err := fh.Stat()
	if err != nil {
		return 0, fmt.Errorf("spool: %w", err)
	}
	return fi.Size(), nil
}

// mkdirSynced creates dir (a day's folder) and its parent if missing,
// syncing each parent so that they survive a power cut.
func mkdirSynced(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("spool: %w", err)
		}
		if err := syncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

// fastSnappy is parquet-go's Snappy codec with the fast encoder of the
// same library (klauspost/compress) that it calls: its default, the
// "better" encoder, took a quarter of the server's CPU at 1M flows/s for
// files 6 % smaller. Any Snappy decoder reads either.
type fastSnappy struct{ snappy.Codec }

func (fastSnappy) Encode(dst, src []byte) ([]byte, error) { return s2.EncodeSnappy(dst, src), nil }

func removeTmp(fs []*spoolFile) {
	for _, f := range fs {
		os.Remove(f.path + ".tmp") //nolint:errcheck // best effort after a failed batch
	}
}

// publish renames the batch's files into place, syncs their folders (a
// rename is durable only then) and lists them for queries. A batch
// spanning midnight that a crash interrupts between its two renames keeps
// the first day's file: the one way a batch can be stored in part.
func (s *Store) publish(fs []*spoolFile) error {
	now := time.Now()
	for i, f := range fs {
		if err := os.Rename(f.path+".tmp", f.path); err != nil {
			removeTmp(fs[i:])
			for _, g := range fs[:i] {
				os.Remove(g.path) //nolint:errcheck // best effort after a failed batch
			}
			return fmt.Errorf("spool: %w", err)
		}
		f.written = now
	}
	for _, f := range fs {
		if err := syncDir(filepath.Dir(f.path)); err != nil {
			return err
		}
	}
	s.mu.Lock()
	for _, f := range fs {
		s.spool[f.day] = append(s.spool[f.day], f)
	}
	s.mu.Unlock()
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("spool: sync %s: %w", dir, err)
	}
	return nil
}

// acquire returns the spool files of days ds for a statement, which must
// call release when its rows are read. Callers hold view's read lock.
func (s *Store) acquire(ds []int64) map[int64][]*spoolFile {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[int64][]*spoolFile{}
	for _, d := range ds {
		for _, f := range s.spool[d] {
			f.refs++
			out[d] = append(out[d], f)
		}
	}
	return out
}

func (s *Store) release(files map[int64][]*spoolFile) {
	var del []string
	s.mu.Lock()
	for _, fs := range files {
		for _, f := range fs {
			if f.refs--; f.refs == 0 && f.gone {
				del = append(del, f.path)
			}
		}
	}
	s.mu.Unlock()
	removeFiles(del)
}

// retire takes files off the list, deleting those no statement reads.
func (s *Store) retire(fs []*spoolFile) {
	var del []string
	s.mu.Lock()
	for _, f := range fs {
		f.gone = true
		s.spool[f.day] = slices.DeleteFunc(s.spool[f.day], func(g *spoolFile) bool { return g == f })
		if len(s.spool[f.day]) == 0 {
			delete(s.spool, f.day)
		}
		if f.refs == 0 {
			del = append(del, f.path)
		}
	}
	s.mu.Unlock()
	removeFiles(del)
}

func removeFiles(paths []string) {
	for _, p := range paths {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			slog.Warn("flow store: delete spool file", "path", p, "err", err)
		}
	}
}

// rollupSelect sums the flows of src into rollup rows.
func rollupSelect(src string) string {
	return "SELECT " + floorTo("time_start", bucketMicro) + " AS bucket, exporter, in_if, out_if, proto, ip_version, " +
		sumCol("sum(bytes)") + ", " + sumCol("sum(packets)") + ", CAST(count(*) AS UBIGINT) FROM " + src + " GROUP BY ALL"
}

// floorTo is SQL rounding col down to a multiple of unit (DuckDB's //
// truncates towards zero, which is wrong before 1970).
func floorTo(col string, unit int64) string {
	u := strconv.FormatInt(unit, 10)
	return "(" + col + " - ((" + col + " % " + u + " + " + u + ") % " + u + "))"
}

// parquetList is a read_parquet argument naming files.
func parquetList(fs []*spoolFile) string {
	var b strings.Builder
	b.WriteString("read_parquet([")
	for i, f := range fs {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("'" + strings.ReplaceAll(f.path, "'", "''") + "'")
	}
	b.WriteString("])")
	return b.String()
}

// compact moves the spool files written before cut into their day
// tables, oldest day first, at most compactMaxFiles per transaction.
// Callers hold ddl (shared or exclusive).
func (s *Store) compact(ctx context.Context, cut time.Time) error {
	s.compacting.Lock()
	defer s.compacting.Unlock()
	for {
		d, fs := s.compactable(cut)
		if len(fs) == 0 {
			return nil
		}
		if err := s.compactFiles(ctx, d, fs); err != nil {
			// A damaged file would stop every compaction (and retention,
			// which compacts first): set it aside and go on.
			if n := s.quarantineDamaged(fs); n > 0 && ctx.Err() == nil {
				continue
			}
			return fmt.Errorf("duckdb flow store: compact spool of %s: %w", tableName(d), err)
		}
	}
}

func (s *Store) compactable(cut time.Time) (int64, []*spoolFile) {
	s.mu.Lock()
	defer s.mu.Unlock()
	days := make([]int64, 0, len(s.spool))
	for d := range s.spool {
		days = append(days, d)
	}
	slices.Sort(days)
	for _, d := range days {
		var fs []*spoolFile
		for _, f := range s.spool[d] {
			if !f.written.After(cut) && len(fs) < compactMaxFiles {
				fs = append(fs, f)
			}
		}
		if len(fs) > 0 {
			return d, fs
		}
	}
	return 0, nil
}

func (s *Store) compactFiles(ctx context.Context, d int64, fs []*spoolFile) error {
	if err := s.ensureTables(ctx, []int64{d}); err != nil {
		return err
	}
	return s.tx(ctx, func(conn *sql.Conn) error {
		src := parquetList(fs)
		if _, err := conn.ExecContext(ctx, "INSERT INTO "+tableName(d)+" ("+allColumns+") SELECT "+allColumns+" FROM "+src); err != nil {
			return fmt.Errorf("insert: %w", err)
		}
		if _, err := conn.ExecContext(ctx, "INSERT INTO rollups ("+rollupColumns+") "+rollupSelect(src)); err != nil {
			return fmt.Errorf("rollups: %w", err)
		}
		return s.compactHosts(ctx, conn, d, fs)
	}, func() { s.retire(fs) })
}

// compactLoop compacts, every `every`, the spool files older than age,
// and sums the hours that are due (hosts.go), until ctx ends.
func (s *Store) compactLoop(ctx context.Context, every, age time.Duration) {
	defer close(s.compactDone)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.ddl.RLock()
		err := s.compact(ctx, time.Now().Add(-age))
		if err == nil {
			err = s.aggregate(ctx, time.Now(), aggregatePerTick)
		}
		s.ddl.RUnlock()
		if err != nil && ctx.Err() == nil {
			slog.Error("flow store: compaction failed; flows stay in the spool and are still queried", "err", err)
		}
	}
}

// openSpool lists the spool left by an earlier run: .tmp files (batches
// whose InsertFlows did not succeed) are deleted, and so are files whose
// flows a compaction had committed before a crash. It returns the highest
// seq found.
func (s *Store) openSpool(ctx context.Context) (int64, error) {
	dirs, err := os.ReadDir(s.spoolDir())
	if errors.Is(err, fs.ErrNotExist) {
		return -1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("spool: %w", err)
	}
	maxSeq := int64(-1)
	for _, de := range dirs {
		d, ok := parseTable(tablePrefix + de.Name())
		if !ok || !de.IsDir() {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(s.spoolDir(), de.Name()))
		if err != nil {
			return 0, fmt.Errorf("spool: %w", err)
		}
		for _, e := range ents {
			p := filepath.Join(s.spoolDir(), de.Name(), e.Name())
			if strings.HasSuffix(e.Name(), ".tmp") {
				removeFiles([]string{p})
				continue
			}
			first, err := strconv.ParseInt(strings.TrimSuffix(e.Name(), spoolExt), 10, 64)
			if err != nil || !strings.HasSuffix(e.Name(), spoolExt) {
				continue // not ours
			}
			rows, err := parquetRows(p)
			if err != nil {
				if qerr := s.quarantine(p, err); qerr != nil {
					return 0, qerr
				}
				continue
			}
			f := &spoolFile{path: p, day: d, first: first, rows: rows}
			done, err := s.compacted(ctx, f)
			if err != nil {
				return 0, err
			}
			if done {
				removeFiles([]string{p})
				continue
			}
			if fi, err := e.Info(); err == nil {
				f.written, f.size = fi.ModTime(), fi.Size()
			}
			s.spool[d] = append(s.spool[d], f)
			maxSeq = max(maxSeq, first+rows-1)
		}
		slices.SortFunc(s.spool[d], func(a, b *spoolFile) int { return cmp.Compare(a.first, b.first) })
	}
	return maxSeq, nil
}

// quarantineDir is where damaged spool files are moved, to be looked at
// rather than read.
func (s *Store) quarantineDir() string { return filepath.Join(s.spoolDir(), "damaged") }

// quarantine moves a spool file that cannot be read aside, with an error
// in the log naming it.
func (s *Store) quarantine(path string, why error) error {
	if err := os.MkdirAll(s.quarantineDir(), 0o700); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	to := filepath.Join(s.quarantineDir(), filepath.Base(filepath.Dir(path))+"-"+filepath.Base(path))
	if err := os.Rename(path, to); err != nil {
		return fmt.Errorf("spool: set aside %s: %w", path, err)
	}
	slog.Error("flow store: a spool file cannot be read; it was set aside and its flows are not queried", "file", to, "err", why)
	return nil
}

// quarantineDamaged sets aside those of fs whose Parquet footer cannot
// be read, and returns how many.
func (s *Store) quarantineDamaged(fs []*spoolFile) int {
	var bad []*spoolFile
	for _, f := range fs {
		if _, err := parquetRows(f.path); err != nil {
			if s.quarantine(f.path, err) == nil {
				bad = append(bad, f)
			}
		}
	}
	s.mu.Lock()
	for _, f := range bad {
		s.spool[f.day] = slices.DeleteFunc(s.spool[f.day], func(g *spoolFile) bool { return g == f })
	}
	s.mu.Unlock()
	return len(bad)
}

func parquetRows(path string) (int64, error) {
	fh, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("spool: %w", err)
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return 0, fmt.Errorf("spool: %w", err)
	}
	pf, err := parquet.OpenFile(fh, fi.Size(), parquet.SkipPageIndex(true), parquet.SkipBloomFilters(true))
	if err != nil {
		return 0, fmt.Errorf("spool: read %s: %w", path, err)
	}
	return pf.NumRows(), nil
}

// compacted reports whether f's flows are in its day table already.
func (s *Store) compacted(ctx context.Context, f *spoolFile) (bool, error) {
	if !s.days[f.day] || f.rows == 0 {
		return f.rows == 0, nil
	}
	var n int64
	err := s.db.QueryRowContext(ctx, "SELECT count(*) FROM (SELECT 1 FROM "+tableName(f.day)+" WHERE seq BETWEEN ? AND ? LIMIT 1)", f.first, f.first+f.rows-1).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("spool: check %s: %w", f.path, err)
	}
	return n > 0, nil
}

// spoolBytes is the size of the spool's listed files (not of retired
// ones a running statement still holds: retention cannot free those).
func (s *Store) spoolBytes() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var n int64
	for _, fs := range s.spool {
		for _, f := range fs {
			n += f.size
		}
	}
	return n
}

// Compact moves every spool file into the day tables now, whatever its
// age, and sums the hours that are due (the compactor does both in the
// background; tests and tools use it to reach a settled store).
func (s *Store) Compact(ctx context.Context) error {
	s.ddl.RLock()
	defer s.ddl.RUnlock()
	if err := s.compact(ctx, time.Now().Add(time.Hour)); err != nil {
		return err
	}
	return s.aggregate(ctx, time.Now(), 0)
}
