package notify

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Channel kinds.
const (
	KindSMTP    = "smtp"
	KindSyslog  = "syslog"
	KindWebhook = "webhook"
)

// Config is one channel's settings as stored (JSON) and edited in the API.
// Exactly the member named by Kind is set.
type Config struct {
	Kind    string         `json:"kind"` // "smtp", "syslog", "webhook"
	SMTP    *SMTPConfig    `json:"smtp,omitempty"`
	Syslog  *SyslogConfig  `json:"syslog,omitempty"`
	Webhook *WebhookConfig `json:"webhook,omitempty"`
}

// SMTPConfig sends mail through an SMTP server (a relay or a submission
// service).
type SMTPConfig struct {
	Host string `json:"host"`
	// Port defaults by Security: 25 for none, 587 for starttls, 465 for tls.
	Port int `json:"port,omitempty"`
	// Security is "starttls" (the default: STARTTLS is required, not
	// opportunistic), "tls" (implicit TLS, "SMTPS") or "none".
	Security string `json:"security,omitempty"`
	// Username turns on SMTP AUTH. The mechanism is the best one the server
	// offers (CRAM-MD5, PLAIN, LOGIN or SCRAM). Auth needs TLS: with security
	// "none" a username is refused, since the password would cross the
	// network in clear.
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	// PasswordSet is output only (Redacted): the password is stored.
	PasswordSet bool     `json:"password_set,omitempty"`
	From        string   `json:"from"`
	To          []string `json:"to"`
	// CAPEM holds extra PEM certificates to trust besides the system roots,
	// for a relay with a private CA.
	CAPEM string `json:"ca_pem,omitempty"`
	// ServerName is the name checked in the server's certificate; default
	// Host.
	ServerName string `json:"server_name,omitempty"`
	// InsecureSkipVerify turns off certificate checks. Discouraged: anyone on
	// the path can then read the mail and the password. Prefer CAPEM. It is
	// logged as a warning when the sender is made.
	InsecureSkipVerify bool `json:"insecure_skip_verify,omitempty"`
}

// SMTP security modes.
const (
	SecurityNone     = "none"
	SecurityStartTLS = "starttls"
	SecurityTLS      = "tls"
)

func (c SMTPConfig) security() string {
	if c.Security == "" {
		return SecurityStartTLS
	}
	return c.Security
}

func (c SMTPConfig) port() int {
	if c.Port != 0 {
		return c.Port
	}
	switch c.security() {
	case SecurityNone:
		return 25
	case SecurityTLS:
		return 465
	}
	return 587
}

// SyslogConfig sends syslog messages to a collector or SIEM.
type SyslogConfig struct {
	// Address is "host:port". Without a port: 514 for udp and tcp, 6514 for
	// tls.
	Address string `json:"address"`
	// Transport is "udp", "tcp" or "tls" (RFC 5425). Required.
	Transport string `json:"transport"`
	// Format is "rfc5424" (default) or "rfc3164" (BSD syslog, for old
	// receivers).
	Format string `json:"format,omitempty"`
	// Payload is the message text: "cef" (default) or "json".
	Payload string `json:"payload,omitempty"`
	// Facility is a name (kern, user, mail, daemon, auth, syslog, lpr, news,
	// uucp, cron, authpriv, ftp, ntp, security, console, clock, local0 to
	// local7) or its number 0-23; default local0, which SIEMs commonly
	// assign to one appliance.
	Facility Facility `json:"facility,omitempty"`
	// AppName is the RFC 5424 APP-NAME and RFC 3164 TAG; default "yagura".
	AppName string `json:"app_name,omitempty"`
	// Hostname is the HOSTNAME field; default the manager's host name.
	Hostname string `json:"hostname,omitempty"`
	// Framing applies to tcp and tls: "octet-counting" (default; RFC 6587
	// 3.4.1 and RFC 5425) or "lf" (each message ends with a line feed; for
	// receivers that do not count octets).
	Framing string `json:"framing,omitempty"`
	// CAPEM, ServerName and InsecureSkipVerify apply to tls, as for SMTP.
	CAPEM              string `json:"ca_pem,omitempty"`
	ServerName         string `json:"server_name,omitempty"`
	InsecureSkipVerify bool   `json:"insecure_skip_verify,omitempty"`
}

