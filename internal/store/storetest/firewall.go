package storetest

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/yagura/yagura/internal/firewall"
	"github.com/yagura/yagura/internal/policy"
	"github.com/yagura/yagura/internal/store"
)

// ---- helpers ----

func createList(t *testing.T, db *store.DB, l store.List) store.List {
	t.Helper()
	got, err := db.CreateList(t.Context(), l)
	if err != nil {
		t.Fatalf("CreateList(%s %q): %v", l.Kind, l.Name, err)
	}
	return got
}

func createRule(t *testing.T, db *store.DB, r firewall.Rule) firewall.Rule {
	t.Helper()
	got, err := db.CreateRule(t.Context(), r)
	if err != nil {
		t.Fatalf("CreateRule(%q): %v", r.Name, err)
	}
	return got
}

func revision(t *testing.T, db *store.DB) int64 {
	t.Helper()
	n, err := db.PolicyRevision(t.Context())
	if err != nil {
		t.Fatalf("PolicyRevision: %v", err)
	}
	return n
}

// checkBumps fails unless the policy revision moved by want since before.
func checkBumps(t *testing.T, db *store.DB, what string, before, want int64) int64 {
	t.Helper()
	now := revision(t, db)
	if now-before != want {
		t.Errorf("%s: policy revision went from %d to %d, want +%d", what, before, now, want)
	}
	return now
}

// checkFieldErr fails unless err wraps ErrInvalid and a field error on
// field whose text contains msg.
func checkFieldErr(t *testing.T, what string, err error, field, msg string) {
	t.Helper()
	if !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("%s: error %v, want ErrInvalid", what, err)
	}
	var fe *firewall.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("%s: error %v carries no *firewall.FieldError", what, err)
	}
	if fe.Field != field || !strings.Contains(fe.Error(), msg) {
		t.Errorf("%s: field error %q (field %q), want field %q saying %q", what, fe, fe.Field, field, msg)
	}
}

// sshRule is a typical rule: allow SSH in from anywhere.
func sshRule(name string) firewall.Rule {
	return firewall.Rule{
		Name: name, Action: firewall.ActionAllow, Direction: firewall.Incoming, Protocol: "tcp",
		DestinationPortType: firewall.TypeMultiple, DestinationPortMultiple: []string{"22"},
	}
}

// normalized is r as the store keeps it.
func normalized(r firewall.Rule, id int) firewall.Rule {
	r.Normalize()
	r.ID = id
	return r
}

// ---- rules ----

