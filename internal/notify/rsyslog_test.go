package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/leodido/go-syslog/v4/rfc5424"

	"github.com/yagura/yagura/internal/cef"
	"github.com/yagura/yagura/internal/testdaemon"
)

// TestRsyslog sends CEF alerts to a real rsyslogd over TCP (octet counting
// and LF framing) and TLS, and RFC 3164 + JSON over UDP, then parses what
// rsyslogd wrote and compares it with what was sent.
func TestRsyslog(t *testing.T) {
	testdaemon.RequireRoot(t)
	start := time.Now()
	r := testdaemon.StartRsyslog(t)
	t.Logf("rsyslogd ready in %v", time.Since(start).Round(time.Millisecond))

	const n = 20
	sent := map[string]Message{}
	newSender := func(c SyslogConfig) Sender {
		t.Helper()
		c.Hostname = "mgr01"
		s, err := New(Config{Kind: KindSyslog, Syslog: &c}, WithProductVersion("1.2.3"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name string
		cfg  SyslogConfig
	}{
		{"tcp", SyslogConfig{Address: r.TCP, Transport: TransportTCP}},
		{"tcp-lf", SyslogConfig{Address: r.TCP, Transport: TransportTCP, Framing: FramingLF, Facility: "auth"}},
		{"tls", SyslogConfig{Address: r.TLS, Transport: TransportTLS, CAPEM: string(r.PKI.CAPEM), ServerName: "localhost"}},
	} {
		s := newSender(tc.cfg)
		for i := range n {
			m := testMessage(fmt.Sprintf("%s-%02d", tc.name, i))
			m.Severity = []string{"critical", "error", "warning", "info"}[i%4]
			m.Text += fmt.Sprintf("\n#%d via %s", i, tc.name)
			if err := s.Send(ctx, m); err != nil {
				t.Fatalf("%s: send %d: %v", tc.name, i, err)
			}
			sent[m.ID] = m
		}
	}

	// UDP may lose the first datagrams while imudp starts: resend until one
	// arrives (the receiver would dedup by ID).
	udp := newSender(SyslogConfig{Address: r.UDP, Transport: TransportUDP, Format: FormatRFC3164, Payload: PayloadJSON})
	um := testMessage("udp-3164-json")
	um.Severity = "warning"
	sent[um.ID] = um
	testdaemon.WaitFor(t, 15*time.Second, "the UDP message", func() bool {
		if err := udp.Send(ctx, um); err != nil {
			t.Fatalf("udp: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
		return strings.Contains(strings.Join(r.Lines(t), "\n"), `"id":"udp-3164-json"`)
	})

	seen := map[string]bool{}
	testdaemon.WaitFor(t, 15*time.Second, fmt.Sprintf("%d messages in %s", len(sent), r.Out), func() bool {
		clear(seen)
		for _, l := range r.Lines(t) {
			if id := idOf(l); id != "" {
				seen[id] = true
			}
		}
		return len(seen) == len(sent)
	})

	parser := rfc5424.NewParser()
	checked := map[string]bool{}
	for _, line := range r.Lines(t) {
		if strings.Contains(line, `"id":"udp-3164-json"`) {
			if checked[um.ID] {
				continue // a resent copy
			}
			checked[um.ID] = true
			checkRFC3164JSON(t, line, um)
			continue
		}
		res, err := parser.Parse([]byte(line))
		if err != nil {
			t.Fatalf("rfc5424 parse %q: %v", line, err)
		}
		sm := res.(*rfc5424.SyslogMessage)
		id := (*sm.StructuredData)[SDID]["id"]
		m, ok := sent[id]
		if !ok || checked[id] {
			t.Fatalf("unexpected or repeated message %q: %s", id, line)
		}
		checked[id] = true
		fac, sev := 16, syslogSeverity(m.Severity)
		if strings.HasPrefix(id, "tcp-lf") {
			fac = 4
		}
		if got := int(*sm.Priority); got != fac*8+sev {
			t.Errorf("%s: priority %d, want %d", id, got, fac*8+sev)
		}
		if *sm.Hostname != "mgr01" || *sm.Appname != "yagura" || *sm.MsgID != "computer-offline" {
			t.Errorf("%s: header host=%q app=%q msgid=%q", id, *sm.Hostname, *sm.Appname, *sm.MsgID)
		}
		if !sm.Timestamp.Equal(m.Time) {
			t.Errorf("%s: timestamp %v, want %v", id, sm.Timestamp, m.Time)
		}
		rec, err := cef.Parse(*sm.Message)
		if err != nil {
			t.Fatalf("%s: cef.Parse: %v\n%s", id, err, *sm.Message)
		}
		if diff := cmp.Diff(rec, CEFRecord(m, "1.2.3"), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s: CEF (-got +want):\n%s", id, diff)
		}
		if v, _ := rec.Get("msg"); v != m.Text {
			t.Errorf("%s: msg %q, want %q", id, v, m.Text)
		}
	}
	if len(checked) != len(sent) {
		t.Errorf("checked %d messages, sent %d", len(checked), len(sent))
	}
	t.Logf("%d messages delivered and checked in %v", len(checked), time.Since(start).Round(time.Millisecond))
}

// idOf finds the ID in a received line, of either format.
func idOf(line string) string {
	if i := strings.Index(line, `[`+SDID+` id="`); i >= 0 {
		rest := line[i+len(SDID)+6:]
		if j := strings.IndexByte(rest, '"'); j >= 0 {
			return rest[:j]
		}
	}
	if i := strings.Index(line, `{"id":"`); i >= 0 {
		rest := line[i+7:]
		if j := strings.IndexByte(rest, '"'); j >= 0 {
			return rest[:j]
		}
	}
	return ""
}

func checkRFC3164JSON(t *testing.T, line string, want Message) {
	t.Helper()
	// <PRI>Mmm dd hh:mm:ss HOST TAG[pid]: JSON
	pri := fmt.Sprintf("<%d>", 16*8+syslogSeverity(want.Severity))
	if !strings.HasPrefix(line, pri) {
		t.Errorf("3164: want priority %s: %q", pri, line)
	}
	stamp := want.Time.In(time.Local).Format(time.Stamp)
	tag := fmt.Sprintf(" mgr01 yagura[%d]: ", os.Getpid())
	if !strings.HasPrefix(line, pri+stamp+tag) {
		t.Errorf("3164 header: got %q, want prefix %q", line, pri+stamp+tag)
	}
	_, payload, ok := strings.Cut(line, "]: ")
	if !ok {
		t.Fatalf("3164: no tag in %q", line)
	}
	var got Message
	if err := json.Unmarshal([]byte(payload), &got); err != nil {
		t.Fatalf("3164 JSON payload: %v\n%s", err, payload)
	}
	if diff := cmp.Diff(got, want, cmpopts.EquateApproxTime(0)); diff != "" {
		t.Errorf("3164 JSON (-got +want):\n%s", diff)
	}
}

// TestRsyslogRestart: the collector restarts between two messages; the
// sender notices the closed connection and delivers on a new one.
func TestRsyslogRestart(t *testing.T) {
	testdaemon.RequireRoot(t)
	r := testdaemon.StartRsyslog(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	senders := map[string]Sender{}
	for name, cfg := range map[string]SyslogConfig{
		"tcp": {Address: r.TCP, Transport: TransportTCP},
		"tls": {Address: r.TLS, Transport: TransportTLS, CAPEM: string(r.PKI.CAPEM)},
	} {
		s, err := New(Config{Kind: KindSyslog, Syslog: &cfg})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		senders[name] = s
	}
	has := func(id string) bool { return strings.Contains(strings.Join(r.Lines(t), "\n"), `id="`+id+`"`) }
	for _, phase := range []string{"before", "after"} {
		if phase == "after" {
			r.Stop()
			r.Start(t)
		}
		for name, s := range senders {
			if err := s.Send(ctx, testMessage(name+"-"+phase)); err != nil {
				t.Fatalf("%s %s the restart: %v", name, phase, err)
			}
		}
		testdaemon.WaitFor(t, 10*time.Second, "messages "+phase+" the restart", func() bool { return has("tcp-"+phase) && has("tls-"+phase) })
	}
}
