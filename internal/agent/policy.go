package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/yagura/yagura/internal/firewall"
	"github.com/yagura/yagura/internal/policy"
	"github.com/yagura/yagura/internal/proto"
)

// Enforcer applies a compiled firewall on the host (nftables on Linux).
// Apply replaces what it applied before atomically; Remove takes it all
// away and is idempotent. Calls are serialised by the agent.
type Enforcer interface {
	Apply(ctx context.Context, p *firewall.Program, opt firewall.Options) error
	Remove(ctx context.Context) error
}

// Files in the data folder.
const (
	policyFile    = "policy.json"    // the effective document last received
	isolationFile = "isolation.json" // present while the host is isolated
)

// policyState is what the agent enforces.
type policyState struct {
	mu          sync.Mutex
	doc         *policy.Document
	fingerprint string
	isolation   *isolation // nil: not isolated
	applied     bool       // the enforcer holds our rules
}

// isolation is an isolate job's state, kept on disk so a restart keeps the
// host isolated.
type isolation struct {
	Allow []string `json:"allow"`
	Since string   `json:"since"`
}

// loadPolicy reads the document and isolation state saved before a
// restart, so the host is protected before the manager is reachable.
func (a *Agent) loadPolicy(ctx context.Context) {
	b, err := os.ReadFile(filepath.Join(a.cfg.DataDir, policyFile))
	if err == nil {
		var d policy.Document
		if err := json.Unmarshal(b, &d); err != nil {
			a.log.Error("saved policy is unreadable; waiting for the manager's", "err", err)
		} else if fp, err := d.Fingerprint(); err == nil {
			a.pol.doc, a.pol.fingerprint = &d, fp
		}
	}
	if b, err := os.ReadFile(filepath.Join(a.cfg.DataDir, isolationFile)); err == nil {
		var iso isolation
		if json.Unmarshal(b, &iso) == nil {
			a.pol.isolation = &iso
		}
	}
	if a.pol.doc != nil || a.pol.isolation != nil {
		if err := a.enforce(ctx); err != nil {
			a.log.Error("apply the saved policy", "err", err)
		}
	}
}

// policyFingerprint is what the heartbeat reports.
func (a *Agent) policyFingerprint() (string, bool) {
	a.pol.mu.Lock()
	defer a.pol.mu.Unlock()
	return a.pol.fingerprint, a.pol.isolation != nil
}

// updatePolicy fetches and applies the configuration the manager says the
// agent should have. A failure keeps the current one and is retried at the
// next heartbeat (the manager keeps asking).
func (a *Agent) updatePolicy(ctx context.Context, want string) error {
	have, _ := a.policyFingerprint()
	if want == "" || want == have {
		return nil
	}
	resp, err := a.client.Policy(ctx, have)
	if err != nil {
		return fmt.Errorf("fetch policy: %w", err)
	}
	var next *policy.Document
	form := "full"
	switch {
	case len(resp.Delta) > 0:
		form = "delta"
		var d policy.Delta
		if err := json.Unmarshal(resp.Delta, &d); err != nil {
			return fmt.Errorf("policy delta: %w", err)
		}
		a.pol.mu.Lock()
		cur := a.pol.doc
		a.pol.mu.Unlock()
		if cur == nil {
			return errors.New("policy delta without a document to apply it to")
		}
		if next, err = cur.Apply(&d); err != nil {
			return err
		}
	case len(resp.Document) > 0:
		next = &policy.Document{}
		if err := json.Unmarshal(resp.Document, next); err != nil {
			return fmt.Errorf("policy document: %w", err)
		}
	default:
		return nil
	}
	body, err := next.Marshal()
	if err != nil {
		return err
	}
	fp := policy.FingerprintOf(body)
	if fp != resp.Fingerprint {
		return fmt.Errorf("policy from the manager has fingerprint %s, not the announced %s", fp, resp.Fingerprint)
	}
	a.pol.mu.Lock()
	prev, prevFP := a.pol.doc, a.pol.fingerprint
	a.pol.doc, a.pol.fingerprint = next, fp
	a.pol.mu.Unlock()
	if err := a.enforce(ctx); err != nil {
		a.pol.mu.Lock()
		a.pol.doc, a.pol.fingerprint = prev, prevFP
		a.pol.mu.Unlock()
		_ = a.Emit("policy-failed", "error", map[string]string{"fingerprint": fp, "error": err.Error()})
		return fmt.Errorf("apply policy %s: %w", fp, err)
	}
	if err := writeFileAtomic(filepath.Join(a.cfg.DataDir, policyFile), body, 0o600); err != nil {
		a.log.Error("save policy for restarts", "err", err)
	}
	a.log.Info("policy applied", "fingerprint", fp, "form", form, "rules", len(next.Firewall.Rules), "bytes", len(body))
	_ = a.Emit("policy-applied", "info", map[string]any{"fingerprint": fp, "form": form, "rules": len(next.Firewall.Rules)})
	return nil
}

