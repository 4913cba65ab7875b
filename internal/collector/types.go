package collector

import (
	"context"
	"net/netip"
	"time"

	"github.com/yagura/yagura/internal/flowstore"
)

// Config says where the collector listens and how it batches. Empty
// address lists disable that protocol; numeric fields left at zero take
// their DefaultConfig values.
type Config struct {
	// NetFlow listens for NetFlow v5, v9 and IPFIX (which share a port on
	// most exporters). Default ":2055".
	NetFlow []string `koanf:"netflow"`
	// IPFIX listens for IPFIX (and NetFlow, which is told apart by its
	// version). Default ":4739".
	IPFIX []string `koanf:"ipfix"`
	// SFlow listens for sFlow v5. Default ":6343".
	SFlow []string `koanf:"sflow"`
	// Sockets is how many sockets (SO_REUSEPORT) and reading goroutines
	// each address gets. Default: GOMAXPROCS.
	Sockets int `koanf:"sockets"`
	// ReadBuffer is each socket's kernel receive buffer in bytes. Default
	// 64 MiB; if the kernel caps it (net.core.rmem_max) the collector uses
	// SO_RCVBUFFORCE when it may and otherwise warns with the sysctl to set.
	ReadBuffer int `koanf:"read_buffer"`
	// BatchFlows is how many flows a worker collects before writing them
	// to the store; FlushEvery bounds how long a flow waits. Default
	// 50000: both stores pay per insert (DuckDB a commit, ClickHouse a
	// part to merge), and 10,000-flow batches cost DuckDB a third of its
	// rate.
	BatchFlows int `koanf:"batch_flows"`
	// Writers is how many store inserts each socket may have running at
	// once. One exporter's datagrams all land on one socket, and an
	// insert spends much of its time waiting on its syncs (the DuckDB
	// store writes a spool file and commits rollups per batch). Default
	// 4: at 1M NetFlow v5 flows/s on two cores, 2 lost 3.5 % in batches
	// the queue could not hold, 4 none.
	Writers    int           `koanf:"writers"`
	FlushEvery time.Duration `koanf:"flush_every"`
	// TemplatesFile keeps v9/IPFIX templates and learned sampling rates
	// across restarts, so a restart is not cold. Default
	// DATA/flow-templates.json (the server fills it in; a Collector built
	// directly with it empty keeps nothing).
	TemplatesFile string `koanf:"templates_file"`
	// Backlog is how many full batches each socket may have waiting for
	// the store before newer ones are dropped (and counted): UDP has no
	// back-pressure, so a store slower than the exporters can only cost
	// memory or flows. A batch takes about 170 bytes a flow. Default 10.
	Backlog int `koanf:"backlog"`
	// MaxExporters bounds the exporters the collector keeps state for
	// (counters, templates). Datagrams from further source addresses are
	// dropped and counted, so spoofed sources cannot exhaust memory.
	// Default 10000.
	MaxExporters int `koanf:"max_exporters"`
}

// Sink stores decoded flows. flowstore.Store implements it.
//
// InsertFlows is called by several workers at once, each with its own
// batch. The collector reuses the slice once InsertFlows returns, so a
// sink must not keep it (or anything pointing into it) after returning.
// An error makes the collector retry the same batch later; nil means the
// flows are stored.
type Sink interface {
	InsertFlows(ctx context.Context, flows []flowstore.Record) error
}

// ExporterSettings are what an administrator sets on an exporter.
type ExporterSettings struct {
	Name string
	// SamplingRate, when not 0, overrides whatever the exporter says.
	SamplingRate uint32
}

// Sampling sources shown for an exporter, beyond flowdecode's
// (options-template, flow-record, sflow-header, v5-header).
const (
	SamplingOverride = "override" // set by an administrator
	SamplingNone     = ""         // unknown: flows are stored ×1
)

// ExporterStatus is what the collector knows about one exporter.
type ExporterStatus struct {
	Address   netip.Addr `json:"address"`
	Name      string     `json:"name"`
	Protocols []string   `json:"protocols"` // flowdecode.Protocol* seen, sorted
	FirstSeen time.Time  `json:"first_seen"`
	LastSeen  time.Time  `json:"last_packet"`
	Packets   uint64     `json:"packets"` // datagrams received
	Flows     uint64     `json:"flows"`
	// DecodeErrors counts malformed datagrams; TemplateMisses data sets
	// dropped because their template was not known yet.
	DecodeErrors   uint64 `json:"decode_errors"`
	TemplateMisses uint64 `json:"template_misses"`
	Templates      int    `json:"templates"` // v9/IPFIX templates held
	// SamplingRate is the rate in use (1: unsampled or unknown) and
	// SamplingSource where it came from.
	SamplingRate   uint32 `json:"sampling_rate"`
	SamplingSource string `json:"sampling_source"`
	// SamplingWarning is set when the rate is missing on a protocol that
	// should carry it, or changed ("changed from 100 to 1000 at …").
	SamplingWarning string `json:"sampling_warning,omitempty"`
}

// ListenerStatus reports one listening socket. Kernel drops cannot be
// attributed to an exporter (the kernel drops a datagram before anyone
// reads its source), so they are counted per socket.
type ListenerStatus struct {
	Protocol    string `json:"protocol"` // netflow | ipfix | sflow
	Address     string `json:"address"`
	Sockets     int    `json:"sockets"`
	ReadBuffer  int    `json:"read_buffer"` // bytes, as the kernel granted
	Datagrams   uint64 `json:"datagrams"`
	KernelDrops uint64 `json:"kernel_drops"`
}
