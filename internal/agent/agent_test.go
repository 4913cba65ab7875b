package agent_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/yagura/yagura/internal/agent"
	"github.com/yagura/yagura/internal/api"
	"github.com/yagura/yagura/internal/await"
	"github.com/yagura/yagura/internal/pki"
	"github.com/yagura/yagura/internal/proto"
	"github.com/yagura/yagura/internal/server"
	"github.com/yagura/yagura/internal/server/servertest"
	"github.com/yagura/yagura/internal/settings"
)

// testIdentity returns an identity with a real key, certificate and CA.
func testIdentity(t *testing.T) (*agent.Identity, *pki.CA) {
	t.Helper()
	ca, err := pki.NewCA("Test CA", time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, csrPEM, err := pki.NewAgentKey("web01")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.SignAgentCSR(csrPEM, "agent-1", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &agent.Identity{
		AgentID: "agent-1", Manager: "https://manager.example:8443", CAFingerprint: ca.Fingerprint(),
		EnrolledAt: time.Now().UTC().Truncate(time.Second),
		CertPEM:    pki.CertificatePEM(cert), KeyPEM: keyPEM, CAPEM: pki.CertificatePEM(ca.Cert),
	}, ca
}

func TestIdentityRoundTrip(t *testing.T) {
	id, ca := testIdentity(t)
	dir := filepath.Join(t.TempDir(), "agent")
	if err := id.Save(dir); err != nil {
		t.Fatal(err)
	}
	got, err := agent.LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(got, id); diff != "" {
		t.Errorf("(-got +want)\n%s", diff)
	}
	if _, err := got.TLSCertificate(); err != nil {
		t.Errorf("TLSCertificate: %v", err)
	}
	if c, err := got.Certificate(); err != nil || pki.SerialHex(c) == "" {
		t.Errorf("Certificate: %v", err)
	}
	if roots := got.Roots(); len(roots) != 1 || pki.Fingerprint(roots[0]) != ca.Fingerprint() {
		t.Errorf("Roots: %d certificates", len(roots))
	}

	modes := map[string]fs.FileMode{
		".": fs.ModeDir | 0o700, "identity.json": 0o600, "agent.key": 0o600, "agent.crt": 0o644, "ca.crt": 0o644,
	}
	for name, want := range modes {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != want {
			t.Errorf("%s: mode %v, want %v", name, st.Mode(), want)
		}
	}

	// Saving again replaces the files and leaves no temporary files.
	next, _ := testIdentity(t)
	if err := next.Save(dir); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(modes)-1 {
		t.Errorf("data folder holds %d files after two saves, want %d: %v", len(entries), len(modes)-1, entries)
	}
	if got, err := agent.LoadIdentity(dir); err != nil || !bytes.Equal(got.KeyPEM, next.KeyPEM) {
		t.Errorf("second save not loaded: %v", err)
	}
	if st, _ := os.Stat(filepath.Join(dir, "agent.key")); st.Mode() != 0o600 {
		t.Errorf("agent.key: mode %v after a second save", st.Mode())
	}

	if err := agent.RemoveIdentity(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.LoadIdentity(dir); !errors.Is(err, agent.ErrNotEnrolled) {
		t.Errorf("after RemoveIdentity: %v, want ErrNotEnrolled", err)
	}
}

func TestLoadIdentityErrors(t *testing.T) {
	if _, err := agent.LoadIdentity(t.TempDir()); !errors.Is(err, agent.ErrNotEnrolled) {
		t.Errorf("empty folder: got %v, want ErrNotEnrolled", err)
	}
	if _, err := agent.LoadIdentity(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, agent.ErrNotEnrolled) {
		t.Errorf("missing folder: got %v, want ErrNotEnrolled", err)
	}

	id, _ := testIdentity(t)
	dir := t.TempDir()
	if err := id.Save(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "agent.key")); err != nil {
		t.Fatal(err)
	}
	_, err := agent.LoadIdentity(dir)
	if err == nil || errors.Is(err, agent.ErrNotEnrolled) || !strings.Contains(err.Error(), "incomplete") {
		t.Errorf("identity without key: got %v, want an incomplete-identity error", err)
	}

	if err := os.WriteFile(filepath.Join(dir, "identity.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.LoadIdentity(dir); err == nil || errors.Is(err, agent.ErrNotEnrolled) {
		t.Errorf("corrupt identity.json: got %v", err)
	}
}

func TestNeedsRenewal(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cert := &x509.Certificate{NotBefore: start, NotAfter: start.Add(90 * time.Hour)} // a third: 30h
	tests := []struct {
		name string
		now  time.Time
		want bool
	}{
		{"not yet valid", start.Add(-time.Hour), false},
		{"just issued", start, false},
		{"half way", start.Add(45 * time.Hour), false},
		{"just over a third left", start.Add(60*time.Hour - time.Second), false},
		{"exactly a third left", start.Add(60 * time.Hour), false},
		{"just under a third left", start.Add(60*time.Hour + time.Second), true},
		{"last minute", start.Add(90*time.Hour - time.Minute), true},
		{"expired", start.Add(91 * time.Hour), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := agent.NeedsRenewal(cert, tc.now); got != tc.want {
				t.Errorf("NeedsRenewal at %s: got %v, want %v", tc.now.Sub(start), got, tc.want)
			}
		})
	}
}

// TestRenewal runs an agent whose certificate has less than a third of its
// life left against a real manager, and checks that it renews through the
// gateway, saves the new certificate and keeps heartbeating with it.
func TestRenewal(t *testing.T) {
	cfg := servertest.Config(t)
	cfg.Gateway.AgentCertValidity = time.Hour // the shortest Validate allows
	m := servertest.Start(t, cfg, server.Options{Version: "test"})
	m.Call(t, http.MethodPatch, "/api/v1/settings", map[string]string{settings.KeyHeartbeatInterval: "1s"}, http.StatusOK, nil)
	var tok api.Token
	m.Call(t, http.MethodPost, "/api/v1/activation-tokens", api.TokenCreate{}, http.StatusCreated, &tok)

	dir := t.TempDir()
	id, err := agent.Enroll(t.Context(), agent.EnrollOptions{
		Manager: m.URL, Token: tok.Token, CAFingerprint: m.CAFingerprint, DataDir: dir, Version: "test",
	})
	if err != nil {
		t.Fatal(err)
	}
	enrolled, err := id.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	if agent.NeedsRenewal(enrolled, time.Now()) {
		t.Fatalf("a fresh certificate (%s to %s) needs renewal", enrolled.NotBefore, enrolled.NotAfter)
	}

	// Replace the certificate with one of the same key issued 50 minutes
	// ago by the manager's CA: 10 of its 65 minutes are left.
	stored, err := m.Store.LoadCA(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.ParseCA([]byte(stored.CertPEM), []byte(stored.KeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.CSRForKey(id.KeyPEM, "host")
	if err != nil {
		t.Fatal(err)
	}
	old, err := ca.SignAgentCSR(csr, id.AgentID, time.Now().Add(-50*time.Minute), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !agent.NeedsRenewal(old, time.Now()) {
		t.Fatal("the backdated certificate does not need renewal")
	}
	id.CertPEM = pki.CertificatePEM(old)
	if err := id.Save(dir); err != nil {
		t.Fatal(err)
	}

	runAgent(t, agent.Config{DataDir: dir, Version: "test"})
	var renewed *x509.Certificate
	await.Cond(t, 10*time.Second, "certificate renewed on disk", func() error {
		cur, err := agent.LoadIdentity(dir)
		if err != nil {
			return err
		}
		c, err := cur.Certificate()
		if err != nil {
			return err
		}
		if c.SerialNumber.Cmp(old.SerialNumber) == 0 {
			return errors.New("still the old certificate")
		}
		renewed = c
		return nil
	})
	renewedAt := time.Now()

	cur, err := agent.LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cur.AgentID != id.AgentID || !bytes.Equal(cur.KeyPEM, id.KeyPEM) {
		t.Errorf("renewal changed the agent ID or key")
	}
	if s := pki.SerialHex(renewed); s == pki.SerialHex(enrolled) || s == pki.SerialHex(old) {
		t.Errorf("renewed certificate reuses serial %s", s)
	}
	if got, err := pki.AgentID(renewed); err != nil || got != id.AgentID {
		t.Errorf("renewed certificate bound to %q (%v)", got, err)
	}
	if err := renewed.CheckSignatureFrom(ca.Cert); err != nil {
		t.Errorf("renewed certificate not signed by the manager CA: %v", err)
	}
	if life := time.Until(renewed.NotAfter); life < 55*time.Minute || life > time.Hour {
		t.Errorf("renewed certificate lasts %s more, want about the manager's 1h", life)
	}
	if agent.NeedsRenewal(renewed, time.Now()) {
		t.Errorf("renewed certificate needs renewal already")
	}
	c, err := m.Store.GetComputer(t.Context(), id.AgentID)
	if err != nil {
		t.Fatal(err)
	}
	if c.CertSerial != pki.SerialHex(renewed) || !c.CertNotAfter.Equal(renewed.NotAfter) {
		t.Errorf("store records certificate %s until %s, want %s until %s", c.CertSerial, c.CertNotAfter, pki.SerialHex(renewed), renewed.NotAfter)
	}

	// The running agent keeps heartbeating with the new certificate.
	await.Cond(t, 10*time.Second, "heartbeat after renewal", func() error {
		var c api.Computer
		m.Call(t, http.MethodGet, "/api/v1/computers/"+id.AgentID, nil, http.StatusOK, &c)
		if c.LastSeen == nil || !c.LastSeen.After(renewedAt) || c.Status != "online" {
			return fmt.Errorf("status %s, last seen %v", c.Status, c.LastSeen)
		}
		return nil
	})
	// And so does a fresh client built from what was saved.
	tc, err := cur.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	client, err := agent.NewClient(agent.ClientOptions{Manager: m.URL, CAFingerprint: cur.CAFingerprint, Roots: cur.Roots(), Cert: tc})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.Heartbeat(t.Context(), &proto.Heartbeat{V: proto.Version, Seq: 1, ClockMillis: time.Now().UnixMilli()}); err != nil {
		t.Errorf("heartbeat with the saved certificate: %v", err)
	}
}

func runAgent(t *testing.T, cfg agent.Config) {
	t.Helper()
	a, err := agent.New(cfg, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := a.Run(ctx); err != nil {
			t.Errorf("agent Run: %v", err)
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}
