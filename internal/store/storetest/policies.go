package storetest

import (
	"strings"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/firewall"
	"github.com/yagura/yagura/internal/policy"
	"github.com/yagura/yagura/internal/store"
)

func testPolicies(t *testing.T, db *store.DB) {
	ctx := t.Context()
	rev := func() int64 {
		t.Helper()
		n, err := db.PolicyRevision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	r0 := rev()
	base, err := db.CreatePolicy(ctx, policy.Policy{Name: "Base", Settings: map[string]string{policy.KeyFirewallEnabled: "on"}}, base)
	if err != nil {
		t.Fatalf("CreatePolicy: %v", err)
	}
	if base.ID == 0 || base.Version != 1 {
		t.Fatalf("created policy: ID %d version %d, want an ID and version 1", base.ID, base.Version)
	}
	if rev() <= r0 {
		t.Error("creating a policy did not bump the policy revision")
	}
	web, err := db.CreatePolicy(ctx, policy.Policy{Name: "Web", ParentID: base.ID, Settings: map[string]string{policy.KeyHeartbeat: "30s"}}, base.CreatedAt)
	if err != nil {
		t.Fatalf("CreatePolicy(child): %v", err)
	}
	_, err = db.CreatePolicy(ctx, policy.Policy{Name: "Web"}, base.CreatedAt)
	checkErr(t, "CreatePolicy(duplicate name)", err, store.ErrConflict)
	_, err = db.CreatePolicy(ctx, policy.Policy{Name: "Orphan", ParentID: 999}, base.CreatedAt)
	checkErr(t, "CreatePolicy(unknown parent)", err, store.ErrInvalid)
	_, err = db.CreatePolicy(ctx, policy.Policy{Name: "Ghost rule", Rules: map[int]bool{4242: true}}, base.CreatedAt)
	checkErr(t, "CreatePolicy(unknown rule)", err, store.ErrInvalid)
	_, err = db.CreatePolicy(ctx, policy.Policy{Name: " "}, base.CreatedAt)
	checkErr(t, "CreatePolicy(no name)", err, store.ErrInvalid)

	got, err := db.GetPolicy(ctx, web.ID)
	if err != nil {
		t.Fatal(err)
	}
	diff(t, "GetPolicy", got, web)

	// Conditional update: the right version wins, a stale one conflicts.
	web.Settings[policy.KeyOfflineAfter] = "unlimited"
	later := base.CreatedAt.Add(time.Minute)
	upd, err := db.UpdatePolicy(ctx, web, 1, later)
	if err != nil {
		t.Fatalf("UpdatePolicy: %v", err)
	}
	if upd.Version != 2 || !upd.UpdatedAt.Equal(later) {
		t.Errorf("updated policy: version %d at %v, want 2 at %v", upd.Version, upd.UpdatedAt, later)
	}
	_, err = db.UpdatePolicy(ctx, web, 1, later)
	checkErr(t, "UpdatePolicy(stale version)", err, store.ErrConflict)
	// A cycle is refused.
	b := base
	b.ParentID = web.ID
	_, err = db.UpdatePolicy(ctx, b, 0, later)
	checkErr(t, "UpdatePolicy(cycle)", err, store.ErrInvalid)

	all, err := db.ListPolicies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].ID != base.ID || all[1].Settings[policy.KeyOfflineAfter] != "unlimited" {
		t.Errorf("ListPolicies = %+v", all)
	}

	// Computers: policy and overrides; a used policy cannot be deleted.
	c := enrol(t, db, store.Computer{ID: "pol-1", Hostname: "web01"})[0]
	got2, err := db.SetComputerPolicy(ctx, c.ID, store.ComputerPolicy{PolicyID: web.ID,
		Settings: map[string]string{policy.KeyHeartbeat: "10s"}, Communication: "bidirectional"})
	if err != nil || got2.PolicyID != web.ID || got2.Settings[policy.KeyHeartbeat] != "10s" || got2.Communication != "bidirectional" {
		t.Fatalf("SetComputerPolicy = policy %d, settings %v, communication %q, %v", got2.PolicyID, got2.Settings, got2.Communication, err)
	}
	_, err = db.SetComputerPolicy(ctx, c.ID, store.ComputerPolicy{PolicyID: 999})
	checkErr(t, "SetComputerPolicy(unknown policy)", err, store.ErrInvalid)
	_, err = db.SetComputerPolicy(ctx, c.ID, store.ComputerPolicy{PolicyID: base.ID, Rules: map[int]bool{4242: true}})
	checkErr(t, "SetComputerPolicy(unknown rule)", err, store.ErrInvalid)
	if got := getComputer(t, db, c.ID); got.PolicyID != web.ID || got.Settings[policy.KeyHeartbeat] != "10s" {
		t.Errorf("a refused SetComputerPolicy changed the computer: policy %d, settings %v", got.PolicyID, got.Settings)
	}
	_, err = db.SetComputerPolicy(ctx, "nobody", store.ComputerPolicy{PolicyID: web.ID})
	checkErr(t, "SetComputerPolicy(unknown computer)", err, store.ErrNotFound)
	err = db.DeletePolicy(ctx, base.ID)
	checkErr(t, "DeletePolicy(has a child)", err, store.ErrConflict)
	if err != nil && !strings.Contains(err.Error(), `policy 2 "Web"`) {
		t.Errorf("DeletePolicy error %q should name the child policy", err)
	}
	err = db.DeletePolicy(ctx, web.ID)
	checkErr(t, "DeletePolicy(has a computer)", err, store.ErrConflict)
	if err != nil && !strings.Contains(err.Error(), "web01") {
		t.Errorf("DeletePolicy error %q should name the computer", err)
	}
	if _, err := db.SetComputerPolicy(ctx, c.ID, store.ComputerPolicy{}); err != nil {
		t.Fatal(err)
	}
	if err := db.DeletePolicy(ctx, web.ID); err != nil {
		t.Fatalf("DeletePolicy(unused): %v", err)
	}
	checkErr(t, "GetPolicy(deleted)", func() error { _, err := db.GetPolicy(ctx, web.ID); return err }(), store.ErrNotFound)

	// Isolation state.
	if err := db.SetComputerIsolation(ctx, c.ID, "isolated"); err != nil {
		t.Fatal(err)
	}
	if got := getComputer(t, db, c.ID); got.Isolation != "isolated" {
		t.Errorf("isolation = %q", got.Isolation)
	}

	// Documents by fingerprint.
	if err := db.SavePolicyDocument(ctx, "fp1", []byte(`{"v":1}`), base.CreatedAt); err != nil {
		t.Fatal(err)
	}
	if err := db.SavePolicyDocument(ctx, "fp1", []byte(`{"v":1}`), base.CreatedAt); err != nil {
		t.Fatalf("saving a document twice: %v", err)
	}
	if b, err := db.PolicyDocument(ctx, "fp1"); err != nil || string(b) != `{"v":1}` {
		t.Errorf("PolicyDocument = %q, %v", b, err)
	}
	_, err = db.PolicyDocument(ctx, "nope")
	checkErr(t, "PolicyDocument(unknown)", err, store.ErrNotFound)
	_ = db.SavePolicyDocument(ctx, "fp2", []byte(`{}`), base.CreatedAt)
	n, err := db.PrunePolicyDocuments(ctx, base.CreatedAt.Add(time.Second), []string{"fp2"})
	if err != nil || n != 1 {
		t.Errorf("PrunePolicyDocuments = %d, %v; want 1", n, err)
	}
	if _, err := db.PolicyDocument(ctx, "fp2"); err != nil {
		t.Errorf("a kept document was pruned: %v", err)
	}
}

// testIDsNotReused: an ID is never handed out twice, even after the
// highest one is deleted, so events naming rule 12 never meet another 12.
func testIDsNotReused(t *testing.T, db *store.DB) {
	ctx := t.Context()
	rule := firewall.Rule{Name: "r", Action: firewall.ActionDeny, Priority: "1", Direction: firewall.Incoming}
	a, err := db.CreateRule(ctx, rule)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteRule(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	b, err := db.CreateRule(ctx, rule)
	if err != nil {
		t.Fatal(err)
	}
	if b.ID <= a.ID {
		t.Errorf("after deleting rule %d the next rule got ID %d, want a new one", a.ID, b.ID)
	}
	p, err := db.CreatePolicy(ctx, policy.Policy{Name: "p"}, base)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.DeletePolicy(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	q, err := db.CreatePolicy(ctx, policy.Policy{Name: "p"}, base)
	if err != nil {
		t.Fatal(err)
	}
	if q.ID <= p.ID {
		t.Errorf("after deleting policy %d the next policy got ID %d", p.ID, q.ID)
	}
}
