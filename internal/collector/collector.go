// Package collector receives flow datagrams (NetFlow v5/v9, IPFIX, sFlow v5)
// on UDP, decodes them with internal/flowdecode, applies sampling rates,
// keeps per-exporter state and counters, and writes batches of flows to a
// Sink (the flow store). The server imports it; nothing else should.
//
// Each listening address gets several sockets sharing it (SO_REUSEPORT).
// Each socket has a reader goroutine, which reads datagrams in batches,
// decodes them and fills a batch of flows, and a writer goroutine, which
// writes full batches to the sink and retries when the sink fails. The
// two meet in a bounded queue: UDP has no back-pressure, so when the store
// falls behind further than the queue, new batches are dropped and
// counted rather than the reader stalling (which would make the kernel
// drop datagrams, uncounted per exporter).
package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/yagura/yagura/internal/flowdecode"
)

// Timing of writes, retries, logs and template saves.
const (
	// writeTimeout bounds one InsertFlows call.
	writeTimeout = 30 * time.Second
	// retryMin and retryMax bound the backoff between attempts to write a
	// batch the sink refused.
	retryMin = 100 * time.Millisecond
	retryMax = 5 * time.Second
	// shutdownGrace is how long, after Run's context ends, a failing sink
	// is retried before the flows still waiting are given up (and counted).
	shutdownGrace = 10 * time.Second
	// saveEvery is how often changed templates are written to
	// Config.TemplatesFile.
	saveEvery = 30 * time.Second
	// logEvery limits repeated warnings (decode errors, store errors,
	// dropped flows) to one per interval each.
	logEvery = time.Minute
	// readBatch is how many datagrams one recvmmsg(2) may return.
	readBatch = 32
)

// Collector receives, decodes and stores flows. Create it with New and
// start it with Run; the other methods are safe to call at any time from
// any goroutine.
type Collector struct {
	cfg  Config
	sink Sink
	log  *slog.Logger
	m    *metrics
	dec  *flowdecode.Decoder
	reg  *registry

	// readBatch is how many datagrams a read may return (1: one recvmsg
	// per datagram, for comparison in benchmarks).
	readBatch int
	// testHookRead, when set, is called by each reader before each read.
	testHookRead func()

	started  atomic.Bool
	ready    chan struct{}
	stopping atomic.Bool
	stopped  chan struct{} // closed when Run's context ends
	stopAt   atomic.Int64  // unix nanoseconds when stopping began

	mu        sync.Mutex // guards listeners and workers, set once by Run
	listeners []*listener
	workers   []*worker

	flushMu sync.Mutex // one Flush at a time

	saveMu sync.Mutex // guards saved
	saved  []byte     // templates as last loaded or saved

	// Rate-limited logs.
	decodeLog, storeLog, dropLog, readLog limitedLog
	bufferWarned                          atomic.Bool
}

// New returns a collector for cfg, which it validates; zero numeric fields
// take their DefaultConfig values. It opens no socket: Run does. reg may be
// nil (no metrics registered).
func New(cfg Config, sink Sink, log *slog.Logger, reg prometheus.Registerer) (*Collector, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("flow collector configuration: %w", err)
	}
	if sink == nil {
		return nil, errors.New("flow collector: no sink to store flows in")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Collector{
		cfg:       cfg,
		sink:      sink,
		log:       log.With("component", "collector"),
		m:         newMetrics(reg),
		dec:       flowdecode.NewWithOptions(flowdecode.Options{SkipCommunityID: true}),
		reg:       newRegistry(cfg.MaxExporters),
		readBatch: readBatch,
		ready:     make(chan struct{}),
		stopped:   make(chan struct{}),
	}, nil
}

// Ready is closed once every socket is bound.
func (c *Collector) Ready() <-chan struct{} { return c.ready }

// listener is one configured address and its sockets.
type listener struct {
	protocol   string // ListenerNetFlow, ListenerIPFIX or ListenerSFlow
	addr       net.Addr
	readBuffer int // the smallest the kernel granted any of its sockets
	workers    []*worker
}

// Addrs returns the bound addresses of protocol's listeners (ListenerNetFlow,
// ListenerIPFIX or ListenerSFlow), in configuration order; nil before Ready.
func (c *Collector) Addrs(protocol string) []net.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []net.Addr
	for _, l := range c.listeners {
		if l.protocol == protocol {
			out = append(out, l.addr)
		}
	}
	return out
}

// Listeners reports each listening address.
func (c *Collector) Listeners() []ListenerStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]ListenerStatus, 0, len(c.listeners))
	for _, l := range c.listeners {
		st := ListenerStatus{Protocol: l.protocol, Address: l.addr.String(), Sockets: len(l.workers), ReadBuffer: l.readBuffer}
		for _, w := range l.workers {
			st.Datagrams += w.datagrams.Load()
			st.KernelDrops += w.kernelDrops.Load()
		}
		out = append(out, st)
	}
	return out
}

// Exporters reports every exporter seen, sorted by address.
func (c *Collector) Exporters() []ExporterStatus {
	return c.reg.all(c.dec.TemplateCounts())
}

// SetExporterSettings replaces the names and sampling-rate overrides set by
// administrators (from the state store). Exporters missing from m have
// neither.
func (c *Collector) SetExporterSettings(m map[netip.Addr]ExporterSettings) {
	c.reg.setSettings(m)
}

// OnNewExporter sets fn to be called once for each exporter seen for the
// first time since the collector started (the server registers it). Calls
// come from one goroutine, one at a time, shortly after the exporter's
// first datagram; fn should not block for long, or later announcements
// wait.
func (c *Collector) OnNewExporter(fn func(ExporterStatus)) {
	c.reg.onNew.Store(&fn)
}

