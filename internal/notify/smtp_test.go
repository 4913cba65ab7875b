package notify

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"mime"
	"net"
	"net/mail"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/yagura/yagura/internal/testdaemon"
)

// smtpServer is an in-process SMTP server that accepts AUTH PLAIN (only
// after TLS) for one user and keeps what it receives.
type smtpServer struct {
	Addr string
	mu   sync.Mutex
	got  []received
}

type received struct {
	User     string
	TLS      bool
	From     string
	To       []string
	Data     []byte
	AuthMech string
}

func (s *smtpServer) Received() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.got...)
}

type smtpSession struct {
	srv  *smtpServer
	conn *smtp.Conn
	r    received
	user string
	pass string
}

func (s *smtpSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *smtpSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if username == "tempfail" {
			return &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure"}
		}
		if username != s.user || password != s.pass {
			return smtp.ErrAuthFailed
		}
		s.r.User, s.r.AuthMech = username, mech
		return nil
	}), nil
}

func (s *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.r.User == "" && s.user != "" {
		return smtp.ErrAuthRequired
	}
	_, s.r.TLS = s.conn.TLSConnectionState()
	s.r.From = from
	return nil
}

func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.r.To = append(s.r.To, to)
	return nil
}

func (s *smtpSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.r.Data = b
	s.srv.mu.Lock()
	s.srv.got = append(s.srv.got, s.r)
	s.srv.mu.Unlock()
	return nil
}

func (s *smtpSession) Reset()        { s.r = received{User: s.r.User, AuthMech: s.r.AuthMech} }
func (s *smtpSession) Logout() error { return nil }

// startSMTPServer listens on loopback with STARTTLS, or with implicit TLS
// when implicit is set, or without TLS when pki is nil.
func startSMTPServer(t *testing.T, pki *testdaemon.PKI, implicit bool, user, pass string) *smtpServer {
	t.Helper()
	srv := &smtpServer{}
	s := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &smtpSession{srv: srv, conn: c, user: user, pass: pass}, nil
	}))
	s.Domain = "localhost"
	s.ReadTimeout, s.WriteTimeout = 10*time.Second, 10*time.Second
	if pki != nil {
		s.TLSConfig = pki.ServerTLS()
	} else {
		s.AllowInsecureAuth = true // a plain server, to test that we refuse to go without TLS
	}
	s.EnableSMTPUTF8 = true
	var l net.Listener
	var err error
	if implicit {
		l, err = tls.Listen("tcp", "127.0.0.1:0", pki.ServerTLS())
	} else {
		l, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	srv.Addr = l.Addr().String()
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	return srv
}

func smtpConfig(addr, security, user, pass string, pki *testdaemon.PKI) Config {
	host, port, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(port)
	c := &SMTPConfig{
		Host: host, Port: n, Security: security, Username: user, Password: pass,
		From: "Yagura <yagura@example.jp>", To: []string{"ops@example.jp", "運用 <soc@example.jp>"},
	}
	if pki != nil {
		c.CAPEM = string(pki.CAPEM)
	}
	return Config{Kind: KindSMTP, SMTP: c}
}

func TestSMTPAuthTLS(t *testing.T) {
	pki := testdaemon.NewPKI(t)
	for _, tc := range []struct {
		name     string
		implicit bool
		security string
	}{
		{"starttls", false, SecurityStartTLS},
		{"implicit tls", true, SecurityTLS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startSMTPServer(t, pki, tc.implicit, "alice", "s3cret-パス")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()

			s, err := New(smtpConfig(srv.Addr, tc.security, "alice", "s3cret-パス", pki))
			if err != nil {
				t.Fatal(err)
			}
			m := testMessage("01JQ7Z-ID.42")
			m.Title = "【Yagura】コンピューターがオフラインです"
			if err := s.Send(ctx, m); err != nil {
				t.Fatalf("Send: %v", err)
			}
			got := srv.Received()
			if len(got) != 1 {
				t.Fatalf("received %d mails", len(got))
			}
			r := got[0]
			if r.User != "alice" || r.AuthMech != sasl.Plain || !r.TLS {
				t.Errorf("auth user %q mech %q tls %v, want alice, PLAIN, true", r.User, r.AuthMech, r.TLS)
			}
			if r.From != "yagura@example.jp" || strings.Join(r.To, ",") != "ops@example.jp,soc@example.jp" {
				t.Errorf("envelope from %q to %q", r.From, r.To)
			}
			msg, err := mail.ReadMessage(strings.NewReader(string(r.Data)))
			if err != nil {
				t.Fatal(err)
			}
			subject, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
			if err != nil || subject != m.Title {
				t.Errorf("subject %q (%v), want %q; raw %q", subject, err, m.Title, msg.Header.Get("Subject"))
			}
			if id := msg.Header.Get("Message-Id"); id != "<yagura.01JQ7Z-ID.42@example.jp>" {
				t.Errorf("Message-ID = %q", id)
			}
			for h, want := range map[string]string{"Auto-Submitted": "auto-generated", "X-Yagura-Kind": "alert", "X-Yagura-Severity": "critical", "Importance": "High"} {
				if got := msg.Header.Get(h); !strings.EqualFold(got, want) {
					t.Errorf("%s = %q, want %q", h, got, want)
				}
			}
		})
	}
}

