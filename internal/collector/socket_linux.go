//go:build linux

package collector

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// controlSocket sets the options every listening socket needs before it is
// bound: SO_REUSEPORT, so several sockets share an address and the kernel
// spreads exporters over them (by source address and port), and
// SO_RXQ_OVFL, so each datagram tells how many the kernel dropped on that
// socket. The receive buffer is set after binding (setReadBuffer).
//
// The kernel lets only sockets of the same user join a SO_REUSEPORT group,
// so another user's process cannot take a share of the flows; a second
// collector run by the same user would, silently.
func controlSocket(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); serr != nil {
			serr = fmt.Errorf("set SO_REUSEPORT: %w", serr)
			return
		}
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1); serr != nil {
			serr = fmt.Errorf("set SO_RXQ_OVFL: %w", serr)
		}
	})
	return errors.Join(err, serr)
}

// setReadBuffer asks for a receive buffer of size bytes and returns what
// the kernel granted. SO_RCVBUF is capped at net.core.rmem_max;
// SO_RCVBUFFORCE is not, but needs CAP_NET_ADMIN. The kernel doubles the
// value it is given (for its bookkeeping) and reports the doubled size;
// granted is halved back so it compares with size.
func setReadBuffer(conn *net.UDPConn, size int) (granted int, err error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return 0, err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, size)
		var got int
		if got, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF); serr != nil {
			return
		}
		if got/2 < size {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
			if got, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF); serr != nil {
				return
			}
		}
		granted = got / 2
	})
	return granted, errors.Join(err, serr)
}

// batchReader reads up to len(its buffers) datagrams with one recvmmsg(2)
// call: at a million flows a second (35,000 datagrams) the system calls
// are a noticeable part of the work, and a busy socket usually has many
// datagrams queued.
type batchReader struct {
	rc    syscall.RawConn
	msgs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	bufs  [][]byte
	oob   []byte
	out   []datagram
}

func newBatchReader(conn *net.UDPConn, n int) (*batchReader, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &batchReader{
		rc:    rc,
		msgs:  make([]unix.Mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrInet6, n),
		bufs:  make([][]byte, n),
		oob:   make([]byte, n*oobSize),
		out:   make([]datagram, n),
	}
	for i := range n {
		r.bufs[i] = make([]byte, maxDatagram)
		r.iovs[i].Base = &r.bufs[i][0]
		r.iovs[i].SetLen(maxDatagram)
		h := &r.msgs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
		h.Control = &r.oob[i*oobSize]
	}
	return r, nil
}

// read blocks until at least one datagram arrives (or the read deadline
// passes: os.ErrDeadlineExceeded) and returns those it read.
func (r *batchReader) read() ([]datagram, error) {
	for i := range r.msgs {
		h := &r.msgs[i].Hdr
		h.Namelen = unix.SizeofSockaddrInet6
		h.SetControllen(oobSize)
		h.Flags = 0
		r.msgs[i].Len = 0
	}
	var (
		n     uintptr
		errno syscall.Errno
	)
	err := r.rc.Read(func(fd uintptr) bool {
		n, _, errno = unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.msgs[0])), uintptr(len(r.msgs)),
			unix.MSG_DONTWAIT, 0, 0)
		return errno != unix.EAGAIN && errno != unix.EWOULDBLOCK
	})
	if err != nil {
		return nil, err
	}
	if errno != 0 {
		return nil, os.NewSyscallError("recvmmsg", errno)
	}
	out := r.out[:n]
	for i := range out {
		m := &r.msgs[i]
		d := &out[i]
		*d = datagram{buf: r.bufs[i][:m.Len], truncated: m.Hdr.Flags&unix.MSG_TRUNC != 0}
		d.src = sockaddrAddr(&r.names[i])
		d.drops, d.hasDrops = parseDrops(r.oob[i*oobSize : i*oobSize+int(m.Hdr.Controllen)])
	}
	return out, nil
}

// sockaddrAddr returns the address in a sockaddr_in or sockaddr_in6, with
// IPv4-mapped IPv6 addresses (from dual-stack sockets) unmapped.
func sockaddrAddr(sa *unix.RawSockaddrInet6) netip.Addr {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrFrom4(sa4.Addr)
	case unix.AF_INET6:
		return netip.AddrFrom16(sa.Addr).Unmap()
	}
	return netip.Addr{}
}

// msgReader reads one datagram per recvmsg(2), for comparison with
// batchReader (BenchmarkCollector/read=1).
type msgReader struct {
	conn *net.UDPConn
	buf  []byte
	oob  []byte
	out  [1]datagram
}

func newMsgReader(conn *net.UDPConn) *msgReader {
	return &msgReader{conn: conn, buf: make([]byte, maxDatagram), oob: make([]byte, oobSize)}
}

func (r *msgReader) read() ([]datagram, error) {
	n, oobn, flags, src, err := r.conn.ReadMsgUDPAddrPort(r.buf, r.oob)
	if err != nil {
		return nil, err
	}
	d := &r.out[0]
	*d = datagram{buf: r.buf[:n], src: src.Addr().Unmap(), truncated: flags&unix.MSG_TRUNC != 0}
	d.drops, d.hasDrops = parseDrops(r.oob[:oobn])
	return r.out[:], nil
}

// parseDrops finds the SO_RXQ_OVFL message among a datagram's control
// messages without allocating.
func parseDrops(oob []byte) (uint32, bool) {
	for len(oob) >= unix.SizeofCmsghdr {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0, false
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SO_RXQ_OVFL && len(data) >= 4 {
			return binary.NativeEndian.Uint32(data), true
		}
		oob = rest
	}
	return 0, false
}
