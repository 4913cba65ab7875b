package main

import (
	"fmt"
	"os"
	"runtime/pprof"

	"github.com/spf13/cobra"
)

// addProfileFlag adds a hidden --cpu-profile flag, for measuring where a
// benchmark spends its time (docs/benchmarks.md).
func addProfileFlag(cmd *cobra.Command) {
	cmd.PersistentFlags().String("cpu-profile", "", "write a CPU profile to this file")
	_ = cmd.PersistentFlags().MarkHidden("cpu-profile")
	run := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		path, _ := c.Flags().GetString("cpu-profile")
		if path == "" {
			return run(c, args)
		}
		f, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
		return run(c, args)
	}
}
