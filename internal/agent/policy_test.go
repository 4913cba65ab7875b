package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/yagura/yagura/internal/agent"
	"github.com/yagura/yagura/internal/api"
	"github.com/yagura/yagura/internal/await"
	"github.com/yagura/yagura/internal/firewall"
	"github.com/yagura/yagura/internal/policy"
	"github.com/yagura/yagura/internal/server"
	"github.com/yagura/yagura/internal/server/servertest"
)

// recorder is an in-memory Enforcer: it keeps what the agent applied. The
// nftables enforcer is tested against the kernel in internal/nftfw.
type recorder struct {
	mu      sync.Mutex
	applied []*firewall.Program
	opts    []firewall.Options
	removed int
}

func (r *recorder) Apply(_ context.Context, p *firewall.Program, opt firewall.Options) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.applied, r.opts = append(r.applied, p), append(r.opts, opt)
	return nil
}

func (r *recorder) Remove(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removed++
	return nil
}

// last returns the IDs of the non-hidden rules last applied.
func (r *recorder) last() (ids []int, opt firewall.Options, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.applied) == 0 {
		return nil, opt, 0
	}
	for _, c := range r.applied[len(r.applied)-1].Rules {
		if c.Rule.ID > 0 {
			ids = append(ids, c.Rule.ID)
		}
	}
	slices.Sort(ids)
	return ids, r.opts[len(r.opts)-1], len(r.applied)
}

func createRule(t *testing.T, m *servertest.Manager, name string, port int) int {
	t.Helper()
	var r api.FirewallRule
	m.Call(t, http.MethodPost, "/api/v1/firewall/rules", firewall.Rule{
		Name: name, Action: firewall.ActionDeny, Priority: "2", Direction: firewall.Incoming, Protocol: "tcp",
		DestinationPortType: firewall.TypeMultiple, DestinationPortMultiple: []string{strconv.Itoa(port)},
	}, http.StatusCreated, &r)
	return r.ID
}

func createPolicy(t *testing.T, m *servertest.Manager, in api.PolicyInput) api.Policy {
	t.Helper()
	var p api.Policy
	m.Call(t, http.MethodPost, "/api/v1/policies", in, http.StatusCreated, &p)
	return p
}

