//go:build linux

package nftfw

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/yagura/yagura/internal/firewall"
)

// Network-namespace harness: an "agent" namespace, where the enforcer
// works, joined by a veth pair to a "peer" namespace that sends it frames.
// The agent is 10.0.0.1/24 and 2001:db8::1/64, as the semantic cases
// assume; the peer sends from any address (raw Ethernet frames), and has
// 10.0.0.254 and 2001:db8::fe for real connections.

const (
	agentIP4, agentIP6 = "10.0.0.1", "2001:db8::1"
	peerIP4, peerIP6   = "10.0.0.254", "2001:db8::fe"
	// markTTL marks the test's packets (IPv4 TTL, IPv6 hop limit), so that
	// the observation table counts them and nothing else.
	markTTL = 123
)

var (
	agentMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	peerMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
)

// requirePrivileges skips the test, or under CI=true fails it, when the
// namespace tests cannot run here.
func requirePrivileges(tb testing.TB) {
	tb.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (network namespaces, nftables)")
	}
	for _, bin := range []string{"ip", "nft", "conntrack"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin+" (apt-get install -y iproute2 nftables conntrack)")
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "nftfw: the network-namespace tests need " + strings.Join(missing, ", ")
	if os.Getenv("CI") == "true" {
		tb.Fatalf("%s; CI must run them", msg)
	}
	tb.Skip(msg)
}

func sh(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

type testNet struct {
	agent, peer   string // namespace names
	agentNS       *os.File
	peerNS        *os.File
	peerIfIndex   int
	agentIf       string
	frames        int // AF_PACKET socket in the peer namespace
	raw4, raw6    int // IPPROTO_RAW sockets in the agent namespace
	obs           *nftables.Conn
	obsTables     []*nftables.Table
	agentMAC      net.HardwareAddr // now; a case may change it
	peerAddrsOnce sync.Map
}

// newTestNet creates the two namespaces, removed when the test ends.
func newTestNet(tb testing.TB) *testNet {
	tb.Helper()
	requirePrivileges(tb)
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	id := hex.EncodeToString(rnd[:])
	n := &testNet{agent: "yg-a-" + id, peer: "yg-p-" + id, agentMAC: agentMAC}
	if out, err := exec.Command("ip", "netns", "add", n.agent).CombinedOutput(); err != nil {
		msg := fmt.Sprintf("nftfw: cannot create a network namespace: %v: %s", err, out)
		if os.Getenv("CI") == "true" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	tb.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n.agent).Run() })
	sh(tb, "ip", "netns", "add", n.peer)
	tb.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n.peer).Run() })
	a, p := "ya"+id, "yp"+id // at most 15 bytes
	n.agentIf = a
	sh(tb, "ip", "link", "add", a, "netns", n.agent, "address", agentMAC.String(), "type", "veth", "peer", "name", p, "netns", n.peer, "address", peerMAC.String())
	for _, cmd := range [][]string{
		{"ip", "-n", n.agent, "link", "set", "lo", "up"},
		{"ip", "-n", n.peer, "link", "set", "lo", "up"},
		{"ip", "netns", "exec", n.peer, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0"},
		{"ip", "netns", "exec", n.agent, "sysctl", "-qw",
			"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
			"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
			"net.ipv6.conf.default.router_solicitations=0"},
		{"ip", "-n", n.agent, "link", "set", a, "up"},
		{"ip", "-n", n.peer, "link", "set", p, "up"},
		{"ip", "-n", n.agent, "addr", "add", agentIP4 + "/24", "dev", a},
		{"ip", "-n", n.agent, "addr", "add", agentIP6 + "/64", "dev", a, "nodad"},
		{"ip", "-n", n.peer, "addr", "add", peerIP4 + "/24", "dev", p},
		{"ip", "-n", n.peer, "addr", "add", peerIP6 + "/64", "dev", p, "nodad"},
		// Static neighbours: no ARP or neighbour discovery, which the rules
		// under test could block, between the two real endpoints.
		{"ip", "-n", n.agent, "neigh", "replace", peerIP4, "lladdr", peerMAC.String(), "dev", a, "nud", "permanent"},
		{"ip", "-n", n.agent, "neigh", "replace", peerIP6, "lladdr", peerMAC.String(), "dev", a, "nud", "permanent"},
		{"ip", "-n", n.peer, "neigh", "replace", agentIP4, "lladdr", agentMAC.String(), "dev", p, "nud", "permanent"},
		{"ip", "-n", n.peer, "neigh", "replace", agentIP6, "lladdr", agentMAC.String(), "dev", p, "nud", "permanent"},
	} {
		sh(tb, cmd...)
	}
	// Conntrack's per-namespace settings: loose pickup of mid-stream TCP
	// (the default) and no window checks, so that a conntrack -I entry
	// judges later packets by state alone.
	sh(tb, "ip", "netns", "exec", n.agent, "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_be_liberal=1")
	var err error
	if n.agentNS, err = os.Open("/run/netns/" + n.agent); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { n.agentNS.Close() })
	if n.peerNS, err = os.Open("/run/netns/" + n.peer); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { n.peerNS.Close() })

	var link []struct {
		Ifindex int `json:"ifindex"`
	}
	if err := json.Unmarshal([]byte(sh(tb, "ip", "-n", n.peer, "-j", "link", "show", p)), &link); err != nil || len(link) != 1 {
		tb.Fatalf("peer link: %v", err)
	}
	n.peerIfIndex = link[0].Ifindex
	n.inNS(tb, n.peerNS, func() error {
		n.frames, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		return err
	})
	n.inNS(tb, n.agentNS, func() error {
		if n.raw4, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW); err != nil {
			return err
		}
		n.raw6, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_RAW)
		return err
	})
	tb.Cleanup(func() { unix.Close(n.frames); unix.Close(n.raw4); unix.Close(n.raw6) })
	n.observe(tb)
	return n
}

