package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/yagura/yagura/internal/agent"
	"github.com/yagura/yagura/internal/firewall"
	"github.com/yagura/yagura/internal/logging"
	"github.com/yagura/yagura/internal/nftfw"
)

// agentConfig is the agent's configuration file (`yagura agent --config`).
type agentConfig struct {
	DataDir string         `koanf:"data_dir"`
	Log     logging.Config `koanf:"log"`
	// QueueMaxBytes caps the on-disk event queue.
	QueueMaxBytes int64 `koanf:"queue_max_bytes"`
	// Proxy is an HTTP proxy, http://[user:password@]host:port; empty:
	// HTTPS_PROXY and NO_PROXY from the environment.
	Proxy string `koanf:"proxy"`
	// Listen is where to listen for the manager (bidirectional and
	// manager-initiated directions); empty: every address, port from the
	// manager (4118).
	Listen string `koanf:"listen"`
	// Firewall selects how policies' firewall rules are enforced.
	Firewall agentFirewall `koanf:"firewall"`
}

// agentFirewall configures the host firewall backend.
type agentFirewall struct {
	// Backend is "nftables" (Linux) or "off": the agent then tracks its
	// policy but enforces nothing.
	Backend string `koanf:"backend"`
	// Table names the nftables tables the agent owns (inet and arp).
	Table string `koanf:"table"`
	// LogGroup is the NFLOG group for drop and log-only events.
	LogGroup uint16 `koanf:"log_group"`
}

func defaultAgentConfig() agentConfig {
	backend := "off"
	if runtime.GOOS == "linux" {
		backend = "nftables"
	}
	return agentConfig{DataDir: "/var/lib/yagura-agent", Log: logging.DefaultConfig(), QueueMaxBytes: agent.DefaultQueueMaxBytes,
		Firewall: agentFirewall{Backend: backend, Table: nftfw.DefaultTable, LogGroup: nftfw.DefaultLogGroup}}
}

// firewallBackend builds the enforcer the configuration asks for.
func firewallBackend(cfg agentFirewall, log *slog.Logger) (agent.Enforcer, func(context.Context, func(firewall.Event)) error, error) {
	switch cfg.Backend {
	case "off", "":
		return nil, nil, nil
	case "nftables":
		nc := nftfw.DefaultConfig()
		nc.Table, nc.LogGroup = cfg.Table, cfg.LogGroup
		e, err := nftfw.New(nc, log)
		if err != nil {
			return nil, nil, fmt.Errorf("firewall.backend nftables: %w (set firewall.backend: off to run without enforcing)", err)
		}
		return e, e.Events, nil
	}
	return nil, nil, fmt.Errorf("firewall.backend %q: want nftables or off", cfg.Backend)
}

// agentEnv keeps the agent's variables apart from the manager's.
const agentEnv = "YAGURA_AGENT_"

var agentFlagKeys = map[string]string{"data-dir": "data_dir", "log-format": "log.format", "log-level": "log.level", "queue-max-bytes": "queue_max_bytes", "proxy": "proxy", "listen": "listen",
	"firewall": "firewall.backend"}

func addAgentConfigFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.String("config", "", "agent configuration file (YAML)")
	f.String("data-dir", defaultAgentConfig().DataDir, "folder for the agent's identity and queue (env YAGURA_AGENT_DATA_DIR)")
	f.String("log-format", "text", "log format: text or json")
	f.String("log-level", "info", "log level: debug, info, warn or error")
	f.Int64("queue-max-bytes", agent.DefaultQueueMaxBytes, "cap of the on-disk event queue; the oldest events are dropped (and counted) beyond it")
	f.String("proxy", "", "HTTP proxy to the manager, http://[user:password@]host:port (default: HTTPS_PROXY; prefer YAGURA_AGENT_PROXY for passwords)")
	f.String("listen", "", "where to listen for the manager in the bidirectional and manager-initiated directions (default :4118)")
	f.String("firewall", defaultAgentConfig().Firewall.Backend, "firewall backend: nftables (Linux) or off (track policies, enforce nothing)")
	f.Bool("dump-config", false, "print the effective configuration and exit")
}

func agentSetup(cmd *cobra.Command) (agentConfig, *slog.Logger, bool, error) {
	cfg := defaultAgentConfig()
	dumped, err := loadConfig(cmd, &cfg, agentEnv, agentFlagKeys, []string{"proxy"})
	if err != nil || dumped {
		return cfg, nil, dumped, err
	}
	log, err := logging.New(cmd.ErrOrStderr(), cfg.Log)
	return cfg, log, false, err
}

func agentCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the host agent (enrol it first)",
		Long: `The host agent heartbeats to its manager over HTTPS (always opened by the
agent, so it works behind NAT and proxies: HTTPS_PROXY is honoured).

Enrol once with "yagura agent enroll", then run "yagura agent" as a service.`,
		Example: `  yagura agent enroll --manager https://manager.example:8443 --token yat_… --ca-fingerprint 3f9a…
  yagura agent`,
		Args: cobra.NoArgs,
	}
	run := agentRunCmd()
	cmd.RunE = run.RunE
	cmd.Flags().AddFlagSet(run.Flags())
	cmd.AddCommand(run, agentEnrollCmd(), agentStatusCmd())
	return cmd
}

