// Package sim provides `yagura sim`, a load generator that enrols many
// simulated agents — each with its own key and certificate — and makes them
// heartbeat against a manager over real TLS, reporting throughput, latency
// and bytes on the wire. It uses the agent's own client code.
package sim

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/yagura/yagura/internal/agent"
	"github.com/yagura/yagura/internal/api"
	"github.com/yagura/yagura/internal/ctl"
	"github.com/yagura/yagura/internal/pki"
	"github.com/yagura/yagura/internal/proto"
)

// Options configure a run.
type Options struct {
	Agents      int
	Rate        float64 // heartbeats/s across all agents; 0: closed loop
	Concurrency int     // closed loop: requests in flight
	Duration    time.Duration
	Warmup      time.Duration
	StateDir    string // identities are kept here between runs
	SourceIPs   int    // loopback source addresses to spread connections over
	Progress    bool
	// Client is "raw" (lean TLS client, the default) or "agent" (the real
	// agent client with net/http).
	Client string
	// Events > 0 sends batches of this many events instead of heartbeats
	// (with the real agent client), to measure event ingest.
	Events int
}

// Result is what a run measured.
type Result struct {
	Agents           int     `json:"agents"`
	Mode             string  `json:"mode"`
	Client           string  `json:"client"`
	TargetRate       float64 `json:"target_rate,omitempty"`
	DurationS        float64 `json:"duration_s"`
	Heartbeats       int64   `json:"heartbeats"`
	Errors           int64   `json:"errors"`
	Rate             float64 `json:"heartbeats_per_s"`
	P50ms            float64 `json:"p50_ms"`
	P99ms            float64 `json:"p99_ms"`
	P999ms           float64 `json:"p999_ms"`
	MaxMs            float64 `json:"max_ms"`
	WireBytesPerBeat float64 `json:"wire_bytes_per_heartbeat"`
	// ManagerCPUPerBeat is the manager process's CPU time per heartbeat
	// while measuring, from its /metrics (process_cpu_seconds_total).
	ManagerCPUPerBeatUs float64 `json:"manager_cpu_us_per_heartbeat,omitempty"`
	ConnectSeconds      float64 `json:"connect_s"`
	// EventsPerBatch and EventsPerS are set when batches of events were
	// sent instead of heartbeats (each "heartbeat" above is one batch).
	EventsPerBatch    int     `json:"events_per_batch,omitempty"`
	EventsPerS        float64 `json:"events_per_s,omitempty"`
	FirstErrorMessage string  `json:"first_error,omitempty"`
}

type identity struct {
	AgentID string `json:"id"`
	Cert    string `json:"cert"`
	Key     string `json:"key"`
}