// inNS runs fn on a thread in the namespace ns; sockets fn opens stay in
// it.
func (n *testNet) inNS(tb testing.TB, ns *os.File, fn func() error) {
	tb.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid()))
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("setns back: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	if err := <-errc; err != nil {
		tb.Fatal(err)
	}
}

// enforcer returns an Enforcer working in the agent namespace, with rates
// high enough that no test event is suppressed, and its tables removed
// when the test ends.
func (n *testNet) enforcer(tb testing.TB, cfg Config) *Enforcer {
	tb.Helper()
	cfg.NetNS = int(n.agentNS.Fd())
	if cfg.LogOnlyRate == 0 {
		cfg.LogOnlyRate = 100000
	}
	if cfg.DropLogRate == 0 {
		cfg.DropLogRate = 100000
	}
	e, err := New(cfg, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = e.Remove(context.Background()) })
	return e
}

// events starts e's reader and returns the channel it delivers to.
func (n *testNet) events(tb testing.TB, e *Enforcer) <-chan firewall.Event {
	tb.Helper()
	ch := make(chan firewall.Event, 4096)
	bound := make(chan struct{})
	e.eventsBound = func() { close(bound) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- e.Events(ctx, func(ev firewall.Event) {
			select {
			case ch <- ev:
			default:
				tb.Errorf("event channel full: %+v", ev)
			}
		})
	}()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("Events: %v", err)
		}
	})
	select {
	case <-bound:
	case err := <-done:
		tb.Fatalf("Events: %v", err)
	case <-time.After(5 * time.Second):
		tb.Fatal("Events did not bind")
	}
	return ch
}

// The observation table, in the agent namespace: counters of the marked
// packets where they arrive (before every other table), by conntrack
// state (after conntrack, before the enforcer), and where they leave the
// enforcer's hands (priority 100, after its chains: only what it
// accepted).
const obsTable = "yagura_obs"

var obsCounters = []string{
	"seen_in", "pass_in", "seen_out", "pass_out",
	"in_new", "in_established", "in_related", "in_invalid", "in_untracked",
	"out_new", "out_established", "out_related", "out_invalid", "out_untracked",
	"arp_seen", "arp_pass", "other_seen", "other_pass",
}

// Markers of the test's ARP frames (the target hardware address of a
// request, which nothing reads) and other frames (the first payload
// bytes).
var (
	arpMarker   = firewall.MAC{0x02, 0xde, 0xad, 0, 0, markTTL}
	otherMarker = []byte("YGRA")
)

func (n *testNet) observe(tb testing.TB) {
	tb.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", obsTable)
	for _, c := range obsCounters {
		fmt.Fprintf(&b, "  counter %s {}\n", c)
	}
	for _, c := range []struct{ name, hook, prio, ctr string }{
		{"seen_in", "prerouting", "-450", "seen_in"},
		{"pass_in", "input", "100", "pass_in"},
		{"seen_out", "output", "-450", "seen_out"},
		{"pass_out", "output", "100", "pass_out"},
	} {
		fmt.Fprintf(&b, "  chain %s {\n    type filter hook %s priority %s\n    ip ttl %d counter name %s\n    ip6 hoplimit %d counter name %s\n  }\n",
			c.name, c.hook, c.prio, markTTL, c.ctr, markTTL, c.ctr)
	}
	for _, dir := range []struct{ d, hook string }{{"in", "input"}, {"out", "output"}} {
		fmt.Fprintf(&b, "  chain state_%s {\n    type filter hook %s priority -100\n    ip ttl %d jump state_%s_count\n    ip6 hoplimit %d jump state_%s_count\n  }\n",
			dir.d, dir.hook, markTTL, dir.d, markTTL, dir.d)
		fmt.Fprintf(&b, "  chain state_%s_count {\n", dir.d)
		for _, st := range []string{"new", "established", "related", "invalid", "untracked"} {
			fmt.Fprintf(&b, "    ct state %s counter name %s_%s\n", st, dir.d, st)
		}
		b.WriteString("  }\n")
	}
	b.WriteString("}\n")
	// ARP in the arp family (its input hook, around the enforcer's chain
	// at 0); other frames at the device's ingress (likewise).
	fmt.Fprintf(&b, "table arp %s {\n  counter arp_seen {}\n  counter arp_pass {}\n", obsTable)
	for _, c := range []struct{ name, prio string }{{"arp_seen", "-100"}, {"arp_pass", "100"}} {
		fmt.Fprintf(&b, "  chain %s {\n    type filter hook input priority %s\n    @nh,144,48 0x%x counter name %s\n  }\n", c.name, c.prio, arpMarker[:], c.name)
	}
	b.WriteString("}\n")
	fmt.Fprintf(&b, "table netdev %s {\n  counter other_seen {}\n  counter other_pass {}\n", obsTable)
	for _, c := range []struct{ name, prio string }{{"other_seen", "-100"}, {"other_pass", "100"}} {
		fmt.Fprintf(&b, "  chain %s {\n    type filter hook ingress device %s priority %s\n    @nh,0,32 0x%x counter name %s\n  }\n", c.name, n.agentIf, c.prio, otherMarker, c.name)
	}
	b.WriteString("}\n")
	cmd := exec.Command("ip", "netns", "exec", n.agent, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("observation table: %v\n%s\n%s", err, out, b.String())
	}
	var err error
	if n.obs, err = nftables.New(nftables.WithNetNSFd(int(n.agentNS.Fd()))); err != nil {
		tb.Fatal(err)
	}
	for _, f := range []nftables.TableFamily{nftables.TableFamilyINet, nftables.TableFamilyARP, nftables.TableFamilyNetdev} {
		n.obsTables = append(n.obsTables, &nftables.Table{Name: obsTable, Family: f})
	}
}

