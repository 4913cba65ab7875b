package firewall

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFirewallCompileErrors(t *testing.T) {
	lists := Set{
		IPLists:   []IPList{{ID: 10, Name: "peers", Items: []string{"10.0.0.5"}}},
		PortLists: []PortList{{ID: 30, Name: "web", Items: []string{"80"}}},
	}
	icmp := 8
	tests := []struct {
		name   string
		edit   func(*Rule)
		field  string
		inText string
	}{
		{"bad entry in multiple", func(r *Rule) {
			r.SourceIPType, r.SourceIPMultiple = TypeMultiple, []string{"10.0.0.1", "10.0.0.0/8", "10.0.0.x"}
		}, "sourceIPMultiple[2]", `"10.0.0.x" is not an address`},
		{"empty multiple", func(r *Rule) { r.SourceIPType = TypeMultiple }, "sourceIPMultiple", "is empty"},
		{"bad single", func(r *Rule) { r.DestinationIPType, r.DestinationIPValue = TypeSingle, "10.0.0.256" }, "destinationIPValue", "not an IPv4 or IPv6"},
		{"mask too long", func(r *Rule) {
			r.SourceIPType, r.SourceIPValue, r.SourceIPMask = TypeMasked, "10.0.0.0", "33"
		}, "sourceIPMask", "0 to 32"},
		{"non-contiguous netmask", func(r *Rule) {
			r.SourceIPType, r.SourceIPValue, r.SourceIPMask = TypeMasked, "10.0.0.0", "255.0.255.0"
		}, "sourceIPMask", "not contiguous"},
		{"dotted mask on IPv6", func(r *Rule) {
			r.SourceIPType, r.SourceIPValue, r.SourceIPMask = TypeMasked, "2001:db8::", "255.255.0.0"
		}, "sourceIPMask", "dotted IPv4 netmask"},
		{"reversed range", func(r *Rule) {
			r.SourceIPType, r.SourceIPRangeFrom, r.SourceIPRangeTo = TypeRange, "10.0.0.9", "10.0.0.5"
		}, "sourceIPRangeFrom", "starts after it ends"},
		{"mixed-family range", func(r *Rule) {
			r.SourceIPType, r.SourceIPRangeFrom, r.SourceIPRangeTo = TypeRange, "10.0.0.1", "2001:db8::1"
		}, "sourceIPRangeFrom", "same family"},
		{"bad IP type", func(r *Rule) { r.SourceIPType = "subnet" }, "sourceIPType", "must be any, single"},
		{"missing IP list", func(r *Rule) { r.SourceIPType, r.SourceIPListID = TypeIPList, 99 }, "sourceIPListID", "names no IP list"},
		{"bad port range", func(r *Rule) { r.DestinationPortMultiple = []string{"90-80"} }, "destinationPortMultiple[0]", "starts after it ends"},
		{"port too large", func(r *Rule) { r.DestinationPortMultiple = []string{"22", "70000"} }, "destinationPortMultiple[1]", "0 to 65535"},
		{"missing port list", func(r *Rule) { r.DestinationPortType, r.DestinationPortListID = TypePortList, 31 }, "destinationPortListID", "names no port list"},
		{"ports without tcp or udp", func(r *Rule) { r.Protocol = "icmp" }, "protocol", "port matches need protocol tcp, udp or tcp-udp"},
		{"ports with any protocol", func(r *Rule) { r.Protocol = "" }, "protocol", "port matches need"},
		{"bad MAC", func(r *Rule) { r.SourceMACType, r.SourceMACValue = TypeSingle, "02:00:00:00:00" }, "sourceMACValue", "not a MAC address"},
		{"bad MAC in multiple", func(r *Rule) {
			r.SourceMACType, r.SourceMACMultiple = TypeMultiple, []string{"02:00:00:00:00:01", "nope"}
		}, "sourceMACMultiple[1]", "not a MAC address"},
		{"MAC on outgoing rule", func(r *Rule) {
			r.Direction, r.SourceMACType, r.SourceMACValue = Outgoing, TypeSingle, "02:00:00:00:00:01"
		}, "direction", "incoming traffic only"},
		{"tcp flags without tcp", func(r *Rule) { r.Protocol, r.TCPFlags = "tcp-udp", []string{"syn"} }, "tcpflags", "need protocol tcp"},
		{"ICMP type with tcp", func(r *Rule) { r.ICMPType = &icmp }, "ICMPType", "needs protocol icmp or icmpv6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := base()
			tt.edit(&r)
			s := lists
			s.Rules = []Rule{r}
			_, err := Compile(&s)
			checkFieldErr(t, err, tt.field, tt.inText)
			if err != nil && !strings.HasPrefix(err.Error(), `rule 5 "allow ssh": `) {
				t.Errorf("error %q does not name the rule", err)
			}
		})
	}
}