// TestPolicyInheritance builds a three-level tree plus a computer
// override, checks the effective configuration (values, sources,
// fingerprint) through the API, then checks a change at the root reaches a
// running agent within 5 s, as a delta.
func TestPolicyInheritance(t *testing.T) {
	m := servertest.Start(t, servertest.Config(t), server.Options{Version: "test"})
	r1, r2, r3, r4, r5 := createRule(t, m, "deny 1001", 1001), createRule(t, m, "deny 1002", 1002), createRule(t, m, "deny 1003", 1003),
		createRule(t, m, "deny 1004", 1004), createRule(t, m, "deny 1005", 1005)

	var all struct{ Items []api.Policy }
	m.Call(t, http.MethodGet, "/api/v1/policies", nil, http.StatusOK, &all)
	if len(all.Items) != 1 || all.Items[0].Name != "Base Policy" {
		t.Fatalf("a new manager has policies %+v, want the Base Policy alone", all.Items)
	}
	root := all.Items[0]
	var rootIn api.PolicyInput
	rootIn.Name, rootIn.Settings, rootIn.AssignedRules = root.Name, map[string]string{policy.KeyFirewallEnabled: "on"}, []int{r1, r2}
	m.Call(t, http.MethodPut, "/api/v1/policies/"+strconv.Itoa(root.ID), rootIn, http.StatusOK, &root)
	servers := createPolicy(t, m, api.PolicyInput{Name: "Servers", ParentID: root.ID,
		Settings: map[string]string{policy.KeyHeartbeat: "30s", policy.KeyFirewallStateful: "off"}, AssignedRules: []int{r3}, RemovedRules: []int{r2}})
	web := createPolicy(t, m, api.PolicyInput{Name: "Web", ParentID: servers.ID,
		Settings: map[string]string{policy.KeyOfflineAfter: "5"}, AssignedRules: []int{r4}})

	var tok api.Token
	m.Call(t, http.MethodPost, "/api/v1/activation-tokens", api.TokenCreate{}, http.StatusCreated, &tok)
	dir := t.TempDir()
	id, err := agent.Enroll(t.Context(), agent.EnrollOptions{Manager: m.URL, Token: tok.Token, CAFingerprint: m.CAFingerprint, DataDir: dir, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	var eff api.EffectivePolicy
	m.Call(t, http.MethodPut, "/api/v1/computers/"+id.AgentID+"/policy", map[string]any{
		"policy_id": web.ID, "settings": map[string]string{policy.KeyFirewallStateful: "on"}, "removed_rules": []int{r3},
	}, http.StatusOK, &eff)

	src := func(id int) string { return policy.SourcePolicy(id) }
	wantSettings := map[string]api.ResolvedValue{
		policy.KeyFirewallEnabled:  {Value: "on", Source: src(root.ID)},
		policy.KeyFirewallStateful: {Value: "on", Source: policy.SourceComputer},
		policy.KeyHeartbeat:        {Value: "30s", Source: src(servers.ID)},
		policy.KeyOfflineAfter:     {Value: "5", Source: src(web.ID)},
		policy.KeyMaxClockDrift:    {Value: "5m0s", Source: policy.SourceDefault},
		policy.KeyCommunication:    {Value: "agent-initiated", Source: policy.SourceDefault},
	}
	wantRules := []api.ResolvedRule{{ID: r1, Name: "deny 1001", Source: src(root.ID)}, {ID: r4, Name: "deny 1004", Source: src(web.ID)}}
	check := func(e api.EffectivePolicy) {
		t.Helper()
		if d := cmp.Diff(wantSettings, e.Settings); d != "" {
			t.Errorf("effective settings (-want +got):\n%s", d)
		}
		if d := cmp.Diff(wantRules, e.Rules); d != "" {
			t.Errorf("effective rules (-want +got):\n%s", d)
		}
	}
	check(eff)
	m.Call(t, http.MethodGet, "/api/v1/computers/"+id.AgentID+"/policy", nil, http.StatusOK, &eff)
	check(eff)

	// The fingerprint is the hash of the canonical document, computed here
	// independently from the rules as the API returns them.
	doc := policy.Document{Settings: map[string]string{}}
	for k, v := range wantSettings {
		doc.Settings[k] = v.Value
	}
	for _, r := range []int{r1, r4} {
		var rule firewall.Rule
		m.Call(t, http.MethodGet, fmt.Sprintf("/api/v1/firewall/rules/%d", r), nil, http.StatusOK, &rule)
		doc.Firewall.Rules = append(doc.Firewall.Rules, rule)
	}
	if fp, _ := doc.Fingerprint(); fp != eff.Fingerprint {
		t.Errorf("fingerprint %s, want %s (hash of the canonical document)", eff.Fingerprint, fp)
	}

	// The agent enforces it, then a change at the root arrives within 5 s.
	rec := &recorder{}
	runAgent(t, agent.Config{DataDir: dir, Version: "test", Firewall: rec})
	await.Cond(t, 10*time.Second, "agent enforces its effective policy", func() error {
		m.Call(t, http.MethodGet, "/api/v1/computers/"+id.AgentID+"/policy", nil, http.StatusOK, &eff)
		if ids, opt, _ := rec.last(); !slices.Equal(ids, []int{r1, r4}) || !opt.Stateful {
			return fmt.Errorf("applied rules %v stateful %v", ids, opt.Stateful)
		}
		if eff.Status != "up-to-date" {
			return fmt.Errorf("policy status %q", eff.Status)
		}
		return nil
	})
	rootIn.AssignedRules = []int{r1, r2, r5}
	changed := time.Now()
	m.Call(t, http.MethodPut, "/api/v1/policies/"+strconv.Itoa(root.ID), rootIn, http.StatusOK, nil)
	await.Cond(t, 5*time.Second, "root change enforced by the agent", func() error {
		if ids, _, _ := rec.last(); !slices.Equal(ids, []int{r1, r4, r5}) {
			return fmt.Errorf("applied rules %v", ids)
		}
		return nil
	})
	t.Logf("root change enforced by the agent after %s", time.Since(changed).Round(time.Millisecond))
	await.Cond(t, 10*time.Second, "agent reports the new fingerprint", func() error {
		m.Call(t, http.MethodGet, "/api/v1/computers/"+id.AgentID+"/policy", nil, http.StatusOK, &eff)
		if eff.Status != "up-to-date" || eff.Reported != eff.Fingerprint {
			return fmt.Errorf("status %s, reported %s, expected %s", eff.Status, eff.Reported, eff.Fingerprint)
		}
		return nil
	})
	// The second policy came as a delta (the first was the whole document).
	await.Cond(t, 10*time.Second, "policy-applied events", func() error {
		var evs struct{ Items []api.Event }
		m.Call(t, http.MethodGet, "/api/v1/events?type=policy-applied&computer="+id.AgentID, nil, http.StatusOK, &evs)
		var forms []string
		for _, e := range evs.Items {
			var d struct{ Form string }
			_ = json.Unmarshal(e.Data, &d)
			forms = append(forms, d.Form)
		}
		slices.Sort(forms)
		if !slices.Equal(forms, []string{"delta", "full"}) {
			return fmt.Errorf("policy-applied forms %v, want one full and one delta", forms)
		}
		return nil
	})
	// Turning the firewall off removes the rules.
	rootIn.Settings[policy.KeyFirewallEnabled] = "off"
	m.Call(t, http.MethodPut, "/api/v1/policies/"+strconv.Itoa(root.ID), rootIn, http.StatusOK, nil)
	await.Cond(t, 5*time.Second, "firewall removed", func() error {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if rec.removed == 0 {
			return fmt.Errorf("not removed")
		}
		return nil
	})
}