func testFirewallRules(t *testing.T, db *store.DB) {
	ctx := t.Context()
	admins := createList(t, db, store.List{Kind: store.ListIP, Name: "Admin networks", Items: []string{"10.1.0.0/16", "192.0.2.7 # jump host"}})
	web := createList(t, db, store.List{Kind: store.ListPort, Name: "Web", Items: []string{"80", "443", "8000-8080"}})
	gateways := createList(t, db, store.List{Kind: store.ListMAC, Name: "Gateways", Items: []string{"00:11:22:33:44:55"}})

	fromAdmins := sshRule("SSH from admins")
	fromAdmins.SourceIPType, fromAdmins.SourceIPListID = firewall.TypeIPList, admins.ID
	webIn := firewall.Rule{
		Name: "Web in", Description: "HTTP and HTTPS", Action: firewall.ActionAllow, Direction: firewall.Incoming, Protocol: "tcp",
		DestinationPortType: firewall.TypePortList, DestinationPortListID: web.ID,
		SourceMACType: firewall.TypeMACList, SourceMACListID: gateways.ID, LogDisabled: true,
	}
	t.Run("Validation", func(t *testing.T) {
		before := revision(t, db)
		mut := func(f func(r *firewall.Rule)) firewall.Rule {
			r := sshRule("x")
			f(&r)
			return r
		}
		tests := []struct {
			name       string
			rule       firewall.Rule
			field, msg string
		}{
			{"no name", mut(func(r *firewall.Rule) { r.Name = " " }), "name", "is required"},
			{"unknown action", mut(func(r *firewall.Rule) { r.Action = "drop" }), "action", `"drop" must be allow`},
			{"allow with a priority", mut(func(r *firewall.Rule) { r.Priority = "3" }), "priority", "allow rules must have priority"},
			{"no direction", mut(func(r *firewall.Rule) { r.Direction = "" }), "direction", "must be incoming or outgoing"},
			{"schedule", mut(func(r *firewall.Rule) { r.ScheduleID = 4 }), "scheduleID", "schedules are not supported"},
			{"bad address", mut(func(r *firewall.Rule) { r.SourceIPType, r.SourceIPValue = firewall.TypeSingle, "10.0.0.300" }), "sourceIPValue", `"10.0.0.300" is not`},
			{"bad port entry", mut(func(r *firewall.Rule) { r.DestinationPortMultiple = []string{"22", "70000"} }), "destinationPortMultiple[1]", `"70000"`},
			{"ports without tcp or udp", mut(func(r *firewall.Rule) { r.Protocol = "icmp" }), "protocol", "port matches need protocol tcp"},
			{"unknown IP list", mut(func(r *firewall.Rule) { r.SourceIPType, r.SourceIPListID = firewall.TypeIPList, 999 }), "sourceIPListID", `"999" names no IP list`},
			{"IP list that is a port list", mut(func(r *firewall.Rule) { r.SourceIPType, r.SourceIPListID = firewall.TypeIPList, web.ID }),
				"sourceIPListID", fmt.Sprintf(`"%d" names a port list, not an IP list`, web.ID)},
			{"port list that is a MAC list", mut(func(r *firewall.Rule) {
				r.DestinationPortType, r.DestinationPortListID = firewall.TypePortList, gateways.ID
			}), "destinationPortListID", "names a MAC list, not a port list"},
			{"list type without a list", mut(func(r *firewall.Rule) { r.DestinationIPType = firewall.TypeIPList }), "destinationIPListID", `is required when destinationIPType is "ip-list"`},
			{"MAC list on an outgoing rule", mut(func(r *firewall.Rule) {
				r.Direction, r.SourceMACType, r.SourceMACListID = firewall.Outgoing, firewall.TypeMACList, gateways.ID
			}), "direction", "incoming traffic only"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				_, err := db.CreateRule(ctx, tc.rule)
				checkFieldErr(t, "CreateRule", err, tc.field, tc.msg)
			})
		}
		checkBumps(t, db, "refused creations", before, 0)
		if rs, _ := db.ListRules(ctx); len(rs) != 0 {
			t.Errorf("refused rules were stored: %v", rs)
		}
	})

	var ssh, webRule firewall.Rule
	t.Run("CreateGetList", func(t *testing.T) {
		before := revision(t, db)
		ssh = createRule(t, db, fromAdmins)
		webRule = createRule(t, db, webIn)
		before = checkBumps(t, db, "two creations", before, 2)
		if ssh.ID <= 0 || webRule.ID <= ssh.ID {
			t.Fatalf("IDs %d then %d, want increasing positive IDs", ssh.ID, webRule.ID)
		}
		diff(t, "created rule", ssh, normalized(fromAdmins, ssh.ID))
		got, err := db.GetRule(ctx, webRule.ID)
		checkErr(t, "GetRule", err, nil)
		diff(t, "GetRule", got, normalized(webIn, webRule.ID))
		_, err = db.GetRule(ctx, 999)
		checkErr(t, "GetRule unknown", err, store.ErrNotFound)

		all, err := db.ListRules(ctx)
		checkErr(t, "ListRules", err, nil)
		diff(t, "ListRules", all, []firewall.Rule{ssh, webRule})
		some, err := db.RulesByID(ctx, []int{webRule.ID, 999, webRule.ID, ssh.ID})
		checkErr(t, "RulesByID", err, nil)
		diff(t, "RulesByID (by ID, unknown left out)", some, []firewall.Rule{ssh, webRule})
		checkBumps(t, db, "reads", before, 0)
	})

	t.Run("Update", func(t *testing.T) {
		before := revision(t, db)
		up := webRule
		up.Name, up.Action, up.Priority = "Web in, blocked", firewall.ActionDeny, "2"
		up.DestinationPortType, up.DestinationPortListID, up.DestinationPortMultiple = firewall.TypeMultiple, 0, []string{"80"}
		got, err := db.UpdateRule(ctx, up)
		checkErr(t, "UpdateRule", err, nil)
		diff(t, "UpdateRule", got, up)
		stored, _ := db.GetRule(ctx, webRule.ID)
		diff(t, "after UpdateRule", stored, up)
		before = checkBumps(t, db, "update", before, 1)

		bad := up
		bad.DestinationPortType, bad.DestinationPortListID = firewall.TypePortList, admins.ID
		_, err = db.UpdateRule(ctx, bad)
		checkFieldErr(t, "UpdateRule with an IP list as port list", err, "destinationPortListID", "names an IP list, not a port list")
		missing := up
		missing.ID = 999
		_, err = db.UpdateRule(ctx, missing)
		checkErr(t, "UpdateRule unknown", err, store.ErrNotFound)
		checkBumps(t, db, "refused updates", before, 0)
		if stored, _ := db.GetRule(ctx, webRule.ID); !cmp.Equal(stored, up) {
			t.Errorf("a refused update changed the rule: %+v", stored)
		}
		webRule = up
		// The port list is no longer used by the rule: it can go.
		checkErr(t, "DeleteList of a list the update stopped using", db.DeleteList(ctx, store.ListPort, web.ID), nil)
	})

	t.Run("Assignments", func(t *testing.T) {
		cs := enrol(t, db, store.Computer{ID: "7f3a0c1e-web01", Hostname: "web01", EnrolledAt: base})
		p, err := db.CreatePolicy(ctx, policy.Policy{Name: "Web servers"}, base)
		checkErr(t, "CreatePolicy", err, nil)
		before := revision(t, db)
		tests := []struct {
			name      string
			kind, id  string
			rule      int
			wantErr   error
			wantBumps int64
		}{
			{"policy", store.OwnerPolicy, fmt.Sprint(p.ID), ssh.ID, nil, 1},
			{"computer", store.OwnerComputer, cs[0].ID, ssh.ID, nil, 1},
			{"same again", store.OwnerComputer, cs[0].ID, ssh.ID, nil, 1},
			{"unknown owner kind", "group", "1", ssh.ID, store.ErrInvalid, 0},
			{"policy ID not a number", store.OwnerPolicy, "web", ssh.ID, store.ErrInvalid, 0},
			{"policy ID not canonical", store.OwnerPolicy, "007", ssh.ID, store.ErrInvalid, 0},
			{"empty computer ID", store.OwnerComputer, "", ssh.ID, store.ErrInvalid, 0},
			{"unknown rule", store.OwnerComputer, cs[0].ID, 999, store.ErrNotFound, 0},
		}
		for _, tc := range tests {
			err := db.SetRuleAssignment(ctx, tc.kind, tc.id, tc.rule, true)
			checkErr(t, "SetRuleAssignment "+tc.name, err, tc.wantErr)
			before = checkBumps(t, db, "SetRuleAssignment "+tc.name, before, tc.wantBumps)
		}

		err = db.DeleteRule(ctx, ssh.ID)
		checkErr(t, "DeleteRule of an assigned rule", err, store.ErrConflict)
		want := fmt.Sprintf(`rule %d "SSH from admins" is assigned to policy %d "Web servers", computer 7f3a0c1e-web01 (web01); unassign it first`, ssh.ID, p.ID)
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("DeleteRule refusal:\n got %v\nwant %s…", err, want)
		}
		before = checkBumps(t, db, "refused delete", before, 0)

		// Unassigned by the policy only: still refused, naming the computer.
		checkErr(t, "unassign from the policy", db.SetRuleAssignment(ctx, store.OwnerPolicy, fmt.Sprint(p.ID), ssh.ID, false), nil)
		err = db.DeleteRule(ctx, ssh.ID)
		if !errors.Is(err, store.ErrConflict) || strings.Contains(err.Error(), "policy") || !strings.Contains(err.Error(), "computer 7f3a0c1e-web01 (web01)") {
			t.Errorf("DeleteRule assigned to a computer only: %v", err)
		}
		checkErr(t, "unassign from the computer", db.SetRuleAssignment(ctx, store.OwnerComputer, cs[0].ID, ssh.ID, false), nil)
		before = checkBumps(t, db, "unassignments", before, 2)

		// Rows that only remove the rule from an inheritance go with it.
		checkErr(t, "DeleteRule", db.DeleteRule(ctx, ssh.ID), nil)
		before = checkBumps(t, db, "delete", before, 1)
		_, err = db.GetRule(ctx, ssh.ID)
		checkErr(t, "GetRule after delete", err, store.ErrNotFound)
		checkErr(t, "DeleteRule again", db.DeleteRule(ctx, ssh.ID), store.ErrNotFound)
		checkBumps(t, db, "refused delete", before, 0)
		// Its list is free again.
		checkErr(t, "DeleteList after its rule went", db.DeleteList(ctx, store.ListIP, admins.ID), nil)
		checkErr(t, "DeleteRule", db.DeleteRule(ctx, webRule.ID), nil)
	})

	t.Run("FirewallSet", func(t *testing.T) { testFirewallSet(t, db) })
	t.Run("ImportExport", func(t *testing.T) { testFirewallImport(t, db) })
	t.Run("TenThousandRules", func(t *testing.T) { testFirewallSetLarge(t, db) })
}

