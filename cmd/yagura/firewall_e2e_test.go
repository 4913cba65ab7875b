package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/api"
)

// lab is three hosts: this one (the manager), an agent and a peer, each in
// its own network namespace but the first, joined by veth pairs:
//
//	manager 10.X.1.1 ── 10.X.1.2 agent 10.X.2.2 ── 10.X.2.1 peer
type lab struct {
	agentNS, peerNS string
	managerIP       string
	agentIP         string // on the peer's side
	peerIP          string
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newLab(t *testing.T) *lab {
	t.Helper()
	requireTool(t, "ip", "iproute2")
	requireTool(t, "nft", "nftables")
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the firewall end-to-end test needs root (network namespaces, nftables)")
		}
		t.Skip("the firewall end-to-end test needs root (network namespaces, nftables)")
	}
	n := 100 + rand.IntN(100)
	id := strconv.Itoa(os.Getpid()%10000) + "-" + strconv.Itoa(n)
	l := &lab{agentNS: "yg-agent-" + id, peerNS: "yg-peer-" + id,
		managerIP: fmt.Sprintf("10.%d.1.1", n), agentIP: fmt.Sprintf("10.%d.2.2", n), peerIP: fmt.Sprintf("10.%d.2.1", n)}
	vm, va, vp, vq := "ygm"+strconv.Itoa(n), "yga"+strconv.Itoa(n), "ygp"+strconv.Itoa(n), "ygq"+strconv.Itoa(n)
	run(t, "ip", "netns", "add", l.agentNS)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", l.agentNS).Run() })
	run(t, "ip", "netns", "add", l.peerNS)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", l.peerNS).Run() })
	run(t, "ip", "link", "add", vm, "type", "veth", "peer", "name", va, "netns", l.agentNS)
	t.Cleanup(func() { exec.Command("ip", "link", "del", vm).Run() })
	run(t, "ip", "addr", "add", l.managerIP+"/24", "dev", vm)
	run(t, "ip", "link", "set", vm, "up")
	in := func(ns string, args ...string) { run(t, append([]string{"ip", "netns", "exec", ns}, args...)...) }
	in(l.agentNS, "ip", "addr", "add", fmt.Sprintf("10.%d.1.2/24", n), "dev", va)
	in(l.agentNS, "ip", "link", "set", va, "up")
	in(l.agentNS, "ip", "link", "set", "lo", "up")
	in(l.agentNS, "ip", "link", "add", vp, "type", "veth", "peer", "name", vq, "netns", l.peerNS)
	in(l.agentNS, "ip", "addr", "add", l.agentIP+"/24", "dev", vp)
	in(l.agentNS, "ip", "link", "set", vp, "up")
	in(l.peerNS, "ip", "addr", "add", l.peerIP+"/24", "dev", vq)
	in(l.peerNS, "ip", "link", "set", vq, "up")
	in(l.peerNS, "ip", "link", "set", "lo", "up")
	return l
}

// serve runs a TCP server in the peer namespace that accepts and closes.
func (l *lab) serve(t *testing.T, port int) { serveIn(t, l.peerNS, l.peerIP, port) }

// serveIn runs a TCP server that accepts and closes, in a namespace.
func serveIn(t *testing.T, ns, addr string, port int) {
	t.Helper()
	py := requireTool(t, "python3", "python3")
	cmd := exec.Command("ip", "netns", "exec", ns, py, "-c", fmt.Sprintf(`
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("%s", %d)); s.listen(16)
while True:
    c, _ = s.accept(); c.close()
`, addr, port))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
}

// reach reports whether a TCP connection from one namespace to addr:port
// opens within two seconds.
func reach(ns, addr string, port int) bool {
	return exec.Command("ip", "netns", "exec", ns, "timeout", "2", "bash", "-c",
		fmt.Sprintf("exec 3<>/dev/tcp/%s/%d", addr, port)).Run() == nil
}

