//go:build !agentonly

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/yagura/yagura/internal/agent"
	"github.com/yagura/yagura/internal/api"
	"github.com/yagura/yagura/internal/credentials"
	"github.com/yagura/yagura/internal/ctl"
	"github.com/yagura/yagura/internal/logging"
	"github.com/yagura/yagura/internal/server"
	"github.com/yagura/yagura/internal/sim"
)

const buildFlavour = "full build"

func addManagerCommands(root *cobra.Command) {
	srv, simCmd := serverCmd(), sim.Command()
	addProfileFlag(srv)
	addProfileFlag(simCmd)
	root.AddCommand(srv, devCmd(), ctl.Command(), simCmd, flowgenCmd())
}

var serverFlagKeys = map[string]string{
	"data-dir": "data_dir", "listen": "http.listen", "log-format": "log.format", "log-level": "log.level",
	"store-driver": "store.driver", "store-dsn": "store.dsn", "public-url": "http.public_url",
	"flows": "flows.enabled", "netflow-listen": "flows.collector.netflow", "ipfix-listen": "flows.collector.ipfix",
	"sflow-listen": "flows.collector.sflow",
}

func addServerFlags(cmd *cobra.Command, def server.Config) {
	f := cmd.Flags()
	f.String("config", "", "configuration file (YAML); see docs/configuration.md")
	f.String("data-dir", def.DataDir, "data folder: embedded store, certificates, credentials")
	f.String("listen", def.HTTP.Listen, "HTTPS address for the API, console and agents")
	f.String("public-url", "", "URL agents and administrators use to reach this manager")
	f.String("store-driver", def.Store.Driver, "state store: sqlite or postgres")
	f.String("store-dsn", "", "state store location: SQLite file, or postgres://… (env YAGURA_STORE_DSN keeps passwords out of ps)")
	f.String("log-format", def.Log.Format, "log format: text or json")
	f.String("log-level", def.Log.Level, "log level: debug, info, warn or error")
	f.Bool("flows", def.Flows.Enabled, "collect NetFlow, IPFIX and sFlow (UDP) and serve the flow API")
	f.String("netflow-listen", strings.Join(def.Flows.Collector.NetFlow, ","), "UDP addresses for NetFlow v5/v9 and IPFIX, comma-separated (\"\" turns it off)")
	f.String("ipfix-listen", strings.Join(def.Flows.Collector.IPFIX, ","), "UDP addresses for IPFIX, comma-separated")
	f.String("sflow-listen", strings.Join(def.Flows.Collector.SFlow, ","), "UDP addresses for sFlow v5, comma-separated")
	f.Bool("dump-config", false, "print the effective configuration and exit")
	f.Bool("check", false, "check the configuration and exit")
	f.Bool("reset-admin-password", false, "give the user admin a new password and write a new credentials file")
}

func serverSetup(cmd *cobra.Command, def server.Config) (server.Config, *slog.Logger, bool, error) {
	cfg := def
	dumped, err := loadConfig(cmd, &cfg, "", serverFlagKeys, server.SecretKeys)
	if err != nil || dumped {
		return cfg, nil, dumped, err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, nil, false, fmt.Errorf("configuration: %w", err)
	}
	log, err := logging.New(cmd.ErrOrStderr(), cfg.Log)
	return cfg, log, false, err
}

func serverCmd() *cobra.Command {
	def := server.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the manager",
		Long: `Runs the Yagura manager: REST API, agent gateway, fleet monitor, over one
HTTPS port. On first start it creates its CA, a server certificate and the
bootstrap administrator's credentials (DATA/admin-credentials.json, mode 0600).

Configuration: defaults, then --config FILE, then YAGURA_… environment
variables (YAGURA_HTTP_LISTEN, YAGURA_STORE_DSN, …), then flags.`,
		Example: `  yagura server --data-dir /var/lib/yagura --listen :8443
  YAGURA_STORE_DSN=postgres://yagura:secret@db/yagura yagura server --store-driver postgres`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, dumped, err := serverSetup(cmd, def)
			if err != nil || dumped {
				return err
			}
			reset, _ := cmd.Flags().GetBool("reset-admin-password")
			srv, err := server.New(cfg, server.Options{Version: version, ResetAdminPassword: reset, AdminPassword: os.Getenv("YAGURA_ADMIN_PASSWORD")}, log)
			if err != nil {
				return err
			}
			if check, _ := cmd.Flags().GetBool("check"); check {
				fmt.Fprintln(cmd.OutOrStdout(), "configuration OK")
				return nil
			}
			return srv.Run(cmd.Context())
		},
	}
	addServerFlags(cmd, def)
	return cmd
}

