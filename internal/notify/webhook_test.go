package notify

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/yagura/yagura/internal/testdaemon"
)

const testSecret = "whsec-0123456789abcdef"

// TestSign pins the signature to one computed with openssl, as in
// docs/notifications.md:
//
//	printf '%s' '1767225600.{"id":"01JQ7Z"}' | openssl dgst -sha256 -hmac 'whsec-0123456789abcdef'
func TestSign(t *testing.T) {
	got := Sign([]byte(testSecret), "1767225600", []byte(`{"id":"01JQ7Z"}`))
	want := "sha256=d4847f26b90dcb69565ab0b4c585e0d5e5557760d52d13fa55f96522ca3bee3f"
	if got != want {
		t.Errorf("Sign = %s, want %s", got, want)
	}
}

// hookReceiver is a receiver as a customer would write it: it verifies each
// request with VerifyWebhook and keeps it.
type hookReceiver struct {
	mu   sync.Mutex
	reqs []hookRequest
	now  func() time.Time
}

type hookRequest struct {
	Path      string
	Header    http.Header
	Body      []byte
	VerifyErr error
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	err := VerifyWebhook([]byte(testSecret), r.Header, body, h.now(), 5*time.Minute)
	h.mu.Lock()
	h.reqs = append(h.reqs, hookRequest{Path: r.URL.Path, Header: r.Header.Clone(), Body: body, VerifyErr: err})
	h.mu.Unlock()
	if err != nil {
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	switch r.URL.Path {
	case "/ok":
		w.WriteHeader(http.StatusNoContent)
	case "/created":
		w.WriteHeader(http.StatusCreated)
	case "/fail":
		http.Error(w, "database is down\nretry later "+strings.Repeat("x", 1000), http.StatusInternalServerError)
	case "/bad":
		http.Error(w, `{"error":"unknown field"}`, http.StatusBadRequest)
	case "/slow":
		w.WriteHeader(http.StatusTooManyRequests)
	case "/moved":
		http.Redirect(w, r, "https://elsewhere.example/hook", http.StatusFound)
	}
}

func (h *hookReceiver) last(t *testing.T) hookRequest {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.reqs) == 0 {
		t.Fatal("receiver got no request")
	}
	return h.reqs[len(h.reqs)-1]
}

