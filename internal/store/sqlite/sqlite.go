// Package sqlite opens Yagura's state store in an SQLite file, the embedded
// default for a single manager node. It uses modernc.org/sqlite, which needs
// no cgo. Only manager-side code may import it.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/pressly/goose/v3"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/yagura/yagura/internal/store"
)

// params configures every pooled connection (modernc applies them per
// connection). The shorthand keys are validated by the driver, unlike
// _pragma values, so a typo fails the open instead of being ignored.
//
//   - WAL lets readers run while a heartbeat batch is being written.
//   - busy_timeout makes a writer wait for the lock instead of failing.
//   - synchronous=FULL: a commit is on disk when it returns, even across a
//     power loss. Agents delete events once the manager acknowledges them,
//     so an acknowledged batch must survive anything. (NORMAL would only
//     survive process crashes.) Heartbeats are written in batches, so the
//     extra fsync per commit costs little.
//   - _txlock=immediate takes the write lock at BEGIN: a deferred
//     transaction that reads and then writes (EnrollComputer) would
//     otherwise fail with SQLITE_BUSY when another writer got in between,
//     without the busy handler being consulted.
const params = "_journal_mode=WAL&_busy_timeout=10000&_foreign_keys=on&_synchronous=FULL&_txlock=immediate"

// maxConns bounds the pool. SQLite runs one writer at a time anyway; waiting
// in database/sql's queue is fairer and quicker than spinning in SQLite's
// busy handler, whose sleeps grow to 100 ms.
const maxConns = 8

// Open opens (creating if needed) the state store at path and migrates it.
// A new file and its directory are created readable by the owner only: the
// store holds the CA's private key.
func Open(ctx context.Context, path string) (*store.DB, error) {
	db, err := open(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("open state store %q: %w", path, err)
	}
	return db, nil
}

func open(ctx context.Context, path string) (*store.DB, error) {
	if path == "" {
		return nil, errors.New("empty path")
	}
	// The driver reads everything after the first '?' as parameters.
	if strings.ContainsRune(path, '?') {
		return nil, errors.New("path must not contain '?'")
	}
	// Absolute, so that a path starting "file:" is not taken for a URI.
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, err
	}
	// Create the file before SQLite does, which would use 0644; SQLite
	// gives the -wal and -shm files the database file's mode.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	sqlDB, err := sql.Open("sqlite", abs+"?"+params)
	if err != nil {
		return nil, err
	}
	sqlDB.SetMaxOpenConns(maxConns)
	sqlDB.SetMaxIdleConns(maxConns)
	if err := sqlDB.PingContext(ctx); err != nil {
		sqlDB.Close()
		return nil, err
	}
	db, err := store.New(ctx, sqlDB, store.Dialect{
		Name:              "sqlite",
		GooseDialect:      goose.DialectSQLite3,
		IsUniqueViolation: isUniqueViolation,
	})
	if err != nil {
		sqlDB.Close()
		return nil, err
	}
	return db, nil
}

// isUniqueViolation recognises UNIQUE and PRIMARY KEY violations by their
// extended result codes, which the driver enables on every connection.
func isUniqueViolation(err error) bool {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.Code() {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return true
	}
	return false
}
