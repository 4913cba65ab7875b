//go:build linux

package nftfw

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// transact runs fill on an emitter and commits what it queued as one
// nftables transaction; it returns the number of messages.
//
// The nftables package marshals the messages, but its Flush asks an
// acknowledgement of every message and an echo of every rule, and reads
// them one by one: for 10,000 rules that is most of the time Apply takes.
// So the messages are captured (through the package's test dial, which
// hands over exactly what Flush would send) and sent here with a single
// acknowledgement, asked of the last message. The kernel applies a batch
// all or nothing, and reports each failing message whether or not it asked
// for an acknowledgement.
func (e *Enforcer) transact(ctx context.Context, fill func(*emitter) error) (int, error) {
	var batch []netlink.Message
	capture, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		if req == nil {
			return nil, io.EOF // Flush waiting for answers: there are none
		}
		batch = append(batch, req...)
		return nil, nil
	}))
	if err != nil {
		return 0, err
	}
	em := &emitter{cc: capture, cfg: e.cfg}
	if err := fill(em); err != nil {
		return em.msgs, err
	}
	if err := capture.Flush(); err != nil {
		return em.msgs, fmt.Errorf("marshal: %w", err)
	}
	// batch: BATCH_BEGIN, the messages, BATCH_END.
	if len(batch) < 3 {
		return 0, nil
	}
	size := 0
	for i := range batch {
		m := &batch[i]
		m.Header.Sequence, m.Header.PID = 0, 0
		if i > 0 && i < len(batch)-1 {
			m.Header.Flags &^= netlink.Acknowledge | netlink.Echo
		}
		size += int(m.Header.Length)
	}
	last := len(batch) - 2
	batch[last].Header.Flags |= netlink.Acknowledge

	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: e.cfg.NetNS})
	if err != nil {
		return len(batch) - 2, fmt.Errorf("netlink: %w", err)
	}
	defer conn.Close()
	// The whole batch goes in one sendmsg, which netlink refuses beyond the
	// send buffer: raise it (root may, with SO_SNDBUFFORCE).
	if err := conn.SetWriteBuffer(size + 1<<16); err != nil {
		return len(batch) - 2, fmt.Errorf("netlink send buffer: %w", err)
	}
	_ = conn.SetReadBuffer(1 << 20)
	_ = conn.SetOption(netlink.ExtendedAcknowledge, true)
	_ = conn.SetOption(netlink.CapAcknowledge, true)
	deadline := time.Now().Add(time.Minute)
	if dl, ok := ctx.Deadline(); ok {
		deadline = dl
	}
	_ = conn.SetDeadline(deadline)
	sent, err := conn.SendMessages(batch)
	if err != nil {
		return len(batch) - 2, fmt.Errorf("send: %w", err)
	}
	index := make(map[uint32]int, len(sent))
	for i, m := range sent {
		index[m.Header.Sequence] = i
	}
	return len(batch) - 2, readAnswers(conn, sent, index, sent[last].Header.Sequence)
}

// readAnswers reads the kernel's answers to a batch: errors of failing
// messages, then the acknowledgement of the last one. After an error it
// reads on briefly for more, as the kernel reports every failing message.
func readAnswers(conn *netlink.Conn, sent []netlink.Message, index map[uint32]int, lastSeq uint32) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var errs []error
	buf := make([]byte, 1<<16)
	for {
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && len(errs) > 0 {
				return errors.Join(errs...)
			}
			if errors.Is(err, unix.ENOBUFS) {
				errs = append(errs, errors.New("more errors than could be read"))
				return errors.Join(errs...)
			}
			return errors.Join(append(errs, fmt.Errorf("receive: %w", err))...)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("parse answer: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 {
				continue
			}
			errno := -int32(binary.NativeEndian.Uint32(m.Data[:4]))
			if errno != 0 {
				errs = append(errs, answerError(m, errno, sent, index))
				// Give the kernel's other answers a moment, then stop.
				_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			}
			if m.Header.Seq == lastSeq {
				return errors.Join(errs...)
			}
		}
	}
}

// answerError describes the failure of one message of a batch, with the
// kernel's extended acknowledgement message when it sent one.
func answerError(m syscall.NetlinkMessage, errno int32, sent []netlink.Message, index map[uint32]int) error {
	what := fmt.Sprintf("message %d", m.Header.Seq)
	if i, ok := index[m.Header.Seq]; ok {
		what = fmt.Sprintf("message %d of %d (%s)", i, len(sent)-2, msgType(sent[i].Header.Type))
	}
	err := fmt.Errorf("%s: %w", what, syscall.Errno(errno))
	// With NLM_F_CAPPED, the original header follows the errno and the
	// extended acknowledgement's attributes follow it.
	const capped, tlvs = 0x100, 0x200
	if m.Header.Flags&tlvs == 0 || m.Header.Flags&capped == 0 || len(m.Data) < 4+unix.NLMSG_HDRLEN {
		return err
	}
	ad, aerr := netlink.NewAttributeDecoder(m.Data[4+unix.NLMSG_HDRLEN:])
	if aerr != nil {
		return err
	}
	for ad.Next() {
		if ad.Type() == unix.NLMSGERR_ATTR_MSG {
			return fmt.Errorf("%w: %s", err, ad.String())
		}
	}
	return err
}

func msgType(t netlink.HeaderType) string {
	switch int(t) & 0xff {
	case unix.NFT_MSG_NEWTABLE:
		return "new table"
	case unix.NFT_MSG_DELTABLE:
		return "delete table"
	case unix.NFT_MSG_NEWCHAIN:
		return "new chain"
	case unix.NFT_MSG_NEWRULE:
		return "new rule"
	case unix.NFT_MSG_NEWSET:
		return "new set"
	case unix.NFT_MSG_NEWSETELEM:
		return "set elements"
	case unix.NFT_MSG_NEWOBJ:
		return "new object"
	}
	return fmt.Sprintf("type %#x", int(t))
}
