package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fwPolicy uses an IP list, so it must be read as a rule set.
const fwPolicy = `{"rules": [
  {"ID": 1, "name": "log tcp", "action": "log-only", "priority": "4", "direction": "incoming", "protocol": "tcp"},
  {"ID": 2, "name": "deny telnet", "action": "deny", "priority": "2", "direction": "incoming", "protocol": "tcp",
   "destinationPortType": "multiple", "destinationPortMultiple": ["23"]},
  {"ID": 3, "name": "allow ssh from peers", "action": "allow", "priority": "0", "direction": "incoming", "protocol": "tcp",
   "sourceIPType": "ip-list", "sourceIPListID": 10, "destinationPortType": "multiple", "destinationPortMultiple": ["22"]}
 ],
 "ipLists": [{"ID": 10, "name": "peers", "items": ["10.0.0.0/24"]}]}`

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// runYagura runs the command line in process, as main would.
func runYagura(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	root := rootCmd()
	var out bytes.Buffer
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetIn(strings.NewReader(stdin))
	err := root.Execute()
	return out.String(), err
}

func exitStatus(err error) int {
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return int(ee)
	}
	return 1
}

func TestFwEvalPass(t *testing.T) {
	rules := writeFile(t, "policy.json", fwPolicy)
	out, err := runYagura(t, "", "fw", "eval", "--rules", rules, "--stateful", "--packet", "in tcp 10.0.0.5:40000 > 10.0.0.1:22 flags S")
	if err != nil {
		t.Fatalf("err %v, want pass (exit 0)\n%s", err, out)
	}
	for _, want := range []string{
		"verdict/判定: pass\n",
		"reason/理由: rule (",
		`rule/ルール: #3 "allow ssh from peers" (allow, priority 0, incoming)`,
		`log-only/ログのみ: #1 "log tcp"`,
		`event/イベント: {"action":"log-only","verdict":"pass"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestFwEvalDropExitStatus(t *testing.T) {
	rules := writeFile(t, "policy.json", fwPolicy)
	tests := []struct {
		name    string
		args    []string
		status  int
		inOrder []string
	}{
		{"deny rule", []string{"--packet", "in tcp 10.0.0.5:40000 > 10.0.0.1:23 flags S"}, 3,
			[]string{"verdict/判定: drop", `rule/ルール: #2 "deny telnet" (deny, priority 2, incoming)`, `"action":"deny"`}},
		{"implicit deny", []string{"--packet", "in tcp 192.0.2.7:40000 > 10.0.0.1:22 flags S"}, 3,
			[]string{"verdict/判定: drop", "reason/理由: out-of-allowed-policy"}},
		{"one drop among passes", []string{"--packet", "in arp 10.0.0.5 > 10.0.0.1", "--packet", "in tcp 10.0.0.5:1 > 10.0.0.1:23 flags S"}, 3,
			[]string{"verdict/判定: pass", "verdict/判定: drop"}},
		{"stateful hint", []string{"--stateful", "--packet", "in tcp 10.0.0.5:40000 > 10.0.0.1:22"}, 3,
			[]string{"reason/理由: invalid-state", `hint/ヒント: a new TCP connection opens with a pure SYN: "flags S"`}},
		{"stateless no hint", []string{"--packet", "in tcp 10.0.0.5:40000 > 10.0.0.1:22"}, 0,
			[]string{"verdict/判定: pass"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runYagura(t, "", append([]string{"fw", "eval", "--rules", rules}, tt.args...)...)
			if got := exitStatus(err); got != tt.status {
				t.Fatalf("exit status %d (%v), want %d\n%s", got, err, tt.status, out)
			}
			rest := out
			for _, want := range tt.inOrder {
				i := strings.Index(rest, want)
				if i < 0 {
					t.Fatalf("output lacks %q (in order):\n%s", want, out)
				}
				rest = rest[i+len(want):]
			}
			if tt.status == 0 && strings.Contains(out, "hint/") {
				t.Errorf("unexpected hint:\n%s", out)
			}
		})
	}
}

