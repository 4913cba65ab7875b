package flowfilter

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// exprOpts compares Exprs, which hold netip values.
var exprOpts = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

func mustParse(t testing.TB, s string) Expr {
	t.Helper()
	e, err := Parse(s)
	if err != nil {
		t.Fatalf("Parse(%q): %v", s, err)
	}
	return e
}

func TestParseCanonical(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "any"},
		{"  \t\n ", "any"},
		{"# just a comment\n", "any"},
		{"any", "any"},
		{"proto tcp", "proto tcp"},
		{"PROTO TCP", "proto tcp"},
		{"proto 6", "proto tcp"},
		{"proto 0x11", "proto udp"},
		{"proto icmp6", "proto icmp6"},
		{"proto ipv6-icmp", "proto icmp6"},
		{"proto 253", "proto 253"},
		{"proto gre or proto esp or proto ah or proto sctp", "proto gre or proto esp or proto ah or proto sctp"},
		{"inet", "ipv4"},
		{"inet6", "ipv6"},
		{"host 192.0.2.1", "host 192.0.2.1"},
		{"ip 192.0.2.1", "host 192.0.2.1"},
		{"src ip 2001:DB8::1", "src host 2001:db8::1"},
		{"dst host ::ffff:192.0.2.1", "dst host 192.0.2.1"},
		{"src and dst host 10.0.0.1", "src and dst host 10.0.0.1"},
		{"src or dst host 10.0.0.1", "host 10.0.0.1"},
		{"dst and src host 10.0.0.1", "src and dst host 10.0.0.1"},
		{"src && dst net 10.0.0.0/8", "src and dst net 10.0.0.0/8"},
		{"net 10.1.2.3/8", "net 10.0.0.0/8"},
		{"net 10.0.0.0 255.0.0.0", "net 10.0.0.0/8"},
		{"src net 192.168.1.0 255.255.255.128", "src net 192.168.1.0/25"},
		{"net 2001:db8::/32", "net 2001:db8::/32"},
		{"net ::ffff:10.0.0.0/104", "net 10.0.0.0/8"},
		{"net ::/0", "net ::/0"},
		{"net 0.0.0.0/0", "net 0.0.0.0/0"},
		{"host in [192.0.2.1, 10.0.0.0/8 2001:db8::1/128]", "host in [192.0.2.1, 10.0.0.0/8, 2001:db8::1]"},
		{"src ip in [ 192.0.2.1 ]", "src host in [192.0.2.1]"},
		{"port 443", "port 443"},
		{"port = 443", "port 443"},
		{"port == 443", "port 443"},
		{"port eq 443", "port 443"},
		{"dst port != 22", "dst port != 22"},
		{"src port > 1023", "src port > 1023"},
		{"src port>=1024", "src port >= 1024"},
		{"port lt 1024", "port < 1024"},
		{"port LE 1024", "port <= 1024"},
		{"port gt 1k", "port > 1000"},
		{"port in [22, 3389]", "port in [22, 3389]"},
		{"port in [22 3389,,80]", "port in [22, 3389, 80]"},
		{"dst port in [0x16]", "dst port in [22]"},
		{"bytes > 1M", "bytes > 1000000"},
		{"bytes > 1m", "bytes > 1000000"},
		{"bytes >= 2k", "bytes >= 2000"},
		{"bytes < 3G", "bytes < 3000000000"},
		{"bytes 4T", "bytes 4000000000000"},
		{"packets ge 10", "packets >= 10"},
		{"duration > 1000", "duration > 1000"},
		{"bps > 1M", "bps > 1000000"},
		{"pps < 100", "pps < 100"},
		{"bpp <= 64", "bpp <= 64"},
		{"flags S", "flags S"},
		{"flags AS", "flags SA"},
		{"flags sa", "flags SA"},
		{"flags X", "flags FSRPAU"},
		{"flags EC", "flags EC"},
		{"in if 3", "in if 3"},
		{"out if 4294967295", "out if 4294967295"},
		{"if 7", "if 7"},
		{"exporter router1", `exporter "router1"`},
		{"exporter 'edge \"a\"'", `exporter 'edge "a"'`},
		{`exporter "192.0.2.254"`, `exporter "192.0.2.254"`},
		{"exporter 'ルーター'", `exporter "ルーター"`},
		{"proto tcp and dst port 443 and not src net 10.0.0.0/8", "proto tcp and dst port 443 and not src net 10.0.0.0/8"},
		{"proto tcp && dst port 443 && ! src net 10.0.0.0/8", "proto tcp and dst port 443 and not src net 10.0.0.0/8"},
		{"port 1 || port 2", "port 1 or port 2"},
		{"port 1 or port 2 and port 3", "port 1 or port 2 and port 3"},
		{"(port 1 or port 2) and port 3", "(port 1 or port 2) and port 3"},
		{"port 1 and (port 2 and port 3)", "port 1 and port 2 and port 3"},
		{"(port 1 or (port 2 or port 3))", "port 1 or port 2 or port 3"},
		{"not (port 1 or port 2)", "not (port 1 or port 2)"},
		{"not (port 1 and port 2)", "not (port 1 and port 2)"},
		{"not not port 1", "not not port 1"},
		{"not (not port 1)", "not not port 1"},
		{"((((port 1))))", "port 1"},
		{"flags S and not flags A", "flags S and not flags A"},
		{"port 1 # first\n and port 2 # second", "port 1 and port 2"},
		{"src port 53 or dst port 53 and proto udp", "src port 53 or dst port 53 and proto udp"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			e := mustParse(t, tt.in)
			if got := e.String(); got != tt.want {
				t.Errorf("Parse(%q).String() = %q, want %q", tt.in, got, tt.want)
			}
			again := mustParse(t, e.String())
			if diff := cmp.Diff(again, e, exprOpts); diff != "" {
				t.Errorf("Parse(String()) differs (-got +want):\n%s", diff)
			}
		})
	}
}

