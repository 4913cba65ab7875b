package sim

import (
	"io"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/ctl"
	"github.com/yagura/yagura/internal/server"
	"github.com/yagura/yagura/internal/server/servertest"
)

// TestRun drives a real in-process manager with a few simulated agents, in
// both modes and with both clients.
func TestRun(t *testing.T) {
	cfg := servertest.Config(t)
	cfg.HTTP.MetricsAnonymous = false // the simulator must sign in to read /metrics
	m := servertest.Start(t, cfg, server.Options{Version: "test"})
	target := ctl.Target{URL: m.URL, User: "admin", Password: m.AdminPassword, CAFingerprint: m.CAFingerprint, From: "test"}
	state := t.TempDir()
	tests := []struct {
		name string
		o    Options
	}{
		{"open loop, raw", Options{Agents: 20, Rate: 200, Concurrency: 8, Client: "raw"}},
		{"closed loop, raw", Options{Agents: 20, Concurrency: 4, Client: "raw"}},
		{"open loop, agent client", Options{Agents: 20, Rate: 200, Concurrency: 8, Client: "agent"}},
		{"event batches", Options{Agents: 5, Concurrency: 4, Events: 100}},
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
			if o.Events > 0 {
				if res.EventsPerBatch != o.Events || res.EventsPerS != res.Rate*float64(o.Events) {
					t.Errorf("event figures: %+v", res)
				}
				var n struct{ Count int64 }
				c, err := ctl.NewClient(target)
				if err != nil {
					t.Fatal(err)
				}
				if err := c.Do(t.Context(), "GET", "/api/v1/events/count", nil, nil, &n); err != nil {
					t.Fatal(err)
				}
				if n.Count < res.Heartbeats*int64(o.Events) {
					t.Errorf("the manager holds %d events; the simulator had %d batches of %d acknowledged while measuring", n.Count, res.Heartbeats, o.Events)
				}
			}
			if o.Rate > 0 && (res.Rate < o.Rate*0.8 || res.Rate > o.Rate*1.2) {
				t.Errorf("open loop at %.0f/s achieved %.0f/s", o.Rate, res.Rate)
			}
		})
	}
}
