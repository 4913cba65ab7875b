package nftfw

import (
	"errors"
	"fmt"
)

// Config configures an [Enforcer].
type Config struct {
	// Table names the tables the enforcer owns: "inet <Table>",
	// "arp <Table>" and "netdev <Table>". Other tables are never touched.
	Table string
	// LogGroup is the NFLOG group that drop and log-only events are sent
	// to. Nothing else should use it.
	LogGroup uint16
	// LogOnlyRate caps the events of log-only matches, per second, over all
	// log-only rules of a table; the excess is counted, not logged.
	LogOnlyRate uint32
	// DropLogRate caps drop events per second over all rules of a table, so
	// a flood cannot bury the agent; the excess is still dropped, and
	// counted.
	DropLogRate uint32
	// Priority is the priority of the input and output filter chains (0
	// selects the default). The default, -10, runs after connection
	// tracking (-200) and NAT on the output path (-100), just before the
	// usual filter tables (0): what Yagura accepts still goes through every
	// other table, and what it drops never reaches them.
	Priority int32
	// NetNS, when not 0, is a file descriptor of the network namespace to
	// work in (tests use it); 0 is the caller's namespace.
	NetNS int
}

// Defaults.
const (
	DefaultTable       = "yagura"
	DefaultLogGroup    = 7118
	DefaultLogOnlyRate = 10
	DefaultDropLogRate = 1000
	DefaultPriority    = -10
)

// DefaultConfig returns the default configuration.
func DefaultConfig() Config {
	return Config{
		Table:       DefaultTable,
		LogGroup:    DefaultLogGroup,
		LogOnlyRate: DefaultLogOnlyRate,
		DropLogRate: DefaultDropLogRate,
		Priority:    DefaultPriority,
	}
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Table == "" {
		c.Table = d.Table
	}
	if c.LogGroup == 0 {
		c.LogGroup = d.LogGroup
	}
	if c.LogOnlyRate == 0 {
		c.LogOnlyRate = d.LogOnlyRate
	}
	if c.DropLogRate == 0 {
		c.DropLogRate = d.DropLogRate
	}
	if c.Priority == 0 {
		c.Priority = d.Priority
	}
	return c
}

// validate checks a configuration after defaults are filled.
func (c Config) validate() error {
	if len(c.Table) > 200 {
		return errors.New("nftfw: table name is longer than 200 bytes")
	}
	for _, r := range c.Table {
		if !(r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return fmt.Errorf("nftfw: table name %q: use letters, digits, - and _", c.Table)
		}
	}
	// Connection tracking runs at -200 and the bypass chains at -300; the
	// filter chains must see conntrack's verdict.
	if c.Priority <= -200 {
		return fmt.Errorf("nftfw: priority %d: must be above -200 (connection tracking)", c.Priority)
	}
	return nil
}

// Stats are the enforcer's counters since [New]. Kernel counters are read
// from the tables, and carried over when [Enforcer.Apply] replaces them.
type Stats struct {
	// DropsLogged and DropsSuppressed count drop events the kernel sent to
	// NFLOG, and drops it did not log because DropLogRate was exceeded.
	// Drops of rules with logDisabled are in neither.
	DropsLogged, DropsSuppressed uint64
	// LogOnlyLogged and LogOnlySuppressed do the same for log-only matches
	// and LogOnlyRate.
	LogOnlyLogged, LogOnlySuppressed uint64
	// Read counts events the reader turned into firewall.Events;
	// Undecodable, NFLOG messages of our group it could not read (a
	// foreign prefix or a short packet); Overruns, the times the kernel
	// reported lost NFLOG messages because the reader fell behind (how
	// many were lost it does not say).
	Read, Undecodable, Overruns uint64
}
