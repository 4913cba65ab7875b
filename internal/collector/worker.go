package collector

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"math/bits"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/yagura/yagura/internal/flowdecode"
	"github.com/yagura/yagura/internal/flowstore"
)

// worker reads one socket (readLoop) and writes what it decoded to the
// sink (writeLoop). The reader owns the fields without a comment; the
// queue between the two is bounded by Config.Backlog.
type worker struct {
	c     *Collector
	l     *listener
	conn  *net.UDPConn
	rd    reader
	sflow bool

	datagrams   atomic.Uint64 // read by Listeners
	kernelDrops atomic.Uint64 // read by Listeners
	lastDrops   uint32        // the socket's drop counter in the last datagram

	flows       []flowdecode.Flow       // decoder output, reused
	batch       []flowstore.Record      // being filled
	batchStart  time.Time               // when batch got its first flow
	deadlineSet bool                    // a read deadline is armed for batchStart+FlushEvery
	buffers     int                     // batch slices allocated, at most Backlog+2
	free        chan []flowstore.Record // written batches back from the writer
	queue       chan batchItem          // to the writer

	// Per-reader caches: the last exporter looked up, and the last
	// sampling rate seen per exporter and domain.
	lastAddr   netip.Addr
	lastExp    *exporterState
	sampExp    *exporterState
	sampDomain uint32
	sampSeen   rateSeen

	lastFinished <-chan struct{} // the last queued item's finished

	poked   atomic.Bool // Flush or shutdown wants the reader's attention
	mu      sync.Mutex  // guards waiters and closed
	waiters []chan error
	closed  bool
}

// batchItem is a batch of flows for the writers and whom to tell once it
// is written. Either may be empty. Several writers take items from one
// queue, so one exporter's stream (which lands on one socket) can keep
// more than one store insert going; finished is closed once this item and
// every item before it are written, so a Flush still answers only when
// everything batched before it is stored.
type batchItem struct {
	flows    []flowstore.Record
	done     []chan error
	prev     <-chan struct{} // the previous item's finished
	finished chan struct{}
}

func newWorker(c *Collector, l *listener, conn *net.UDPConn, rd reader) *worker {
	slots := c.cfg.Backlog + 2 // Backlog waiting, one being written, one being filled
	return &worker{
		c: c, l: l, conn: conn, rd: rd, sflow: l.protocol == ListenerSFlow,
		batch:   newBatch(c.cfg.BatchFlows),
		buffers: 1,
		free:    make(chan []flowstore.Record, slots),
		// Every batch slice but the reader's, plus one item for a Flush
		// (Flush calls are serialised, and each waits for its item).
		queue: make(chan batchItem, slots),
	}
}

// poke interrupts a read in progress, so the reader looks at flush
// requests and at c.stopping. The flag is set before the deadline: a
// reader that re-arms its own deadline afterwards still sees the flag
// before its next read.
func (w *worker) poke() {
	w.poked.Store(true)
	_ = w.conn.SetReadDeadline(time.Unix(1, 0))
}

// requestFlush asks the reader to hand its batch to the writer now. The
// returned channel gets the outcome once that batch is written; nil means
// the worker has stopped (and so has written everything).
func (w *worker) requestFlush() chan error {
	done := make(chan error, 1)
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.waiters = append(w.waiters, done)
	w.mu.Unlock()
	w.poke()
	return done
}

func (w *worker) takeWaiters() []chan error {
	w.mu.Lock()
	defer w.mu.Unlock()
	ws := w.waiters
	w.waiters = nil
	return ws
}

