package notify

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/yagura/yagura/internal/cef"
)

// SDID is the RFC 5424 structured data element Yagura writes:
// [yagura@32473 id="…" kind="…" type="…" severity="…"]. 32473 is the
// private enterprise number that RFC 5612 reserves for examples and
// documentation, so the name cannot clash with a registered vendor's.
const SDID = "yagura@32473"

// syslogSeverity maps Yagura's severity onto syslog's: critical→crit(2),
// error→err(3), warning→warning(4), info→info(6), anything else
// notice(5).
func syslogSeverity(s string) int {
	switch strings.ToLower(s) {
	case "critical":
		return 2
	case "error":
		return 3
	case "warning":
		return 4
	case "info":
		return 6
	}
	return 5
}

// syslogFormatter turns messages into syslog lines (without framing).
type syslogFormatter struct {
	format   string
	payload  string
	facility int
	hostname string
	appName  string
	procID   string
	version  string
	now      func() time.Time
}

func newSyslogFormatter(c SyslogConfig, o options) (*syslogFormatter, error) {
	fac, err := c.Facility.Code()
	if err != nil {
		return nil, err
	}
	h := c.Hostname
	if h == "" {
		h = hostname()
	}
	return &syslogFormatter{
		format:   c.format(),
		payload:  c.payload(),
		facility: fac,
		hostname: headerToken(h, 255),
		appName:  headerToken(c.appName(), 48),
		procID:   strconv.Itoa(os.Getpid()),
		version:  o.version,
		now:      o.now,
	}, nil
}

// Format returns one syslog message for m, without framing. The payload is
// UTF-8 without a BOM: RFC 5424 allows that (MSG-ANY), and CEF receivers
// expect "CEF:" right after the header.
func (f *syslogFormatter) Format(m Message) []byte {
	t := msgTime(m, f.now)
	m.Time = t
	pri := f.facility*8 + syslogSeverity(m.Severity)
	var b bytes.Buffer
	b.WriteByte('<')
	b.WriteString(strconv.Itoa(pri))
	b.WriteByte('>')
	if f.format == FormatRFC3164 {
		b.WriteString(t.In(time.Local).Format(time.Stamp))
		b.WriteByte(' ')
		b.WriteString(f.hostname)
		b.WriteByte(' ')
		b.WriteString(f.appName)
		b.WriteString("[" + f.procID + "]: ")
	} else {
		b.WriteString("1 ")
		b.WriteString(t.UTC().Format("2006-01-02T15:04:05.000000Z07:00"))
		b.WriteByte(' ')
		b.WriteString(f.hostname)
		b.WriteByte(' ')
		b.WriteString(f.appName)
		b.WriteByte(' ')
		b.WriteString(f.procID)
		b.WriteByte(' ')
		b.WriteString(headerToken(m.Type, 32))
		b.WriteString(" [" + SDID)
		for _, p := range [][2]string{{"id", m.ID}, {"kind", m.Kind}, {"type", m.Type}, {"severity", m.Severity}} {
			b.WriteString(" " + p[0] + `="`)
			b.WriteString(sdEscape(p[1]))
			b.WriteByte('"')
		}
		b.WriteString("] ")
	}
	if f.payload == PayloadJSON {
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(m)       // a Message always encodes
		b.Truncate(b.Len() - 1) // Encode's newline
	} else {
		b.WriteString(cef.Encode(CEFRecord(m, f.version)))
	}
	return b.Bytes()
}

// headerToken makes s an RFC 5424 header field: 1 to max printable ASCII
// characters (any other character becomes one '_'), or "-" when empty.
func headerToken(s string, max int) string {
	if s == "" {
		return "-"
	}
	b := make([]byte, 0, min(len(s), max))
	for _, r := range s {
		if len(b) == max {
			break
		}
		if r < 33 || r > 126 {
			r = '_'
		}
		b = append(b, byte(r))
	}
	return string(b)
}

// SDParamValue is what an SD-PARAM value comes out as after escaping and
// parsing: s as valid UTF-8, with control characters replaced by U+FFFD so
// that no value can break a line-framed stream.
func SDParamValue(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return utf8.RuneError
		}
		return r
	}, s)
}

