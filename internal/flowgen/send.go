package flowgen

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sync/errgroup"
)

// Config says what a run sends, where and how fast.
type Config struct {
	// Target is the collector's host:port.
	Target   string
	Protocol Protocol
	// Rate is the offered load in flows per second; 0 sends as fast as the
	// workers can.
	Rate float64
	// Flows is how many flows the run sends.
	Flows uint64
	// Seed selects the flows' content; the same seed sends the same flows.
	Seed uint64
	// Workers is the number of sending goroutines. One sustains several
	// million flows/s; more help on slow machines or non-loopback paths.
	Workers int
	// Exporters is the number of exporters simulated: each has its own
	// socket, observation domain (v9 source ID, IPFIX domain, v5 engine
	// type/ID) and sequence numbers. 0 means one per worker; it may not be
	// fewer than Workers, since an exporter's datagrams must leave in order.
	Exporters int
	// Sources are the local addresses exporters send from, exporter i from
	// Sources[i % len(Sources)]. When empty and the target is IPv4
	// loopback, exporter i sends from 127.0.0.1+i so a collector sees
	// distinct exporters; otherwise all use the route's source address and
	// are told apart by observation domain.
	Sources []netip.Addr
	// FlowsPerDatagram: 0 means DefaultFlowsPerDatagram(Protocol).
	FlowsPerDatagram int
	// TemplateEvery: v9 and IPFIX templates go out in every
	// TemplateEvery-th datagram of an exporter, starting with its first.
	TemplateEvery int
	// Batch is the most datagrams handed to the kernel in one sendmmsg.
	// At modest rates batches are smaller, so the stream stays smooth.
	Batch int
	// WriteBuffer is each socket's send buffer (SO_SNDBUF) in bytes.
	WriteBuffer int
	// CatchUp is how far a worker may fall behind its schedule (when the
	// machine was busy) and still make up for it by sending faster.
	// Beyond that it gives the time up instead: a collector should not
	// be judged on a burst the rate did not ask for. The time given up is
	// reported (Report.Slipped) and lowers the achieved rate.
	CatchUp time.Duration
}

// DefaultConfig returns a NetFlow v5 run of one million flows to
// 127.0.0.1:2055, unpaced, from one worker.
func DefaultConfig() Config {
	return Config{
		Target:        "127.0.0.1:2055",
		Protocol:      NetFlow5,
		Flows:         1_000_000,
		Seed:          1,
		Workers:       1,
		TemplateEvery: DefaultTemplateEvery,
		Batch:         64,
		WriteBuffer:   4 << 20,
		CatchUp:       10 * time.Millisecond,
	}
}

// withDefaults fills the zero values that have a computed default.
func (c Config) withDefaults() Config {
	if c.Workers == 0 {
		c.Workers = 1
	}
	if c.Exporters == 0 {
		c.Exporters = c.Workers
	}
	if c.FlowsPerDatagram == 0 {
		c.FlowsPerDatagram = DefaultFlowsPerDatagram(c.Protocol)
	}
	if c.TemplateEvery == 0 {
		c.TemplateEvery = DefaultTemplateEvery
	}
	if c.Batch == 0 {
		c.Batch = 64
	}
	return c
}