// testFirewallSet: a set holds the rules asked for and exactly the lists
// they use, and compiles.
func testFirewallSet(t *testing.T, db *store.DB) {
	ctx := t.Context()
	ipA := createList(t, db, store.List{Kind: store.ListIP, Name: "set A", Items: []string{"10.0.0.0/8"}})
	ipB := createList(t, db, store.List{Kind: store.ListIP, Name: "set B", Items: []string{"172.16.0.0/12"}})
	unused := createList(t, db, store.List{Kind: store.ListIP, Name: "set unused", Items: []string{"192.168.0.0/16"}})
	ports := createList(t, db, store.List{Kind: store.ListPort, Name: "set ports", Items: []string{"22", "2222"}})
	macs := createList(t, db, store.List{Kind: store.ListMAC, Name: "set MACs", Items: []string{"aa-bb-cc-dd-ee-ff"}})

	r1 := sshRule("set 1")
	r1.SourceIPType, r1.SourceIPListID = firewall.TypeIPList, ipA.ID
	r1.DestinationPortType, r1.DestinationPortListID, r1.DestinationPortMultiple = firewall.TypePortList, ports.ID, nil
	r1.SourceMACType, r1.SourceMACListID = firewall.TypeMACList, macs.ID
	r2 := firewall.Rule{Name: "set 2", Action: firewall.ActionDeny, Priority: "3", Direction: firewall.Outgoing,
		DestinationIPType: firewall.TypeIPList, DestinationIPListID: ipB.ID}
	r3 := firewall.Rule{Name: "set 3", Action: firewall.ActionDeny, Direction: firewall.Outgoing,
		DestinationIPType: firewall.TypeIPList, DestinationIPListID: unused.ID}
	r1, r2, r3 = createRule(t, db, r1), createRule(t, db, r2), createRule(t, db, r3)

	set, err := db.FirewallSet(ctx, []int{r2.ID, r1.ID, r2.ID})
	checkErr(t, "FirewallSet", err, nil)
	want := firewall.Set{
		Rules:     []firewall.Rule{r1, r2},
		IPLists:   []firewall.IPList{ipA.IPList(), ipB.IPList()},
		MACLists:  []firewall.MACList{macs.MACList()},
		PortLists: []firewall.PortList{ports.PortList()},
	}
	diff(t, "FirewallSet", set, want)
	if _, err := firewall.Compile(&set); err != nil {
		t.Errorf("the set does not compile: %v", err)
	}
	_, err = db.FirewallSet(ctx, []int{r1.ID, 99999})
	checkErr(t, "FirewallSet with an unknown rule", err, store.ErrNotFound)
	if err == nil || !strings.Contains(err.Error(), "99999") {
		t.Errorf("FirewallSet with an unknown rule: %v, want it to name 99999", err)
	}
	empty, err := db.FirewallSet(ctx, nil)
	checkErr(t, "FirewallSet of nothing", err, nil)
	diff(t, "FirewallSet of nothing", empty, firewall.Set{Rules: []firewall.Rule{}})
	for _, r := range []firewall.Rule{r1, r2, r3} {
		checkErr(t, "DeleteRule", db.DeleteRule(ctx, r.ID), nil)
	}
}

