// Package proto provides the messages agents and the manager exchange over
// HTTPS, their paths and their limits.
//
// Messages are JSON objects carrying a version "v". A newer manager accepts
// every older version it has shipped; fields are only ever added, and
// decoders ignore fields they do not know, so an older agent keeps working
// with a newer manager and the other way round. The package imports only the
// standard library: it is linked into the agent.
package proto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Version is the newest message version this build speaks.
const Version = 1

// Paths served by the manager's agent gateway.
const (
	PathEnroll    = "/agent/v1/enroll"
	PathHeartbeat = "/agent/v1/heartbeat"
	PathRenew     = "/agent/v1/renew"
	PathEvents    = "/agent/v1/events"
	PathWait      = "/agent/v1/wait"
	PathJobStatus = "/agent/v1/jobs/status"
	// PathPolicy returns the agent's effective configuration, or the
	// delta from the one it holds.
	PathPolicy = "/agent/v1/policy"
	// PathUploads creates an upload; PathUploads + "/{id}" reports how
	// much arrived (GET) and appends a chunk at ?offset= (PUT).
	PathUploads = "/agent/v1/uploads"
)

// MaxBody bounds every agent request body. Heartbeats are a few hundred
// bytes; enrolment carries a CSR of under 1 KiB.
const MaxBody = 64 << 10

// Limits on what an agent may report, so one misbehaving host cannot make
// the manager store megabytes per heartbeat.
const (
	maxString   = 255
	maxIPs      = 64
	maxCounters = 64
	maxUptime   = 100 * 365 * 24 * 3600 // seconds; keeps the duration from overflowing
)

// Inventory describes the host. The agent sends it on its first heartbeat and
// whenever it changes, not on every beat, to keep heartbeats small.
type Inventory struct {
	Hostname     string   `json:"hostname"`
	OS           string   `json:"os"`
	OSVersion    string   `json:"os_version,omitempty"`
	AgentVersion string   `json:"agent_version"`
	IPs          []string `json:"ips,omitempty"`
	// ListenPort is the TCP port the agent listens on for the manager
	// (bidirectional and manager-initiated modes); 0: not listening.
	ListenPort int `json:"listen_port,omitempty"`
}

// Equal reports whether two inventories describe the same host state.
func (inv *Inventory) Equal(o *Inventory) bool {
	if inv == nil || o == nil {
		return inv == o
	}
	if inv.Hostname != o.Hostname || inv.OS != o.OS || inv.OSVersion != o.OSVersion ||
		inv.AgentVersion != o.AgentVersion || inv.ListenPort != o.ListenPort || len(inv.IPs) != len(o.IPs) {
		return false
	}
	for i := range inv.IPs {
		if inv.IPs[i] != o.IPs[i] {
			return false
		}
	}
	return true
}

// EnrollRequest is what an agent presents to obtain its identity.
type EnrollRequest struct {
	V         int       `json:"v"`
	Token     string    `json:"token"`
	CSR       string    `json:"csr"` // PEM "CERTIFICATE REQUEST"
	Inventory Inventory `json:"inventory"`
}

// EnrollResponse carries the agent's new identity.
type EnrollResponse struct {
	V           int    `json:"v"`
	AgentID     string `json:"agent_id"`
	Certificate string `json:"certificate"` // PEM, the agent's client certificate
	CA          string `json:"ca"`          // PEM, the manager CA that signs agent and server certificates
	// HeartbeatMillis is the interval the agent should start with.
	HeartbeatMillis int64 `json:"heartbeat_ms"`
	// Replaced is the agent ID this enrolment retired: the host presented
	// its previous, still valid certificate while re-enrolling.
	Replaced string `json:"replaced,omitempty"`
}

// RenewRequest asks for a fresh certificate for the same key or a new one.
type RenewRequest struct {
	V   int    `json:"v"`
	CSR string `json:"csr"`
}

// RenewResponse carries the renewed certificate.
type RenewResponse struct {
	V           int    `json:"v"`
	Certificate string `json:"certificate"`
	CA          string `json:"ca"`
}

// Heartbeat is the agent's periodic report.
type Heartbeat struct {
	V int `json:"v"`
	// Seq counts heartbeats since the agent started; a drop to 1 tells the
	// manager the agent restarted.
	Seq uint64 `json:"seq"`
	// ClockMillis is the agent's wall clock (Unix ms) when it sent the beat.
	ClockMillis int64 `json:"clock"`
	// UptimeSeconds is the host's uptime.
	UptimeSeconds int64 `json:"up"`
	// Inventory is present on the first beat and when the host changed.
	Inventory *Inventory `json:"inv,omitempty"`
	// Counters are monotonically increasing agent counters by name.
	Counters map[string]uint64 `json:"ctr,omitempty"`
	// PolicyFingerprint is the fingerprint of the configuration the agent
	// enforces ("" before it has received one).
	PolicyFingerprint string `json:"pf,omitempty"`
	// Isolated: the agent isolates its host (isolate job).
	Isolated bool `json:"iso,omitempty"`
}