// counts reads the observation counters, and resets them when reset.
func (n *testNet) counts(tb testing.TB, reset bool) map[string]uint64 {
	tb.Helper()
	get := n.obs.GetNamedObjects
	if reset {
		get = n.obs.ResetNamedObjects
	}
	var objs []nftables.Obj
	for _, t := range n.obsTables {
		o, err := get(t)
		if err != nil {
			tb.Fatalf("observation counters: %v", err)
		}
		objs = append(objs, o...)
	}
	m := map[string]uint64{}
	for _, o := range objs {
		if no, ok := o.(*nftables.NamedObj); ok {
			if c, ok := no.Obj.(*expr.Counter); ok {
				m[no.Name] = c.Packets
			}
		}
	}
	if len(m) != len(obsCounters) {
		tb.Fatalf("observation counters: got %v", m)
	}
	return m
}

// sendIn sends an IP packet to the agent from the peer, as an Ethernet
// frame from smac (the peer's MAC when zero).
func (n *testNet) sendIn(tb testing.TB, pkt []byte, smac firewall.MAC) {
	tb.Helper()
	et := uint16(firewall.EtherIPv4)
	if pkt[0]>>4 == 6 {
		et = firewall.EtherIPv6
	}
	if smac == (firewall.MAC{}) {
		smac = firewall.MAC(peerMAC)
	}
	n.sendFrame(tb, et, pkt, smac)
}

