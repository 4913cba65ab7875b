// Package servertest runs a manager inside a test's process, on a loopback
// port with its own data folder, for the tests of the packages that talk to
// one (server, agent, sim).
package servertest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/credentials"
	"github.com/yagura/yagura/internal/ctl"
	"github.com/yagura/yagura/internal/pki"
	"github.com/yagura/yagura/internal/server"
)

// Manager is a running manager with an HTTPS client that pins its CA.
type Manager struct {
	*server.Info
	Config server.Config
	Client *http.Client
	// Token is the administrator's access token (password grant with the
	// credentials file the manager wrote).
	Token string
	stop  func()
}

// Config is a manager configuration on the embedded store with its own
// data folder and a free loopback port.
func Config(t testing.TB) server.Config {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Store.Driver = "sqlite"
	// Free loopback ports for the flow collector too: tests run managers
	// side by side.
	cfg.Flows.Collector.NetFlow = []string{"127.0.0.1:0"}
	cfg.Flows.Collector.IPFIX = []string{"127.0.0.1:0"}
	cfg.Flows.Collector.SFlow = []string{"127.0.0.1:0"}
	return cfg
}

// Start runs a manager until the test ends (or Stop), logging to the
// test's output, and signs in as its administrator.
func Start(t testing.TB, cfg server.Config, opts server.Options) *Manager {
	t.Helper()
	srv, err := server.New(cfg, opts, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("manager stopped before it was ready: %v", err)
	case <-time.After(15 * time.Second):
		cancel()
		t.Fatal("manager not ready after 15s")
	}
	info := srv.Info()
	m := &Manager{Info: info, Config: cfg, Client: PinnedClient(t, info.CAFingerprint)}
	var once sync.Once
	m.stop = func() {
		once.Do(func() {
			cancel()
			m.Client.CloseIdleConnections()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("manager Run returned %v after cancel, want nil", err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("manager still running 5s after cancel")
				<-done // do not let it log into a finished test
			}
		})
	}
	t.Cleanup(m.stop)
	m.Token = AdminToken(t, info)
	return m
}

// Stop cancels the manager's Run and checks that it returns nil within a
// few seconds. It is idempotent and also runs at cleanup.
func (m *Manager) Stop() { m.stop() }

// AdminToken signs in as admin with the credentials file the manager wrote.
func AdminToken(t testing.TB, info *server.Info) string {
	t.Helper()
	f, err := credentials.Load(info.CredentialsPath)
	if err != nil {
		t.Fatalf("credentials file: %v", err)
	}
	tok, err := ctl.Login(t.Context(), ctl.Target{URL: info.URL, CAFingerprint: info.CAFingerprint, User: f.User, Password: f.Password, From: "test"})
	if err != nil {
		t.Fatalf("sign in as admin: %v", err)
	}
	return tok
}

// PinnedClient is an HTTPS client that trusts only the CA with this
// fingerprint.
func PinnedClient(t testing.TB, fingerprint string) *http.Client {
	t.Helper()
	tc, err := pki.PinnedClientConfig(fingerprint, "127.0.0.1", nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}
}

// Response is an HTTP answer, read whole.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r Response) String() string { return fmt.Sprintf("%d %.500s", r.Status, r.Body) }

// Request sends body (nil: none; []byte: as is; anything else: as JSON)
// with the given bearer credential ("": none).
func (m *Manager) Request(t testing.TB, method, path, bearer string, body any) Response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, m.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := m.Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// Call is an administrator's API call that must answer want; the body is
// decoded into out when out is not nil.
func (m *Manager) Call(t testing.TB, method, path string, body any, want int, out any) Response {
	t.Helper()
	r := m.Request(t, method, path, m.Token, body)
	if r.Status != want {
		t.Fatalf("%s %s: got %s, want status %d", method, path, r, want)
	}
	if out != nil {
		if err := json.Unmarshal(r.Body, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, r.Body, err)
		}
	}
	return r
}
