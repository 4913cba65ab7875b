package server

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/yagura/yagura/internal/fleet"
	"github.com/yagura/yagura/internal/gateway"
	"github.com/yagura/yagura/internal/jobs"
	"github.com/yagura/yagura/internal/logging"
	"github.com/yagura/yagura/internal/outbox"
	"github.com/yagura/yagura/internal/rollout"
)

// Config is the manager's configuration (`yagura server --config FILE`).
type Config struct {
	// DataDir holds the embedded state store, the server certificate and
	// the bootstrap credentials.
	DataDir string         `koanf:"data_dir"`
	Log     logging.Config `koanf:"log"`
	HTTP    HTTPConfig     `koanf:"http"`
	Store   StoreConfig    `koanf:"store"`
	PKI     PKIConfig      `koanf:"pki"`
	Gateway gateway.Config `koanf:"gateway"`
	Fleet   fleet.Config   `koanf:"fleet"`
	Jobs    jobs.Config    `koanf:"jobs"`
	Auth    AuthConfig     `koanf:"auth"`
	Rollout rollout.Config `koanf:"rollout"`
	// Telemetry is where events (and later flows) are kept.
	Telemetry TelemetryConfig `koanf:"telemetry"`
	// Notifications tunes delivery from the outbox.
	Notifications outbox.Config `koanf:"notifications"`
	// Flows configures the flow collector and the flow store.
	Flows FlowsConfig `koanf:"flows"`
}

// AuthConfig sets token lifetimes.
type AuthConfig struct {
	AccessTokenTTL  time.Duration `koanf:"access_token_ttl"`
	RefreshTokenTTL time.Duration `koanf:"refresh_token_ttl"`
	// ConsoleSessionTTL is how long a web console sign-in lasts.
	ConsoleSessionTTL time.Duration `koanf:"console_session_ttl"`
}

// HTTPConfig configures the HTTPS listener shared by the API, the console
// and the agent gateway.
type HTTPConfig struct {
	Listen string `koanf:"listen"`
	// Names are extra host names and IP addresses for the generated server
	// certificate (the host name, localhost and the host's addresses are
	// always included).
	Names []string `koanf:"names"`
	// CertFile and KeyFile replace the generated server certificate with
	// one the operator provides. Agents then pin that chain's CA.
	CertFile string `koanf:"cert_file"`
	KeyFile  string `koanf:"key_file"`
	// MetricsAnonymous serves /metrics without authentication.
	MetricsAnonymous bool `koanf:"metrics_anonymous"`
	// IdleTimeout keeps agent connections open between heartbeats; it must
	// exceed the heartbeat interval to spare each beat a TLS handshake.
	IdleTimeout time.Duration `koanf:"idle_timeout"`
	// PublicURL is the address written into credentials files and shown to
	// operators; empty: derived from the listen address.
	PublicURL string `koanf:"public_url"`
}

// StoreConfig selects the state store.
type StoreConfig struct {
	Driver string `koanf:"driver"` // sqlite | postgres
	// DSN: for sqlite a file path (default DATA/state.db); for postgres a
	// connection string such as postgres://user:pass@host/db.
	DSN string `koanf:"dsn"`
}

// PKIConfig sets certificate lifetimes.
type PKIConfig struct {
	CAValidity         time.Duration `koanf:"ca_validity"`
	ServerCertValidity time.Duration `koanf:"server_cert_validity"`
}

// DefaultConfig returns the configuration of a production manager.
func DefaultConfig() Config {
	return Config{
		DataDir: "/var/lib/yagura",
		Log:     logging.DefaultConfig(),
		HTTP: HTTPConfig{
			Listen:      ":8443",
			Names:       []string{},
			IdleTimeout: 5 * time.Minute,
		},
		Store:   StoreConfig{Driver: "sqlite"},
		PKI:     PKIConfig{CAValidity: 10 * 365 * 24 * time.Hour, ServerCertValidity: 365 * 24 * time.Hour},
		Gateway: gateway.DefaultConfig(),
		Fleet:   fleet.DefaultConfig(),
		Jobs:    jobs.DefaultConfig(),
		Auth:    AuthConfig{AccessTokenTTL: 24 * time.Hour, RefreshTokenTTL: 48 * time.Hour, ConsoleSessionTTL: 8 * time.Hour},
		Rollout: rollout.DefaultConfig(),

		Telemetry:     DefaultTelemetryConfig(),
		Notifications: outbox.DefaultConfig(),
		Flows:         DefaultFlowsConfig(),
	}
}

// SecretKeys are masked in --dump-config.
var SecretKeys = []string{"store.dsn", "telemetry.clickhouse.password"}

// Validate checks values that decoding cannot.
func (c *Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data_dir: required"))
	}
	if _, _, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
		errs = append(errs, fmt.Errorf("http.listen %q: want HOST:PORT or :PORT", c.HTTP.Listen))
	}
	if (c.HTTP.CertFile == "") != (c.HTTP.KeyFile == "") {
		errs = append(errs, errors.New("http.cert_file and http.key_file: give both or neither"))
	}
	switch c.Store.Driver {
	case "sqlite":
	case "postgres":
		if c.Store.DSN == "" {
			errs = append(errs, errors.New("store.dsn: required for the postgres driver (postgres://user:password@host:5432/yagura)"))
		}
	default:
		errs = append(errs, fmt.Errorf("store.driver %q: want sqlite or postgres", c.Store.Driver))
	}
	if c.Gateway.AgentCertValidity < time.Hour {
		errs = append(errs, fmt.Errorf("gateway.agent_cert_validity %s: at least 1h", c.Gateway.AgentCertValidity))
	}
	if c.PKI.ServerCertValidity < time.Hour || c.PKI.CAValidity < c.PKI.ServerCertValidity {
		errs = append(errs, errors.New("pki: server_cert_validity must be at least 1h and no longer than ca_validity"))
	}
	if c.Fleet.FlushEvery <= 0 || c.Fleet.PersistSeenEvery <= 0 {
		errs = append(errs, errors.New("fleet.flush_every and fleet.persist_seen_every must be positive"))
	}
	if c.Jobs.DefaultExpiry < time.Minute || c.Jobs.MaxUploadBytes < 1<<20 {
		errs = append(errs, errors.New("jobs: default_expiry at least 1m, max_upload_bytes at least 1 MiB"))
	}
	if c.Auth.AccessTokenTTL < time.Minute || c.Auth.RefreshTokenTTL < c.Auth.AccessTokenTTL {
		errs = append(errs, errors.New("auth: access_token_ttl at least 1m, refresh_token_ttl at least as long"))
	}
	if c.Auth.ConsoleSessionTTL < time.Minute || c.Auth.ConsoleSessionTTL > 30*24*time.Hour {
		errs = append(errs, errors.New("auth.console_session_ttl: from 1m to 720h"))
	}
	errs = append(errs, c.Telemetry.validate()...)
	errs = append(errs, c.Flows.validate()...)
	if c.HTTP.IdleTimeout < time.Second {
		errs = append(errs, errors.New("http.idle_timeout: at least 1s"))
	}
	return errors.Join(errs...)
}
