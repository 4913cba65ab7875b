package ctl_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/yagura/yagura/internal/api"
	"github.com/yagura/yagura/internal/ctl"
	"github.com/yagura/yagura/internal/server"
	"github.com/yagura/yagura/internal/server/servertest"
)

// ctlRunner runs `yagura ctl` commands against a manager in this process.
type ctlRunner struct {
	t    *testing.T
	m    *servertest.Manager
	dir  string
	args []string
}

func newCtlRunner(t *testing.T) *ctlRunner {
	t.Helper()
	m := servertest.Start(t, servertest.Config(t), server.Options{Version: "test"})
	return &ctlRunner{t: t, m: m, dir: t.TempDir(), args: []string{"--server", m.URL, "--token", m.Token, "--ca-fingerprint", m.CAFingerprint}}
}

// run runs a command and returns its standard output; it fails the test on
// an error.
func (c *ctlRunner) run(args ...string) string {
	c.t.Helper()
	out, err := c.try(args...)
	if err != nil {
		c.t.Fatalf("yagura ctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (c *ctlRunner) try(args ...string) (string, error) {
	c.t.Helper()
	var out bytes.Buffer
	err := ctl.Run(c.t.Context(), append(append([]string{}, c.args...), args...), &out)
	return out.String(), err
}

// file writes a file in the runner's folder and returns its path.
func (c *ctlRunner) file(name, content string) string {
	c.t.Helper()
	p := filepath.Join(c.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		c.t.Fatal(err)
	}
	return p
}

func wantContains(t *testing.T, what, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s: output does not contain %q:\n%s", what, w, got)
		}
	}
}

func TestRulesAndListsCommands(t *testing.T) {
	c := newCtlRunner(t)

	out := c.run("lists", "create", "--kind", "ip", "--name", "Admin networks", "--item", "10.10.0.0/16", "--item", "192.0.2.7 # jump host")
	wantContains(t, "lists create", out, `IP list 1 "Admin networks" created with 2 entries.`)
	out = c.run("lists", "create", "--kind", "port", "-f", c.file("web.json", `{"name": "Web", "description": "HTTP(S)", "items": ["80", "443"]}`))
	wantContains(t, "lists create -f", out, `port list 2 "Web" created with 2 entries.`)
	_, err := c.try("lists", "create", "--kind", "port", "--name", "Bad", "--item", "22", "--item", "http")
	if err == nil || !strings.Contains(err.Error(), "body.items[1]") {
		t.Errorf("a bad entry: %v, want an error naming body.items[1]", err)
	}
	if _, err := c.try("lists", "create", "--name", "No kind"); err == nil || !strings.Contains(err.Error(), "--kind") {
		t.Errorf("create without --kind: %v", err)
	}

	out = c.run("lists", "list")
	wantContains(t, "lists list", out, "ID  KIND  NAME", "Admin networks", "10.10.0.0/16, 192.0.2.7 # jump host", "port  Web")
	out = c.run("lists", "update", "2", "--kind", "port", "--item", "80", "--item", "443", "--item", "8080-8088")
	wantContains(t, "lists update", out, `port list 2 "Web" updated: 3 entries.`)
	out = c.run("lists", "show", "2", "--kind", "port")
	wantContains(t, "lists show", out, "HTTP(S)", "8080-8088")

	rule := c.file("rule.json", `{"name": "Web from admins", "action": "allow", "direction": "incoming", "protocol": "tcp",
		"sourceIPType": "ip-list", "sourceIPListID": 1, "destinationPortType": "port-list", "destinationPortListID": 2}`)
	out = c.run("rules", "create", "-f", rule)
	wantContains(t, "rules create", out, `Rule 1 "Web from admins" created.`)
	out = c.run("rules", "list")
	wantContains(t, "rules list", out, "ID  ACTION", "allow", "ip-list 1", "port-list 2", "Web from admins")
	out = c.run("rules", "show", "1")
	wantContains(t, "rules show", out, "Source IP         ip-list 1", "Destination port  port-list 2")

	var r api.FirewallRule
	if err := json.Unmarshal([]byte(c.run("-o", "json", "rules", "show", "1")), &r); err != nil || r.ID != 1 || r.SourceIPListID != 1 {
		t.Fatalf("rules show -o json: %+v, %v", r, err)
	}
	r.Name, r.Action, r.Priority = "Deny web from admins", "deny", "2"
	b, _ := json.Marshal(r)
	out = c.run("rules", "update", "1", "-f", c.file("rule2.json", string(b)))
	wantContains(t, "rules update", out, `Rule 1 "Deny web from admins" updated.`)
	if _, err := c.try("rules", "create", "-f", c.file("bad.json", `{"name": "x", "action": "allow", "direction": "incoming", "colour": "red"}`)); err == nil ||
		!strings.Contains(err.Error(), `unknown field "colour"`) {
		t.Errorf("a rule with an unknown field: %v", err)
	}

	// Export, then import the export: copies with new IDs.
	export := filepath.Join(c.dir, "export.json")
	c.run("rules", "export", "-O", export)
	if _, err := c.try("rules", "export", "-O", export); err == nil {
		t.Error("export replaced an existing file without --force")
	}
	var e api.FirewallExport
	if b, err := os.ReadFile(export); err != nil || json.Unmarshal(b, &e) != nil || len(e.FirewallRules) != 1 || len(e.IPLists) != 1 || len(e.PortLists) != 1 {
		t.Fatalf("export file: %+v, %v", e, err)
	}
	out = c.run("rules", "import", export)
	wantContains(t, "rules import", out, "Imported 1 rules, 1 IP lists, 0 MAC lists and 1 port lists.", "rule       1           2", "IP list    1           3", "port list  2           4")
	out = c.run("rules", "export", "--id", "2")
	if err := json.Unmarshal([]byte(out), &e); err != nil || len(e.FirewallRules) != 1 || e.FirewallRules[0].SourceIPListID != 3 || e.FirewallRules[0].DestinationPortListID != 4 {
		t.Errorf("export of the imported rule: %+v, %v", e, err)
	}

	// Deletes: refused while in use, with who uses it.
	_, err = c.try("lists", "delete", "1", "--kind", "ip")
	if err == nil || !strings.Contains(err.Error(), `is used by rule 1 "Deny web from admins"`) {
		t.Errorf("deleting a list in use: %v", err)
	}
	out = c.run("rules", "delete", "1")
	wantContains(t, "rules delete", out, "Rule 1 deleted.")
	out = c.run("lists", "delete", "1", "--kind", "ip")
	wantContains(t, "lists delete", out, "IP list 1 deleted.")
	if _, err := c.try("rules", "show", "1"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("show of a deleted rule: %v", err)
	}
}