// sendFrame sends a frame to the agent's MAC from the peer, from smac.
func (n *testNet) sendFrame(tb testing.TB, et uint16, payload []byte, smac firewall.MAC) {
	tb.Helper()
	frame := append(append(append([]byte{}, n.agentMAC...), smac[:]...), byte(et>>8), byte(et))
	frame = append(frame, payload...)
	sa := &unix.SockaddrLinklayer{Ifindex: n.peerIfIndex, Protocol: htons(et), Halen: 6}
	copy(sa.Addr[:], n.agentMAC)
	if err := unix.Sendto(n.frames, frame, 0, sa); err != nil {
		tb.Fatalf("send frame: %v", err)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// sendOut sends an IP packet from the agent (through the output hook).
// A drop there is not an error.
func (n *testNet) sendOut(tb testing.TB, pkt []byte) {
	tb.Helper()
	var err error
	if pkt[0]>>4 == 6 {
		sa := &unix.SockaddrInet6{}
		copy(sa.Addr[:], pkt[24:40])
		err = unix.Sendto(n.raw6, pkt, 0, sa)
	} else {
		sa := &unix.SockaddrInet4{}
		copy(sa.Addr[:], pkt[16:20])
		err = unix.Sendto(n.raw4, pkt, 0, sa)
	}
	// EPERM is the output hook's drop, which the counters tell anyway.
	if err != nil && !errors.Is(err, unix.EPERM) {
		tb.Fatalf("send from the agent: %v", err)
	}
}

// neighbour points the agent's neighbour entry for a (a peer address of a
// case) at the peer, so that the agent's answers need no ARP.
func (n *testNet) neighbour(tb testing.TB, a netip.Addr) {
	tb.Helper()
	if !a.IsValid() {
		return
	}
	if _, done := n.peerAddrsOnce.LoadOrStore(a, true); done || a.String() == agentIP4 || a.String() == agentIP6 {
		return
	}
	sh(tb, "ip", "-n", n.agent, "neigh", "replace", a.String(), "lladdr", peerMAC.String(), "dev", n.agentIf, "nud", "permanent")
}

// conntrack runs the conntrack tool in the agent namespace.
func (n *testNet) conntrack(tb testing.TB, args ...string) {
	tb.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.agent, "conntrack"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		// -F on an empty table, -D of nothing: not errors here.
		if !bytes.Contains(out, []byte("0 flow entries")) {
			tb.Fatalf("conntrack %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// nft runs nft in the agent namespace.
func (n *testNet) nft(tb testing.TB, args ...string) string {
	tb.Helper()
	return sh(tb, append([]string{"ip", "netns", "exec", n.agent, "nft"}, args...)...)
}

// TestKernelSemanticCases replays the semantic cases on real packets:
// each case's rules are applied in the agent namespace, its packet is built
// (with the connection state it names) and sent from the peer (incoming)
// or from the agent (outgoing), and the packet's fate in the kernel, its
// conntrack state and the events the enforcer reads back from NFLOG must
// be what firewall.Evaluate says. The cases marked kernel are meant for
// this; the others (ARP, other EtherTypes, MAC conditions, rare
// protocols) are replayed too where a real frame can carry them.
func TestKernelSemanticCases(t *testing.T) {
	cases, err := firewall.LoadCases("../firewall/testdata/semantics")
	if err != nil {
		t.Fatal(err)
	}
	n := newTestNet(t)
	e := n.enforcer(t, Config{})
	events := n.events(t, e)
	var replayed, skipped, others int
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			defer func() {
				switch {
				case !c.Kernel && !t.Skipped():
					others++
				case !c.Kernel:
				case t.Skipped():
					skipped++
				default:
					replayed++
				}
			}()
			n.replay(t, e, events, c)
		})
	}
	t.Logf("kernel cases: %d replayed, %d skipped; other cases replayed: %d", replayed, skipped, others)
	if replayed < 30 {
		t.Fatalf("only %d kernel cases replayed, want at least 30", replayed)
	}
	// A case marked kernel is one the firewall package promises can be
	// made on real packets: one that could not be is a defect of the mark
	// or of this replay, not something to skip quietly.
	if skipped > 0 {
		t.Errorf("%d cases marked kernel could not be replayed (see their skip reasons)", skipped)
	}
}

// kernelState is the conntrack state the replay gives a packet of the
// state the case names: for a new packet, what conntrack makes of a
// packet that belongs to no connection.
func kernelState(p firewall.Packet) string {
	switch p.State {
	case firewall.StateEstablished, firewall.StateRelated, firewall.StateInvalid:
		return p.State
	}
	switch p.Protocol {
	case protoTCP:
		// Conntrack's valid flag combinations (PSH aside) that open or
		// pick up a connection; the rest are invalid.
		switch p.TCPFlags &^ firewall.FlagPSH {
		case firewall.FlagSYN, firewall.FlagSYN | firewall.FlagURG,
			firewall.FlagACK, firewall.FlagACK | firewall.FlagURG,
			firewall.FlagFIN | firewall.FlagACK, firewall.FlagFIN | firewall.FlagACK | firewall.FlagURG:
			return firewall.StateNew
		}
		return firewall.StateInvalid
	case protoICMP:
		switch p.ICMPType {
		case 8, 13, 15, 17: // requests
			return firewall.StateNew
		}
		return firewall.StateInvalid // replies, and errors about no connection
	case protoICMPv6:
		switch p.ICMPType {
		case 128, 139:
			return firewall.StateNew
		}
		return firewall.StateInvalid
	case 33, 132, 136: // DCCP, SCTP, UDP-Lite: the test's packets have no header
		return firewall.StateInvalid
	}
	return firewall.StateNew
}

// effective is the state stateful inspection judges by (as Evaluate and
// the rules' invalid checks define it).
func effective(state string, p firewall.Packet) string {
	if (state == firewall.StateNew || state == "") && p.Protocol == protoTCP &&
		p.TCPFlags&(firewall.FlagSYN|firewall.FlagACK|firewall.FlagRST) != firewall.FlagSYN {
		return firewall.StateInvalid
	}
	if state == "" {
		return firewall.StateNew
	}
	return state
}

func icmpError(p firewall.Packet) bool {
	switch p.Protocol {
	case protoICMP:
		return p.ICMPType == 3 || p.ICMPType == 4 || p.ICMPType == 5 || p.ICMPType == 11 || p.ICMPType == 12
	case protoICMPv6:
		return p.ICMPType >= 1 && p.ICMPType <= 4
	}
	return false
}

func (n *testNet) replay(t *testing.T, e *Enforcer, events <-chan firewall.Event, c firewall.Case) {
	ctx := context.Background()
	prog, err := firewall.Compile(&c.Set)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	pkt, err := firewall.ParsePacket(c.Packet)
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(prog); err != nil {
		t.Skipf("nftfw refuses the rules: %v", err)
	}
	d := firewall.Evaluate(prog, c.Options, pkt)
	if err := c.Check(d); err != nil {
		t.Logf("note: the evaluator disagrees with the case table: %v", err)
	}
	ip := pkt.EtherType == firewall.EtherIPv4 || pkt.EtherType == firewall.EtherIPv6
	if !ip && pkt.Direction == firewall.Outgoing {
		t.Skip("outgoing frames that are not IP: only the kernel's own ARP meets the arp output hook, and the test sends none")
	}
	srcMACRule, dstMACRule := false, false
	for _, r := range prog.Rules {
		srcMACRule = srcMACRule || r.SrcMAC != nil
		dstMACRule = dstMACRule || r.DstMAC != nil
	}
	// The frame's MACs: the case's, exactly, where a rule looks at them.
	smac := pkt.SrcMAC
	if smac == (firewall.MAC{}) && !srcMACRule {
		smac = firewall.MAC(peerMAC)
	}
	if pkt.DstMAC == (firewall.MAC{}) && dstMACRule {
		t.Skip("the case's frame has no destination MAC; the host only receives frames addressed to it")
	}
	if pkt.DstMAC != (firewall.MAC{}) && !bytes.Equal(pkt.DstMAC[:], n.agentMAC) {
		n.setAgentMAC(t, pkt.DstMAC)
	}

	var frame []byte
	var etherType uint16
	var key string // the observation counters: key+"seen"/key+"pass"
	var entries [][]string
	kstate := ""
	switch {
	case ip:
		frame, entries, kstate = n.ipCase(t, c, pkt)
	case pkt.EtherType == firewall.EtherARP:
		frame, etherType, key = buildARP(pkt), firewall.EtherARP, "arp_"
		copy(frame[18:24], arpMarker[:])
	default:
		frame, etherType, key = append(append([]byte{}, otherMarker...), make([]byte, 42)...), pkt.EtherType, "other_"
	}

	n.neighbour(t, pkt.Src)
	n.neighbour(t, pkt.Dst)
	n.conntrack(t, "-F")
	if len(entries) > 0 {
		// Open the connection under permissive rules, then swap in the
		// case's: Apply must keep conntrack's entries.
		if err := e.Apply(ctx, &firewall.Program{}, firewall.Options{Stateful: true}); err != nil {
			t.Fatal(err)
		}
		for _, args := range entries {
			n.conntrack(t, append([]string{"-I"}, args...)...)
		}
	}
	if err := e.Apply(ctx, prog, c.Options); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	n.counts(t, true)
	for len(events) > 0 {
		<-events
	}

	dir := "in"
	switch {
	case !ip:
		n.sendFrame(t, etherType, frame, smac)
	case pkt.Direction == firewall.Incoming:
		key = "_in"
		n.sendIn(t, frame, smac)
	default:
		key, dir = "_out", "out"
		n.sendOut(t, frame)
	}
	seenKey, passKey := key+"seen", key+"pass"
	if ip {
		seenKey, passKey = "seen"+key, "pass"+key
	}
	// Fate: the packet was seen before the enforcer's chains; did it get
	// past them?
	var cnt map[string]uint64
	seenBy := time.Now().Add(2 * time.Second)
	for cnt = n.counts(t, false); cnt[seenKey] == 0; cnt = n.counts(t, false) {
		if time.Now().After(seenBy) {
			t.Fatalf("the packet never arrived (%v)", cnt)
		}
		time.Sleep(time.Millisecond)
	}
	passBy := time.Now().Add(100 * time.Millisecond)
	for cnt[passKey] == 0 && time.Now().Before(passBy) {
		time.Sleep(2 * time.Millisecond)
		cnt = n.counts(t, false)
	}
	fate := firewall.Drop
	if cnt[passKey] > 0 {
		fate = firewall.Pass
	}
	if cnt[seenKey] != 1 || cnt[passKey] > 1 {
		t.Errorf("counters %v: want the packet once", cnt)
	}
	if fate != d.Verdict {
		t.Errorf("kernel: %s; evaluator: %s (%s, rule %v)\nruleset:\n%s", fate, d.Verdict, d.Reason, d.Rule, n.nft(t, "list", "ruleset"))
	}

	if ip {
		// State: what conntrack said (untracked when a bypass rule
		// decided).
		var states []string
		for _, st := range []string{"new", "established", "related", "invalid", "untracked"} {
			if cnt[dir+"_"+st] > 0 {
				states = append(states, st)
			}
		}
		wantState := effective(kstate, pkt)
		if d.Rule != nil && d.Rule.Action == firewall.ActionBypass {
			wantState = "untracked"
		}
		// The bypass chains skip deny rules: a packet a deny rule drops
		// may have been exempted from tracking for a later bypass rule.
		denied := d.Rule != nil && d.Rule.Action == firewall.ActionDeny
		if len(states) != 1 || effective(states[0], pkt) != wantState && !(denied && states[0] == "untracked") {
			t.Errorf("conntrack state %v, want %s", states, wantState)
		}
	}

	// Events: the ones of this packet (the kernel's own answers to it go
	// the other way, or are of another protocol).
	addr := func(a netip.Addr) string {
		if a.IsValid() {
			return a.String()
		}
		return ""
	}
	mine := func(ev firewall.Event) bool {
		return ev.Direction == pkt.Direction && ev.Protocol == pkt.Protocol && ev.Src == addr(pkt.Src) && ev.Dst == addr(pkt.Dst) &&
			ev.SrcPort == pkt.SrcPort && ev.DstPort == pkt.DstPort
	}
	got := collect(events, len(d.Events), mine)
	if diff := cmpEvents(got, d.Events); diff != "" {
		t.Errorf("events (-kernel +evaluator):\n%s", diff)
	}
}

// setAgentMAC gives the agent's veth the MAC for the rest of the test
// case.
func (n *testNet) setAgentMAC(t *testing.T, mac firewall.MAC) {
	old := n.agentMAC
	sh(t, "ip", "-n", n.agent, "link", "set", "dev", n.agentIf, "address", net.HardwareAddr(mac[:]).String())
	n.agentMAC = slices.Clone(mac[:])
	t.Cleanup(func() {
		sh(t, "ip", "-n", n.agent, "link", "set", "dev", n.agentIf, "address", old.String())
		n.agentMAC = old
	})
}

// ipCase builds an IP case's packet, and the conntrack entries that give
// it the state the case names; kstate is the state conntrack will see.
func (n *testNet) ipCase(t *testing.T, c firewall.Case, pkt firewall.Packet) (frame []byte, entries [][]string, kstate string) {
	kstate = kernelState(pkt)
	if c.Options.Stateful && effective(kstate, pkt) != effective(pkt.State, pkt) {
		t.Skipf("conntrack calls this packet %s, the case says %q: no packet has the case's state", kstate, pkt.State)
	}
	spec := ipPacket{Packet: pkt, TTL: markTTL, ID: uint16(time.Now().UnixNano()), Seq: uint32(time.Now().UnixNano())}
	spec.Rest = [4]byte{0x12, 0x34, 0, 1} // echo identifier 0x1234, sequence 1
	tuple := func(proto string, src, dst netip.Addr) []string {
		return []string{"-p", proto, "-s", src.String(), "-d", dst.String(), "-t", "60"}
	}
	switch pkt.State {
	case firewall.StateEstablished:
		switch {
		case pkt.Protocol == protoTCP:
			entries = append(entries, append(tuple("tcp", pkt.Src, pkt.Dst), "--sport", fmt.Sprint(pkt.SrcPort), "--dport", fmt.Sprint(pkt.DstPort), "--state", "ESTABLISHED", "-u", "SEEN_REPLY,ASSURED"))
		case pkt.Protocol == protoUDP:
			entries = append(entries, append(tuple("udp", pkt.Src, pkt.Dst), "--sport", fmt.Sprint(pkt.SrcPort), "--dport", fmt.Sprint(pkt.DstPort), "-u", "SEEN_REPLY,ASSURED"))
		case pkt.Protocol == protoICMP && (pkt.ICMPType == 8 || pkt.ICMPType == 0):
			src, dst := pkt.Src, pkt.Dst
			if pkt.ICMPType == 0 { // a reply: the request went the other way
				src, dst = dst, src
			}
			entries = append(entries, append(tuple("icmp", src, dst), "--icmp-type", "8", "--icmp-code", "0", "--icmp-id", "4660", "-u", "SEEN_REPLY"))
		case pkt.Protocol == protoICMPv6 && (pkt.ICMPType == 128 || pkt.ICMPType == 129):
			src, dst := pkt.Src, pkt.Dst
			if pkt.ICMPType == 129 {
				src, dst = dst, src
			}
			entries = append(entries, append(tuple("icmpv6", src, dst), "--icmpv6-type", "128", "--icmpv6-code", "0", "--icmpv6-id", "4660", "-u", "SEEN_REPLY"))
		default:
			t.Skipf("no way to establish a connection for %s", c.Packet)
		}
	case firewall.StateRelated:
		if !icmpError(pkt) {
			t.Skipf("only ICMP errors are made related here (no helpers): %s", c.Packet)
		}
		// An error about a UDP packet that went from the packet's
		// destination to its source, of a connection conntrack knows.
		spec.Body = buildIP(ipPacket{Packet: firewall.Packet{Protocol: protoUDP, Src: pkt.Dst, Dst: pkt.Src, SrcPort: 33434, DstPort: 33435}, TTL: 1})
		spec.Rest = [4]byte{}
		entries = append(entries, append(tuple("udp", pkt.Dst, pkt.Src), "--sport", "33434", "--dport", "33435", "-u", "SEEN_REPLY"))
	case firewall.StateInvalid:
		switch pkt.Protocol {
		case protoTCP, protoUDP, protoICMP, protoICMPv6:
			spec.Bad = badL4
		default:
			t.Skipf("no way to make a protocol %d packet invalid to conntrack", pkt.Protocol)
		}
	}
	return buildIP(spec), entries, kstate
}

// collect gathers the events that match until want have come, then waits
// a little longer for any extra (NFLOG delivers within 50 ms).
func collect(events <-chan firewall.Event, want int, match func(firewall.Event) bool) []firewall.Event {
	var got []firewall.Event
	deadline := time.After(3 * time.Second)
	for {
		var timer <-chan time.Time = deadline
		if len(got) >= want {
			timer = time.After(200 * time.Millisecond)
		}
		select {
		case ev := <-events:
			if match(ev) {
				got = append(got, ev)
			}
		case <-timer:
			return got
		}
	}
}

func cmpEvents(got, want []firewall.Event) string {
	return cmp.Diff(got, want, cmpopts.EquateEmpty())
}

// compile compiles rules given as JSON.
func compile(tb testing.TB, rulesJSON string) *firewall.Program {
	tb.Helper()
	rules, err := firewall.DecodeRules([]byte(rulesJSON))
	if err != nil {
		tb.Fatal(err)
	}
	p, err := firewall.Compile(&firewall.Set{Rules: rules})
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

func udpTo(port uint16) []byte {
	return buildIP(ipPacket{Packet: firewall.Packet{
		Protocol: protoUDP, Src: netip.MustParseAddr("10.0.0.5"), Dst: netip.MustParseAddr(agentIP4), SrcPort: 5000, DstPort: port,
	}, TTL: markTTL})
}

// TestApplySwapsAtomically sends packets while two programs replace each
// other as fast as Apply goes. Both drop UDP to port 9 and pass UDP to port
// 10 (the second also has an unrelated rule, and stateful inspection): a
// moment without rules would pass a port-9 packet, a half-built table
// would drop a port-10 packet (the implicit deny).
func TestApplySwapsAtomically(t *testing.T) {
	n := newTestNet(t)
	e := n.enforcer(t, Config{})
	ctx := context.Background()
	a := compile(t, `[
		{"ID":1,"name":"deny 9","action":"deny","priority":"0","direction":"incoming","protocol":"udp","destinationPortType":"multiple","destinationPortMultiple":["9"],"logDisabled":true},
		{"ID":2,"name":"allow 10","action":"allow","priority":"0","direction":"incoming","protocol":"udp","destinationPortType":"multiple","destinationPortMultiple":["10"]}]`)
	b := compile(t, `[
		{"ID":11,"name":"deny 9 again","action":"deny","priority":"1","direction":"incoming","protocol":"udp","destinationPortType":"multiple","destinationPortMultiple":["9"],"logDisabled":true},
		{"ID":12,"name":"allow 10 again","action":"allow","priority":"0","direction":"incoming","protocol":"udp","destinationPortType":"multiple","destinationPortMultiple":["10","11"]},
		{"ID":13,"name":"unrelated","action":"deny","priority":"2","direction":"incoming","protocol":"tcp","destinationPortType":"multiple","destinationPortMultiple":["1234"]}]`)
	if err := e.Apply(ctx, a, firewall.Options{}); err != nil {
		t.Fatal(err)
	}
	const minSwaps = 50
	for _, port := range []uint16{9, 10} {
		n.counts(t, true)
		var swaps atomic.Int64
		stop := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					done <- nil
					return
				default:
				}
				p, opt := a, firewall.Options{}
				if i%2 == 0 {
					p, opt = b, firewall.Options{Stateful: true}
				}
				if err := e.Apply(ctx, p, opt); err != nil {
					done <- err
					return
				}
				swaps.Add(1)
			}
		}()
		pkt := udpTo(port)
		sent := 0
		for start := time.Now(); (swaps.Load() < minSwaps || sent < 2000) && time.Since(start) < 30*time.Second; {
			n.sendIn(t, pkt, firewall.MAC{})
			sent++
			time.Sleep(50 * time.Microsecond)
		}
		close(stop)
		if err := <-done; err != nil {
			t.Fatalf("Apply: %v", err)
		}
		if swaps.Load() < minSwaps {
			t.Fatalf("only %d swaps while sending: the test proves little", swaps.Load())
		}
		cnt := waitSeen(t, n, "seen_in", uint64(sent))
		want := uint64(0)
		if port == 10 {
			want = uint64(sent)
		}
		if cnt["pass_in"] != want {
			t.Errorf("port %d: %d of %d packets passed during %d swaps, want %d", port, cnt["pass_in"], sent, swaps.Load(), want)
		}
		t.Logf("port %d: %d packets, %d swaps, %d passed", port, sent, swaps.Load(), cnt["pass_in"])
	}
	// What is left is one program, whole.
	if err := e.Apply(ctx, b, firewall.Options{}); err != nil {
		t.Fatal(err)
	}
	ruleset := n.nft(t, "list", "table", "inet", "yagura")
	if !strings.Contains(ruleset, "tcp dport 1234") || !strings.Contains(ruleset, "udp dport 10-11 accept") || strings.Contains(ruleset, "udp dport 10 accept") {
		t.Errorf("after the swaps, the table is not the last program's:\n%s", ruleset)
	}
}

