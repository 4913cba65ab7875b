package sim

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/ctl"
	"github.com/yagura/yagura/internal/server"
)

// TestRun drives a real in-process manager with a few simulated agents, in
// both modes and with both clients.
func TestRun(t *testing.T) {
	cfg := server.DefaultConfig()
	cfg.DataDir, cfg.HTTP.Listen = t.TempDir(), "127.0.0.1:0"
	cfg.HTTP.MetricsAnonymous = false
	srv, err := server.New(cfg, server.Options{Version: "test"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	}()
	<-srv.Ready()
	info := srv.Info()
	target := ctl.Target{URL: info.URL, User: "admin", Password: info.AdminPassword, CAFingerprint: info.CAFingerprint, From: "test"}
	state := t.TempDir()
	tests := []struct {
		name string
		o    Options
	}{
		{"open loop, raw", Options{Agents: 20, Rate: 200, Concurrency: 8, Client: "raw"}},
		{"closed loop, raw", Options{Agents: 20, Concurrency: 4, Client: "raw"}},
		{"open loop, agent client", Options{Agents: 20, Rate: 200, Concurrency: 8, Client: "agent"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			o.Duration, o.Warmup, o.StateDir, o.SourceIPs = time.Second, 200*time.Millisecond, state, 2
			res, err := Run(t.Context(), target, o, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if res.Errors != 0 || res.Heartbeats < 50 || res.P99ms <= 0 || res.WireBytesPerBeat < 100 {
				t.Fatalf("implausible result: %+v", res)
			}
			if res.ManagerCPUPerBeatUs <= 0 {
				t.Errorf("manager CPU not measured: %+v", res)
			}
			if o.Rate > 0 && (res.Rate < o.Rate*0.8 || res.Rate > o.Rate*1.2) {
				t.Errorf("open loop at %.0f/s achieved %.0f/s", o.Rate, res.Rate)
			}
		})
	}
}