// dsExport is a Deep Security export: its own numbering, IP and port lists
// sharing IDs (each kind counts from 1), a reference to a list that is not
// in the file but in the store (storedID), and every field of a rule.
func dsExport(storedID int) store.FirewallImport {
	icmp := 8
	return store.FirewallImport{
		IPLists: []firewall.IPList{
			{ID: 1, Name: "Corporate", Description: "office ranges", Items: []string{"10.0.0.0/8", "192.0.2.0/255.255.255.0", "198.51.100.1-198.51.100.20 # VPN"}},
			{ID: 2, Name: "Monitoring", Items: []string{"203.0.113.9"}},
		},
		PortLists: []firewall.PortList{
			{ID: 1, Name: "Web", Items: []string{"80", "443"}},
		},
		MACLists: []firewall.MACList{},
		Rules: []firewall.Rule{
			{ID: 101, Name: "Web from corporate", Description: "HTTP(S) from the office", Action: firewall.ActionAllow, Priority: "0",
				Direction: firewall.Incoming, FrameType: "ip", Protocol: "tcp",
				SourceIPType: firewall.TypeIPList, SourceIPListID: 1, SourceMACType: firewall.TypeAny,
				SourcePortType: firewall.TypeAny, DestinationIPType: firewall.TypeAny, DestinationMACType: firewall.TypeAny,
				DestinationPortType: firewall.TypePortList, DestinationPortListID: 1, AnyFlags: true, AlertEnabled: true},
			{ID: 102, Name: "Ping from monitoring", Action: firewall.ActionForceAllow, Priority: "2", Direction: firewall.Incoming,
				FrameType: "ip", Protocol: "icmp", ICMPType: &icmp,
				SourceIPType: firewall.TypeIPList, SourceIPListID: 2, SourceMACType: firewall.TypeAny, SourcePortType: firewall.TypeAny,
				DestinationIPType: firewall.TypeAny, DestinationMACType: firewall.TypeAny, DestinationPortType: firewall.TypeAny, AnyFlags: true,
				IncludePacketData: true},
			{ID: 103, Name: "No outgoing to stored", Action: firewall.ActionDeny, Priority: "1", Direction: firewall.Outgoing,
				FrameType: "ip", Protocol: "any",
				SourceIPType: firewall.TypeAny, SourceMACType: firewall.TypeAny, SourcePortType: firewall.TypeAny,
				DestinationIPType: firewall.TypeIPList, DestinationIPListID: storedID, DestinationIPNot: true,
				DestinationMACType: firewall.TypeAny, DestinationPortType: firewall.TypeAny, AnyFlags: true, LogDisabled: true},
			{ID: 104, Name: "Syn scan", Action: firewall.ActionLogOnly, Priority: "4", Direction: firewall.Incoming,
				FrameType: "ip", Protocol: "tcp", TCPFlags: []string{"syn"}, TCPNot: false,
				SourceIPType: firewall.TypeAny, SourceMACType: firewall.TypeAny, SourcePortType: firewall.TypeAny,
				DestinationIPType: firewall.TypeAny, DestinationMACType: firewall.TypeAny,
				DestinationPortType: firewall.TypeMultiple, DestinationPortMultiple: []string{"1-1023"}, DestinationPortNot: true},
		},
	}
}