// HeartbeatResponse is the manager's answer.
type HeartbeatResponse struct {
	V int `json:"v"`
	// IntervalMillis is when the agent should beat next.
	IntervalMillis int64 `json:"interval_ms"`
	// ClockMillis is the manager's clock, for the agent's own logs.
	ClockMillis int64 `json:"clock"`
	// SendInventory asks the agent to include its inventory next time.
	SendInventory bool `json:"send_inv,omitempty"`
	// Communication is the direction the agent must follow when it is not
	// agent-initiated (the default, then omitted): "bidirectional" or
	// "manager-initiated". ListenPort is where to listen for the manager
	// unless the agent is configured with an address of its own.
	Communication string `json:"comm,omitempty"`
	ListenPort    int    `json:"port,omitempty"`
	// PolicyFingerprint is set when the agent should fetch a new
	// configuration (PathPolicy): the fingerprint it should end up with.
	PolicyFingerprint string `json:"pf,omitempty"`
	// Jobs the agent has not finished, oldest first. They come again with
	// every heartbeat until the agent reports a final status; the agent
	// remembers what it ran and never runs a job twice.
	Jobs []Job `json:"jobs,omitempty"`
}

// Job kinds.
const (
	JobHeartbeatNow = "heartbeat-now"
	JobCollectLogs  = "collect-logs"
	JobUninstall    = "uninstall"
	// JobIsolate cuts the host off the network except for the manager and
	// an allow-list; JobRelease undoes it.
	JobIsolate = "isolate"
	JobRelease = "release"
)

// IsolateParams are isolate's parameters.
type IsolateParams struct {
	// Allow lists what stays reachable besides the manager:
	// "[tcp|udp|icmp|any] ADDRESS[/PREFIX][:PORT]", e.g. "udp 192.0.2.53:53".
	Allow []string `json:"allow,omitempty"`
}

// Job is a command for the agent.
type Job struct {
	ID        string          `json:"id"`
	Kind      string          `json:"kind"`
	Params    json.RawMessage `json:"params,omitempty"`
	ExpiresAt time.Time       `json:"expires_at"`
	// Cancelled: stop it if it is running.
	Cancelled bool `json:"cancelled,omitempty"`
}

// CollectLogsParams are collect-logs' parameters.
type CollectLogsParams struct {
	// Paths are files or glob patterns (filepath.Match syntax, plus "**"
	// is not supported: list directories explicitly).
	Paths []string `json:"paths"`
	// MaxBytes caps the total size of the files collected (before
	// compression); files beyond it are listed as skipped.
	MaxBytes int64 `json:"max_bytes,omitempty"`
}

// JobStatus is what the agent reports about a job.
type JobStatus struct {
	V      int             `json:"v"`
	JobID  string          `json:"job_id"`
	Status string          `json:"status"` // running, succeeded, failed
	Result json.RawMessage `json:"result,omitempty"`
	FileID string          `json:"file_id,omitempty"`
}

// Validate checks a job status report.
func (s *JobStatus) Validate() error {
	switch {
	case s.V < 1:
		return fmt.Errorf("v: unsupported message version %d", s.V)
	case s.JobID == "" || len(s.JobID) > 64:
		return errors.New("job_id: must be 1 to 64 bytes")
	case s.Status != "running" && s.Status != "succeeded" && s.Status != "failed":
		return fmt.Errorf("status: %.40q must be running, succeeded or failed", s.Status)
	case len(s.Result) > maxEventData:
		return fmt.Errorf("result: %d bytes, at most %d", len(s.Result), maxEventData)
	case len(s.FileID) > 64:
		return errors.New("file_id: too long")
	}
	if len(s.Result) > 0 {
		if t := bytes.TrimSpace(s.Result); len(t) == 0 || t[0] != '{' {
			return errors.New("result: must be a JSON object")
		}
	}
	return nil
}

// WaitRequest is a long poll: the manager answers when there is something
// for the agent (a job, a nudge) or after MaxMillis.
type WaitRequest struct {
	V         int   `json:"v"`
	MaxMillis int64 `json:"max_ms"`
}

// WaitResponse ends a long poll; Wake means "heartbeat now".
type WaitResponse struct {
	V    int  `json:"v"`
	Wake bool `json:"wake"`
}

// PolicyRequest asks for the agent's effective configuration. Have is the
// fingerprint of the one it holds, so the manager can answer with a delta.
type PolicyRequest struct {
	V    int    `json:"v"`
	Have string `json:"have,omitempty"`
}

