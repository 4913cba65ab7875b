// Package collector receives flow datagrams (NetFlow v5/v9, IPFIX, sFlow v5)
// on UDP, decodes them with internal/flowdecode, applies sampling rates,
// keeps per-exporter state and counters, and writes batches of flows to a
// Sink (the flow store).
package collector
