// Package nftfw provides the Linux agent's enforcement of a
// [firewall.Program] with nftables: it compiles the program into an inet
// table (IPv4 and IPv6), an arp table and a netdev table (other frames, on
// each Ethernet device), replaces them atomically in one netlink
// transaction, removes them, and turns the kernel's NFLOG messages back
// into [firewall.Event]s.
//
// The kernel reproduces [firewall.Evaluate] (the network-namespace tests
// replay the semantic case table on real packets); what it cannot
// reproduce, [Check] refuses with an error wrapping [errors.ErrUnsupported]
// instead of enforcing less than the rules say. docs/firewall-linux.md
// describes the table layout and the known limits.
//
// Only the agent imports this package. It speaks netlink itself (no nft
// binary at run time) and builds without cgo; on other systems [New]
// returns an error.
package nftfw