func (l *lab) table(t *testing.T) string {
	out, _ := exec.Command("ip", "netns", "exec", l.agentNS, "nft", "list", "table", "inet", "yagura").CombinedOutput()
	return string(out)
}

// TestFirewallEndToEnd runs the manager on this host and the real agent in
// a namespace with its nftables backend, then checks: a policy change at
// the root reaches the agent's nftables table within 5 s; a drop in the
// kernel becomes a firewall event at the manager; isolation lets only the
// manager and the allow-list through and is released; and isolation rolls
// itself back when the manager cannot be reached through it.
func TestFirewallEndToEnd(t *testing.T) {
	endToEnd(t)
	l := newLab(t)
	m := startManagerAt(t, t.TempDir(), l.managerIP+":0")
	var pols []api.Policy
	m.mustCtlJSON(t, &pols, "policies", "list")
	root := strconv.Itoa(pols[0].ID)

	tok := m.token(t)
	dir := t.TempDir()
	if out, err := m.enroll(t, dir, tok.Token); err != nil {
		t.Fatalf("enrol: %v\n%s", err, out)
	}
	// Agents are enrolled from this namespace (same manager address), then
	// run in theirs.
	agentProc := startProcIn(t, l.agentNS, "agent", "agent", "run", "--data-dir", dir, "--log-format", "json", "--firewall", "nftables")
	var id string
	eventually(t, 20*time.Second, "the agent online", func() (bool, string) {
		for cid, c := range m.computers(t) {
			id = cid
			return c.Status == "online", c.Status
		}
		return false, "no computer"
	})

	// 1. A rule at the root reaches the kernel within 5 s.
	l.serve(t, 8081)
	l.serve(t, 8082)
	serveIn(t, l.agentNS, "127.0.0.1", 8090)
	rulesFile := filepath.Join(t.TempDir(), "rules.json")
	os.WriteFile(rulesFile, []byte(`{"name":"deny 9999 in","action":"deny","priority":"2","direction":"incoming","protocol":"tcp",
		"destinationPortType":"multiple","destinationPortMultiple":["9999"]}`), 0o600)
	var rule struct{ ID int }
	m.mustCtlJSON(t, &rule, "rules", "create", "-f", rulesFile)
	ruleID := rule.ID
	start := time.Now()
	if _, err := m.ctl(t, "policies", "set", root, "firewall.enabled=on", "--assign", strconv.Itoa(ruleID)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the rule in the agent's nftables table", func() (bool, string) {
		tb := l.table(t)
		return strings.Contains(tb, "9999"), tb
	})
	t.Logf("root policy change in the agent's nftables table after %s", time.Since(start).Round(time.Millisecond))
	var eff api.EffectivePolicy
	eventually(t, 10*time.Second, "the computer up to date", func() (bool, string) {
		m.mustCtlJSON(t, &eff, "computers", "policy", id)
		return eff.Status == "up-to-date", eff.Status
	})

	// 2. A packet the kernel drops becomes a firewall event at the manager.
	if reach(l.peerNS, l.agentIP, 9999) {
		t.Fatal("a connection to the denied port 9999 opened")
	}
	eventually(t, 15*time.Second, "a firewall event at the manager", func() (bool, string) {
		var evs []api.Event
		m.mustCtlJSON(t, &evs, "events", "list", "--type", "firewall", "--computer", id)
		for _, e := range evs {
			var d struct {
				RuleID  int    `json:"rule_id"`
				DstPort int    `json:"dst_port"`
				Verdict string `json:"verdict"`
			}
			json.Unmarshal(e.Data, &d)
			if d.RuleID == ruleID && d.DstPort == 9999 && d.Verdict == "drop" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d firewall events", len(evs))
	})

	// 3. Isolation: the manager and the allow-list only.
	if !reach(l.agentNS, l.peerIP, 8081) || !reach(l.agentNS, l.peerIP, 8082) {
		t.Fatal("the peer is unreachable before isolation")
	}
	var job api.Job
	m.mustCtlJSON(t, &job, "computers", "isolate", id, "--allow", "tcp "+l.peerIP+":8081")
	if j := m.waitJob(t, job.ID, 30*time.Second); j.Counts["succeeded"] != 1 {
		t.Fatalf("isolate job: %+v", j.Counts)
	}
	if !reach(l.agentNS, l.peerIP, 8081) {
		t.Error("isolated: the allow-listed peer port 8081 is unreachable")
	}
	if reach(l.agentNS, l.peerIP, 8082) {
		t.Error("isolated: peer port 8082 is reachable")
	}
	if reach(l.peerNS, l.agentIP, 22) {
		t.Error("isolated: the peer reaches the agent")
	}
	// Loopback is never filtered: local services keep working.
	if !reach(l.agentNS, "127.0.0.1", 8090) {
		t.Error("isolated: a service on the agent's loopback is unreachable from the agent")
	}
	eventually(t, 10*time.Second, "the computer shown isolated", func() (bool, string) {
		c := m.computers(t)[id]
		return c.Isolated, fmt.Sprint(c.Isolated)
	})
	m.mustCtlJSON(t, &job, "computers", "release", id)
	if j := m.waitJob(t, job.ID, 30*time.Second); j.Counts["succeeded"] != 1 {
		t.Fatalf("release job: %+v", j.Counts)
	}
	if !reach(l.agentNS, l.peerIP, 8082) {
		t.Error("released: peer port 8082 is still unreachable")
	}
	eventually(t, 10*time.Second, "the computer shown released", func() (bool, string) {
		c := m.computers(t)[id]
		return !c.Isolated, fmt.Sprint(c.Isolated)
	})

	// 4. Rollback: new connections to the manager are dropped by a table of
	// the host's own (the agent's kept connection still works, so the job
	// arrives); the agent cannot prove the manager reachable under
	// isolation and must undo it by itself.
	_, port, _ := strings.Cut(strings.TrimPrefix(m.url, "https://"), ":")
	blocker := fmt.Sprintf(`table inet yagura_test_block {
		chain out { type filter hook output priority 10; policy accept;
			ip daddr %s tcp dport %s tcp flags & (syn | ack) == syn drop
		}
	}`, l.managerIP, port)
	bf := filepath.Join(t.TempDir(), "block.nft")
	os.WriteFile(bf, []byte(blocker), 0o600)
	run(t, "ip", "netns", "exec", l.agentNS, "nft", "-f", bf)
	m.mustCtlJSON(t, &job, "computers", "isolate", id)
	eventually(t, 30*time.Second, "the agent to roll isolation back", func() (bool, string) {
		return strings.Contains(agentProc.out.String(), "rolled back"), "no rollback in the agent's log"
	})
	if tb := l.table(t); strings.Contains(tb, "Isolation") || !reach(l.agentNS, l.peerIP, 8082) {
		t.Errorf("after the rollback the host is still isolated:\n%s", tb)
	}
	run(t, "ip", "netns", "exec", l.agentNS, "nft", "delete", "table", "inet", "yagura_test_block")
	j := m.waitJob(t, job.ID, 60*time.Second)
	if j.Counts["failed"] != 1 {
		t.Errorf("isolate job with the manager unreachable: %+v, want failed", j.Counts)
	}

	// The agent removes its table when it stops.
	agentProc.stop(t, os.Interrupt)
	if tb := l.table(t); strings.Contains(tb, "chain") {
		t.Errorf("the agent stopped but left its table:\n%s", tb)
	}
}

// startProcIn runs yagura in a network namespace.
func startProcIn(t *testing.T, ns, name string, args ...string) *proc {
	t.Helper()
	return startCmd(t, name, exec.Command("ip", append([]string{"netns", "exec", ns, yaguraBin(t)}, args...)...))
}