// waitSeen waits until the observation counter key reaches want and the
// packets had time to go through.
func waitSeen(tb testing.TB, n *testNet, key string, want uint64) map[string]uint64 {
	tb.Helper()
	by := time.Now().Add(5 * time.Second)
	cnt := n.counts(tb, false)
	for cnt[key] < want && time.Now().Before(by) {
		time.Sleep(5 * time.Millisecond)
		cnt = n.counts(tb, false)
	}
	time.Sleep(50 * time.Millisecond)
	cnt = n.counts(tb, false)
	if cnt[key] != want {
		tb.Fatalf("%s: %d packets seen, want %d", key, cnt[key], want)
	}
	return cnt
}

// TestRemoveLeavesOtherTables: the host's own tables, including one of the
// same name in another family, survive Apply and Remove; Remove is
// idempotent.
func TestRemoveLeavesOtherTables(t *testing.T) {
	n := newTestNet(t)
	e := n.enforcer(t, Config{})
	ctx := context.Background()
	n.nft(t, "add", "table", "inet", "hostfw")
	n.nft(t, "add", "chain", "inet", "hostfw", "input", "{ type filter hook input priority 0; policy accept; }")
	n.nft(t, "add", "rule", "inet", "hostfw", "input", "tcp", "dport", "2222", "counter", "drop")
	n.nft(t, "add", "table", "ip", "yagura") // our name, another family
	n.nft(t, "add", "chain", "ip", "yagura", "keep")
	before := n.nft(t, "list", "table", "inet", "hostfw") + n.nft(t, "list", "table", "ip", "yagura")

	tables := func() []string { return strings.Split(strings.TrimSpace(n.nft(t, "list", "tables")), "\n") }
	p := compile(t, `[{"ID":1,"name":"d","action":"deny","priority":"0","direction":"incoming","frameType":"any","sourceMACType":"single","sourceMACValue":"02:00:00:00:00:09"},
		{"ID":2,"name":"a","action":"allow","priority":"0","direction":"incoming","protocol":"tcp"}]`)
	if err := e.Apply(ctx, p, firewall.Options{Stateful: true}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"table inet yagura", "table arp yagura", "table netdev yagura", "table inet hostfw", "table ip yagura"} {
		if !slices.Contains(tables(), want) {
			t.Fatalf("after Apply, no %s:\n%s", want, tables())
		}
	}
	if err := e.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	got := tables()
	if slices.Contains(got, "table inet yagura") || slices.Contains(got, "table arp yagura") || slices.Contains(got, "table netdev yagura") {
		t.Errorf("after Remove, our tables remain:\n%s", got)
	}
	if after := n.nft(t, "list", "table", "inet", "hostfw") + n.nft(t, "list", "table", "ip", "yagura"); after != before {
		t.Errorf("other tables changed:\n%s\nwas:\n%s", after, before)
	}
	if err := e.Remove(ctx); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if _, err := e.Stats(ctx); err != nil {
		t.Errorf("Stats without tables: %v", err)
	}
}

