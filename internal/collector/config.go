package collector

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"time"
)

// Protocols of the listeners, as in ListenerStatus.Protocol and Addrs.
const (
	ListenerNetFlow = "netflow"
	ListenerIPFIX   = "ipfix"
	ListenerSFlow   = "sflow"
)

// DefaultConfig returns the production defaults: every protocol on its
// usual port on all addresses, a socket per core, 64 MiB receive buffers.
func DefaultConfig() Config {
	return Config{
		NetFlow:      []string{":2055"},
		IPFIX:        []string{":4739"},
		SFlow:        []string{":6343"},
		Sockets:      runtime.GOMAXPROCS(0),
		ReadBuffer:   64 << 20,
		BatchFlows:   50000,
		Writers:      4,
		FlushEvery:   time.Second,
		Backlog:      10,
		MaxExporters: 10000,
	}
}

// withDefaults fills the numeric fields left at zero from DefaultConfig,
// so a Config literal that names only its addresses works. Address lists
// are not filled: an empty one disables its protocol.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Sockets == 0 {
		c.Sockets = d.Sockets
	}
	if c.ReadBuffer == 0 {
		c.ReadBuffer = d.ReadBuffer
	}
	if c.BatchFlows == 0 {
		c.BatchFlows = d.BatchFlows
	}
	if c.Writers == 0 {
		c.Writers = d.Writers
	}
	if c.FlushEvery == 0 {
		c.FlushEvery = d.FlushEvery
	}
	if c.Backlog == 0 {
		c.Backlog = d.Backlog
	}
	if c.MaxExporters == 0 {
		c.MaxExporters = d.MaxExporters
	}
	return c
}

// Validate reports the first thing wrong with c (after defaults), naming
// the setting (as in the configuration file, under flows.collector) and how
// to fix it.
func (c Config) Validate() error {
	return c.withDefaults().validate()
}

func (c Config) validate() error {
	switch {
	case c.Sockets < 0 || c.Sockets > 256:
		return fmt.Errorf("sockets is %d: use 1 to 256 (0 for one per core)", c.Sockets)
	case c.ReadBuffer < 0:
		return fmt.Errorf("read_buffer is %d: use a size in bytes such as 67108864 (0 for 64 MiB)", c.ReadBuffer)
	case c.BatchFlows < 0 || c.BatchFlows > 1_000_000:
		return fmt.Errorf("batch_flows is %d: use 1 to 1000000 (0 for 50000)", c.BatchFlows)
	case c.Writers < 0 || c.Writers > 64:
		return fmt.Errorf("writers is %d: use 1 to 64 (0 for 4)", c.Writers)
	case c.FlushEvery < 0 || c.FlushEvery > time.Hour:
		return fmt.Errorf("flush_every is %s: use a duration up to 1h such as 1s (0 for 1s)", c.FlushEvery)
	case c.Backlog < 0 || c.Backlog > 10000:
		return fmt.Errorf("backlog is %d: use 1 to 10000 batches (0 for 10)", c.Backlog)
	case c.MaxExporters < 0:
		return fmt.Errorf("max_exporters is %d: use a positive number (0 for 10000)", c.MaxExporters)
	case len(c.NetFlow)+len(c.IPFIX)+len(c.SFlow) == 0:
		return errors.New("netflow, ipfix and sflow are all empty: give at least one address to listen on, such as \":2055\"")
	}
	seen := map[string]string{}
	for _, l := range []struct {
		key   string
		addrs []string
	}{{ListenerNetFlow, c.NetFlow}, {ListenerIPFIX, c.IPFIX}, {ListenerSFlow, c.SFlow}} {
		for i, a := range l.addrs {
			host, port, err := net.SplitHostPort(a)
			if err != nil {
				return fmt.Errorf("%s[%d] is %q: use host:port or :port, such as \":2055\" or \"127.0.0.1:2055\": %v", l.key, i, a, err)
			}
			if p, err := strconv.ParseUint(port, 10, 16); err != nil {
				return fmt.Errorf("%s[%d] is %q: the port must be a number from 0 to 65535", l.key, i, a)
			} else if p != 0 {
				// Port 0 (tests) gets a different port per listener.
				if prev, dup := seen[net.JoinHostPort(host, port)]; dup {
					return fmt.Errorf("%s[%d] is %q, already used by %s: give each listener its own address", l.key, i, a, prev)
				}
				seen[net.JoinHostPort(host, port)] = fmt.Sprintf("%s[%d]", l.key, i)
			}
		}
	}
	return nil
}
