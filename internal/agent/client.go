package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
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

	"github.com/yagura/yagura/internal/pki"
	"github.com/yagura/yagura/internal/proto"
)

// Client speaks the agent protocol to one manager over HTTPS, pinning the
// manager CA and presenting the agent's certificate when it has one. It is
// also what `yagura sim` uses, so the benchmark exercises the real code.
type Client struct {
	base      *url.URL
	http      *http.Client
	transport *http.Transport
	cert      atomic.Pointer[tls.Certificate]
}

// ClientOptions configures a Client.
type ClientOptions struct {
	// Manager is the manager's base URL, https://HOST:PORT.
	Manager string
	// CAFingerprint pins the manager CA.
	CAFingerprint string
	// Roots are CA certificates already trusted (the stored manager CA).
	Roots []*x509.Certificate
	// Cert is the agent's client certificate; nil before enrolment.
	Cert *tls.Certificate
	// Dial overrides how connections are made (the simulator spreads its
	// agents over several loopback source addresses).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// IdleTimeout is how long an unused connection is kept for the next
	// heartbeat; keeping it saves a TLS handshake per beat.
	IdleTimeout time.Duration
	// Proxy is an HTTP proxy (CONNECT), with credentials in its user
	// info; nil: HTTPS_PROXY and NO_PROXY from the environment.
	Proxy *url.URL
	// NoProxy, when it returns true, bypasses any proxy (the agent is
	// using sockets the manager opened).
	NoProxy func() bool
}

// ParseManagerURL checks a manager URL as an operator types it.
func ParseManagerURL(s string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimRight(s, "/"))
	if err != nil {
		return nil, fmt.Errorf("manager URL %q: %w", s, err)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("manager URL %q: must start with https:// (agents only talk TLS)", s)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("manager URL %q: no host", s)
	}
	return u, nil
}

// NewClient returns a client; it does no I/O.
func NewClient(o ClientOptions) (*Client, error) {
	u, err := ParseManagerURL(o.Manager)
	if err != nil {
		return nil, err
	}
	tc, err := pki.PinnedClientConfig(o.CAFingerprint, u.Hostname(), o.Roots)
	if err != nil {
		return nil, err
	}
	// Resuming TLS sessions makes a new connection (after an idle timeout,
	// a proxy cut, a manager restart) cost a fraction of a full handshake.
	cache := tls.NewLRUClientSessionCache(4)
	tc.ClientSessionCache = cache
	c := &Client{base: u}
	if o.Cert != nil {
		c.cert.Store(o.Cert)
	}
	tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if cert := c.cert.Load(); cert != nil {
			return cert, nil
		}
		return &tls.Certificate{}, nil // none yet: enrolment
	}
	idle := o.IdleTimeout
	if idle == 0 {
		idle = 5 * time.Minute
	}
	c.transport = &http.Transport{
		Proxy:               withBypass(proxyFunc(o.Proxy), o.NoProxy),
		TLSClientConfig:     tc,
		TLSHandshakeTimeout: 15 * time.Second,
		MaxIdleConnsPerHost: 2, // heartbeats and event batches run side by side
		IdleConnTimeout:     idle,
		DialContext:         o.Dial,
		// Full handshakes use the hybrid post-quantum key exchange
		// (X25519MLKEM768, Go's default). A resumed session already holds
		// a secret from such a handshake, and TLS 1.3 mixes it into the
		// new keys, so resuming with plain X25519 keeps that protection
		// while saving the 2.3 KB of ML-KEM key shares on every reconnect.
		// (Through a proxy the transport does its own TLS and always sends
		// the hybrid shares.)
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dial := o.Dial
			if dial == nil {
				dial = (&net.Dialer{Timeout: 15 * time.Second}).DialContext
			}
			raw, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			if tc, ok := raw.(*tls.Conn); ok {
				return tc, nil // already verified (a socket the manager opened)
			}
			cfg := c.transport.TLSClientConfig.Clone()
			if _, ok := cache.Get(cfg.ServerName); ok {
				cfg.CurvePreferences = []tls.CurveID{tls.X25519}
			}
			conn := tls.Client(raw, cfg)
			if err := conn.HandshakeContext(ctx); err != nil {
				raw.Close()
				return nil, err
			}
			return conn, nil
		},
	}
	// No client-wide timeout: a long poll lasts up to a minute. Each call
	// bounds itself (see do).
	c.http = &http.Client{Transport: c.transport}
	return c, nil
}

// SetCertificate swaps the client certificate (after renewal) and drops
// idle connections so the next request presents the new one.
func (c *Client) SetCertificate(cert *tls.Certificate) {
	c.cert.Store(cert)
	c.transport.CloseIdleConnections()
}