// TestStatefulConnectionSurvivesSwap: with stateful inspection, an
// established TCP connection keeps working when a new policy no longer
// allows its port, while a new connection to that port is refused; without
// stateful inspection (the control), the same swap cuts it.
func TestStatefulConnectionSurvivesSwap(t *testing.T) {
	n := newTestNet(t)
	e := n.enforcer(t, Config{})
	ctx := context.Background()
	allow := func(port string) *firewall.Program {
		return compile(t, `[{"ID":1,"name":"allow","action":"allow","priority":"0","direction":"incoming","protocol":"tcp","destinationPortType":"multiple","destinationPortMultiple":["`+port+`"]}]`)
	}
	if err := e.Apply(ctx, allow("8080"), firewall.Options{Stateful: true}); err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	n.inNS(t, n.agentNS, func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(agentIP4, "8080"))
		return err
	})
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { // echo
				defer c.Close()
				buf := make([]byte, 64)
				for {
					k, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:k]); err != nil {
						return
					}
				}
			}()
		}
	}()
	dial := func() (net.Conn, error) {
		var c net.Conn
		var derr error
		n.inNS(t, n.peerNS, func() error {
			d := net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(peerIP4)}}
			c, derr = d.Dial("tcp", net.JoinHostPort(agentIP4, "8080"))
			return nil
		})
		return c, derr
	}
	echo := func(c net.Conn, msg string) error {
		_ = c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if string(buf) != msg {
			return fmt.Errorf("echo %q, want %q", buf, msg)
		}
		return nil
	}
	c, err := dial()
	if err != nil {
		t.Fatalf("connect under the first policy: %v", err)
	}
	defer c.Close()
	if err := echo(c, "one"); err != nil {
		t.Fatal(err)
	}
	if err := e.Apply(ctx, allow("9090"), firewall.Options{Stateful: true}); err != nil {
		t.Fatal(err)
	}
	if err := echo(c, "two"); err != nil {
		t.Fatalf("established connection after the swap: %v", err)
	}
	if c2, err := dial(); err == nil {
		c2.Close()
		t.Fatal("a new connection to 8080 got through the second policy")
	}
	// The control: without stateful inspection, replies of the agent
	// pass (no allow rule outgoing), the peer's data does not.
	if err := e.Apply(ctx, allow("9090"), firewall.Options{Stateful: false}); err != nil {
		t.Fatal(err)
	}
	if err := echo(c, "three"); err == nil {
		t.Fatal("without stateful inspection, the connection still worked: the test cannot tell")
	}
}

