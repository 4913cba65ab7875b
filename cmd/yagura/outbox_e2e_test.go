package main

// End-to-end test of the notification outbox: nothing is lost while a
// receiver is down and the manager restarts.

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/agent"
	"github.com/yagura/yagura/internal/api"
	"github.com/yagura/yagura/internal/notify"
)

// webhookReceiver records what a webhook channel delivers, checking each
// signature.
type webhookReceiver struct {
	secret []byte
	mu     sync.Mutex
	seen   map[string]int // delivery ID → times received
	bad    []string
	srv    *http.Server
}

func (w *webhookReceiver) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		rw.WriteHeader(http.StatusBadRequest)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := notify.VerifyWebhook(w.secret, r.Header, body, time.Now(), 5*time.Minute); err != nil {
		w.bad = append(w.bad, err.Error())
		rw.WriteHeader(http.StatusUnauthorized)
		return
	}
	var m notify.Message
	if err := json.Unmarshal(body, &m); err != nil || m.ID == "" || m.ID != r.Header.Get("X-Yagura-Delivery") {
		w.bad = append(w.bad, fmt.Sprintf("body %q with delivery header %q", body, r.Header.Get("X-Yagura-Delivery")))
		rw.WriteHeader(http.StatusBadRequest)
		return
	}
	w.seen[m.ID]++
	rw.WriteHeader(http.StatusNoContent)
}

func (w *webhookReceiver) start(t *testing.T, addr string) {
	t.Helper()
	var ln net.Listener
	eventually(t, 10*time.Second, "the webhook port to be free", func() (bool, string) {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err == nil, fmt.Sprint(err)
	})
	w.srv = &http.Server{Handler: w, ReadHeaderTimeout: 5 * time.Second}
	go w.srv.Serve(ln)
	t.Cleanup(func() { w.srv.Close() })
}

func (w *webhookReceiver) counts() (unique, total int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, n := range w.seen {
		unique++
		total += n
	}
	return unique, total
}

