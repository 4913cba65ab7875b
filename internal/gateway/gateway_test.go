package gateway_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/yagura/yagura/internal/fleet"
	"github.com/yagura/yagura/internal/gateway"
	"github.com/yagura/yagura/internal/pki"
	"github.com/yagura/yagura/internal/proto"
	"github.com/yagura/yagura/internal/secret"
	"github.com/yagura/yagura/internal/settings"
	"github.com/yagura/yagura/internal/store"
	"github.com/yagura/yagura/internal/telemetry"
)

// memStore is an in-memory gateway.Store that checks tokens in the order
// the real store documents.
type memStore struct {
	mu        sync.Mutex
	tokens    map[string]*store.Token // by hash
	computers map[string]store.Computer
	events    map[string]telemetry.Event // by computer/id
}

func (s *memStore) EnrollComputer(_ context.Context, tokenHash string, now time.Time, c store.Computer) (store.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tokens[tokenHash]
	switch {
	case !ok:
		return store.Token{}, store.ErrTokenUnknown
	case !t.RevokedAt.IsZero():
		return store.Token{}, store.ErrTokenRevoked
	case !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt):
		return store.Token{}, store.ErrTokenExpired
	case t.MaxUses > 0 && t.Uses >= t.MaxUses:
		return store.Token{}, store.ErrTokenUsedUp
	}
	if _, dup := s.computers[c.ID]; dup {
		return store.Token{}, fmt.Errorf("enrol computer %q: %w", c.ID, store.ErrConflict)
	}
	t.Uses++
	c.TokenID = t.ID
	s.computers[c.ID] = c
	return *t, nil
}

func (s *memStore) GetComputer(_ context.Context, id string) (store.Computer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.computers[id]
	if !ok {
		return store.Computer{}, fmt.Errorf("get computer %q: %w", id, store.ErrNotFound)
	}
	return c, nil
}

func (s *memStore) SetComputerCert(_ context.Context, id, serial string, notAfter time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.computers[id]
	if !ok {
		return fmt.Errorf("set certificate of computer %q: %w", id, store.ErrNotFound)
	}
	c.CertSerial, c.CertNotAfter = serial, notAfter
	s.computers[id] = c
	return nil
}

func (s *memStore) DeactivateComputer(_ context.Context, id string, at time.Time) (store.Computer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.computers[id]
	if !ok {
		return store.Computer{}, fmt.Errorf("deactivate computer %q: %w", id, store.ErrNotFound)
	}
	if c.State == store.ComputerDeactivated {
		return c, fmt.Errorf("deactivate computer %q: %w", id, store.ErrConflict)
	}
	c.State, c.DeactivatedAt = store.ComputerDeactivated, at
	s.computers[id] = c
	return c, nil
}

// WriteEvents is the telemetry writer's part: the first copy of a
// computer/ID wins, as in the real store.
func (s *memStore) Write(_ context.Context, evs []telemetry.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.events == nil {
		s.events = map[string]telemetry.Event{}
	}
	for _, e := range evs {
		k := e.ComputerID + "/" + e.ID
		if _, ok := s.events[k]; !ok {
			s.events[k] = e
		}
	}
	return nil
}

func (s *memStore) addToken(t store.Token, plain string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t.Hash = secret.Hash(plain)
	s.tokens[t.Hash] = &t
}

func (s *memStore) token(plain string) store.Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	return *s.tokens[secret.Hash(plain)]
}

func (s *memStore) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.computers)
}

// env is a gateway over a memStore and a real fleet, served by a mux.
type env struct {
	ca    *pki.CA
	store *memStore
	fleet *fleet.Fleet
	reg   *prometheus.Registry
	mux   *http.ServeMux
}

const (
	tokenUnlimited = "yat_unlimited"
	tokenOnce      = "yat_once"
)

