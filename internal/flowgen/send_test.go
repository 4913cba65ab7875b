package flowgen

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/yagura/yagura/internal/flowdecode"
)

// receiver is a UDP socket on loopback that decodes what arrives, as a
// collector would, and totals it per exporter address.
type receiver struct {
	conn   *net.UDPConn
	dec    *flowdecode.Decoder
	done   chan struct{}
	buffer int // receive buffer the kernel granted, bytes

	mu        sync.Mutex
	total     Totals
	exporters map[netip.Addr]uint64 // flows per source address
	errs      []error
}

func listen(t *testing.T) *receiver {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{conn: conn, dec: flowdecode.New(), done: make(chan struct{}), exporters: map[netip.Addr]uint64{}}
	r.buffer = setReadBuffer(t, conn, 8<<20)
	go r.loop()
	t.Cleanup(func() {
		conn.Close()
		<-r.done
	})
	return r
}

func (r *receiver) addr() string { return r.conn.LocalAddr().String() }

// setReadBuffer asks for a receive buffer of n bytes, beyond
// net.core.rmem_max when running as root, and returns what the kernel
// granted (it reports double the payload room; half is for bookkeeping).
func setReadBuffer(t *testing.T, conn *net.UDPConn, n int) int {
	t.Helper()
	_ = conn.SetReadBuffer(n)
	rc, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	_ = rc.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n) // root only
		got, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
	})
	return got
}

// safeRate is a rate in flows/s at which 200 ms of datagrams of about
// size bytes, perDatagram flows each, fit in the receiver's buffer: the
// tests check totals, so a reader starved by a busy machine must not make
// the kernel drop datagrams.
func (r *receiver) safeRate(perDatagram, size int) float64 {
	// Each datagram also costs the kernel about 1 KiB of bookkeeping.
	datagrams := float64(r.buffer/2) / float64(size+1024)
	return min(400_000, datagrams/0.2*float64(perDatagram))
}

func (r *receiver) loop() {
	defer close(r.done)
	buf := make([]byte, 65536)
	for {
		n, from, err := r.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		flows, err := r.dec.DecodeNetFlow(from.Addr(), buf[:n], time.Now())
		r.mu.Lock()
		if err != nil {
			r.errs = append(r.errs, err)
		}
		r.total.Datagrams++
		for _, f := range flows {
			r.total.Flows++
			r.total.Packets += f.Packets
			r.total.Bytes += f.Bytes
		}
		r.exporters[from.Addr()] += uint64(len(flows))
		r.mu.Unlock()
	}
}

// wait returns the totals once want flows have arrived, or what arrived
// after a few seconds of waiting.
func (r *receiver) wait(t *testing.T, want uint64) (Totals, map[netip.Addr]uint64) {
	t.Helper()
	end := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		got := r.total
		r.mu.Unlock()
		if got.Flows >= want || time.Now().After(end) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) > 0 {
		t.Errorf("receiver: %d decode errors, first: %v", len(r.errs), r.errs[0])
	}
	ex := make(map[netip.Addr]uint64, len(r.exporters))
	for k, v := range r.exporters {
		ex[k] = v
	}
	return r.total, ex
}

// TestRunDeliversExpectedTotals runs the generator against a local socket
// for each protocol and checks the receiver decoded exactly the totals
// Expect computed in advance and Run reported.
func TestRunDeliversExpectedTotals(t *testing.T) {
	for _, tc := range []struct {
		name               string
		proto              Protocol
		workers, exporters int
		wantSources        int
	}{
		{"v5", NetFlow5, 1, 1, 1},
		{"v9", NetFlow9, 1, 1, 1},
		{"ipfix", IPFIX, 1, 1, 1},
		// On loopback each exporter sends from its own 127.0.0.x address.
		{"v9 2 workers 3 exporters", NetFlow9, 2, 3, 3},
		{"ipfix 2 workers", IPFIX, 2, 2, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := listen(t)
			cfg := DefaultConfig()
			cfg.Target, cfg.Protocol, cfg.Flows, cfg.Seed = r.addr(), tc.proto, 20_011, 99
			cfg.Workers, cfg.Exporters = tc.workers, tc.exporters
			// Paced, so a busy test machine does not overrun the receiver.
			cfg.Rate = r.safeRate(DefaultFlowsPerDatagram(tc.proto), 1500)
			cfg.TemplateEvery = 5
			want, err := cfg.Expect()
			if err != nil {
				t.Fatal(err)
			}
			g, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := g.Run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if rep.Sent != want {
				t.Errorf("Run reported %+v sent, Expect said %+v", rep.Sent, want)
			}
			got, sources := r.wait(t, want.Flows)
			if got != want {
				t.Errorf("received %+v, want %+v", got, want)
			}
			if len(sources) != tc.wantSources {
				t.Errorf("flows came from %v, want %d exporter addresses", sources, tc.wantSources)
			}
			if rep.Refused != 0 {
				t.Errorf("refused %d times with a listener", rep.Refused)
			}
		})
	}
}

