package collector

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/flowdecode/flowdecodetest"
	"github.com/yagura/yagura/internal/flowstore"
)

// countingSink discards flows, counting them.
type countingSink struct{ n atomic.Int64 }

func (s *countingSink) InsertFlows(_ context.Context, flows []flowstore.Record) error {
	s.n.Add(int64(len(flows)))
	return nil
}

// benchStream is a template datagram (nil for v5) and a data datagram of
// 30 flows, the size softflowd and routers send.
type benchStream struct {
	name           string
	template, data []byte
}

func benchStreams() []benchStream {
	var v5 []flowdecodetest.Wire
	var v9, ipfix flowdecodetest.Wire
	for i := range 30 {
		src := fmt.Sprintf("10.0.%d.%d", i/250, i%250+1)
		v5 = append(v5, flowdecodetest.V5Record(src, "192.0.2.80", uint16(40000+i), 443, 6, uint32(i+1), uint32(100*(i+1))))
		v9 = v9.Raw(flowdecodetest.V9Record260(src, "10.2.2.2", uint16(40000+i), 80, uint32(100*(i+1)), uint32(i+1)))
		ipfix = ipfix.Raw(ipfixRecord300("2001:db8::1", "2001:db8::2", uint16(40000+i), 53, uint64(100*(i+1)), uint64(i+1),
			1_700_000_000_250, 1_700_000_003_750))
	}
	return []benchStream{
		{"v5", nil, flowdecodetest.V5Datagram(0, v5...)},
		{"v9", flowdecodetest.V9Datagram(7, flowdecodetest.V9Template260()), flowdecodetest.V9Datagram(7, flowdecodetest.Set(260, v9))},
		{"ipfix", flowdecodetest.IPFIXDatagram(42, ipfixTemplate300), flowdecodetest.IPFIXDatagram(42, flowdecodetest.Set(300, ipfix))},
	}
}

// BenchmarkCollector sends b.N datagrams of 30 flows over loopback UDP, as
// fast as one or two goroutines can (from 8 source ports), into a
// collector with two sockets, 64 MiB buffers and a sink that discards, and
// reports the flows stored per second (from the first datagram sent until
// the last flow is written), the rate sent, and the share of datagrams the
// kernel dropped. The senders share the two cores with the collector, so
// with no loss this is a lower bound of what the collector sustains;
// internal/flowgen drives paced runs against a separate process.
//
// read=1 reads one datagram per system call, read=32 up to 32 with
// recvmmsg(2).
func BenchmarkCollector(b *testing.B) {
	for _, s := range benchStreams() {
		for _, v := range []struct{ batch, senders int }{{1, 1}, {readBatch, 1}, {readBatch, 2}} {
			b.Run(fmt.Sprintf("%s/read=%d/senders=%d", s.name, v.batch, v.senders), func(b *testing.B) {
				benchCollector(b, s, v.batch, v.senders)
			})
		}
	}
}

func benchCollector(b *testing.B, s benchStream, batch, senders int) {
	sink := &countingSink{}
	cfg := Config{NetFlow: []string{"127.0.0.1:0"}, Sockets: 2, ReadBuffer: 64 << 20, BatchFlows: 10000, FlushEvery: 100 * time.Millisecond}
	c, err := New(cfg, sink, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	c.readBatch = batch
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	<-c.Ready()
	// Several source ports, so SO_REUSEPORT spreads them over both sockets.
	conns := make([]*net.UDPConn, 8)
	for i := range conns {
		if conns[i], err = net.DialUDP("udp", nil, c.Addrs(ListenerNetFlow)[0].(*net.UDPAddr)); err != nil {
			b.Fatal(err)
		}
		defer conns[i].Close()
		if s.template != nil {
			if _, err := conns[i].Write(s.template); err != nil {
				b.Fatal(err)
			}
		}
	}
	received := func() (datagrams, drops uint64) {
		for _, l := range c.Listeners() {
			datagrams += l.Datagrams
			drops += l.KernelDrops
		}
		return datagrams, drops
	}
	for d, _ := received(); s.template != nil && d < uint64(len(conns)); d, _ = received() {
		time.Sleep(time.Millisecond)
	}
	d0, drops0 := received()

	b.SetBytes(int64(len(s.data)))
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for g := range senders {
		wg.Go(func() {
			for i := g; i < b.N; i += senders {
				if _, err := conns[i%len(conns)].Write(s.data); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	sendTime := time.Since(start)
	// The drop counter travels with later datagrams: once the kernel has
	// dropped some, a few more carry the count.
	sent := uint64(b.N)
	for {
		d, drops := received()
		if d-d0+drops-drops0 >= sent {
			break
		}
		if time.Since(start) > sendTime+2*time.Second {
			_, _ = conns[0].Write(s.data)
			sent++
		}
		time.Sleep(time.Millisecond)
	}
	if err := c.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	_, drops := received()
	stored := sink.n.Load()
	b.ReportMetric(float64(stored)/elapsed.Seconds(), "flows/s")
	b.ReportMetric(float64(b.N*30)/sendTime.Seconds(), "sent_flows/s")
	b.ReportMetric(100*float64(drops-drops0)/float64(sent), "loss%")
}

// BenchmarkHandle measures one reader's work per datagram without
// sockets: decode, exporter bookkeeping, sampling, batching.
func BenchmarkHandle(b *testing.B) {
	for _, s := range benchStreams() {
		b.Run(s.name, func(b *testing.B) {
			w := handleWorker(b, ListenerNetFlow)
			w.c.cfg.BatchFlows = 10000
			go func() { // the writer: hand the slices straight back
				for item := range w.queue {
					w.free <- item.flows[:0]
				}
			}()
			defer close(w.queue)
			d := datagram{buf: s.data, src: fuzzExporter}
			now := time.Now()
			b.ReportAllocs()
			b.SetBytes(int64(len(s.data)))
			for b.Loop() {
				w.handle(&d, now)
			}
			b.ReportMetric(float64(b.N*30)/b.Elapsed().Seconds(), "flows/s")
		})
	}
}