// Run binds every listener, then receives and stores flows until ctx ends.
// A listener that cannot be bound makes it return that error at once.
// When ctx ends it stops reading, writes the flows it holds (retrying a
// failing sink for a while), saves the templates and returns nil.
func (c *Collector) Run(ctx context.Context) error {
	if !c.started.CompareAndSwap(false, true) {
		return errors.New("flow collector: Run called twice")
	}
	c.loadTemplates()
	listeners, err := c.bind(ctx)
	if err != nil {
		return err
	}
	var workers []*worker
	for _, l := range listeners {
		workers = append(workers, l.workers...)
		c.log.Info("listening for flows", "protocol", l.protocol, "address", l.addr.String(),
			"sockets", len(l.workers), "read_buffer", l.readBuffer)
	}
	c.mu.Lock()
	c.listeners, c.workers = listeners, workers
	c.mu.Unlock()
	close(c.ready)

	var io sync.WaitGroup
	for _, w := range workers {
		io.Go(w.readLoop)
		for range c.cfg.Writers {
			io.Go(w.writeLoop)
		}
	}
	var bg sync.WaitGroup
	bgDone := make(chan struct{})
	bg.Go(func() { c.announceLoop(bgDone) })
	bg.Go(func() { c.saveLoop(bgDone) })

	<-ctx.Done()
	c.stopAt.Store(time.Now().UnixNano())
	c.stopping.Store(true)
	close(c.stopped)
	for _, w := range workers {
		w.poke()
	}
	io.Wait()
	for _, w := range workers {
		_ = w.conn.Close()
	}
	close(bgDone)
	bg.Wait()
	c.reg.announce(c.dec.TemplateCounts())
	c.saveTemplates()
	return nil
}

// bind opens every listener's sockets, closing them all on an error.
func (c *Collector) bind(ctx context.Context) (_ []*listener, err error) {
	var listeners []*listener
	defer func() {
		if err != nil {
			for _, l := range listeners {
				for _, w := range l.workers {
					_ = w.conn.Close()
				}
			}
		}
	}()
	lc := net.ListenConfig{Control: controlSocket}
	for _, group := range []struct {
		protocol string
		addrs    []string
	}{{ListenerNetFlow, c.cfg.NetFlow}, {ListenerIPFIX, c.cfg.IPFIX}, {ListenerSFlow, c.cfg.SFlow}} {
		for i, address := range group.addrs {
			l := &listener{protocol: group.protocol}
			listeners = append(listeners, l)
			bindAddr := address
			for s := range c.cfg.Sockets {
				pc, err := lc.ListenPacket(ctx, "udp", bindAddr)
				if err != nil {
					return nil, fmt.Errorf("flow collector: listen on %s[%d] %q: %w "+
						"(is another program using the port? a port below 1024 needs root or CAP_NET_BIND_SERVICE)",
						group.protocol, i, address, err)
				}
				conn := pc.(*net.UDPConn)
				if s == 0 {
					// Further sockets join the port the first one got
					// (the configured one, or the kernel's pick for port 0).
					l.addr = conn.LocalAddr()
					bindAddr = l.addr.String()
				}
				w, err := c.newWorker(l, conn)
				if err != nil {
					_ = conn.Close()
					return nil, fmt.Errorf("flow collector: set up %s socket on %q: %w", group.protocol, address, err)
				}
				l.workers = append(l.workers, w)
			}
		}
	}
	return listeners, nil
}

// newWorker sets conn's receive buffer and makes its worker.
func (c *Collector) newWorker(l *listener, conn *net.UDPConn) (*worker, error) {
	granted, err := setReadBuffer(conn, c.cfg.ReadBuffer)
	if err != nil {
		return nil, fmt.Errorf("set receive buffer: %w", err)
	}
	if l.readBuffer == 0 || granted < l.readBuffer {
		l.readBuffer = granted
	}
	if granted < c.cfg.ReadBuffer && c.bufferWarned.CompareAndSwap(false, true) {
		c.log.Warn("the kernel capped the flow sockets' receive buffer: bursts may be dropped; "+
			"raise the limit, or run the collector with CAP_NET_ADMIN",
			"asked", c.cfg.ReadBuffer, "granted", granted,
			"fix", fmt.Sprintf("sysctl -w net.core.rmem_max=%d", c.cfg.ReadBuffer))
	}
	var rd reader
	if c.readBatch > 1 {
		if rd, err = newBatchReader(conn, c.readBatch); err != nil {
			return nil, err
		}
	} else {
		rd = newMsgReader(conn)
	}
	return newWorker(c, l, conn, rd), nil
}

// Flush writes the flows batched so far and waits until they are stored
// (or ctx ends). Before Run, and after it returned, there is nothing to
// write.
func (c *Collector) Flush(ctx context.Context) error {
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	c.mu.Lock()
	workers := c.workers
	c.mu.Unlock()
	var waits []chan error
	for _, w := range workers {
		if done := w.requestFlush(); done != nil {
			waits = append(waits, done)
		}
	}
	var errs []error
	for _, done := range waits {
		select {
		case err := <-done:
			errs = append(errs, err)
		case <-ctx.Done():
			return fmt.Errorf("flush flows: %w", ctx.Err())
		}
	}
	return errors.Join(errs...)
}

func (c *Collector) announceLoop(done <-chan struct{}) {
	for {
		select {
		case <-c.reg.wake:
			c.reg.announce(c.dec.TemplateCounts())
		case <-done:
			return
		}
	}
}

// limitedLog lets one message through per logEvery and counts the others,
// for warnings the hot path may raise thousands of times a second.
type limitedLog struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// allow reports whether to log now, and how many were held back since the
// last time it did.
func (l *limitedLog) allow(now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < logEvery {
		l.suppressed++
		return false, 0
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	return true, n
}