// TestLogRateLimits: a flood past the rates is dropped all the same, its
// events are capped, and every drop and log-only match is either logged
// or counted as suppressed; the counts survive Apply.
func TestLogRateLimits(t *testing.T) {
	n := newTestNet(t)
	e := n.enforcer(t, Config{DropLogRate: 5, LogOnlyRate: 3})
	events := n.events(t, e)
	ctx := context.Background()
	p := compile(t, `[
		{"ID":1,"name":"watch 7","action":"log-only","priority":"4","direction":"incoming","protocol":"udp","destinationPortType":"multiple","destinationPortMultiple":["7"]},
		{"ID":2,"name":"deny 7","action":"deny","priority":"0","direction":"incoming","protocol":"udp","destinationPortType":"multiple","destinationPortMultiple":["7"]}]`)
	if err := e.Apply(ctx, p, firewall.Options{}); err != nil {
		t.Fatal(err)
	}
	n.counts(t, true)
	const flood = 200
	pkt := udpTo(7)
	for range flood {
		n.sendIn(t, pkt, firewall.MAC{})
	}
	cnt := waitSeen(t, n, "seen_in", flood)
	if cnt["pass_in"] != 0 {
		t.Errorf("%d packets of the flood passed", cnt["pass_in"])
	}
	got := collect(events, flood, func(firewall.Event) bool { return true })
	var drops, logs uint64
	for _, ev := range got {
		switch ev.Action {
		case firewall.ActionDeny:
			drops++
		case firewall.ActionLogOnly:
			logs++
		}
	}
	// Applying again must carry the counters of the replaced tables.
	if err := e.Apply(ctx, p, firewall.Options{}); err != nil {
		t.Fatal(err)
	}
	st, err := e.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stats %+v; events: %d drops, %d log-only", st, drops, logs)
	if st.DropsLogged+st.DropsSuppressed != flood || st.LogOnlyLogged+st.LogOnlySuppressed != flood {
		t.Errorf("stats %+v: logged + suppressed should be %d each", st, flood)
	}
	// Bursts of 5 and 3, plus what the rate refills while the flood lasts.
	if st.DropsLogged > 10 || st.LogOnlyLogged > 8 {
		t.Errorf("stats %+v: the rates did not cap the events", st)
	}
	if drops != st.DropsLogged || logs != st.LogOnlyLogged || st.Read != drops+logs {
		t.Errorf("events read: %d drops, %d log-only; stats %+v", drops, logs, st)
	}
}

