//go:build linux

package nftfw

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/firewall"
)

// benchSet returns n varied rules: every action, both directions, TCP, UDP
// and ICMP, single addresses, networks, ranges, lists of both families,
// port lists and ranges, TCP flags, and a few shared IP and port lists.
func benchSet(n int) *firewall.Set {
	r := rand.New(rand.NewPCG(42, 1))
	s := &firewall.Set{}
	for l := range 20 {
		var items []string
		for i := range 50 {
			items = append(items, fmt.Sprintf("10.%d.%d.0/24", 100+l, i), fmt.Sprintf("2001:db8:%x:%x::/64", l, i))
		}
		s.IPLists = append(s.IPLists, firewall.IPList{ID: l + 1, Name: fmt.Sprintf("list %d", l), Items: items})
		s.PortLists = append(s.PortLists, firewall.PortList{ID: l + 1, Name: fmt.Sprintf("ports %d", l), Items: []string{fmt.Sprint(1000 + l), fmt.Sprintf("%d-%d", 2000+10*l, 2005+10*l)}})
	}
	addr := func() string { return fmt.Sprintf("10.%d.%d.%d", r.IntN(256), r.IntN(256), 1+r.IntN(254)) }
	for i := range n {
		ru := firewall.Rule{ID: i + 1, Name: fmt.Sprintf("rule %d", i+1), Direction: firewall.Incoming}
		if r.IntN(3) == 0 {
			ru.Direction = firewall.Outgoing
		}
		switch k := r.IntN(100); {
		case k < 40:
			ru.Action, ru.Priority = firewall.ActionAllow, "0"
		case k < 75:
			ru.Action, ru.Priority = firewall.ActionDeny, fmt.Sprint(r.IntN(5))
		case k < 88:
			ru.Action, ru.Priority = firewall.ActionForceAllow, fmt.Sprint(r.IntN(5))
		case k < 98:
			ru.Action, ru.Priority = firewall.ActionBypass, fmt.Sprint(r.IntN(5))
		default:
			ru.Action, ru.Priority = firewall.ActionLogOnly, "4"
		}
		ru.Protocol = []string{"tcp", "tcp", "udp", "tcp-udp", "icmp", "any"}[r.IntN(6)]
		switch r.IntN(6) {
		case 0:
			ru.SourceIPType, ru.SourceIPValue = firewall.TypeSingle, addr()
		case 1:
			ru.SourceIPType, ru.SourceIPValue, ru.SourceIPMask = firewall.TypeMasked, addr(), fmt.Sprint(8+r.IntN(24))
		case 2:
			ru.SourceIPType, ru.SourceIPRangeFrom, ru.SourceIPRangeTo = firewall.TypeRange, "192.168.0.1", fmt.Sprintf("192.168.%d.1", 1+r.IntN(200))
		case 3:
			ru.SourceIPType, ru.SourceIPMultiple = firewall.TypeMultiple, []string{addr(), addr(), fmt.Sprintf("2001:db8::%x", r.IntN(65536))}
		case 4:
			ru.SourceIPType, ru.SourceIPListID = firewall.TypeIPList, 1+r.IntN(20)
		}
		if r.IntN(3) == 0 {
			ru.DestinationIPType, ru.DestinationIPValue = firewall.TypeSingle, addr()
		}
		switch ru.Protocol {
		case "tcp", "udp", "tcp-udp":
			switch r.IntN(4) {
			case 0:
				ru.DestinationPortType, ru.DestinationPortMultiple = firewall.TypeMultiple, []string{fmt.Sprint(1 + r.IntN(65535))}
			case 1:
				ru.DestinationPortType, ru.DestinationPortMultiple = firewall.TypeMultiple, []string{fmt.Sprint(1 + r.IntN(1000)), "8000-8080", fmt.Sprint(9000 + r.IntN(1000))}
			case 2:
				ru.DestinationPortType, ru.DestinationPortListID = firewall.TypePortList, 1+r.IntN(20)
			}
			if ru.Protocol == "tcp" && r.IntN(10) == 0 {
				ru.TCPFlags = []string{"syn"}
			}
		case "icmp":
			if r.IntN(2) == 0 {
				ty := []int{0, 3, 8, 11}[r.IntN(4)]
				ru.ICMPType = &ty
			}
		}
		ru.LogDisabled = r.IntN(5) == 0
		ru.Normalize()
		s.Rules = append(s.Rules, ru)
	}
	return s
}

// BenchmarkApply10000Rules compiles and applies 10,000 varied rules.
func BenchmarkApply10000Rules(b *testing.B) {
	benchApply(b, benchSet(10000), 10000, "rules/s")
}

// BenchmarkApplyIPList10000 applies one rule whose IP list has 10,000
// entries (addresses and networks of both families, none adjacent).
func BenchmarkApplyIPList10000(b *testing.B) {
	var items []string
	for i := range 10000 {
		switch i % 4 {
		case 0:
			items = append(items, fmt.Sprintf("10.%d.%d.1", i/256%256, i%256))
		case 1:
			items = append(items, fmt.Sprintf("172.%d.%d.0/28", 16+i/256%16, i%256))
		case 2:
			items = append(items, fmt.Sprintf("10.%d.%d.10-10.%d.%d.20", i/256%256, i%256, i/256%256, i%256))
		default:
			items = append(items, fmt.Sprintf("2001:db8:%x::/48", i))
		}
	}
	s := &firewall.Set{
		IPLists: []firewall.IPList{{ID: 1, Name: "blocklist", Items: items}},
		Rules: []firewall.Rule{{ID: 1, Name: "deny listed", Action: firewall.ActionDeny, Priority: "2", Direction: firewall.Incoming,
			SourceIPType: firewall.TypeIPList, SourceIPListID: 1}},
	}
	s.Rules[0].Normalize()
	benchApply(b, s, len(items), "entries/s")
}

// benchApply measures Compile and Apply of s, and reports n per second.
func benchApply(b *testing.B, s *firewall.Set, n int, unit string) {
	tn := newTestNet(b)
	e := tn.enforcer(b, Config{})
	ctx := context.Background()
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		p, err := firewall.Compile(s)
		if err != nil {
			b.Fatal(err)
		}
		if err := e.Apply(ctx, p, firewall.Options{Stateful: true}); err != nil {
			b.Fatal(err)
		}
	}
	perOp := time.Since(start) / time.Duration(b.N)
	b.ReportMetric(float64(n)/perOp.Seconds(), unit)
}
