// Package store provides Yagura's state store: computers, activation tokens,
// the internal CA, alerts, alert rules, notification channels and the
// notification outbox, and settings, kept in SQLite (embedded default) or
// PostgreSQL (shared by several manager nodes).
//
// One SQL implementation, [DB], serves both engines through a small [Dialect];
// the backends live in store/sqlite and store/postgres and differ only in how
// they open the database and recognise driver errors. Consumers (the gateway,
// the API, the fleet monitor) declare the small interfaces they need and are
// handed a *DB. Only manager-side code may import this package: the agent
// build must not link it (checked by a test in cmd/yagura).
package store

import (
	"errors"
	"time"
)

// Sentinel errors. Backends map driver errors onto them; callers use errors.Is.
var (
	// ErrNotFound: the record does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the write collides with existing state (duplicate key,
	// already cleared, already revoked, …).
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the caller passed an argument the store cannot record
	// faithfully (an empty ID, a zero time where an event time is required).
	ErrInvalid = errors.New("invalid argument")

	// Activation-token failures, returned by EnrollComputer. The token is
	// not consumed when any of them is returned.
	ErrTokenUnknown = errors.New("unknown activation token")
	ErrTokenExpired = errors.New("activation token expired")
	ErrTokenRevoked = errors.New("activation token revoked")
	ErrTokenUsedUp  = errors.New("activation token has no uses left")
)

// CA is the manager's internal certificate authority, shared by every
// manager node through the store.
type CA struct {
	CertPEM   string
	KeyPEM    string
	CreatedAt time.Time
}

// Token is an activation token. Only the SHA-256 of the secret is stored.
type Token struct {
	ID          string
	Hash        string // hex SHA-256 of the secret
	Description string
	CreatedAt   time.Time
	ExpiresAt   time.Time // zero: never
	MaxUses     int       // 0: unlimited
	Uses        int
	RevokedAt   time.Time // zero: not revoked
}

// Computer lifecycle states (liveness — online/offline — is computed by the
// fleet monitor, not stored).
const (
	ComputerActive      = "active"
	ComputerDeactivated = "deactivated"
	// ComputerUninstalled: the agent removed itself after an uninstall job.
	ComputerUninstalled = "uninstalled"
)

// Computer is an enrolled agent's host.
type Computer struct {
	ID            string
	Hostname      string
	OS            string
	OSVersion     string
	AgentVersion  string
	IPs           []string
	State         string // ComputerActive or ComputerDeactivated
	TokenID       string // activation token used to enrol
	EnrolledAt    time.Time
	DeactivatedAt time.Time // zero unless deactivated
	LastSeen      time.Time // zero: never heartbeated
	Uptime        time.Duration
	ClockOffset   time.Duration // agent clock minus manager clock at last heartbeat
	CertSerial    string        // hex serial of the newest certificate issued
	CertNotAfter  time.Time
	// Communication overrides the manager-wide direction for this computer
	// (empty: no override).
	Communication string
	// PolicyID is the computer's policy (0: the default policy).
	PolicyID int
	// Settings are the computer's own setting overrides (policy keys).
	Settings map[string]string
	// Isolation is "" or "isolated", as the last isolate or release job left it.
	Isolation string
}

// Presence is what a heartbeat changes on a computer; the fleet monitor
// writes them in batches.
type Presence struct {
	ID           string
	LastSeen     time.Time
	Hostname     string
	OS           string
	OSVersion    string
	AgentVersion string
	IPs          []string
	Uptime       time.Duration
	ClockOffset  time.Duration
}

// Alert severities.
const (
	SeverityCritical = "critical"
	SeverityWarning  = "warning"
	SeverityInfo     = "info"
)

// Alert is raised by the manager about a computer (or the manager itself,
// with an empty ComputerID). At most one alert of a type, computer and
// subject is open at a time; the condition firing again while it is open
// counts an occurrence on it.
type Alert struct {
	ID         string
	Type       string // e.g. "computer-offline", "clock-drift"
	Severity   string
	ComputerID string
	// Subject is what the alert is about beyond the computer, e.g.
	// "src 203.0.113.5" for a rule grouped by source; "" for none.
	Subject string
	RuleID  string // the alert rule that raised it, or ""
	Message string
	// Data is a JSON object of details (what matched), or empty.
	Data     string
	RaisedAt time.Time
	// Occurrences counts the times the condition fired while the alert was
	// open or suppressed, the first included; LastAt is the latest. Both
	// are set by the store.
	Occurrences int64
	LastAt      time.Time
	AckedAt     time.Time // zero unless acknowledged
	AckedBy     string
	ClearedAt   time.Time // zero while open
	ClearedBy   string    // "system" for automatic clears, else the principal
}

