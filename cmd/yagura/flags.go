package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/yagura/yagura/internal/config"
)

// changedFlags maps the flags the user set to configuration keys, so flags
// override the file and the environment but unset flags do not.
func changedFlags(cmd *cobra.Command, keys map[string]string) map[string]string {
	out := map[string]string{}
	for flag, key := range keys {
		if f := cmd.Flags().Lookup(flag); f != nil && f.Changed {
			out[key] = f.Value.String()
		}
	}
	return out
}

// loadConfig fills cfg (holding defaults) from --config, the environment
// and the flags, and handles --dump-config.
func loadConfig(cmd *cobra.Command, cfg any, prefix string, keys map[string]string, secretKeys []string) (dumped bool, err error) {
	file, _ := cmd.Flags().GetString("config")
	if err := config.Load(cfg, config.Source{
		File: file, Environ: os.Environ(), Flags: changedFlags(cmd, keys), EnvPrefix: prefix,
	}); err != nil {
		return false, err
	}
	if dump, _ := cmd.Flags().GetBool("dump-config"); dump {
		s, err := config.Dump(cfg, secretKeys...)
		if err != nil {
			return false, err
		}
		fmt.Fprint(cmd.OutOrStdout(), s)
		return true, nil
	}
	return false, nil
}