// TestPacing offers a modest rate and checks every flow arrived and the run
// took at least flows/rate: the token bucket starts empty, so it can never
// finish early. There is no upper bound on the time, which a loaded machine
// could break; MaxLag says how late it was.
func TestPacing(t *testing.T) {
	r := listen(t)
	cfg := DefaultConfig()
	cfg.Target, cfg.Flows, cfg.Rate = r.addr(), 15_000, 50_000
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := g.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if min := time.Duration(float64(cfg.Flows) / cfg.Rate * float64(time.Second)); rep.Elapsed < min {
		t.Errorf("sent %d flows at %v flows/s in %v, faster than the %v the rate allows", cfg.Flows, cfg.Rate, rep.Elapsed, min)
	}
	if rep.FlowsPerSecond > cfg.Rate {
		t.Errorf("achieved %.0f flows/s, over the offered %v", rep.FlowsPerSecond, cfg.Rate)
	}
	got, _ := r.wait(t, cfg.Flows)
	if got.Flows != cfg.Flows || rep.Sent.Flows != cfg.Flows {
		t.Errorf("received %d flows, reported %d sent, want %d", got.Flows, rep.Sent.Flows, cfg.Flows)
	}
	t.Logf("%d flows at %v flows/s: %v (%.0f flows/s), max lag %v", cfg.Flows, cfg.Rate, rep.Elapsed, rep.FlowsPerSecond, rep.MaxLag)
}

