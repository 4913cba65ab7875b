package api

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/auth"
	"github.com/yagura/yagura/internal/fleet"
	"github.com/yagura/yagura/internal/jobs"
	"github.com/yagura/yagura/internal/settings"
	"github.com/yagura/yagura/internal/store"
	"github.com/yagura/yagura/internal/store/sqlite"
	"github.com/yagura/yagura/internal/telemetry"
)

// fuzzAPI is the whole API over a real SQLite store, without TLS.
func fuzzAPI(f *testing.F) *http.ServeMux {
	f.Helper()
	dir := f.TempDir()
	db, err := sqlite.Open(f.Context(), filepath.Join(dir, "state.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	if err := db.CreateToken(f.Context(), store.Token{ID: "t", Hash: "h", CreatedAt: time.Now()}); err != nil {
		f.Fatal(err)
	}
	if _, err := db.EnrollComputer(f.Context(), "h", time.Now(), store.Computer{ID: "c1", Hostname: "web01", EnrolledAt: time.Now()}); err != nil {
		f.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	fl := fleet.New(fleet.DefaultConfig(), db, settings.Default(), log, nil)
	if err := fl.Load(f.Context(), time.Now()); err != nil {
		f.Fatal(err)
	}
	jcfg := jobs.DefaultConfig()
	jcfg.FilesDir = filepath.Join(dir, "files")
	js := jobs.New(jcfg, db, fl, log, nil)
	mux := http.NewServeMux()
	New(mux, Deps{Store: db, Fleet: fl, Jobs: js, Log: log, Notifications: nopNotifications{}, Auth: staticAuth{"admin": {Subject: "user:admin", Role: auth.RoleAdmin}}})
	return mux
}

// nopNotifications stands in for the running notification machinery, which
// the fuzzed operations only poke.
type nopNotifications struct{}

func (nopNotifications) Test(context.Context, store.Channel, string) error { return nil }
func (nopNotifications) Changed(context.Context)                           {}
func (nopNotifications) Wake()                                             {}

// FuzzRequestBodies sends arbitrary JSON to every create and update
// operation: each must answer, never fail with 5xx or panic.
func FuzzRequestBodies(f *testing.F) {
	mux := fuzzAPI(f)
	routes := []struct{ method, path string }{
		{http.MethodPost, "/api/v1/activation-tokens"},
		{http.MethodPost, "/api/v1/jobs"},
		{http.MethodPost, "/api/v1/users"},
		{http.MethodPatch, "/api/v1/users/admin"},
		{http.MethodPost, "/api/v1/api-clients"},
		{http.MethodPatch, "/api/v1/settings"},
		{http.MethodPatch, "/api/v1/computers/c1"},
		{http.MethodPost, "/api/v1/alert-rules"},
		{http.MethodPost, "/api/v1/channels"},
	}
	for _, seed := range []string{
		`{"description":"x","expires_in":"1h","max_uses":3}`,
		`{"kind":"collect-logs","computers":["c1"],"params":{"paths":["/var/log/*.log"],"max_bytes":100}}`,
		`{"kind":"heartbeat-now","all":true}`,
		`{"username":"bob","role":"auditor","password":"a long enough password"}`,
		`{"role":"operator","disabled":true}`,
		`{"role":"auditor","expires_in":"720h"}`,
		`{"heartbeat.interval":"30s","agent.communication":"bidirectional"}`,
		`{"communication":"manager-initiated"}`,
		`{"expires_in":"-5s","max_uses":-1}`, `[]`, `null`, `{"kind":"uninstall","computers":[]}`,
		`{"name":"brute force","severity":"critical","definition":{"filter":{"types":["firewall"],"data":{"action":"deny"}},"group_by":"data.src","threshold":20,"window":"1m"}}`,
		`{"name":"siem","config":{"kind":"syslog","syslog":{"address":"127.0.0.1:6514","transport":"tls","payload":"cef"}},"routes":[{"source":"alerts"},{"source":"events","types":["firewall"],"min_severity":"warning"}]}`,
		`{"name":"hook","config":{"kind":"webhook","webhook":{"url":"https://example.invalid/x","secret":"0123456789abcdef"}},"routes":[{"source":"alerts","types":["[x"]}]}`,
	} {
		f.Add(uint8(0), []byte(seed))
	}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		rt := routes[int(which)%len(routes)]
		r := httptest.NewRequest(rt.method, rt.path, bytes.NewReader(body))
		r.Header.Set("Authorization", "Bearer admin")
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		if w.Code >= 500 {
			t.Fatalf("%s %s with %q: %d %s", rt.method, rt.path, body, w.Code, w.Body)
		}
	})
}

// FuzzDecodeCursor: a paging cursor comes back from clients; anything that
// is not one this API made is refused, never a panic, and every cursor it
// makes decodes to the same position.
func FuzzDecodeCursor(f *testing.F) {
	f.Add("AAYVoy_9SAAAAmMxAAJlMQ", int64(1765000000000000), "c1", "e1")
	f.Add("!!", int64(0), "", "")
	f.Fuzz(func(t *testing.T, s string, micros int64, computer, id string) {
		_, _ = decodeCursor(s)
		e := telemetry.Event{Time: time.UnixMicro(micros).UTC(), ComputerID: computer, ID: id}
		c, err := decodeCursor(encodeCursor(e))
		if err != nil {
			t.Fatalf("own cursor refused: %v", err)
		}
		if !c.Time.Equal(e.Time) || c.ComputerID != computer || c.ID != id {
			t.Fatalf("cursor of %+v decodes to %+v", e, c)
		}
	})
}