func newEnv(tb testing.TB) *env {
	tb.Helper()
	ca, err := pki.NewCA("Test CA", time.Now(), 24*time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	st := &memStore{tokens: map[string]*store.Token{}, computers: map[string]store.Computer{}}
	st.addToken(store.Token{ID: "tok-unlimited"}, tokenUnlimited)
	st.addToken(store.Token{ID: "tok-once", MaxUses: 1}, tokenOnce)
	st.addToken(store.Token{ID: "tok-used", MaxUses: 1, Uses: 1}, "yat_used")
	st.addToken(store.Token{ID: "tok-expired", ExpiresAt: time.Now().Add(-time.Minute)}, "yat_expired")
	st.addToken(store.Token{ID: "tok-revoked", RevokedAt: time.Now()}, "yat_revoked")
	log := slog.New(slog.DiscardHandler)
	// The handlers only reach the fleet's memory; its store is used by Load
	// and Run, which these tests do not call.
	fl := fleet.New(fleet.DefaultConfig(), nil, settings.Default(), log, nil)
	reg := prometheus.NewRegistry()
	mux := http.NewServeMux()
	gw := gateway.New(gateway.DefaultConfig(), ca, st, fl, nil, log, reg)
	gw.SetEvents(st)
	gw.Register(mux)
	return &env{ca: ca, store: st, fleet: fl, reg: reg, mux: mux}
}

// addComputer records an enrolled computer in the store, and in the fleet
// unless hidden (as if another manager node had enrolled it).
func (e *env) addComputer(id, state string, hidden bool) store.Computer {
	c := store.Computer{ID: id, Hostname: "web01", OS: "linux", State: state, EnrolledAt: time.Now()}
	e.store.mu.Lock()
	e.store.computers[id] = c
	e.store.mu.Unlock()
	if !hidden {
		e.fleet.Add(c)
	}
	return c
}

// verified is the TLS state of a connection whose client certificate,
// issued for agentID, the TLS layer verified.
func (e *env) verified(tb testing.TB, agentID string) *tls.ConnectionState {
	tb.Helper()
	_, csr, err := pki.NewAgentKey("web01")
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := e.ca.SignAgentCSR(csr, agentID, time.Now(), time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	return &tls.ConnectionState{
		HandshakeComplete: true,
		PeerCertificates:  []*x509.Certificate{cert},
		VerifiedChains:    [][]*x509.Certificate{{cert, e.ca.Cert}},
	}
}

func (e *env) serve(path string, body []byte, cs *tls.ConnectionState) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.TLS = cs
	w := httptest.NewRecorder()
	e.mux.ServeHTTP(w, r)
	return w
}

// refused returns the gateway's refusal counter for a problem code.
func (e *env) refused(tb testing.TB, code string) float64 {
	tb.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "yagura_agent_requests_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "code" && l.GetValue() == code {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func mustJSON(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func newCSR(tb testing.TB) string {
	tb.Helper()
	_, csr, err := pki.NewAgentKey("web01")
	if err != nil {
		tb.Fatal(err)
	}
	return string(csr)
}

func enrollRequest(token, csr string) proto.EnrollRequest {
	return proto.EnrollRequest{
		V: proto.Version, Token: token, CSR: csr,
		Inventory: proto.Inventory{Hostname: "web01", OS: "linux", AgentVersion: "test", IPs: []string{"192.0.2.10"}},
	}
}

// wantProblem checks an RFC 9457 refusal.
func wantProblem(t *testing.T, w *httptest.ResponseRecorder, status int, code, detail string) {
	t.Helper()
	if w.Code != status {
		t.Fatalf("got %d %s, want %d", w.Code, w.Body, status)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q", ct)
	}
	var p proto.Problem
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
		t.Fatalf("problem %s: %v", w.Body, err)
	}
	if p.Status != status || p.Code != code || !strings.Contains(p.Detail, detail) {
		t.Errorf("got problem %+v, want %d %s with detail containing %q", p, status, code, detail)
	}
}

// oversized is a well-formed message that is larger than proto.MaxBody.
func oversized(field string) []byte {
	return []byte(`{"v":1,"` + field + `":"` + strings.Repeat("A", proto.MaxBody) + `"}`)
}