func TestWebhook(t *testing.T) {
	clock := time.Date(2026, 4, 1, 9, 30, 0, 0, time.UTC)
	recv := &hookReceiver{now: func() time.Time { return clock }}
	srv := httptest.NewTLSServer(recv)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	newSender := func(t *testing.T, path string, opts ...Option) Sender {
		t.Helper()
		c := Config{Kind: KindWebhook, Webhook: &WebhookConfig{
			URL:     srv.URL + path,
			Secret:  testSecret,
			Headers: map[string]string{"Authorization": "Bearer t0ken", "X-Tenant": "経理部"},
		}}
		opts = append([]Option{WithRootCAs(srv.Certificate()), WithClock(func() time.Time { return clock }), WithProductVersion("1.2.3")}, opts...)
		s, err := New(c, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}

	t.Run("delivered and verified", func(t *testing.T) {
		m := testMessage("01JQ7Z-hook")
		if err := newSender(t, "/ok").Send(ctx, m); err != nil {
			t.Fatal(err)
		}
		r := recv.last(t)
		if r.VerifyErr != nil {
			t.Fatalf("VerifyWebhook: %v", r.VerifyErr)
		}
		for h, want := range map[string]string{
			"Authorization": "Bearer t0ken",
			"X-Tenant":      "経理部",
			HeaderDelivery:  m.ID,
			HeaderTimestamp: strconv.FormatInt(clock.Unix(), 10),
			"Content-Type":  "application/json; charset=utf-8",
			"User-Agent":    "Yagura/1.2.3",
		} {
			if got := r.Header.Get(h); got != want {
				t.Errorf("%s = %q, want %q", h, got, want)
			}
		}
		var got Message
		if err := json.Unmarshal(r.Body, &got); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(got, m); diff != "" {
			t.Errorf("body (-got +want):\n%s", diff)
		}

		// What a receiver must refuse.
		tampered := append([]byte(nil), r.Body...)
		tampered[len(tampered)-2] ^= 1
		if err := VerifyWebhook([]byte(testSecret), r.Header, tampered, clock, 5*time.Minute); !errors.Is(err, ErrBadSignature) {
			t.Errorf("tampered body: %v, want ErrBadSignature", err)
		}
		if err := VerifyWebhook([]byte("another-secret-0123"), r.Header, r.Body, clock, 5*time.Minute); !errors.Is(err, ErrBadSignature) {
			t.Errorf("wrong secret: %v, want ErrBadSignature", err)
		}
		for _, now := range []time.Time{clock.Add(6 * time.Minute), clock.Add(-6 * time.Minute)} {
			if err := VerifyWebhook([]byte(testSecret), r.Header, r.Body, now, 5*time.Minute); !errors.Is(err, ErrStaleTimestamp) {
				t.Errorf("now %v: %v, want ErrStaleTimestamp", now.Sub(clock), err)
			}
		}
		// A replayed body under a fresh timestamp does not match the signature.
		h := r.Header.Clone()
		h.Set(HeaderTimestamp, strconv.FormatInt(clock.Add(time.Hour).Unix(), 10))
		if err := VerifyWebhook([]byte(testSecret), h, r.Body, clock.Add(time.Hour), 5*time.Minute); !errors.Is(err, ErrBadSignature) {
			t.Errorf("moved timestamp: %v, want ErrBadSignature", err)
		}
		for name, edit := range map[string]func(http.Header){
			"no signature":   func(h http.Header) { h.Del(HeaderSignature) },
			"no timestamp":   func(h http.Header) { h.Del(HeaderTimestamp) },
			"bad timestamp":  func(h http.Header) { h.Set(HeaderTimestamp, "yesterday") },
			"other scheme":   func(h http.Header) { h.Set(HeaderSignature, "sha1=abc") },
			"bad hex":        func(h http.Header) { h.Set(HeaderSignature, "sha256=zz") },
			"short hex":      func(h http.Header) { h.Set(HeaderSignature, "sha256=abcd") },
			"empty sig":      func(h http.Header) { h.Set(HeaderSignature, "") },
			"upper-case hex": func(h http.Header) { h.Set(HeaderSignature, strings.ToUpper(h.Get(HeaderSignature))) },
		} {
			h := r.Header.Clone()
			edit(h)
			if err := VerifyWebhook([]byte(testSecret), h, r.Body, clock, 5*time.Minute); err == nil {
				t.Errorf("%s: verified", name)
			}
		}
	})

	t.Run("any 2xx", func(t *testing.T) {
		if err := newSender(t, "/created").Send(ctx, testMessage("c")); err != nil {
			t.Fatal(err)
		}
	})

	for _, tc := range []struct {
		path, want string
		permanent  bool
	}{
		{"/fail", "POST: 500 Internal Server Error: database is down retry later xxx", false},
		{"/bad", `POST: 400 Bad Request: {"error":"unknown field"}`, true},
		{"/slow", "POST: 429 Too Many Requests", false},
		{"/moved", "POST: 302 Found (redirect to https://elsewhere.example/hook not followed; set the final URL)", false},
	} {
		t.Run(tc.path, func(t *testing.T) {
			err := newSender(t, tc.path+"?token=hidden").Send(ctx, testMessage("e"))
			// The path and query may hold the credential: errors show
			// the origin only.
			want := "webhook " + srv.URL + "/…: " + tc.want
			if err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("error %v\nwant prefix %s", err, want)
			}
			if len(err.Error()) > len(want)+250 {
				t.Errorf("error is %d bytes long; the body should be cut short", len(err.Error()))
			}
			if strings.Contains(err.Error(), "hidden") {
				t.Error("the error shows the query string")
			}
			if IsPermanent(err) != tc.permanent {
				t.Errorf("IsPermanent = %v, want %v", IsPermanent(err), tc.permanent)
			}
		})
	}

	t.Run("wrong secret is refused by the receiver", func(t *testing.T) {
		c := Config{Kind: KindWebhook, Webhook: &WebhookConfig{URL: srv.URL + "/ok", Secret: "not-the-receivers-secret"}}
		s, err := New(c, WithRootCAs(srv.Certificate()), WithClock(func() time.Time { return clock }))
		if err != nil {
			t.Fatal(err)
		}
		err = s.Send(ctx, testMessage("w"))
		// A refused signature is about the receiver's configuration (a
		// secret being rotated), not this message: retried with backoff.
		if err == nil || !strings.Contains(err.Error(), "401 Unauthorized") || IsPermanent(err) {
			t.Errorf("error %v, want a 401 that is retried", err)
		}
	})

	t.Run("untrusted certificate", func(t *testing.T) {
		c := Config{Kind: KindWebhook, Webhook: &WebhookConfig{URL: srv.URL + "/ok", Secret: testSecret}}
		s, err := New(c)
		if err != nil {
			t.Fatal(err)
		}
		err = s.Send(ctx, testMessage("u"))
		if err == nil || !strings.HasPrefix(err.Error(), "webhook "+srv.URL+"/…: POST: ") || !strings.Contains(err.Error(), "certificate") || IsPermanent(err) {
			t.Errorf("error %v, want a certificate error", err)
		}
	})

	t.Run("ca_pem", func(t *testing.T) {
		pki := testdaemon.NewPKI(t)
		ts := httptest.NewUnstartedServer(recv)
		ts.TLS = pki.ServerTLS()
		ts.StartTLS()
		defer ts.Close()
		c := Config{Kind: KindWebhook, Webhook: &WebhookConfig{URL: ts.URL + "/ok", Secret: testSecret, CAPEM: string(pki.CAPEM)}}
		s, err := New(c, WithClock(func() time.Time { return clock }))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(ctx, testMessage("p")); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("plain http to loopback", func(t *testing.T) {
		ts := httptest.NewServer(recv)
		defer ts.Close()
		c := Config{Kind: KindWebhook, Webhook: &WebhookConfig{URL: ts.URL + "/ok", Secret: testSecret}}
		s, err := New(c, WithClock(func() time.Time { return clock }))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(ctx, testMessage("h")); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("connection refused", func(t *testing.T) {
		url := "https://127.0.0.1:" + strconv.Itoa(testdaemon.FreePort(t, "tcp")) + "/hook"
		s, err := New(Config{Kind: KindWebhook, Webhook: &WebhookConfig{URL: url, Secret: testSecret}})
		if err != nil {
			t.Fatal(err)
		}
		err = s.Send(ctx, testMessage("r"))
		if want := "webhook " + strings.TrimSuffix(url, "/hook") + "/…: POST: "; err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("error %v, want %q...connection refused", err, want)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		block := make(chan struct{})
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
		defer ts.Close()
		defer close(block)
		s, err := New(Config{Kind: KindWebhook, Webhook: &WebhookConfig{URL: ts.URL, Secret: testSecret}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		if err := s.Send(ctx, testMessage("t")); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("error %v, want DeadlineExceeded", err)
		}
	})
}
