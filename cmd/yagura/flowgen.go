//go:build !agentonly

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/yagura/yagura/internal/flowgen"
)

func flowgenCmd() *cobra.Command {
	def := flowgen.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "flowgen",
		Short: "Send paced NetFlow v5/v9 or IPFIX test traffic to a flow collector",
		Long: `Sends generated flow records to a collector over UDP at a steady rate, for
load tests and benchmarks (Yagura's collector, nfcapd, or any other).

Flows are pseudo-random but deterministic: the same --seed and --flows send
the same flows, so the receiver's totals can be checked. Datagrams look like a
router's: 30 flows per NetFlow v5 datagram, v9 and IPFIX datagrams of about
1,400 bytes with the template re-sent every --template-every datagrams.

--rate is paced with a token bucket that starts empty: the run never finishes
before flows/rate, and one worker holds several million flows/s on loopback.
If the summary's achieved rate is below the offered rate, the generator could
not keep up: add --workers.

Each exporter has its own socket, observation domain and sequence numbers.
Towards a loopback target, exporter N sends from 127.0.0.N so a collector sees
separate exporter addresses; elsewhere they share this host's address and
differ by observation domain (v9 source ID, IPFIX domain, v5 engine ID), or
give addresses of this host with --source.

Counts and rates take k, M and G suffixes (250k, 1.5M). A progress bar is
drawn on a terminal; the summary goes to standard output, with --json as one
JSON object.`,
		Example: `  yagura flowgen --to 127.0.0.1:2055 --protocol v5 --rate 1M --flows 10M
  yagura flowgen --protocol ipfix --to 192.0.2.10:4739 --rate 50k --duration 1m
  yagura flowgen --protocol v9 --rate 4M --flows 40M --workers 2 --exporters 4 --json`,
		Args: cobra.NoArgs,
	}
	f := cmd.Flags()
	f.String("to", def.Target, "collector address, host:port")
	f.String("protocol", string(def.Protocol), "export protocol: v5, v9 or ipfix")
	f.String("rate", "100k", "flows per second to offer; 0 sends as fast as possible")
	f.String("flows", "1M", "number of flows to send")
	f.Duration("duration", 0, "send for this long at --rate instead of a number of --flows")
	f.Uint64("seed", def.Seed, "seed of the flows' content: the same seed sends the same flows")
	f.Int("workers", def.Workers, "sending goroutines, each with its own sockets")
	f.Int("exporters", 0, "exporters to simulate (default: one per worker; at least --workers)")
	f.StringSlice("source", nil, "local address(es) exporters send from, exporter N from the N-th (repeat or comma-separate)")
	f.Int("flows-per-datagram", 0, "flows per datagram (default: 30 for v5; as many as fit in ~1,400 bytes for v9 and IPFIX)")
	f.Int("template-every", def.TemplateEvery, "re-send the v9/IPFIX template every N datagrams of an exporter")
	f.Int("batch", def.Batch, "most datagrams per sendmmsg system call")
	f.Duration("catch-up", def.CatchUp, "how far behind schedule a worker may fall and still catch up by sending faster; beyond that the time is given up (and reported), never sent as a burst")
	f.Bool("json", false, "print the summary as JSON")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return runFlowgen(cmd.Context(), cmd) }
	return cmd
}

func flowgenConfig(cmd *cobra.Command) (flowgen.Config, error) {
	f := cmd.Flags()
	cfg := flowgen.DefaultConfig()
	var err error
	cfg.Target, _ = f.GetString("to")
	proto, _ := f.GetString("protocol")
	if cfg.Protocol, err = flowgen.ParseProtocol(proto); err != nil {
		return cfg, fmt.Errorf("--protocol: %w", err)
	}
	rate, _ := f.GetString("rate")
	if cfg.Rate, err = flowgen.ParseCount(rate); err != nil {
		return cfg, fmt.Errorf("--rate: %w", err)
	}
	duration, _ := f.GetDuration("duration")
	switch {
	case f.Changed("duration") && f.Changed("flows"):
		return cfg, errors.New("--flows and --duration: give one of them")
	case f.Changed("duration"):
		if cfg.Rate == 0 || duration <= 0 {
			return cfg, errors.New("--duration needs a --rate above 0 and a positive duration: it sends rate × duration flows")
		}
		cfg.Flows = uint64(math.Ceil(cfg.Rate * duration.Seconds()))
	default:
		s, _ := f.GetString("flows")
		n, err := flowgen.ParseCount(s)
		if err != nil {
			return cfg, fmt.Errorf("--flows: %w", err)
		}
		if n != math.Trunc(n) || n > 1<<62 {
			return cfg, fmt.Errorf("--flows %s: want a whole number of flows", s)
		}
		cfg.Flows = uint64(n)
	}
	cfg.Seed, _ = f.GetUint64("seed")
	cfg.Workers, _ = f.GetInt("workers")
	cfg.Exporters, _ = f.GetInt("exporters")
	sources, _ := f.GetStringSlice("source")
	for _, s := range sources {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return cfg, fmt.Errorf("--source %q: want an IP address of this host: %v", s, err)
		}
		cfg.Sources = append(cfg.Sources, a)
	}
	cfg.FlowsPerDatagram, _ = f.GetInt("flows-per-datagram")
	cfg.TemplateEvery, _ = f.GetInt("template-every")
	cfg.Batch, _ = f.GetInt("batch")
	cfg.CatchUp, _ = f.GetDuration("catch-up")
	return cfg, nil
}

