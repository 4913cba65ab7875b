package ctl_test

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	"github.com/yagura/yagura/internal/agent"
	"github.com/yagura/yagura/internal/api"
	"github.com/yagura/yagura/internal/proto"
)

// jsonOut runs a command with -o json and decodes its output into v.
func (c *ctlRunner) jsonOut(v any, args ...string) {
	c.t.Helper()
	out := c.run(append([]string{"-o", "json"}, args...)...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		c.t.Fatalf("yagura ctl -o json %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// wantErr runs a command that must fail with an error containing want.
func (c *ctlRunner) wantErr(want string, args ...string) {
	c.t.Helper()
	out, err := c.try(args...)
	if err == nil || !strings.Contains(err.Error(), want) {
		c.t.Errorf("yagura ctl %s: error %v; want one containing %q\n%s", strings.Join(args, " "), err, want, out)
	}
}

// enrolAgent enrols an agent and returns its computer ID and a function
// that sends events as the agent does.
func (c *ctlRunner) enrolAgent() (string, func(...proto.Event)) {
	t := c.t
	t.Helper()
	var tok api.Token
	c.jsonOut(&tok, "tokens", "create", "--max-uses", "1")
	id, err := agent.Enroll(t.Context(), agent.EnrollOptions{Manager: c.m.URL, Token: tok.Token, CAFingerprint: c.m.CAFingerprint, DataDir: t.TempDir(), Version: "test"})
	if err != nil {
		t.Fatalf("enrol: %v", err)
	}
	cert, err := id.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	ac, err := agent.NewClient(agent.ClientOptions{Manager: c.m.URL, CAFingerprint: c.m.CAFingerprint, Cert: cert, Roots: id.Roots()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ac.Close)
	return id.AgentID, func(evs ...proto.Event) {
		t.Helper()
		b, err := json.Marshal(proto.EventBatch{V: proto.Version, Events: evs})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ac.SendEvents(t.Context(), b); err != nil {
			t.Fatalf("send events: %v", err)
		}
	}
}

func event(id, typ, severity string, at time.Time, data string) proto.Event {
	e := proto.Event{ID: id, Type: typ, Severity: severity, Time: at}
	if data != "" {
		e.Data = json.RawMessage(data)
	}
	return e
}

// eventually retries check until it returns nil, for what the manager does
// in the background.
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var cellSep = regexp.MustCompile(`\s{2,}`)

// cells returns the cells of the first table row that contains key (cells
// are separated by two or more spaces), or nil.
func cells(out, key string) []string {
	for line := range strings.Lines(out) {
		if strings.Contains(line, key) {
			return cellSep.Split(strings.TrimSpace(line), -1)
		}
	}
	return nil
}

// wantRow checks the cells of the table row that contains key.
func wantRow(t *testing.T, what, out, key string, want ...string) {
	t.Helper()
	got := cells(out, key)
	if got == nil {
		t.Errorf("%s: no row contains %q:\n%s", what, key, out)
		return
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("%s: row %q (-got +want):\n%s", what, key, diff)
	}
}

const csvHeader = "\ufefftime,computer_id,id,type,severity,received_at,data\n"

func TestEventsCommandsEmptyStore(t *testing.T) {
	c := newCtlRunner(t)

	if diff := cmp.Diff(c.run("events", "list"), "TIME  SEVERITY  TYPE  COMPUTER  DATA\n"); diff != "" {
		t.Errorf("events list (-got +want):\n%s", diff)
	}
	var evs []api.Event
	c.jsonOut(&evs, "events", "list", "--since", "7d")
	if evs == nil || len(evs) != 0 {
		t.Errorf("events list -o json = %#v; want an empty array", evs)
	}
	if out := c.run("-o", "json", "events", "list", "--all"); out != "" {
		t.Errorf("events list --all -o json printed %q; want nothing (JSON lines)", out)
	}
	if out := c.run("events", "count", "--since", "30m"); out != "0\n" {
		t.Errorf("events count = %q; want 0", out)
	}
	if out := c.run("events", "top"); out != "TYPE  COUNT\n" {
		t.Errorf("events top = %q; want only the header", out)
	}
	wantContains(t, "events stats", c.run("events", "stats"), "Backend", "duckdb", "Events", "Size on disk", "Oldest        -")

	file := filepath.Join(c.dir, "events.csv")
	if out := c.run("events", "export", "-O", file); out != "" {
		t.Errorf("events export -O printed %q on standard output", out)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != csvHeader {
		t.Errorf("events export: file %q, %v; want the byte order mark and header only", b, err)
	}
	c.wantErr("exists; choose another name with -O or pass --force", "events", "export", "-O", file)
	c.run("events", "export", "-O", file, "--force", "--format", "json")
	if b, err := os.ReadFile(file); err != nil || len(b) != 0 {
		t.Errorf("events export --format json --force: file %q, %v; want it replaced by an empty file", b, err)
	}
	if out := c.run("events", "export"); out != csvHeader {
		t.Errorf("events export to standard output = %q; want the header", out)
	}

	c.wantErr(`--since "yesterday": want a duration back from now`, "events", "list", "--since", "yesterday")
	c.wantErr(`--format "xml": want csv or json`, "events", "export", "--format", "xml")
	c.wantErr("is before since", "events", "count", "--since", "1h", "--until", "2h")
	c.wantErr("query.severity", "events", "list", "--severity", "loud")
	c.wantErr("--limit 0: want 1 to 10000", "events", "list", "--limit", "0")
}

func TestEventsCommands(t *testing.T) {
	c := newCtlRunner(t)
	computer, send := c.enrolAgent()
	now := time.Now().UTC().Truncate(time.Second)
	send(
		event("e1", "firewall", "warning", now.Add(-5*time.Minute), `{"action":"deny","src":"192.0.2.1"}`),
		event("e2", "firewall", "warning", now.Add(-4*time.Minute), `{"action":"deny","src":"192.0.2.1"}`),
		event("e3", "firewall", "warning", now.Add(-3*time.Minute), `{"action":"allow","src":"192.0.2.2"}`),
		event("e4", "policy-applied", "info", now.Add(-2*time.Minute), ""),
		event("e5", "malware", "critical", now.Add(-1*time.Minute), `{"file":"C:\\Users\\山田\\invoice.exe"}`),
	)

	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "5"},
		{[]string{"--type", "firewall"}, "3"},
		{[]string{"--type", "firewall", "--type", "malware"}, "4"},
		{[]string{"--severity", "critical", "--severity", "info"}, "2"},
		{[]string{"--q", "192.0.2.1"}, "2"},
		{[]string{"--computer", computer, "--since", "150s"}, "2"},
		{[]string{"--since", now.Add(-10 * time.Minute).Format(time.RFC3339), "--until", now.Add(-3*time.Minute + time.Second).Format(time.RFC3339)}, "3"},
		{[]string{"--computer", "someone-else"}, "0"},
	} {
		if got := c.run(append([]string{"events", "count"}, tt.args...)...); got != tt.want+"\n" {
			t.Errorf("events count %s = %q; want %s", strings.Join(tt.args, " "), got, tt.want)
		}
	}
	var n struct{ Count int }
	c.jsonOut(&n, "events", "count")
	if n.Count != 5 {
		t.Errorf("events count -o json = %+v; want 5", n)
	}

	out := c.run("events", "top")
	wantContains(t, "events top", out, "TYPE            COUNT\nfirewall        3\n")
	var top []struct {
		Type  string
		Count int
	}
	c.jsonOut(&top, "events", "top", "--limit", "2")
	if len(top) != 2 || top[0].Type != "firewall" || top[0].Count != 3 {
		t.Errorf("events top --limit 2 -o json = %+v", top)
	}

	out = c.run("events", "list", "--limit", "2")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.Contains(lines[1], "malware") || !strings.Contains(lines[2], "policy-applied") {
		t.Errorf("events list --limit 2: want the header and the two newest events:\n%s", out)
	}
	wantContains(t, "events list", c.run("events", "list", "--type", "malware"), "critical", computer, `{"file":"C:\\Users\\山田\\invoice.exe"}`)

	// --all follows the cursor through every page.
	out = c.run("-o", "json", "events", "list", "--all", "--limit", "2")
	var ids []string
	for line := range strings.Lines(out) {
		var e api.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("events list --all -o json: line %q: %v", line, err)
		}
		ids = append(ids, e.ID)
	}
	if diff := cmp.Diff(ids, []string{"e5", "e4", "e3", "e2", "e1"}); diff != "" {
		t.Errorf("events list --all -o json: IDs (-got +want):\n%s", diff)
	}
	out = c.run("events", "list", "--all", "--limit", "2")
	if strings.Count(out, "TIME") != 1 || strings.Count(out, computer) != 5 {
		t.Errorf("events list --all: want one header and five events:\n%s", out)
	}
	var fromYAML []map[string]any
	if err := yaml.Unmarshal([]byte(c.run("-o", "yaml", "events", "list", "--all", "--limit", "2")), &fromYAML); err != nil || len(fromYAML) != 5 {
		t.Errorf("events list --all -o yaml: %d events, %v; want one list of 5", len(fromYAML), err)
	}
	var page []api.Event
	c.jsonOut(&page, "events", "list", "--since", "2025-01-01", "--until", "2025-01-02")
	if len(page) != 0 {
		t.Errorf("events of another day: %+v", page)
	}

	file := filepath.Join(c.dir, "firewall.csv")
	c.run("events", "export", "--type", "firewall", "-O", file)
	b, err := os.ReadFile(file)
	if err != nil || !bytes.HasPrefix(b, []byte(csvHeader)) {
		t.Fatalf("events export: %q, %v; want it to start with the byte order mark and the header", b, err)
	}
	records, err := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(b, []byte("\ufeff")))).ReadAll()
	if err != nil || len(records) != 4 {
		t.Fatalf("events export: %d CSV records, %v; want the header and 3 events", len(records), err)
	}
	if want := []string{now.Add(-3 * time.Minute).Format(time.RFC3339Nano), computer, "e3", "firewall", "warning"}; !slices.Equal(records[1][:5], want) {
		t.Errorf("events export: first record %q; want it to start with %q", records[1], want)
	}
	out = c.run("events", "export", "--format", "json", "--severity", "critical")
	var e api.Event
	if err := json.Unmarshal([]byte(out), &e); err != nil || e.ID != "e5" || strings.Count(out, "\n") != 1 {
		t.Errorf("events export --format json: %q, %v; want one line with e5", out, err)
	}

	wantContains(t, "events stats", c.run("events", "stats"), "Backend", "duckdb")
}

