package main

// End-to-end test of notification channels against real receivers: alerts
// raised by a rule reach rsyslog over TLS and TCP as RFC 5424 + CEF, and
// Postfix as Japanese mail, each exactly once per channel.

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/leodido/go-syslog/v4/rfc5424"

	"github.com/yagura/yagura/internal/agent"
	"github.com/yagura/yagura/internal/api"
	"github.com/yagura/yagura/internal/cef"
	"github.com/yagura/yagura/internal/ctl"
	"github.com/yagura/yagura/internal/notify"
	"github.com/yagura/yagura/internal/testdaemon"
)

// TestAlertsReachSyslogAndMail: an alert rule raises one critical alert per
// test event; three channels route rule alerts to rsyslog's TLS input, its
// TCP input (CEF both) and Postfix. Every alert the API lists arrives once
// on each, saying what it is in each format, and the delivery history
// shows every notification delivered.
func TestAlertsReachSyslogAndMail(t *testing.T) {
	endToEnd(t)
	const n = 30
	const ruleName = "テスト イベント"
	began := time.Now()
	since := func() time.Duration { return time.Since(began).Round(time.Millisecond) }

	rs := testdaemon.StartRsyslog(t)
	pf := testdaemon.StartPostfix(t)
	t.Logf("rsyslogd and postfix ready after %v", since())

	// Fast retries, so a delivery that fails while a receiver warms up
	// does not wait out production backoff.
	cfg := filepath.Join(t.TempDir(), "yagura.yaml")
	if err := os.WriteFile(cfg, []byte("notifications:\n  base_delay: 200ms\n  max_delay: 2s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := startManagerWith(t, t.TempDir(), "127.0.0.1:0", "--config", cfg)
	c := m.client(t)
	t.Logf("manager ready after %v", since())

	// The two syslog channels differ in APP-NAME, which tells their lines
	// apart in rsyslog's one output file.
	mailHost, mailPort, _ := net.SplitHostPort(pf.Addr)
	port, _ := strconv.Atoi(mailPort)
	mailbox := testdaemon.Mailbox + "@" + testdaemon.MailDomain
	channels := []struct {
		name   string
		config map[string]any
	}{
		{"syslog-tls", map[string]any{"kind": "syslog", "syslog": map[string]any{
			"address": rs.TLS, "transport": "tls", "payload": "cef", "app_name": "yagura-tls",
			"ca_pem": string(rs.PKI.CAPEM), "server_name": "localhost",
		}}},
		{"syslog-tcp", map[string]any{"kind": "syslog", "syslog": map[string]any{
			"address": rs.TCP, "transport": "tcp", "framing": "octet-counting", "payload": "cef", "app_name": "yagura-tcp",
		}}},
		{"mail", map[string]any{"kind": "smtp", "smtp": map[string]any{
			"host": mailHost, "port": port, "security": "none",
			"from": "Yagura 監視 <yagura@" + testdaemon.MailDomain + ">", "to": []string{mailbox},
		}}},
	}
	chanName := map[string]string{} // channel ID → name
	for _, ch := range channels {
		var out api.Channel
		if err := c.Do(t.Context(), http.MethodPost, "/api/v1/channels", nil, map[string]any{
			"name": ch.name, "config": ch.config,
			"routes": []map[string]any{{"source": "alerts", "types": []string{"rule:*"}}},
		}, &out); err != nil {
			t.Fatalf("create channel %s: %v", ch.name, err)
		}
		chanName[out.ID] = ch.name
	}
	// One alert per test event: threshold 1, grouped by the event's number.
	var rule api.AlertRule
	if err := c.Do(t.Context(), http.MethodPost, "/api/v1/alert-rules", nil, map[string]any{
		"name": ruleName, "severity": "critical",
		"definition": map[string]any{"filter": map[string]any{"types": []string{"test"}}, "group_by": "data.n", "threshold": 1, "window": "1s"},
	}, &rule); err != nil {
		t.Fatal(err)
	}
	if rule.AlertType != "rule:"+rule.ID {
		t.Fatalf("rule %s raises alerts of type %q, want rule:%s", rule.ID, rule.AlertType, rule.ID)
	}

	tok := m.token(t)
	ad := t.TempDir()
	if out, err := m.enroll(t, ad, tok.Token); err != nil {
		t.Fatalf("enrol: %v\n%s", err, out)
	}
	if _, err := agent.LoadIdentity(ad); err != nil {
		t.Fatal(err)
	}
	ag := startProc(t, "agent", "agent", "--data-dir", ad, "--test-events", strconv.Itoa(n))

	var alerts []api.Alert
	eventually(t, 60*time.Second, fmt.Sprintf("%d alerts of %s", n, rule.AlertType), func() (bool, string) {
		var out struct{ Items []api.Alert }
		if err := c.Do(t.Context(), http.MethodGet, "/api/v1/alerts", map[string][]string{"state": {"all"}, "type": {rule.AlertType}}, nil, &out); err != nil {
			return false, err.Error()
		}
		alerts = out.Items
		return len(alerts) >= n, fmt.Sprint(len(alerts))
	})
	t.Logf("%d alerts raised after %v", len(alerts), since())

	// Once the outbox has recorded every notification as delivered no
	// channel sends again; postfix may still be moving the last mails from
	// its queue to the Maildir.
	eventually(t, 60*time.Second, "every notification delivered", func() (bool, string) {
		d := deliveredPerChannel(t, c)
		return d[""] == 3*n, fmt.Sprint(d)
	})
	t.Logf("%d notifications delivered after %v", 3*n, since())
	syslogLines := func() map[string][]string {
		byApp := map[string][]string{}
		for _, l := range rs.Lines(t) {
			if app := appName(l); app != "" {
				byApp[app] = append(byApp[app], l)
			}
		}
		return byApp
	}
	eventually(t, 30*time.Second, "every message at rsyslog and postfix", func() (bool, string) {
		lines, mails := syslogLines(), pf.Delivered(t, testdaemon.Mailbox)
		return len(lines["yagura-tls"]) >= n && len(lines["yagura-tcp"]) >= n && len(mails) >= n,
			fmt.Sprintf("tls %d, tcp %d, mails %d", len(lines["yagura-tls"]), len(lines["yagura-tcp"]), len(mails))
	})
	time.Sleep(time.Second) // a duplicate would have arrived by now
	t.Logf("all messages received after %v", since())

	if len(alerts) != n {
		t.Fatalf("%d alerts, want %d", len(alerts), n)
	}
	byID := map[string]api.Alert{}
	subjects := map[string]bool{}
	for _, a := range alerts {
		if a.Severity != "critical" || a.RuleID != rule.ID || !strings.Contains(a.Message, ruleName) {
			t.Errorf("alert %s: severity %q, rule %q, message %q", a.ID, a.Severity, a.RuleID, a.Message)
		}
		byID[a.ID] = a
		subjects[a.Subject] = true
	}
	for i := range n {
		if !subjects["n="+strconv.Itoa(i)] {
			t.Errorf("no alert with subject n=%d (subjects: %v)", i, subjects)
		}
	}
	hostnames := map[string]string{"": ""} // computer ID → host name
	for id, comp := range m.computers(t) {
		hostnames[id] = comp.Hostname
	}

	// CEF's Device Version is the manager's version ("yagura VERSION (…)").
	vout, err := exec.Command(yaguraBin(t), "version").Output()
	ver, _, _ := strings.Cut(strings.TrimPrefix(string(vout), "yagura "), " ")
	if err != nil || ver == "" {
		t.Fatalf("yagura version: %q, %v", vout, err)
	}
	lines := syslogLines()
	for _, app := range []string{"yagura-tls", "yagura-tcp"} {
		seen := map[string]int{}
		for _, l := range lines[app] {
			id := checkSyslogAlert(t, app, l, byID, hostnames, ruleName, ver)
			seen[id]++
		}
		checkOncePerAlert(t, app, seen, byID)
	}

	seen := map[string]int{}
	for _, raw := range pf.Delivered(t, testdaemon.Mailbox) {
		seen[checkMailAlert(t, raw, byID, ruleName)]++
	}
	checkOncePerAlert(t, "mail", seen, byID)

	d := deliveredPerChannel(t, c)
	for id, name := range chanName {
		if d[id] != n {
			t.Errorf("channel %s: %d delivered in the history, want %d (all: %v)", name, d[id], n, d)
		}
	}
	if d[""] != 3*n || d["other"] != 0 {
		t.Errorf("delivery history: %v, want %d delivered and nothing else", d, 3*n)
	}
	// The agent first: the manager's shutdown would otherwise wait out the
	// agent's long poll.
	ag.stop(t, syscall.SIGTERM)
	m.proc.stop(t, syscall.SIGTERM)
	t.Logf("checked in %v", since())
}

// deliveredPerChannel counts delivered notifications per channel ID, all of
// them under "", and anything not delivered under "other".
func deliveredPerChannel(t *testing.T, c *ctl.Client) map[string]int {
	t.Helper()
	var ds struct{ Items []api.Delivery }
	if err := c.Do(t.Context(), http.MethodGet, "/api/v1/deliveries", map[string][]string{"limit": {"10000"}}, nil, &ds); err != nil {
		t.Logf("list deliveries: %v", err)
		return nil
	}
	out := map[string]int{}
	for _, d := range ds.Items {
		if d.Status != "delivered" {
			out["other"]++
			continue
		}
		out[d.ChannelID]++
		out[""]++
	}
	return out
}

// appName is the APP-NAME of an RFC 5424 line: "<PRI>1 TIMESTAMP HOST APP …".
func appName(line string) string {
	f := strings.SplitN(line, " ", 5)
	if len(f) < 5 {
		return ""
	}
	return f[3]
}

// checkOncePerAlert requires that seen counts every alert exactly once.
func checkOncePerAlert(t *testing.T, channel string, seen map[string]int, alerts map[string]api.Alert) {
	t.Helper()
	for id := range alerts {
		if seen[id] != 1 {
			t.Errorf("%s: alert %s arrived %d times, want once", channel, id, seen[id])
		}
	}
	for id := range seen {
		if _, ok := alerts[id]; !ok {
			t.Errorf("%s: received %q, which is no alert of the rule", channel, id)
		}
	}
}

// checkSyslogAlert parses one line rsyslog received (RFC 5424 with a CEF
// message), checks it against the alert it names and returns the alert ID.
func checkSyslogAlert(t *testing.T, app, line string, alerts map[string]api.Alert, hostnames map[string]string, ruleName, wantVersion string) string {
	t.Helper()
	res, err := rfc5424.NewParser().Parse([]byte(line))
	if err != nil {
		t.Fatalf("%s: rfc5424 parse %q: %v", app, line, err)
	}
	sm := res.(*rfc5424.SyslogMessage)
	if sm.StructuredData == nil || sm.Message == nil {
		t.Fatalf("%s: no structured data or message: %q", app, line)
	}
	sd := (*sm.StructuredData)[notify.SDID]
	id := sd["id"]
	a, ok := alerts[id]
	if !ok {
		return id // checkOncePerAlert reports it
	}
	if sd["kind"] != "alert" || sd["type"] != a.Type || sd["severity"] != "critical" {
		t.Errorf("%s %s: structured data %v", app, id, sd)
	}
	// local0 (16) × 8 + crit (2).
	if sm.Priority == nil || *sm.Priority != 130 {
		t.Errorf("%s %s: priority %v, want 130 (local0.crit)", app, id, sm.Priority)
	}
	host, _ := os.Hostname() // the manager's: it runs here
	if sm.Hostname == nil || *sm.Hostname != host || sm.Appname == nil || *sm.Appname != app {
		t.Errorf("%s %s: HOSTNAME %v, APP-NAME %v, want %q and %q", app, id, sm.Hostname, sm.Appname, host, app)
	}
	if wantMsgID := a.Type[:min(32, len(a.Type))]; sm.MsgID == nil || *sm.MsgID != wantMsgID {
		t.Errorf("%s %s: MSGID %v, want %q", app, id, sm.MsgID, wantMsgID)
	}
	if sm.Timestamp == nil || sm.Timestamp.Sub(a.RaisedAt).Abs() >= time.Millisecond {
		t.Errorf("%s %s: timestamp %v, alert raised at %v", app, id, sm.Timestamp, a.RaisedAt)
	}

	rec, err := cef.Parse(*sm.Message)
	if err != nil {
		t.Fatalf("%s %s: cef.Parse: %v\n%s", app, id, err, *sm.Message)
	}
	get := func(k string) string { v, _ := rec.Get(k); return v }
	custom := func(label string) string {
		for i := 1; i <= 6; i++ {
			if get("cs"+strconv.Itoa(i)+"Label") == label {
				return get("cs" + strconv.Itoa(i))
			}
		}
		return ""
	}
	wantName := "アラートルール「" + ruleName + "」の条件に達しました"
	for _, c := range []struct{ what, got, want string }{
		{"device vendor", rec.DeviceVendor, notify.CEFVendor},
		{"device product", rec.DeviceProduct, notify.CEFProduct},
		{"device version", rec.DeviceVersion, wantVersion},
		{"signature ID", rec.SignatureID, a.Type},
		{"severity", rec.Severity, "10"},
		{"externalId", get("externalId"), a.ID},
		{"cat", get("cat"), "alert"},
		{"rt", get("rt"), strconv.FormatInt(sm.Timestamp.UnixMilli(), 10)},
		// Where CEF says which computer: alerts grouped by a data field
		// belong to no computer, but name the one their burst came from.
		{"deviceExternalId", get("deviceExternalId"), alertComputer(a)},
		{"dvchost", get("dvchost"), hostnames[alertComputer(a)]},
		{"custom string alert_id", custom("alert_id"), a.ID},
		{"custom string rule_id", custom("rule_id"), a.RuleID},
		{"custom string n", "n=" + custom("n"), a.Subject},
	} {
		if c.got != c.want {
			t.Errorf("%s %s: CEF %s %q, want %q", app, id, c.what, c.got, c.want)
		}
	}
	if !strings.HasPrefix(rec.Name, "【Yagura】[重大 / critical] ") || !strings.Contains(rec.Name, wantName) {
		t.Errorf("%s %s: CEF name %q, want the severity and %q", app, id, rec.Name, wantName)
	}
	if msg := get("msg"); !strings.Contains(msg, wantName) || !strings.Contains(msg, a.Message) || !strings.Contains(msg, a.ID) {
		t.Errorf("%s %s: CEF msg %q lacks the rule, the alert message %q or the ID", app, id, msg, a.Message)
	}
	return id
}

// checkMailAlert reads one delivered mail, checks it against the alert it
// names and returns the alert ID.
func checkMailAlert(t *testing.T, raw string, alerts map[string]api.Alert, ruleName string) string {
	t.Helper()
	msg, err := mail.ReadMessage(strings.NewReader(raw))
	if err != nil {
		t.Fatalf("read mail: %v\n%s", err, raw)
	}
	id := msg.Header.Get("X-Yagura-Id")
	a, ok := alerts[id]
	if !ok {
		return id // checkOncePerAlert reports it
	}
	if got, want := msg.Header.Get("Message-Id"), "<"+notify.MessageID(a.ID, testdaemon.MailDomain)+">"; got != want {
		t.Errorf("mail %s: Message-ID %q, want %q", id, got, want)
	}
	for h, want := range map[string]string{
		"X-Yagura-Kind": "alert", "X-Yagura-Type": a.Type, "X-Yagura-Severity": "critical", "Importance": "high",
	} {
		if got := msg.Header.Get(h); !strings.EqualFold(got, want) {
			t.Errorf("mail %s: %s %q, want %q", id, h, got, want)
		}
	}
	if to, err := msg.Header.AddressList("To"); err != nil || len(to) != 1 || to[0].Address != testdaemon.Mailbox+"@"+testdaemon.MailDomain {
		t.Errorf("mail %s: To %q: %v, %v", id, msg.Header.Get("To"), to, err)
	}
	var dec mime.WordDecoder
	subject, err := dec.DecodeHeader(msg.Header.Get("Subject"))
	if err != nil {
		t.Fatalf("mail %s: decode subject %q: %v", id, msg.Header.Get("Subject"), err)
	}
	if want := "アラートルール「" + ruleName + "」"; !strings.HasPrefix(subject, "【Yagura】[重大 / critical] ") || !strings.Contains(subject, want) {
		t.Errorf("mail %s: subject %q, want the severity and %q", id, subject, want)
	}
	from, err := (&mail.AddressParser{WordDecoder: &dec}).Parse(msg.Header.Get("From"))
	if err != nil || from.Name != "Yagura 監視" {
		t.Errorf("mail %s: From %q: %+v, %v", id, msg.Header.Get("From"), from, err)
	}
	if cte := msg.Header.Get("Content-Transfer-Encoding"); !strings.EqualFold(cte, "base64") {
		t.Fatalf("mail %s: Content-Transfer-Encoding %q", id, cte)
	}
	body, err := io.ReadAll(base64.NewDecoder(base64.StdEncoding, msg.Body))
	if err != nil {
		t.Fatalf("mail %s: base64 body: %v", id, err)
	}
	for _, want := range []string{"アラートルール「" + ruleName + "」の条件に達しました", a.Message, "アラート ID / Alert: " + a.ID, "対象 / Subject:      " + a.Subject} {
		if !strings.Contains(string(body), want) {
			t.Errorf("mail %s: body lacks %q:\n%s", id, want, body)
		}
	}
	return id
}

// alertComputer is the computer an alert names: its own, or the one its
// burst came from (in its data).
func alertComputer(a api.Alert) string {
	if a.ComputerID != "" {
		return a.ComputerID
	}
	var d struct {
		ComputerID string `json:"computer_id"`
	}
	_ = json.Unmarshal(a.Data, &d)
	return d.ComputerID
}
