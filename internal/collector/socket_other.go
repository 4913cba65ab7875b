//go:build !linux

package collector

import (
	"net"
	"syscall"
)

// controlSocket sets nothing off Linux: without SO_REUSEPORT only one
// socket can bind an address, so use sockets: 1 there.
func controlSocket(_, _ string, _ syscall.RawConn) error { return nil }

func setReadBuffer(conn *net.UDPConn, size int) (int, error) {
	return size, conn.SetReadBuffer(size)
}

func newBatchReader(conn *net.UDPConn, _ int) (reader, error) { return newMsgReader(conn), nil }

type msgReader struct {
	conn *net.UDPConn
	buf  []byte
	out  [1]datagram
}

func newMsgReader(conn *net.UDPConn) *msgReader {
	return &msgReader{conn: conn, buf: make([]byte, maxDatagram)}
}

func (r *msgReader) read() ([]datagram, error) {
	n, src, err := r.conn.ReadFromUDPAddrPort(r.buf)
	if err != nil {
		return nil, err
	}
	r.out[0] = datagram{buf: r.buf[:n], src: src.Addr().Unmap()}
	return r.out[:], nil
}