// enforce makes the host's firewall match the document and the isolation
// state.
func (a *Agent) enforce(ctx context.Context) error {
	a.pol.mu.Lock()
	defer a.pol.mu.Unlock()
	return a.enforceLocked(ctx, a.pol.isolation)
}

func (a *Agent) enforceLocked(ctx context.Context, iso *isolation) error {
	if a.cfg.Firewall == nil {
		return nil
	}
	enabled, stateful := false, true
	var set firewall.Set
	if d := a.pol.doc; d != nil {
		enabled, _ = policy.ParseBool(d.Settings[policy.KeyFirewallEnabled])
		if v, ok := d.Settings[policy.KeyFirewallStateful]; ok {
			stateful, _ = policy.ParseBool(v)
		}
		set = d.Firewall
	}
	if !enabled && iso == nil {
		if !a.pol.applied {
			return nil
		}
		if err := a.cfg.Firewall.Remove(ctx); err != nil {
			return fmt.Errorf("remove firewall: %w", err)
		}
		a.pol.applied = false
		a.log.Info("firewall off: rules removed")
		return nil
	}
	if !enabled {
		set.Rules = nil // isolation only
	}
	full := firewall.Set{IPLists: set.IPLists, MACLists: set.MACLists, PortLists: set.PortLists}
	full.Rules = append(full.Rules, set.Rules...)
	full.Rules = append(full.Rules, firewall.HiddenRules(a.managerAddrs(ctx), a.dir.listenPort())...)
	if iso != nil {
		ir, err := firewall.IsolationRules(iso.Allow)
		if err != nil {
			return err
		}
		full.Rules = append(full.Rules, ir...)
	}
	prog, err := firewall.Compile(&full)
	if err != nil {
		return fmt.Errorf("compile firewall: %w", err)
	}
	if err := a.cfg.Firewall.Apply(ctx, prog, firewall.Options{Stateful: stateful}); err != nil {
		return fmt.Errorf("apply firewall: %w", err)
	}
	a.pol.applied = true
	return nil
}