func TestSMTPErrors(t *testing.T) {
	pki := testdaemon.NewPKI(t)
	srv := startSMTPServer(t, pki, false, "alice", "right")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	send := func(c Config) error {
		t.Helper()
		s, err := New(c)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		return s.Send(ctx, testMessage("err-1"))
	}

	t.Run("wrong password", func(t *testing.T) {
		err := send(smtpConfig(srv.Addr, SecurityStartTLS, "alice", "wrong", pki))
		if err == nil {
			t.Fatal("no error")
		}
		if !strings.HasPrefix(err.Error(), "smtp "+srv.Addr+": auth: ") || !strings.Contains(err.Error(), "535") {
			t.Errorf("error %q, want \"smtp %s: auth: ... 535 ...\"", err, srv.Addr)
		}
		if IsPermanent(err) {
			t.Error("a rejected password is final: it may be a rotation in progress, the channel should back off")
		}
		if strings.Contains(err.Error(), "wrong") {
			t.Error("the error shows the password")
		}
		if n := len(srv.Received()); n != 0 {
			t.Errorf("server received %d mails", n)
		}
	})
	t.Run("temporary auth failure", func(t *testing.T) {
		err := send(smtpConfig(srv.Addr, SecurityStartTLS, "tempfail", "x", pki))
		if err == nil || !strings.HasPrefix(err.Error(), "smtp "+srv.Addr+": auth: ") || !strings.Contains(err.Error(), "454") {
			t.Fatalf("error %v, want a 454 on auth", err)
		}
		if IsPermanent(err) {
			t.Error("a 454 should be retried")
		}
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		err := send(smtpConfig(srv.Addr, SecurityStartTLS, "alice", "right", nil))
		if err == nil || !strings.HasPrefix(err.Error(), "smtp "+srv.Addr+": tls: ") || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("error %v, want \"smtp %s: tls: ...certificate...\"", err, srv.Addr)
		}
		if IsPermanent(err) {
			t.Error("a TLS failure should be retried (the operator may fix the certificate)")
		}
	})
	t.Run("insecure skip verify", func(t *testing.T) {
		c := smtpConfig(srv.Addr, SecurityStartTLS, "alice", "right", nil)
		c.SMTP.InsecureSkipVerify = true
		if err := send(c); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(testdaemon.FreePort(t, "tcp")))
		err := send(smtpConfig(addr, SecurityStartTLS, "", "", pki))
		want := "smtp " + addr + ": dial: "
		if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("error %v, want %q... connection refused", err, want)
		}
	})
	t.Run("starttls required", func(t *testing.T) {
		plain := startSMTPServer(t, nil, false, "", "")
		err := send(smtpConfig(plain.Addr, SecurityStartTLS, "", "", pki))
		if err == nil || !strings.HasPrefix(err.Error(), "smtp "+plain.Addr+": tls: ") || !strings.Contains(err.Error(), "STARTTLS") {
			t.Errorf("error %v, want a refusal to go on without STARTTLS", err)
		}
		if n := len(plain.Received()); n != 0 {
			t.Errorf("server received %d mails", n)
		}
		// security "none" is an explicit choice, for a local relay.
		if err := send(smtpConfig(plain.Addr, SecurityNone, "", "", nil)); err != nil {
			t.Errorf("security none: %v", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(ctx)
		cancel()
		s, _ := New(smtpConfig(srv.Addr, SecurityStartTLS, "alice", "right", pki))
		if err := s.Send(ctx, testMessage("x")); !errors.Is(err, context.Canceled) {
			t.Errorf("error %v, want context.Canceled", err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		s, _ := New(smtpConfig(srv.Addr, SecurityStartTLS, "alice", "right", pki))
		s.Close()
		if err := s.Send(ctx, testMessage("x")); !errors.Is(err, ErrClosed) {
			t.Errorf("error %v, want ErrClosed", err)
		}
	})
}

func TestMessageID(t *testing.T) {
	for _, tc := range []struct{ id, want string }{
		{"01JQ7Z0000", "yagura.01JQ7Z0000@example.jp"},
		{"a.b-c_d+e=f", "yagura.a.b-c_d+e=f@example.jp"},
		{"has space", "yagura.h"},
		{"アラート", "yagura.h"},
		{"a..b", "yagura.h"},
		{"<x>", "yagura.h"},
	} {
		got := MessageID(tc.id, "example.jp")
		if !strings.HasPrefix(got, tc.want) || !strings.HasSuffix(got, "@example.jp") {
			t.Errorf("MessageID(%q) = %q, want prefix %q", tc.id, got, tc.want)
		}
		if _, err := mail.ParseAddress("<" + got + ">"); err != nil {
			t.Errorf("MessageID(%q) = %q is not an addr-spec: %v", tc.id, got, err)
		}
		if again := MessageID(tc.id, "example.jp"); again != got {
			t.Errorf("MessageID(%q) not stable: %q, %q", tc.id, got, again)
		}
	}
}

func TestMailBody(t *testing.T) {
	m := testMessage("id-1")
	body := mailBody(m, m.Time)
	want := m.Text + "\n\n-- \n" +
		"Severity:    critical\n" +
		"Type:        computer-offline\n" +
		"Time:        2026-04-01T09:30:15Z\n" +
		"Host:        経理-PC01\n" +
		"Computer ID: c-0042\n" +
		"action:      deny\n" +
		"dpt:         443\n" +
		"dst:         2001:db8::1\n" +
		"rule:        ルール=1 | \\block\n" +
		"src:         192.0.2.10\n" +
		"ID:          id-1\n"
	if body != want {
		t.Errorf("body:\n%s\nwant:\n%s", body, want)
	}
}
