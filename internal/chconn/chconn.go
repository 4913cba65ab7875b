// Package chconn opens the ClickHouse connections of the ClickHouse stores
// (events, flows): to a database created on first start, as a DuckDB file
// is, over the native protocol.
//
// Only those stores import it; it must stay out of the agent.
package chconn

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Options says which server and database to use and how to speak to it.
type Options struct {
	Addr     string // host:port of the native protocol
	Database string // created if missing; must pass ValidDatabase
	Username string
	Password string
	TLS      *tls.Config // nil: plain TCP
	Compress bool        // LZ4 both ways
	Settings map[string]any
}

// Open connects to o.Database on o.Addr, creating the database first (from
// the "default" database) if it is missing, and checks the connection with
// a ping. Its errors name the server and the database; callers add which
// store failed.
func Open(ctx context.Context, o Options) (driver.Conn, error) {
	if !ValidDatabase(o.Database) {
		return nil, fmt.Errorf("database name %q is not a plain identifier", o.Database)
	}
	boot, err := dial(ctx, o, "default")
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", o.Addr, err)
	}
	err = boot.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+o.Database)
	boot.Close()
	if err != nil {
		return nil, fmt.Errorf("create database %q on %s: %w", o.Database, o.Addr, err)
	}
	conn, err := dial(ctx, o, o.Database)
	if err != nil {
		return nil, fmt.Errorf("open %s database %q: %w", o.Addr, o.Database, err)
	}
	return conn, nil
}

func dial(ctx context.Context, o Options, db string) (driver.Conn, error) {
	opts := &clickhouse.Options{
		Addr:        []string{o.Addr},
		Protocol:    clickhouse.Native,
		Auth:        clickhouse.Auth{Database: db, Username: o.Username, Password: o.Password},
		TLS:         o.TLS,
		DialTimeout: 10 * time.Second,
		Settings:    o.Settings,
	}
	if o.Compress {
		opts.Compression = &clickhouse.Compression{Method: clickhouse.CompressionLZ4}
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, err
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// ValidDatabase keeps a database name, which cannot be a bound parameter,
// to a plain identifier: letters, digits and _, not starting with a digit,
// at most 64 bytes.
func ValidDatabase(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}
