//go:build agentonly

package main

import "github.com/spf13/cobra"

const buildFlavour = "agent-only build"

func addManagerCommands(*cobra.Command) {}