func weakRSACSR(tb testing.TB) string {
	tb.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		tb.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "web01"}}, key)
	if err != nil {
		tb.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func TestEnroll(t *testing.T) {
	e := newEnv(t)
	valid := newCSR(t)
	tests := []struct {
		name   string
		body   []byte
		status int
		code   string
		detail string
	}{
		{"malformed JSON", []byte(`{"v":1,"token":yat_x}`), 400, proto.CodeBadRequest, "malformed JSON at byte 16"},
		{"wrong type", []byte(`{"v":"1"}`), 400, proto.CodeBadRequest, `field "v": want int, got JSON string`},
		{"empty body", nil, 400, proto.CodeBadRequest, "body is empty"},
		{"trailing data", append(mustJSON(t, enrollRequest(tokenUnlimited, valid)), "{}"...), 400, proto.CodeBadRequest, "unexpected data after"},
		{"oversized", oversized("csr"), 400, proto.CodeBadRequest, "larger than 64 KiB"},
		{"old version", mustJSON(t, proto.EnrollRequest{Token: tokenUnlimited, CSR: valid}), 400, proto.CodeBadRequest, "v: unsupported"},
		{"no token", mustJSON(t, enrollRequest("", valid)), 400, proto.CodeBadRequest, "token: missing"},
		{"no hostname", mustJSON(t, proto.EnrollRequest{V: 1, Token: tokenUnlimited, CSR: valid}), 400, proto.CodeBadRequest, "inventory.hostname: missing"},
		{"bad IP", func() []byte {
			r := enrollRequest(tokenUnlimited, valid)
			r.Inventory.IPs = []string{"300.1.1.1"}
			return mustJSON(t, r)
		}(), 400, proto.CodeBadRequest, "inventory.ips[0]"},
		{"CSR not PEM", mustJSON(t, enrollRequest(tokenUnlimited, "MIIB...")), 400, proto.CodeBadRequest, "csr: certificate request: not a PEM"},
		{"CSR of a certificate", mustJSON(t, enrollRequest(tokenUnlimited, string(pki.CertificatePEM(e.ca.Cert)))), 400, proto.CodeBadRequest, "csr: certificate request: not a PEM"},
		{"CSR bad signature", mustJSON(t, enrollRequest(tokenUnlimited, corruptCSR(t, valid))), 400, proto.CodeBadRequest, "csr: certificate request"},
		{"CSR weak key", mustJSON(t, enrollRequest(tokenUnlimited, weakRSACSR(t))), 400, proto.CodeBadRequest, "1024 bits is too short"},
		{"unknown token", mustJSON(t, enrollRequest("yat_nope", valid)), 403, proto.CodeTokenUnknown, "unknown activation token"},
		{"used-up token", mustJSON(t, enrollRequest("yat_used", valid)), 403, proto.CodeTokenUsedUp, "no uses left"},
		{"expired token", mustJSON(t, enrollRequest("yat_expired", valid)), 403, proto.CodeTokenExpired, "expired"},
		{"revoked token", mustJSON(t, enrollRequest("yat_revoked", valid)), 403, proto.CodeTokenRevoked, "revoked"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := e.refused(t, tc.code)
			wantProblem(t, e.serve(proto.PathEnroll, tc.body, nil), tc.status, tc.code, tc.detail)
			if got := e.refused(t, tc.code); got != before+1 {
				t.Errorf("refusals{code=%s}: %v, want %v", tc.code, got, before+1)
			}
		})
	}
	if n := e.store.count(); n != 0 {
		t.Fatalf("refused enrolments stored %d computers", n)
	}
	if tok := e.store.token(tokenUnlimited); tok.Uses != 0 {
		t.Fatalf("refused enrolments spent the token %d times", tok.Uses)
	}

	t.Run("ok", func(t *testing.T) {
		w := e.serve(proto.PathEnroll, mustJSON(t, enrollRequest(tokenOnce, valid)), nil)
		if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("got %d %s %s", w.Code, w.Header().Get("Content-Type"), w.Body)
		}
		var resp proto.EnrollResponse
		if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
			t.Fatal(err)
		}
		cert, err := pki.ParseCertificatePEM([]byte(resp.Certificate))
		if err != nil {
			t.Fatal(err)
		}
		if id, err := pki.AgentID(cert); err != nil || id != resp.AgentID {
			t.Errorf("certificate bound to %q (%v), want %s", id, err, resp.AgentID)
		}
		if err := cert.CheckSignatureFrom(e.ca.Cert); err != nil {
			t.Errorf("certificate not signed by the CA: %v", err)
		}
		if resp.CA != string(pki.CertificatePEM(e.ca.Cert)) || resp.V != proto.Version || resp.HeartbeatMillis != 60_000 {
			t.Errorf("response: v %d, heartbeat %dms, CA given %v", resp.V, resp.HeartbeatMillis, resp.CA != "")
		}
		c, err := e.store.GetComputer(t.Context(), resp.AgentID)
		if err != nil {
			t.Fatal(err)
		}
		if c.Hostname != "web01" || c.State != store.ComputerActive || c.TokenID != "tok-once" || c.CertSerial != pki.SerialHex(cert) {
			t.Errorf("stored computer: %+v", c)
		}
		if l, ok := e.fleet.Live(resp.AgentID, time.Now()); !ok || l.Status != fleet.StatusPending {
			t.Errorf("fleet: %+v %v, want pending", l, ok)
		}
		// The one use is spent.
		wantProblem(t, e.serve(proto.PathEnroll, mustJSON(t, enrollRequest(tokenOnce, valid)), nil), 403, proto.CodeTokenUsedUp, "")
	})
}

