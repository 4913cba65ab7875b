package notify

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func readConfig(t testing.TB, path string) Config {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

// TestConfigFiles validates testdata/config: each *.good.json must pass, each
// *.bad.json must fail with exactly the text of its *.bad.err.
func TestConfigFiles(t *testing.T) {
	good, _ := filepath.Glob("testdata/config/*.good.json")
	bad, _ := filepath.Glob("testdata/config/*.bad.json")
	if len(good) == 0 || len(bad) == 0 {
		t.Fatal("no test configs")
	}
	for _, path := range good {
		t.Run(filepath.Base(path), func(t *testing.T) {
			c := readConfig(t, path)
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			s, err := New(c)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			s.Close()
		})
	}
	for _, path := range bad {
		t.Run(filepath.Base(path), func(t *testing.T) {
			want, err := os.ReadFile(strings.TrimSuffix(path, ".json") + ".err")
			if err != nil {
				t.Fatal(err)
			}
			c := readConfig(t, path)
			err = c.Validate()
			if err == nil {
				t.Fatal("Validate passed")
			}
			if got := err.Error(); got != strings.TrimSpace(string(want)) {
				t.Errorf("Validate:\n%s\nwant:\n%s", got, want)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field == "" {
				t.Errorf("error is not a *FieldError: %#v", err)
			}
			if _, err := New(c); err == nil {
				t.Error("New accepted it")
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	for sec, port := range map[string]int{"": 587, SecurityStartTLS: 587, SecurityTLS: 465, SecurityNone: 25} {
		if got := (SMTPConfig{Security: sec}).port(); got != port {
			t.Errorf("security %q: port %d, want %d", sec, got, port)
		}
	}
	for _, tc := range []struct{ addr, transport, want string }{
		{"siem", TransportUDP, "siem:514"},
		{"siem", TransportTLS, "siem:6514"},
		{"siem:1514", TransportTCP, "siem:1514"},
		{"2001:db8::1", TransportTCP, "[2001:db8::1]:514"},
		{"[2001:db8::1]", TransportTLS, "[2001:db8::1]:6514"},
	} {
		if got := (SyslogConfig{Address: tc.addr, Transport: tc.transport}).address(); got != tc.want {
			t.Errorf("address(%q, %s) = %q, want %q", tc.addr, tc.transport, got, tc.want)
		}
	}
	for f, want := range map[Facility]int{"": 16, "local0": 16, "LOCAL7": 23, "auth": 4, "authpriv": 10, "security": 13, "4": 4, "0": 0} {
		if got, err := f.Code(); err != nil || got != want {
			t.Errorf("Facility(%q).Code() = %d, %v; want %d", f, got, err, want)
		}
	}
}

func TestJSONForms(t *testing.T) {
	var s SyslogConfig
	if err := json.Unmarshal([]byte(`{"facility": 20}`), &s); err != nil || s.Facility != "20" {
		t.Errorf("number facility: %q, %v", s.Facility, err)
	}
	if err := json.Unmarshal([]byte(`{"facility": true}`), &s); err == nil {
		t.Error("bool facility accepted")
	}
	var w WebhookConfig
	for in, want := range map[string]time.Duration{`"1m30s"`: 90 * time.Second, `5`: 5 * time.Second, `0.5`: 500 * time.Millisecond} {
		if err := json.Unmarshal([]byte(`{"timeout":`+in+`}`), &w); err != nil || time.Duration(w.Timeout) != want {
			t.Errorf("timeout %s: %v, %v; want %v", in, time.Duration(w.Timeout), err, want)
		}
	}
	for _, in := range []string{`"soon"`, `[]`, `1e300`} {
		if err := json.Unmarshal([]byte(`{"timeout":`+in+`}`), &w); err == nil {
			t.Errorf("timeout %s accepted", in)
		}
	}
	b, _ := json.Marshal(WebhookConfig{Timeout: Duration(15 * time.Second)})
	if !strings.Contains(string(b), `"timeout":"15s"`) {
		t.Errorf("marshal: %s", b)
	}
}

func TestRedacted(t *testing.T) {
	smtp := readConfig(t, "testdata/config/smtp-starttls.good.json")
	r := smtp.Redacted()
	if r.SMTP.Password != "" || !r.SMTP.PasswordSet {
		t.Errorf("redacted smtp: %+v", r.SMTP)
	}
	if smtp.SMTP.Password != "app-password" {
		t.Error("Redacted changed the original")
	}
	hook := readConfig(t, "testdata/config/webhook.good.json")
	r = hook.Redacted()
	if r.Webhook.Secret != "" || !r.Webhook.SecretSet || r.Webhook.Headers["Authorization"] != "" || r.Webhook.Headers["X-Tenant"] != "経理" {
		t.Errorf("redacted webhook: %+v", r.Webhook)
	}
	if hook.Webhook.Headers["Authorization"] != "Bearer abc" {
		t.Error("Redacted changed the original's headers")
	}
	b, _ := json.Marshal(r)
	for _, secret := range []string{"0123456789abcdef0123", "Bearer abc"} {
		if strings.Contains(string(b), secret) {
			t.Errorf("redacted JSON shows %q: %s", secret, b)
		}
	}
}

func TestWithSecretsFrom(t *testing.T) {
	old := readConfig(t, "testdata/config/smtp-starttls.good.json")
	edit := func(f func(*SMTPConfig)) Config {
		c := old.Redacted()
		f(c.SMTP)
		return c.WithSecretsFrom(old)
	}
	if c := edit(func(*SMTPConfig) {}); c.SMTP.Password != "app-password" || c.SMTP.PasswordSet || c.Validate() != nil {
		t.Errorf("unchanged: %+v, %v", c.SMTP, c.Validate())
	}
	if c := edit(func(s *SMTPConfig) { s.To = []string{"x@example.jp"} }); c.SMTP.Password != "app-password" {
		t.Error("a changed recipient dropped the password")
	}
	if c := edit(func(s *SMTPConfig) { s.Password = "new" }); c.SMTP.Password != "new" {
		t.Error("a new password was not kept")
	}
	// The stored password is not handed to a server the editor chose.
	if c := edit(func(s *SMTPConfig) { s.Host = "smtp.attacker.example" }); c.SMTP.Password != "" {
		t.Error("the password followed a host change")
	} else if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "smtp.password: required") {
		t.Errorf("host change: Validate = %v", err)
	}
	if c := edit(func(s *SMTPConfig) { s.Username = "other" }); c.SMTP.Password != "" {
		t.Error("the password followed a username change")
	}
	if c := edit(func(s *SMTPConfig) { s.Host = "SMTP.example.jp" }); c.SMTP.Password != "app-password" {
		t.Error("a host differing in case only dropped the password")
	}

	hook := readConfig(t, "testdata/config/webhook.good.json")
	c := hook.Redacted().WithSecretsFrom(hook)
	if diff := cmp.Diff(c, hook); diff != "" {
		t.Errorf("webhook round trip (-got +want):\n%s", diff)
	}
	moved := hook.Redacted()
	moved.Webhook.URL = "https://collector.attacker.example/hook"
	c = moved.WithSecretsFrom(hook)
	if c.Webhook.Secret != hook.Webhook.Secret {
		t.Error("the HMAC secret (which never leaves the manager) was dropped on a URL change")
	}
	if v := c.Webhook.Headers["Authorization"]; v != "" {
		t.Errorf("the Authorization header followed a host change: %q", v)
	} else if err := c.Validate(); err == nil || !strings.Contains(err.Error(), `webhook.headers["Authorization"]: empty value`) {
		t.Errorf("Validate = %v", err)
	}
	// A different kind takes nothing.
	if c := (Config{Kind: KindSMTP, SMTP: &SMTPConfig{Username: "u"}}).WithSecretsFrom(hook); c.SMTP.Password != "" {
		t.Error("secrets crossed kinds")
	}
}
