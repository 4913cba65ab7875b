package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/yagura/yagura/internal/pki"
)

// Communication directions (as told by the manager).
const (
	agentInitiated   = "agent-initiated"
	bidirectional    = "bidirectional"
	managerInitiated = "manager-initiated"
)

// direction follows the communication direction the manager sets:
//
//   - agent-initiated: the agent opens every connection (the default);
//   - bidirectional: the agent also listens, and a connection from the
//     manager means "heartbeat now";
//   - manager-initiated: the agent never dials; it waits for the manager to
//     connect and runs its usual exchange on that socket.
//
// In every case the agent is the TLS client and pins the manager's CA: a
// connection to its port from anyone else fails the handshake.
type direction struct {
	mu      sync.Mutex
	mode    string
	ln      net.Listener
	port    int
	inbound chan net.Conn // manager-initiated: sockets for the client to use
	nudge   chan struct{} // bidirectional: heartbeat now
	changed chan struct{} // closed and replaced when the mode changes
	// announce lets one heartbeat go out on the agent's own connection
	// after it starts listening, to tell the manager its port.
	announce bool
	// checking bounds the inbound connections being verified at once.
	checking chan struct{}
	// refusals counts connections that were not the manager since the
	// last log line about them.
	refusals       int
	lastRefusalLog time.Time
}

func newDirection() *direction {
	return &direction{
		mode: agentInitiated, inbound: make(chan net.Conn, 1),
		nudge: make(chan struct{}, 1), changed: make(chan struct{}), checking: make(chan struct{}, 8),
	}
}

func (d *direction) current() (string, <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mode, d.changed
}

func (d *direction) listenPort() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.port
}

// dial is the client's way to a manager connection: its own, or, when the
// manager initiates, the next socket the manager opened.
func (a *Agent) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d := a.dir
	d.mu.Lock()
	// Wait for the manager only while listening: if the port could not be
	// opened, dialing out is the only way to stay in touch.
	waitForManager := d.mode == managerInitiated && d.ln != nil && !d.announce
	d.announce = false
	d.mu.Unlock()
	if waitForManager {
		// If the manager has not called for three intervals (it restarted
		// and forgot this agent's port, or cannot route to it), go out once
		// to tell it where the agent is. Where the agent may not connect
		// out, that attempt simply fails.
		silence := time.NewTimer(3*a.heartbeatInterval() + 5*time.Second)
		defer silence.Stop()
		select {
		case c := <-a.dir.inbound:
			return c, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-silence.C:
			a.log.Warn("the manager has not called for three heartbeat intervals; reaching out once to tell it where this agent listens")
		}
	}
	return (&net.Dialer{Timeout: 15 * time.Second}).DialContext(ctx, network, addr)
}

// setDirection applies what the manager said, listening or not.
func (a *Agent) setDirection(ctx context.Context, mode string, port int) {
	if mode == "" {
		mode = agentInitiated
	}
	d := a.dir
	d.mu.Lock()
	defer d.mu.Unlock()
	if mode == d.mode {
		return
	}
	a.log.Info("communication direction set by manager", "from", d.mode, "to", mode)
	d.mode = mode
	close(d.changed)
	d.changed = make(chan struct{})
	if a.q != nil {
		_ = a.q.PutMeta("communication", []byte(mode+" "+strconv.Itoa(port)))
	}
	if mode == agentInitiated {
		d.closeListenerLocked()
		return
	}
	if d.ln != nil {
		return
	}
	addr := a.cfg.Listen
	if addr == "" {
		addr = ":" + strconv.Itoa(port)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		a.log.Error("cannot listen for the manager; it will not be able to reach this agent", "addr", addr, "err", err)
		return
	}
	d.ln = ln
	d.port = ln.Addr().(*net.TCPAddr).Port
	d.announce = true
	a.log.Info("listening for the manager", "addr", ln.Addr().String())
	go a.accept(ctx, ln)
}

func (d *direction) closeListenerLocked() {
	if d.ln != nil {
		d.ln.Close()
		d.ln, d.port = nil, 0
	}
}

// stopListening closes the listener at shutdown without forgetting the
// direction, which the next run restores.
func (d *direction) stopListening() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closeListenerLocked()
}

// restoreDirection reapplies the direction remembered from the last run, so
// an agent the manager calls keeps listening across restarts.
func (a *Agent) restoreDirection(ctx context.Context) {
	b, err := a.q.Meta("communication")
	if err != nil || len(b) == 0 {
		return
	}
	var mode string
	var port int
	for i, c := range b {
		if c == ' ' {
			mode = string(b[:i])
			port, _ = strconv.Atoi(string(b[i+1:]))
			break
		}
	}
	a.setDirection(ctx, mode, port)
}

func (a *Agent) accept(ctx context.Context, ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) && ctx.Err() == nil {
				a.log.Error("accept a connection from the manager", "err", err)
			}
			return
		}
		select {
		case a.dir.checking <- struct{}{}:
		default:
			c.Close() // too many half-open connections: drop
			continue
		}
		go func() {
			defer func() { <-a.dir.checking }()
			a.inboundConn(c)
		}()
	}
}

// inboundConn proves that a connection to the agent's port comes from the
// manager (the agent's TLS handshake, as client, with the pinned CA and its
// own certificate) before anything uses it.
func (a *Agent) inboundConn(c net.Conn) {
	tc, err := a.verifyManager(c)
	if err != nil {
		c.Close()
		a.dir.refused(a.log, c.RemoteAddr().String(), err)
		return
	}
	switch mode, _ := a.dir.current(); mode {
	case managerInitiated:
		// The client uses it for its next exchange. One waits at most: a
		// newer call replaces an older one.
		select {
		case a.dir.inbound <- tc:
		default:
			select {
			case old := <-a.dir.inbound:
				old.Close()
			default:
			}
			select {
			case a.dir.inbound <- tc:
			default:
				tc.Close()
			}
		}
	case bidirectional:
		tc.Close()
		select {
		case a.dir.nudge <- struct{}{}:
		default:
		}
	default:
		tc.Close()
	}
}

// verifyManager does the agent's TLS handshake on an inbound connection,
// within 10 s.
func (a *Agent) verifyManager(c net.Conn) (*tls.Conn, error) {
	id := a.identity()
	cfg, err := pki.PinnedClientConfig(id.CAFingerprint, hostOf(id.Manager), id.Roots())
	if err != nil {
		return nil, err
	}
	cert, err := id.TLSCertificate()
	if err != nil {
		return nil, err
	}
	cfg.Certificates = []tls.Certificate{*cert}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return tc, nil
}

// refused logs a connection that was not the manager, at most once a
// minute, so a scan of the port cannot flood the log.
func (d *direction) refused(log interface{ Warn(string, ...any) }, remote string, err error) {
	d.mu.Lock()
	d.refusals++
	n, last := d.refusals, d.lastRefusalLog
	now := time.Now()
	if now.Sub(last) < time.Minute {
		d.mu.Unlock()
		return
	}
	d.lastRefusalLog, d.refusals = now, 0
	d.mu.Unlock()
	log.Warn("refused a connection to the agent's port that is not the manager", "remote", remote, "err", err, "refused_since_last_log", n)
}

func hostOf(manager string) string {
	u, err := ParseManagerURL(manager)
	if err != nil {
		return ""
	}
	return u.Hostname()
}

// pause waits d, or less if the manager nudges or the direction changes.
func (a *Agent) pause(ctx context.Context, d time.Duration) {
	_, changed := a.dir.current()
	select {
	case <-ctx.Done():
	case <-time.After(d):
	case <-a.dir.nudge:
	case <-changed:
	}
}