// managerAddrs are the addresses and ports the agent talks to the manager
// on (or to its proxy), which the hidden bypass rules keep open.
func (a *Agent) managerAddrs(ctx context.Context) []netip.AddrPort {
	var out []netip.AddrPort
	add := func(hostport, defPort string) {
		host, port, err := net.SplitHostPort(hostport)
		if err != nil {
			host, port = hostport, defPort
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			out = append(out, netip.AddrPortFrom(ip.Unmap(), uint16(p)))
			return
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		ips, err := net.DefaultResolver.LookupNetIP(rctx, "ip", host)
		if err != nil {
			a.log.Warn("resolve the manager for the hidden bypass rules", "host", host, "err", err)
			return
		}
		for _, ip := range ips {
			out = append(out, netip.AddrPortFrom(ip.Unmap(), uint16(p)))
		}
	}
	if u, err := ParseManagerURL(a.identity().Manager); err == nil {
		add(u.Host, "443")
	}
	if a.cfg.Proxy != nil {
		add(a.cfg.Proxy.Host, "3128")
	}
	return out
}

// removeFirewall takes the agent's rules away (agent stop, uninstall).
func (a *Agent) removeFirewall(ctx context.Context) {
	if a.cfg.Firewall == nil {
		return
	}
	a.pol.mu.Lock()
	defer a.pol.mu.Unlock()
	if err := a.cfg.Firewall.Remove(ctx); err != nil {
		a.log.Error("remove firewall rules", "err", err)
		return
	}
	if a.pol.applied {
		a.log.Info("firewall rules removed; the host's own rules apply again")
	}
	a.pol.applied = false
}

// isolate applies isolation, checks the manager is still reachable through
// it, and rolls back if it is not: a host must never be cut off from the
// console that can release it.
func (a *Agent) isolate(ctx context.Context, j proto.Job) (any, error) {
	var p proto.IsolateParams
	if len(j.Params) > 0 {
		if err := json.Unmarshal(j.Params, &p); err != nil {
			return nil, fmt.Errorf("isolate parameters: %w", err)
		}
	}
	if a.cfg.Firewall == nil {
		return nil, errors.New("this agent has no firewall backend (firewall.backend is off): cannot isolate")
	}
	if _, err := firewall.IsolationRules(p.Allow); err != nil {
		return nil, err
	}
	iso := &isolation{Allow: p.Allow, Since: time.Now().UTC().Format(time.RFC3339)}
	a.pol.mu.Lock()
	prev := a.pol.isolation
	if err := a.enforceLocked(ctx, iso); err != nil {
		a.pol.mu.Unlock()
		return nil, err
	}
	a.pol.mu.Unlock()
	if err := a.checkManagerReachable(ctx); err != nil {
		a.pol.mu.Lock()
		rerr := a.enforceLocked(context.WithoutCancel(ctx), prev)
		a.pol.mu.Unlock()
		a.log.Error("manager unreachable under isolation: rolled back", "err", err, "rollback_err", rerr)
		_ = a.Emit("isolation-rolled-back", "error", map[string]string{"error": err.Error()})
		return nil, fmt.Errorf("the manager was unreachable with the host isolated, so isolation was rolled back: %w", err)
	}
	a.pol.mu.Lock()
	a.pol.isolation = iso
	a.pol.mu.Unlock()
	b, _ := json.Marshal(iso)
	if err := writeFileAtomic(filepath.Join(a.cfg.DataDir, isolationFile), b, 0o600); err != nil {
		a.log.Error("save isolation state", "err", err)
	}
	a.log.Warn("host isolated: only the manager and the allow-list are reachable", "allow", p.Allow)
	_ = a.Emit("host-isolated", "warning", map[string]any{"allow": p.Allow})
	a.beatNow()
	return map[string]any{"isolated": true, "allow": p.Allow}, nil
}

// verifyTimeout bounds how long isolation may take to prove the manager
// reachable.
const verifyTimeout = 10 * time.Second

// checkManagerReachable makes a fresh connection to the manager (new TCP and TLS
// handshakes, through the rules just applied) and a request on it.
func (a *Agent) checkManagerReachable(ctx context.Context) error {
	deadline := time.Now().Add(verifyTimeout)
	var err error
	for attempt := 1; time.Now().Before(deadline); attempt++ {
		a.client.Close()
		vctx, cancel := context.WithTimeout(ctx, 4*time.Second)
		_, err = a.client.Wait(vctx, time.Second)
		cancel()
		if err == nil {
			return nil
		}
		sleep(ctx, min(time.Duration(attempt)*500*time.Millisecond, time.Until(deadline)))
	}
	return err
}

func (a *Agent) release(ctx context.Context) (any, error) {
	a.pol.mu.Lock()
	defer a.pol.mu.Unlock()
	if a.pol.isolation == nil {
		return map[string]any{"isolated": false, "message": "the host was not isolated"}, nil
	}
	if err := a.enforceLocked(ctx, nil); err != nil {
		return nil, err
	}
	a.pol.isolation = nil
	if err := os.Remove(filepath.Join(a.cfg.DataDir, isolationFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		a.log.Error("remove isolation state", "err", err)
	}
	a.log.Info("host released from isolation")
	_ = a.Emit("host-released", "info", nil)
	a.beatNow()
	return map[string]any{"isolated": false}, nil
}