func TestFirewallCompileListErrors(t *testing.T) {
	tests := []struct {
		name string
		set  Set
		want string
	}{
		{"bad IP list entry", Set{IPLists: []IPList{{ID: 7, Name: "office", Items: []string{"10.0.0.1", "10.0.0.300 # typo"}}}},
			`IP list 7 "office": [1]: "10.0.0.300 # typo" is not an address`},
		{"bad MAC list entry", Set{MACLists: []MACList{{ID: 8, Name: "printers", Items: []string{"zz:00:00:00:00:00"}}}},
			`MAC list 8 "printers": [0]:`},
		{"bad port list entry", Set{PortLists: []PortList{{ID: 9, Name: "web", Items: []string{"80", "443", "8000-"}}}},
			`port list 9 "web": [2]:`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(&tt.set)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestFirewallCompileOrder(t *testing.T) {
	r := func(id int, action, prio string) Rule {
		return Rule{ID: id, Name: "r", Action: action, Priority: prio, Direction: Incoming}
	}
	p := mustCompile(t,
		r(1, ActionAllow, "0"), r(2, ActionDeny, "0"), r(3, ActionForceAllow, "0"), r(4, ActionBypass, "0"),
		r(5, ActionLogOnly, "4"), r(6, ActionBypass, "4"), r(7, ActionDeny, "4"), r(8, ActionForceAllow, "4"),
		r(9, ActionDeny, "2"), r(10, ActionDeny, "1"), r(11, ActionDeny, "3"), r(0, ActionDeny, "2"),
	)
	var got []int
	for _, c := range p.Rules {
		got = append(got, c.Rule.ID)
	}
	want := []int{6, 5, 8, 7, 11, 0, 9, 10, 4, 3, 2, 1}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("evaluation order (-got +want):\n%s", diff)
	}
	if !p.AllowIn || p.AllowOut {
		t.Errorf("AllowIn %v AllowOut %v, want true false", p.AllowIn, p.AllowOut)
	}
}

func TestFirewallParseItems(t *testing.T) {
	ips, err := ParseIPItems([]string{"10.0.0.8-10.0.0.20 # mid", "10.0.0.0/29", "", "10.0.0.30", "::ffff:10.0.0.21", "2001:db8::/127"})
	if err != nil {
		t.Fatal(err)
	}
	want := []IPRange{
		{netip.MustParseAddr("10.0.0.0"), netip.MustParseAddr("10.0.0.21")},
		{netip.MustParseAddr("10.0.0.30"), netip.MustParseAddr("10.0.0.30")},
		{netip.MustParseAddr("2001:db8::"), netip.MustParseAddr("2001:db8::1")},
	}
	if diff := cmp.Diff(ips, want, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("IP items merged (-got +want):\n%s", diff)
	}
	ports, err := ParsePortItems([]string{"80", "79", "81-90", "100", " 443 # https"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ports, []PortRange{{79, 90}, {100, 100}, {443, 443}}); diff != "" {
		t.Errorf("port items merged (-got +want):\n%s", diff)
	}
}