// Close releases idle connections.
func (c *Client) Close() { c.transport.CloseIdleConnections() }

// ProblemError is a refusal from the manager.
type ProblemError struct{ proto.Problem }

func (e *ProblemError) Error() string {
	return fmt.Sprintf("manager refused (%d %s): %s", e.Status, e.Code, e.Problem.Error())
}

// IsProblem reports whether err is a manager refusal with the given code.
func IsProblem(err error, code string) bool {
	var pe *ProblemError
	return errors.As(err, &pe) && pe.Code == code
}

// post sends one message and decodes the answer.
func (c *Client) post(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return c.postRaw(ctx, path, body, out)
}

// postRaw sends an already encoded message.
func (c *Client) postRaw(ctx context.Context, path string, body []byte, out any) error {
	return c.do(ctx, http.MethodPost, path, "application/json", body, out)
}

// defaultTimeout bounds calls whose context has no deadline.
const defaultTimeout = 60 * time.Second

func (c *Client) do(ctx context.Context, method, path, contentType string, body []byte, out any) error {
	return c.doLimit(ctx, method, path, contentType, body, out, proto.MaxBody)
}

// maxPolicyBody bounds a policy response (after gzip decoding): 10,000
// rules with their lists are a few MiB.
const maxPolicyBody = 64 << 20

// Policy fetches the agent's effective configuration, as a delta from the
// one it holds (have) when the manager can.
func (c *Client) Policy(ctx context.Context, have string) (*proto.PolicyResponse, error) {
	body, err := json.Marshal(proto.PolicyRequest{V: proto.Version, Have: have})
	if err != nil {
		return nil, err
	}
	var out proto.PolicyResponse
	if err := c.doLimit(ctx, http.MethodPost, proto.PathPolicy, "application/json", body, &out, maxPolicyBody); err != nil {
		return nil, err
	}
	return &out, nil
}

func (c *Client) doLimit(ctx context.Context, method, path, contentType string, body []byte, out any, limit int) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
		defer cancel()
	}
	u := c.base.JoinPath(path)
	if i := strings.IndexByte(path, '?'); i >= 0 {
		u = c.base.JoinPath(path[:i])
		u.RawQuery = path[i+1:]
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return explainTransport(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var p proto.Problem
		b, _ := io.ReadAll(io.LimitReader(resp.Body, proto.MaxBody))
		if json.Unmarshal(b, &p) != nil || p.Status == 0 {
			// Not one of ours (an older manager, a proxy): keep the status.
			p = proto.Problem{Title: resp.Status, Status: resp.StatusCode, Detail: fmt.Sprintf("%.200s", b)}
		}
		return &ProblemError{p}
	}
	if err := proto.DecodeLimit(resp.Body, out, limit); err != nil {
		return fmt.Errorf("manager's answer to %s: %w", path, err)
	}
	return nil
}

// explainTransport adds what to do to the TLS failures operators meet.
func explainTransport(err error) error {
	s := err.Error()
	switch {
	case errors.Is(err, pki.ErrPinMismatch):
		return fmt.Errorf("%w (is this the right manager? a TLS-intercepting proxy in the way?)", err)
	case strings.Contains(s, "unknown certificate authority"), strings.Contains(s, "bad certificate"),
		strings.Contains(s, "expired certificate"), strings.Contains(s, "certificate expired"),
		strings.Contains(s, "certificate required"):
		return fmt.Errorf("the manager refused this agent's certificate (issued by another manager's CA, or expired); enrol again with `yagura agent enroll --force`: %w", err)
	case strings.Contains(s, "Proxy Authentication Required"), strings.Contains(s, "407"),
		// A transport-level "Unauthorized" can only come from a proxy's
		// answer to CONNECT (the manager's refusals are responses).
		strings.HasSuffix(s, ": Unauthorized"):
		return fmt.Errorf("the proxy refused this agent's credentials (407 Proxy Authentication Required): check the user and password in --proxy: %w", err)
	case strings.Contains(s, "proxyconnect"):
		return fmt.Errorf("cannot reach the proxy: check --proxy (or HTTPS_PROXY): %w", err)
	case strings.Contains(s, "protocol version"):
		return fmt.Errorf("no TLS version in common with the manager (Yagura needs TLS 1.2 or 1.3): %w", err)
	}
	return err
}

