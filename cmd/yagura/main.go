// Command yagura is the single Yagura binary: the manager (server), the
// host agent, a one-machine development setup (dev), the administrator's
// command line (ctl) and a load simulator (sim). This package only parses
// flags and dispatches; the work lives in internal/.
//
// Built with -tags agentonly it contains only the agent, fw and version
// commands, with no cgo and none of the manager's packages.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set by the linker (-X main.version=…) in release builds.
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := rootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			// The command has already said why (yagura fw eval: a drop).
			os.Exit(int(ee))
		}
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// exitError carries a specific exit status.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "yagura",
		Short: "Yagura: endpoint management, host firewall and network flow monitoring in one binary",
		Long: `Yagura (櫓) manages the security of your hosts and watches your network.

  yagura dev       try everything on this machine (manager + local agent)
  yagura server    run the manager
  yagura agent     enrol and run the host agent
  yagura ctl       administer a manager from the shell
  yagura fw        check firewall rules and evaluate packets offline
  yagura flowgen   send NetFlow/IPFIX at a steady rate (load tests)`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(versionCmd(), agentCmd(), fwCmd())
	addManagerCommands(root)
	return root
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "yagura %s (%s)\n", version, buildFlavour)
		},
	}
}