// Syslog settings.
const (
	TransportUDP = "udp"
	TransportTCP = "tcp"
	TransportTLS = "tls"

	FormatRFC5424 = "rfc5424"
	FormatRFC3164 = "rfc3164"

	PayloadCEF  = "cef"
	PayloadJSON = "json"

	FramingOctetCounting = "octet-counting"
	FramingLF            = "lf"
)

func (c SyslogConfig) format() string  { return cmpOr(c.Format, FormatRFC5424) }
func (c SyslogConfig) payload() string { return cmpOr(c.Payload, PayloadCEF) }
func (c SyslogConfig) framing() string { return cmpOr(c.Framing, FramingOctetCounting) }
func (c SyslogConfig) appName() string { return cmpOr(c.AppName, "yagura") }

// address is Address with the default port added when it has none.
func (c SyslogConfig) address() string {
	if _, _, err := net.SplitHostPort(c.Address); err == nil {
		return c.Address
	}
	port := "514"
	if c.Transport == TransportTLS {
		port = "6514"
	}
	return net.JoinHostPort(strings.Trim(c.Address, "[]"), port)
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Facility is a syslog facility, by name or number. In JSON it may be a
// string ("local0", "16") or a number (16).
type Facility string

// UnmarshalJSON accepts a string or a number.
func (f *Facility) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*f = Facility(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("facility must be a name such as \"local0\" or a number 0-23, got %s", b)
	}
	*f = Facility(n.String())
	return nil
}

var facilities = []string{
	"kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news",
	"uucp", "cron", "authpriv", "ftp", "ntp", "security", "console", "clock",
	"local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
}

// Code is the facility's number; "" means local0 (16).
func (f Facility) Code() (int, error) {
	if f == "" {
		return 16, nil
	}
	s := strings.ToLower(strings.TrimSpace(string(f)))
	if n, err := strconv.Atoi(s); err == nil {
		if n < 0 || n > 23 {
			return 0, fmt.Errorf("%d is out of range 0-23", n)
		}
		return n, nil
	}
	if i := slices.Index(facilities, s); i >= 0 {
		return i, nil
	}
	return 0, fmt.Errorf("unknown facility %q; use local0-local7, auth, authpriv, daemon, user, security or a number 0-23", string(f))
}

// WebhookConfig posts each message as JSON to a URL.
type WebhookConfig struct {
	// URL must be https, except that http is allowed to a loopback address
	// (127.0.0.0/8, ::1 or "localhost"), for a receiver on the same host.
	URL string `json:"url"`
	// Secret is the HMAC-SHA256 key of X-Yagura-Signature; required, at
	// least 16 bytes. Receivers check it with VerifyWebhook or the recipe in
	// docs/notifications.md.
	Secret string `json:"secret,omitempty"`
	// SecretSet is output only (Redacted): the secret is stored.
	SecretSet bool `json:"secret_set,omitempty"`
	// Headers are added to each request, e.g. an Authorization token.
	// Headers that would change how the request is framed or routed (Host,
	// Content-Length, Transfer-Encoding, ...), Content-Type and the
	// X-Yagura-* headers are refused. Values of credential-like headers
	// (Authorization, Cookie, names with token, key, secret, auth, password,
	// session or signature) are treated as secrets: see Redacted.
	Headers            map[string]string `json:"headers,omitempty"`
	CAPEM              string            `json:"ca_pem,omitempty"`
	InsecureSkipVerify bool              `json:"insecure_skip_verify,omitempty"`
	// Timeout bounds one request; default 10s, at most 2m. In JSON a
	// duration string ("10s") or a number of seconds.
	Timeout Duration `json:"timeout,omitempty"`
}

const (
	defaultWebhookTimeout = 10 * time.Second
	maxWebhookTimeout     = 2 * time.Minute
	minSecretLen          = 16
	maxHeaders            = 32
)

// Duration is a time.Duration that reads and writes JSON as "10s"; a bare
// number means seconds.
type Duration time.Duration