// Validate reports what is wrong with c, naming the setting.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if _, err := ParseProtocol(string(c.Protocol)); err != nil {
		errs = append(errs, err)
	}
	if _, _, err := net.SplitHostPort(c.Target); err != nil {
		errs = append(errs, fmt.Errorf("target %q: want host:port, e.g. 127.0.0.1:2055: %v", c.Target, err))
	}
	if c.Flows == 0 {
		errs = append(errs, errors.New("flows: must be at least 1"))
	}
	if c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) {
		errs = append(errs, fmt.Errorf("rate %v: must be a number of flows/s ≥ 0 (0: as fast as possible)", c.Rate))
	}
	if c.Workers < 1 || c.Workers > 1024 {
		errs = append(errs, fmt.Errorf("workers %d: must be between 1 and 1024", c.Workers))
	}
	if c.Exporters < c.Workers {
		errs = append(errs, fmt.Errorf("exporters %d: must be at least workers (%d): an exporter's datagrams leave from one worker so its sequence numbers rise", c.Exporters, c.Workers))
	}
	if c.Protocol == NetFlow5 && c.Exporters > 1<<16 {
		errs = append(errs, fmt.Errorf("exporters %d: netflow v5 tells at most 65536 apart (engine type and ID)", c.Exporters))
	}
	if maxN := MaxFlowsPerDatagram(c.Protocol); c.FlowsPerDatagram < 1 || c.FlowsPerDatagram > maxN {
		errs = append(errs, fmt.Errorf("flows per datagram %d: must be between 1 and %d for %s", c.FlowsPerDatagram, maxN, c.Protocol))
	}
	if c.TemplateEvery < 1 {
		errs = append(errs, fmt.Errorf("template every %d: must be at least 1", c.TemplateEvery))
	}
	if c.Batch < 1 || c.Batch > 1024 {
		errs = append(errs, fmt.Errorf("batch %d: must be between 1 and 1024 datagrams", c.Batch))
	}
	if c.WriteBuffer < 0 {
		errs = append(errs, fmt.Errorf("write buffer %d: must be ≥ 0 bytes", c.WriteBuffer))
	}
	if c.CatchUp < 0 {
		errs = append(errs, fmt.Errorf("catch-up %v: must be ≥ 0", c.CatchUp))
	}
	return errors.Join(errs...)
}

// exporterRange is the share of the run's flows exporter e sends:
// a contiguous range, so its sequence numbers and the totals stay simple.
func (c Config) exporterRange(e int) (lo, hi uint64) {
	return splitPoint(c.Flows, e, c.Exporters), splitPoint(c.Flows, e+1, c.Exporters)
}

func splitPoint(n uint64, i, parts int) uint64 {
	// n*i/parts without overflowing for large n.
	q, r := n/uint64(parts), n%uint64(parts)
	return q*uint64(i) + r*uint64(i)/uint64(parts)
}

// Expect returns the totals a complete run of c sends. It generates every
// flow's counters, about 10 ns a flow.
func (c Config) Expect() (Totals, error) {
	if err := c.Validate(); err != nil {
		return Totals{}, err
	}
	c = c.withDefaults()
	t := Sum(c.Seed, 0, c.Flows)
	per := uint64(c.FlowsPerDatagram)
	for e := range c.Exporters {
		lo, hi := c.exporterRange(e)
		t.Datagrams += (hi - lo + per - 1) / per
	}
	return t, nil
}

// Report is what a run sent.
type Report struct {
	Target           string   `json:"target"`
	Protocol         Protocol `json:"protocol"`
	Workers          int      `json:"workers"`
	Exporters        int      `json:"exporters"`
	FlowsPerDatagram int      `json:"flows_per_datagram"`
	// Rate is the offered rate in flows/s (0: unpaced).
	Rate float64 `json:"rate"`
	Sent Totals  `json:"sent"`
	// Elapsed runs from the start to the last datagram handed to the kernel.
	Elapsed time.Duration `json:"elapsed_ns"`
	// FlowsPerSecond is the rate achieved.
	FlowsPerSecond float64 `json:"flows_per_second"`
	// MaxLag is the furthest a worker fell behind its schedule.
	MaxLag time.Duration `json:"max_lag_ns"`
	// Slipped is the schedule time workers gave up, summed, because they
	// fell more than CatchUp behind: the machine was busy or the rate was
	// more than they could send. 0 means the stream was paced as asked.
	Slipped time.Duration `json:"slipped_ns"`
	// Refused counts sends that failed with "connection refused": an ICMP
	// port unreachable came back, so nothing listened on the target port.
	// The datagrams are retried and counted once sent.
	Refused uint64 `json:"refused"`
}

// Generator sends one run. Build it with New; Run sends.
type Generator struct {
	cfg    Config
	target *net.UDPAddr

	datagrams, flows, packets, bytes atomic.Uint64
	refused                          atomic.Uint64

	mu      sync.Mutex
	maxLag  time.Duration
	slipped time.Duration
}

