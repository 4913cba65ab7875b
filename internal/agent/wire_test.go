package agent_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/agent"
	"github.com/yagura/yagura/internal/api"
	"github.com/yagura/yagura/internal/pki"
	"github.com/yagura/yagura/internal/proto"
	"github.com/yagura/yagura/internal/server"
	"github.com/yagura/yagura/internal/server/servertest"
)

type countConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(int64(n))
	return n, err
}

func (c countConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// countingDial dials connections that add every byte read or written to n.
func countingDial(n *atomic.Int64) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countConn{c, n}, nil
	}
}

// TestWireBytes measures what each agent operation costs on the wire, TLS
// included, counted at the socket, and holds it to a fifth of FFRI AMC's
// polling (≈ 5.9 KB, seed 000). The figures go to docs/benchmarks.md.
func TestWireBytes(t *testing.T) {
	cfg := servertest.Config(t)
	m := servertest.Start(t, cfg, server.Options{Version: "test"})
	var tok api.Token
	m.Call(t, http.MethodPost, "/api/v1/activation-tokens", api.TokenCreate{MaxUses: 1}, http.StatusCreated, &tok)

	var n atomic.Int64
	dial := countingDial(&n)
	measure := func(what string, f func() error) int64 {
		t.Helper()
		n.Store(0)
		if err := f(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return n.Load()
	}

	enroller, err := agent.NewClient(agent.ClientOptions{Manager: m.URL, CAFingerprint: m.CAFingerprint, Dial: dial})
	if err != nil {
		t.Fatal(err)
	}
	defer enroller.Close()
	inv := agent.Inventory("test")
	keyPEM, csrPEM, err := pki.NewAgentKey(inv.Hostname)
	if err != nil {
		t.Fatal(err)
	}
	var resp *proto.EnrollResponse
	enrol := measure("enrolment", func() (err error) {
		resp, err = enroller.Enroll(t.Context(), &proto.EnrollRequest{V: proto.Version, Token: tok.Token, CSR: string(csrPEM), Inventory: inv})
		return err
	})
	cert, err := tls.X509KeyPair([]byte(resp.Certificate), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	c, err := agent.NewClient(agent.ClientOptions{Manager: m.URL, CAFingerprint: m.CAFingerprint, Cert: &cert, Dial: dial})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	seq := uint64(0)
	beat := func(withInventory bool) func() error {
		return func() error {
			seq++
			hb := &proto.Heartbeat{V: proto.Version, Seq: seq, ClockMillis: time.Now().UnixMilli(), UptimeSeconds: 86400}
			if withInventory {
				hb.Inventory = &inv
				hb.Counters = map[string]uint64{"heartbeat_failures": 0}
			}
			_, err := c.Heartbeat(t.Context(), hb)
			return err
		}
	}
	first := measure("first heartbeat", beat(true))
	idle := measure("idle heartbeat", beat(false))
	poll := measure("long poll", func() error {
		_, err := c.Wait(t.Context(), time.Second)
		return err
	})
	c.Close() // as after an idle timeout or a proxy cut
	resumed := measure("heartbeat on a new connection", beat(false))
	events := measure("10 events", func() error {
		var b strings.Builder
		b.WriteString(`{"v":1,"events":[`)
		for i := range 10 {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"id":"0193a5c2-0000-7000-8000-%012d","type":"firewall-deny","time":"2026-11-23T16:18:07Z","severity":"warning","data":{"src":"192.0.2.%d","dst_port":445}}`, i, i)
		}
		b.WriteString("]}")
		_, err := c.SendEvents(t.Context(), []byte(b.String()))
		return err
	})

	const amcPolling = 5900 // bytes, FFRI AMC v3.5.3 with TLS
	t.Logf("\n| operation | bytes | FFRI AMC |\n| --- | --- | --- |\n"+
		"| enrolment (full TLS handshake, CSR, certificate) | %d | activation ≈ 11,100 |\n"+
		"| first heartbeat after enrolment (full handshake with client certificate, inventory) | %d | polling ≈ 5,900 |\n"+
		"| heartbeat on a kept connection | %d | polling ≈ 5,900 |\n"+
		"| long poll between two heartbeats, kept connection | %d | (none: AMC polls every 15 min) |\n"+
		"| heartbeat on a new connection (TLS session resumed) | %d | polling ≈ 5,900 |\n"+
		"| 10 events on a kept connection | %d | detection notice ≈ 8,600 each |",
		enrol, first, idle, poll, resumed, events)
	for _, x := range []struct {
		what string
		got  int64
	}{{"idle heartbeat", idle}, {"heartbeat on a resumed connection", resumed}, {"heartbeat and long poll per interval", idle + poll}} {
		if x.got > amcPolling/5 {
			t.Errorf("%s: %d bytes, over a fifth of FFRI AMC's polling (%d)", x.what, x.got, amcPolling/5)
		}
	}
}