func (w *worker) readLoop() {
	defer w.finish()
	c := w.c
	for {
		if len(w.batch) > 0 && !w.deadlineSet {
			_ = w.conn.SetReadDeadline(w.batchStart.Add(c.cfg.FlushEvery))
			w.deadlineSet = true
		}
		if w.poked.Swap(false) {
			if c.stopping.Load() {
				return
			}
			if ws := w.takeWaiters(); len(ws) > 0 {
				w.submit(ws, false)
			}
		}
		if c.testHookRead != nil {
			c.testHookRead()
		}
		dgs, err := w.rd.read()
		if err != nil {
			switch {
			case errors.Is(err, os.ErrDeadlineExceeded):
				// FlushEvery passed, or a poke. Clear the deadline before
				// looking at the flag (at the top), not after.
				_ = w.conn.SetReadDeadline(time.Time{})
				w.deadlineSet = false
				if len(w.batch) > 0 && time.Since(w.batchStart) >= c.cfg.FlushEvery {
					w.submit(nil, false)
				}
			case errors.Is(err, net.ErrClosed):
				return
			default:
				if ok, n := c.readLog.allow(time.Now()); ok {
					c.log.Warn("reading a flow socket failed", "address", w.l.addr.String(), "err", err, "similar_errors_not_logged", n)
				}
				time.Sleep(10 * time.Millisecond) // do not spin on a persistent error
			}
			continue
		}
		now := time.Now()
		for i := range dgs {
			w.handle(&dgs[i], now)
		}
	}
}

// finish hands the last batch to the writer, answers flush requests that
// came too late to be served, and closes the queue, which ends writeLoop.
func (w *worker) finish() {
	w.mu.Lock()
	w.closed = true
	ws := w.waiters
	w.waiters = nil
	w.mu.Unlock()
	w.submit(ws, true)
	close(w.queue)
}

// submit hands the batch being filled (if any) to the writer, with done
// channels to answer once it is written. When the backlog is full the
// batch is dropped and counted, unless wait is set (shutdown), where it
// waits for the writer to free a slot.
func (w *worker) submit(done []chan error, wait bool) {
	item := batchItem{done: done}
	if len(w.batch) > 0 {
		next, ok := w.takeBuffer(wait)
		if ok {
			item.flows, w.batch = w.batch, next
		} else {
			w.c.drop(len(w.batch))
			w.batch = w.batch[:0]
		}
	}
	if item.flows != nil || len(item.done) > 0 {
		item.prev, item.finished = w.lastFinished, make(chan struct{})
		w.lastFinished = item.finished
		w.queue <- item // never blocks: see newWorker
	}
}

// newBatch allocates a batch slice. A large batch_flows is not allocated
// up front: the slice grows to it once and keeps its size when reused.
func newBatch(batchFlows int) []flowstore.Record {
	return make([]flowstore.Record, 0, min(batchFlows, 4096))
}

// takeBuffer returns an empty batch slice: one the writer is done with, a
// new one while fewer than Backlog+2 exist, or (if wait) the next the
// writer frees. ok is false when the backlog is full.
func (w *worker) takeBuffer(wait bool) ([]flowstore.Record, bool) {
	select {
	case b := <-w.free:
		return b, true
	default:
	}
	if w.buffers < w.c.cfg.Backlog+2 {
		w.buffers++
		return newBatch(w.c.cfg.BatchFlows), true
	}
	if wait {
		return <-w.free, true
	}
	return nil, false
}

func (w *worker) writeLoop() {
	for item := range w.queue {
		var err error
		if len(item.flows) > 0 {
			err = w.c.write(item.flows)
			w.free <- item.flows[:0]
		}
		if item.prev != nil {
			<-item.prev
		}
		close(item.finished)
		for _, d := range item.done {
			d <- err
		}
	}
}