// New checks cfg and returns a Generator. It does no I/O beyond resolving
// the target's host name.
func New(cfg Config) (*Generator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("flowgen: %w", err)
	}
	cfg = cfg.withDefaults()
	target, err := net.ResolveUDPAddr("udp", cfg.Target)
	if err != nil {
		return nil, fmt.Errorf("flowgen: resolve target %q: %w", cfg.Target, err)
	}
	return &Generator{cfg: cfg, target: target}, nil
}

// Config returns the configuration in use, defaults filled in.
func (g *Generator) Config() Config { return g.cfg }

// Sent returns what has been sent so far; it may be called while Run runs.
func (g *Generator) Sent() Totals {
	return Totals{
		Datagrams: g.datagrams.Load(), Flows: g.flows.Load(),
		Packets: g.packets.Load(), Bytes: g.bytes.Load(),
	}
}

// source returns the local address exporter e sends from (invalid: any).
func (g *Generator) source(e int) netip.Addr {
	if len(g.cfg.Sources) > 0 {
		return g.cfg.Sources[e%len(g.cfg.Sources)]
	}
	dst, ok := netip.AddrFromSlice(g.target.IP)
	if !ok || !dst.Unmap().Is4() || !dst.IsLoopback() || g.cfg.Exporters == 1 {
		return netip.Addr{}
	}
	var b [4]byte
	be.PutUint32(b[:], 127<<24|1+uint32(e%(1<<24-2)))
	return netip.AddrFrom4(b)
}

// exporter is one simulated exporter's sending state.
type exporter struct {
	enc      *Encoder
	conn     *net.UDPConn
	pc       *ipv4.PacketConn // sendmmsg on conn; works for IPv6 sockets too
	next, hi uint64           // flows still to send: [next, hi)
}

// Run sends the configured flows and returns what it sent. When ctx is
// cancelled it stops and returns the report so far with ctx's error.
func (g *Generator) Run(ctx context.Context) (Report, error) {
	cfg := g.cfg
	start := time.Now()
	// Exporters "booted" an hour ago: sysUpTime-relative times need a boot
	// before any flow's start (flows start up to 65 s before export).
	boot := start.Add(-time.Hour)

	workers := make([][]*exporter, cfg.Workers)
	defer func() {
		for _, w := range workers {
			for _, ex := range w {
				ex.conn.Close()
			}
		}
	}()
	for e := range cfg.Exporters {
		enc, err := NewEncoder(cfg.Protocol, cfg.Seed, uint32(e), cfg.TemplateEvery, boot)
		if err != nil {
			return Report{}, err
		}
		var laddr *net.UDPAddr
		if src := g.source(e); src.IsValid() {
			laddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
		}
		conn, err := net.DialUDP("udp", laddr, g.target)
		if err != nil {
			return Report{}, fmt.Errorf("flowgen: exporter %d: socket to %s from %v: %w", e, g.target, laddr, err)
		}
		if cfg.WriteBuffer > 0 {
			// Best effort: the kernel caps it at net.core.wmem_max, and a
			// smaller buffer only makes sendmmsg block sooner.
			_ = conn.SetWriteBuffer(cfg.WriteBuffer)
		}
		lo, hi := cfg.exporterRange(e)
		workers[e%cfg.Workers] = append(workers[e%cfg.Workers], &exporter{
			enc: enc, conn: conn, pc: ipv4.NewPacketConn(conn), next: lo, hi: hi,
		})
	}

	eg, ctx := errgroup.WithContext(ctx)
	for _, exs := range workers {
		eg.Go(func() error { return g.work(ctx, start, exs) })
	}
	err := eg.Wait()
	elapsed := time.Since(start)

	sent := g.Sent()
	r := Report{
		Target: g.target.String(), Protocol: cfg.Protocol, Workers: cfg.Workers, Exporters: cfg.Exporters,
		FlowsPerDatagram: cfg.FlowsPerDatagram, Rate: cfg.Rate, Sent: sent, Elapsed: elapsed,
		Refused: g.refused.Load(),
	}
	if elapsed > 0 {
		r.FlowsPerSecond = float64(sent.Flows) / elapsed.Seconds()
	}
	g.mu.Lock()
	r.MaxLag, r.Slipped = g.maxLag, g.slipped
	g.mu.Unlock()
	return r, err
}