// webhookReceiver records the requests a webhook channel sends.
type webhookReceiver struct {
	*httptest.Server
	mu       sync.Mutex
	requests []http.Header
	bodies   []string
}

func newWebhookReceiver(t *testing.T) *webhookReceiver {
	r := &webhookReceiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.requests = append(r.requests, req.Header.Clone())
		r.bodies = append(r.bodies, string(b))
		r.mu.Unlock()
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *webhookReceiver) received() ([]http.Header, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.requests), slices.Clone(r.bodies)
}

// closedPort is a loopback address where nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

const webhookSecret = "0123456789abcdef-test-secret"

func TestChannelsCommands(t *testing.T) {
	c := newCtlRunner(t)
	hook := newWebhookReceiver(t)

	if out := c.run("channels", "list"); out != "ID  NAME  KIND  ENABLED  PENDING  FAILED  OLDEST PENDING\n" {
		t.Errorf("channels list of none = %q", out)
	}
	out := c.run("channels", "create", "-f", c.file("hook.json", fmt.Sprintf(
		`{"name": "Chat", "config": {"kind": "webhook", "webhook": {"url": %q, "secret": %q}}, "routes": [{"source": "alerts", "min_severity": "warning"}]}`,
		hook.URL, webhookSecret)))
	wantContains(t, "channels create", out, `"Chat" (webhook) created; send a test message with: yagura ctl channels test `)
	var chans []api.Channel
	c.jsonOut(&chans, "channels", "list")
	if len(chans) != 1 {
		t.Fatalf("channels list -o json = %+v", chans)
	}
	id := chans[0].ID
	wantRow(t, "channels list", c.run("channels", "list"), id, id, "Chat", "webhook", "yes", "0", "0", "-")

	// The secret is never shown.
	out = c.run("channels", "show", id)
	wantContains(t, "channels show", out, "Receives        alerts severity>=warning", `"secret_set": true`, hook.URL)
	if strings.Contains(out, webhookSecret) {
		t.Errorf("channels show reveals the webhook secret:\n%s", out)
	}

	out = c.run("channels", "test", id)
	if !strings.HasPrefix(out, "OK  ") || !strings.HasSuffix(out, "s\n") {
		t.Errorf("channels test = %q; want OK and the seconds", out)
	}
	headers, bodies := hook.received()
	if len(headers) != 1 || !strings.HasPrefix(headers[0].Get("X-Yagura-Signature"), "sha256=") || !strings.Contains(bodies[0], "Test notification: Chat") {
		t.Errorf("the receiver got %d requests (%v, %q); want one signed test message", len(headers), headers, bodies)
	}

	// show -o json, edited, goes back with update -f; the stored secret stays.
	var ch map[string]any
	c.jsonOut(&ch, "channels", "show", id)
	ch["name"] = "Chat (ops)"
	b, _ := json.Marshal(ch)
	out = c.run("channels", "update", id, "-f", c.file("hook2.json", string(b)))
	wantContains(t, "channels update", out, "Name            Chat (ops)", "Version         2")
	c.run("channels", "test", id)
	if headers, _ := hook.received(); len(headers) != 2 || headers[1].Get("X-Yagura-Signature") == "" {
		t.Errorf("after update, the test message was not signed with the kept secret: %v", headers)
	}
	wantContains(t, "channels disable", c.run("channels", "disable", id), `Channel `+id+` "Chat (ops)" disabled.`)
	wantContains(t, "channels disable again", c.run("channels", "disable", id), "disabled.")
	wantRow(t, "channels list", c.run("channels", "list"), id, id, "Chat (ops)", "webhook", "no", "0", "0", "-")
	wantContains(t, "channels enable", c.run("channels", "enable", id), "enabled.")
	var got api.Channel
	c.jsonOut(&got, "channels", "show", id)
	if !got.Enabled || got.Version != 4 || got.Name != "Chat (ops)" {
		t.Errorf("after disable and enable: %+v; want enabled, version 4", got)
	}
	if out := c.run("channels", "test", id); !strings.HasPrefix(out, "OK") {
		t.Errorf("channels test after disable and enable = %q; want the stored secret kept", out)
	}

	// A receiver that is down: FAILED, and a non-zero exit.
	dead := c.run("-o", "json", "channels", "create", "-f", c.file("dead.json", fmt.Sprintf(
		`{"name": "Down", "config": {"kind": "webhook", "webhook": {"url": "http://%s/hook", "secret": %q, "timeout": "2s"}}, "routes": []}`,
		closedPort(t), webhookSecret)))
	var deadCh api.Channel
	if err := json.Unmarshal([]byte(dead), &deadCh); err != nil {
		t.Fatal(err)
	}
	out, err := c.try("channels", "test", deadCh.ID)
	if err == nil || !strings.Contains(err.Error(), "the receiver did not accept the test message") || !strings.HasPrefix(out, "FAILED  ") {
		t.Errorf("channels test of a receiver that is down: %q, %v; want FAILED and an error", out, err)
	}

	// syslog over UDP to a listener here.
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	sys := c.file("syslog.json", fmt.Sprintf(`{"name": "SIEM", "config": {"kind": "syslog", "syslog": {"address": %q, "transport": "udp", "payload": "json"}}, "routes": [{"source": "events", "types": ["firewall"]}]}`, udp.LocalAddr()))
	var sysCh api.Channel
	c.jsonOut(&sysCh, "channels", "create", "-f", sys)
	if out := c.run("channels", "test", sysCh.ID); !strings.HasPrefix(out, "OK") {
		t.Errorf("channels test over syslog/udp = %q", out)
	}
	buf := make([]byte, 8192)
	_ = udp.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _, err := udp.ReadFrom(buf); err != nil || !strings.Contains(string(buf[:n]), "yagura") {
		t.Errorf("syslog receiver: %q, %v", buf[:n], err)
	}

	c.wantErr(`"config" is missing`, "channels", "create", "-f", c.file("noconfig.json", `{"name": "x"}`))
	c.wantErr(`unknown field "colour"`, "channels", "create", "-f", c.file("colour.json", `{"name": "x", "colour": "red", "config": {}}`))
	c.wantErr("config: webhook.url", "channels", "create", "-f", c.file("badurl.json",
		`{"name": "x", "config": {"kind": "webhook", "webhook": {"url": "http://example.com/", "secret": "`+webhookSecret+`"}}}`))
	c.wantErr("say which file with -f FILE", "channels", "create")

	wantContains(t, "channels delete", c.run("channels", "delete", deadCh.ID), "Channel "+deadCh.ID+" deleted")
	c.wantErr("404", "channels", "show", deadCh.ID)
}