// write stores flows, retrying with backoff while the sink fails. It gives
// up only when Run is stopping and the sink has kept failing for
// shutdownGrace; the flows are then counted as dropped.
func (c *Collector) write(flows []flowstore.Record) error {
	start := time.Now()
	defer func() { c.m.writeSeconds.Observe(time.Since(start).Seconds()) }()
	delay := retryMin
	for attempt := 1; ; attempt++ {
		// Not Run's context: the last batches are written after it ends.
		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
		err := c.sink.InsertFlows(ctx, flows)
		cancel()
		if err == nil {
			return nil
		}
		c.m.storeErrors.Inc()
		if ok, n := c.storeLog.allow(time.Now()); ok {
			c.log.Error("writing flows to the store failed; retrying, flows are kept meanwhile",
				"flows", len(flows), "attempt", attempt, "err", err, "similar_errors_not_logged", n)
		}
		if c.stopping.Load() && time.Since(time.Unix(0, c.stopAt.Load())) >= shutdownGrace {
			c.m.dropped.Add(float64(len(flows)))
			c.log.Error("giving up writing flows at shutdown: the store kept failing", "flows_dropped", len(flows), "err", err)
			return err
		}
		select {
		case <-time.After(delay):
		case <-c.stopped:
			// Shutting down: keep retrying, but no longer wait out a long
			// backoff.
			time.Sleep(min(delay, retryMin))
		}
		delay = min(2*delay, retryMax)
	}
}

// drop counts flows dropped because the writer is Backlog batches behind.
func (c *Collector) drop(n int) {
	c.m.dropped.Add(float64(n))
	if ok, held := c.dropLog.allow(time.Now()); ok {
		c.log.Error("the flow store is too slow: dropping decoded flows (the backlog of batches per socket is full; "+
			"UDP has no back-pressure). Check the store's health, or raise batch_flows or backlog",
			"flows", n, "backlog_batches", c.cfg.Backlog, "batch_flows", c.cfg.BatchFlows, "similar_drops_not_logged", held)
	}
}

// handle decodes one datagram into the batch.
func (w *worker) handle(d *datagram, now time.Time) {
	c := w.c
	w.datagrams.Add(1)
	if d.hasDrops {
		// The counter is the socket's total since it was created, and it
		// was created for this worker.
		if delta := d.drops - w.lastDrops; delta != 0 {
			w.kernelDrops.Add(uint64(delta))
			c.m.kernelDrops.Add(float64(delta))
		}
		w.lastDrops = d.drops
	}
	c.m.datagrams[w.protocolOf(d.buf)].Inc()
	if d.truncated {
		c.m.decodeErrors[reasonTruncated].Inc()
		if e := w.exporter(d.src, now); e != nil {
			e.packets.Add(1)
			e.decodeErrors.Add(1)
		}
		return
	}
	e := w.exporter(d.src, now)
	if e == nil {
		c.m.decodeErrors[reasonExporterLimit].Inc()
		if ok, n := c.decodeLog.allow(now); ok {
			c.log.Warn("ignoring flows from a new exporter: max_exporters reached (spoofed sources, or raise the limit)",
				"exporter", d.src.String(), "max_exporters", c.cfg.MaxExporters, "similar_warnings_not_logged", n)
		}
		return
	}
	e.packets.Add(1)
	e.lastSeen.Store(now.UnixNano())

	var err error
	if w.sflow {
		w.flows, err = c.dec.AppendSFlow(w.flows[:0], d.src, d.buf, now)
	} else {
		w.flows, err = c.dec.AppendNetFlow(w.flows[:0], d.src, d.buf, now)
	}
	if err != nil {
		w.decodeError(e, err, now)
	}
	if len(w.flows) == 0 {
		return
	}
	e.protocols.Or(protocolBit(w.flows[0].Protocol))
	override := e.override.Load()
	stored := 0
	for i := range w.flows {
		f := &w.flows[i]
		if !f.SrcAddr.IsValid() || !f.DstAddr.IsValid() {
			// Not an IP flow (an IPFIX record of MAC addresses only, say):
			// the store keys everything on addresses.
			c.m.decodeErrors[reasonNotIP].Inc()
			continue
		}
		seen := rateSeen{f.SamplingRate, f.SamplingSource}
		if e != w.sampExp || f.ObservationDomain != w.sampDomain || seen != w.sampSeen {
			e.observeSampling(f.ObservationDomain, seen, now)
			w.sampExp, w.sampDomain, w.sampSeen = e, f.ObservationDomain, seen
		}
		rate := f.SamplingRate
		if override != 0 {
			rate = override
		}
		rate = max(rate, 1)
		if len(w.batch) == 0 {
			w.batchStart = now
		}
		w.batch = append(w.batch, flowstore.Record{
			TimeStart:    f.TimeStart,
			TimeEnd:      f.TimeEnd,
			Exporter:     d.src,
			InIf:         f.InIf,
			OutIf:        f.OutIf,
			IPVersion:    f.IPVersion,
			SrcAddr:      f.SrcAddr,
			DstAddr:      f.DstAddr,
			SrcPort:      f.SrcPort,
			DstPort:      f.DstPort,
			Proto:        f.Proto,
			TCPFlags:     f.TCPFlags,
			Bytes:        scale(f.Bytes, rate),
			Packets:      scale(f.Packets, rate),
			SamplingRate: rate,
		})
		stored++
		if len(w.batch) >= c.cfg.BatchFlows {
			w.submit(nil, false)
		}
	}
	e.flows.Add(uint64(stored))
	c.m.records.Add(float64(stored))
}

