package firewall

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// IsolationRules returns the priority-4 rules that isolate a host: every
// IP packet in both directions is denied except what allow lists, which is
// force-allowed out and its replies in. The hidden manager bypass rules
// (HiddenRules), added beside them, sort first within priority 4 (bypass
// before force-allow before deny), so the manager stays reachable.
//
// An allow entry is "[tcp|udp|icmp|any] ADDRESS[/PREFIX][:PORT]", e.g.
// "udp 192.0.2.53:53", "tcp [2001:db8::10]:443", "10.0.0.0/8". Rule IDs
// are negative, from -1000 down, so they never collide with stored rules.
func IsolationRules(allow []string) ([]Rule, error) {
	var rules []Rule
	id := -1000
	for i, entry := range allow {
		proto, addr, port, err := parseAllowEntry(entry)
		if err != nil {
			return nil, fmt.Errorf("allow[%d] %q: %w", i, entry, err)
		}
		out := Rule{ID: id, Name: "Isolation: allow " + strings.TrimSpace(entry), Action: ActionForceAllow, Priority: "4", Direction: Outgoing,
			Protocol: proto, DestinationIPType: TypeMasked, DestinationIPValue: addr.Addr().String(), DestinationIPMask: strconv.Itoa(addr.Bits())}
		in := Rule{ID: id - 1, Name: "Isolation: replies from " + strings.TrimSpace(entry), Action: ActionForceAllow, Priority: "4", Direction: Incoming,
			Protocol: proto, SourceIPType: TypeMasked, SourceIPValue: addr.Addr().String(), SourceIPMask: strconv.Itoa(addr.Bits())}
		if port != "" {
			out.DestinationPortType, out.DestinationPortMultiple = TypeMultiple, []string{port}
			in.SourcePortType, in.SourcePortMultiple = TypeMultiple, []string{port}
		}
		rules = append(rules, out, in)
		id -= 2
	}
	for _, dir := range []string{Incoming, Outgoing} {
		rules = append(rules, Rule{ID: id, Name: "Isolation: deny everything else " + dir, Action: ActionDeny, Priority: "4", Direction: dir,
			FrameType: "ip", Protocol: "any", AlertEnabled: false})
		id--
	}
	for i := range rules {
		rules[i].Normalize()
	}
	return rules, nil
}

func parseAllowEntry(s string) (proto string, addr netip.Prefix, port string, err error) {
	f := strings.Fields(s)
	proto = "any"
	switch len(f) {
	case 1:
	case 2:
		proto = strings.ToLower(f[0])
		if proto != "tcp" && proto != "udp" && proto != "icmp" && proto != "icmpv6" && proto != "any" {
			return "", netip.Prefix{}, "", fmt.Errorf("protocol %q: want tcp, udp, icmp, icmpv6 or any", f[0])
		}
		f = f[1:]
	default:
		return "", netip.Prefix{}, "", fmt.Errorf(`want "[PROTO] ADDRESS[/PREFIX][:PORT]"`)
	}
	host := f[0]
	if ap, perr := netip.ParseAddrPort(host); perr == nil {
		host, port = ap.Addr().String(), strconv.Itoa(int(ap.Port()))
	} else if h, p, ok := strings.Cut(host, "]:"); ok && strings.HasPrefix(h, "[") {
		host, port = h[1:], p
	} else if strings.Count(host, ":") == 1 {
		host, port, _ = strings.Cut(host, ":")
	}
	if port != "" {
		if proto != "tcp" && proto != "udp" {
			return "", netip.Prefix{}, "", fmt.Errorf("a port needs protocol tcp or udp")
		}
		if n, perr := strconv.Atoi(port); perr != nil || n < 1 || n > 65535 {
			return "", netip.Prefix{}, "", fmt.Errorf("port %q: want 1 to 65535", port)
		}
	}
	if strings.Contains(host, "/") {
		addr, err = netip.ParsePrefix(host)
	} else {
		var a netip.Addr
		a, err = netip.ParseAddr(host)
		addr = netip.PrefixFrom(a, a.BitLen())
	}
	if err != nil {
		return "", netip.Prefix{}, "", fmt.Errorf("address %q: want an IP address or CIDR", host)
	}
	return proto, addr.Masked(), port, nil
}
