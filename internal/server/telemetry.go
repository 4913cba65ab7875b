package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/yagura/yagura/internal/store"
	"github.com/yagura/yagura/internal/telemetry"
	"github.com/yagura/yagura/internal/telemetry/clickhouse"
	"github.com/yagura/yagura/internal/telemetry/duckdb"
)

// TelemetryConfig selects and sizes the telemetry store (events now, flows
// later).
type TelemetryConfig struct {
	Backend string `koanf:"backend"` // duckdb | clickhouse
	// Path is the DuckDB file; default DATA/telemetry.duckdb.
	Path       string           `koanf:"path"`
	ClickHouse ClickHouseConfig `koanf:"clickhouse"`
	// MaxAge drops events older than this; MaxBytes then drops the oldest
	// days while the store is larger (0: no size limit).
	MaxAge      time.Duration `koanf:"max_age"`
	MaxBytes    int64         `koanf:"max_bytes"`
	RetainEvery time.Duration `koanf:"retain_every"`
	// BatchEvents caps how many events go in one insert (group commit).
	BatchEvents int `koanf:"batch_events"`
}

// ClickHouseConfig points at a ClickHouse server (native protocol).
type ClickHouseConfig struct {
	Addr     string `koanf:"addr"` // host:9000
	Database string `koanf:"database"`
	Username string `koanf:"username"`
	Password string `koanf:"password"`
	// TLS uses the secure native port; CAFile adds a CA to trust.
	TLS    bool   `koanf:"tls"`
	CAFile string `koanf:"ca_file"`
}

// DefaultTelemetryConfig is DuckDB in the data folder, 28 days.
func DefaultTelemetryConfig() TelemetryConfig {
	return TelemetryConfig{
		Backend:     "duckdb",
		ClickHouse:  ClickHouseConfig{Database: "yagura", Username: "default"},
		MaxAge:      28 * 24 * time.Hour,
		RetainEvery: time.Hour,
		BatchEvents: 20_000,
	}
}

func (c TelemetryConfig) validate() []error {
	var errs []error
	switch c.Backend {
	case "duckdb":
	case "clickhouse":
		if c.ClickHouse.Addr == "" {
			errs = append(errs, errors.New("telemetry.clickhouse.addr: required for the clickhouse backend (host:9000)"))
		}
	default:
		errs = append(errs, fmt.Errorf("telemetry.backend %q: want duckdb or clickhouse", c.Backend))
	}
	if c.MaxAge < 0 || c.MaxBytes < 0 {
		errs = append(errs, errors.New("telemetry.max_age and telemetry.max_bytes: not negative (0 keeps everything)"))
	}
	if c.RetainEvery < time.Minute {
		errs = append(errs, fmt.Errorf("telemetry.retain_every %s: at least 1m", c.RetainEvery))
	}
	if c.BatchEvents < 100 || c.BatchEvents > 100_000 {
		errs = append(errs, fmt.Errorf("telemetry.batch_events %d: between 100 and 100000", c.BatchEvents))
	}
	return errs
}

func (s *Server) openTelemetry(ctx context.Context) (telemetry.Store, error) {
	c := s.cfg.Telemetry
	if c.Backend == "clickhouse" {
		cc := clickhouse.Config{Addr: c.ClickHouse.Addr, Database: c.ClickHouse.Database, Username: c.ClickHouse.Username, Password: c.ClickHouse.Password}
		tlsCfg, err := clickHouseTLS(c.ClickHouse)
		if err != nil {
			return nil, err
		}
		cc.TLS = tlsCfg
		st, err := clickhouse.Open(ctx, cc)
		if err != nil {
			return nil, fmt.Errorf("open ClickHouse telemetry store at %s: %w", c.ClickHouse.Addr, err)
		}
		return st, nil
	}
	path := c.Path
	if path == "" {
		path = filepath.Join(s.cfg.DataDir, "telemetry.duckdb")
	}
	st, err := duckdb.Open(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("open DuckDB telemetry store %s: %w (is another manager using this data folder?)", path, err)
	}
	return st, nil
}

// clickHouseTLS is the TLS configuration for c; nil for plain TCP.
func clickHouseTLS(c ClickHouseConfig) (*tls.Config, error) {
	if !c.TLS {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("telemetry.clickhouse.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("telemetry.clickhouse.ca_file %s: no PEM certificate in it", c.CAFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// moveLegacyEvents moves events that earlier versions kept in the state
// store into the telemetry store, a batch at a time: each batch is deleted
// from the state store only after the telemetry store committed it, so a
// crash midway repeats a batch (stored once) and loses nothing.
func moveLegacyEvents(ctx context.Context, db *store.DB, ts telemetry.Store, log *slog.Logger) error {
	total := 0
	for {
		n, err := db.MoveEvents(ctx, 10_000, func(evs []store.Event) error {
			out := make([]telemetry.Event, len(evs))
			for i, e := range evs {
				out[i] = telemetry.Event{ComputerID: e.ComputerID, ID: e.ID, Type: e.Type, Severity: e.Severity, Time: e.Time.UTC(), ReceivedAt: e.ReceivedAt.UTC(), Data: e.Data}
			}
			_, err := ts.InsertEvents(ctx, out)
			return err
		})
		if err != nil {
			return fmt.Errorf("move events from the state store to the telemetry store: %w", err)
		}
		total += n
		if n == 0 {
			break
		}
	}
	if total > 0 {
		log.Info("moved events from the state store to the telemetry store", "events", total)
	}
	return nil
}

// retain applies the retention limits now and every RetainEvery.
func retain(ctx context.Context, ts telemetry.Store, c TelemetryConfig, log *slog.Logger) error {
	r := telemetry.Retention{MaxAge: c.MaxAge, MaxBytes: c.MaxBytes}
	t := time.NewTicker(c.RetainEvery)
	defer t.Stop()
	for {
		res, err := ts.Retain(ctx, r, time.Now())
		switch {
		case err != nil && ctx.Err() == nil:
			log.Error("apply telemetry retention", "err", err)
		case res.Events != 0:
			log.Info("telemetry retention removed events", "events", res.Events, "before", res.Before)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