// corruptCSR flips a byte inside the CSR's signature.
func corruptCSR(tb testing.TB, csrPEM string) string {
	tb.Helper()
	block, _ := pem.Decode([]byte(csrPEM))
	der := bytes.Clone(block.Bytes)
	der[len(der)-5] ^= 0xff
	return string(pem.EncodeToMemory(&pem.Block{Type: block.Type, Bytes: der}))
}

func validHeartbeat() proto.Heartbeat {
	return proto.Heartbeat{V: proto.Version, Seq: 1, ClockMillis: time.Now().UnixMilli(), UptimeSeconds: 60}
}

func TestHeartbeat(t *testing.T) {
	e := newEnv(t)
	e.addComputer("agent-1", store.ComputerActive, false)
	e.addComputer("agent-elsewhere", store.ComputerActive, true)
	e.addComputer("agent-off", store.ComputerDeactivated, false)
	ok := mustJSON(t, validHeartbeat())
	unverified := e.verified(t, "agent-1")
	unverified.VerifiedChains = nil
	caOnly := &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{e.ca.Cert}}}

	tests := []struct {
		name   string
		agent  string // "": tls below
		tls    *tls.ConnectionState
		body   []byte
		status int
		code   string
		detail string
	}{
		{"plain HTTP", "", nil, ok, 401, proto.CodeCertRequired, "client certificate"},
		{"no client certificate", "", &tls.ConnectionState{HandshakeComplete: true}, ok, 401, proto.CodeCertRequired, "enrol first"},
		{"certificate not verified", "", unverified, ok, 401, proto.CodeCertRequired, "enrol first"},
		{"certificate without agent ID", "", caOnly, ok, 401, proto.CodeCertRequired, "not bound to an agent ID"},
		{"malformed JSON", "agent-1", nil, []byte(`{"v":1,,}`), 400, proto.CodeBadRequest, "heartbeat: malformed JSON at byte 8"},
		{"wrong type", "agent-1", nil, []byte(`{"v":1,"clock":"now"}`), 400, proto.CodeBadRequest, `field "clock"`},
		{"oversized", "agent-1", nil, oversized("pad"), 400, proto.CodeBadRequest, "larger than 64 KiB"},
		{"no clock", "agent-1", nil, []byte(`{"v":1}`), 400, proto.CodeBadRequest, "clock: missing"},
		{"bad inventory", "agent-1", nil, []byte(`{"v":1,"clock":1,"inv":{"os":"linux"}}`), 400, proto.CodeBadRequest, "inv.hostname: missing"},
		{"unknown agent", "agent-gone", nil, ok, 403, proto.CodeAgentUnknown, "agent-gone is not known"},
		{"deactivated", "agent-off", nil, ok, 403, proto.CodeAgentDeactivate, "deactivated by an administrator"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs := tc.tls
			if tc.agent != "" {
				cs = e.verified(t, tc.agent)
			}
			wantProblem(t, e.serve(proto.PathHeartbeat, tc.body, cs), tc.status, tc.code, tc.detail)
		})
	}

	for _, id := range []string{"agent-1", "agent-elsewhere"} {
		t.Run("ok "+id, func(t *testing.T) {
			w := e.serve(proto.PathHeartbeat, ok, e.verified(t, id))
			if w.Code != http.StatusOK {
				t.Fatalf("got %d %s", w.Code, w.Body)
			}
			var resp proto.HeartbeatResponse
			if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
				t.Fatal(err)
			}
			if resp.IntervalMillis != 60_000 || resp.ClockMillis == 0 || resp.SendInventory {
				t.Errorf("response: %+v", resp)
			}
			if l, ok := e.fleet.Live(id, time.Now()); !ok || l.Status != fleet.StatusOnline || l.Uptime != time.Minute {
				t.Errorf("fleet: %+v %v, want online", l, ok)
			}
		})
	}
}

