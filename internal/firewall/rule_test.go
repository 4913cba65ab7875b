package firewall

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// base is a valid rule the validation cases spoil one field at a time.
func base() Rule {
	return Rule{ID: 5, Name: "allow ssh", Action: ActionAllow, Priority: "0", Direction: Incoming, Protocol: "tcp",
		DestinationPortType: TypeMultiple, DestinationPortMultiple: []string{"22"}}
}

func TestFirewallRuleValidate(t *testing.T) {
	five, threeHundred := 5, 300
	tests := []struct {
		name   string
		edit   func(*Rule)
		field  string // FieldError.Field; "" means valid
		inText string
	}{
		{"valid", func(*Rule) {}, "", ""},
		{"valid deny priority 3", func(r *Rule) { r.Action, r.Priority = ActionDeny, "3" }, "", ""},
		{"valid log-only priority 4", func(r *Rule) { r.Action, r.Priority = ActionLogOnly, "4" }, "", ""},
		{"missing name", func(r *Rule) { r.Name = " " }, "name", "required"},
		{"allow priority 2", func(r *Rule) { r.Priority = "2" }, "priority", `allow rules must have priority "0"`},
		{"log-only priority 0", func(r *Rule) { r.Action = ActionLogOnly }, "priority", `log-only rules must have priority "4"`},
		{"priority 5", func(r *Rule) { r.Action, r.Priority = ActionDeny, "5" }, "priority", `"0" (lowest) to "4"`},
		{"priority word", func(r *Rule) { r.Action, r.Priority = ActionDeny, "high" }, "priority", `"0" (lowest) to "4"`},
		{"bad action", func(r *Rule) { r.Action = "reject" }, "action", "must be allow, deny, force-allow, bypass or log-only"},
		{"bad direction", func(r *Rule) { r.Direction = "both" }, "direction", "incoming or outgoing"},
		{"schedule", func(r *Rule) { r.ScheduleID = 3 }, "scheduleID", "not supported"},
		{"context", func(r *Rule) { r.ContextID = 3 }, "contextID", "not supported"},
		{"bad frame type", func(r *Rule) { r.FrameType = "ipx" }, "frameType", "must be any, ip"},
		{"other frame too small", func(r *Rule) { r.FrameType, r.FrameNumber = "other", 10 }, "frameNumber", "1536"},
		{"bad protocol", func(r *Rule) { r.Protocol = "sctp" }, "protocol", "must be any, icmp"},
		{"other protocol too large", func(r *Rule) { r.Protocol, r.ProtocolNumber = "other", 256 }, "protocolNumber", "0 to 255"},
		{"bad tcp flag", func(r *Rule) { r.TCPFlags = []string{"syn", "ece"} }, "tcpflags[1]", "fin, syn"},
		{"anyFlags with flags", func(r *Rule) { r.TCPFlags, r.AnyFlags = []string{"syn"}, true }, "anyFlags", "cannot be set together"},
		{"ICMP type too large", func(r *Rule) { r.Protocol, r.DestinationPortType, r.ICMPType = "icmp", "", &threeHundred }, "ICMPType", "0 to 255"},
		{"ICMP code without type", func(r *Rule) { r.Protocol, r.DestinationPortType, r.ICMPCode = "icmp", "", &five }, "ICMPCode", "needs ICMPType"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := base()
			tt.edit(&r)
			err := r.Validate()
			checkFieldErr(t, err, tt.field, tt.inText)
		})
	}
}

func checkFieldErr(t *testing.T, err error, field, inText string) {
	t.Helper()
	if field == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("no error, want one on %s", field)
	}
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %q is not a *FieldError", err)
	}
	if fe.Field != field {
		t.Errorf("error names field %q, want %q (%v)", fe.Field, field, err)
	}
	if !strings.Contains(err.Error(), inText) {
		t.Errorf("error %q does not say %q", err, inText)
	}
}

func TestFirewallDecodeRules(t *testing.T) {
	const one = `{"ID": 1, "name": "a", "action": "deny", "priority": "2", "direction": "incoming"}`
	const two = `{"ID": 2, "name": "b", "action": "allow", "priority": "0", "direction": "outgoing"}`
	tests := []struct {
		name    string
		in      string
		wantIDs []int
		wantErr string
	}{
		{"array", "[" + one + "," + two + "]", []int{1, 2}, ""},
		{"one object", one, []int{1}, ""},
		{"wrapper", `{"firewallRules": [` + one + "," + two + "]}", []int{1, 2}, ""},
		{"leading space", "\n  [" + one + "]", []int{1}, ""},
		{"empty array", "[]", []int{}, ""},
		{"empty input", "  ", nil, "the input is empty"},
		{"unknown field names the rule", "[" + one + `, {"name": "b", "actoin": "deny"}]`, nil, `rule 2: json: unknown field "actoin"`},
		{"unknown field in wrapper", `{"firewallRules": [` + one + `, {"name": "b", "bogus": 1}]}`, nil, `rule 2: json: unknown field "bogus"`},
		{"unknown field in one object", `{"name": "a", "priority": "0", "extra": true}`, nil, `rule 1: json: unknown field "extra"`},
		{"wrong type", `[{"name": 3}]`, nil, "rule 1:"},
		{"firewallRules not an array", `{"firewallRules": {}}`, nil, "firewallRules:"},
		{"not JSON", "rules", nil, "want a JSON array"},
		{"broken array", "[" + one, nil, "rules:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules, err := DecodeRules([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ids := []int{}
			for _, r := range rules {
				ids = append(ids, r.ID)
			}
			if diff := cmp.Diff(ids, tt.wantIDs); diff != "" {
				t.Errorf("rule IDs (-got +want):\n%s", diff)
			}
		})
	}
}

func TestFirewallNormalize(t *testing.T) {
	r := Rule{Name: "x", Action: ActionDeny, Direction: Incoming}
	r.Normalize()
	want := Rule{Name: "x", Action: ActionDeny, Direction: Incoming, Priority: "0", FrameType: "ip", Protocol: "any",
		SourceIPType: "any", DestinationIPType: "any", SourceMACType: "any", DestinationMACType: "any",
		SourcePortType: "any", DestinationPortType: "any", AnyFlags: true}
	if diff := cmp.Diff(r, want); diff != "" {
		t.Errorf("(-got +want):\n%s", diff)
	}
	if err := r.Validate(); err != nil {
		t.Errorf("normalised rule does not validate: %v", err)
	}
}
