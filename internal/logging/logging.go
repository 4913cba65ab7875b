// Package logging provides the slog logger every yagura command uses: text
// for people at a terminal, JSON for log shippers.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Config selects the format and level.
type Config struct {
	Format string `koanf:"format"` // text | json
	Level  string `koanf:"level"`  // debug | info | warn | error
}

// DefaultConfig logs text at info.
func DefaultConfig() Config { return Config{Format: "text", Level: "info"} }

// New returns a logger writing to w.
func New(w io.Writer, cfg Config) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(cfg.Level)); err != nil {
		return nil, fmt.Errorf("log.level %q: want debug, info, warn or error", cfg.Level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(cfg.Format) {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log.format %q: want text or json", cfg.Format)
}
