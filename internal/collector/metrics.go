package collector

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/yagura/yagura/internal/flowdecode"
)

// Reasons in yagura_flow_decode_errors_total.
const (
	reasonMalformed       = "malformed"        // flowdecode.ErrMalformed
	reasonTemplateUnknown = "template_unknown" // a data set before its template
	reasonTruncated       = "truncated"        // longer than the read buffer
	reasonExporterLimit   = "exporter_limit"   // from an exporter beyond max_exporters
	reasonNotIP           = "not_ip"           // a record without IP addresses (counted per record)
)

// protoUnknown labels datagrams whose version no decoder knows.
const protoUnknown = "unknown"

// metrics are the collector's Prometheus series. Counters the hot path
// touches are resolved once here, not looked up by label per datagram.
type metrics struct {
	datagrams    map[string]prometheus.Counter // by flowdecode protocol, or protoUnknown
	records      prometheus.Counter
	decodeErrors map[string]prometheus.Counter // by reason
	kernelDrops  prometheus.Counter
	storeErrors  prometheus.Counter
	dropped      prometheus.Counter
	writeSeconds prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	datagrams := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "yagura_flow_datagrams_total",
		Help: "Flow datagrams received, by protocol (netflow5, netflow9, ipfix, sflow5, unknown).",
	}, []string{"protocol"})
	decodeErrors := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "yagura_flow_decode_errors_total",
		Help: "Flow datagrams (or v9/IPFIX data sets, for template_unknown) that could not be decoded, by reason.",
	}, []string{"reason"})
	m := &metrics{
		datagrams:    map[string]prometheus.Counter{},
		decodeErrors: map[string]prometheus.Counter{},
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "yagura_flow_records_total", Help: "Flow records decoded and handed to the store.",
		}),
		kernelDrops: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "yagura_flow_kernel_drops_total",
			Help: "Flow datagrams the kernel dropped because a socket's receive buffer was full (SO_RXQ_OVFL).",
		}),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "yagura_flow_store_errors_total", Help: "Failed writes of a batch of flows to the store (each is retried).",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "yagura_flow_dropped_total",
			Help: "Decoded flows dropped because the store fell too far behind (the backlog was full) or kept failing at shutdown.",
		}),
		writeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "yagura_flow_batch_write_seconds",
			Help:    "Time to write one batch of flows to the store, failed attempts included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15), // 1 ms to 16 s
		}),
	}
	for _, p := range []string{flowdecode.ProtocolNetFlow5, flowdecode.ProtocolNetFlow9, flowdecode.ProtocolIPFIX,
		flowdecode.ProtocolSFlow5, protoUnknown} {
		m.datagrams[p] = datagrams.WithLabelValues(p)
	}
	for _, r := range []string{reasonMalformed, reasonTemplateUnknown, reasonTruncated, reasonExporterLimit, reasonNotIP} {
		m.decodeErrors[r] = decodeErrors.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(datagrams, m.records, decodeErrors, m.kernelDrops, m.storeErrors, m.dropped, m.writeSeconds)
	}
	return m
}