// TestFailedApplyKeepsRules: a batch the kernel refuses changes nothing,
// and the error says which message failed and why.
func TestFailedApplyKeepsRules(t *testing.T) {
	n := newTestNet(t)
	e := n.enforcer(t, Config{})
	ctx := context.Background()
	p := compile(t, `[{"ID":42,"name":"d","action":"deny","priority":"0","direction":"incoming","protocol":"udp","destinationPortType":"multiple","destinationPortMultiple":["7"]}]`)
	if err := e.Apply(ctx, p, firewall.Options{}); err != nil {
		t.Fatal(err)
	}
	before := n.nft(t, "list", "table", "inet", "yagura")
	bad := &plan{tables: []*ptable{newTable(famInet)}}
	ch := bad.tables[0].chain("in", hookInput, 0)
	ch.add(prule{verdict: pverdict{kind: vGoto, chain: "missing"}})
	_, err := e.transact(ctx, func(em *emitter) error {
		em.deleteOurs()
		return em.plan(bad)
	})
	if err == nil || !strings.Contains(err.Error(), "(new rule)") || !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("transact: %v, want the new rule's ENOENT", err)
	}
	t.Logf("the kernel's refusal: %v", err)
	if after := n.nft(t, "list", "table", "inet", "yagura"); after != before {
		t.Errorf("the refused batch changed the table:\n%s\nwas:\n%s", after, before)
	}
}