func TestFwEvalJSON(t *testing.T) {
	// A Deep Security export: a bare array, no lists.
	rules := writeFile(t, "export.json", `[{"ID": 7, "name": "deny icmp", "action": "deny", "priority": "3", "direction": "incoming", "protocol": "icmp", "alertEnabled": true}]`)
	out, err := runYagura(t, "", "fw", "eval", "--rules", rules, "--json",
		"--packet", "in icmp 10.0.0.5 > 10.0.0.1 type 8 code 0", "--packet", "in udp [2001:db8::5]:5353 > [2001:db8::1]:53")
	if exitStatus(err) != exitDrop {
		t.Fatalf("err %v, want exit status 3\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("want one JSON line per packet, got:\n%s", out)
	}
	var first struct {
		Packet, Verdict, Reason string
		Rule                    struct{ ID int }
		Events                  []struct{ Alert bool }
	}
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if first.Packet != "in icmp 10.0.0.5 > 10.0.0.1 type 8 code 0" || first.Verdict != "drop" || first.Rule.ID != 7 || len(first.Events) != 1 || !first.Events[0].Alert {
		t.Errorf("first packet: %+v", first)
	}
	if !strings.Contains(lines[1], `"verdict":"pass","reason":"default"`) {
		t.Errorf("second packet: %s", lines[1])
	}
}

func TestFwEvalErrors(t *testing.T) {
	rules := writeFile(t, "policy.json", fwPolicy)
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"packet syntax", []string{"--rules", rules, "--packet", "in tcp 10.0.0.5:1 > 10.0.0.1:2 flags S", "--packet", "in tcp 10.0.0.x:1 > 10.0.0.1:22"},
			[]string{"--packet 2", `token 3 "10.0.0.x:1"`, "want an IPv4 or IPv6 address"}},
		{"missing arrow", []string{"--rules", rules, "--packet", "in udp 10.0.0.5:1 10.0.0.1:2"}, []string{"token 4", `want ">"`}},
		{"no packet", []string{"--rules", rules}, []string{"at least one --packet"}},
		{"no rules flag", []string{"--packet", "in arp - > -"}, []string{`"rules" not set`}},
		{"missing file", []string{"--rules", filepath.Join(t.TempDir(), "nope.json"), "--packet", "in arp - > -"}, []string{"read rules", "nope.json"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runYagura(t, "", append([]string{"fw", "eval"}, tt.args...)...)
			if exitStatus(err) != 1 {
				t.Fatalf("err %v, want an error (exit status 1)\n%s", err, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(out, "verdict") {
				t.Errorf("printed a verdict despite the error:\n%s", out)
			}
		})
	}
}

func TestFwCheck(t *testing.T) {
	good := writeFile(t, "policy.json", fwPolicy)
	out, err := runYagura(t, "", "fw", "check", "--rules", good)
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	for _, want := range []string{"OK: 3 rules, 1 IP lists", "  log-only     1         0\n", "  allow        1         0\n", "incoming/受信: on", "outgoing/送信: off"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}

	tests := []struct {
		name, content string
		want          []string
	}{
		{"bad IP entry", `{"firewallRules": [
			{"ID": 1, "name": "fine", "action": "deny", "priority": "1", "direction": "incoming"},
			{"ID": 9, "name": "typo", "action": "deny", "priority": "1", "direction": "incoming",
			 "sourceIPType": "multiple", "sourceIPMultiple": ["10.0.0.1", "10.0.0.0/8", "10.0.0.x"]}]}`,
			[]string{"rule 2 of 2", `(ID 9, "typo")`, `sourceIPMultiple[2]: "10.0.0.x"`}},
		{"allow with priority", `[{"name": "a", "action": "allow", "priority": "3", "direction": "incoming"}]`,
			[]string{"rule 1 of 1", `priority: "3" allow rules must have priority "0"`}},
		{"unknown field", `[{"name": "a"}, {"name": "b", "direction": "incoming", "sourceIP": "10.0.0.1"}]`,
			[]string{"rule 2:", `unknown field "sourceIP"`}},
		{"unknown list", `{"rules": [{"name": "a", "action": "deny", "priority": "1", "direction": "incoming", "sourceIPType": "ip-list", "sourceIPListID": 4}]}`,
			[]string{"rule 1 of 1", "sourceIPListID", "names no IP list"}},
		{"bad list entry", `{"rules": [], "portLists": [{"ID": 3, "name": "web", "items": ["80", "443-80"]}]}`,
			[]string{`port list 3 "web": [1]: "443-80" range starts after it ends`}},
		{"unknown set key", `{"rules": [], "ipList": []}`, []string{`unknown field "ipList"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runYagura(t, "", "fw", "check", "--rules", writeFile(t, "bad.json", tt.content))
			if err == nil {
				t.Fatalf("no error:\n%s", out)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}

	// Standard input.
	if out, err := runYagura(t, `[{"name": "a", "action": "bypass", "priority": "4", "direction": "outgoing"}]`, "fw", "check", "--rules", "-"); err != nil || !strings.Contains(out, "OK: 1 rules") {
		t.Errorf("check from stdin: %v\n%s", err, out)
	}
}