func agentRunCmd() *cobra.Command {
	var clockOffset time.Duration
	var testEvents int
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the agent until stopped (the default)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, dumped, err := agentSetup(cmd)
			if err != nil || dumped {
				return err
			}
			proxy, err := agent.ParseProxyURL(cfg.Proxy)
			if err != nil {
				return err
			}
			fw, fwEvents, err := firewallBackend(cfg.Firewall, log.With("component", "firewall"))
			if err != nil {
				return err
			}
			a, err := agent.New(agent.Config{
				DataDir: cfg.DataDir, Version: version, QueueMaxBytes: cfg.QueueMaxBytes,
				ClockOffset: clockOffset, TestEvents: testEvents, Proxy: proxy, Listen: cfg.Listen,
				Firewall: fw, FirewallEvents: fwEvents,
			}, log.With("component", "agent"))
			if err != nil {
				return err
			}
			err = a.Run(cmd.Context())
			if errors.Is(err, agent.ErrUninstalled) {
				fmt.Fprintln(cmd.OutOrStdout(), "The manager uninstalled this agent: its identity and queue are removed. Remove the program and its service to finish.")
				return nil
			}
			return err
		},
	}
	addAgentConfigFlags(cmd)
	cmd.Flags().DurationVar(&clockOffset, "test-clock-offset", 0, "shift the reported clock (tests only)")
	_ = cmd.Flags().MarkHidden("test-clock-offset")
	cmd.Flags().IntVar(&testEvents, "test-events", 0, "emit this many numbered test events (tests only)")
	_ = cmd.Flags().MarkHidden("test-events")
	return cmd
}

func agentEnrollCmd() *cobra.Command {
	var o agent.EnrollOptions
	cmd := &cobra.Command{
		Use:   "enroll",
		Short: "Enrol this host with a manager",
		Long: `Creates a key pair, presents the activation token and a certificate request
to the manager, and stores the certificate it receives. The manager's CA is
pinned by its SHA-256 fingerprint: pass --ca-fingerprint (shown by
"yagura ctl ca" and printed by the manager at start). Without it the agent
shows the fingerprint and asks; non-interactive installs must pass
--ca-fingerprint or, knowingly, --accept-fingerprint.`,
		Example: `  yagura agent enroll --manager https://manager.example:8443 --token yat_… --ca-fingerprint 3f9a…
  YAGURA_AGENT_TOKEN=yat_… yagura agent enroll --manager https://10.0.0.5:8443 --accept-fingerprint`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, dumped, err := agentSetup(cmd)
			if err != nil || dumped {
				return err
			}
			if o.Token == "" {
				o.Token = os.Getenv(agentEnv + "TOKEN")
			}
			o.DataDir, o.Version = cfg.DataDir, version
			if o.Proxy, err = agent.ParseProxyURL(cfg.Proxy); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			o.Notify = func(msg string) { fmt.Fprintln(out, msg) }
			if term.IsTerminal(int(os.Stdin.Fd())) {
				o.Confirm = func(fp, subject string) bool {
					fmt.Fprintf(out, "The manager presents CA %q with SHA-256 fingerprint\n  %s\nTrust it? Compare with `yagura ctl ca` on the manager. [y/N] ", subject, fp)
					line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
					return strings.EqualFold(strings.TrimSpace(line), "y") || strings.EqualFold(strings.TrimSpace(line), "yes")
				}
			}
			id, err := agent.Enroll(cmd.Context(), o)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "Enrolled as agent %s with %s (CA %s).\nStart it with: yagura agent --data-dir %s\n", id.AgentID, id.Manager, id.CAFingerprint, cfg.DataDir)
			return nil
		},
	}
	addAgentConfigFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&o.Manager, "manager", "", "manager URL, https://HOST:PORT (required)")
	f.StringVar(&o.Token, "token", "", "activation token (or env YAGURA_AGENT_TOKEN)")
	f.StringVar(&o.CAFingerprint, "ca-fingerprint", "", "SHA-256 fingerprint of the manager CA to pin")
	f.BoolVar(&o.Accept, "accept-fingerprint", false, "trust the CA the manager presents without checking its fingerprint")
	f.BoolVar(&o.Force, "force", false, "discard this host's existing identity and enrol again")
	_ = cmd.MarkFlagRequired("manager")
	return cmd
}

func agentStatusCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show this host's agent identity",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, dumped, err := agentSetup(cmd)
			if err != nil || dumped {
				return err
			}
			id, err := agent.LoadIdentity(cfg.DataDir)
			if err != nil {
				return err
			}
			cert, err := id.Certificate()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Agent ID\t%s\nManager\t%s\nCA fingerprint\t%s\nEnrolled\t%s\nCertificate expires\t%s\n",
				id.AgentID, id.Manager, id.CAFingerprint, id.EnrolledAt.Local().Format(time.RFC3339), cert.NotAfter.Local().Format(time.RFC3339))
			return nil
		},
	}
	addAgentConfigFlags(cmd)
	return cmd
}