func testFirewallImport(t *testing.T, db *store.DB) {
	ctx := t.Context()
	stored := createList(t, db, store.List{Kind: store.ListIP, Name: "Already here", Items: []string{"100.64.0.0/10"}})
	in := dsExport(stored.ID)
	before := revision(t, db)
	res, err := db.ImportFirewall(ctx, in)
	checkErr(t, "ImportFirewall", err, nil)
	before = checkBumps(t, db, "import", before, 1)

	// IP list 1 and port list 1 of the file are different lists.
	if len(res.IPLists) != 2 || len(res.PortLists) != 1 || len(res.MACLists) != 0 || len(res.Rules) != 4 {
		t.Fatalf("import result %+v, want 2 IP lists, 1 port list and 4 rules", res)
	}
	if res.IPLists[1] == res.PortLists[1] || res.IPLists[1] == stored.ID {
		t.Errorf("IP list 1 → %d, port list 1 → %d, stored list %d: IDs must differ", res.IPLists[1], res.PortLists[1], stored.ID)
	}
	ids := []int{res.Rules[101], res.Rules[102], res.Rules[103], res.Rules[104]}
	got, err := db.ExportFirewall(ctx, ids)
	checkErr(t, "ExportFirewall", err, nil)

	// The export is the file with its IDs remapped, nothing else changed.
	want := dsExport(stored.ID)
	for i := range want.IPLists {
		want.IPLists[i].ID = res.IPLists[want.IPLists[i].ID]
	}
	want.IPLists = append([]firewall.IPList{stored.IPList()}, want.IPLists...) // by ID
	want.PortLists[0].ID = res.PortLists[1]
	want.MACLists = []firewall.MACList{}
	for i := range want.Rules {
		r := &want.Rules[i]
		r.ID = res.Rules[r.ID]
		if r.SourceIPListID != 0 {
			r.SourceIPListID = res.IPLists[r.SourceIPListID]
		}
		if r.DestinationPortListID != 0 {
			r.DestinationPortListID = res.PortLists[r.DestinationPortListID]
		}
		r.AnyFlags = r.AnyFlags || len(r.TCPFlags) == 0
	}
	diff(t, "export after import", got, want)
	checkBumps(t, db, "export", before, 0)

	// Every rule, when no IDs are given.
	all, err := db.ExportFirewall(ctx, nil)
	checkErr(t, "ExportFirewall of everything", err, nil)
	diff(t, "ExportFirewall of everything", all, got)

	// Importing the export again makes copies with new IDs.
	again, err := db.ImportFirewall(ctx, got)
	checkErr(t, "ImportFirewall of an export", err, nil)
	if again.IPLists[stored.ID] == stored.ID || len(again.Rules) != 4 {
		t.Errorf("second import %+v", again)
	}

	// Refusals change nothing and name the rule or list and the field.
	tests := []struct {
		name       string
		edit       func(in *store.FirewallImport)
		field, msg string
	}{
		{"reference to a list in neither", func(in *store.FirewallImport) { in.Rules[2].DestinationIPListID = 99999 },
			"firewallRules[2].destinationIPListID", `"99999" names no IP list in the file or the store`},
		{"reference to a file list of another kind", func(in *store.FirewallImport) {
			in.IPLists[1].ID, in.Rules[1].SourceIPListID = 77777, 77777
			in.Rules[0].DestinationPortListID = 77777
		}, "firewallRules[0].destinationPortListID", `"77777" names no port list in the file or the store`},
		{"invalid rule", func(in *store.FirewallImport) { in.Rules[3].Action = "reject" },
			"firewallRules[3].action", `"reject" must be`},
		{"invalid list entry", func(in *store.FirewallImport) { in.IPLists[1].Items = []string{"203.0.113.9", "a", "10.0.0.300"} },
			"ipLists[1].items[1]", `"a"`},
		{"duplicate list IDs", func(in *store.FirewallImport) { in.IPLists[1].ID = 1 },
			"ipLists[1].ID", "earlier IP list"},
		{"duplicate rule IDs", func(in *store.FirewallImport) { in.Rules[1].ID = 101 },
			"firewallRules[1].ID", "earlier rule"},
		{"unnamed port list", func(in *store.FirewallImport) { in.PortLists[0].Name = "" },
			"portLists[0].name", "is required"},
	}
	before = revision(t, db)
	countRules, _ := db.ListRules(ctx)
	countLists, _ := db.ListLists(ctx, "")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := dsExport(stored.ID)
			tc.edit(&in)
			_, err := db.ImportFirewall(ctx, in)
			checkFieldErr(t, "ImportFirewall", err, tc.field, tc.msg)
		})
	}
	checkBumps(t, db, "refused imports", before, 0)
	if rs, _ := db.ListRules(ctx); len(rs) != len(countRules) {
		t.Errorf("refused imports left %d rules, want %d", len(rs), len(countRules))
	}
	if ls, _ := db.ListLists(ctx, ""); len(ls) != len(countLists) {
		t.Errorf("refused imports left %d lists, want %d", len(ls), len(countLists))
	}
	// The message names the rule.
	bad := dsExport(99999)
	_, err = db.ImportFirewall(ctx, bad)
	if err == nil || !strings.Contains(err.Error(), `rule "No outgoing to stored"`) {
		t.Errorf("ImportFirewall error %v does not name the rule", err)
	}
}

