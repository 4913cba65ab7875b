package testdaemon

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/smtp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// fakeTB records what RequireFile does with a test.
type fakeTB struct {
	testing.TB
	fatal, skip string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (f *fakeTB) Skipf(format string, args ...any) {
	f.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// TestRequireFile: a missing daemon skips a local run with an install hint
// and fails under CI=true.
func TestRequireFile(t *testing.T) {
	for _, ci := range []string{"", "true"} {
		t.Run("CI="+ci, func(t *testing.T) {
			t.Setenv("CI", ci)
			f := &fakeTB{TB: t}
			done := make(chan struct{})
			go func() {
				defer close(done)
				RequireFile(f, "rsyslog", "/nonexistent/rsyslogd")
			}()
			<-done
			got := f.skip
			if ci == "true" {
				got = f.fatal
			}
			if !strings.Contains(got, "apt-get install rsyslog") {
				t.Errorf("skip %q, fatal %q", f.skip, f.fatal)
			}
		})
	}
	RequireFile(t, "coreutils", "/nonexistent", "/bin/sh") // any one will do
}

// TestPKI: the server certificate verifies against the CA for every name
// it is meant for, and a TLS client trusting the CA connects.
func TestPKI(t *testing.T) {
	p := NewPKI(t)
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(p.CAPEM) {
		t.Fatal("CAPEM holds no certificate")
	}
	leaf, err := x509.ParseCertificate(p.Cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"127.0.0.1", "::1", "localhost"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", p.ServerTLS())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	c, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("TLS client trusting the CA: %v", err)
	}
	c.Close()
}

// TestRsyslog: a message on each input reaches Out as received (without
// the octet count), also after a restart.
func TestRsyslog(t *testing.T) {
	RequireRoot(t)
	r := StartRsyslog(t)
	if got := r.Lines(t); got != nil {
		t.Fatalf("lines before any message: %q", got)
	}
	send := func(network, addr, msg string, cfg *tls.Config) {
		t.Helper()
		var c net.Conn
		var err error
		if cfg != nil {
			c, err = tls.Dial(network, addr, cfg)
		} else {
			c, err = net.Dial(network, addr)
		}
		if err != nil {
			t.Fatalf("dial %s %s: %v", network, addr, err)
		}
		defer c.Close()
		if network == "tcp" {
			msg = fmt.Sprintf("%d %s", len(msg), msg)
		}
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatalf("write to %s: %v", addr, err)
		}
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(r.PKI.CAPEM)
	tlsCfg := &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	msg := func(input, phase string) string {
		return "<134>1 2026-04-01T09:30:15Z host app - - - " + input + " " + phase + " テスト"
	}
	for _, phase := range []string{"before", "after"} {
		if phase == "after" {
			r.Stop()
			r.Start(t)
		}
		send("tcp", r.TCP, msg("tcp", phase), nil)
		send("tcp", r.TLS, msg("tls", phase), tlsCfg)
		want := []string{msg("tcp", phase), msg("tls", phase), msg("udp", phase)}
		// UDP may lose a datagram while imudp starts: resend until seen.
		WaitFor(t, 10*time.Second, "a message on each input "+phase+" the restart", func() bool {
			send("udp", r.UDP, msg("udp", phase), nil)
			time.Sleep(50 * time.Millisecond)
			lines := strings.Join(r.Lines(t), "\n")
			for _, w := range want {
				if !strings.Contains(lines, w) {
					return false
				}
			}
			return true
		})
	}
	for _, l := range r.Lines(t) {
		if !strings.HasPrefix(l, "<134>1 ") {
			t.Errorf("line %q is not a message as sent", l)
		}
	}
}

// TestPostfix: mail to the mailbox is delivered to its Maildir; mail to
// anyone else is refused.
func TestPostfix(t *testing.T) {
	p := StartPostfix(t)
	to := Mailbox + "@" + MailDomain
	body := "Subject: test\r\n\r\nhello\r\n"
	if err := smtp.SendMail(p.Addr, nil, "yagura@"+MailDomain, []string{to}, []byte(body)); err != nil {
		t.Fatal(err)
	}
	var mails []string
	WaitFor(t, 20*time.Second, "delivery to "+to, func() bool {
		mails = p.Delivered(t, Mailbox)
		return len(mails) == 1
	})
	if !strings.Contains(mails[0], "Subject: test") || !strings.Contains(mails[0], "hello") {
		t.Errorf("delivered mail:\n%s", mails[0])
	}
	err := smtp.SendMail(p.Addr, nil, "yagura@"+MailDomain, []string{"nobody@" + MailDomain}, []byte(body))
	if err == nil || !strings.Contains(err.Error(), "550") {
		t.Errorf("mail to an unknown mailbox: %v, want a 550 refusal", err)
	}
}