// sdEscape escapes an SD-PARAM value: '"', '\' and ']' get a backslash
// (RFC 5424 6.3.3).
func sdEscape(s string) string {
	s = SDParamValue(s)
	if !strings.ContainsAny(s, `"\]`) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if r == '"' || r == '\\' || r == ']' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// syslogSender keeps one connection to the collector, made on first use and
// again after an error.
type syslogSender struct {
	cfg     SyslogConfig
	o       options
	f       *syslogFormatter
	addr    string
	channel string // "syslog tcp"
	tls     *tls.Config

	mu     sync.Mutex
	conn   net.Conn
	closed bool
}

func newSyslog(c SyslogConfig, o options) (*syslogSender, error) {
	f, err := newSyslogFormatter(c, o)
	if err != nil {
		return nil, err
	}
	s := &syslogSender{cfg: c, o: o, f: f, addr: c.address(), channel: "syslog " + c.Transport}
	if c.Transport == TransportTLS {
		host, _, _ := net.SplitHostPort(s.addr)
		s.tls, err = tlsConfig(cmpOr(c.ServerName, host), c.CAPEM, c.InsecureSkipVerify, o)
		if err != nil {
			return nil, &FieldError{Field: "syslog.ca_pem", Msg: err.Error()}
		}
		if c.InsecureSkipVerify {
			warnInsecure(o, s.addr)
		}
	}
	return s, nil
}

func (s *syslogSender) fail(op string, err error) error {
	return &Error{Channel: s.channel, Address: s.addr, Op: op, Err: netErr(err)}
}

// frame adds the stream framing for tcp and tls.
func (s *syslogSender) frame(msg []byte) []byte {
	switch {
	case s.cfg.Transport == TransportUDP:
		return msg
	case s.cfg.framing() == FramingLF:
		return append(msg, '\n')
	}
	return append([]byte(strconv.Itoa(len(msg))+" "), msg...)
}

// Send writes m to the collector. A connection the collector has closed is
// noticed before writing; a write that fails on a reused connection is tried
// once more on a new one (the receiver may then see the message twice, and
// drops it by its ID).
func (s *syslogSender) Send(ctx context.Context, m Message) error {
	if m.ID == "" {
		return &Error{Channel: s.channel, Address: s.addr, Op: "format", Err: errors.New("message has no ID"), Permanent: true}
	}
	frame := s.frame(s.f.Format(m))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return s.fail("send", err)
	}
	dl := deadline(ctx, time.Now())
	reused := s.conn != nil
	if reused && !s.alive() {
		s.o.logger.Debug("syslog connection closed by the collector; reconnecting", "address", s.addr)
		s.drop()
		reused = false
	}
	for {
		if s.conn == nil {
			if err := s.dial(ctx, dl); err != nil {
				return err
			}
		}
		err := s.write(ctx, frame, dl)
		if err == nil {
			return nil
		}
		s.drop()
		if !reused || ctx.Err() != nil || time.Now().After(dl) {
			return s.fail("write", err)
		}
		s.o.logger.Debug("syslog write failed on a reused connection; reconnecting", "address", s.addr, "err", err)
		reused = false
	}
}

func (s *syslogSender) dial(ctx context.Context, dl time.Time) error {
	ctx, cancel := context.WithDeadline(ctx, dl)
	defer cancel()
	network := "tcp"
	if s.cfg.Transport == TransportUDP {
		network = "udp"
	}
	d := net.Dialer{}
	c, err := d.DialContext(ctx, network, s.addr)
	if err != nil {
		return s.fail("dial", err)
	}
	if s.tls != nil {
		tc := tls.Client(c, s.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return s.fail("tls handshake", err)
		}
		c = tc
	}
	s.conn = c
	return nil
}

func (s *syslogSender) write(ctx context.Context, b []byte, dl time.Time) error {
	c := s.conn
	if err := c.SetWriteDeadline(dl); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { c.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	_, err := c.Write(b)
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// alive reports whether the collector has not closed the stream: a read
// that times out means it is still open (collectors never send; over TLS the
// read also consumes session tickets and sees a close_notify). The deadline
// is a millisecond ahead because Go fails a read whose deadline has already
// passed without looking at the socket.
func (s *syslogSender) alive() bool {
	if s.cfg.Transport == TransportUDP {
		return true
	}
	if err := s.conn.SetReadDeadline(time.Now().Add(time.Millisecond)); err != nil {
		return false
	}
	var b [1]byte
	_, err := s.conn.Read(b[:])
	_ = s.conn.SetReadDeadline(time.Time{})
	var ne net.Error
	return err == nil || errors.As(err, &ne) && ne.Timeout()
}

func (s *syslogSender) drop() {
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
}

// Close closes the connection; later Sends fail with ErrClosed.
func (s *syslogSender) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	return err
}