// batchSpan is about how long one batch of datagrams should cover at the
// offered rate: short enough that the stream looks smooth to a receiver
// (a 64 MiB buffer holds far more), long enough that the sleep between
// batches is mostly sleep rather than timer overhead.
const batchSpan = 200 * time.Microsecond

// work sends the flows of exporters exs, paced at their share of the rate.
func (g *Generator) work(ctx context.Context, start time.Time, exs []*exporter) error {
	cfg := g.cfg
	var total uint64
	for _, ex := range exs {
		total += ex.hi - ex.next
	}
	if total == 0 {
		return nil
	}
	per := uint64(cfg.FlowsPerDatagram)
	rate := cfg.Rate * float64(total) / float64(cfg.Flows) // this worker's share
	batch := cfg.Batch
	if rate > 0 {
		b := int(rate / float64(per) * batchSpan.Seconds())
		batch = min(max(b, 1), cfg.Batch)
	}

	p := newPacer()
	defer p.close()

	msgs := make([]ipv4.Message, batch)
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, 0, 1500)
		msgs[i].Buffers = [][]byte{nil}
	}
	var (
		done            uint64 // flows this worker has sent
		maxLag, slipped time.Duration
	)
	defer func() {
		g.mu.Lock()
		g.maxLag = max(g.maxLag, maxLag)
		g.slipped += slipped
		g.mu.Unlock()
	}()
	for i := 0; done < total; i = (i + 1) % len(exs) {
		ex := exs[i]
		if ex.next == ex.hi {
			continue
		}
		now := time.Now()
		var bt Totals
		k := 0
		for ; k < batch && ex.next < ex.hi; k++ {
			n := min(per, ex.hi-ex.next)
			var t Totals
			bufs[k], t = ex.enc.Append(bufs[k][:0], ex.next, int(n), now)
			msgs[k].Buffers[0] = bufs[k]
			ex.next += n
			bt.add(t)
		}
		if rate > 0 {
			// Token bucket with no initial burst: the batch leaves once
			// its flows' tokens have accrued, so a run never finishes
			// before Flows/Rate and the average rate is exact whatever
			// the sleeps' jitter. The bucket holds at most CatchUp's
			// worth: time lost beyond that moves the schedule.
			due := start.Add(slipped + time.Duration(float64(done+bt.Flows)/rate*float64(time.Second)))
			if lag := now.Sub(due); lag > 0 {
				maxLag = max(maxLag, lag)
				if lag > cfg.CatchUp {
					slipped += lag - cfg.CatchUp
					due = now.Add(-cfg.CatchUp)
				}
			}
			if err := p.waitUntil(ctx, due); err != nil {
				return err
			}
		} else if err := ctx.Err(); err != nil {
			return err
		}
		if err := g.send(ctx, ex, msgs[:k]); err != nil {
			return err
		}
		done += bt.Flows
		g.datagrams.Add(bt.Datagrams)
		g.flows.Add(bt.Flows)
		g.packets.Add(bt.Packets)
		g.bytes.Add(bt.Bytes)
	}
	return nil
}

// send hands msgs to the kernel with as few sendmmsg calls as it takes.
func (g *Generator) send(ctx context.Context, ex *exporter, msgs []ipv4.Message) error {
	for len(msgs) > 0 {
		n, err := ex.pc.WriteBatch(msgs, 0)
		if err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				// A pending ICMP port unreachable is reported once on the
				// next send, which it fails; nothing was sent, so retry.
				g.refused.Add(1)
				if err := ctx.Err(); err != nil {
					return err
				}
				continue
			}
			return fmt.Errorf("flowgen: send to %s: %w", ex.conn.RemoteAddr(), err)
		}
		msgs = msgs[n:]
	}
	return nil
}
