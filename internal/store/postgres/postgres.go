// Package postgres opens Yagura's state store in PostgreSQL, the choice when
// several manager nodes share one state. It uses pgx through database/sql.
// Only manager-side code may import it.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/yagura/yagura/internal/store"
)

// Pool limits. A manager node's load is a trickle of API calls plus
// heartbeat batches, so a modest pool per node leaves room on the server's
// default max_connections (100) for several nodes.
const (
	maxOpenConns    = 16
	maxIdleConns    = 4
	connMaxIdleTime = 5 * time.Minute
	// Recycling lets connections follow a failover to a new primary
	// behind the same address.
	connMaxLifetime = time.Hour
)

// Open connects to the database named by dsn (a postgres:// URL or
// key=value string) and migrates it. Manager nodes starting together
// migrate one at a time, serialised by an advisory lock.
func Open(ctx context.Context, dsn string) (*store.DB, error) {
	// The DSN may hold a password: errors name the database, not the DSN.
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("open postgres state store: parse DSN: %w", err)
	}
	db, err := open(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres state store %q on %s:%d: %w", cfg.Database, cfg.Host, cfg.Port, err)
	}
	return db, nil
}

func open(ctx context.Context, cfg *pgx.ConnConfig) (*store.DB, error) {
	locker, err := lock.NewPostgresSessionLocker(
		// Poll every second for up to five minutes rather than goose's
		// 5 s interval: the lock is normally held for milliseconds.
		lock.WithLockTimeout(1, 300),
	)
	if err != nil {
		return nil, err
	}
	sqlDB := stdlib.OpenDB(*cfg)
	sqlDB.SetMaxOpenConns(maxOpenConns)
	sqlDB.SetMaxIdleConns(maxIdleConns)
	sqlDB.SetConnMaxIdleTime(connMaxIdleTime)
	sqlDB.SetConnMaxLifetime(connMaxLifetime)
	if err := sqlDB.PingContext(ctx); err != nil {
		sqlDB.Close()
		return nil, err
	}
	db, err := store.New(ctx, sqlDB, store.Dialect{
		Name:              "postgres",
		GooseDialect:      goose.DialectPostgres,
		Rebind:            true,
		IsUniqueViolation: isUniqueViolation,
		BinaryCollation:   `"C"`,
		MigrationLocker:   locker,
	})
	if err != nil {
		sqlDB.Close()
		return nil, err
	}
	return db, nil
}

// uniqueViolation is SQLSTATE unique_violation.
const uniqueViolation = "23505"

func isUniqueViolation(err error) bool {
	var e *pgconn.PgError
	return errors.As(err, &e) && e.Code == uniqueViolation
}