func TestParseTree(t *testing.T) {
	p1, p2, p3 := Port{N: 1}, Port{N: 2}, Port{N: 3}
	tests := []struct {
		in   string
		want Expr
	}{
		{"port 1 or port 2 and port 3", Or{[]Expr{p1, And{[]Expr{p2, p3}}}}},
		{"port 1 and port 2 or port 3", Or{[]Expr{And{[]Expr{p1, p2}}, p3}}},
		{"not port 1 and port 2", And{[]Expr{Not{p1}, p2}}},
		{"not port 1 or port 2", Or{[]Expr{Not{p1}, p2}}},
		{"! (port 1 || port 2) && port 3", And{[]Expr{Not{Or{[]Expr{p1, p2}}}, p3}}},
		{"port 1 and port 2 and port 3", And{[]Expr{p1, p2, p3}}},
		{"src and dst port 1 or port 2", Or{[]Expr{Port{Dir: DirBoth, N: 1}, p2}}},
		{"not src or dst port 1", Not{Port{Dir: DirEither, N: 1}}},
		{"host 192.0.2.1", Host{Addr: netip.MustParseAddr("192.0.2.1")}},
		{"dst net 2001:db8::/32", Net{Dir: DirDst, Prefix: netip.MustParsePrefix("2001:db8::/32")}},
		{"flags X", Flags{Mask: 0x3f}},
		{"flags FSRPAUEC", Flags{Mask: 0xff}},
		{"duration >= 1k", Counter{Field: FieldDuration, Op: OpGe, N: 1000}},
		{"bytes 18446744073709551615", Counter{Field: FieldBytes, N: 1<<64 - 1}},
		{"if 0", Iface{N: 0}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if diff := cmp.Diff(mustParse(t, tt.in), tt.want, exprOpts); diff != "" {
				t.Errorf("Parse(%q) (-got +want):\n%s", tt.in, diff)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		in       string
		pos, col int
		msg      string
		expected []string
	}{
		{"port abc", 5, 6, `expected a port number (0-65535), a comparison or "in" after "port", found "abc"`, []string{"port", "comparison", "in"}},
		{"proto tcp and dst port abc", 23, 24, `expected a port number (0-65535), a comparison or "in" after "port", found "abc"`, []string{"port", "comparison", "in"}},
		{"port > abc", 7, 8, `expected a port number (0-65535) after "port >", found "abc"`, []string{"port"}},
		{"port 65536", 5, 6, `expected a port number (0-65535), a comparison or "in" after "port", found "65536"`, []string{"port", "comparison", "in"}},
		{"port", 4, 5, `expected a port number (0-65535), a comparison or "in" after "port", found the end of the filter`, []string{"port", "comparison", "in"}},
		{"port in 22", 8, 9, `expected "[" after "in", found "22"`, []string{"["}},
		{"port in []", 9, 10, `expected a port number (0-65535) in the list, found "]"`, []string{"port"}},
		{"port in [22", 11, 12, `expected a port number (0-65535), "," or "]", found the end of the filter`, []string{"port", ",", "]"}},
		{"port in [22, x]", 13, 14, `expected a port number (0-65535), "," or "]", found "x"`, []string{"port", ",", "]"}},
		{"proto foo", 6, 7, `expected a protocol name (tcp, udp, icmp, icmp6, gre, esp, ah, sctp, …) or number 0-255 after "proto", found "foo"`, []string{"protocol"}},
		{"proto 256", 6, 7, `expected a protocol name (tcp, udp, icmp, icmp6, gre, esp, ah, sctp, …) or number 0-255 after "proto", found "256"`, []string{"protocol"}},
		{"host 300.1.1.1", 5, 6, `expected an IPv4 or IPv6 address or "in" after "host", found "300.1.1.1"`, []string{"address", "in"}},
		{"host 10.0.0.0/8", 5, 6, `expected an IPv4 or IPv6 address (for a network, use "net") after "host", found "10.0.0.0/8"`, []string{"address"}},
		{"host fe80::1%eth0", 12, 13, `unexpected character '%'`, nil},
		{"host in [10.0.0.1, bad]", 19, 20, `expected an address, a network, "," or "]", found "bad"`, []string{"address", "network", ",", "]"}},
		{"host in [", 9, 10, `expected an IPv4 or IPv6 address or network in the list, found the end of the filter`, []string{"address", "network"}},
		{"net 10.0.0.0", 12, 13, `expected a netmask such as 255.255.255.0 after "10.0.0.0", found the end of the filter`, []string{"netmask"}},
		{"net 10.0.0.0 255.0.255.0", 13, 14, `expected a netmask such as 255.255.255.0 after "10.0.0.0", found "255.0.255.0"`, []string{"netmask"}},
		{"net 2001:db8::", 4, 5, `expected a network with a prefix length, such as 2001:db8::/32 after "net", found "2001:db8::"`, []string{"network"}},
		{"net 10.0.0.0/33", 4, 5, `expected a network such as 10.0.0.0/8 or 2001:db8::/32 after "net", found "10.0.0.0/33"`, []string{"network"}},
		{"src 10.0.0.1", 4, 5, `expected "host", "ip", "net" or "port" after "src", found "10.0.0.1"`, []string{"host", "ip", "net", "port"}},
		{"src and port 1", 8, 9, `expected "dst" after "src and", found "port"`, []string{"dst"}},
		{"dst or", 6, 7, `expected "src" after "dst or", found the end of the filter`, []string{"src"}},
		{"bytes > x", 8, 9, `expected a number (units k, M, G, T multiply by 1000) after "bytes >", found "x"`, []string{"number"}},
		{"bytes", 5, 6, `expected a comparison or a number (units k, M, G, T multiply by 1000) after "bytes", found the end of the filter`, []string{"comparison", "number"}},
		{"bytes > 1X", 8, 9, `expected a number (units k, M, G, T multiply by 1000) after "bytes >", found "1X"`, []string{"number"}},
		{"bytes > 18446744073709551616", 8, 9, `number 18446744073709551616 is too large`, nil},
		{"bytes > 20000000000T", 8, 9, `number 20000000000T is too large`, nil},
		{"duration > 9223372036854776", 11, 12, `duration 9223372036854776 ms is too long`, nil},
		{"duration < x", 11, 12, `expected a duration in milliseconds after "duration <", found "x"`, []string{"number"}},
		{"flags SZ", 6, 7, `expected TCP flags, letters of FSRPAUEC or X for all after "flags", found "SZ"`, []string{"flags"}},
		{"flags", 5, 6, `expected TCP flags, letters of FSRPAUEC or X for all after "flags", found the end of the filter`, []string{"flags"}},
		{"in port 1", 3, 4, `expected "if" after "in", found "port"`, []string{"if"}},
		{"if eth0", 3, 4, `expected an interface number after "if", found "eth0"`, []string{"number"}},
		{"out if 4294967296", 7, 8, `expected an interface number after "if", found "4294967296"`, []string{"number"}},
		{"exporter", 8, 9, `expected an exporter name after "exporter", found the end of the filter`, []string{"name"}},
		{"exporter ''", 9, 10, `expected an exporter name after "exporter", found string ""`, []string{"name"}},
		{`exporter "abc`, 9, 10, `unterminated string: expected a closing "`, []string{`"`}},
		{"exporter 'a\tb'", 11, 12, `control character in string`, nil},
		{"foo", 0, 1, `expected a filter primitive such as "host", "port" or "proto", found "foo"`, primitiveKeywords},
		{"port 1 port 2", 7, 8, `expected "and", "or" or the end of the filter, found "port"`, []string{"and", "or", "end of filter"}},
		{"port 1 and", 10, 11, `expected a filter primitive such as "host", "port" or "proto", found the end of the filter`, primitiveKeywords},
		{"port 1 or or port 2", 10, 11, `expected a filter primitive such as "host", "port" or "proto", found "or"`, primitiveKeywords},
		{"(port 1", 7, 8, `expected "and", "or" or ")", found the end of the filter`, []string{"and", "or", ")"}},
		{"port 1)", 6, 7, `expected "and", "or" or the end of the filter, found ")"`, []string{"and", "or", "end of filter"}},
		{"()", 1, 2, `expected a filter primitive such as "host", "port" or "proto", found ")"`, primitiveKeywords},
		{"not", 3, 4, `expected a filter primitive such as "host", "port" or "proto", found the end of the filter`, primitiveKeywords},
		{"port 1 & port 2", 7, 8, `expected "&&", found "&"`, []string{"&&"}},
		{"port 1 | port 2", 7, 8, `expected "||", found "|"`, []string{"||"}},
		{"port 1 and ポート 2", 11, 12, `unexpected character 'ポ'`, nil},
		{"exporter 'ルーター' and ポート 2", 28, 21, `unexpected character 'ポ'`, nil},
		{"port 1 \xff", 7, 8, `unexpected character byte 0xff`, nil},
		{"port 1; drop table flows", 6, 7, `unexpected character ';'`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := Parse(tt.in)
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("Parse(%q) = %v, want a *SyntaxError", tt.in, err)
			}
			want := &SyntaxError{Pos: tt.pos, Col: tt.col, Msg: tt.msg, Expected: tt.expected}
			if diff := cmp.Diff(se, want); diff != "" {
				t.Errorf("Parse(%q) error (-got +want):\n%s", tt.in, diff)
			}
		})
	}
}