func devCmd() *cobra.Command {
	def := server.DefaultConfig()
	def.DataDir = "yagura-data"
	def.HTTP.Listen = "127.0.0.1:8443"
	def.Flows.Collector.NetFlow = []string{"127.0.0.1:2055"}
	def.Flows.Collector.IPFIX = []string{"127.0.0.1:4739"}
	def.Flows.Collector.SFlow = []string{"127.0.0.1:6343"}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a manager and a local agent on this machine, for a first look",
		Long: `Starts the manager on the embedded store in ./yagura-data, listening on
https://127.0.0.1:8443 and for flows on 127.0.0.1 (NetFlow 2055, IPFIX 4739,
sFlow 6343), enrols an agent for this machine in the same process,
and prints the URL, the CA fingerprint and the administrator's credential
(also in yagura-data/dev-credentials.json). Ctrl-C stops everything; the next
run reuses the data folder.`,
		Example: `  yagura dev
  yagura ctl computers list     # in another terminal`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, dumped, err := serverSetup(cmd, def)
			if err != nil || dumped {
				return err
			}
			reset, _ := cmd.Flags().GetBool("reset-admin-password")
			return runDev(cmd.Context(), cfg, reset, log, cmd.OutOrStdout())
		},
	}
	addServerFlags(cmd, def)
	return cmd
}

func runDev(ctx context.Context, cfg server.Config, reset bool, log *slog.Logger, out io.Writer) error {
	srv, err := server.New(cfg, server.Options{Version: version, CredentialsFile: "dev-credentials.json", ResetAdminPassword: reset}, log)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(gctx) })
	// fail stops the manager before reporting a start-up error.
	fail := func(err error) error {
		cancel()
		return errors.Join(err, g.Wait())
	}
	select {
	case <-srv.Ready():
	case <-gctx.Done():
		return g.Wait()
	}
	info := srv.Info()
	creds, err := credentials.Load(info.CredentialsPath)
	if err != nil {
		return fail(fmt.Errorf("dev credentials: %w (start once with --reset-admin-password, or delete %s)", err, cfg.DataDir))
	}
	agentDir := filepath.Join(cfg.DataDir, "agent")
	id, err := agent.LoadIdentity(agentDir)
	switch {
	case errors.Is(err, agent.ErrNotEnrolled):
		if err := enrolLocalAgent(gctx, creds, agentDir); err != nil {
			return fail(fmt.Errorf("enrol the local agent: %w", err))
		}
	case err != nil:
		return fail(err)
	case id.Manager != creds.URL && id.CAFingerprint == creds.CAFingerprint:
		// Same manager, new address (another --listen): follow it.
		id.Manager = creds.URL
		if err := id.Save(agentDir); err != nil {
			return fail(err)
		}
	}
	a, err := agent.New(agent.Config{DataDir: agentDir, Version: version}, log.With("component", "agent"))
	if err != nil {
		return fail(err)
	}
	g.Go(func() error { return a.Run(gctx) })

	flows, tryFlows := "off (--flows)", ""
	if fc := cfg.Flows.Collector; cfg.Flows.Enabled {
		flows = fmt.Sprintf("NetFlow %s, IPFIX %s, sFlow %s (UDP)", strings.Join(fc.NetFlow, " "), strings.Join(fc.IPFIX, " "), strings.Join(fc.SFlow, " "))
		if len(fc.NetFlow) > 0 {
			tryFlows = fmt.Sprintf("\n        ./bin/yagura flowgen --to %s --rate 10k --flows 100k && ./bin/yagura ctl flows top", fc.NetFlow[0])
		}
	}
	fmt.Fprintf(out, `
  Yagura is running.  櫓が起動しました。

  API                %s
  Web console        %s/console/  (Japanese / English; the certificate is Yagura's own CA)
  CA fingerprint     %s
  Administrator      user admin, password %s
  Credentials file   %s (mode 0600)
  Local agent        %s
  Flow collector     %s

  Try:  ./bin/yagura ctl computers list%s
  Stop: Ctrl-C

`, creds.URL, creds.URL, info.CAFingerprint, creds.Password, info.CredentialsPath, a.ID(), flows, tryFlows)
	return g.Wait()
}

// enrolLocalAgent creates a single-use token through the API (the same door
// an administrator uses) and enrols the local agent with it.
func enrolLocalAgent(ctx context.Context, creds *credentials.File, dir string) error {
	c, err := ctl.NewClient(ctl.Target{URL: creds.URL, User: creds.User, Password: creds.Password, Token: creds.Token, CAFingerprint: creds.CAFingerprint, From: "dev"})
	if err != nil {
		return err
	}
	var tok api.Token
	if err := c.Do(ctx, http.MethodPost, "/api/v1/activation-tokens", nil,
		api.TokenCreate{Description: "yagura dev: local agent", ExpiresIn: "10m", MaxUses: 1}, &tok); err != nil {
		return err
	}
	_, err = agent.Enroll(ctx, agent.EnrollOptions{
		Manager: creds.URL, Token: tok.Token, CAFingerprint: creds.CAFingerprint, DataDir: dir, Version: version,
	})
	return err
}