// TestOutboxSurvivesReceiverDownAndRestart: a webhook receiver is down while
// 1,000 alerts are raised, each with a notification; the manager is killed
// and restarted; when the receiver returns it gets all 1,000, each once,
// signed.
func TestOutboxSurvivesReceiverDownAndRestart(t *testing.T) {
	endToEnd(t)
	const n = 1000
	dir := t.TempDir()
	// Fast retries, so the test need not wait out production backoff.
	cfg := filepath.Join(t.TempDir(), "yagura.yaml")
	if err := os.WriteFile(cfg, []byte("notifications:\n  base_delay: 200ms\n  max_delay: 2s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := startManagerWith(t, dir, "127.0.0.1:0", "--config", cfg)
	addr := strings.TrimPrefix(m.url, "https://")
	if _, err := m.ctl(t, "settings", "set", "heartbeat.interval=1s"); err != nil {
		t.Fatal(err)
	}
	c := m.client(t)

	// A port for the receiver, not listening yet: the receiver is down.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hookAddr := ln.Addr().String()
	ln.Close()
	recv := &webhookReceiver{secret: []byte("s3cret-for-the-test"), seen: map[string]int{}}

	var ch api.Channel
	if err := c.Do(t.Context(), http.MethodPost, "/api/v1/channels", nil, map[string]any{
		"name": "ops webhook",
		"config": map[string]any{"kind": "webhook", "webhook": map[string]any{
			"url": "http://" + hookAddr + "/yagura", "secret": string(recv.secret), "headers": map[string]string{"X-Team": "soc"},
		}},
		"routes": []map[string]any{{"source": "alerts", "types": []string{"rule:*"}}},
	}, &ch); err != nil {
		t.Fatal(err)
	}
	// A receiver that refuses everything (400: retrying cannot help): its
	// notifications fail at once, and one alert says so.
	refuser := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadRequest) }))
	defer refuser.Close()
	var bad api.Channel
	if err := c.Do(t.Context(), http.MethodPost, "/api/v1/channels", nil, map[string]any{
		"name":   "misconfigured",
		"config": map[string]any{"kind": "webhook", "webhook": map[string]any{"url": refuser.URL, "secret": "another-secret-16b"}},
		"routes": []map[string]any{{"source": "alerts", "types": []string{"rule:*"}}},
	}, &bad); err != nil {
		t.Fatal(err)
	}
	// One alert per test event: threshold 1, grouped by the event's number.
	if err := c.Do(t.Context(), http.MethodPost, "/api/v1/alert-rules", nil, map[string]any{
		"name": "every test event", "severity": "warning",
		"definition": map[string]any{"filter": map[string]any{"types": []string{"test"}}, "group_by": "data.n", "threshold": 1, "window": "1s"},
	}, nil); err != nil {
		t.Fatal(err)
	}

	tok := m.token(t)
	ad := t.TempDir()
	if out, err := m.enroll(t, ad, tok.Token); err != nil {
		t.Fatalf("enrol: %v\n%s", err, out)
	}
	if _, err := agent.LoadIdentity(ad); err != nil {
		t.Fatal(err)
	}
	startProc(t, "agent", "agent", "--data-dir", ad, "--test-events", fmt.Sprint(n))

	pending := func() int {
		var got api.Channel
		if err := m.client(t).Do(t.Context(), http.MethodGet, "/api/v1/channels/"+ch.ID, nil, nil, &got); err != nil {
			return -1
		}
		return got.Outbox.Pending
	}
	eventually(t, 120*time.Second, "1,000 notifications waiting", func() (bool, string) {
		p := pending()
		return p == n, fmt.Sprint(p)
	})
	// The manager dies without warning and comes back.
	m.proc.kill()
	m = startManagerWith(t, dir, addr, "--config", cfg)
	if p := pending(); p != n {
		t.Fatalf("%d notifications waiting after the restart, want %d", p, n)
	}
	recv.start(t, hookAddr)
	eventually(t, 120*time.Second, "all notifications delivered", func() (bool, string) {
		u, total := recv.counts()
		return u >= n && pending() == 0, fmt.Sprintf("%d unique, %d received", u, total)
	})
	time.Sleep(2 * time.Second) // anything sent twice would arrive by now
	recv.mu.Lock()
	defer recv.mu.Unlock()
	if len(recv.bad) > 0 {
		t.Fatalf("%d bad deliveries, first: %s", len(recv.bad), recv.bad[0])
	}
	if len(recv.seen) != n {
		t.Fatalf("received %d distinct notifications, want %d", len(recv.seen), n)
	}
	for id, k := range recv.seen {
		if k != 1 {
			t.Fatalf("notification %s received %d times", id, k)
		}
	}
	var ds struct{ Items []api.Delivery }
	if err := m.client(t).Do(t.Context(), http.MethodGet, "/api/v1/deliveries", map[string][]string{"channel": {ch.ID}, "limit": {"5000"}}, nil, &ds); err != nil {
		t.Fatal(err)
	}
	delivered := 0
	for _, d := range ds.Items {
		if d.Status == "delivered" {
			delivered++
		}
	}
	if delivered != n {
		t.Fatalf("delivery history shows %d delivered, want %d", delivered, n)
	}
	// The refused notifications are kept as failed, and one alert counts them.
	eventually(t, 120*time.Second, "every notification to the refusing channel failed", func() (bool, string) {
		var failed struct{ Items []api.Notification }
		if err := m.client(t).Do(t.Context(), http.MethodGet, "/api/v1/notifications", map[string][]string{"channel": {bad.ID}, "status": {"failed"}, "limit": {"5000"}}, nil, &failed); err != nil {
			return false, err.Error()
		}
		return len(failed.Items) == n, fmt.Sprint(len(failed.Items))
	})
	var alerts struct{ Items []api.Alert }
	if err := m.client(t).Do(t.Context(), http.MethodGet, "/api/v1/alerts", map[string][]string{"type": {"notification-failed"}, "state": {"all"}}, nil, &alerts); err != nil {
		t.Fatal(err)
	}
	// The count is written after the failure it counts, so the kill may
	// lose the few counted in that instant; the failures themselves are
	// all recorded (above).
	if len(alerts.Items) != 1 || alerts.Items[0].Occurrences > n || alerts.Items[0].Occurrences < n-10 || alerts.Items[0].Subject != "channel=misconfigured" {
		t.Fatalf("notification-failed alerts: %+v, want one for the channel counting about %d", alerts.Items, n)
	}
	m.proc.stop(t, syscall.SIGTERM)
}