func TestSyntaxErrorText(t *testing.T) {
	_, err := Parse("proto tcp and dst port abc")
	want := `filter: column 24: expected a port number (0-65535), a comparison or "in" after "port", found "abc"`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
}

func TestParseLimits(t *testing.T) {
	t.Run("length", func(t *testing.T) {
		s := strings.Repeat(" ", MaxLen) + "port 1"
		_, err := Parse(s)
		var se *SyntaxError
		if !errors.As(err, &se) || se.Pos != MaxLen || se.Col != MaxLen+1 || se.Msg != "filter is longer than 10000 bytes" {
			t.Errorf("Parse(%d bytes) = %#v", len(s), err)
		}
		if _, err := Parse(strings.Repeat(" ", MaxLen-6) + "port 1"); err != nil {
			t.Errorf("Parse(%d bytes): %v", MaxLen, err)
		}
	})
	t.Run("parentheses", func(t *testing.T) {
		ok := strings.Repeat("(", MaxDepth) + "port 1" + strings.Repeat(")", MaxDepth)
		if _, err := Parse(ok); err != nil {
			t.Errorf("Parse(%d parentheses): %v", MaxDepth, err)
		}
		deep := strings.Repeat("(", MaxDepth+1) + "port 1" + strings.Repeat(")", MaxDepth+1)
		_, err := Parse(deep)
		var se *SyntaxError
		if !errors.As(err, &se) || se.Pos != MaxDepth || se.Msg != `filter nested too deeply: more than 100 parentheses and "not"s` {
			t.Errorf("Parse(%d parentheses) = %#v", MaxDepth+1, err)
		}
	})
	t.Run("not", func(t *testing.T) {
		deep := strings.Repeat("not ", MaxDepth/2) + strings.Repeat("(", MaxDepth/2+1) + "port 1" + strings.Repeat(")", MaxDepth/2+1)
		_, err := Parse(deep)
		var se *SyntaxError
		if !errors.As(err, &se) || se.Pos != 4*(MaxDepth/2)+MaxDepth/2 {
			t.Errorf("Parse(deep nots) = %#v", err)
		}
	})
	t.Run("siblings are not nesting", func(t *testing.T) {
		s := strings.Repeat("(port 1) and ", 500) + "port 2"
		if _, err := Parse(s); err != nil {
			t.Errorf("Parse(500 siblings): %v", err)
		}
	})
}