// testFirewallSetLarge: a set of 10,000 rules, imported in one transaction,
// comes back whole (no timing assertion: BenchmarkFirewallSet measures).
func testFirewallSetLarge(t *testing.T, db *store.DB) {
	ctx := t.Context()
	in := largeImport(10000)
	start := time.Now()
	res, err := db.ImportFirewall(ctx, in)
	checkErr(t, "ImportFirewall of 10,000 rules", err, nil)
	t.Logf("import of %d rules: %v", len(in.Rules), time.Since(start))
	ids := make([]int, 0, len(res.Rules))
	for _, id := range res.Rules {
		ids = append(ids, id)
	}
	start = time.Now()
	set, err := db.FirewallSet(ctx, ids)
	checkErr(t, "FirewallSet of 10,000 rules", err, nil)
	t.Logf("FirewallSet of %d rules: %v", len(ids), time.Since(start))
	if len(set.Rules) != len(ids) || len(set.IPLists) != 10 || len(set.PortLists) != 10 || len(set.MACLists) != 0 {
		t.Fatalf("set of %d rules, %d IP lists, %d port lists, %d MAC lists; want %d, 10, 10, 0",
			len(set.Rules), len(set.IPLists), len(set.PortLists), len(set.MACLists), len(ids))
	}
	if _, err := firewall.Compile(&set); err != nil {
		t.Errorf("the set does not compile: %v", err)
	}
}

