package nftfw

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/yagura/yagura/internal/firewall"
)

// The NFLOG prefix carries what the kernel knows about a decision and the
// packet's headers do not: "yagura:DIR:ACTION:VERDICT:REASON:RULEID", for
// example "yagura:in:deny:drop:rule:12" or
// "yagura:out:log-only:pass:default:7". RULEID "mark" means the rule's ID
// is the packet's mark (as a 32-bit signed number), which the deny rules
// set before the one chain that logs all their drops. The kernel caps
// prefixes at 127 bytes; the longest one is about 60.
const prefixTag = "yagura"

// logPrefix is a parsed prefix.
type logPrefix struct {
	Direction string // firewall.Incoming or firewall.Outgoing
	Action    string
	Verdict   string
	Reason    string
	RuleID    int
	FromMark  bool // the ID is the packet's mark
}

func (p logPrefix) String() string {
	dir := "in"
	if p.Direction == firewall.Outgoing {
		dir = "out"
	}
	id := strconv.Itoa(p.RuleID)
	if p.FromMark {
		id = "mark"
	}
	return fmt.Sprintf("%s:%s:%s:%s:%s:%s", prefixTag, dir, p.Action, p.Verdict, p.Reason, id)
}

// parsePrefix reads a prefix written by String. ok is false for anything
// else, such as another program's prefix on the same group.
func parsePrefix(s string) (p logPrefix, ok bool) {
	f := strings.Split(strings.TrimRight(s, "\x00"), ":")
	if len(f) != 6 || f[0] != prefixTag {
		return p, false
	}
	switch f[1] {
	case "in":
		p.Direction = firewall.Incoming
	case "out":
		p.Direction = firewall.Outgoing
	default:
		return p, false
	}
	switch f[2] {
	case firewall.ActionAllow, firewall.ActionDeny, firewall.ActionForceAllow, firewall.ActionBypass, firewall.ActionLogOnly:
	default:
		return p, false
	}
	if f[3] != firewall.Pass && f[3] != firewall.Drop {
		return p, false
	}
	switch f[4] {
	case firewall.ReasonRule, firewall.ReasonOutOfPolicy, firewall.ReasonInvalid, firewall.ReasonStateful, firewall.ReasonDefault:
	default:
		return p, false
	}
	p.Action, p.Verdict, p.Reason = f[2], f[3], f[4]
	if f[5] == "mark" {
		p.FromMark = true
		return p, true
	}
	id, err := strconv.Atoi(f[5])
	if err != nil || strconv.Itoa(id) != f[5] {
		return p, false
	}
	p.RuleID = id
	return p, true
}
