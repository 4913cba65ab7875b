package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/credentials"
)

// seedFlow is one NetFlow v5 record the test sends.
type seedFlow struct {
	exporter         string // 127.0.0.1 or 127.0.0.2: the two channels of "live"
	src, dst         string
	sport, dport     uint16
	bytes, packets   uint32
	startAfterWindow time.Duration // from the window's start
}

// v5Datagram builds a NetFlow v5 datagram (a 24-byte header, then 48-byte
// records) exported at export, each flow starting at its offset from window
// and lasting half a second.
func v5Datagram(export, window time.Time, flows []seedFlow) []byte {
	const uptime = 100_000_000 // ms since the exporter booted
	be := binary.BigEndian
	b := be.AppendUint16(nil, 5)
	b = be.AppendUint16(b, uint16(len(flows)))
	b = be.AppendUint32(b, uptime)
	b = be.AppendUint32(b, uint32(export.Unix()))
	b = be.AppendUint32(b, 0)
	b = be.AppendUint32(b, 1) // sequence
	b = append(b, 0, 0, 0, 0) // engine type and ID, no sampling
	for _, f := range flows {
		first := uptime - uint32(export.Sub(window.Add(f.startAfterWindow)).Milliseconds())
		b = append(b, net.ParseIP(f.src).To4()...)
		b = append(b, net.ParseIP(f.dst).To4()...)
		b = append(b, 0, 0, 0, 0) // next hop
		b = be.AppendUint16(b, 1) // input interface
		b = be.AppendUint16(b, 2) // output interface
		b = be.AppendUint32(b, f.packets)
		b = be.AppendUint32(b, f.bytes)
		b = be.AppendUint32(b, first)
		b = be.AppendUint32(b, first+500)
		b = be.AppendUint16(b, f.sport)
		b = be.AppendUint16(b, f.dport)
		b = append(b, 0, 0x1b, 6, 0)            // pad, TCP flags, TCP, ToS
		b = append(b, 0, 0, 0, 0, 24, 24, 0, 0) // AS numbers, masks, pad
	}
	return b
}

