//go:build linux

package nftfw

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/yagura/yagura/internal/firewall"
)

// The NFLOG reader speaks nfnetlink_log itself: github.com/florianl/go-nflog
// (v2.1.0) only parses messages of the inet and bridge families, and the
// arp and netdev tables log with their own.

// nfnetlink_log (linux/netfilter/nfnetlink_log.h).
const (
	nfnlSubsysULOG     = 4
	nfulnlMsgPacket    = 0
	nfulnlMsgConfig    = 1
	nfulaCfgCmd        = 1
	nfulaCfgMode       = 2
	nfulaCfgNLBufSiz   = 3
	nfulaCfgTimeout    = 4
	nfulaCfgQThresh    = 5
	nfulnlCfgCmdBind   = 1
	nfulnlCopyPacket   = 2
	nfulaPacketHdr     = 1
	nfulaMark          = 2
	nfulaPayload       = 9
	nfulaPrefix        = 10
	nfgenmsgLen        = 4
	nflogKernelBufSize = 64 << 10
)

// Events binds the NFLOG group and calls emit, from one goroutine, for
// every drop and log-only event the enforcer's rules log, until ctx is
// done; then it returns nil. One reader per group and network namespace
// can be bound; a second gets an error.
func (e *Enforcer) Events(ctx context.Context, emit func(firewall.Event)) error {
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: e.cfg.NetNS})
	if err != nil {
		return fmt.Errorf("nftfw: NFLOG socket: %w", err)
	}
	defer conn.Close() // unbinds the group
	if err := conn.SetReadBuffer(8 << 20); err != nil {
		e.log.Warn("NFLOG receive buffer", "err", err)
	}
	config := func(attrs ...netlink.Attribute) error {
		b, err := netlink.MarshalAttributes(attrs)
		if err != nil {
			return err
		}
		hdr := []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0}
		binary.BigEndian.PutUint16(hdr[2:], e.cfg.LogGroup)
		_, err = conn.Execute(netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(nfnlSubsysULOG<<8 | nfulnlMsgConfig), Flags: netlink.Request | netlink.Acknowledge},
			Data:   append(hdr, b...),
		})
		return err
	}
	if err := config(netlink.Attribute{Type: nfulaCfgCmd, Data: []byte{nfulnlCfgCmdBind}}); err != nil {
		return fmt.Errorf("nftfw: bind NFLOG group %d: %w", e.cfg.LogGroup, err)
	}
	mode := binary.BigEndian.AppendUint32(nil, snapLen)
	mode = append(mode, nfulnlCopyPacket, 0)
	if err := config(
		netlink.Attribute{Type: nfulaCfgMode, Data: mode},
		netlink.Attribute{Type: nfulaCfgNLBufSiz, Data: binary.BigEndian.AppendUint32(nil, nflogKernelBufSize)},
		// Deliver within 50 ms, or once 64 messages wait.
		netlink.Attribute{Type: nfulaCfgTimeout, Data: binary.BigEndian.AppendUint32(nil, 5)},
		netlink.Attribute{Type: nfulaCfgQThresh, Data: binary.BigEndian.AppendUint32(nil, 64)},
	); err != nil {
		return fmt.Errorf("nftfw: configure NFLOG group %d: %w", e.cfg.LogGroup, err)
	}
	if e.eventsBound != nil {
		e.eventsBound()
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	var errLog time.Time
	for {
		msgs, err := conn.Receive()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			switch {
			case errors.Is(err, syscall.ENOBUFS):
				// The kernel dropped messages we did not read in time.
				e.overruns.Add(1)
			case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, syscall.EINTR):
			case errors.Is(err, syscall.EBADF), errors.Is(err, os.ErrClosed):
				return fmt.Errorf("nftfw: read NFLOG: %w", err)
			default:
				if time.Since(errLog) > time.Minute {
					errLog = time.Now()
					e.log.Warn("read NFLOG", "err", err)
				}
			}
			continue
		}
		for _, m := range msgs {
			if m.Header.Type != netlink.HeaderType(nfnlSubsysULOG<<8|nfulnlMsgPacket) {
				continue
			}
			e.handle(m.Data, emit)
		}
	}
}

// handle turns one NFLOG packet message into an event.
func (e *Enforcer) handle(data []byte, emit func(firewall.Event)) {
	if len(data) < nfgenmsgLen {
		e.undecodable.Add(1)
		return
	}
	ad, err := netlink.NewAttributeDecoder(data[nfgenmsgLen:])
	if err != nil {
		e.undecodable.Add(1)
		return
	}
	var prefix string
	var payload []byte
	var hw uint16
	var mark uint32
	for ad.Next() {
		switch ad.Type() {
		case nfulaMark:
			if b := ad.Bytes(); len(b) == 4 {
				mark = binary.BigEndian.Uint32(b)
			}
		case nfulaPacketHdr:
			if b := ad.Bytes(); len(b) >= 2 {
				hw = binary.BigEndian.Uint16(b)
			}
		case nfulaPayload:
			payload = ad.Bytes()
		case nfulaPrefix:
			prefix = ad.String()
		}
	}
	if ad.Err() != nil {
		e.undecodable.Add(1)
		return
	}
	pre, ok := parsePrefix(prefix)
	if !ok {
		e.undecodable.Add(1)
		return
	}
	h, err := parseHeaders(payload, hw)
	if err != nil {
		e.undecodable.Add(1)
		return
	}
	e.read.Add(1)
	emit(makeEvent(pre, h, mark, e.rule))
}
