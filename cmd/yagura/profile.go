package main

import (
	"fmt"
	"os"
	"runtime/pprof"

	"github.com/spf13/cobra"
)

// addProfileFlag adds hidden --cpu-profile and --heap-profile flags, for
// measuring where a benchmark spends its time and memory
// (docs/benchmarks.md). The heap profile is taken at the end of the run.
func addProfileFlag(cmd *cobra.Command) {
	cmd.PersistentFlags().String("cpu-profile", "", "write a CPU profile to this file")
	cmd.PersistentFlags().String("heap-profile", "", "write a heap profile to this file when the command ends")
	_ = cmd.PersistentFlags().MarkHidden("cpu-profile")
	_ = cmd.PersistentFlags().MarkHidden("heap-profile")
	run := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if heap, _ := c.Flags().GetString("heap-profile"); heap != "" {
			defer func() {
				if f, err := os.Create(heap); err == nil {
					_ = pprof.Lookup("heap").WriteTo(f, 0)
					f.Close()
				}
			}()
		}
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
