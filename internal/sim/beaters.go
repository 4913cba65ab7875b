package sim

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/yagura/yagura/internal/agent"
	"github.com/yagura/yagura/internal/pki"
	"github.com/yagura/yagura/internal/proto"
)

// beater sends heartbeats for simulated agent i. Calls for one i never
// overlap (an agent has one heartbeat in flight at most); calls for
// different agents run concurrently.
type beater interface {
	beat(ctx context.Context, i int, hb *proto.Heartbeat) error
	close()
}

// agentBeater uses the real agent client: what a host runs, including
// net/http's client machinery.
type agentBeater struct{ clients []*agent.Client }

func newAgentBeater(t target, ids []identity, dial dialFunc) (*agentBeater, error) {
	b := &agentBeater{clients: make([]*agent.Client, len(ids))}
	for i, id := range ids {
		cert, err := tls.X509KeyPair([]byte(id.Cert), []byte(id.Key))
		if err != nil {
			return nil, fmt.Errorf("simulated identity %s: %w", id.AgentID, err)
		}
		b.clients[i], err = agent.NewClient(agent.ClientOptions{
			Manager: t.URL, CAFingerprint: t.CAFingerprint, Cert: &cert, Dial: dial, IdleTimeout: 1 << 62,
		})
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

func (b *agentBeater) beat(ctx context.Context, i int, hb *proto.Heartbeat) error {
	_, err := b.clients[i].Heartbeat(ctx, hb)
	return err
}

func (b *agentBeater) close() {
	for _, c := range b.clients {
		c.Close()
	}
}

// rawBeater speaks the same protocol — TLS with the agent's certificate,
// HTTP/1.1, the same JSON — over one kept connection per agent, without
// net/http's client. On a 2-core machine the load generator competes with
// the manager for CPU; this keeps it from being the bottleneck.
type rawBeater struct {
	host  string
	addr  string
	dial  dialFunc
	tls   *tls.Config
	certs []tls.Certificate
	conns []*rawConn
}

type rawConn struct {
	mu  sync.Mutex
	c   *tls.Conn
	br  *bufio.Reader
	buf []byte
}

type dialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

type target struct{ URL, CAFingerprint string }

func newRawBeater(t target, ids []identity, dial dialFunc) (*rawBeater, error) {
	u, err := agent.ParseManagerURL(t.URL)
	if err != nil {
		return nil, err
	}
	tc, err := pki.PinnedClientConfig(t.CAFingerprint, u.Hostname(), nil)
	if err != nil {
		return nil, err
	}
	tc.NextProtos = []string{"http/1.1"}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "443")
	}
	b := &rawBeater{host: u.Host, addr: addr, dial: dial, tls: tc, certs: make([]tls.Certificate, len(ids)), conns: make([]*rawConn, len(ids))}
	for i, id := range ids {
		if b.certs[i], err = tls.X509KeyPair([]byte(id.Cert), []byte(id.Key)); err != nil {
			return nil, fmt.Errorf("simulated identity %s: %w", id.AgentID, err)
		}
		b.conns[i] = &rawConn{}
	}
	return b, nil
}

func (b *rawBeater) connect(ctx context.Context, i int) (*rawConn, error) {
	rc := b.conns[i]
	if rc.c != nil {
		return rc, nil
	}
	raw, err := b.dial(ctx, "tcp", b.addr)
	if err != nil {
		return nil, err
	}
	cfg := b.tls.Clone()
	cfg.Certificates = []tls.Certificate{b.certs[i]}
	c := tls.Client(raw, cfg)
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	rc.c, rc.br = c, bufio.NewReaderSize(c, 1024)
	return rc, nil
}

var pathHeartbeat = (&url.URL{Path: proto.PathHeartbeat}).EscapedPath()

func (b *rawBeater) beat(ctx context.Context, i int, hb *proto.Heartbeat) error {
	rc := b.conns[i]
	rc.mu.Lock()
	defer rc.mu.Unlock()
	body, err := json.Marshal(hb)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		if _, err := b.connect(ctx, i); err != nil {
			return err
		}
		err := b.exchange(rc, body)
		if err == nil {
			return nil
		}
		// The manager may close an idle connection: reconnect once.
		rc.c.Close()
		rc.c = nil
		if attempt > 0 || ctx.Err() != nil {
			return err
		}
	}
}

func (b *rawBeater) exchange(rc *rawConn, body []byte) error {
	rc.buf = append(rc.buf[:0], "POST "...)
	rc.buf = append(rc.buf, pathHeartbeat...)
	rc.buf = append(rc.buf, " HTTP/1.1\r\nHost: "...)
	rc.buf = append(rc.buf, b.host...)
	rc.buf = append(rc.buf, "\r\nContent-Type: application/json\r\nContent-Length: "...)
	rc.buf = strconv.AppendInt(rc.buf, int64(len(body)), 10)
	rc.buf = append(rc.buf, "\r\n\r\n"...)
	rc.buf = append(rc.buf, body...)
	if _, err := rc.c.Write(rc.buf); err != nil {
		return err
	}
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("manager answered %s: %s", resp.Status, b)
	}
	var r proto.HeartbeatResponse
	return proto.Decode(resp.Body, &r)
}

func (b *rawBeater) close() {
	for _, rc := range b.conns {
		if rc.c != nil {
			rc.c.Close()
		}
	}
}

// eventSender replaces each heartbeat by a batch of perBatch firewall-like
// events sent through the real agent client: the agent's path into the
// telemetry store (gateway, group commit, store), measured end to end.
type eventSender struct {
	clients  []*agent.Client
	perBatch int
	seq      atomic.Uint64
}

func newEventSender(t target, ids []identity, dial dialFunc, perBatch int) (*eventSender, error) {
	ab, err := newAgentBeater(t, ids, dial)
	if err != nil {
		return nil, err
	}
	return &eventSender{clients: ab.clients, perBatch: perBatch}, nil
}

func (s *eventSender) beat(ctx context.Context, i int, _ *proto.Heartbeat) error {
	n := s.seq.Add(1)
	now := time.Now().UTC()
	b := proto.EventBatch{V: proto.Version, Events: make([]proto.Event, s.perBatch)}
	for k := range b.Events {
		b.Events[k] = proto.Event{
			ID: fmt.Sprintf("sim-%d-%d", n, k), Type: "firewall", Severity: "warning", Time: now,
			Data: json.RawMessage(fmt.Sprintf(`{"action":"deny","src":"203.0.113.%d","dst":"192.0.2.%d","dpt":%d,"proto":"tcp"}`, k%250, i%250, 1+k%1024)),
		}
	}
	body, err := json.Marshal(b)
	if err != nil {
		return err
	}
	ack, err := s.clients[i].SendEvents(ctx, body)
	if err != nil {
		return err
	}
	if ack.Stored != s.perBatch {
		return fmt.Errorf("manager stored %d of %d events", ack.Stored, s.perBatch)
	}
	return nil
}

func (s *eventSender) close() {
	for _, c := range s.clients {
		c.Close()
	}
}