// largeImport makes n rules using 10 IP lists and 10 port lists.
func largeImport(n int) store.FirewallImport {
	var in store.FirewallImport
	for i := range 10 {
		in.IPLists = append(in.IPLists, firewall.IPList{ID: i + 1, Name: fmt.Sprintf("net %d", i), Items: []string{fmt.Sprintf("10.%d.0.0/16", i)}})
		in.PortLists = append(in.PortLists, firewall.PortList{ID: i + 1, Name: fmt.Sprintf("ports %d", i), Items: []string{fmt.Sprint(1000 + i)}})
	}
	for i := range n {
		r := firewall.Rule{ID: i + 1, Name: fmt.Sprintf("rule %d", i), Action: firewall.ActionDeny, Priority: "2", Direction: firewall.Incoming, Protocol: "tcp"}
		switch i % 3 {
		case 0:
			r.SourceIPType, r.SourceIPListID = firewall.TypeIPList, i%10+1
		case 1:
			r.DestinationPortType, r.DestinationPortListID = firewall.TypePortList, i%10+1
		default:
			r.SourceIPType, r.SourceIPValue = firewall.TypeSingle, fmt.Sprintf("192.0.2.%d", i%250+1)
		}
		in.Rules = append(in.Rules, r)
	}
	return in
}

// BenchFirewallSet measures FirewallSet over 10,000 rules.
func BenchFirewallSet(b *testing.B, db *store.DB) {
	res, err := db.ImportFirewall(b.Context(), largeImport(10000))
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]int, 0, len(res.Rules))
	for _, id := range res.Rules {
		ids = append(ids, id)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := db.FirewallSet(b.Context(), ids); err != nil {
			b.Fatal(err)
		}
	}
}

// ---- lists ----