// scale multiplies a sampled counter by the sampling rate, saturating
// rather than wrapping (only a hostile or broken exporter sends counters
// that large).
func scale(v uint64, rate uint32) uint64 {
	hi, lo := bits.Mul64(v, uint64(rate))
	if hi != 0 {
		return math.MaxUint64
	}
	return lo
}

// exporter returns the state of the exporter at addr, nil when it is new
// and there are already MaxExporters.
func (w *worker) exporter(addr netip.Addr, now time.Time) *exporterState {
	if w.lastExp != nil && addr == w.lastAddr {
		return w.lastExp
	}
	e := w.c.reg.get(addr, now)
	if e != nil {
		w.lastAddr, w.lastExp = addr, e
	}
	return e
}

// decodeError counts a datagram the decoder (partly) refused.
func (w *worker) decodeError(e *exporterState, err error, now time.Time) {
	c := w.c
	if n := countTemplateErrors(err); n > 0 {
		e.templateMisses.Add(uint64(n))
		c.m.decodeErrors[reasonTemplateUnknown].Add(float64(n))
	}
	if !errors.Is(err, flowdecode.ErrMalformed) {
		return
	}
	e.decodeErrors.Add(1)
	c.m.decodeErrors[reasonMalformed].Inc()
	if ok, n := c.decodeLog.allow(now); ok {
		c.log.Warn("malformed flow datagram", "err", err, "similar_warnings_not_logged", n)
	}
}

// countTemplateErrors counts the data sets in err that waited for a
// template.
func countTemplateErrors(err error) int {
	var te *flowdecode.TemplateError
	if errors.As(err, &te) && !isJoined(err) {
		return 1
	}
	n := 0
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			n += countTemplateErrors(e)
		}
	}
	return n
}

func isJoined(err error) bool {
	_, ok := err.(interface{ Unwrap() []error })
	return ok
}

// protocolOf names the protocol a datagram claims by its version field,
// for the datagrams counter.
func (w *worker) protocolOf(b []byte) string {
	if w.sflow {
		if len(b) >= 4 && binary.BigEndian.Uint32(b) == 5 {
			return flowdecode.ProtocolSFlow5
		}
		return protoUnknown
	}
	if len(b) < 2 {
		return protoUnknown
	}
	switch binary.BigEndian.Uint16(b) {
	case 5:
		return flowdecode.ProtocolNetFlow5
	case 9:
		return flowdecode.ProtocolNetFlow9
	case 10:
		return flowdecode.ProtocolIPFIX
	}
	return protoUnknown
}