// MarshalJSON writes the duration as a string such as "10s".
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON accepts "10s", "1m30s" or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: use a form such as \"10s\" or \"1m\"", s)
		}
		*d = Duration(v)
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("duration must be a string such as \"10s\" or a number of seconds, got %s", b)
	}
	if f > float64(1<<62)/float64(time.Second) || f < -float64(1<<62)/float64(time.Second) {
		return fmt.Errorf("duration %v seconds is out of range", f)
	}
	*d = Duration(f * float64(time.Second))
	return nil
}

func (c WebhookConfig) timeout() time.Duration {
	if c.Timeout == 0 {
		return defaultWebhookTimeout
	}
	return time.Duration(c.Timeout)
}

// FieldError names the setting that is wrong, by its JSON path
// ("smtp.port"), and says how to fix it.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

type fieldErrors []error

func (fe *fieldErrors) add(field, format string, args ...any) {
	*fe = append(*fe, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
}

// Validate checks c and returns every problem found, each a *FieldError
// (joined with errors.Join), or nil.
func (c Config) Validate() error {
	var fe fieldErrors
	set := map[string]bool{KindSMTP: c.SMTP != nil, KindSyslog: c.Syslog != nil, KindWebhook: c.Webhook != nil}
	switch c.Kind {
	case KindSMTP, KindSyslog, KindWebhook:
		if !set[c.Kind] {
			fe.add(c.Kind, "required when kind is %q", c.Kind)
		}
	case "":
		var given []string
		for _, k := range []string{KindSMTP, KindSyslog, KindWebhook} {
			if set[k] {
				given = append(given, k)
			}
		}
		if len(given) == 1 {
			fe.add("kind", "required; set it to %q to use the %s settings given", given[0], given[0])
		} else {
			fe.add("kind", `required; use "smtp", "syslog" or "webhook"`)
		}
		return errors.Join(fe...)
	default:
		fe.add("kind", `unknown kind %q; use "smtp", "syslog" or "webhook"`, c.Kind)
	}
	for _, k := range []string{KindSMTP, KindSyslog, KindWebhook} {
		if set[k] && k != c.Kind {
			fe.add(k, "set, but kind is %q; remove it or set kind to %q", c.Kind, k)
		}
	}
	if c.Kind == KindSMTP && c.SMTP != nil {
		c.SMTP.validate(&fe)
	}
	if c.Kind == KindSyslog && c.Syslog != nil {
		c.Syslog.validate(&fe)
	}
	if c.Kind == KindWebhook && c.Webhook != nil {
		c.Webhook.validate(&fe)
	}
	return errors.Join(fe...)
}

func (c *SMTPConfig) validate(fe *fieldErrors) {
	switch {
	case c.Host == "":
		fe.add("smtp.host", "required: the SMTP server's name or IP address")
	case strings.Contains(c.Host, "://"):
		fe.add("smtp.host", "%q: give only the host name, without a scheme", c.Host)
	case !validHost(c.Host):
		if _, port, err := net.SplitHostPort(c.Host); err == nil {
			fe.add("smtp.host", "%q: give the port in smtp.port (%s), not in the host", c.Host, port)
		} else {
			fe.add("smtp.host", "%q is not a host name or IP address", c.Host)
		}
	}
	if c.Port < 0 || c.Port > 65535 {
		fe.add("smtp.port", "%d is out of range; use 1-65535, or 0 for the default of the security mode (25, 587 or 465)", c.Port)
	}
	switch c.Security {
	case "", SecurityNone, SecurityStartTLS, SecurityTLS:
	default:
		fe.add("smtp.security", `unknown mode %q; use "starttls" (port 587), "tls" (port 465) or "none" (port 25)`, c.Security)
	}
	switch {
	case c.Username == "" && c.Password != "":
		fe.add("smtp.password", "set without smtp.username; set the username too, or clear the password")
	case c.Username != "" && c.Password == "":
		fe.add("smtp.password", "required when smtp.username is set (a changed host or username needs the password entered again)")
	}
	if c.Username != "" && c.Security == SecurityNone {
		fe.add("smtp.username", `authentication over security "none" would send the password in clear; use security "starttls" or "tls", or clear the username`)
	}
	if c.From == "" {
		fe.add("smtp.from", `required: the sender address, e.g. "Yagura <yagura@example.jp>"`)
	} else if _, err := mail.ParseAddress(c.From); err != nil || strings.ContainsAny(c.From, "\r\n") {
		fe.add("smtp.from", "%q is not a mail address: %v", c.From, errOr(err, "line break"))
	}
	if len(c.To) == 0 {
		fe.add("smtp.to", "required: at least one recipient address")
	}
	if len(c.To) > 100 {
		fe.add("smtp.to", "%d recipients; at most 100 (use a mailing list)", len(c.To))
	}
	for i, to := range c.To {
		if _, err := mail.ParseAddress(to); err != nil || strings.ContainsAny(to, "\r\n") {
			fe.add(fmt.Sprintf("smtp.to[%d]", i), "%q is not a mail address: %v", to, errOr(err, "line break"))
		}
	}
	validateTLS(fe, "smtp", c.CAPEM, c.ServerName, c.InsecureSkipVerify, c.Security != SecurityNone, `security "starttls" or "tls"`)
}

func (c *SyslogConfig) validate(fe *fieldErrors) {
	switch c.Transport {
	case TransportUDP, TransportTCP, TransportTLS:
	case "":
		fe.add("syslog.transport", `required; use "udp", "tcp" or "tls"`)
	default:
		fe.add("syslog.transport", `unknown transport %q; use "udp", "tcp" or "tls"`, c.Transport)
	}
	if c.Address == "" {
		fe.add("syslog.address", `required: "host:port" of the collector, e.g. "siem.example.jp:6514"`)
	} else if host, port, err := net.SplitHostPort(c.address()); err != nil || !validHost(host) {
		fe.add("syslog.address", `%q: want "host:port", e.g. "siem.example.jp:514" or "[2001:db8::1]:6514"`, c.Address)
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		fe.add("syslog.address", "port %q: want a number 1-65535", port)
	}
	switch c.Format {
	case "", FormatRFC5424, FormatRFC3164:
	default:
		fe.add("syslog.format", `unknown format %q; use "rfc5424" (default) or "rfc3164"`, c.Format)
	}
	switch c.Payload {
	case "", PayloadCEF, PayloadJSON:
	default:
		fe.add("syslog.payload", `unknown payload %q; use "cef" (default) or "json"`, c.Payload)
	}
	if _, err := c.Facility.Code(); err != nil {
		fe.add("syslog.facility", "%v", err)
	}
	maxApp := 48
	if c.format() == FormatRFC3164 {
		maxApp = 32 // RFC 3164 4.1.3: the TAG is at most 32 characters
	}
	if c.AppName != "" && (len(c.AppName) > maxApp || strings.IndexFunc(c.AppName, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	}) >= 0) {
		fe.add("syslog.app_name", "%q: use 1-%d ASCII letters, digits, '-', '_' or '.'", c.AppName, maxApp)
	}
	if c.Hostname != "" && (len(c.Hostname) > 255 || strings.IndexFunc(c.Hostname, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0) {
		fe.add("syslog.hostname", "%q: use at most 255 printable ASCII characters without spaces", c.Hostname)
	}
	switch c.Framing {
	case "", FramingOctetCounting, FramingLF:
		if c.Framing != "" && c.Transport == TransportUDP {
			fe.add("syslog.framing", "applies to tcp and tls only; remove it for udp (one message per datagram)")
		}
	default:
		fe.add("syslog.framing", `unknown framing %q; use "octet-counting" (default) or "lf"`, c.Framing)
	}
	validateTLS(fe, "syslog", c.CAPEM, c.ServerName, c.InsecureSkipVerify, c.Transport == TransportTLS, `transport "tls"`)
}

func (c *WebhookConfig) validate(fe *fieldErrors) {
	isHTTPS := false
	if c.URL == "" {
		fe.add("webhook.url", `required, e.g. "https://soar.example.jp/hooks/yagura"`)
	} else if u, err := url.Parse(c.URL); err != nil {
		fe.add("webhook.url", "%q is not a URL: %v", c.URL, err)
	} else {
		switch {
		case u.Scheme != "https" && u.Scheme != "http":
			fe.add("webhook.url", "scheme %q: use https", u.Scheme)
		case u.Host == "" || u.Hostname() == "":
			fe.add("webhook.url", "%q has no host", c.URL)
		case u.User != nil:
			fe.add("webhook.url", "holds credentials, which would end up in logs; put them in webhook.headers (e.g. Authorization) instead")
		case u.Fragment != "" || strings.Contains(c.URL, "#"):
			fe.add("webhook.url", "has a #fragment, which is never sent; remove it")
		case u.Scheme == "http" && !isLoopback(u.Hostname()):
			fe.add("webhook.url", "http is allowed only to a loopback address (127.0.0.1, ::1, localhost); use https")
		}
		isHTTPS = u.Scheme == "https"
		if p := u.Port(); p != "" {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				fe.add("webhook.url", "port %q: want a number 1-65535", p)
			}
		}
	}
	switch {
	case c.Secret == "":
		fe.add("webhook.secret", "required: a random key of at least %d bytes; receivers use it to check X-Yagura-Signature", minSecretLen)
	case len(c.Secret) < minSecretLen:
		fe.add("webhook.secret", "%d bytes is too short; use at least %d (e.g. openssl rand -hex 32)", len(c.Secret), minSecretLen)
	case len(c.Secret) > 1024:
		fe.add("webhook.secret", "%d bytes is too long; at most 1024", len(c.Secret))
	}
	if len(c.Headers) > maxHeaders {
		fe.add("webhook.headers", "%d headers; at most %d", len(c.Headers), maxHeaders)
	}
	for _, name := range slices.Sorted(maps.Keys(c.Headers)) {
		value := c.Headers[name]
		field := fmt.Sprintf("webhook.headers[%q]", name)
		switch {
		case !validHeaderName(name):
			fe.add(field, "not a valid header name; use letters, digits and '-'")
		case reservedHeader(name):
			fe.add(field, "set by Yagura or by HTTP itself; remove it")
		case value == "":
			fe.add(field, "empty value; remove the header or give it a value")
		case len(value) > 4096:
			fe.add(field, "value of %d bytes; at most 4096", len(value))
		case strings.ContainsAny(value, "\r\n\x00"):
			fe.add(field, "value holds a line break or NUL; remove it")
		}
	}
	if c.Timeout < 0 || time.Duration(c.Timeout) > maxWebhookTimeout {
		fe.add("webhook.timeout", "%v: use 1s to %v, or leave it empty for %v", time.Duration(c.Timeout), maxWebhookTimeout, defaultWebhookTimeout)
	} else if c.Timeout != 0 && time.Duration(c.Timeout) < time.Second {
		fe.add("webhook.timeout", "%v is too short; use at least 1s", time.Duration(c.Timeout))
	}
	validateTLS(fe, "webhook", c.CAPEM, "", c.InsecureSkipVerify, isHTTPS || c.URL == "", "an https URL")
}