func TestAlertRulesCommands(t *testing.T) {
	c := newCtlRunner(t)

	if out := c.run("alert-rules", "list"); out != "ID  NAME  ENABLED  SEVERITY  FIRES AT  COUNTS\n" {
		t.Errorf("alert-rules list of none = %q", out)
	}
	var r api.AlertRule
	c.jsonOut(&r, "alert-rules", "create", "--name", "Deny storm", "--severity", "critical", "--type", "firewall",
		"--data", "action=deny", "--group-by", "data.src", "--threshold", "3", "--window", "10m", "--suppress", "1h")
	want := api.RuleDefinition{Filter: api.RuleFilter{Types: []string{"firewall"}, Data: map[string]string{"action": "deny"}}, GroupBy: "data.src", Threshold: 3, Window: "10m", Suppress: "1h"}
	if diff := cmp.Diff(r.Definition, want); diff != "" || !r.Enabled || r.Severity != "critical" || r.AlertType != "rule:"+r.ID {
		t.Errorf("alert-rules create: %+v (definition -got +want):\n%s", r, diff)
	}
	wantRow(t, "alert-rules list", c.run("alert-rules", "list"), r.ID, r.ID, "Deny storm", "yes", "critical", "3 in 10m per data.src", "type=firewall data.action=deny")
	wantContains(t, "alert-rules show", c.run("alert-rules", "show", r.ID),
		"Raises an alert at      3 in 10m per data.src", "Suppresses repeats for  1h", "Alert type              rule:"+r.ID)

	// Defaults: warning, at every matching event.
	out := c.run("alert-rules", "create", "--name", "Every critical", "--min-severity", "critical", "--disabled")
	wantContains(t, "alert-rules create with defaults", out, `"Every critical" created (disabled); its alerts have type rule:`)
	var rules []api.AlertRule
	c.jsonOut(&rules, "alert-rules", "list")
	if len(rules) != 2 {
		t.Fatalf("alert-rules list: %+v", rules)
	}
	every := rules[slices.IndexFunc(rules, func(x api.AlertRule) bool { return x.Name == "Every critical" })]
	if every.Enabled || every.Severity != "warning" || every.Definition.Threshold != 1 || every.Definition.Window != "1m" || every.Definition.Filter.MinSeverity != "critical" {
		t.Errorf("alert rule with defaults: %+v", every)
	}

	out = c.run("alert-rules", "update", r.ID, "--threshold", "2", "--data", "", "--description", "two in ten minutes")
	wantContains(t, "alert-rules update", out, "Counts                  type=firewall\n", "Raises an alert at      2 in 10m per data.src", "Version                 2", "two in ten minutes")
	wantContains(t, "alert-rules disable", c.run("alert-rules", "disable", r.ID), `Alert rule `+r.ID+` "Deny storm" disabled.`)
	wantRow(t, "alert-rules list", c.run("alert-rules", "list"), r.ID, r.ID, "Deny storm", "no", "critical", "2 in 10m per data.src", "type=firewall")
	wantContains(t, "alert-rules enable", c.run("alert-rules", "enable", r.ID), `"Deny storm" enabled.`)
	wantContains(t, "alert-rules enable again", c.run("alert-rules", "enable", r.ID), `"Deny storm" enabled.`)

	// show -o json, edited, goes back with update -f.
	var doc map[string]any
	c.jsonOut(&doc, "alert-rules", "show", r.ID)
	doc["name"] = "Deny storm (edited)"
	b, _ := json.Marshal(doc)
	c.jsonOut(&r, "alert-rules", "update", r.ID, "-f", c.file("rule.json", string(b)), "--window", "5m")
	if r.Name != "Deny storm (edited)" || r.Definition.Window != "5m" || r.Definition.Threshold != 2 || !r.Enabled || r.Version != 5 {
		t.Errorf("alert-rules update -f: %+v", r)
	}
	// A file without "enabled" keeps the rule as it is.
	c.run("alert-rules", "disable", every.ID)
	c.jsonOut(&every, "alert-rules", "update", every.ID, "-f", c.file("every.json",
		`{"name": "Every critical", "severity": "error", "definition": {"filter": {"min_severity": "critical"}, "threshold": 1, "window": "1m"}}`))
	if every.Enabled || every.Severity != "error" {
		t.Errorf("alert-rules update -f without enabled: %+v; want it still disabled", every)
	}

	c.wantErr("the rule needs a name: give --name", "alert-rules", "create", "--type", "firewall")
	c.wantErr(`--data "action": want KEY=VALUE`, "alert-rules", "create", "--name", "x", "--data", "action")
	c.wantErr("definition:", "alert-rules", "create", "--name", "x", "--window", "soon")
	c.wantErr(`unknown field "thresold"`, "alert-rules", "create", "-f", c.file("typo.json", `{"name": "x", "severity": "info", "definition": {"thresold": 2}}`))
	c.wantErr("404", "alert-rules", "update", "no-such-rule", "--threshold", "3")

	wantContains(t, "alert-rules delete", c.run("alert-rules", "delete", every.ID), "Alert rule "+every.ID+" deleted.")
	c.wantErr("404", "alert-rules", "show", every.ID)
	c.jsonOut(&rules, "alert-rules", "list")
	if len(rules) != 1 || rules[0].ID != r.ID {
		t.Errorf("after delete: %+v", rules)
	}
}

