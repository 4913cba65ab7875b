package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/agent"
	"github.com/yagura/yagura/internal/api"
	"github.com/yagura/yagura/internal/credentials"
	"github.com/yagura/yagura/internal/ctl"
	"github.com/yagura/yagura/internal/pki"
)

// metric reads one counter from the manager's /metrics.
func (m *manager) metric(t *testing.T, name string) float64 {
	t.Helper()
	tc, _ := pki.PinnedClientConfig(m.fp, "127.0.0.1", nil)
	req, _ := http.NewRequest(http.MethodGet, m.url+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+m.key(t))
	resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: tc}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name+" ") {
			var v float64
			fmt.Sscan(strings.TrimPrefix(line, name+" "), &v)
			return v
		}
	}
	return 0
}

func (m *manager) key(t *testing.T) string {
	t.Helper()
	f, err := credentials.Load(m.creds)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ctl.Login(t.Context(), ctl.Target{URL: m.url, CAFingerprint: m.fp, User: f.User, Password: f.Password})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

var listenRe = regexp.MustCompile(`msg="listening for the manager" component=agent addr=(\S+)`)

// TestCommunicationDirections runs the same heartbeat, job and event checks
// in all three directions, and checks that the agent's port refuses a peer
// that is not the manager.
func TestCommunicationDirections(t *testing.T) {
	endToEnd(t)
	dir := t.TempDir()
	m := startManager(t, dir)
	// A long interval: a job arriving within seconds proves the direction's
	// own way of reaching the agent (long poll, nudge, manager's call).
	if _, err := m.ctl(t, "settings", "set", "heartbeat.interval=10s", "heartbeat.offline_after_missed=unlimited"); err != nil {
		t.Fatal(err)
	}
	tok := m.token(t, "--max-uses", "3")
	c := m.client(t)
	for _, mode := range []string{"agent-initiated", "bidirectional", "manager-initiated"} {
		t.Run(mode, func(t *testing.T) {
			adir := t.TempDir()
			if out, err := m.enroll(t, adir, tok.Token); err != nil {
				t.Fatalf("enrol: %v\n%s", err, out)
			}
			id, _ := agent.LoadIdentity(adir)
			if _, err := m.ctl(t, "computers", "set-communication", id.AgentID, mode); err != nil {
				t.Fatal(err)
			}
			a := startProc(t, "agent-"+mode, "agent", "--data-dir", adir, "--listen", "127.0.0.1:0", "--test-events", "50")
			if mode != "agent-initiated" {
				eventually(t, 15*time.Second, "the agent to listen", func() (bool, string) {
					return listenRe.MatchString(a.out.String()), a.out.String()
				})
			}
			// Heartbeats keep coming.
			var first time.Time
			eventually(t, 30*time.Second, "heartbeats", func() (bool, string) {
				c := m.computers(t)[id.AgentID]
				if c.LastSeen == nil {
					return false, "never seen"
				}
				if first.IsZero() {
					first = *c.LastSeen
				}
				return c.Status == "online" && c.LastSeen.After(first), fmt.Sprint(c.Status, c.LastSeen)
			})
			// A job reaches the agent within seconds, not an interval.
			time.Sleep(time.Second)
			var j api.Job
			m.mustCtlJSON(t, &j, "jobs", "create", "heartbeat-now", "--computer", id.AgentID)
			j = m.waitJob(t, j.ID, 15*time.Second)
			tg := j.Targets[0]
			if tg.Status != "succeeded" {
				t.Fatalf("job: %+v", tg)
			}
			if d := tg.DeliveredAt.Sub(j.CreatedAt); d > 3*time.Second {
				t.Errorf("job delivered after %s with a 10s interval", d)
			}
			// Events arrive.
			eventually(t, 30*time.Second, "50 events", func() (bool, string) {
				n := m.countEvents(t, c, eventQuery(id.AgentID, "test"))
				return n == 50, fmt.Sprint(n)
			})
			if mode != "agent-initiated" {
				if m.metric(t, `yagura_agent_dials_total{result="ok"}`) == 0 {
					t.Error("the manager never connected to an agent")
				}
				addr := listenRe.FindStringSubmatch(a.out.String())[1]
				t.Run("the agent's port refuses a peer that is not the manager", func(t *testing.T) {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						t.Fatal(err)
					}
					defer c.Close()
					// Pretend to be the manager with a certificate of our own.
					fake, _ := pki.NewCA("fake manager", time.Now(), time.Hour)
					chain, key, _ := fake.IssueServer([]string{"127.0.0.1"}, time.Now(), time.Hour)
					kp, _ := tls.X509KeyPair(chain, key)
					srv := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{kp}, ClientAuth: tls.RequestClientCert})
					c.SetDeadline(time.Now().Add(10 * time.Second))
					if err := srv.Handshake(); err == nil {
						// TLS 1.3: the client's refusal arrives with the first read.
						_, err = srv.Read(make([]byte, 1))
						if err == nil {
							t.Fatal("the agent talked to a fake manager")
						}
					}
				})
			}
			a.stop(t, syscall.SIGTERM)
			if mode == "manager-initiated" {
				// After a restart the agent still waits for the manager's
				// calls, and they still come.
				a = startProc(t, "agent-"+mode+"-again", "agent", "--data-dir", adir, "--listen", "127.0.0.1:0")
				restarted := time.Now()
				eventually(t, 30*time.Second, "heartbeats after a restart", func() (bool, string) {
					c := m.computers(t)[id.AgentID]
					return c.LastSeen != nil && c.LastSeen.After(restarted) && strings.Contains(a.out.String(), "listening for the manager"), a.out.String()
				})
				a.stop(t, syscall.SIGTERM)
			}
		})
	}
	m.proc.stop(t, syscall.SIGTERM)
}
