package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/yagura/yagura/internal/agent"
	"github.com/yagura/yagura/internal/api"
	"github.com/yagura/yagura/internal/await"
	"github.com/yagura/yagura/internal/credentials"
	"github.com/yagura/yagura/internal/pki"
	"github.com/yagura/yagura/internal/proto"
	"github.com/yagura/yagura/internal/server"
	"github.com/yagura/yagura/internal/server/servertest"
	"github.com/yagura/yagura/internal/settings"
)

// manager is a manager running in this process on a loopback port.
type manager struct{ *servertest.Manager }

func newManager(t *testing.T) *manager {
	t.Helper()
	return startManager(t, servertest.Config(t), server.Options{Version: "test"})
}

func startManager(t *testing.T, cfg server.Config, opts server.Options) *manager {
	t.Helper()
	return &manager{servertest.Start(t, cfg, opts)}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// problem decodes an RFC 9457 problem, checking its media type.
func problem(t *testing.T, r servertest.Response) map[string]any {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
		t.Errorf("Content-Type %q, want application/problem+json (%s)", ct, r)
	}
	var p map[string]any
	if err := json.Unmarshal(r.Body, &p); err != nil {
		t.Fatalf("problem body %s: %v", r.Body, err)
	}
	if got, _ := p["status"].(float64); int(got) != r.Status {
		t.Errorf("problem status %v, response status %d", p["status"], r.Status)
	}
	return p
}

func (m *manager) settings(t *testing.T, kv map[string]string) {
	t.Helper()
	m.Call(t, http.MethodPatch, "/api/v1/settings", kv, http.StatusOK, nil)
}

func (m *manager) createToken(t *testing.T, body api.TokenCreate) api.Token {
	t.Helper()
	var tok api.Token
	m.Call(t, http.MethodPost, "/api/v1/activation-tokens", body, http.StatusCreated, &tok)
	if tok.Token == "" || tok.ID == "" {
		t.Fatalf("created token without secret or ID: %+v", tok)
	}
	return tok
}

func (m *manager) computer(t *testing.T, id string) api.Computer {
	t.Helper()
	var c api.Computer
	m.Call(t, http.MethodGet, "/api/v1/computers/"+id, nil, http.StatusOK, &c)
	return c
}

func (m *manager) alerts(t *testing.T, query string) []api.Alert {
	t.Helper()
	var out struct{ Items []api.Alert }
	m.Call(t, http.MethodGet, "/api/v1/alerts?"+query, nil, http.StatusOK, &out)
	return out.Items
}

func (m *manager) enrollOptions(dir, token string) agent.EnrollOptions {
	return agent.EnrollOptions{Manager: m.URL, Token: token, CAFingerprint: m.CAFingerprint, DataDir: dir, Version: "test"}
}

// enroll enrols an agent into a new data folder.
func (m *manager) enroll(t *testing.T, token string) (string, *agent.Identity) {
	t.Helper()
	dir := t.TempDir()
	id, err := agent.Enroll(t.Context(), m.enrollOptions(dir, token))
	if err != nil {
		t.Fatalf("enrol: %v", err)
	}
	return dir, id
}

