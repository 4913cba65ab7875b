package agent_test

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/agent"
	"github.com/yagura/yagura/internal/api"
	"github.com/yagura/yagura/internal/await"
	"github.com/yagura/yagura/internal/firewall"
	"github.com/yagura/yagura/internal/pki"
	"github.com/yagura/yagura/internal/policy"
	"github.com/yagura/yagura/internal/proto"
	"github.com/yagura/yagura/internal/server"
	"github.com/yagura/yagura/internal/server/servertest"
)

// TestPolicyWireBytes measures, at the socket with TLS, what a policy with
// a 10,000-entry IP list costs on the wire (bar: ≤ 650 KB, a fifth of FFRI
// AMC's 3.25 MB for 10,000 exceptions) and what a one-rule change costs as
// a delta. The figures go to docs/benchmarks.md.
func TestPolicyWireBytes(t *testing.T) {
	m := servertest.Start(t, servertest.Config(t), server.Options{Version: "test"})
	items := make([]string, 10000)
	for i := range items {
		// Mostly single hosts, every tenth a /24 and every hundredth a range.
		a, b, c := 10+i/65536%200, i/256%256, i%256
		switch {
		case i%100 == 0:
			items[i] = fmt.Sprintf("172.%d.%d.1-172.%d.%d.99", a%16+16, b, a%16+16, b)
		case i%10 == 0:
			items[i] = fmt.Sprintf("192.%d.%d.0/24", 100+a%100, b)
		default:
			items[i] = fmt.Sprintf("%d.%d.%d.%d", a, b, c, 1+i%250)
		}
	}
	var list api.FirewallList
	m.Call(t, http.MethodPost, "/api/v1/firewall/lists/ip", api.FirewallList{Name: "blocked hosts", Items: items}, http.StatusCreated, &list)
	var rule api.FirewallRule
	m.Call(t, http.MethodPost, "/api/v1/firewall/rules", firewall.Rule{Name: "deny the blocked hosts", Action: firewall.ActionDeny, Priority: "3",
		Direction: firewall.Incoming, SourceIPType: firewall.TypeIPList, SourceIPListID: list.ID}, http.StatusCreated, &rule)
	var base api.Policy
	m.Call(t, http.MethodGet, "/api/v1/policies/1", nil, http.StatusOK, &base)
	in := api.PolicyInput{Name: base.Name, Settings: map[string]string{policy.KeyFirewallEnabled: "on"}, AssignedRules: []int{rule.ID}}
	m.Call(t, http.MethodPut, "/api/v1/policies/1", in, http.StatusOK, nil)

	var tok api.Token
	m.Call(t, http.MethodPost, "/api/v1/activation-tokens", api.TokenCreate{MaxUses: 1}, http.StatusCreated, &tok)
	var n atomic.Int64
	dial := countingDial(&n)
	inv := agent.Inventory("test")
	keyPEM, csrPEM, err := pki.NewAgentKey(inv.Hostname)
	if err != nil {
		t.Fatal(err)
	}
	enroller, err := agent.NewClient(agent.ClientOptions{Manager: m.URL, CAFingerprint: m.CAFingerprint})
	if err != nil {
		t.Fatal(err)
	}
	defer enroller.Close()
	resp, err := enroller.Enroll(t.Context(), &proto.EnrollRequest{V: proto.Version, Token: tok.Token, CSR: string(csrPEM), Inventory: inv})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair([]byte(resp.Certificate), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	c, err := agent.NewClient(agent.ClientOptions{Manager: m.URL, CAFingerprint: m.CAFingerprint, Cert: &cert, Dial: dial})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Open the connection first: the figures are for a kept connection,
	// as after the heartbeat that announces the change.
	if _, err := c.Heartbeat(t.Context(), &proto.Heartbeat{V: proto.Version, Seq: 1, ClockMillis: time.Now().UnixMilli()}); err != nil {
		t.Fatal(err)
	}

	var full *proto.PolicyResponse
	await.Cond(t, 10*time.Second, "policy resolved for the new computer", func() error {
		full, err = c.Policy(t.Context(), "")
		return err
	})
	n.Store(0)
	if full, err = c.Policy(t.Context(), ""); err != nil {
		t.Fatal(err)
	}
	fullBytes := n.Load()
	var doc policy.Document
	if err := json.Unmarshal(full.Document, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Firewall.IPLists) != 1 || len(doc.Firewall.IPLists[0].Items) != 10000 {
		t.Fatalf("the document carries %d lists, want the 10,000-entry list", len(doc.Firewall.IPLists))
	}

	// One more rule at the root: the agent holding the first document gets
	// a delta.
	var extra api.FirewallRule
	m.Call(t, http.MethodPost, "/api/v1/firewall/rules", firewall.Rule{Name: "deny telnet", Action: firewall.ActionDeny, Priority: "2",
		Direction: firewall.Incoming, Protocol: "tcp", DestinationPortType: firewall.TypeMultiple, DestinationPortMultiple: []string{"23"}}, http.StatusCreated, &extra)
	in.AssignedRules = append(in.AssignedRules, extra.ID)
	m.Call(t, http.MethodPut, "/api/v1/policies/1", in, http.StatusOK, nil)
	n.Store(0)
	dresp, err := c.Policy(t.Context(), full.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	deltaBytes := n.Load()
	if len(dresp.Delta) == 0 {
		t.Fatalf("a one-rule change came as a whole document, want a delta")
	}
	var d policy.Delta
	if err := json.Unmarshal(dresp.Delta, &d); err != nil {
		t.Fatal(err)
	}
	next, err := doc.Apply(&d)
	if err != nil {
		t.Fatalf("apply the delta: %v", err)
	}
	if fp, _ := next.Fingerprint(); fp != dresp.Fingerprint {
		t.Fatalf("delta gives %s, want %s", fp, dresp.Fingerprint)
	}

	const amc = 3_250_000 // FFRI AMC: 3.25 MB for 10,000 exceptions (seed 000)
	t.Logf("\n| policy | document (JSON) | on the wire (gzip, TLS) | FFRI AMC |\n| --- | --- | --- | --- |\n"+
		"| 10,000-entry IP list + 1 rule, whole | %s B | %s B | %s B |\n| one rule added, delta | %d B | %d B | — |",
		strconv.Itoa(len(full.Document)), strconv.FormatInt(fullBytes, 10), strconv.Itoa(amc), len(dresp.Delta), deltaBytes)
	if fullBytes > amc/5 {
		t.Errorf("10,000-entry policy: %d bytes on the wire, over a fifth of FFRI AMC's %d", fullBytes, amc)
	}
	if deltaBytes > 2048 {
		t.Errorf("one-rule delta: %d bytes on the wire, want under 2 KiB", deltaBytes)
	}
}
