package notify

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/mail"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	gomail "github.com/wneessen/go-mail"
)

// smtpSender opens one SMTP session per message: notifications are rare, and
// relays close idle sessions anyway.
type smtpSender struct {
	cfg    SMTPConfig
	o      options
	addr   string
	tls    *tls.Config
	domain string // of From, for Message-IDs
	closed atomic.Bool
}

func newSMTP(c SMTPConfig, o options) (*smtpSender, error) {
	s := &smtpSender{cfg: c, o: o, addr: net.JoinHostPort(c.Host, strconv.Itoa(c.port()))}
	if from, err := mail.ParseAddress(c.From); err == nil {
		if i := strings.LastIndexByte(from.Address, '@'); i >= 0 {
			s.domain = from.Address[i+1:]
		}
	}
	if s.domain == "" {
		s.domain = "yagura.invalid"
	}
	if c.security() != SecurityNone {
		var err error
		s.tls, err = tlsConfig(cmpOr(c.ServerName, c.Host), c.CAPEM, c.InsecureSkipVerify, o)
		if err != nil {
			return nil, &FieldError{Field: "smtp.ca_pem", Msg: err.Error()}
		}
		if c.InsecureSkipVerify {
			warnInsecure(o, s.addr)
		}
	}
	return s, nil
}

func (s *smtpSender) fail(op string, err error, permanent bool) error {
	return &Error{Channel: "smtp", Address: s.addr, Op: op, Err: netErr(err), Permanent: permanent}
}

// Send delivers m to every recipient in one SMTP transaction.
func (s *smtpSender) Send(ctx context.Context, m Message) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if m.ID == "" {
		return s.fail("compose", errors.New("message has no ID"), true)
	}
	if err := ctx.Err(); err != nil {
		return s.fail("send", err, false)
	}
	msg, err := s.compose(m)
	if err != nil {
		return s.fail("compose", err, true)
	}
	timeout := time.Until(deadline(ctx, time.Now()))
	if timeout <= 0 {
		return s.fail("send", context.DeadlineExceeded, false)
	}
	opts := []gomail.Option{
		gomail.WithPort(s.cfg.port()),
		gomail.WithTimeout(timeout),
		gomail.WithoutNoop(),
	}
	switch s.cfg.security() {
	case SecurityNone:
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	case SecurityStartTLS:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory), gomail.WithTLSConfig(s.tls))
	case SecurityTLS:
		opts = append(opts, gomail.WithSSL(), gomail.WithTLSConfig(s.tls))
	}
	if s.cfg.Username != "" {
		opts = append(opts, gomail.WithSMTPAuth(gomail.SMTPAuthAutoDiscover),
			gomail.WithUsername(s.cfg.Username), gomail.WithPassword(s.cfg.Password))
	}
	client, err := gomail.NewClient(s.cfg.Host, opts...)
	if err != nil {
		return s.fail("configure", err, true)
	}
	conn, err := client.DialToSMTPClientWithContext(ctx)
	if err != nil {
		// Nothing about opening the session is final: a refused password
		// may be a rotation in progress. The channel backs off and keeps
		// its backlog (an administrator sees the failing attempts).
		return s.fail(connectOp(err), err, false)
	}
	defer client.CloseWithSMTPClient(conn)
	if err := client.SendWithSMTPClient(conn, msg); err != nil {
		var se *gomail.SendError
		return s.fail("send", err, errors.As(err, &se) && !se.IsTemp())
	}
	return nil
}

// connectOp names the step of opening a session that failed.
func connectOp(err error) string {
	var op *net.OpError
	var cv *tls.CertificateVerificationError
	var rh tls.RecordHeaderError
	switch {
	case isAuthErr(err):
		return "auth"
	case errors.As(err, &op) && op.Op == "dial":
		return "dial"
	case errors.As(err, &cv), errors.As(err, &rh), strings.HasPrefix(err.Error(), "tls: "), strings.Contains(err.Error(), "STARTTLS"):
		return "tls"
	}
	return "connect"
}