// TestFlowmonSeedCurlExamples runs the seed's curl commands, as written,
// against `yagura dev` after sending it NetFlow v5 from two exporters, and
// checks the numbers: a statistic aggregated by srcip,dstip on profile live,
// its results, and a chart of 10 minutes on the 5-minute profile (two
// values per channel).
func TestFlowmonSeedCurlExamples(t *testing.T) {
	endToEnd(t)
	requireTool(t, "curl", "curl")
	requireTool(t, "jq", "jq")
	seed, err := os.ReadFile(filepath.Join("testdata", "flowmon-seed.sh"))
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	for _, c := range strings.Split(string(seed), "\n---\n") {
		var lines []string
		for _, l := range strings.Split(c, "\n") {
			if !strings.HasPrefix(l, "#") {
				lines = append(lines, l)
			}
		}
		cmds = append(cmds, strings.Join(lines, "\n"))
	}
	if len(cmds) != 4 {
		t.Fatalf("testdata/flowmon-seed.sh: %d commands, want 4", len(cmds))
	}

	netflow := freeUDPPort(t)
	dir := filepath.Join(t.TempDir(), "data")
	p := startProc(t, "dev", "dev", "--data-dir", dir, "--listen", "127.0.0.1:0",
		"--netflow-listen", netflow, "--ipfix-listen", "127.0.0.1:0", "--sflow-listen", "127.0.0.1:0")
	eventually(t, 60*time.Second, "yagura dev banner", func() (bool, string) {
		return strings.Contains(p.out.String(), "Local agent"), p.out.String()
	})
	creds, err := credentials.Load(filepath.Join(dir, "dev-credentials.json"))
	if err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(strings.TrimSuffix(creds.URL, "/"), "https://")

	// A 10-minute window of two 5-minute intervals that has ended.
	window := time.Now().UTC().Truncate(5 * time.Minute).Add(-10 * time.Minute)
	flows := []seedFlow{
		{"127.0.0.1", "10.0.0.1", "10.0.0.2", 40001, 443, 1000, 10, 1 * time.Minute},
		{"127.0.0.2", "10.0.0.1", "10.0.0.2", 40002, 443, 3000, 30, 3 * time.Minute},
		{"127.0.0.1", "10.0.0.3", "10.0.0.4", 40003, 22, 5000, 50, 6 * time.Minute},
		{"127.0.0.2", "10.0.0.5", "10.0.0.6", 40004, 53, 2000, 20, 8 * time.Minute},
		// Outside the window: must not count.
		{"127.0.0.1", "10.9.9.9", "10.0.0.2", 40005, 443, 99999, 99, -1 * time.Minute},
	}
	export := time.Now().UTC()
	for _, exporter := range []string{"127.0.0.1", "127.0.0.2"} {
		var mine []seedFlow
		for _, f := range flows {
			if f.exporter == exporter {
				mine = append(mine, f)
			}
		}
		sendV5(t, exporter, netflow, export, window, mine)
	}

	fill := func(cmd string, vals map[string]string) string {
		for k, v := range vals {
			cmd = strings.ReplaceAll(cmd, k, v)
		}
		return cmd
	}
	run := func(cmd string) []byte {
		t.Helper()
		out, err := exec.Command("sh", "-c", cmd).Output()
		if err != nil {
			t.Fatalf("%s\n%v", cmd, err)
		}
		return out
	}
	var tok struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
		Refresh     string `json:"refresh_token"`
	}
	if err := json.Unmarshal(run(fill(cmds[0], map[string]string{
		"<flowmon_address>": addr, "<username>": creds.User, "<password>": creds.Password,
	})), &tok); err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken == "" || tok.ExpiresIn != 86400 || tok.Refresh == "" {
		t.Fatalf("token answer %+v: want an access token for 86400 s and a refresh token", tok)
	}
	common := map[string]string{
		"<flowmon_address>": addr, "<access_token>": tok.AccessToken,
		"<start_time>": window.Format("2006-01-02 15:04"), "<end_time>": window.Add(10 * time.Minute).Format("2006-01-02 15:04"),
		"<profile_id>": "live",
		`"<channel_id#1>", "<channel_id#2>", ...`: `"127.0.0.1", "127.0.0.2"`,
	}
	stats := fill(cmds[1], common)
	stats = fill(stats, map[string]string{
		"<statistics>": "record", "<order_by>": "bytes",
		`"<aggregate_by#1>", "<aggregate_by#2>", ...`: `"srcip", "dstip"`,
		"<filter>": "", "<number_of_displays>": "10",
	})
	type row struct {
		SrcIP string `json:"srcip"`
		DstIP string `json:"dstip"`
		Pkt   uint64 `json:"pkt"`
		Byt   uint64 `json:"byt"`
		Fl    uint64 `json:"fl"`
	}
	want := []row{
		{"10.0.0.3", "10.0.0.4", 50, 5000, 1},
		{"10.0.0.1", "10.0.0.2", 40, 4000, 2},
		{"10.0.0.5", "10.0.0.6", 20, 2000, 1},
	}
	var got []row
	// The collector writes a batch at most a second or so after it arrives.
	eventually(t, 30*time.Second, "the statistic to count every flow", func() (bool, string) {
		var an struct{ ID json.Number }
		if err := json.Unmarshal(run(stats), &an); err != nil || an.ID == "" {
			return false, fmt.Sprintf("statistics answer: %v", err)
		}
		got = nil
		out := run(fill(cmds[2], map[string]string{"<flowmon_address>": addr, "<access_token>": tok.AccessToken, "<result_id>": an.ID.String()}))
		if err := json.Unmarshal(out, &got); err != nil {
			return false, fmt.Sprintf("results %s: %v", out, err)
		}
		return reflect.DeepEqual(got, want), fmt.Sprintf("got %+v, want %+v", got, want)
	})

	chart := fill(fill(cmds[3], common), map[string]string{"<measure_value>": "traffic", "<protocol_id>": "0"})
	var series []struct {
		Channel struct{ ID string } `json:"channel"`
		Values  [][2]float64        `json:"values"`
	}
	if err := json.Unmarshal(run(chart), &series); err != nil {
		t.Fatal(err)
	}
	wantSeries := map[string][]float64{"127.0.0.1": {1000, 5000}, "127.0.0.2": {3000, 2000}}
	if len(series) != 2 {
		t.Fatalf("chart: %d channels, want 2: %+v", len(series), series)
	}
	for _, s := range series {
		var vals []float64
		for i, v := range s.Values {
			if want := float64(window.Add(time.Duration(i) * 5 * time.Minute).UnixMilli()); v[0] != want {
				t.Errorf("chart %s point %d at %v, want %v", s.Channel.ID, i, v[0], want)
			}
			vals = append(vals, v[1])
		}
		if !reflect.DeepEqual(vals, wantSeries[s.Channel.ID]) {
			t.Errorf("chart %s: %v, want %v (two 5-minute values)", s.Channel.ID, vals, wantSeries[s.Channel.ID])
		}
	}
	// Protocol 17 (UDP): every flow sent is TCP.
	udp := fill(fill(cmds[3], common), map[string]string{"<measure_value>": "flows", "<protocol_id>": "17"})
	if err := json.Unmarshal(run(udp), &series); err != nil {
		t.Fatal(err)
	}
	for _, s := range series {
		for _, v := range s.Values {
			if v[1] != 0 {
				t.Errorf("chart of UDP flows on %s: %v, want zeros", s.Channel.ID, s.Values)
			}
		}
	}
	p.stop(t, os.Interrupt)
}

// freeUDPPort returns a loopback UDP address nobody listens on now.
func freeUDPPort(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// sendV5 sends flows from the given local address (the exporter), their
// times relative to window.
func sendV5(t *testing.T, from, to string, export, window time.Time, flows []seedFlow) {
	t.Helper()
	raddr, err := net.ResolveUDPAddr("udp", to)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(from)}, raddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := v5Datagram(export, window, flows)
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
}