// runAgent runs an agent until the returned function (also run at cleanup)
// stops it.
func runAgent(t *testing.T, cfg agent.Config) (stop func()) {
	t.Helper()
	a, err := agent.New(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("agent.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("agent Run returned %v, want nil", err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("agent still running 5s after cancel")
				<-done
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// agentClient speaks the agent protocol with id's certificate (nil: none).
func (m *manager) agentClient(t *testing.T, id *agent.Identity) *agent.Client {
	t.Helper()
	opts := agent.ClientOptions{Manager: m.URL, CAFingerprint: m.CAFingerprint}
	if id != nil {
		cert, err := id.TLSCertificate()
		if err != nil {
			t.Fatal(err)
		}
		opts.Cert, opts.Roots = cert, id.Roots()
	}
	c, err := agent.NewClient(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func heartbeat() *proto.Heartbeat {
	return &proto.Heartbeat{V: proto.Version, Seq: 1, ClockMillis: time.Now().UnixMilli(), UptimeSeconds: 1}
}

func wantProblemCode(t *testing.T, err error, status int, code string) {
	t.Helper()
	var pe *agent.ProblemError
	if !errors.As(err, &pe) {
		t.Fatalf("got %v, want a refusal %d %s", err, status, code)
	}
	if pe.Status != status || pe.Code != code {
		t.Fatalf("got refusal %d %s (%s), want %d %s", pe.Status, pe.Code, pe.Detail, status, code)
	}
}

// TestEveryOperationRequiresAuth walks the OpenAPI document so that a new
// route cannot ship unguarded.
func TestEveryOperationRequiresAuth(t *testing.T) {
	t.Parallel()
	m := newManager(t)

	param := regexp.MustCompile(`\{[^}]+\}`)
	ops := operations(t, m)
	for _, op := range ops {
		url := param.ReplaceAllString(op.Path, "0191c2d0-dead-7000-8000-000000000000")
		var body any
		if op.HasBody {
			body = []byte("{}")
		}
		t.Run(op.ID, func(t *testing.T) {
			if !op.Bearer {
				t.Errorf("%s %s: the document does not declare bearer security", op.Method, op.Path)
			}
			for _, bearer := range []string{"", "yak_wrong", m.Token + "x"} {
				r := m.Request(t, op.Method, url, bearer, body)
				if r.Status != http.StatusUnauthorized {
					t.Errorf("%s %s with bearer %q: got %s, want 401", op.Method, url, bearer, r)
					continue
				}
				problem(t, r)
				if r.Header.Get("WWW-Authenticate") == "" {
					t.Errorf("%s %s: 401 without WWW-Authenticate", op.Method, url)
				}
			}
			r := m.Request(t, op.Method, url, m.Token, body)
			if r.Status == http.StatusUnauthorized || r.Status == http.StatusForbidden || r.Status >= 500 {
				t.Errorf("%s %s as admin: got %s", op.Method, url, r)
			}
		})
	}
	if n := len(ops); n < 13 {
		t.Errorf("the document lists %d operations; want at least the 13 of the first release", n)
	}

	// Other schemes and a bare "Bearer" are not credentials.
	for _, auth := range []string{"Basic " + m.Token, "Bearer", "Bearer ", "bearer"} {
		req, _ := http.NewRequest(http.MethodGet, m.URL+"/api/v1/computers", nil)
		req.Header.Set("Authorization", auth)
		resp, err := m.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("Authorization %q: got %d, want 401", auth, resp.StatusCode)
		}
	}
}

func TestMetricsAndProbes(t *testing.T) {
	t.Parallel()
	m := newManager(t)
	for _, bearer := range []string{"", "yak_wrong"} {
		if r := m.Request(t, http.MethodGet, "/metrics", bearer, nil); r.Status != http.StatusUnauthorized {
			t.Errorf("/metrics with bearer %q: got %s, want 401", bearer, r)
		}
	}
	r := m.Request(t, http.MethodGet, "/metrics", m.Token, nil)
	if r.Status != http.StatusOK || !bytes.Contains(r.Body, []byte("yagura_computers{")) {
		t.Errorf("/metrics as admin: got %s", r)
	}
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ready"} {
		r := m.Request(t, http.MethodGet, path, "", nil)
		if r.Status != http.StatusOK || strings.TrimSpace(string(r.Body)) != want {
			t.Errorf("%s: got %s, want 200 %s", path, r, want)
		}
	}
}

func TestTokensAndEnrolment(t *testing.T) {
	t.Parallel()
	m := newManager(t)
	ctx := t.Context()

	// Created first so that its second passes while the rest runs.
	short := m.createToken(t, api.TokenCreate{ExpiresIn: "1s"})

	tok := m.createToken(t, api.TokenCreate{Description: "two hosts", MaxUses: 2, ExpiresIn: "1h"})
	if tok.State != "active" || tok.MaxUses != 2 || tok.ExpiresAt == nil || time.Until(*tok.ExpiresAt) < 59*time.Minute {
		t.Errorf("created token: %+v", tok)
	}
	dir1, id1 := m.enroll(t, tok.Token)
	_, id2 := m.enroll(t, tok.Token)
	if id1.AgentID == id2.AgentID {
		t.Errorf("two enrolments gave the same agent ID %s", id1.AgentID)
	}
	for _, id := range []*agent.Identity{id1, id2} {
		cert, err := id.Certificate()
		if err != nil {
			t.Fatal(err)
		}
		if got, err := pki.AgentID(cert); err != nil || got != id.AgentID {
			t.Errorf("certificate bound to %q (%v), want %s", got, err, id.AgentID)
		}
		if id.CAFingerprint != m.CAFingerprint {
			t.Errorf("identity pins %s, want %s", id.CAFingerprint, m.CAFingerprint)
		}
		c := m.computer(t, id.AgentID)
		if c.State != "active" || c.Status != "pending" || c.TokenID != tok.ID {
			t.Errorf("new computer: %+v", c)
		}
	}

	refused := func(token, code string) {
		t.Helper()
		dir := t.TempDir()
		_, err := agent.Enroll(ctx, m.enrollOptions(dir, token))
		wantProblemCode(t, err, http.StatusForbidden, code)
		if _, err := agent.LoadIdentity(dir); !errors.Is(err, agent.ErrNotEnrolled) {
			t.Errorf("a refused enrolment left an identity behind: %v", err)
		}
	}
	refused(tok.Token, proto.CodeTokenUsedUp)
	var got api.Token
	m.Call(t, http.MethodGet, "/api/v1/activation-tokens/"+tok.ID, nil, http.StatusOK, &got)
	if got.Uses != 2 || got.State != "used-up" || got.Token != "" {
		t.Errorf("token after two uses: %+v", got)
	}

	refused("yat_"+strings.Repeat("a", 32), proto.CodeTokenUnknown)

	revoked := m.createToken(t, api.TokenCreate{})
	m.Call(t, http.MethodPost, "/api/v1/activation-tokens/"+revoked.ID+"/revoke", nil, http.StatusOK, &got)
	if got.State != "revoked" || got.RevokedAt == nil {
		t.Errorf("revoked token: %+v", got)
	}
	refused(revoked.Token, proto.CodeTokenRevoked)
	problem(t, m.Call(t, http.MethodPost, "/api/v1/activation-tokens/"+revoked.ID+"/revoke", nil, http.StatusConflict, nil))

	// Re-enrolment.
	again := m.createToken(t, api.TokenCreate{})
	if _, err := agent.Enroll(ctx, m.enrollOptions(dir1, again.Token)); !errors.Is(err, agent.ErrAlreadyEnrolled) {
		t.Errorf("enrol over an identity without Force: got %v, want ErrAlreadyEnrolled", err)
	}
	if cur, err := agent.LoadIdentity(dir1); err != nil || cur.AgentID != id1.AgentID {
		t.Errorf("the refused re-enrolment changed the identity: %v %v", cur, err)
	}
	opts := m.enrollOptions(dir1, again.Token)
	opts.Force = true
	id3, err := agent.Enroll(ctx, opts)
	if err != nil {
		t.Fatalf("enrol with Force: %v", err)
	}
	if id3.AgentID == id1.AgentID {
		t.Errorf("Force kept agent ID %s", id3.AgentID)
	}
	if cur, err := agent.LoadIdentity(dir1); err != nil || cur.AgentID != id3.AgentID {
		t.Errorf("identity on disk after Force: %v %v, want agent %s", cur, err, id3.AgentID)
	}

	if d := time.Until(*short.ExpiresAt); d > 0 {
		time.Sleep(d + 100*time.Millisecond)
	}
	refused(short.Token, proto.CodeTokenExpired)
	m.Call(t, http.MethodGet, "/api/v1/activation-tokens/"+short.ID, nil, http.StatusOK, &got)
	if got.State != "expired" || got.Uses != 0 {
		t.Errorf("expired token: %+v", got)
	}
}

func TestHeartbeatsAndLiveness(t *testing.T) {
	t.Parallel()
	m := newManager(t)
	m.settings(t, map[string]string{settings.KeyHeartbeatInterval: "1s", settings.KeyOfflineAfter: "2"})
	tok := m.createToken(t, api.TokenCreate{})
	dir, id := m.enroll(t, tok.Token)

	stop := runAgent(t, agent.Config{DataDir: dir, Version: "test"})
	await.Cond(t, 10*time.Second, "computer online", func() error {
		if c := m.computer(t, id.AgentID); c.Status != "online" {
			return fmt.Errorf("status %s", c.Status)
		}
		return nil
	})
	var list struct{ Items []api.Computer }
	m.Call(t, http.MethodGet, "/api/v1/computers?status=online", nil, http.StatusOK, &list)
	if len(list.Items) != 1 || list.Items[0].ID != id.AgentID {
		t.Fatalf("online computers: %+v", list.Items)
	}
	c := list.Items[0]
	host, _ := os.Hostname()
	inv := agent.Inventory("test")
	if c.Hostname != host || c.OS != runtime.GOOS || c.AgentVersion != "test" || c.LastSeen == nil {
		t.Errorf("computer: %+v", c)
	}
	if diff := cmp.Diff(c.IPs, inv.IPs, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("IPs (-got +want)\n%s", diff)
	}
	if len(m.alerts(t, "computer="+id.AgentID)) != 0 {
		t.Errorf("alerts for a healthy computer")
	}

	stop()
	var offline api.Alert
	await.Cond(t, 6*time.Second, "computer-offline alert", func() error {
		as := m.alerts(t, "type=computer-offline&computer="+id.AgentID)
		if len(as) != 1 {
			return fmt.Errorf("open alerts %+v", as)
		}
		offline = as[0]
		return nil
	})
	if offline.Severity != "critical" || !offline.Open || !strings.Contains(offline.Message, host) {
		t.Errorf("offline alert: %+v", offline)
	}
	if c := m.computer(t, id.AgentID); c.Status != "offline" || c.Missed < 2 {
		t.Errorf("stopped computer: status %s, missed %d", c.Status, c.Missed)
	}

	runAgent(t, agent.Config{DataDir: dir, Version: "test"})
	await.Cond(t, 10*time.Second, "offline alert cleared", func() error {
		var a api.Alert
		m.Call(t, http.MethodGet, "/api/v1/alerts/"+offline.ID, nil, http.StatusOK, &a)
		if a.Open {
			return errors.New("still open")
		}
		offline = a
		return nil
	})
	if offline.ClearedBy != "system" || offline.ClearedAt == nil {
		t.Errorf("cleared alert: %+v", offline)
	}
	await.Cond(t, 5*time.Second, "computer online again", func() error {
		if c := m.computer(t, id.AgentID); c.Status != "online" {
			return fmt.Errorf("status %s", c.Status)
		}
		return nil
	})
}

func TestClockDrift(t *testing.T) {
	t.Parallel()
	m := newManager(t)
	m.settings(t, map[string]string{settings.KeyHeartbeatInterval: "1s", settings.KeyMaxClockDrift: "1m"})
	tok := m.createToken(t, api.TokenCreate{})
	dir, id := m.enroll(t, tok.Token)
	runAgent(t, agent.Config{DataDir: dir, Version: "test", ClockOffset: 10 * time.Minute})

	var drift api.Alert
	await.Cond(t, 10*time.Second, "clock-drift alert", func() error {
		as := m.alerts(t, "type=clock-drift&computer="+id.AgentID)
		if len(as) != 1 {
			return fmt.Errorf("open alerts %+v", as)
		}
		drift = as[0]
		return nil
	})
	if drift.Severity != "warning" || !strings.Contains(drift.Message, "10m") {
		t.Errorf("clock-drift alert: %+v", drift)
	}
	// The status follows once the fleet has reread the open alerts.
	await.Cond(t, 5*time.Second, "drifting computer in warning", func() error {
		if c := m.computer(t, id.AgentID); c.Status != "warning" {
			return fmt.Errorf("status %s", c.Status)
		}
		return nil
	})
	if c := m.computer(t, id.AgentID); c.ClockOffsetS < 590 || c.ClockOffsetS > 610 {
		t.Errorf("drifting computer: clock offset %vs, want about 600s", c.ClockOffsetS)
	}

	var cleared api.Alert
	m.Call(t, http.MethodPost, "/api/v1/alerts/"+drift.ID+"/clear", nil, http.StatusOK, &cleared)
	if cleared.Open || cleared.ClearedBy != "admin" || cleared.ClearedAt == nil {
		t.Errorf("cleared alert: %+v", cleared)
	}
	p := problem(t, m.Call(t, http.MethodPost, "/api/v1/alerts/"+drift.ID+"/clear", nil, http.StatusConflict, nil))
	if !strings.Contains(fmt.Sprint(p["detail"]), "already cleared") {
		t.Errorf("second clear: %v", p)
	}
	problem(t, m.Call(t, http.MethodPost, "/api/v1/alerts/0191c2d0-dead-7000-8000-000000000000/clear", nil, http.StatusNotFound, nil))
}

func TestDeactivation(t *testing.T) {
	t.Parallel()
	m := newManager(t)
	tok := m.createToken(t, api.TokenCreate{})
	_, id := m.enroll(t, tok.Token)
	ctx := t.Context()

	client := m.agentClient(t, id)
	if _, err := client.Heartbeat(ctx, heartbeat()); err != nil {
		t.Fatalf("heartbeat before deactivation: %v", err)
	}
	var c api.Computer
	m.Call(t, http.MethodPost, "/api/v1/computers/"+id.AgentID+"/deactivate", nil, http.StatusOK, &c)
	if c.State != "deactivated" || c.Status != "deactivated" || c.DeactivatedAt == nil {
		t.Errorf("deactivated computer: %+v", c)
	}
	_, err := client.Heartbeat(ctx, heartbeat())
	wantProblemCode(t, err, http.StatusForbidden, proto.CodeAgentDeactivate)

	csr, err := pki.CSRForKey(id.KeyPEM, "host")
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.Renew(ctx, &proto.RenewRequest{V: proto.Version, CSR: string(csr)})
	wantProblemCode(t, err, http.StatusForbidden, proto.CodeAgentDeactivate)

	problem(t, m.Call(t, http.MethodPost, "/api/v1/computers/"+id.AgentID+"/deactivate", nil, http.StatusConflict, nil))
	problem(t, m.Call(t, http.MethodPost, "/api/v1/computers/0191c2d0-dead-7000-8000-000000000000/deactivate", nil, http.StatusNotFound, nil))

	anonymous := m.agentClient(t, nil)
	_, err = anonymous.Heartbeat(ctx, heartbeat())
	wantProblemCode(t, err, http.StatusUnauthorized, proto.CodeCertRequired)
	_, err = anonymous.Renew(ctx, &proto.RenewRequest{V: proto.Version, CSR: string(csr)})
	wantProblemCode(t, err, http.StatusUnauthorized, proto.CodeCertRequired)
}

func TestSettingsValidation(t *testing.T) {
	t.Parallel()
	m := newManager(t)
	var before map[string]string
	m.Call(t, http.MethodGet, "/api/v1/settings", nil, http.StatusOK, &before)
	want := settings.Default().Map()
	want[settings.KeyDefaultPolicy] = "1" // the Base Policy, created with the manager
	if diff := cmp.Diff(before, want); diff != "" {
		t.Fatalf("initial settings (-got +want)\n%s", diff)
	}
	storedBefore, err := m.Store.Settings(t.Context())
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		changes map[string]string
		key     string
	}{
		{"unknown key", map[string]string{"heartbeat.intervall": "1s"}, "heartbeat.intervall"},
		{"interval too short", map[string]string{settings.KeyHeartbeatInterval: "1ms"}, settings.KeyHeartbeatInterval},
		{"one bad among good", map[string]string{settings.KeyHeartbeatInterval: "5s", settings.KeyOfflineAfter: "0"}, settings.KeyOfflineAfter},
		{"good with unknown", map[string]string{settings.KeyMaxClockDrift: "1m", "bogus": "x"}, "bogus"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := m.Call(t, http.MethodPatch, "/api/v1/settings", tc.changes, http.StatusUnprocessableEntity, nil)
			problem(t, r)
			var p struct {
				Detail string
				Errors []struct{ Message, Location string }
			}
			if err := json.Unmarshal(r.Body, &p); err != nil || len(p.Errors) == 0 {
				t.Fatalf("problem %s: %v", r.Body, err)
			}
			if !strings.Contains(p.Errors[0].Message, `"`+tc.key+`"`) {
				t.Errorf("problem does not name %q: %s", tc.key, r.Body)
			}
		})
	}

	var after map[string]string
	m.Call(t, http.MethodGet, "/api/v1/settings", nil, http.StatusOK, &after)
	if diff := cmp.Diff(after, before); diff != "" {
		t.Errorf("settings changed by refused updates (-got +want)\n%s", diff)
	}
	storedAfter, err := m.Store.Settings(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(storedAfter, storedBefore); diff != "" {
		t.Errorf("stored settings changed by refused updates (-got +want)\n%s", diff)
	}

	// A good change is stored and effective.
	var got map[string]string
	m.Call(t, http.MethodPatch, "/api/v1/settings", map[string]string{settings.KeyOfflineAfter: "unlimited"}, http.StatusOK, &got)
	if got[settings.KeyOfflineAfter] != "unlimited" || got[settings.KeyHeartbeatInterval] != before[settings.KeyHeartbeatInterval] {
		t.Errorf("after a good change: %v", got)
	}
}

func TestRestart(t *testing.T) {
	t.Parallel()
	cfg := servertest.Config(t)
	m := startManager(t, cfg, server.Options{})
	if m.AdminPassword == "" {
		t.Fatal("first start created no administrator")
	}
	tok := m.createToken(t, api.TokenCreate{})
	_, id := m.enroll(t, tok.Token)
	if _, err := m.agentClient(t, id).Heartbeat(t.Context(), heartbeat()); err != nil {
		t.Fatal(err)
	}
	fingerprint := m.CAFingerprint
	m.Stop()

	m2 := startManager(t, cfg, server.Options{})
	if m2.CAFingerprint != fingerprint {
		t.Errorf("CA changed across restart: %s, was %s", m2.CAFingerprint, fingerprint)
	}
	if m2.AdminPassword != "" {
		t.Errorf("restart reset the administrator's password")
	}
	f, err := credentials.Load(m2.CredentialsPath)
	if err != nil {
		t.Fatalf("credentials file: %v", err)
	}
	if f.URL != m2.URL || f.CAFingerprint != fingerprint || f.Password != m.AdminPassword {
		t.Errorf("credentials file: url %s fp %s, want %s %s and the first password", f.URL, f.CAFingerprint, m2.URL, fingerprint)
	}
	// Tokens issued before the restart still work: they are in the store.
	if r := m2.Request(t, http.MethodGet, "/api/v1/computers", m.Token, nil); r.Status != http.StatusOK {
		t.Errorf("token from before the restart: %s", r)
	}
	var list struct{ Items []api.Computer }
	m2.Call(t, http.MethodGet, "/api/v1/computers", nil, http.StatusOK, &list)
	if len(list.Items) != 1 || list.Items[0].ID != id.AgentID || list.Items[0].LastSeen == nil {
		t.Errorf("computers after restart: %+v", list.Items)
	}
	// The agent's certificate still works with the restarted manager.
	if _, err := m2.agentClient(t, id).Heartbeat(t.Context(), heartbeat()); err != nil {
		t.Errorf("heartbeat after restart: %v", err)
	}
	m2.Stop()

	// --reset-admin-password replaces the password and the file; admin's
	// old tokens stop working.
	m3 := startManager(t, cfg, server.Options{ResetAdminPassword: true})
	if m3.AdminPassword == "" || m3.AdminPassword == f.Password {
		t.Fatalf("reset gave password %q", m3.AdminPassword)
	}
	if r := m3.Request(t, http.MethodGet, "/api/v1/computers", m.Token, nil); r.Status != http.StatusUnauthorized {
		t.Errorf("old token after reset: got %s, want 401", r)
	}
	m3.Call(t, http.MethodGet, "/api/v1/computers", nil, http.StatusOK, nil)
	if f, err := credentials.Load(m3.CredentialsPath); err != nil || f.Password != m3.AdminPassword {
		t.Errorf("credentials file after reset: %v %v", f, err)
	}
	if m3.CAFingerprint != fingerprint {
		t.Errorf("reset changed the CA")
	}
}

func TestConfigValidate(t *testing.T) {
	ok := func(c *server.Config) {}
	tests := []struct {
		name   string
		modify func(*server.Config)
		want   []string // substrings of the error; none: valid
	}{
		{"default", ok, nil},
		{"listen port only", func(c *server.Config) { c.HTTP.Listen = ":8443" }, nil},
		{"postgres with dsn", func(c *server.Config) { c.Store.Driver, c.Store.DSN = "postgres", "postgres://u@h/db" }, nil},
		{"cert and key", func(c *server.Config) { c.HTTP.CertFile, c.HTTP.KeyFile = "a.crt", "a.key" }, nil},
		{"no data dir", func(c *server.Config) { c.DataDir = "" }, []string{"data_dir: required"}},
		{"listen without port", func(c *server.Config) { c.HTTP.Listen = "127.0.0.1" }, []string{`http.listen "127.0.0.1"`}},
		{"listen empty", func(c *server.Config) { c.HTTP.Listen = "" }, []string{`http.listen ""`}},
		{"postgres without dsn", func(c *server.Config) { c.Store.Driver = "postgres" }, []string{"store.dsn: required for the postgres driver"}},
		{"unknown driver", func(c *server.Config) { c.Store.Driver = "mysql" }, []string{`store.driver "mysql"`}},
		{"cert without key", func(c *server.Config) { c.HTTP.CertFile = "a.crt" }, []string{"give both or neither"}},
		{"key without cert", func(c *server.Config) { c.HTTP.KeyFile = "a.key" }, []string{"give both or neither"}},
		{"agent certs too short", func(c *server.Config) { c.Gateway.AgentCertValidity = 30 * time.Minute }, []string{"gateway.agent_cert_validity 30m0s: at least 1h"}},
		{"server cert too short", func(c *server.Config) { c.PKI.ServerCertValidity = time.Minute }, []string{"server_cert_validity"}},
		{"server cert outlives CA", func(c *server.Config) { c.PKI.CAValidity = c.PKI.ServerCertValidity / 2 }, []string{"no longer than ca_validity"}},
		{"flush never", func(c *server.Config) { c.Fleet.FlushEvery = 0 }, []string{"fleet.flush_every"}},
		{"persist never", func(c *server.Config) { c.Fleet.PersistSeenEvery = -time.Second }, []string{"persist_seen_every"}},
		{"idle timeout", func(c *server.Config) { c.HTTP.IdleTimeout = 0 }, []string{"http.idle_timeout"}},
		{"flow listener", func(c *server.Config) { c.Flows.Collector.SFlow = []string{"6343"} }, []string{"flows.collector.sflow[0]", "host:port"}},
		{"flows off ignores the collector", func(c *server.Config) { c.Flows.Enabled, c.Flows.Collector.NetFlow = false, []string{"x"} }, nil},
		{"flow retention", func(c *server.Config) { c.Flows.MaxAge = -time.Hour }, []string{"flows.max_age"}},
		{"flowmon time zone", func(c *server.Config) { c.Flows.FlowmonTimeZone = "Mars/Olympus" }, []string{"flows.flowmon_time_zone", "Asia/Tokyo"}},
		{"no flow listener", func(c *server.Config) {
			c.Flows.Collector.NetFlow, c.Flows.Collector.IPFIX, c.Flows.Collector.SFlow = nil, nil, nil
		}, []string{"flows.collector", "at least one address"}},
		{"every error at once", func(c *server.Config) {
			c.DataDir, c.HTTP.Listen, c.Store.Driver = "", "x", "postgres"
		}, []string{"data_dir", "http.listen", "store.dsn"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := server.DefaultConfig()
			cfg.DataDir = "/var/lib/yagura-test"
			tc.modify(&cfg)
			err := cfg.Validate()
			_, newErr := server.New(cfg, server.Options{}, slog.New(slog.DiscardHandler))
			if len(tc.want) == 0 {
				if err != nil || newErr != nil {
					t.Errorf("got %v / %v, want valid", err, newErr)
				}
				return
			}
			if err == nil || newErr == nil {
				t.Fatalf("got %v / %v, want an error containing %q", err, newErr, tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestOperatorCertificate: with the operator's own server certificate,
// agents pin the operator's CA, and still get client certificates from the
// manager's internal CA.
func TestOperatorCertificate(t *testing.T) {
	opCA, err := pki.NewCA("Operator Root", time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	chain, key, err := opCA.IssueServer([]string{"127.0.0.1", "localhost"}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := servertest.Config(t)
	cfg.HTTP.CertFile, cfg.HTTP.KeyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(cfg.HTTP.CertFile, chain, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.HTTP.KeyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	m := startManager(t, cfg, server.Options{Version: "test"})
	if m.CAFingerprint != opCA.Fingerprint() {
		t.Fatalf("manager announces pin %s, want the operator CA %s", m.CAFingerprint, opCA.Fingerprint())
	}
	tok := m.createToken(t, api.TokenCreate{MaxUses: 1})
	_, id := m.enroll(t, tok.Token)
	if id.CAFingerprint != opCA.Fingerprint() {
		t.Errorf("agent pinned %s, want the operator CA", id.CAFingerprint)
	}
	cert, _ := id.Certificate()
	if cert.Issuer.CommonName != "Yagura CA" {
		t.Errorf("agent certificate issued by %q, want the internal CA", cert.Issuer.CommonName)
	}
	if _, err := m.agentClient(t, id).Heartbeat(t.Context(), heartbeat()); err != nil {
		t.Fatalf("heartbeat through the operator certificate: %v", err)
	}
}
