// Package notify provides the senders that deliver alerts and events to
// operators: mail (SMTP), syslog (RFC 5424 or 3164 over UDP, TCP or TLS, with
// a CEF or JSON payload) and signed HTTPS webhooks. It also holds the stored
// form of a channel's settings (Config) with its validation and secret
// handling. The outbox/dispatcher and the API import it; it imports nothing
// of Yagura's but internal/cef.
//
// Delivery is at least once: a Message keeps its ID across retries, and every
// channel carries it (Message-ID and X-Yagura-ID in mail, the structured data
// and CEF externalId in syslog, X-Yagura-Delivery in webhooks) so that
// receivers can drop duplicates.
package notify

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"
)

// Message is one notification. ID is unique per notification and stable
// across retries: receivers dedup by it.
type Message struct {
	ID         string            `json:"id"`
	Kind       string            `json:"kind"` // "alert", "event" or "test"
	Time       time.Time         `json:"time"`
	Type       string            `json:"type"`     // alert or event type, e.g. "computer-offline", "firewall"
	Severity   string            `json:"severity"` // critical, error, warning, info
	Title      string            `json:"title"`    // one line; mail subject; may be Japanese
	Text       string            `json:"text"`     // body; may be Japanese, multi-line
	ComputerID string            `json:"computer_id,omitempty"`
	Hostname   string            `json:"hostname,omitempty"`
	Fields     map[string]string `json:"fields,omitempty"` // extra, e.g. src, dst, dpt, rule, action
}

// Sender delivers messages over one channel.
//
// Send is safe for concurrent use; it returns when the receiver has accepted
// the message (the SMTP server answered DATA, the syslog bytes were written,
// the webhook answered 2xx) or with an error naming the channel, its address
// and what failed. The context bounds the whole attempt. After Close, Send
// fails with ErrClosed.
type Sender interface {
	Send(ctx context.Context, m Message) error
	Close() error
}

// ErrClosed is returned by Send after Close.
var ErrClosed = errors.New("notify: sender is closed")

// defaultTimeout bounds one delivery attempt when the context has no
// deadline, so that a stuck receiver cannot hold a dispatcher worker forever.
const defaultTimeout = 30 * time.Second

// Option adjusts New.
type Option func(*options)

type options struct {
	logger  *slog.Logger
	roots   []*x509.Certificate
	now     func() time.Time
	version string
}

// WithLogger sets the logger; the default discards. Senders log with
// component=notify and never log secrets.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithRootCAs adds certificates to the system roots (and to the channel's
// ca_pem) that TLS connections trust. Tests use it for their own CA.
func WithRootCAs(certs ...*x509.Certificate) Option {
	return func(o *options) { o.roots = append(o.roots, certs...) }
}

// WithClock sets the clock for webhook timestamps and for messages whose
// Time is zero.
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// WithProductVersion sets the Device Version of CEF records and the
// User-Agent of webhooks; the default is "dev".
func WithProductVersion(v string) Option {
	return func(o *options) { o.version = v }
}

// New validates c and returns its sender. It does no I/O: connections are
// made by Send.
func New(c Config, opts ...Option) (Sender, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	o := options{now: time.Now, version: "dev"}
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	o.logger = o.logger.With("component", "notify", "channel", c.Kind)
	switch c.Kind {
	case KindSMTP:
		return newSMTP(*c.SMTP, o)
	case KindSyslog:
		return newSyslog(*c.Syslog, o)
	case KindWebhook:
		return newWebhook(*c.Webhook, o)
	}
	return nil, fmt.Errorf("notify: unknown kind %q", c.Kind) // unreachable after Validate
}

// Error is what Send returns: which channel at which address failed doing
// what. Its text reads "syslog tcp 127.0.0.1:6514: dial: connection refused".
type Error struct {
	Channel string // "smtp", "syslog tcp", "webhook", ...
	Address string // host:port or URL
	Op      string // "dial", "write", "auth", "POST", ...
	Err     error
	// Permanent is set when retrying the same message cannot help: the
	// receiver refused it for what it is (a 4xx webhook answer, a 5xx SMTP
	// reply, a bad message), not for a passing fault.
	Permanent bool
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s %s: %s: %v", e.Channel, e.Address, e.Op, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// IsPermanent reports whether err says that retrying the same message over
// the same channel cannot succeed. A dispatcher can stop retrying then.
func IsPermanent(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Permanent
}

// netErr drops the parts of a *net.OpError that Error already says (the
// operation, network and address), keeping the cause: "connect: connection
// refused" rather than "dial tcp 127.0.0.1:6514: connect: connection refused".
// errors.Is and errors.As still see the whole chain.
func netErr(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return &shortErr{text: op.Err.Error(), err: err}
	}
	return err
}

type shortErr struct {
	text string
	err  error
}

func (e *shortErr) Error() string { return e.text }
func (e *shortErr) Unwrap() error { return e.err }

// tlsConfig builds a client TLS configuration: the system roots plus the
// channel's ca_pem and any roots from WithRootCAs, TLS 1.2 or newer.
func tlsConfig(serverName, caPEM string, insecure bool, o options) (*tls.Config, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if caPEM != "" {
		if !pool.AppendCertsFromPEM([]byte(caPEM)) {
			return nil, errors.New("ca_pem holds no PEM certificate")
		}
	}
	for _, c := range o.roots {
		pool.AddCert(c)
	}
	return &tls.Config{
		ServerName:         serverName,
		RootCAs:            pool,
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: insecure, //nolint:gosec // an operator's explicit, documented and logged choice
	}, nil
}

// warnInsecure logs, once per sender, that certificate checks are off.
func warnInsecure(o options, addr string) {
	o.logger.Warn("TLS certificate verification is disabled for this channel; anyone on the path can read and change notifications", "address", addr)
}

// deadline is the context's deadline, or defaultTimeout from now.
func deadline(ctx context.Context, now time.Time) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return now.Add(defaultTimeout)
}

// hostname is the local host name, or "-" (the RFC 5424 nil value).
func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "-"
	}
	return h
}