// Enroll presents a token and CSR.
func (c *Client) Enroll(ctx context.Context, req *proto.EnrollRequest) (*proto.EnrollResponse, error) {
	var resp proto.EnrollResponse
	if err := c.post(ctx, proto.PathEnroll, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Heartbeat sends one heartbeat.
func (c *Client) Heartbeat(ctx context.Context, hb *proto.Heartbeat) (*proto.HeartbeatResponse, error) {
	var resp proto.HeartbeatResponse
	if err := c.post(ctx, proto.PathHeartbeat, hb, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// SendEvents sends an encoded proto.EventBatch; a nil error means the
// manager stored every event in it durably.
func (c *Client) SendEvents(ctx context.Context, batch []byte) (*proto.EventAck, error) {
	var ack proto.EventAck
	if err := c.postRaw(ctx, proto.PathEvents, batch, &ack); err != nil {
		return nil, err
	}
	return &ack, nil
}

// Wait is the long poll: it returns when the manager has something for the
// agent (woken) or after max.
func (c *Client) Wait(ctx context.Context, max time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, max+15*time.Second)
	defer cancel()
	var resp proto.WaitResponse
	if err := c.post(ctx, proto.PathWait, &proto.WaitRequest{V: proto.Version, MaxMillis: proto.Millis(max)}, &resp); err != nil {
		return false, err
	}
	return resp.Wake, nil
}

// ReportJob reports a job's status.
func (c *Client) ReportJob(ctx context.Context, st *proto.JobStatus) error {
	var out struct{}
	return c.post(ctx, proto.PathJobStatus, st, &out)
}

// StartUpload announces a file and learns how much the manager already has.
func (c *Client) StartUpload(ctx context.Context, r *proto.UploadRequest) (*proto.UploadState, error) {
	var st proto.UploadState
	if err := c.post(ctx, proto.PathUploads, r, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// UploadState asks how much of a file the manager holds.
func (c *Client) UploadState(ctx context.Context, id string) (*proto.UploadState, error) {
	var st proto.UploadState
	if err := c.do(ctx, http.MethodGet, proto.PathUploads+"/"+url.PathEscape(id), "", nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// AppendUpload sends a chunk at offset.
func (c *Client) AppendUpload(ctx context.Context, id string, offset int64, chunk []byte) (*proto.UploadState, error) {
	var st proto.UploadState
	path := proto.PathUploads + "/" + url.PathEscape(id) + "?offset=" + strconv.FormatInt(offset, 10)
	if err := c.do(ctx, http.MethodPut, path, "application/octet-stream", chunk, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Renew asks for a new certificate.
func (c *Client) Renew(ctx context.Context, req *proto.RenewRequest) (*proto.RenewResponse, error) {
	var resp proto.RenewResponse
	if err := c.post(ctx, proto.PathRenew, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// ProbeCA connects once without trusting anything and returns the
// fingerprint of the last certificate in the manager's chain, for trust on
// first use when the operator gave no fingerprint. It goes through the
// proxy the agent would use; nothing but a health probe is sent.
func ProbeCA(ctx context.Context, manager string, proxy *url.URL) (fp, subject string, err error) {
	u, err := ParseManagerURL(manager)
	if err != nil {
		return "", "", err
	}
	var cs *tls.ConnectionState
	tr := &http.Transport{
		Proxy: proxyFunc(proxy),
		TLSClientConfig: &tls.Config{
			ServerName: u.Hostname(),
			MinVersion: tls.VersionTLS12,
			// Only to read the chain: the answer to /healthz is discarded.
			InsecureSkipVerify: true,
			VerifyConnection: func(s tls.ConnectionState) error {
				cs = &s
				return nil
			},
		},
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.JoinPath("/healthz").String(), nil)
	if err != nil {
		return "", "", err
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return "", "", fmt.Errorf("connect to manager %s: %w", u.Host, explainTransport(err))
	}
	resp.Body.Close()
	if cs == nil {
		return "", "", errors.New("no TLS connection state from the manager")
	}
	return pki.RootFingerprint(*cs)
}

func withBypass(f func(*http.Request) (*url.URL, error), bypass func() bool) func(*http.Request) (*url.URL, error) {
	if bypass == nil {
		return f
	}
	return func(r *http.Request) (*url.URL, error) {
		if bypass() {
			return nil, nil
		}
		return f(r)
	}
}

// proxyFunc uses the given proxy, or the usual environment variables
// (HTTPS_PROXY, NO_PROXY) when there is none.
func proxyFunc(proxy *url.URL) func(*http.Request) (*url.URL, error) {
	if proxy != nil {
		return http.ProxyURL(proxy)
	}
	return http.ProxyFromEnvironment
}

// ParseProxyURL checks a proxy URL: http://[user:password@]host:port.
func ParseProxyURL(s string) (*url.URL, error) {
	if s == "" {
		return nil, nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("proxy %q: want http://[user:password@]host:port", redactURL(s))
	}
	return u, nil
}

func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	return "<unparsable>"
}
