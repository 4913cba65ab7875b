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
}

func newDirection() *direction {
	return &direction{
		mode: agentInitiated, inbound: make(chan net.Conn, 1),
		nudge: make(chan struct{}, 1), changed: make(chan struct{}),
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
	waitForManager := d.mode == managerInitiated && !d.announce
	d.announce = false
	d.mu.Unlock()
	if waitForManager {
		select {
		case c := <-a.dir.inbound:
			return c, nil
		case <-ctx.Done():
			return nil, ctx.Err()
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
		if d.ln != nil {
			d.ln.Close()
			d.ln, d.port = nil, 0
		}
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
		switch mode, _ := a.dir.current(); mode {
		case managerInitiated:
			select {
			case a.dir.inbound <- c:
			default:
				// One is already waiting to be used: keep the newer one.
				select {
				case old := <-a.dir.inbound:
					old.Close()
				default:
				}
				a.dir.inbound <- c
			}
		case bidirectional:
			go a.checkNudge(c)
		default:
			c.Close()
		}
	}
}

// checkNudge completes a TLS handshake as the client on a connection the
// "manager" opened: only the real manager passes the pin, and only then
// does the agent heartbeat at once.
func (a *Agent) checkNudge(c net.Conn) {
	defer c.Close()
	cfg, err := pki.PinnedClientConfig(a.id.CAFingerprint, hostOf(a.id.Manager), a.id.Roots())
	if err != nil {
		return
	}
	cert, err := a.id.TLSCertificate()
	if err != nil {
		return
	}
	cfg.Certificates = []tls.Certificate{*cert}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		a.log.Warn("refused a connection to the agent's port that is not the manager", "remote", c.RemoteAddr().String(), "err", err)
		return
	}
	select {
	case a.dir.nudge <- struct{}{}:
	default:
	}
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