// TestPacingSpreadsDatagrams checks the stream is spread over the run
// rather than sent in a burst and then waited out: at 10,000 flows/s of
// v5 (333 datagrams/s) the batches hold one datagram, so half the run
// must have gone by when half the datagrams have arrived.
func TestPacingSpreadsDatagrams(t *testing.T) {
	r := listen(t)
	cfg := DefaultConfig()
	cfg.Target, cfg.Flows, cfg.Rate = r.addr(), 3000, 10_000
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var halfAt time.Duration
	done := make(chan struct{})
	go func() {
		defer close(done)
		for time.Since(start) < 2*time.Second {
			if g.Sent().Flows >= cfg.Flows/2 {
				halfAt = time.Since(start)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	if _, err := g.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-done
	if halfAt < 140*time.Millisecond { // half of 300 ms, less the first datagram's 3 ms
		t.Errorf("half the flows were sent after %v of a 300 ms run: not paced", halfAt)
	}
}

// TestSlipReported offers far more than one worker can send: it sends as
// fast as it can, gives up the schedule it cannot keep rather than
// promising a burst, and says so. (Unpaced, the receiver may drop: only
// the report is checked.)
func TestSlipReported(t *testing.T) {
	r := listen(t)
	cfg := DefaultConfig()
	cfg.Target, cfg.Flows, cfg.Rate = r.addr(), 60_000, 1e12
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := g.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Slipped <= 0 || rep.MaxLag <= cfg.CatchUp || rep.FlowsPerSecond >= cfg.Rate {
		t.Errorf("offered %v flows/s: slipped %v, max lag %v, achieved %.0f flows/s; want a slip reported", cfg.Rate, rep.Slipped, rep.MaxLag, rep.FlowsPerSecond)
	}
	if rep.Sent.Flows != cfg.Flows {
		t.Errorf("sent %d flows, want all %d", rep.Sent.Flows, cfg.Flows)
	}
}

func TestRunCancelled(t *testing.T) {
	r := listen(t)
	cfg := DefaultConfig()
	cfg.Target, cfg.Flows, cfg.Rate = r.addr(), 1_000_000, 20_000 // 50 s
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	rep, err := g.Run(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run: %v, want the context's error", err)
	}
	if rep.Sent.Flows == 0 || rep.Sent.Flows > 10_000 {
		t.Errorf("cancelled after 200 ms at 20,000 flows/s: reported %d flows sent", rep.Sent.Flows)
	}
	if got, _ := r.wait(t, rep.Sent.Flows); got.Flows != rep.Sent.Flows {
		t.Errorf("received %d flows, reported %d", got.Flows, rep.Sent.Flows)
	}
}

// TestRefusedCounted sends to a port nothing listens on: the generator
// finishes, and says the target refused.
func TestRefusedCounted(t *testing.T) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	closed := c.LocalAddr().String()
	c.Close()
	cfg := DefaultConfig()
	cfg.Target, cfg.Flows, cfg.Rate = closed, 300, 30_000
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := g.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Refused == 0 || rep.Sent.Flows != cfg.Flows {
		t.Errorf("to a closed port: refused %d, sent %d flows; want refusals counted and all flows sent", rep.Refused, rep.Sent.Flows)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string // substring of the error; "" for valid
	}{
		{"default", func(*Config) {}, ""},
		{"ipfix jumbo", func(c *Config) { c.Protocol, c.FlowsPerDatagram = IPFIX, 1000 }, ""},
		{"protocol", func(c *Config) { c.Protocol = "sflow" }, `protocol "sflow": use v5, v9 or ipfix`},
		{"target", func(c *Config) { c.Target = "127.0.0.1" }, `target "127.0.0.1": want host:port`},
		{"flows", func(c *Config) { c.Flows = 0 }, "flows: must be at least 1"},
		{"rate", func(c *Config) { c.Rate = -1 }, "rate -1"},
		{"workers", func(c *Config) { c.Workers = 2000 }, "workers 2000"},
		{"exporters", func(c *Config) { c.Workers, c.Exporters = 4, 2 }, "exporters 2: must be at least workers (4)"},
		{"v5 per datagram", func(c *Config) { c.FlowsPerDatagram = 31 }, "flows per datagram 31: must be between 1 and 30 for netflow v5"},
		{"batch", func(c *Config) { c.Batch = -1 }, "batch -1"},
		{"catch-up", func(c *Config) { c.CatchUp = -time.Second }, "catch-up -1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.edit(&cfg)
			err := cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestSplitCoversAllFlows(t *testing.T) {
	for _, tc := range []struct {
		flows     uint64
		exporters int
	}{{1, 1}, {10, 3}, {7, 7}, {3, 5}, {1 << 62, 3}} {
		c := Config{Flows: tc.flows, Exporters: tc.exporters}
		var prev uint64
		for e := range tc.exporters {
			lo, hi := c.exporterRange(e)
			if lo != prev || hi < lo {
				t.Fatalf("%d flows over %d exporters: exporter %d gets [%d, %d) after %d", tc.flows, tc.exporters, e, lo, hi, prev)
			}
			prev = hi
		}
		if prev != tc.flows {
			t.Errorf("%d flows over %d exporters: ranges end at %d", tc.flows, tc.exporters, prev)
		}
	}
}

// BenchmarkSendUnpaced measures how fast one worker sends to a loopback
// socket that nobody reads (the kernel drops what overflows its buffer,
// so this is the sender's cost alone).
func BenchmarkSendUnpaced(b *testing.B) {
	for _, p := range []Protocol{NetFlow5, NetFlow9, IPFIX} {
		b.Run(string(p), func(b *testing.B) {
			conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			cfg := DefaultConfig()
			cfg.Target, cfg.Protocol, cfg.Flows = conn.LocalAddr().String(), p, uint64(b.N)*1000
			g, err := New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			rep, err := g.Run(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(rep.FlowsPerSecond, "flows/s")
			b.ReportMetric(float64(rep.Sent.Datagrams)/rep.Elapsed.Seconds(), "datagrams/s")
		})
	}
}