func validateTLS(fe *fieldErrors, prefix, caPEM, serverName string, insecure, usesTLS bool, how string) {
	if caPEM != "" {
		if !usesTLS {
			fe.add(prefix+".ca_pem", "only used with %s; remove it", how)
		} else if err := checkPEM(caPEM); err != nil {
			fe.add(prefix+".ca_pem", "%v", err)
		}
	}
	if serverName != "" {
		if !usesTLS {
			fe.add(prefix+".server_name", "only used with %s; remove it", how)
		} else if !validHost(serverName) {
			fe.add(prefix+".server_name", "%q is not a host name", serverName)
		}
	}
	if insecure && !usesTLS {
		fe.add(prefix+".insecure_skip_verify", "only used with %s; remove it", how)
	}
}

// checkPEM requires at least one CERTIFICATE block and that every such block
// parses.
func checkPEM(s string) error {
	rest := []byte(s)
	n := 0
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return fmt.Errorf("holds a %q PEM block; paste only CERTIFICATE blocks (never a private key)", b.Type)
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return fmt.Errorf("certificate %d: %v", n+1, err)
		}
		n++
	}
	if n == 0 {
		return errors.New(`holds no PEM certificate; paste the CA certificate, from "-----BEGIN CERTIFICATE-----" to "-----END CERTIFICATE-----"`)
	}
	return nil
}

