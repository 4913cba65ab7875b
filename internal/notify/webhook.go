package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Webhook request headers.
const (
	HeaderDelivery  = "X-Yagura-Delivery"  // the message ID: receivers dedup by it
	HeaderTimestamp = "X-Yagura-Timestamp" // Unix seconds when the request was signed
	HeaderSignature = "X-Yagura-Signature" // "sha256=" + hex(HMAC-SHA256(secret, timestamp + "." + body))
)

type webhookSender struct {
	cfg     WebhookConfig
	o       options
	url     string
	logAddr string // the URL without its query, which may hold a token
	client  *http.Client
	closed  atomic.Bool
}

func newWebhook(c WebhookConfig, o options) (*webhookSender, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, &FieldError{Field: "webhook.url", Msg: err.Error()}
	}
	tc, err := tlsConfig(u.Hostname(), c.CAPEM, c.InsecureSkipVerify, o)
	if err != nil {
		return nil, &FieldError{Field: "webhook.ca_pem", Msg: err.Error()}
	}
	s := &webhookSender{cfg: c, o: o, url: c.URL, logAddr: RedactURL(c.URL)}
	s.client = &http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:       tc,
			TLSHandshakeTimeout:   10 * time.Second,
			MaxIdleConns:          2,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: c.timeout(),
			ForceAttemptHTTP2:     true,
		},
		Timeout: c.timeout(),
		// A redirect is not followed: it could send the signed alert, and
		// any Authorization header, somewhere the operator did not choose.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	if c.InsecureSkipVerify && u.Scheme == "https" {
		warnInsecure(o, s.logAddr)
	}
	return s, nil
}

func (s *webhookSender) fail(op string, err error, permanent bool) error {
	return &Error{Channel: "webhook", Address: s.logAddr, Op: op, Err: err, Permanent: permanent}
}

// Send POSTs m as JSON, signed. Any 2xx answer is success.
func (s *webhookSender) Send(ctx context.Context, m Message) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if m.ID == "" {
		return s.fail("encode", errors.New("message has no ID"), true)
	}
	m.Time = msgTime(m, s.o.now)
	body, err := json.Marshal(m)
	if err != nil {
		return s.fail("encode", err, true)
	}
	ts := strconv.FormatInt(s.o.now().Unix(), 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return s.fail("POST", err, true)
	}
	for k, v := range s.cfg.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "Yagura/"+s.o.version)
	req.Header.Set(HeaderDelivery, m.ID)
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, Sign([]byte(s.cfg.Secret), ts, body))
	resp, err := s.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is in Error already
		}
		return s.fail("POST", netErr(err), false)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	msg := resp.Status
	if loc := resp.Header.Get("Location"); loc != "" && resp.StatusCode >= 300 && resp.StatusCode < 400 {
		msg += " (redirect to " + shorten(loc, 120) + " not followed; set the final URL)"
	}
	if b := shorten(string(snippet), 200); b != "" {
		msg += ": " + b
	}
	// Only answers about the message itself are final: it is malformed,
	// too large or of the wrong type, and retrying cannot help. Anything
	// about the receiver — not authorised, not found, gone, timeouts, rate
	// limits — may be a deploy or a token rotation: the channel backs off
	// and keeps the backlog, rather than failing everything in seconds.
	permanent := false
	switch resp.StatusCode {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity:
		permanent = true
	}
	return s.fail("POST", errors.New(msg), permanent)
}

// shorten makes s one line of at most n bytes of valid UTF-8.
func shorten(s string, n int) string {
	s = strings.Join(strings.Fields(strings.ToValidUTF8(s, "\uFFFD")), " ")
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}

// Close drops idle connections; later Sends fail.
func (s *webhookSender) Close() error {
	s.closed.Store(true)
	s.client.CloseIdleConnections()
	return nil
}

// Sign returns the X-Yagura-Signature value for a body sent at timestamp (Unix
// seconds, as in X-Yagura-Timestamp): "sha256=" and the hex HMAC-SHA256 of
// timestamp + "." + body under secret.
func Sign(secret []byte, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(timestamp))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Webhook verification errors.
var (
	ErrNoSignature     = errors.New("webhook: no " + HeaderSignature + " or " + HeaderTimestamp + " header")
	ErrBadSignature    = errors.New("webhook: signature does not match the body")
	ErrStaleTimestamp  = errors.New("webhook: timestamp outside the allowed window")
	ErrMalformedHeader = errors.New("webhook: malformed signature header")
)

// VerifyWebhook checks a request Yagura sent: that X-Yagura-Signature is the
// HMAC of X-Yagura-Timestamp and body under secret (compared in constant
// time), and that the timestamp is within tolerance of now, which stops a
// captured request from being replayed later. Receivers should also drop
// repeated X-Yagura-Delivery IDs.
func VerifyWebhook(secret []byte, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	ts, sig := h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if ts == "" || sig == "" {
		return ErrNoSignature
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %s %q is not Unix seconds", ErrMalformedHeader, HeaderTimestamp, ts)
	}
	hexSig, ok := strings.CutPrefix(sig, "sha256=")
	if !ok {
		return fmt.Errorf("%w: %s does not start with \"sha256=\"", ErrMalformedHeader, HeaderSignature)
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil || len(got) != sha256.Size {
		return fmt.Errorf("%w: %s is not 64 hex digits", ErrMalformedHeader, HeaderSignature)
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return ErrBadSignature
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: signed %v ago, tolerance %v", ErrStaleTimestamp, d.Round(time.Second), tolerance)
	}
	return nil
}

// RedactURL is a webhook URL fit for logs, errors and the API: scheme, host
// and port only. Chat services (Slack, Teams, Discord) put the credential in
// the path, others in the query.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(invalid URL)"
	}
	out := u.Scheme + "://" + u.Host
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		out += "/…"
	}
	return out
}