// PolicyResponse carries either the whole document (internal/policy
// Document) or a delta from the one the agent holds (policy.Delta), and
// the fingerprint the agent must end up with. The manager sends it gzipped
// when the agent accepts that.
type PolicyResponse struct {
	V           int             `json:"v"`
	Fingerprint string          `json:"fp"`
	Document    json.RawMessage `json:"doc,omitempty"`
	Delta       json.RawMessage `json:"delta,omitempty"`
}

// UploadRequest announces a file the agent is about to upload.
type UploadRequest struct {
	V      int    `json:"v"`
	JobID  string `json:"job_id"`
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// UploadState says how much of an upload the manager holds.
type UploadState struct {
	V        int    `json:"v"`
	FileID   string `json:"file_id"`
	Received int64  `json:"received"`
	Complete bool   `json:"complete"`
}

// Problem is an RFC 9457 problem document, with a stable Code agents act on.
type Problem struct {
	Type   string `json:"type,omitempty"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	Code   string `json:"code,omitempty"`
}

func (p *Problem) Error() string {
	if p.Detail != "" {
		return p.Detail
	}
	return p.Title
}

// Problem codes the gateway returns.
const (
	CodeBadRequest      = "bad-request"
	CodeTokenUnknown    = "token-unknown"
	CodeTokenExpired    = "token-expired"
	CodeTokenRevoked    = "token-revoked"
	CodeTokenUsedUp     = "token-used-up"
	CodeCertRequired    = "certificate-required"
	CodeCertExpired     = "certificate-expired"
	CodeAgentUnknown    = "agent-unknown"
	CodeAgentDeactivate = "agent-deactivated"
	CodeInternal        = "internal"
	// CodeUnavailable: the manager cannot take this now (stopping, or
	// the feature is off); the agent keeps the data and tries again.
	CodeUnavailable = "unavailable"
)

// bodies recycles request buffers: heartbeats arrive thousands of times a
// second and are a few hundred bytes each.
var bodies = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// Decode reads one JSON message of at most MaxBody bytes into v. Errors say
// what is wrong and where (byte offset, field).
func Decode(r io.Reader, v any) error { return DecodeLimit(r, v, MaxBody) }

// DecodeLimit is Decode with another size limit (event batches).
func DecodeLimit(r io.Reader, v any, limit int) error {
	buf := bodies.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		// Keep only ordinary-sized buffers: one big batch must not pin
		// megabytes in the pool.
		if buf.Cap() <= 1<<20 {
			bodies.Put(buf)
		}
	}()
	if _, err := buf.ReadFrom(io.LimitReader(r, int64(limit)+1)); err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if buf.Len() > limit {
		return fmt.Errorf("body larger than %d KiB", limit>>10)
	}
	b := buf.Bytes()
	if len(bytes.TrimSpace(b)) == 0 {
		return errors.New("body is empty")
	}
	// json.Unmarshal copies what it keeps, so the buffer can be reused.
	if err := json.Unmarshal(b, v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se) && strings.Contains(se.Error(), "after top-level value"):
			return fmt.Errorf("unexpected data after the JSON message at byte %d", se.Offset)
		case errors.As(err, &se) && strings.Contains(se.Error(), "unexpected end of JSON input"):
			return errors.New("body is truncated: the JSON message ends early")
		case errors.As(err, &se):
			return fmt.Errorf("malformed JSON at byte %d: %w", se.Offset, err)
		case errors.As(err, &te):
			return fmt.Errorf("field %q: want %s, got JSON %s", te.Field, te.Type, te.Value)
		}
		return err
	}
	return nil
}

// Validate checks a heartbeat against the protocol's limits.
func (h *Heartbeat) Validate() error {
	if h.V < 1 {
		return fmt.Errorf("v: unsupported message version %d", h.V)
	}
	if h.ClockMillis <= 0 {
		return errors.New("clock: missing")
	}
	if h.UptimeSeconds < 0 || h.UptimeSeconds > maxUptime {
		return fmt.Errorf("up: uptime %d s out of range", h.UptimeSeconds)
	}
	if len(h.PolicyFingerprint) > 64 {
		return errors.New("pf: policy fingerprint longer than 64 bytes")
	}
	if len(h.Counters) > maxCounters {
		return fmt.Errorf("ctr: %d counters, at most %d", len(h.Counters), maxCounters)
	}
	for k := range h.Counters {
		if len(k) == 0 || len(k) > 64 {
			return fmt.Errorf("ctr: counter name %.64q must be 1 to 64 bytes", k)
		}
	}
	if h.Inventory != nil {
		if err := h.Inventory.Validate(); err != nil {
			return fmt.Errorf("inv.%w", err)
		}
	}
	return nil
}

// Validate checks an inventory against the protocol's limits.
func (inv *Inventory) Validate() error {
	for _, f := range []struct{ name, v string }{
		{"hostname", inv.Hostname}, {"os", inv.OS}, {"os_version", inv.OSVersion}, {"agent_version", inv.AgentVersion},
	} {
		if len(f.v) > maxString {
			return fmt.Errorf("%s: longer than %d bytes", f.name, maxString)
		}
	}
	if inv.Hostname == "" {
		return errors.New("hostname: missing")
	}
	if len(inv.IPs) > maxIPs {
		return fmt.Errorf("ips: %d addresses, at most %d", len(inv.IPs), maxIPs)
	}
	for i, ip := range inv.IPs {
		if _, err := netip.ParseAddr(ip); err != nil {
			return fmt.Errorf("ips[%d]: %q is not an IP address", i, ip)
		}
	}
	return nil
}

// Validate checks an enrolment request.
func (e *EnrollRequest) Validate() error {
	if e.V < 1 {
		return fmt.Errorf("v: unsupported message version %d", e.V)
	}
	if e.Token == "" {
		return errors.New("token: missing")
	}
	if len(e.Token) > maxString {
		return errors.New("token: too long")
	}
	if e.CSR == "" {
		return errors.New("csr: missing")
	}
	if err := e.Inventory.Validate(); err != nil {
		return fmt.Errorf("inventory.%w", err)
	}
	return nil
}

// Millis converts a duration for the wire.
func Millis(d time.Duration) int64 { return d.Milliseconds() }

// FromMillis converts a wire duration.
func FromMillis(ms int64) time.Duration { return time.Duration(ms) * time.Millisecond }

// Event batches.
const (
	// MaxEventsBody bounds an event batch.
	MaxEventsBody = 4 << 20
	// MaxEventsPerBatch bounds the events in one batch.
	MaxEventsPerBatch = 1000
	maxEventData      = 16 << 10
)

// Severities an event may carry.
var severities = map[string]bool{"critical": true, "error": true, "warning": true, "info": true}

// Event is one event from an agent. Its ID is made at the agent and is
// stable across resends, which is what makes delivery exactly-once in the
// store.
type Event struct {
	ID       string          `json:"id"`
	Type     string          `json:"type"`
	Time     time.Time       `json:"time"`
	Severity string          `json:"severity"`
	Data     json.RawMessage `json:"data,omitempty"`
}

// EventBatch carries events, oldest first.
type EventBatch struct {
	V      int     `json:"v"`
	Events []Event `json:"events"`
}

// EventAck answers a batch once it is durably stored.
type EventAck struct {
	V int `json:"v"`
	// Stored counts the events now durably held (new ones and ones a
	// resend repeated). Duplicates is no longer counted (0) since events
	// moved to the telemetry store's group commit; kept for old agents.
	Stored     int `json:"stored"`
	Duplicates int `json:"duplicates"`
}

// Validate checks a batch.
func (b *EventBatch) Validate() error {
	if b.V < 1 {
		return fmt.Errorf("v: unsupported message version %d", b.V)
	}
	if len(b.Events) > MaxEventsPerBatch {
		return fmt.Errorf("events: %d in one batch, at most %d", len(b.Events), MaxEventsPerBatch)
	}
	for i := range b.Events {
		if err := b.Events[i].Validate(); err != nil {
			return fmt.Errorf("events[%d].%w", i, err)
		}
	}
	return nil
}

// Validate checks one event.
func (e *Event) Validate() error {
	switch {
	case e.ID == "" || len(e.ID) > 64 || !utf8.ValidString(e.ID):
		return errors.New("id: must be 1 to 64 bytes of UTF-8")
	case !validName(e.Type):
		return fmt.Errorf("type: %.70q must be 1 to 64 of a-z, 0-9, '-', '_', '.'", e.Type)
	case !severities[e.Severity]:
		return fmt.Errorf("severity: %.40q must be critical, error, warning or info", e.Severity)
	case e.Time.IsZero():
		return errors.New("time: missing")
	case len(e.Data) > maxEventData:
		return fmt.Errorf("data: %d bytes, at most %d", len(e.Data), maxEventData)
	}
	if len(e.Data) > 0 {
		if t := bytes.TrimSpace(e.Data); len(t) == 0 || t[0] != '{' {
			return errors.New("data: must be a JSON object")
		}
		// encoding/json keeps a RawMessage's bytes as they came; the stores
		// hold text.
		if !utf8.Valid(e.Data) {
			return errors.New("data: must be valid UTF-8")
		}
	}
	return nil
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}
