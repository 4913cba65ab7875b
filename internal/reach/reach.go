// Package reach provides the manager's connections to agents, for the
// bidirectional and manager-initiated communication directions.
//
// The manager opens the TCP connection to the agent's listener (port 4118
// by default) and hands it to its own HTTPS server. On that socket the agent
// is still the TLS and HTTP client: it pins the manager's CA and presents
// its certificate, exactly as on a connection it opened itself, so the same
// messages and the same checks apply in every direction. Whoever connects to
// an agent's port without the manager's key gets nothing: the agent's TLS
// handshake fails.
package reach

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/yagura/yagura/internal/fleet"
	"github.com/yagura/yagura/internal/settings"
)

// Fleet says where agents are and which ones the manager must call.
type Fleet interface {
	Reach(id string) (fleet.Reach, bool)
	ManagerInitiated() map[string]fleet.Reach
}

// Dialer connects to agents. Create it with New, serve Listener with the
// manager's HTTPS server, then Run.
type Dialer struct {
	fleet Fleet
	log   *slog.Logger
	ln    *chanListener

	mu       sync.Mutex
	inflight map[string]bool
	// backoff holds agents that could not be reached until a time, so an
	// unreachable agent is not dialed twice a second.
	backoff map[string]time.Time

	dials    *prometheus.CounterVec
	dialTime time.Duration
}

// New returns a dialer; it does no I/O.
func New(fl Fleet, log *slog.Logger, reg prometheus.Registerer) *Dialer {
	d := &Dialer{
		fleet: fl, log: log, inflight: map[string]bool{}, backoff: map[string]time.Time{}, dialTime: 5 * time.Second,
		ln: &chanListener{conns: make(chan net.Conn), done: make(chan struct{})},
		dials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "yagura_agent_dials_total", Help: "Connections the manager opened to agents, by result.",
		}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(d.dials)
	}
	return d
}

// Listener yields the connections the dialer opened, for the HTTPS server.
func (d *Dialer) Listener() net.Listener { return d.ln }

// Nudge connects to agents that accept it (bidirectional and
// manager-initiated) so that they heartbeat now. It does not wait.
func (d *Dialer) Nudge(ids ...string) {
	for _, id := range ids {
		r, ok := d.fleet.Reach(id)
		if !ok || r.Communication == settings.AgentInitiated || r.Addr == "" {
			continue
		}
		go d.connect(context.Background(), id, r.Addr)
	}
}

// Run calls manager-initiated agents once per heartbeat interval until ctx
// is cancelled.
func (d *Dialer) Run(ctx context.Context) error {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	sem := make(chan struct{}, 64)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		now := time.Now()
		for id, r := range d.fleet.ManagerInitiated() {
			if r.Addr == "" || now.Sub(r.LastSeen) < r.Interval {
				continue
			}
			select {
			case sem <- struct{}{}:
			default:
				continue // busy: next tick
			}
			go func() {
				defer func() { <-sem }()
				d.connect(ctx, id, r.Addr)
			}()
		}
	}
}

// connect dials one agent, at most one connection per agent at a time, and
// hands the connection to the server.
func (d *Dialer) connect(ctx context.Context, id, addr string) {
	d.mu.Lock()
	if d.inflight[id] || time.Now().Before(d.backoff[id]) {
		d.mu.Unlock()
		return
	}
	d.inflight[id] = true
	d.mu.Unlock()
	release := func() {
		d.mu.Lock()
		delete(d.inflight, id)
		d.mu.Unlock()
	}
	dctx, cancel := context.WithTimeout(ctx, d.dialTime)
	defer cancel()
	c, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	if err != nil {
		d.mu.Lock()
		d.backoff[id] = time.Now().Add(30 * time.Second)
		d.mu.Unlock()
		release()
		d.dials.WithLabelValues("failed").Inc()
		d.log.Debug("cannot reach agent", "agent", id, "addr", addr, "err", err)
		return
	}
	d.dials.WithLabelValues("ok").Inc()
	d.mu.Lock()
	delete(d.backoff, id)
	d.mu.Unlock()
	conn := &trackedConn{Conn: c, onClose: release}
	select {
	case d.ln.conns <- conn:
	case <-d.ln.done:
		conn.Close()
	case <-ctx.Done():
		conn.Close()
	}
}

// trackedConn lets the dialer know when the server is done with it.
type trackedConn struct {
	net.Conn
	once    sync.Once
	onClose func()
}

func (c *trackedConn) Close() error {
	c.once.Do(c.onClose)
	return c.Conn.Close()
}

// chanListener is a net.Listener whose connections come from the dialer.
type chanListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return dialedAddr{} }

type dialedAddr struct{}

func (dialedAddr) Network() string { return "tcp" }
func (dialedAddr) String() string  { return "agents (outbound)" }