func errOr(err error, s string) any {
	if err != nil {
		return err
	}
	return s
}

// validHost accepts a DNS name (letters, digits, '-', '_', '.') or an IP
// address, possibly in brackets.
func validHost(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	if _, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
		return true
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

func validHeaderName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// reservedHeader: headers that frame or route the request, that Yagura sets,
// or that the HTTP client manages.
func reservedHeader(name string) bool {
	n := strings.ToLower(name)
	switch n {
	case "host", "content-length", "transfer-encoding", "connection", "keep-alive",
		"proxy-connection", "upgrade", "te", "trailer", "expect", "content-type",
		"content-encoding", "accept-encoding", "user-agent":
		return true
	}
	return strings.HasPrefix(n, "x-yagura-")
}

// sensitiveHeader: headers whose value is a credential and is handled like
// a password.
func sensitiveHeader(name string) bool {
	n := strings.ToLower(name)
	switch n {
	case "authorization", "proxy-authorization", "cookie":
		return true
	}
	for _, w := range []string{"token", "key", "secret", "auth", "password", "passwd", "session", "signature", "cookie"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// Redacted returns a copy of c without secrets, for API output and logs: the
// SMTP password, the webhook secret and the values of credential-like webhook
// headers become "", and PasswordSet/SecretSet say whether one is stored.
func (c Config) Redacted() Config {
	out := c.clone()
	if s := out.SMTP; s != nil {
		s.PasswordSet = s.Password != ""
		s.Password = ""
	}
	if w := out.Webhook; w != nil {
		w.SecretSet = w.Secret != ""
		w.Secret = ""
		// The path or query of a chat service's webhook is its credential.
		w.URL = RedactURL(w.URL)
		for k := range w.Headers {
			if sensitiveHeader(k) {
				w.Headers[k] = ""
			}
		}
	}
	return out
}

// WithSecretsFrom returns c, an update from the API, with each secret that
// the update left empty taken from old, the stored config:
//
//   - the SMTP password, when host and username are unchanged (a changed
//     host must not receive the old password: an editor who does not know it
//     could otherwise collect it with a server of their own);
//   - the webhook secret (it never leaves the manager, so a new URL cannot
//     collect it);
//   - the webhook URL, when the update holds its redacted form (scheme and
//     host, path and query hidden);
//   - credential-like webhook header values given as "", when the URL's
//     scheme, host and port are unchanged (same reason as for SMTP).
//
// PasswordSet and SecretSet in c are ignored.
func (c Config) WithSecretsFrom(old Config) Config {
	out := c.clone()
	if s := out.SMTP; s != nil {
		s.PasswordSet = false
		if o := old.SMTP; o != nil && s.Password == "" && s.Username != "" &&
			s.Username == o.Username && strings.EqualFold(s.Host, o.Host) {
			s.Password = o.Password
		}
	}
	if w := out.Webhook; w != nil {
		w.SecretSet = false
		if o := old.Webhook; o != nil {
			if w.Secret == "" {
				w.Secret = o.Secret
			}
			// The redacted URL sent back unchanged keeps the stored one.
			if w.URL == RedactURL(o.URL) {
				w.URL = o.URL
			}
			if sameOrigin(w.URL, o.URL) {
				for k, v := range w.Headers {
					if v != "" || !sensitiveHeader(k) {
						continue
					}
					for ok, ov := range o.Headers {
						if strings.EqualFold(k, ok) {
							w.Headers[k] = ov
						}
					}
				}
			}
		}
	}
	return out
}

func sameOrigin(a, b string) bool {
	ua, err1 := url.Parse(a)
	ub, err2 := url.Parse(b)
	return err1 == nil && err2 == nil && ua.Scheme == ub.Scheme && strings.EqualFold(ua.Host, ub.Host)
}

// clone copies c deeply enough that changing the copy's settings, lists or
// maps leaves c alone.
func (c Config) clone() Config {
	out := c
	if c.SMTP != nil {
		s := *c.SMTP
		s.To = slices.Clone(s.To)
		out.SMTP = &s
	}
	if c.Syslog != nil {
		s := *c.Syslog
		out.Syslog = &s
	}
	if c.Webhook != nil {
		w := *c.Webhook
		w.Headers = maps.Clone(w.Headers)
		out.Webhook = &w
	}
	return out
}
