package flowfilter

import (
	"bufio"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/filters.golden from Match")

// testFlow is a flow with its row ID.
type testFlow struct {
	ID int
	Flow
}

const (
	tFIN, tSYN, tRST, tPSH, tACK, tURG, tECE, tCWR = 1, 2, 4, 8, 16, 32, 64, 128
	sec                                            = int64(1_000_000)
	t0                                             = int64(1_700_000_000) * sec
)

func a(s string) netip.Addr { return netip.MustParseAddr(s) }

// testFlows are hand-made to sit on the edges the filters test: network
// boundaries, IPv4 next to IPv4-mapped IPv6, the lowest and highest
// addresses, ports and counters, zero durations and packets.
var testFlows = []testFlow{
	{1, Flow{SrcAddr: a("10.0.0.1"), DstAddr: a("192.0.2.1"), SrcPort: 51000, DstPort: 443, Proto: 6, IPVersion: 4, TCPFlags: tSYN | tACK | tPSH | tFIN,
		Bytes: 1_500_000, Packets: 1200, TimeStart: t0, TimeEnd: t0 + 10*sec, InIf: 1, OutIf: 2, Exporter: "edge1"}},
	{2, Flow{SrcAddr: a("192.0.2.1"), DstAddr: a("10.0.0.1"), SrcPort: 443, DstPort: 51000, Proto: 6, IPVersion: 4, TCPFlags: tSYN | tACK,
		Bytes: 80_000, Packets: 900, TimeStart: t0, TimeEnd: t0 + 10*sec, InIf: 2, OutIf: 1, Exporter: "edge1"}},
	{3, Flow{SrcAddr: a("198.51.100.7"), DstAddr: a("192.0.2.1"), SrcPort: 40000, DstPort: 443, Proto: 6, IPVersion: 4, TCPFlags: tSYN,
		Bytes: 60, Packets: 1, TimeStart: t0, TimeEnd: t0, InIf: 3, OutIf: 2, Exporter: "edge1"}},
	{4, Flow{SrcAddr: a("10.255.255.255"), DstAddr: a("11.0.0.0"), SrcPort: 53, DstPort: 53, Proto: 17, IPVersion: 4,
		Bytes: 120, Packets: 2, TimeStart: t0, TimeEnd: t0 + 1000, InIf: 1, OutIf: 4294967295, Exporter: "core-2"}},
	{5, Flow{SrcAddr: a("9.255.255.255"), DstAddr: a("10.0.0.0"), SrcPort: 123, DstPort: 123, Proto: 17, IPVersion: 4,
		Bytes: 76, Packets: 1, TimeStart: t0, TimeEnd: t0 + 1, InIf: 4294967295, OutIf: 2, Exporter: "core-2"}},
	{6, Flow{SrcAddr: a("2001:db8::1"), DstAddr: a("2001:db8::53"), SrcPort: 33000, DstPort: 53, Proto: 17, IPVersion: 6,
		Bytes: 90, Packets: 1, TimeStart: t0, TimeEnd: t0 + 500, InIf: 5, OutIf: 6, Exporter: "ルーター"}},
	{7, Flow{SrcAddr: a("2001:db8::53"), DstAddr: a("2001:db8::1"), SrcPort: 53, DstPort: 33000, Proto: 17, IPVersion: 6,
		Bytes: 300, Packets: 1, TimeStart: t0, TimeEnd: t0 + 500, InIf: 6, OutIf: 5, Exporter: "ルーター"}},
	{8, Flow{SrcAddr: a("2001:db8:1::9"), DstAddr: a("2606:4700::1111"), SrcPort: 50500, DstPort: 443, Proto: 6, IPVersion: 6, TCPFlags: tSYN | tACK | tECE | tCWR,
		Bytes: 5_000_000, Packets: 4000, TimeStart: t0, TimeEnd: t0 + 2*sec, InIf: 5, OutIf: 7, Exporter: "edge1"}},
	{9, Flow{SrcAddr: a("fe80::1"), DstAddr: a("ff02::1"), Proto: 58, IPVersion: 6,
		Bytes: 64, Packets: 1, TimeStart: t0, TimeEnd: t0, InIf: 5, Exporter: "edge1"}},
	{10, Flow{SrcAddr: a("192.0.2.200"), DstAddr: a("203.0.113.9"), Proto: 1, IPVersion: 4,
		Bytes: 84, Packets: 1, TimeStart: t0, TimeEnd: t0, InIf: 1, OutIf: 2, Exporter: "core-2"}},
	{11, Flow{SrcAddr: a("0.0.0.0"), DstAddr: a("255.255.255.255"), SrcPort: 68, DstPort: 67, Proto: 17, IPVersion: 4,
		Bytes: 328, Packets: 1, TimeStart: t0, TimeEnd: t0, InIf: 9, Exporter: "edge1"}},
	{12, Flow{SrcAddr: a("::"), DstAddr: a("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), SrcPort: 0, DstPort: 65535, Proto: 17, IPVersion: 6,
		Bytes: 0, Packets: 0, TimeStart: t0, TimeEnd: t0 + sec, InIf: 0, OutIf: 0, Exporter: ""}},
	{13, Flow{SrcAddr: a("10.1.2.3"), DstAddr: a("10.3.2.1"), SrcPort: 22, DstPort: 60000, Proto: 6, IPVersion: 4, TCPFlags: tACK | tPSH,
		Bytes: 2_000_000_000, Packets: 1_500_000, TimeStart: t0, TimeEnd: t0 + 3600*sec, InIf: 1, OutIf: 2, Exporter: "core-2"}},
	{14, Flow{SrcAddr: a("10.3.2.1"), DstAddr: a("10.1.2.3"), SrcPort: 60000, DstPort: 22, Proto: 6, IPVersion: 4, TCPFlags: tACK | tRST,
		Bytes: 40_000_000, Packets: 700_000, TimeStart: t0, TimeEnd: t0 + 3600*sec, InIf: 2, OutIf: 1, Exporter: "core-2"}},
	{15, Flow{SrcAddr: a("203.0.113.5"), DstAddr: a("198.51.100.7"), SrcPort: 61000, DstPort: 3389, Proto: 6, IPVersion: 4, TCPFlags: tSYN | tRST,
		Bytes: 104, Packets: 2, TimeStart: t0, TimeEnd: t0 + 3*sec, InIf: 1, OutIf: 3, Exporter: "edge1"}},
	{16, Flow{SrcAddr: a("192.0.2.1"), DstAddr: a("192.0.2.1"), SrcPort: 53, DstPort: 53, Proto: 17, IPVersion: 4,
		Bytes: 1000, Packets: 10, TimeStart: t0, TimeEnd: t0 + 1000*1000, InIf: 1, OutIf: 1, Exporter: "edge1"}},
	{17, Flow{SrcAddr: a("192.0.2.127"), DstAddr: a("192.0.2.128"), Proto: 47, IPVersion: 4,
		Bytes: 18446744073709551615, Packets: 18446744073709551615, TimeStart: t0, TimeEnd: t0 + 60*sec, InIf: 4, OutIf: 4, Exporter: "core-2"}},
	{18, Flow{SrcAddr: a("2001:db8::1"), DstAddr: a("192.0.2.1"), SrcPort: 1024, DstPort: 80, Proto: 6, IPVersion: 6, TCPFlags: tFIN | tSYN | tRST | tPSH | tACK | tURG,
		Bytes: 999_999, Packets: 1000, TimeStart: t0, TimeEnd: t0 + 999_999, InIf: 7, OutIf: 8, Exporter: "edge1"}},
	{19, Flow{SrcAddr: a("100.64.0.1"), DstAddr: a("8.8.8.8"), SrcPort: 1023, DstPort: 8080, Proto: 6, IPVersion: 4, TCPFlags: tFIN | tACK,
		Bytes: 1_000_000, Packets: 1000, TimeStart: t0, TimeEnd: t0 + 8*sec, InIf: 1, OutIf: 2, Exporter: "edge1"}},
	{20, Flow{SrcAddr: a("8000::1"), DstAddr: a("7fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), SrcPort: 65535, DstPort: 22, Proto: 6, IPVersion: 6, TCPFlags: tSYN,
		Bytes: 1_000_001, Packets: 1, TimeStart: t0, TimeEnd: t0 + 60*sec, InIf: 2, OutIf: 2, Exporter: "edge1"}},
	{21, Flow{SrcAddr: a("2001:db8::1"), DstAddr: a("203.0.113.200"), SrcPort: 443, DstPort: 443, Proto: 50, IPVersion: 6,
		Bytes: 64_000, Packets: 1000, TimeStart: t0 + 5*sec, TimeEnd: t0, InIf: 1, OutIf: 1, Exporter: "edge1"}},
	{22, Flow{SrcAddr: a("172.16.0.1"), DstAddr: a("10.0.0.1"), SrcPort: 5000, DstPort: 3389, Proto: 132, IPVersion: 4,
		Bytes: 1_000_000, Packets: 1000, TimeStart: t0, TimeEnd: t0 + 8*sec, InIf: 3, OutIf: 2, Exporter: "edge1"}},
}

// filterCase is a line of testdata/filters.txt.
type filterCase struct {
	line   int
	filter string
}

func readFilters(t testing.TB) []filterCase {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "filters.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []filterCase
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cases = append(cases, filterCase{n, line})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return cases
}

// matchIDs returns the IDs of the test flows that e matches.
func matchIDs(e Expr) []int {
	ids := []int{}
	for _, f := range testFlows {
		if Match(e, f.Flow) {
			ids = append(ids, f.ID)
		}
	}
	return ids
}

func formatIDs(ids []int) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.Itoa(id)
	}
	return "[" + strings.Join(s, " ") + "]"
}

// TestMatchGolden checks Match against testdata/filters.golden, the
// reviewed selection of each filter, so that the reference evaluator (and
// with it the SQL, which the engine tests compare with it) cannot drift.
func TestMatchGolden(t *testing.T) {
	var b strings.Builder
	for _, c := range readFilters(t) {
		e := mustParse(t, c.filter)
		fmt.Fprintf(&b, "%s\n\t%s\n", c.filter, formatIDs(matchIDs(e)))
	}
	golden := filepath.Join("testdata", "filters.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(b.String(), string(want)); diff != "" {
		t.Errorf("selections differ from %s (-got +want):\n%s", golden, diff)
	}
}

// TestMatchSpotChecks states by hand what some filters select, independent
// of the golden file.
func TestMatchSpotChecks(t *testing.T) {
	tests := []struct {
		filter string
		want   []int
	}{
		{"src net 10.0.0.0/8", []int{1, 4, 13, 14}},
		{"dst net 10.0.0.0/8", []int{2, 5, 13, 14, 22}},
		{"host ::", []int{12}},
		{"net ::ffff:0:0/96", []int{1, 2, 3, 4, 5, 10, 11, 13, 14, 15, 16, 17, 18, 19, 21, 22}},
		{"src and dst host 192.0.2.1", []int{16}},
		{"port in [22, 3389]", []int{13, 14, 15, 20, 22}},
		{"bytes > 1M", []int{1, 8, 13, 14, 17, 20}},
		{"bps > 1M", []int{1, 5, 6, 7, 8, 13, 17, 18}},          // 5: 76 bytes in 1 µs
		{"bps >= 1M", []int{1, 5, 6, 7, 8, 13, 17, 18, 19, 22}}, // 19, 22: exactly 1M
		{"bpp = 0", []int{12}},
		{"duration = 0", []int{3, 9, 10, 11}},
		{"flags S and not flags A", []int{3, 15, 20}},
		{"proto tcp and dst port 443 and not src net 10.0.0.0/8", []int{3, 8}},
		{"if 4294967295", []int{4, 5}},
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			if diff := cmp.Diff(matchIDs(mustParse(t, tt.filter)), tt.want); diff != "" {
				t.Errorf("Match (-got +want):\n%s", diff)
			}
		})
	}
}

// sortedIDs sorts ids in place and returns them.
func sortedIDs(ids []int) []int {
	slices.Sort(ids)
	return ids
}