// AlertFilter selects alerts; zero fields do not filter.
type AlertFilter struct {
	Open       *bool // true: only open; false: only cleared
	Acked      *bool // true: only acknowledged; false: only unacknowledged
	ComputerID string
	Subject    string
	RuleID     string
	Types      []string
	Limit      int // 0: no limit
}

// Event is an event an agent sent (a security or system event).
type Event struct {
	ComputerID string
	ID         string // made by the agent; unique per computer
	Type       string
	Severity   string
	Time       time.Time // when it happened, by the agent's clock
	ReceivedAt time.Time // when the manager stored it
	Data       string    // JSON object, or empty
}

// EventFilter selects events; zero fields do not filter.
type EventFilter struct {
	ComputerID string
	Types      []string
	Since      time.Time // Time >= Since
	Until      time.Time // Time < Until
	Limit      int       // 0: no limit
}

// Job statuses, per target. Pending, delivered and running are unfinished;
// the others are final.
const (
	JobPending   = "pending"
	JobDelivered = "delivered"
	JobRunning   = "running"
	JobSucceeded = "succeeded"
	JobFailed    = "failed"
	JobExpired   = "expired"
	JobCancelled = "cancelled"
)

// JobFinal reports whether a status is final.
func JobFinal(status string) bool {
	switch status {
	case JobSucceeded, JobFailed, JobExpired, JobCancelled:
		return true
	}
	return false
}

// Job is a command for one or many computers.
type Job struct {
	ID          string
	Kind        string // heartbeat-now, collect-logs, uninstall, …
	Params      string // JSON object, or empty
	Description string
	CreatedBy   string
	CreatedAt   time.Time
	ExpiresAt   time.Time
	CancelledAt time.Time
}

// JobTarget is a job's progress on one computer.
type JobTarget struct {
	JobID       string
	ComputerID  string
	Status      string
	UpdatedAt   time.Time
	DeliveredAt time.Time
	StartedAt   time.Time
	FinishedAt  time.Time
	Result      string // small JSON, or empty
	FileID      string // an uploaded file, or empty
}

// File is a file an agent uploaded for a job.
type File struct {
	ID         string
	JobID      string
	ComputerID string
	Name       string
	Size       int64
	SHA256     string // hex, as announced by the agent
	Received   int64  // bytes received so far
	CreatedAt  time.Time
	CompleteAt time.Time // zero until every byte arrived and the hash matched
}

// User is a person who signs in to the console or the API.
type User struct {
	ID           string
	Username     string
	PasswordHash string // argon2id in PHC form
	Role         string // admin, operator, auditor
	CreatedAt    time.Time
	DisabledAt   time.Time
}

// APIClient is a program using the client_credentials grant.
type APIClient struct {
	ID          string
	SecretHash  string
	Description string
	Role        string
	CreatedBy   string
	CreatedAt   time.Time
	ExpiresAt   time.Time // zero: never
	RevokedAt   time.Time
}

// OAuthToken is an issued access or refresh token, by its hash.
type OAuthToken struct {
	Hash      string
	Kind      string // access | refresh
	Family    string
	Subject   string // user:ID or client:ID
	Role      string
	CreatedAt time.Time
	ExpiresAt time.Time
	UsedAt    time.Time
	RevokedAt time.Time
}

// AuditEntry records one state-changing call.
type AuditEntry struct {
	ID       string
	Time     time.Time
	Actor    string
	Remote   string
	Method   string
	Route    string
	Resource string
	Summary  string
	Status   int
}

// AuditFilter selects audit entries; zero fields do not filter.
type AuditFilter struct {
	Actor  string
	Since  time.Time
	Until  time.Time
	Before string // cursor: entries with an ID lower than this
	Limit  int
}