func TestRenew(t *testing.T) {
	e := newEnv(t)
	e.addComputer("agent-1", store.ComputerActive, false)
	e.addComputer("agent-off", store.ComputerDeactivated, false)
	req := mustJSON(t, proto.RenewRequest{V: proto.Version, CSR: newCSR(t)})

	w := e.serve(proto.PathRenew, req, e.verified(t, "agent-1"))
	if w.Code != http.StatusOK {
		t.Fatalf("got %d %s", w.Code, w.Body)
	}
	var resp proto.RenewResponse
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	cert, err := pki.ParseCertificatePEM([]byte(resp.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := pki.AgentID(cert); id != "agent-1" {
		t.Errorf("renewed certificate bound to %q", id)
	}
	if c, _ := e.store.GetComputer(t.Context(), "agent-1"); c.CertSerial != pki.SerialHex(cert) || !c.CertNotAfter.Equal(cert.NotAfter) {
		t.Errorf("stored certificate %s until %s, want %s", c.CertSerial, c.CertNotAfter, pki.SerialHex(cert))
	}

	wantProblem(t, e.serve(proto.PathRenew, req, nil), 401, proto.CodeCertRequired, "")
	wantProblem(t, e.serve(proto.PathRenew, []byte(`{"csr":`), e.verified(t, "agent-1")), 400, proto.CodeBadRequest, "renewal request: body is truncated")
	wantProblem(t, e.serve(proto.PathRenew, mustJSON(t, proto.RenewRequest{V: 1, CSR: "x"}), e.verified(t, "agent-1")), 400, proto.CodeBadRequest, "renewal request: csr:")
	wantProblem(t, e.serve(proto.PathRenew, req, e.verified(t, "agent-gone")), 403, proto.CodeAgentUnknown, "")
	wantProblem(t, e.serve(proto.PathRenew, req, e.verified(t, "agent-off")), 403, proto.CodeAgentDeactivate, "")
}

// checkAnswer fails on a server error or an answer that is not the JSON the
// protocol promises.
func checkAnswer(t *testing.T, w *httptest.ResponseRecorder, allowed ...int) {
	t.Helper()
	if w.Code >= 500 || !slices.Contains(allowed, w.Code) {
		t.Fatalf("answered %d: %s", w.Code, w.Body)
	}
	var v map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		t.Fatalf("answer %d is not a JSON object: %v: %q", w.Code, err, w.Body)
	}
	if w.Code != http.StatusOK && w.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("refusal %d with Content-Type %q", w.Code, w.Header().Get("Content-Type"))
	}
}

