//go:build unix

package server

import (
	"log/slog"
	"syscall"
)

// warnFileLimit says how many agent connections the process can hold: each
// connected agent keeps one socket open between heartbeats.
func warnFileLimit(log *slog.Logger) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if lim.Cur < 65536 {
		log.Warn("the open-file limit caps concurrent agent connections; raise it (systemd LimitNOFILE=1048576) for large fleets",
			"limit", lim.Cur, "max_agents_connected", int64(lim.Cur)-256)
	}
}