func runFlowgen(ctx context.Context, cmd *cobra.Command) error {
	cfg, err := flowgenConfig(cmd)
	if err != nil {
		return err
	}
	g, err := flowgen.New(cfg)
	if err != nil {
		return err
	}
	cfg = g.Config()
	asJSON, _ := cmd.Flags().GetBool("json")

	stderr := cmd.ErrOrStderr()
	bar := progressbar.NewOptions64(int64(cfg.Flows),
		progressbar.OptionSetWriter(stderr),
		// Not drawn into logs and pipes (the benchmark script reads --json).
		progressbar.OptionSetVisibility(isTerminalWriter(stderr)),
		progressbar.OptionSetDescription(fmt.Sprintf("%s → %s", cfg.Protocol, cfg.Target)),
		progressbar.OptionSetItsString("flows"),
		progressbar.OptionShowIts(),
		progressbar.OptionShowCount(),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
	stop := make(chan struct{})
	drawn := make(chan struct{})
	go func() {
		defer close(drawn)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				_ = bar.Set64(int64(g.Sent().Flows))
			}
		}
	}()
	rep, runErr := g.Run(ctx)
	close(stop)
	<-drawn
	_ = bar.Finish()

	out := cmd.OutOrStdout()
	if asJSON {
		if err := writeFlowgenJSON(out, rep, runErr); err != nil {
			return err
		}
	} else {
		writeFlowgenSummary(out, rep, runErr)
	}
	switch {
	case errors.Is(runErr, context.Canceled):
		return fmt.Errorf("flowgen interrupted after %d of %d flows", rep.Sent.Flows, cfg.Flows)
	case runErr != nil:
		return runErr
	}
	return nil
}

func isTerminalWriter(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func writeFlowgenJSON(w io.Writer, rep flowgen.Report, runErr error) error {
	out := struct {
		flowgen.Report
		ElapsedSeconds float64 `json:"elapsed_seconds"`
		Complete       bool    `json:"complete"`
		Error          string  `json:"error,omitempty"`
	}{Report: rep, ElapsedSeconds: rep.Elapsed.Seconds(), Complete: runErr == nil}
	if runErr != nil {
		out.Error = runErr.Error()
	}
	enc := json.NewEncoder(w)
	return enc.Encode(out)
}

func writeFlowgenSummary(w io.Writer, rep flowgen.Report, runErr error) {
	offered := "unpaced"
	if rep.Rate > 0 {
		offered = "offered " + groupDigits(uint64(math.Round(rep.Rate)))
	}
	status := "sent"
	if runErr != nil {
		status = "stopped after sending"
	}
	fmt.Fprintf(w, "%s %s flows in %s datagrams (%s packets, %s bytes) as %s to %s in %.3f s: %s flows/s (%s), %d worker(s), %d exporter(s), max lag %v\n",
		status, groupDigits(rep.Sent.Flows), groupDigits(rep.Sent.Datagrams), groupDigits(rep.Sent.Packets), groupDigits(rep.Sent.Bytes),
		rep.Protocol, rep.Target, rep.Elapsed.Seconds(), groupDigits(uint64(math.Round(rep.FlowsPerSecond))), offered,
		rep.Workers, rep.Exporters, rep.MaxLag.Round(time.Microsecond))
	if rep.Refused > 0 {
		fmt.Fprintf(w, "warning: %s answered \"port unreachable\" %d times: is a collector listening there?\n", rep.Target, rep.Refused)
	}
	if rep.Rate > 0 && runErr == nil && rep.FlowsPerSecond < 0.99*rep.Rate {
		fmt.Fprintf(w, "warning: achieved %.0f%% of the offered rate: the generator could not keep up (add --workers, or run on a quieter machine)\n", 100*rep.FlowsPerSecond/rep.Rate)
	}
	if rep.Slipped > 0 {
		fmt.Fprintf(w, "warning: workers fell more than --catch-up behind schedule and gave up %v of it: the stream was not evenly paced\n", rep.Slipped.Round(time.Millisecond))
	}
}

// groupDigits writes n with thousands separators: 4,000,000.
func groupDigits(n uint64) string {
	s := fmt.Sprint(n)
	out := make([]byte, 0, len(s)+len(s)/3)
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}
