//go:build !unix

package server

import "log/slog"

func warnFileLimit(*slog.Logger) {}