func testFirewallLists(t *testing.T, db *store.DB) {
	ctx := t.Context()
	t.Run("Validation", func(t *testing.T) {
		before := revision(t, db)
		tests := []struct {
			name       string
			list       store.List
			field, msg string
		}{
			{"unknown kind", store.List{Kind: "vlan", Name: "x"}, "kind", `"vlan" must be ip, mac or port`},
			{"no name", store.List{Kind: store.ListIP, Name: "  "}, "name", "is required"},
			{"long name", store.List{Kind: store.ListIP, Name: strings.Repeat("n", 256)}, "name", "longer than 255"},
			{"bad address", store.List{Kind: store.ListIP, Name: "x", Items: []string{"10.0.0.1", "# comment", "", "10.0.0.300"}}, "items[3]", `"10.0.0.300"`},
			{"bad range", store.List{Kind: store.ListIP, Name: "x", Items: []string{"10.0.0.9-10.0.0.1"}}, "items[0]", `"10.0.0.9-10.0.0.1"`},
			{"bad MAC", store.List{Kind: store.ListMAC, Name: "x", Items: []string{"00:11:22:33:44"}}, "items[0]", "is not a MAC address"},
			{"bad port", store.List{Kind: store.ListPort, Name: "x", Items: []string{"22", "65536"}}, "items[1]", `"65536"`},
			{"address in a port list", store.List{Kind: store.ListPort, Name: "x", Items: []string{"10.0.0.1"}}, "items[0]", `"10.0.0.1"`},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				_, err := db.CreateList(ctx, tc.list)
				checkFieldErr(t, "CreateList", err, tc.field, tc.msg)
			})
		}
		checkBumps(t, db, "refused creations", before, 0)
	})

	before := revision(t, db)
	ip := createList(t, db, store.List{Kind: store.ListIP, Name: " Servers ", Description: "DMZ", Items: []string{"192.0.2.0/24", "2001:db8::/32", "198.51.100.1-198.51.100.9 # lab"}})
	mac := createList(t, db, store.List{Kind: store.ListMAC, Name: "Routers", Items: []string{"00:11:22:33:44:55", "00-11-22-33-44-66"}})
	port := createList(t, db, store.List{Kind: store.ListPort, Name: "Empty"})
	before = checkBumps(t, db, "three creations", before, 3)
	if ip.Name != "Servers" || port.Items == nil || !(ip.ID < mac.ID && mac.ID < port.ID) {
		t.Errorf("created lists %+v %+v %+v: want trimmed names, non-nil items, increasing IDs in one ID space", ip, mac, port)
	}

	t.Run("Read", func(t *testing.T) {
		got, err := db.GetList(ctx, store.ListIP, ip.ID)
		checkErr(t, "GetList", err, nil)
		diff(t, "GetList", got, ip)
		got, err = db.GetList(ctx, "", mac.ID)
		checkErr(t, "GetList of any kind", err, nil)
		diff(t, "GetList of any kind", got, mac)
		_, err = db.GetList(ctx, store.ListPort, ip.ID)
		checkErr(t, "GetList of another kind", err, store.ErrNotFound)
		_, err = db.GetList(ctx, store.ListIP, 999)
		checkErr(t, "GetList unknown", err, store.ErrNotFound)

		for _, tc := range []struct {
			kind store.ListKind
			want []store.List
		}{
			{"", []store.List{ip, mac, port}},
			{store.ListIP, []store.List{ip}},
			{store.ListMAC, []store.List{mac}},
			{store.ListPort, []store.List{port}},
		} {
			got, err := db.ListLists(ctx, tc.kind)
			checkErr(t, "ListLists", err, nil)
			diff(t, fmt.Sprintf("ListLists(%q)", tc.kind), got, tc.want)
		}
		got2, err := db.ListsByID(ctx, []int{port.ID, 999, ip.ID, port.ID})
		checkErr(t, "ListsByID", err, nil)
		diff(t, "ListsByID", got2, []store.List{ip, port})

		diff(t, "IPList", ip.IPList(), firewall.IPList{ID: ip.ID, Name: "Servers", Description: "DMZ", Items: ip.Items})
		diff(t, "MACList", mac.MACList(), firewall.MACList{ID: mac.ID, Name: "Routers", Items: mac.Items})
		diff(t, "PortList", port.PortList(), firewall.PortList{ID: port.ID, Name: "Empty", Items: []string{}})
	})

	t.Run("Update", func(t *testing.T) {
		before := revision(t, db)
		up := port
		up.Name, up.Description, up.Items = "Mail", "SMTP and IMAP", []string{"25", "587", "993"}
		got, err := db.UpdateList(ctx, up)
		checkErr(t, "UpdateList", err, nil)
		diff(t, "UpdateList", got, up)
		stored, _ := db.GetList(ctx, store.ListPort, port.ID)
		diff(t, "after UpdateList", stored, up)
		before = checkBumps(t, db, "update", before, 1)

		wrongKind := up
		wrongKind.Kind = store.ListIP
		wrongKind.Items = []string{"10.0.0.1"}
		_, err = db.UpdateList(ctx, wrongKind)
		checkErr(t, "UpdateList of another kind", err, store.ErrNotFound)
		bad := up
		bad.Items = []string{"25", "smtp"}
		_, err = db.UpdateList(ctx, bad)
		checkFieldErr(t, "UpdateList with a bad entry", err, "items[1]", `"smtp"`)
		checkBumps(t, db, "refused updates", before, 0)
		port = up
	})

	t.Run("Delete", func(t *testing.T) {
		r1 := sshRule("Mail from servers")
		r1.SourceIPType, r1.SourceIPListID = firewall.TypeIPList, ip.ID
		r1.DestinationPortType, r1.DestinationPortListID, r1.DestinationPortMultiple = firewall.TypePortList, port.ID, nil
		r2 := firewall.Rule{Name: "Block servers", Action: firewall.ActionDeny, Direction: firewall.Outgoing,
			DestinationIPType: firewall.TypeIPList, DestinationIPListID: ip.ID}
		r1, r2 = createRule(t, db, r1), createRule(t, db, r2)
		before := revision(t, db)

		err := db.DeleteList(ctx, store.ListIP, ip.ID)
		checkErr(t, "DeleteList in use", err, store.ErrConflict)
		want := fmt.Sprintf(`IP list %d "Servers" is used by rule %d "Mail from servers", rule %d "Block servers"; change or delete those rules first`, ip.ID, r1.ID, r2.ID)
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("DeleteList refusal:\n got %v\nwant %s…", err, want)
		}
		checkErr(t, "DeleteList of another kind", db.DeleteList(ctx, store.ListMAC, ip.ID), store.ErrNotFound)
		before = checkBumps(t, db, "refused deletes", before, 0)

		checkErr(t, "DeleteRule", db.DeleteRule(ctx, r2.ID), nil)
		err = db.DeleteList(ctx, store.ListIP, ip.ID)
		if !errors.Is(err, store.ErrConflict) || strings.Contains(err.Error(), "Block servers") {
			t.Errorf("DeleteList still used by one rule: %v", err)
		}
		checkErr(t, "DeleteRule", db.DeleteRule(ctx, r1.ID), nil)
		before = checkBumps(t, db, "rule deletes", before, 2)
		for _, l := range []store.List{ip, mac, port} {
			checkErr(t, "DeleteList "+l.Name, db.DeleteList(ctx, l.Kind, l.ID), nil)
		}
		checkBumps(t, db, "list deletes", before, 3)
		checkErr(t, "DeleteList again", db.DeleteList(ctx, store.ListIP, ip.ID), store.ErrNotFound)
		if ls, _ := db.ListLists(ctx, ""); len(ls) != 0 {
			t.Errorf("lists left: %+v", ls)
		}
	})
}