// Command returns `yagura sim`.
func Command() *cobra.Command {
	var o Options
	var server, token, fp, creds, out string
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Simulate many agents heartbeating against a manager (load test)",
		Long: `Enrols --agents simulated agents (each with its own certificate; identities are
kept in --state for the next run), connects them all, then makes them
heartbeat for --duration, either at a fixed total --rate (open loop) or as
fast as --concurrency requests in flight allow (closed loop). Prints
heartbeats/s, latency percentiles and TLS bytes on the wire per heartbeat.

Each connected agent holds one socket, in this process and in the manager:
raise the open-file limit (ulimit -n) above the agent count.`,
		Example: `  yagura sim --credentials yagura-data/dev-credentials.json --agents 1000 --rate 5000 --duration 30s
  yagura sim --credentials /var/lib/yagura/admin-credentials.json --agents 10000 --concurrency 256 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := ctl.ResolveTarget(server, token, fp, creds, os.Getenv)
			if err != nil {
				return err
			}
			res, err := Run(cmd.Context(), t, o, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if out == "json" {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(res)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "agents %d, %s, %s client, %.0fs: %d heartbeats, %.0f/s, p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.1f ms, errors %d, %.0f wire bytes/heartbeat, manager %.1f µs CPU/heartbeat\n",
				res.Agents, res.Mode, res.Client, res.DurationS, res.Heartbeats, res.Rate, res.P50ms, res.P99ms, res.P999ms, res.MaxMs, res.Errors, res.WireBytesPerBeat, res.ManagerCPUPerBeatUs)
			if res.EventsPerBatch > 0 {
				fmt.Fprintf(w, "events: %d per batch, %.0f events/s stored\n", res.EventsPerBatch, res.EventsPerS)
			}
			if res.FirstErrorMessage != "" {
				fmt.Fprintf(w, "first error: %s\n", res.FirstErrorMessage)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&server, "server", "", "manager URL")
	f.StringVar(&token, "token", "", "bearer token of an administrator or operator (default: sign in with the credentials file)")
	f.StringVar(&fp, "ca-fingerprint", "", "manager CA fingerprint")
	f.StringVar(&creds, "credentials", "", "credentials file written by the manager")
	f.IntVar(&o.Agents, "agents", 1000, "number of simulated agents")
	f.Float64Var(&o.Rate, "rate", 0, "total heartbeats per second (open loop); 0: closed loop")
	f.IntVar(&o.Concurrency, "concurrency", 128, "heartbeats in flight at most (closed loop: always)")
	f.DurationVar(&o.Duration, "duration", 30*time.Second, "how long to measure")
	f.DurationVar(&o.Warmup, "warmup", 3*time.Second, "run before measuring")
	f.StringVar(&o.StateDir, "state", "yagura-sim", "folder keeping simulated identities between runs")
	f.IntVar(&o.SourceIPs, "source-ips", 4, "spread connections over 127.0.0.1..N (each gives ~28k ephemeral ports)")
	f.StringVarP(&out, "output", "o", "text", "text or json")
	f.BoolVar(&o.Progress, "progress", true, "show progress bars")
	f.IntVar(&o.Events, "events", 0, "send batches of this many events (at most 1000) instead of heartbeats: measures event ingest")
	f.StringVar(&o.Client, "client", "raw", "raw: lean TLS client (measures the manager); agent: the real agent client (net/http)")
	return cmd
}

// Run performs one simulation.
func Run(ctx context.Context, t ctl.Target, o Options, progress io.Writer) (*Result, error) {
	if o.Agents < 1 || o.Duration <= 0 {
		return nil, errors.New("--agents and --duration must be positive")
	}
	if !o.Progress {
		progress = io.Discard
	}
	ids, err := identities(ctx, t, o, progress)
	if err != nil {
		return nil, err
	}
	var wire atomic.Int64
	dial := dialer(t.URL, o.SourceIPs, &wire)
	var b beater
	switch {
	case o.Events > proto.MaxEventsPerBatch:
		err = fmt.Errorf("--events %d: at most %d per batch", o.Events, proto.MaxEventsPerBatch)
	case o.Events > 0:
		o.Client = "agent"
		b, err = newEventSender(target{t.URL, t.CAFingerprint}, ids, dial, o.Events)
	case o.Client == "agent":
		b, err = newAgentBeater(target{t.URL, t.CAFingerprint}, ids, dial)
	case o.Client == "raw" || o.Client == "":
		o.Client = "raw"
		b, err = newRawBeater(target{t.URL, t.CAFingerprint}, ids, dial)
	default:
		err = fmt.Errorf("--client %q: want raw or agent", o.Client)
	}
	if err != nil {
		return nil, err
	}
	defer b.close()

	// Connect every agent with its first (inventory-bearing) heartbeat.
	start := time.Now()
	bar := newBar(len(ids), "connecting agents", progress)
	seq := make([]atomic.Uint64, len(ids))
	var firstErr atomic.Value
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(64)
	for i := range ids {
		g.Go(func() error {
			if err := b.beat(gctx, i, beat(i, seq[i].Add(1), true)); err != nil {
				return fmt.Errorf("first heartbeat of simulated agent %d: %w", i, err)
			}
			_ = bar.Add(1)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	_ = bar.Finish()
	connect := time.Since(start)

	res := &Result{Agents: len(ids), Client: o.Client, ConnectSeconds: connect.Seconds()}
	var beats, errs atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	measuring := atomic.Bool{}
	record := func(ctx context.Context, err error, d time.Duration, local *[]time.Duration) {
		if !measuring.Load() {
			return
		}
		if err != nil {
			if ctx.Err() == nil {
				errs.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			}
			return
		}
		beats.Add(1)
		*local = append(*local, d)
	}
	one := func(ctx context.Context, i int, local *[]time.Duration) {
		t0 := time.Now()
		err := b.beat(ctx, i, beat(i, seq[i].Add(1), false))
		record(ctx, err, time.Since(t0), local)
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	if o.Rate > 0 {
		res.Mode, res.TargetRate = "open loop", o.Rate
		// One dispatcher paces the beats and a pool of workers sends them:
		// a goroutine and a timer per agent would cost the load generator
		// more than the beats. Agents are visited round robin, so each
		// beats every agents/rate seconds. Latency counts from when a beat
		// was due, so a manager that falls behind is charged for the
		// queueing too (no coordinated omission).
		type job struct {
			i   int
			due time.Time
		}
		jobs := make(chan job, 1024)
		wg.Go(func() {
			defer close(jobs)
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			t0, sent, i := time.Now(), 0, rand.IntN(len(ids))
			for {
				select {
				case <-runCtx.Done():
					return
				case now := <-tick.C:
					for due := int(now.Sub(t0).Seconds() * o.Rate); sent < due; sent++ {
						select {
						case jobs <- job{i, t0.Add(time.Duration(float64(sent) / o.Rate * float64(time.Second)))}:
						case <-runCtx.Done():
							return
						}
						i = (i + 1) % len(ids)
					}
				}
			}
		})
		for range max(o.Concurrency, 1) {
			wg.Go(func() {
				var local []time.Duration
				for j := range jobs {
					err := b.beat(runCtx, j.i, beat(j.i, seq[j.i].Add(1), false))
					record(runCtx, err, time.Since(j.due), &local)
				}
				mu.Lock()
				lat = append(lat, local...)
				mu.Unlock()
			})
		}
	} else {
		res.Mode = fmt.Sprintf("closed loop, %d in flight", o.Concurrency)
		var cursor atomic.Int64
		for range o.Concurrency {
			wg.Go(func() {
				var local []time.Duration
				for runCtx.Err() == nil {
					i := int(cursor.Add(1)-1) % len(ids)
					one(runCtx, i, &local)
				}
				mu.Lock()
				lat = append(lat, local...)
				mu.Unlock()
			})
		}
	}
	select {
	case <-time.After(o.Warmup):
	case <-ctx.Done():
		cancel()
		wg.Wait()
		return nil, ctx.Err()
	}
	api, _ := ctl.NewClient(t)
	cpu0 := managerCPU(ctx, api)
	wire.Store(0)
	measuring.Store(true)
	t0 := time.Now()
	mbar := newBar(int(o.Duration/time.Second), "measuring (s)", progress)
	tick := time.NewTicker(time.Second)
	deadline := time.After(o.Duration)
loop:
	for {
		select {
		case <-tick.C:
			_ = mbar.Add(1)
		case <-deadline:
			break loop
		case <-ctx.Done():
			break loop
		}
	}
	tick.Stop()
	measuring.Store(false)
	elapsed := time.Since(t0)
	wireBytes := wire.Load()
	cpu1 := managerCPU(ctx, api)
	cancel()
	wg.Wait()
	_ = mbar.Finish()

	res.DurationS = elapsed.Seconds()
	res.Heartbeats, res.Errors = beats.Load(), errs.Load()
	res.Rate = float64(res.Heartbeats) / elapsed.Seconds()
	if o.Events > 0 {
		res.EventsPerBatch, res.EventsPerS = o.Events, res.Rate*float64(o.Events)
	}
	if res.Heartbeats > 0 {
		res.WireBytesPerBeat = float64(wireBytes) / float64(res.Heartbeats)
	}
	if cpu0 > 0 && cpu1 > cpu0 && res.Heartbeats > 0 {
		res.ManagerCPUPerBeatUs = (cpu1 - cpu0) * 1e6 / float64(res.Heartbeats)
	}
	if v := firstErr.Load(); v != nil {
		res.FirstErrorMessage = v.(string)
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / 1e6
	}
	res.P50ms, res.P99ms, res.P999ms = pct(0.50), pct(0.99), pct(0.999)
	if len(lat) > 0 {
		res.MaxMs = float64(lat[len(lat)-1]) / 1e6
	}
	return res, ctx.Err()
}

// managerCPU reads the manager's CPU seconds from /metrics; 0 if unknown
// (the manager may run on another host, or refuse).
func managerCPU(ctx context.Context, c *ctl.Client) float64 {
	if c == nil {
		return 0
	}
	b, err := c.Raw(ctx, http.MethodGet, "/metrics", nil, nil)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "process_cpu_seconds_total "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}

func newBar(n int, what string, w io.Writer) *progressbar.ProgressBar {
	return progressbar.NewOptions(n, progressbar.OptionSetWriter(w), progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(), progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionClearOnFinish())
}

func beat(i int, seq uint64, inventory bool) *proto.Heartbeat {
	hb := &proto.Heartbeat{
		V: proto.Version, Seq: seq, ClockMillis: time.Now().UnixMilli(), UptimeSeconds: 86400 + int64(seq),
	}
	if inventory {
		// As the agent does: counters and inventory on the first beat only.
		hb.Counters = map[string]uint64{"heartbeat_failures": 0, "renewals": 0}
		hb.Inventory = &proto.Inventory{
			Hostname: fmt.Sprintf("sim-%05d", i), OS: "linux", OSVersion: "Debian GNU/Linux 12 (bookworm)",
			AgentVersion: "sim", IPs: []string{fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)},
		}
	}
	return hb
}

// countingConn counts TLS bytes both ways, for the wire-size figure.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(int64(n))
	return n, err
}

func (c countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// dialer spreads connections to a loopback manager over several source
// addresses, since one address pair has only ~28k ephemeral ports.
func dialer(manager string, sources int, wire *atomic.Int64) func(ctx context.Context, network, addr string) (net.Conn, error) {
	var next atomic.Uint32
	u, _ := url.Parse(manager)
	loopback := false
	if u != nil {
		if ip := net.ParseIP(u.Hostname()); ip != nil && ip.To4() != nil && ip.IsLoopback() {
			loopback = true
		}
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: 15 * time.Second}
		if loopback && sources > 1 {
			n := next.Add(1) % uint32(sources)
			d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+n))}
		}
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countingConn{Conn: c, n: wire}, nil
	}
}

// identities returns o.Agents identities, enrolling the missing ones with a
// token created through the API.
func identities(ctx context.Context, t ctl.Target, o Options, progress io.Writer) ([]identity, error) {
	if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
		return nil, err
	}
	fpShort := t.CAFingerprint
	if len(fpShort) > 16 {
		fpShort = fpShort[:16]
	}
	path := filepath.Join(o.StateDir, "identities-"+fpShort+".jsonl")
	var ids []identity
	if f, err := os.Open(path); err == nil {
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() && len(ids) < o.Agents {
			var id identity
			if json.Unmarshal(sc.Bytes(), &id) == nil {
				ids = append(ids, id)
			}
		}
		f.Close()
	}
	missing := o.Agents - len(ids)
	if missing <= 0 {
		return ids[:o.Agents], nil
	}
	c, err := ctl.NewClient(t)
	if err != nil {
		return nil, err
	}
	var tok api.Token
	if err := c.Do(ctx, http.MethodPost, "/api/v1/activation-tokens", nil,
		api.TokenCreate{Description: "yagura sim", ExpiresIn: "2h", MaxUses: missing}, &tok); err != nil {
		return nil, fmt.Errorf("create enrolment token: %w", err)
	}
	enroller, err := agent.NewClient(agent.ClientOptions{Manager: t.URL, CAFingerprint: t.CAFingerprint})
	if err != nil {
		return nil, err
	}
	defer enroller.Close()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mu sync.Mutex
	bar := newBar(missing, "enrolling agents", progress)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	base := len(ids)
	for i := range missing {
		g.Go(func() error {
			keyPEM, csrPEM, err := pki.NewAgentKey(fmt.Sprintf("sim-%05d", base+i))
			if err != nil {
				return err
			}
			resp, err := enroller.Enroll(gctx, &proto.EnrollRequest{
				V: proto.Version, Token: tok.Token, CSR: string(csrPEM),
				Inventory: proto.Inventory{Hostname: fmt.Sprintf("sim-%05d", base+i), OS: "linux", AgentVersion: "sim"},
			})
			if err != nil {
				return fmt.Errorf("enrol simulated agent: %w", err)
			}
			id := identity{AgentID: resp.AgentID, Cert: resp.Certificate, Key: string(keyPEM)}
			b, _ := json.Marshal(id)
			mu.Lock()
			defer mu.Unlock()
			ids = append(ids, id)
			if _, err := f.Write(append(b, '\n')); err != nil {
				return err
			}
			_ = bar.Add(1)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	_ = bar.Finish()
	return ids, nil
}