// isAuthErr recognises go-mail's SMTP AUTH failures, which it reports as
// text only.
func isAuthErr(err error) bool {
	return strings.Contains(err.Error(), "SMTP AUTH") ||
		errors.Is(err, gomail.ErrNoSupportedAuthDiscovered) ||
		strings.Contains(err.Error(), "does not support SMTP AUTH")
}

// compose builds the mail: UTF-8, a base64 body, the subject RFC 2047
// encoded by go-mail, a Message-ID derived from m.ID (so that a retried
// message has the same one) and X-Yagura-* headers for mail rules.
func (s *smtpSender) compose(m Message) (*gomail.Msg, error) {
	t := msgTime(m, s.o.now)
	msg := gomail.NewMsg(gomail.WithCharset(gomail.CharsetUTF8), gomail.WithEncoding(gomail.EncodingB64), gomail.WithNoDefaultUserAgent())
	if err := msg.From(s.cfg.From); err != nil {
		return nil, fmt.Errorf("from %q: %w", s.cfg.From, err)
	}
	if err := msg.To(s.cfg.To...); err != nil {
		return nil, fmt.Errorf("to: %w", err)
	}
	msg.Subject(oneLine(m.Title))
	msg.SetMessageIDWithValue(MessageID(m.ID, s.domain))
	msg.SetDateWithValue(t)
	msg.SetGenHeader(gomail.HeaderUserAgent, "Yagura/"+s.o.version)
	msg.SetGenHeader("Auto-Submitted", "auto-generated") // RFC 3834: no vacation replies
	msg.SetGenHeader("X-Yagura-ID", oneLine(m.ID))
	msg.SetGenHeader("X-Yagura-Kind", oneLine(m.Kind))
	msg.SetGenHeader("X-Yagura-Type", oneLine(m.Type))
	msg.SetGenHeader("X-Yagura-Severity", oneLine(m.Severity))
	switch strings.ToLower(m.Severity) {
	case "critical", "error":
		msg.SetImportance(gomail.ImportanceHigh)
	}
	msg.SetBodyString(gomail.TypeTextPlain, mailBody(m, t))
	return msg, nil
}

// MessageID is the Message-ID (without angle brackets) of the mail for a
// message ID: "yagura.<id>@<domain of From>". An ID that is not safe in a
// Message-ID (anything but letters, digits and "-_.+=") is replaced by the
// first 128 bits of its SHA-256, in hex, after "h".
func MessageID(id, domain string) string {
	safe := id != "" && len(id) <= 128 && strings.IndexFunc(id, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_+=", r) || r == '.')
	}) < 0 && !strings.Contains(id, "..") && !strings.HasSuffix(id, ".")
	if !safe {
		sum := sha256.Sum256([]byte(id))
		id = "h" + hex.EncodeToString(sum[:16])
	}
	return "yagura." + id + "@" + domain
}

// mailBody is the text followed by a small table of the message's facts and
// fields.
func mailBody(m Message, t time.Time) string {
	var b strings.Builder
	text := strings.ReplaceAll(strings.ToValidUTF8(m.Text, "\uFFFD"), "\r\n", "\n")
	b.WriteString(strings.TrimRight(text, "\n"))
	b.WriteString("\n\n-- \n")
	rows := [][2]string{
		{"Severity", m.Severity},
		{"Type", m.Type},
		{"Time", t.Format(time.RFC3339)},
		{"Host", m.Hostname},
		{"Computer ID", m.ComputerID},
	}
	for _, k := range slices.Sorted(maps.Keys(m.Fields)) {
		rows = append(rows, [2]string{k, m.Fields[k]})
	}
	rows = append(rows, [2]string{"ID", m.ID})
	width := 0
	for _, r := range rows {
		if r[1] != "" {
			width = max(width, len(oneLine(r[0])))
		}
	}
	for _, r := range rows {
		if r[1] == "" {
			continue
		}
		k := oneLine(r[0])
		b.WriteString(k + ":" + strings.Repeat(" ", width-len(k)+1) + oneLine(r[1]) + "\n")
	}
	return b.String()
}

// oneLine makes s valid UTF-8 on a single line.
func oneLine(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' }), " ")
}

// Close makes later Sends fail; there is no connection to close.
func (s *smtpSender) Close() error {
	s.closed.Store(true)
	return nil
}