// TestAlertingEndToEnd raises an alert with a rule, acknowledges it, and
// follows its notification through the outbox.
func TestAlertingEndToEnd(t *testing.T) {
	c := newCtlRunner(t)
	hook := newWebhookReceiver(t)
	var ch, down api.Channel
	c.jsonOut(&ch, "channels", "create", "-f", c.file("hook.json", fmt.Sprintf(
		`{"name": "Chat", "config": {"kind": "webhook", "webhook": {"url": %q, "secret": %q}}, "routes": [{"source": "alerts", "types": ["rule:*"]}]}`,
		hook.URL, webhookSecret)))
	c.jsonOut(&down, "channels", "create", "-f", c.file("down.json", fmt.Sprintf(
		`{"name": "Down", "config": {"kind": "webhook", "webhook": {"url": "http://%s/", "secret": %q, "timeout": "2s"}}, "routes": [{"source": "alerts"}]}`,
		closedPort(t), webhookSecret)))
	var r api.AlertRule
	c.jsonOut(&r, "alert-rules", "create", "--name", "Deny storm", "--severity", "error", "--type", "firewall",
		"--data", "action=deny", "--group-by", "data.src", "--threshold", "3", "--window", "10m")

	_, send := c.enrolAgent()
	now := time.Now().UTC()
	for i := range 3 {
		send(event("d"+strconv.Itoa(i), "firewall", "warning", now.Add(time.Duration(i-3)*time.Second), `{"action":"deny","src":"203.0.113.5"}`))
	}

	var alert api.Alert
	eventually(t, "the rule's alert", func() error {
		var alerts []api.Alert
		c.jsonOut(&alerts, "alerts", "list", "--type", r.AlertType)
		if len(alerts) != 1 {
			return fmt.Errorf("%d alerts of type %s", len(alerts), r.AlertType)
		}
		alert = alerts[0]
		return nil
	})
	if alert.Occurrences < 1 || alert.Subject == "" || alert.Severity != "error" {
		t.Errorf("alert: %+v", alert)
	}
	wantContains(t, "alerts list", c.run("alerts", "list"), "SUBJECT", "OCCURRENCES", "ACKED BY", alert.ID, alert.Subject)
	wantContains(t, "alerts ack", c.run("alerts", "ack", alert.ID), "Alert "+alert.ID+" acknowledged at ", "it stays open until cleared")
	c.wantErr("409", "alerts", "ack", alert.ID)
	var acked []api.Alert
	c.jsonOut(&acked, "alerts", "list", "--type", r.AlertType)
	if len(acked) != 1 || acked[0].AckedBy == "" || acked[0].AckedAt == nil || !acked[0].Open {
		t.Errorf("after ack: %+v; want acknowledged and open", acked)
	}
	wantContains(t, "alerts list", c.run("alerts", "list"), "  "+acked[0].AckedBy+"  ")

	// The webhook receives the alert; the dead channel's copy waits.
	eventually(t, "delivery to the webhook", func() error {
		var ds []api.Delivery
		c.jsonOut(&ds, "notifications", "deliveries", "--channel", ch.ID, "--status", "delivered", "--since", "1h")
		if len(ds) != 1 {
			return fmt.Errorf("%d deliveries", len(ds))
		}
		return nil
	})
	if _, bodies := hook.received(); len(bodies) != 1 || !strings.Contains(bodies[0], alert.ID) {
		t.Errorf("webhook bodies %q; want the alert %s", bodies, alert.ID)
	}
	wantContains(t, "notifications deliveries", c.run("notifications", "deliveries"), "delivered", ch.ID)

	var pending []api.Notification
	eventually(t, "a pending notification for the channel that is down", func() error {
		c.jsonOut(&pending, "notifications", "list", "--status", "pending", "--channel", down.ID)
		if len(pending) != 1 || pending[0].Attempts < 1 {
			return fmt.Errorf("pending: %+v", pending)
		}
		return nil
	})
	wantContains(t, "notifications list", c.run("notifications", "list"), pending[0].ID, down.ID, "alert", "pending")
	out := c.run("channels", "list")
	if row := cells(out, down.ID); len(row) != 7 || !slices.Equal(row[:6], []string{down.ID, "Down", "webhook", "yes", "1", "0"}) || !strings.HasSuffix(row[6], " ago") {
		t.Errorf("channels list: want %s with 1 pending notification and its age:\n%s", down.ID, out)
	}
	c.wantErr("409", "notifications", "retry", pending[0].ID)
	c.wantErr("409", "notifications", "discard", pending[0].ID)
}

func TestNotificationsCommandsEmpty(t *testing.T) {
	c := newCtlRunner(t)
	if out := c.run("notifications", "list"); out != "ID  CHANNEL  KIND  STATUS  ATTEMPTS  CREATED  NEXT ATTEMPT  LAST ERROR\n" {
		t.Errorf("notifications list = %q", out)
	}
	var ns []api.Notification
	c.jsonOut(&ns, "notifications", "list", "--status", "failed")
	if ns == nil || len(ns) != 0 {
		t.Errorf("notifications list -o json = %#v; want []", ns)
	}
	if out := c.run("notifications", "deliveries", "--since", "24h"); out != "ID  CHANNEL  KIND  STATUS  ATTEMPTS  CREATED  FINISHED  BY  LAST ERROR\n" {
		t.Errorf("notifications deliveries = %q", out)
	}
	c.wantErr(`--status "stuck": want pending, failed or all`, "notifications", "list", "--status", "stuck")
	c.wantErr(`--status "lost": want delivered, failed, discarded or all`, "notifications", "deliveries", "--status", "lost")
	c.wantErr("404", "notifications", "retry", "no-such-notification")
	c.wantErr("404", "notifications", "discard", "no-such-notification")
}
