package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/yagura/yagura/internal/api"
	"github.com/yagura/yagura/internal/flowstore"
	fch "github.com/yagura/yagura/internal/flowstore/clickhouse"
	fduck "github.com/yagura/yagura/internal/flowstore/duckdb"
	"github.com/yagura/yagura/internal/store"

	"github.com/yagura/yagura/internal/collector"
)

// FlowsConfig configures the flow collector and the flow store. The store
// uses the telemetry backend (telemetry.backend): DuckDB in its own file
// beside the events, or the same ClickHouse server.
type FlowsConfig struct {
	// Enabled starts the collector and the flow API.
	Enabled   bool             `koanf:"enabled"`
	Collector collector.Config `koanf:"collector"`
	// Path is the DuckDB file; default DATA/flows.duckdb.
	Path string `koanf:"path"`
	// MaxAge drops raw flows older than this; MaxBytes then drops the
	// oldest days while the store is larger (0: no size limit).
	// RollupMaxAge keeps the 5-minute rollups, which are small, longer
	// for long-range charts.
	MaxAge       time.Duration `koanf:"max_age"`
	MaxBytes     int64         `koanf:"max_bytes"`
	RollupMaxAge time.Duration `koanf:"rollup_max_age"`
	RetainEvery  time.Duration `koanf:"retain_every"`
	// FlowmonTimeZone is the zone of times without an offset in the
	// Flowmon-compatible API (/rest/fmc), as an appliance uses its own:
	// Asia/Tokyo for scripts written for one in Japan. Default UTC.
	FlowmonTimeZone string `koanf:"flowmon_time_zone"`
}

// DefaultFlowsConfig listens on the standard ports on every address and
// keeps raw flows 14 days, rollups a year.
func DefaultFlowsConfig() FlowsConfig {
	return FlowsConfig{
		Enabled:         true,
		Collector:       collector.DefaultConfig(),
		MaxAge:          14 * 24 * time.Hour,
		RollupMaxAge:    365 * 24 * time.Hour,
		RetainEvery:     10 * time.Minute,
		FlowmonTimeZone: "UTC",
	}
}

func (c FlowsConfig) validate() []error {
	if !c.Enabled {
		return nil
	}
	var errs []error
	if err := c.Collector.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("flows.collector.%w", err))
	}
	if c.MaxAge < 0 || c.MaxBytes < 0 || c.RollupMaxAge < 0 {
		errs = append(errs, errors.New("flows.max_age, flows.max_bytes and flows.rollup_max_age: not negative (0 keeps everything)"))
	}
	if c.RetainEvery < time.Minute {
		errs = append(errs, fmt.Errorf("flows.retain_every %s: at least 1m", c.RetainEvery))
	}
	if _, err := time.LoadLocation(c.FlowmonTimeZone); err != nil {
		errs = append(errs, fmt.Errorf("flows.flowmon_time_zone %q: %v (use an IANA name such as Asia/Tokyo, or UTC)", c.FlowmonTimeZone, err))
	}
	return errs
}

// openFlowStore opens the flow store on the telemetry backend.
func (s *Server) openFlowStore(ctx context.Context) (flowstore.Store, error) {
	if s.cfg.Telemetry.Backend == "clickhouse" {
		c := s.cfg.Telemetry.ClickHouse
		tlsCfg, err := clickHouseTLS(c)
		if err != nil {
			return nil, err
		}
		st, err := fch.Open(ctx, fch.Config{Addr: c.Addr, Database: c.Database, Username: c.Username, Password: c.Password, TLS: tlsCfg})
		if err != nil {
			return nil, fmt.Errorf("open ClickHouse flow store at %s: %w", c.Addr, err)
		}
		return st, nil
	}
	path := s.cfg.Flows.Path
	if path == "" {
		path = filepath.Join(s.cfg.DataDir, "flows.duckdb")
	}
	st, err := fduck.Open(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("open DuckDB flow store %s: %w (is another manager using this data folder?)", path, err)
	}
	return st, nil
}

// flows is the flow collector of a running manager and what it needs of
// the state store.
type flows struct {
	collector *collector.Collector
	db        *store.DB
	log       *slog.Logger
}

// newFlows builds the collector over an open store and gives it the
// exporters' settings from the state store. Exporters the collector hears
// for the first time are registered there, which makes them channels of
// the live profile.
func newFlows(ctx context.Context, cfg FlowsConfig, dataDir string, fs flowstore.Store, db *store.DB, log *slog.Logger, reg prometheus.Registerer) (*flows, error) {
	cc := cfg.Collector
	if cc.TemplatesFile == "" {
		cc.TemplatesFile = filepath.Join(dataDir, "flow-templates.json")
	}
	coll, err := collector.New(cc, fs, log, reg)
	if err != nil {
		return nil, fmt.Errorf("flows.collector: %w", err)
	}
	f := &flows{collector: coll, db: db, log: log}
	if err := f.loadSettings(ctx); err != nil {
		return nil, err
	}
	coll.OnNewExporter(func(st collector.ExporterStatus) {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, err := db.UpsertFlowExporterSeen(rctx, st.Address, st.FirstSeen); err != nil {
			log.Error("register flow exporter", "exporter", st.Address, "err", err)
			return
		}
		log.Info("new flow exporter", "exporter", st.Address, "protocols", st.Protocols)
	})
	return f, nil
}

func (f *flows) loadSettings(ctx context.Context) error {
	es, err := f.db.ListFlowExporters(ctx)
	if err != nil {
		return fmt.Errorf("load flow exporters: %w", err)
	}
	f.collector.SetExporterSettings(api.ExporterSettings(es))
	return nil
}

// run runs the collector, and follows changes other manager nodes make to
// exporters' settings (this node's API pushes its own at once).
func (f *flows) run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- f.collector.Run(ctx) }()
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	var rev int64
	for {
		select {
		case err := <-errc:
			if err != nil {
				return fmt.Errorf("flow collector: %w", err)
			}
			return nil
		case <-t.C:
			r, err := f.db.FlowRevision(ctx)
			if err != nil {
				if ctx.Err() == nil {
					f.log.Error("read flow settings revision", "err", err)
				}
				continue
			}
			if r != rev {
				if err := f.loadSettings(ctx); err != nil {
					f.log.Error("reload flow exporter settings", "err", err)
					continue
				}
				rev = r
			}
		}
	}
}

// retainFlows applies the flow retention now and every RetainEvery.
func retainFlows(ctx context.Context, fs flowstore.Store, c FlowsConfig, log *slog.Logger) error {
	r := flowstore.Retention{MaxAge: c.MaxAge, MaxBytes: c.MaxBytes, RollupMaxAge: c.RollupMaxAge}
	t := time.NewTicker(c.RetainEvery)
	defer t.Stop()
	for {
		if err := fs.Retain(ctx, r, time.Now()); err != nil && ctx.Err() == nil {
			log.Error("apply flow retention", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