func FuzzEnrollHandler(f *testing.F) {
	e := newEnv(f)
	valid := newCSR(f)
	f.Add(mustJSON(f, enrollRequest(tokenUnlimited, valid)))
	f.Add(mustJSON(f, enrollRequest("yat_revoked", valid)))
	f.Add(mustJSON(f, enrollRequest(tokenUnlimited, "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")))
	f.Add([]byte(`{"v":1,"token":"yat_unlimited","csr":"","inventory":{"hostname":"h","ips":["::1","x"]}}`))
	f.Add([]byte(`{"v":1e400}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`null`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		checkAnswer(t, e.serve(proto.PathEnroll, body, nil), 200, 400, 403)
	})
}

func FuzzHeartbeatHandler(f *testing.F) {
	e := newEnv(f)
	e.addComputer("agent-1", store.ComputerActive, false)
	cs := e.verified(f, "agent-1")
	f.Add(mustJSON(f, validHeartbeat()))
	hb := validHeartbeat()
	hb.Inventory = &proto.Inventory{Hostname: "web01", OS: "linux", IPs: []string{"192.0.2.1", "2001:db8::1"}}
	hb.Counters = map[string]uint64{"heartbeats": 1 << 63}
	f.Add(mustJSON(f, hb))
	f.Add([]byte(`{"v":1,"clock":9223372036854775807,"up":9223372036854775807}`))
	f.Add([]byte(`{"v":1,"clock":1,"ctr":{"":1}}`))
	f.Add([]byte(`{"v":1,"clock":1,"inv":null}`))
	f.Add([]byte(`{"v":-1}`))
	f.Add([]byte(`"\ud800"`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		checkAnswer(t, e.serve(proto.PathHeartbeat, body, cs), 200, 400)
	})
}

// TestEnrollRetiresPresentedIdentity: a host that re-enrols while still
// holding a valid certificate retires its old computer record.
func TestEnrollRetiresPresentedIdentity(t *testing.T) {
	e := newEnv(t)
	w := e.serve(proto.PathEnroll, mustJSON(t, enrollRequest(tokenUnlimited, newCSR(t))), nil)
	if w.Code != http.StatusOK {
		t.Fatalf("first enrolment: %d %s", w.Code, w.Body)
	}
	var first proto.EnrollResponse
	if err := json.Unmarshal(w.Body.Bytes(), &first); err != nil {
		t.Fatal(err)
	}
	if first.Replaced != "" {
		t.Fatalf("first enrolment replaced %q", first.Replaced)
	}
	w = e.serve(proto.PathEnroll, mustJSON(t, enrollRequest(tokenUnlimited, newCSR(t))), e.verified(t, first.AgentID))
	var second proto.EnrollResponse
	if err := json.Unmarshal(w.Body.Bytes(), &second); err != nil || w.Code != http.StatusOK {
		t.Fatalf("second enrolment: %d %s", w.Code, w.Body)
	}
	if second.Replaced != first.AgentID || second.AgentID == first.AgentID {
		t.Fatalf("second enrolment: agent %s replaced %q; want a new ID replacing %s", second.AgentID, second.Replaced, first.AgentID)
	}
	old, _ := e.store.GetComputer(context.Background(), first.AgentID)
	if old.State != store.ComputerDeactivated {
		t.Errorf("old computer state %q, want deactivated", old.State)
	}
	hb := mustJSON(t, proto.Heartbeat{V: 1, ClockMillis: time.Now().UnixMilli()})
	if w := e.serve(proto.PathHeartbeat, hb, e.verified(t, first.AgentID)); w.Code != http.StatusForbidden {
		t.Errorf("old identity heartbeat: %d, want 403", w.Code)
	}
}

// BenchmarkHeartbeat measures the gateway's own work per heartbeat (no TLS,
// no sockets): decoding, the fleet update and the answer.
func BenchmarkHeartbeat(b *testing.B) {
	e := newEnv(b)
	w := e.serve(proto.PathEnroll, mustJSON(b, enrollRequest(tokenUnlimited, newCSR(b))), nil)
	var enrolled proto.EnrollResponse
	if err := json.Unmarshal(w.Body.Bytes(), &enrolled); err != nil {
		b.Fatal(err)
	}
	cs := e.verified(b, enrolled.AgentID)
	body := mustJSON(b, proto.Heartbeat{V: 1, Seq: 2, ClockMillis: time.Now().UnixMilli(), UptimeSeconds: 86400})
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodPost, proto.PathHeartbeat, bytes.NewReader(body))
		r.TLS = cs
		rec := httptest.NewRecorder()
		e.mux.ServeHTTP(rec, r)
		if rec.Code != http.StatusOK {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}

// TestExpiredCertificateOnKeptConnection: a connection opened while the
// certificate was valid does not keep working after it expires.
func TestExpiredCertificateOnKeptConnection(t *testing.T) {
	e := newEnv(t)
	_, csr, err := pki.NewAgentKey("web01")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := e.ca.SignAgentCSR(csr, "agent-1", time.Now().Add(-2*time.Hour), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cs := &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{cert}, VerifiedChains: [][]*x509.Certificate{{cert, e.ca.Cert}}}
	hb := mustJSON(t, proto.Heartbeat{V: 1, ClockMillis: time.Now().UnixMilli()})
	for _, path := range []string{proto.PathHeartbeat, proto.PathRenew} {
		wantProblem(t, e.serve(path, hb, cs), http.StatusUnauthorized, proto.CodeCertExpired, "enrol again")
	}
}

func TestEvents(t *testing.T) {
	e := newEnv(t)
	w := e.serve(proto.PathEnroll, mustJSON(t, enrollRequest(tokenUnlimited, newCSR(t))), nil)
	var enrolled proto.EnrollResponse
	if err := json.Unmarshal(w.Body.Bytes(), &enrolled); err != nil {
		t.Fatal(err)
	}
	cs := e.verified(t, enrolled.AgentID)
	now := time.Now().UTC()
	batch := proto.EventBatch{V: 1, Events: []proto.Event{
		{ID: "e1", Type: "agent-started", Severity: "info", Time: now, Data: json.RawMessage(`{"version":"1"}`)},
		{ID: "e2", Type: "test", Severity: "warning", Time: now},
	}}
	for i, want := range []proto.EventAck{{V: 1, Stored: 2}, {V: 1, Stored: 2}} {
		w := e.serve(proto.PathEvents, mustJSON(t, batch), cs)
		var ack proto.EventAck
		if err := json.Unmarshal(w.Body.Bytes(), &ack); err != nil || w.Code != 200 || ack != want {
			t.Fatalf("send %d: %d %s, want %+v", i, w.Code, w.Body, want)
		}
	}
	if len(e.store.events) != 2 {
		t.Errorf("a resent batch was stored twice: %d events", len(e.store.events))
	}
	if got := e.store.events[enrolled.AgentID+"/e1"]; got.Data != `{"version":"1"}` || got.ComputerID != enrolled.AgentID {
		t.Errorf("stored %+v", got)
	}
	bad := []struct {
		name   string
		mutate func(*proto.EventBatch)
		detail string
	}{
		{"no id", func(b *proto.EventBatch) { b.Events[0].ID = "" }, "events[0].id"},
		{"bad type", func(b *proto.EventBatch) { b.Events[1].Type = "Bad Type" }, "events[1].type"},
		{"bad severity", func(b *proto.EventBatch) { b.Events[0].Severity = "panic" }, "events[0].severity"},
		{"data not an object", func(b *proto.EventBatch) { b.Events[0].Data = json.RawMessage(`[1]`) }, "events[0].data"},
		{"too many", func(b *proto.EventBatch) {
			b.Events = make([]proto.Event, proto.MaxEventsPerBatch+1)
		}, "at most 1000"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			b := proto.EventBatch{V: 1, Events: append([]proto.Event(nil), batch.Events...)}
			tc.mutate(&b)
			wantProblem(t, e.serve(proto.PathEvents, mustJSON(t, b), cs), 400, proto.CodeBadRequest, tc.detail)
		})
	}
	wantProblem(t, e.serve(proto.PathEvents, mustJSON(t, batch), nil), 401, proto.CodeCertRequired, "")
	e.fleet.Deactivate(enrolled.AgentID)
	wantProblem(t, e.serve(proto.PathEvents, mustJSON(t, batch), cs), 403, proto.CodeAgentDeactivate, "")
}
