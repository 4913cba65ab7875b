package collector

import "net/netip"

// datagram is one received datagram. buf is owned by the reader and valid
// until the next read.
type datagram struct {
	buf []byte
	src netip.Addr
	// drops is the socket's drop counter (SO_RXQ_OVFL) when the kernel
	// queued this datagram; hasDrops is false when it sent none.
	drops     uint32
	hasDrops  bool
	truncated bool // longer than the buffer (MSG_TRUNC)
}

// maxDatagram is the largest UDP payload (IPv4: 65535 - 8 - 20), so no
// datagram is truncated. Exporters keep to the path MTU, and the kernel
// writes only what arrives: most of each buffer's pages are never touched.
const maxDatagram = 65507

// oobSize holds the SO_RXQ_OVFL message with room to spare, a multiple of
// 8 so each slot is aligned for a cmsghdr.
const oobSize = 64

// reader reads datagrams from one socket.
type reader interface {
	// read blocks until at least one datagram arrives, or the read
	// deadline passes (os.ErrDeadlineExceeded), and returns what it read,
	// valid until the next call.
	read() ([]datagram, error)
}
