// Package storetest is the conformance suite of the state store: every
// backend runs it unchanged, so the engines cannot drift apart. It also
// holds the shared benchmarks. Only tests may import it.
package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/yagura/yagura/internal/store"
)

// base is an arbitrary instant with microsecond precision, what the store
// keeps, so that values round-trip exactly.
var base = time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.UTC)

// Run runs the suite. open must return a new, empty, migrated store each
// time it is called, closed when the test ends.
func Run(t *testing.T, open func(t *testing.T) *store.DB) {
	tests := []struct {
		name string
		fn   func(t *testing.T, db *store.DB)
	}{
		{"Basics", testBasics},
		{"CA", testCA},
		{"CARace", testCARace},
		{"Settings", testSettings},
		{"Tokens", testTokens},
		{"TokenErrors", testTokenErrors},
		{"TimeRoundTrip", testTimeRoundTrip},
		{"Enroll", testEnroll},
		{"EnrollErrors", testEnrollErrors},
		{"EnrollDuplicateComputer", testEnrollDuplicateComputer},
		{"EnrollRace", testEnrollRace},
		{"IPsRoundTrip", testIPsRoundTrip},
		{"ListComputers", testListComputers},
		{"DeactivateComputer", testDeactivateComputer},
		{"UpdatePresence", testUpdatePresence},
		{"DurationRoundTrip", testDurationRoundTrip},
		{"SetComputerCert", testSetComputerCert},
		{"RaiseAlert", testRaiseAlert},
		{"RaiseAlertRace", testRaiseAlertRace},
		{"ClearAlert", testClearAlert},
		{"ClearOpenAlerts", testClearOpenAlerts},
		{"ListAlerts", testListAlerts},
		{"AlertSubjects", testAlertSubjects},
		{"LastAlert", testLastAlert},
		{"RaiseAlertNotify", testRaiseAlertNotify},
		{"RaiseAlertSuppressed", testRaiseAlertSuppressed},
		{"AckAlert", testAckAlert},
		{"ListAlertFilters", testListAlertFilters},
		{"AlertRules", testAlertRules},
		{"Channels", testChannels},
		{"EnqueueNotifications", testEnqueueNotifications},
		{"ClaimNotifications", testClaimNotifications},
		{"NotificationLifecycle", testNotificationLifecycle},
		{"CompleteNotifications", testCompleteNotifications},
		{"ClaimRace", testClaimRace},
		{"InvalidArguments", testInvalidArguments},
		{"Events", testEvents},
		{"EventsIdempotent", testEventsIdempotent},
		{"Jobs", testJobs},
		{"JobCancelExpire", testJobCancelExpire},
		{"Files", testFiles},
		{"ComputerCommunication", testComputerCommunication},
		{"PendingAndUninstalled", testPendingAndUninstalled},
		{"Users", testUsers},
		{"APIClients", testAPIClients},
		{"OAuthTokens", testOAuthTokens},
		{"Audit", testAudit},
		{"UpdateSettingsIfVersion", testUpdateSettingsIf},
		{"FirewallRules", testFirewallRules},
		{"FirewallLists", testFirewallLists},
		{"Policies", testPolicies},
		{"IDsNotReused", testIDsNotReused},
		{"FlowExporters", testFlowExporters},
		{"FlowProfiles", testFlowProfiles},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, open(t))
		})
	}
}

// ---- helpers ----

// checkErr fails unless err matches want (nil: no error).
func checkErr(t *testing.T, what string, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Fatalf("%s: unexpected error: %v", what, err)
	case want != nil && !errors.Is(err, want):
		t.Fatalf("%s: error %v, want %v", what, err, want)
	}
}

// checkUTC fails if v, a record struct, holds a non-zero time that is not
// in UTC: cmp compares times with Equal, which ignores the location.
func checkUTC(t *testing.T, v any) {
	t.Helper()
	rv := reflect.ValueOf(v)
	for i := range rv.NumField() {
		if tm, ok := rv.Field(i).Interface().(time.Time); ok && !tm.IsZero() && tm.Location() != time.UTC {
			t.Errorf("%T.%s = %v, not in UTC", v, rv.Type().Field(i).Name, tm)
		}
	}
}

func diff(t *testing.T, what string, got, want any) {
	t.Helper()
	if d := cmp.Diff(got, want); d != "" {
		t.Errorf("%s mismatch (-got +want):\n%s", what, d)
	}
}

func createToken(t *testing.T, db *store.DB, tok store.Token) store.Token {
	t.Helper()
	if err := db.CreateToken(t.Context(), tok); err != nil {
		t.Fatalf("CreateToken(%q): %v", tok.ID, err)
	}
	return tok
}

// tokenFor makes a token whose hash is derived from id.
func tokenFor(id string) store.Token {
	return store.Token{ID: id, Hash: "hash-" + id, CreatedAt: base}
}

func getToken(t *testing.T, db *store.DB, id string) store.Token {
	t.Helper()
	tok, err := db.GetToken(t.Context(), id)
	if err != nil {
		t.Fatalf("GetToken(%q): %v", id, err)
	}
	checkUTC(t, tok)
	return tok
}

func getComputer(t *testing.T, db *store.DB, id string) store.Computer {
	t.Helper()
	c, err := db.GetComputer(t.Context(), id)
	if err != nil {
		t.Fatalf("GetComputer(%q): %v", id, err)
	}
	checkUTC(t, c)
	return c
}

func getAlert(t *testing.T, db *store.DB, id string) store.Alert {
	t.Helper()
	a, err := db.GetAlert(t.Context(), id)
	if err != nil {
		t.Fatalf("GetAlert(%q): %v", id, err)
	}
	checkUTC(t, a)
	return a
}

// enrol enrols the computers with a fresh unlimited token and returns them
// as the store should now hold them.
func enrol(t *testing.T, db *store.DB, cs ...store.Computer) []store.Computer {
	t.Helper()
	tok := createToken(t, db, tokenFor("tok-enrol-"+cs[0].ID))
	out := make([]store.Computer, len(cs))
	for i, c := range cs {
		if _, err := db.EnrollComputer(t.Context(), tok.Hash, base, c); err != nil {
			t.Fatalf("EnrollComputer(%q): %v", c.ID, err)
		}
		c.State, c.TokenID, c.DeactivatedAt = store.ComputerActive, tok.ID, time.Time{}
		if c.EnrolledAt.IsZero() {
			c.EnrolledAt = base
		}
		out[i] = c
	}
	return out
}

func ptr[T any](v T) *T { return &v }

// opened is a as RaiseAlert stores it when it raises it.
func opened(a store.Alert) store.Alert {
	a.Occurrences, a.LastAt = 1, a.RaisedAt
	a.AckedAt, a.AckedBy, a.ClearedAt, a.ClearedBy = time.Time{}, "", time.Time{}, ""
	return a
}

// ---- tests ----

func testBasics(t *testing.T, db *store.DB) {
	if err := db.Ping(t.Context()); err != nil {
		t.Errorf("Ping: %v", err)
	}
	if n := db.DialectName(); n != "sqlite" && n != "postgres" {
		t.Errorf("DialectName() = %q, want sqlite or postgres", n)
	}
}

func testCA(t *testing.T, db *store.DB) {
	ctx := t.Context()
	_, err := db.LoadCA(ctx)
	checkErr(t, "LoadCA on an empty store", err, store.ErrNotFound)

	ca := store.CA{
		CertPEM:   "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
		KeyPEM:    "-----BEGIN PRIVATE KEY-----\nMC4C\n-----END PRIVATE KEY-----\n",
		CreatedAt: base,
	}
	checkErr(t, "SaveCA", db.SaveCA(ctx, ca), nil)
	got, err := db.LoadCA(ctx)
	checkErr(t, "LoadCA", err, nil)
	checkUTC(t, got)
	diff(t, "CA", got, ca)

	other := ca
	other.CertPEM, other.CreatedAt = "other", base.Add(time.Hour)
	checkErr(t, "second SaveCA", db.SaveCA(ctx, other), store.ErrConflict)
	got, err = db.LoadCA(ctx)
	checkErr(t, "LoadCA after a refused SaveCA", err, nil)
	diff(t, "CA after a refused SaveCA", got, ca)
}

// testCARace: manager nodes starting together each generate a CA; exactly
// one must be kept.
func testCARace(t *testing.T, db *store.DB) {
	const n = 10
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = db.SaveCA(t.Context(), store.CA{CertPEM: fmt.Sprint("cert-", i), KeyPEM: "key", CreatedAt: base})
		})
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("SaveCA %d and %d both succeeded", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, store.ErrConflict):
			t.Errorf("SaveCA %d: %v, want ErrConflict", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no SaveCA succeeded")
	}
	got, err := db.LoadCA(t.Context())
	checkErr(t, "LoadCA", err, nil)
	if want := fmt.Sprint("cert-", winner); got.CertPEM != want {
		t.Errorf("LoadCA().CertPEM = %q, want the winner's %q", got.CertPEM, want)
	}
}

func testSettings(t *testing.T, db *store.DB) {
	ctx := t.Context()
	got, err := db.Settings(ctx)
	checkErr(t, "Settings on an empty store", err, nil)
	if got == nil || len(got) != 0 {
		t.Errorf("Settings() on an empty store = %#v, want an empty non-nil map", got)
	}
	checkErr(t, "PutSettings(nil)", db.PutSettings(ctx, nil), nil)

	first := map[string]string{
		"alerts.offline_after": `"5m"`,
		"retention":            `{"days":30}`,
		"motd":                 "こんにちは\n\"quoted\" \\ and ?",
		"empty":                "",
	}
	checkErr(t, "PutSettings", db.PutSettings(ctx, first), nil)
	got, err = db.Settings(ctx)
	checkErr(t, "Settings", err, nil)
	diff(t, "settings", got, first)

	checkErr(t, "PutSettings update", db.PutSettings(ctx, map[string]string{"retention": `{"days":7}`, "new": "1"}), nil)
	got, err = db.Settings(ctx)
	checkErr(t, "Settings after update", err, nil)
	diff(t, "settings after update", got, map[string]string{
		"alerts.offline_after": `"5m"`,
		"retention":            `{"days":7}`,
		"motd":                 "こんにちは\n\"quoted\" \\ and ?",
		"empty":                "",
		"new":                  "1",
	})

	// All or nothing: the invalid key aborts the whole batch.
	err = db.PutSettings(ctx, map[string]string{"": "x", "retention": "lost"})
	checkErr(t, "PutSettings with an empty key", err, store.ErrInvalid)
	got, _ = db.Settings(ctx)
	if got["retention"] != `{"days":7}` {
		t.Errorf("a refused PutSettings changed retention to %q", got["retention"])
	}
}

func testTokens(t *testing.T, db *store.DB) {
	ctx := t.Context()
	toks, err := db.ListTokens(ctx)
	checkErr(t, "ListTokens on an empty store", err, nil)
	if len(toks) != 0 {
		t.Errorf("ListTokens() on an empty store = %v", toks)
	}

	// Created out of order; ties on CreatedAt break by ID.
	older := createToken(t, db, store.Token{ID: "t-old", Hash: "h1", Description: "older", CreatedAt: base.Add(-time.Hour), MaxUses: 3})
	tieB := createToken(t, db, store.Token{ID: "t-b", Hash: "h2", CreatedAt: base, ExpiresAt: base.Add(24 * time.Hour)})
	newest := createToken(t, db, store.Token{ID: "t-new", Hash: "h3", CreatedAt: base.Add(time.Hour)})
	tieA := createToken(t, db, store.Token{ID: "t-a", Hash: "h4", CreatedAt: base, Uses: 2, MaxUses: 2})
	// Byte order, not a linguistic one: "T" < "t" in every engine.
	tieUpper := createToken(t, db, store.Token{ID: "T-z", Hash: "h5", CreatedAt: base})

	diff(t, "GetToken", getToken(t, db, "t-old"), older)
	toks, err = db.ListTokens(ctx)
	checkErr(t, "ListTokens", err, nil)
	diff(t, "ListTokens", toks, []store.Token{newest, tieUpper, tieA, tieB, older})

	_, err = db.GetToken(ctx, "missing")
	checkErr(t, "GetToken(missing)", err, store.ErrNotFound)

	revoked, err := db.RevokeToken(ctx, "t-b", base.Add(time.Minute))
	checkErr(t, "RevokeToken", err, nil)
	want := tieB
	want.RevokedAt = base.Add(time.Minute)
	checkUTC(t, revoked)
	diff(t, "RevokeToken result", revoked, want)
	diff(t, "revoked token", getToken(t, db, "t-b"), want)

	_, err = db.RevokeToken(ctx, "t-b", base.Add(2*time.Minute))
	checkErr(t, "second RevokeToken", err, store.ErrConflict)
	diff(t, "token after a second RevokeToken", getToken(t, db, "t-b"), want)
	_, err = db.RevokeToken(ctx, "missing", base)
	checkErr(t, "RevokeToken(missing)", err, store.ErrNotFound)
}

func testTokenErrors(t *testing.T, db *store.DB) {
	createToken(t, db, store.Token{ID: "taken", Hash: "taken-hash", CreatedAt: base})
	tests := []struct {
		name string
		tok  store.Token
		want error
	}{
		{"duplicate ID", store.Token{ID: "taken", Hash: "other-hash", CreatedAt: base}, store.ErrConflict},
		{"duplicate hash", store.Token{ID: "other", Hash: "taken-hash", CreatedAt: base}, store.ErrConflict},
		{"empty ID", store.Token{Hash: "h", CreatedAt: base}, store.ErrInvalid},
		{"empty hash", store.Token{ID: "no-hash", CreatedAt: base}, store.ErrInvalid},
		{"negative max uses", store.Token{ID: "neg", Hash: "neg", MaxUses: -1}, store.ErrInvalid},
		{"unicode ID", store.Token{ID: "トークン", Hash: "jp", CreatedAt: base}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkErr(t, "CreateToken", db.CreateToken(t.Context(), tt.tok), tt.want)
		})
	}
	toks, err := db.ListTokens(t.Context())
	checkErr(t, "ListTokens", err, nil)
	if len(toks) != 2 {
		t.Errorf("ListTokens() has %d tokens, want 2 (the refused ones must not be stored): %v", len(toks), toks)
	}
}

// testTimeRoundTrip: times are kept as UTC microseconds, zero as NULL.
func testTimeRoundTrip(t *testing.T, db *store.DB) {
	tokyo := time.FixedZone("JST", 9*60*60)
	now := time.Now() // carries a monotonic reading
	tests := []struct {
		name    string
		in, out time.Time
	}{
		{"zero", time.Time{}, time.Time{}},
		{"UTC microseconds", base, base},
		{"other zone", base.In(tokyo), base},
		{"nanoseconds truncated", base.Add(999 * time.Nanosecond), base},
		{"monotonic reading", now, now.Round(0).Truncate(time.Microsecond)},
		{"before 1970", time.Date(1969, 7, 20, 20, 17, 40, 123456000, time.UTC), time.Date(1969, 7, 20, 20, 17, 40, 123456000, time.UTC)},
		{"epoch", time.Unix(0, 0), time.Unix(0, 0).UTC()},
		{"far future", time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC)},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprint("time-", i)
			createToken(t, db, store.Token{ID: id, Hash: id, CreatedAt: tt.in, ExpiresAt: tt.in})
			got := getToken(t, db, id) // checks UTC
			for _, f := range []struct {
				name string
				got  time.Time
			}{{"CreatedAt", got.CreatedAt}, {"ExpiresAt", got.ExpiresAt}} {
				if !f.got.Equal(tt.out) || f.got.IsZero() != tt.out.IsZero() {
					t.Errorf("%s = %v, want %v", f.name, f.got, tt.out)
				}
			}
		})
	}
}

func testEnroll(t *testing.T, db *store.DB) {
	ctx := t.Context()
	tok := createToken(t, db, store.Token{ID: "tok", Hash: "secret-hash", CreatedAt: base, ExpiresAt: base.Add(time.Hour), MaxUses: 3, Uses: 1})
	now := base.Add(time.Minute)
	in := store.Computer{
		ID: "c1", Hostname: "web-1", OS: "linux", OSVersion: "Debian 12", AgentVersion: "1.2.3",
		IPs: []string{"192.0.2.10", "2001:db8::10"},
		// Ignored: the store decides these.
		State: store.ComputerDeactivated, TokenID: "forged", DeactivatedAt: base,
		CertSerial: "0a1b", CertNotAfter: base.Add(90 * 24 * time.Hour),
	}
	got, err := db.EnrollComputer(ctx, "secret-hash", now, in)
	checkErr(t, "EnrollComputer", err, nil)
	wantTok := tok
	wantTok.Uses = 2
	checkUTC(t, got)
	diff(t, "EnrollComputer token", got, wantTok)
	diff(t, "stored token", getToken(t, db, "tok"), wantTok)

	want := in
	want.State, want.TokenID, want.DeactivatedAt, want.EnrolledAt = store.ComputerActive, "tok", time.Time{}, now
	diff(t, "enrolled computer", getComputer(t, db, "c1"), want)

	// An explicit EnrolledAt is kept.
	in2 := store.Computer{ID: "c2", Hostname: "web-2", EnrolledAt: base.Add(-time.Hour)}
	_, err = db.EnrollComputer(ctx, "secret-hash", now, in2)
	checkErr(t, "EnrollComputer with EnrolledAt", err, nil)
	if c := getComputer(t, db, "c2"); !c.EnrolledAt.Equal(in2.EnrolledAt) {
		t.Errorf("EnrolledAt = %v, want %v", c.EnrolledAt, in2.EnrolledAt)
	}
	// That was the last use.
	_, err = db.EnrollComputer(ctx, "secret-hash", now, store.Computer{ID: "c3"})
	checkErr(t, "EnrollComputer beyond MaxUses", err, store.ErrTokenUsedUp)

	_, err = db.GetComputer(ctx, "missing")
	checkErr(t, "GetComputer(missing)", err, store.ErrNotFound)
}

func testEnrollErrors(t *testing.T, db *store.DB) {
	now := base
	tests := []struct {
		name string
		tok  store.Token
		want error
	}{
		{"unlimited", store.Token{}, nil},
		{"expires later", store.Token{ExpiresAt: now.Add(time.Microsecond)}, nil},
		{"one use left", store.Token{MaxUses: 2, Uses: 1}, nil},
		{"revoked", store.Token{RevokedAt: now.Add(-time.Hour)}, store.ErrTokenRevoked},
		// Revoked "in the future" is still revoked: revocation is a fact.
		{"revoked later", store.Token{RevokedAt: now.Add(time.Hour)}, store.ErrTokenRevoked},
		{"expires now", store.Token{ExpiresAt: now}, store.ErrTokenExpired},
		{"expired", store.Token{ExpiresAt: now.Add(-time.Hour)}, store.ErrTokenExpired},
		{"used up", store.Token{MaxUses: 2, Uses: 2}, store.ErrTokenUsedUp},
		{"revoked, expired and used up", store.Token{RevokedAt: now, ExpiresAt: now, MaxUses: 1, Uses: 1}, store.ErrTokenRevoked},
		{"expired and used up", store.Token{ExpiresAt: now, MaxUses: 1, Uses: 1}, store.ErrTokenExpired},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			tok := tt.tok
			tok.ID, tok.Hash, tok.CreatedAt = fmt.Sprint("tok-", i), fmt.Sprint("hash-", i), base.Add(-24*time.Hour)
			createToken(t, db, tok)
			cid := fmt.Sprint("computer-", i)
			got, err := db.EnrollComputer(ctx, tok.Hash, now, store.Computer{ID: cid})
			checkErr(t, "EnrollComputer", err, tt.want)
			if tt.want != nil {
				diff(t, "token after a refused enrolment", getToken(t, db, tok.ID), tok)
				_, err := db.GetComputer(ctx, cid)
				checkErr(t, "GetComputer after a refused enrolment", err, store.ErrNotFound)
				return
			}
			tok.Uses++
			diff(t, "EnrollComputer token", got, tok)
			diff(t, "stored token", getToken(t, db, tok.ID), tok)
		})
	}
	t.Run("unknown token", func(t *testing.T) {
		_, err := db.EnrollComputer(t.Context(), "no-such-hash", now, store.Computer{ID: "stray"})
		checkErr(t, "EnrollComputer", err, store.ErrTokenUnknown)
		_, err = db.GetComputer(t.Context(), "stray")
		checkErr(t, "GetComputer", err, store.ErrNotFound)
	})
}

func testEnrollDuplicateComputer(t *testing.T, db *store.DB) {
	ctx := t.Context()
	createToken(t, db, store.Token{ID: "tok", Hash: "h", CreatedAt: base, MaxUses: 5})
	_, err := db.EnrollComputer(ctx, "h", base, store.Computer{ID: "c1", Hostname: "first"})
	checkErr(t, "EnrollComputer", err, nil)
	_, err = db.EnrollComputer(ctx, "h", base, store.Computer{ID: "c1", Hostname: "second"})
	checkErr(t, "EnrollComputer with a taken ID", err, store.ErrConflict)
	if tok := getToken(t, db, "tok"); tok.Uses != 1 {
		t.Errorf("Uses = %d after a refused enrolment, want 1: the use must not be spent", tok.Uses)
	}
	if c := getComputer(t, db, "c1"); c.Hostname != "first" {
		t.Errorf("Hostname = %q, want the first enrolment's", c.Hostname)
	}
}

// testEnrollRace: concurrent enrolments, on one node or several, never
// spend more than MaxUses.
func testEnrollRace(t *testing.T, db *store.DB) {
	const workers, maxUses = 20, 5
	createToken(t, db, store.Token{ID: "tok", Hash: "h", CreatedAt: base, MaxUses: maxUses})
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			_, errs[i] = db.EnrollComputer(t.Context(), "h", base, store.Computer{ID: fmt.Sprint("c", i)})
		})
	}
	wg.Wait()
	var ok, usedUp int
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, store.ErrTokenUsedUp):
			usedUp++
		default:
			t.Errorf("enrolment %d: %v", i, err)
		}
	}
	if ok != maxUses || usedUp != workers-maxUses {
		t.Errorf("%d enrolments succeeded and %d were used up, want %d and %d", ok, usedUp, maxUses, workers-maxUses)
	}
	if tok := getToken(t, db, "tok"); tok.Uses != maxUses {
		t.Errorf("Uses = %d, want %d", tok.Uses, maxUses)
	}
	cs, err := db.ListComputers(t.Context())
	checkErr(t, "ListComputers", err, nil)
	if len(cs) != maxUses {
		t.Errorf("%d computers enrolled, want %d", len(cs), maxUses)
	}
}

func testIPsRoundTrip(t *testing.T, db *store.DB) {
	ipCases := []struct {
		name string
		in   []string
		want []string
	}{
		{"nil", nil, nil},
		{"empty reads back as nil", []string{}, nil},
		{"one IPv4", []string{"192.0.2.1"}, []string{"192.0.2.1"}},
		{"mixed", []string{"192.0.2.1", "2001:db8::1", "fe80::1%eth0"}, []string{"192.0.2.1", "2001:db8::1", "fe80::1%eth0"}},
		{"needs escaping", []string{`a"b\c`, "日本", "\x01<&>", ""}, []string{`a"b\c`, "日本", "\x01<&>", ""}},
	}
	createToken(t, db, store.Token{ID: "tok", Hash: "h", CreatedAt: base})
	for i, tt := range ipCases {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			id := fmt.Sprint("c", i)
			_, err := db.EnrollComputer(ctx, "h", base, store.Computer{ID: id, IPs: tt.in})
			checkErr(t, "EnrollComputer", err, nil)
			diff(t, "IPs after enrolment", getComputer(t, db, id).IPs, tt.want)

			// And through the heartbeat path, which encodes differently.
			checkErr(t, "UpdatePresence", db.UpdatePresence(ctx, []store.Presence{{ID: id, LastSeen: base, IPs: tt.in}}), nil)
			diff(t, "IPs after UpdatePresence", getComputer(t, db, id).IPs, tt.want)
		})
	}
}

func testListComputers(t *testing.T, db *store.DB) {
	cs, err := db.ListComputers(t.Context())
	checkErr(t, "ListComputers on an empty store", err, nil)
	if len(cs) != 0 {
		t.Errorf("ListComputers() on an empty store = %v", cs)
	}
	// Byte order on every engine, whatever the database's collation:
	// "B" < "a" and "a-b" < "ab" (a linguistic order has it the other way).
	in := enrol(t, db,
		store.Computer{ID: "x2", Hostname: "ab"},
		store.Computer{ID: "x1", Hostname: "a-b"},
		store.Computer{ID: "y", Hostname: "B"},
		store.Computer{ID: "b", Hostname: "a-b"},
		store.Computer{ID: "A", Hostname: "a-b"},
		store.Computer{ID: "z", Hostname: ""},
	)
	byID := make(map[string]store.Computer)
	for _, c := range in {
		byID[c.ID] = c
	}
	var want []store.Computer
	for _, id := range []string{"z", "y", "A", "b", "x1", "x2"} {
		want = append(want, byID[id])
	}
	cs, err = db.ListComputers(t.Context())
	checkErr(t, "ListComputers", err, nil)
	for _, c := range cs {
		checkUTC(t, c)
	}
	diff(t, "ListComputers", cs, want)
}

func testDeactivateComputer(t *testing.T, db *store.DB) {
	ctx := t.Context()
	want := enrol(t, db, store.Computer{ID: "c1", Hostname: "h"})[0]
	at := base.Add(time.Hour)
	got, err := db.DeactivateComputer(ctx, "c1", at)
	checkErr(t, "DeactivateComputer", err, nil)
	want.State, want.DeactivatedAt = store.ComputerDeactivated, at
	checkUTC(t, got)
	diff(t, "DeactivateComputer result", got, want)
	diff(t, "deactivated computer", getComputer(t, db, "c1"), want)

	_, err = db.DeactivateComputer(ctx, "c1", at.Add(time.Hour))
	checkErr(t, "second DeactivateComputer", err, store.ErrConflict)
	diff(t, "computer after a second DeactivateComputer", getComputer(t, db, "c1"), want)
	_, err = db.DeactivateComputer(ctx, "missing", at)
	checkErr(t, "DeactivateComputer(missing)", err, store.ErrNotFound)
}

func testUpdatePresence(t *testing.T, db *store.DB) {
	ctx := t.Context()
	cs := enrol(t, db,
		store.Computer{ID: "c1", Hostname: "old-1", OS: "linux", IPs: []string{"192.0.2.1"}, CertSerial: "01", CertNotAfter: base.Add(time.Hour)},
		store.Computer{ID: "c2", Hostname: "old-2"},
		store.Computer{ID: "c3", Hostname: "untouched", LastSeen: base},
	)
	checkErr(t, "UpdatePresence(nil)", db.UpdatePresence(ctx, nil), nil)
	checkErr(t, "UpdatePresence(empty)", db.UpdatePresence(ctx, []store.Presence{}), nil)

	// Out of ID order, with an unknown ID in the middle.
	batch := []store.Presence{
		{ID: "c2", LastSeen: base.Add(2 * time.Second), Hostname: "new-2", OS: "windows", OSVersion: "11", AgentVersion: "2.0", Uptime: time.Hour, ClockOffset: -1500 * time.Millisecond},
		{ID: "gone", LastSeen: base, Hostname: "ghost"},
		{ID: "c1", LastSeen: base.Add(time.Second), Hostname: "new-1", OS: "linux", OSVersion: "12", AgentVersion: "2.0", IPs: []string{"198.51.100.1", "2001:db8::1"}, Uptime: 3 * time.Minute, ClockOffset: 20 * time.Millisecond},
	}
	saved := slices.Clone(batch)
	checkErr(t, "UpdatePresence", db.UpdatePresence(ctx, batch), nil)
	diff(t, "batch after UpdatePresence (must not be modified)", batch, saved)

	apply := func(c store.Computer, p store.Presence) store.Computer {
		c.LastSeen, c.Hostname, c.OS, c.OSVersion, c.AgentVersion = p.LastSeen, p.Hostname, p.OS, p.OSVersion, p.AgentVersion
		c.IPs, c.Uptime, c.ClockOffset = p.IPs, p.Uptime, p.ClockOffset
		return c
	}
	diff(t, "c1", getComputer(t, db, "c1"), apply(cs[0], batch[2]))
	diff(t, "c2", getComputer(t, db, "c2"), apply(cs[1], batch[0]))
	diff(t, "c3", getComputer(t, db, "c3"), cs[2])
	_, err := db.GetComputer(ctx, "gone")
	checkErr(t, "GetComputer of an unknown heartbeating ID", err, store.ErrNotFound)

	// A deactivated computer keeps its state when it heartbeats.
	_, err = db.DeactivateComputer(ctx, "c3", base)
	checkErr(t, "DeactivateComputer", err, nil)
	checkErr(t, "UpdatePresence", db.UpdatePresence(ctx, []store.Presence{{ID: "c3", LastSeen: base.Add(time.Minute)}}), nil)
	if c := getComputer(t, db, "c3"); c.State != store.ComputerDeactivated || !c.LastSeen.Equal(base.Add(time.Minute)) {
		t.Errorf("after a heartbeat, c3 State = %q, LastSeen = %v", c.State, c.LastSeen)
	}
}

func testDurationRoundTrip(t *testing.T, db *store.DB) {
	enrol(t, db, store.Computer{ID: "c"})
	tests := []struct {
		name string
		d    time.Duration
	}{
		{"zero", 0},
		{"nanosecond", time.Nanosecond},
		{"negative", -1500 * time.Millisecond},
		{"400 days", 400 * 24 * time.Hour},
		{"max", time.Duration(1<<63 - 1)},
		{"min", time.Duration(-1 << 63)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := db.UpdatePresence(t.Context(), []store.Presence{{ID: "c", LastSeen: base, Uptime: tt.d, ClockOffset: tt.d}})
			checkErr(t, "UpdatePresence", err, nil)
			c := getComputer(t, db, "c")
			if c.Uptime != tt.d || c.ClockOffset != tt.d {
				t.Errorf("Uptime, ClockOffset = %v, %v, want %v", c.Uptime, c.ClockOffset, tt.d)
			}
		})
	}
}

func testSetComputerCert(t *testing.T, db *store.DB) {
	ctx := t.Context()
	want := enrol(t, db, store.Computer{ID: "c1", CertSerial: "01", CertNotAfter: base})[0]
	notAfter := base.Add(90 * 24 * time.Hour)
	checkErr(t, "SetComputerCert", db.SetComputerCert(ctx, "c1", "7f3e", notAfter), nil)
	want.CertSerial, want.CertNotAfter = "7f3e", notAfter
	diff(t, "computer", getComputer(t, db, "c1"), want)
	// The same values again still find the row.
	checkErr(t, "SetComputerCert unchanged", db.SetComputerCert(ctx, "c1", "7f3e", notAfter), nil)
	checkErr(t, "SetComputerCert(missing)", db.SetComputerCert(ctx, "missing", "01", notAfter), store.ErrNotFound)
}

func testRaiseAlert(t *testing.T, db *store.DB) {
	ctx := t.Context()
	a1 := store.Alert{ID: "a1", Type: "computer-offline", Severity: store.SeverityWarning, ComputerID: "c1", Message: "c1 is offline", RaisedAt: base}
	got, created, err := db.RaiseAlert(ctx, a1)
	checkErr(t, "RaiseAlert", err, nil)
	if !created {
		t.Error("RaiseAlert on an empty store did not create")
	}
	checkUTC(t, got)
	diff(t, "RaiseAlert result", got, opened(a1))
	diff(t, "stored alert", getAlert(t, db, "a1"), opened(a1))

	// Same type and computer while a1 is open: a1 comes back, with the
	// occurrence counted.
	dup := store.Alert{ID: "a2", Type: "computer-offline", Severity: store.SeverityCritical, ComputerID: "c1", Message: "again", RaisedAt: base.Add(time.Minute)}
	got, created, err = db.RaiseAlert(ctx, dup)
	checkErr(t, "RaiseAlert duplicate", err, nil)
	if created {
		t.Error("RaiseAlert created a second open alert of the same type and computer")
	}
	want := opened(a1)
	want.Occurrences, want.LastAt = 2, dup.RaisedAt
	diff(t, "RaiseAlert duplicate result", got, want)
	diff(t, "stored alert after a duplicate", getAlert(t, db, "a1"), want)
	_, err = db.GetAlert(ctx, "a2")
	checkErr(t, "GetAlert of the refused duplicate", err, store.ErrNotFound)

	// Another computer, another type, and the manager itself are separate.
	for _, a := range []store.Alert{
		{ID: "a3", Type: "computer-offline", Severity: store.SeverityWarning, ComputerID: "c2", RaisedAt: base},
		{ID: "a4", Type: "clock-drift", Severity: store.SeverityInfo, ComputerID: "c1", RaisedAt: base},
		{ID: "a5", Type: "computer-offline", Severity: store.SeverityWarning, RaisedAt: base},
	} {
		got, created, err := db.RaiseAlert(ctx, a)
		checkErr(t, "RaiseAlert "+a.ID, err, nil)
		if !created {
			t.Errorf("RaiseAlert(%s) did not create", a.ID)
		}
		diff(t, "RaiseAlert "+a.ID, got, opened(a))
	}
	// The manager's own alerts are unique too.
	_, created, err = db.RaiseAlert(ctx, store.Alert{ID: "a6", Type: "computer-offline", RaisedAt: base})
	checkErr(t, "RaiseAlert manager duplicate", err, nil)
	if created {
		t.Error("RaiseAlert created a second open manager alert")
	}

	// Once cleared, the same type and computer can be raised again.
	_, err = db.ClearAlert(ctx, "a1", base.Add(time.Hour), "system")
	checkErr(t, "ClearAlert", err, nil)
	again := store.Alert{ID: "a7", Type: "computer-offline", Severity: store.SeverityWarning, ComputerID: "c1", RaisedAt: base.Add(2 * time.Hour)}
	got, created, err = db.RaiseAlert(ctx, again)
	checkErr(t, "RaiseAlert after clearing", err, nil)
	if !created {
		t.Error("RaiseAlert after clearing did not create")
	}
	diff(t, "RaiseAlert after clearing", got, opened(again))

	// A taken ID is a conflict, not "already open".
	_, _, err = db.RaiseAlert(ctx, store.Alert{ID: "a1", Type: "new-type", RaisedAt: base})
	checkErr(t, "RaiseAlert with a taken ID", err, store.ErrConflict)

	// Cleared fields of the argument are ignored: a raised alert is open.
	got, _, err = db.RaiseAlert(ctx, store.Alert{ID: "a8", Type: "disk", RaisedAt: base, ClearedAt: base, ClearedBy: "x"})
	checkErr(t, "RaiseAlert with ClearedAt", err, nil)
	if !got.ClearedAt.IsZero() || got.ClearedBy != "" {
		t.Errorf("RaiseAlert returned a cleared alert: %+v", got)
	}
	_, err = db.GetAlert(ctx, "missing")
	checkErr(t, "GetAlert(missing)", err, store.ErrNotFound)
}

// testRaiseAlertRace: nodes raising the same alert at once leave exactly
// one open, and all of them learn which.
func testRaiseAlertRace(t *testing.T, db *store.DB) {
	const n = 20
	type result struct {
		a       store.Alert
		created bool
		err     error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			a, created, err := db.RaiseAlert(t.Context(), store.Alert{ID: fmt.Sprint("a", i), Type: "computer-offline", ComputerID: "c1", RaisedAt: base})
			results[i] = result{a, created, err}
		})
	}
	wg.Wait()
	var winner string
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("RaiseAlert %d: %v", i, r.err)
		}
		if r.created {
			if winner != "" {
				t.Errorf("RaiseAlert created both %s and %s", winner, r.a.ID)
			}
			winner = r.a.ID
		}
	}
	if winner == "" {
		t.Fatal("no RaiseAlert created the alert")
	}
	for i, r := range results {
		if r.a.ID != winner {
			t.Errorf("RaiseAlert %d returned %s, want the open alert %s", i, r.a.ID, winner)
		}
	}
	as, err := db.ListAlerts(t.Context(), store.AlertFilter{})
	checkErr(t, "ListAlerts", err, nil)
	if len(as) != 1 {
		t.Errorf("%d alerts stored, want 1", len(as))
	} else if as[0].Occurrences != n {
		t.Errorf("the open alert counts %d occurrences, want %d", as[0].Occurrences, n)
	}
}

func testClearAlert(t *testing.T, db *store.DB) {
	ctx := t.Context()
	a := store.Alert{ID: "a1", Type: "clock-drift", Severity: store.SeverityWarning, ComputerID: "c1", Message: "drift", RaisedAt: base}
	_, _, err := db.RaiseAlert(ctx, a)
	checkErr(t, "RaiseAlert", err, nil)
	at := base.Add(time.Hour)
	got, err := db.ClearAlert(ctx, "a1", at, "alice")
	checkErr(t, "ClearAlert", err, nil)
	a = opened(a)
	a.ClearedAt, a.ClearedBy = at, "alice"
	checkUTC(t, got)
	diff(t, "ClearAlert result", got, a)
	diff(t, "cleared alert", getAlert(t, db, "a1"), a)

	_, err = db.ClearAlert(ctx, "a1", at.Add(time.Hour), "bob")
	checkErr(t, "second ClearAlert", err, store.ErrConflict)
	diff(t, "alert after a second ClearAlert", getAlert(t, db, "a1"), a)
	_, err = db.ClearAlert(ctx, "missing", at, "alice")
	checkErr(t, "ClearAlert(missing)", err, store.ErrNotFound)
}

func testClearOpenAlerts(t *testing.T, db *store.DB) {
	ctx := t.Context()
	for _, a := range []store.Alert{
		{ID: "off-c1", Type: "computer-offline", ComputerID: "c1", RaisedAt: base},
		{ID: "drift-c1", Type: "clock-drift", ComputerID: "c1", RaisedAt: base},
		{ID: "off-c2", Type: "computer-offline", ComputerID: "c2", RaisedAt: base},
		{ID: "off-mgr", Type: "computer-offline", RaisedAt: base},
	} {
		if _, _, err := db.RaiseAlert(ctx, a); err != nil {
			t.Fatalf("RaiseAlert(%s): %v", a.ID, err)
		}
	}
	at := base.Add(time.Hour)
	tests := []struct {
		name, typ, computer string
		want                int
		cleared             []string
	}{
		{"one type", "computer-offline", "c1", 1, []string{"off-c1"}},
		{"already cleared", "computer-offline", "c1", 0, nil},
		{"no such alert", "disk-full", "c1", 0, nil},
		{"the manager's", "computer-offline", "", 1, []string{"off-mgr"}},
		{"every type", "", "c1", 1, []string{"drift-c1"}},
		{"unknown computer", "", "c9", 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := db.ClearOpenAlerts(t.Context(), tt.typ, tt.computer, at, "system")
			checkErr(t, "ClearOpenAlerts", err, nil)
			if n != tt.want {
				t.Errorf("ClearOpenAlerts(%q, %q) = %d, want %d", tt.typ, tt.computer, n, tt.want)
			}
			for _, id := range tt.cleared {
				if a := getAlert(t, db, id); !a.ClearedAt.Equal(at) || a.ClearedBy != "system" {
					t.Errorf("alert %s: ClearedAt = %v, ClearedBy = %q", id, a.ClearedAt, a.ClearedBy)
				}
			}
		})
	}
	if a := getAlert(t, db, "off-c2"); !a.ClearedAt.IsZero() {
		t.Errorf("off-c2 was cleared: %+v", a)
	}
}

func testListAlerts(t *testing.T, db *store.DB) {
	ctx := t.Context()
	as, err := db.ListAlerts(ctx, store.AlertFilter{})
	checkErr(t, "ListAlerts on an empty store", err, nil)
	if len(as) != 0 {
		t.Errorf("ListAlerts() on an empty store = %v", as)
	}
	raise := []store.Alert{
		{ID: "a", Type: "computer-offline", Severity: store.SeverityWarning, ComputerID: "c1", RaisedAt: base},
		{ID: "b", Type: "clock-drift", Severity: store.SeverityInfo, ComputerID: "c1", RaisedAt: base.Add(time.Minute)},
		{ID: "c", Type: "computer-offline", Severity: store.SeverityWarning, ComputerID: "c2", RaisedAt: base.Add(2 * time.Minute)},
		// Same instant as c: ties break by ID, in byte order.
		{ID: "C", Type: "disk-full", Severity: store.SeverityCritical, ComputerID: "c2", RaisedAt: base.Add(2 * time.Minute)},
		{ID: "d", Type: "manager-cert", Severity: store.SeverityCritical, RaisedAt: base.Add(3 * time.Minute)},
		// Cleared below, then raised again as f.
		{ID: "e", Type: "computer-offline", Severity: store.SeverityWarning, ComputerID: "c1", RaisedAt: base.Add(-time.Minute)},
	}
	byID := make(map[string]store.Alert)
	for _, a := range raise {
		if a.ID == "e" {
			// a is open: clear it first so e may be raised.
			if _, err := db.ClearAlert(ctx, "a", base.Add(time.Hour), "bob"); err != nil {
				t.Fatal(err)
			}
		}
		if _, created, err := db.RaiseAlert(ctx, a); err != nil || !created {
			t.Fatalf("RaiseAlert(%s) = %v, %v", a.ID, created, err)
		}
		byID[a.ID] = opened(a)
	}
	if _, err := db.ClearAlert(ctx, "e", base.Add(time.Hour), "bob"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "e"} {
		a := byID[id]
		a.ClearedAt, a.ClearedBy = base.Add(time.Hour), "bob"
		byID[id] = a
	}
	pick := func(ids ...string) []store.Alert {
		var out []store.Alert
		for _, id := range ids {
			out = append(out, byID[id])
		}
		return out
	}
	tests := []struct {
		name string
		f    store.AlertFilter
		want []store.Alert
	}{
		{"all", store.AlertFilter{}, pick("d", "C", "c", "b", "a", "e")},
		{"open", store.AlertFilter{Open: ptr(true)}, pick("d", "C", "c", "b")},
		{"cleared", store.AlertFilter{Open: ptr(false)}, pick("a", "e")},
		{"computer", store.AlertFilter{ComputerID: "c1"}, pick("b", "a", "e")},
		{"one type", store.AlertFilter{Types: []string{"computer-offline"}}, pick("c", "a", "e")},
		{"two types", store.AlertFilter{Types: []string{"disk-full", "manager-cert"}}, pick("d", "C")},
		{"unknown type", store.AlertFilter{Types: []string{"nope"}}, nil},
		{"limit", store.AlertFilter{Limit: 3}, pick("d", "C", "c")},
		{"limit beyond", store.AlertFilter{Limit: 100}, pick("d", "C", "c", "b", "a", "e")},
		{"combined", store.AlertFilter{Open: ptr(true), ComputerID: "c2", Types: []string{"computer-offline", "disk-full"}, Limit: 1}, pick("C")},
		{"cleared of a computer", store.AlertFilter{Open: ptr(false), ComputerID: "c1", Types: []string{"computer-offline"}}, pick("a", "e")},
		{"values are parameters", store.AlertFilter{ComputerID: "c1' OR '1'='1", Types: []string{"x') OR ('1'='1"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := db.ListAlerts(t.Context(), tt.f)
			checkErr(t, "ListAlerts", err, nil)
			for _, a := range got {
				checkUTC(t, a)
			}
			diff(t, "ListAlerts", got, tt.want)
		})
	}
	_, err = db.ListAlerts(ctx, store.AlertFilter{Limit: -1})
	checkErr(t, "ListAlerts with a negative limit", err, store.ErrInvalid)
}

// testInvalidArguments: what the store cannot record faithfully is refused
// rather than stored as something else.
func testInvalidArguments(t *testing.T, db *store.DB) {
	createToken(t, db, store.Token{ID: "tok", Hash: "h", CreatedAt: base})
	enrol(t, db, store.Computer{ID: "c1"})
	if _, _, err := db.RaiseAlert(t.Context(), store.Alert{ID: "a1", Type: "x", RaisedAt: base}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		call func() error
	}{
		{"SaveCA without PEM", func() error { return db.SaveCA(t.Context(), store.CA{CreatedAt: base}) }},
		{"RevokeToken at zero time", func() error { _, err := db.RevokeToken(t.Context(), "tok", time.Time{}); return err }},
		{"EnrollComputer without ID", func() error {
			_, err := db.EnrollComputer(t.Context(), "h", base, store.Computer{})
			return err
		}},
		{"EnrollComputer at zero time", func() error {
			_, err := db.EnrollComputer(t.Context(), "h", time.Time{}, store.Computer{ID: "c2"})
			return err
		}},
		{"DeactivateComputer at zero time", func() error { _, err := db.DeactivateComputer(t.Context(), "c1", time.Time{}); return err }},
		{"RaiseAlert without ID", func() error {
			_, _, err := db.RaiseAlert(t.Context(), store.Alert{Type: "x", RaisedAt: base})
			return err
		}},
		{"RaiseAlert without type", func() error {
			_, _, err := db.RaiseAlert(t.Context(), store.Alert{ID: "a2", RaisedAt: base})
			return err
		}},
		{"RaiseAlert at zero time", func() error {
			_, _, err := db.RaiseAlert(t.Context(), store.Alert{ID: "a2", Type: "y"})
			return err
		}},
		{"ClearAlert at zero time", func() error { _, err := db.ClearAlert(t.Context(), "a1", time.Time{}, "bob"); return err }},
		{"ClearOpenAlerts at zero time", func() error {
			_, err := db.ClearOpenAlerts(t.Context(), "x", "", time.Time{}, "bob")
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			checkErr(t, tt.name, err, store.ErrInvalid)
			if err != nil && !strings.Contains(err.Error(), ":") {
				t.Errorf("error %q does not say what failed", err)
			}
		})
	}
	// Nothing changed.
	if tok := getToken(t, db, "tok"); tok.Uses != 0 || !tok.RevokedAt.IsZero() {
		t.Errorf("token changed: %+v", tok)
	}
	if c := getComputer(t, db, "c1"); c.State != store.ComputerActive {
		t.Errorf("computer changed: %+v", c)
	}
	if a := getAlert(t, db, "a1"); !a.ClearedAt.IsZero() {
		t.Errorf("alert changed: %+v", a)
	}
}

// ---- benchmarks ----

// BenchUpdatePresence measures the heartbeat hot path: batches of 1000
// presences cycling over 10,000 enrolled computers. It reports
// presences/s; one op is one batch.
func BenchUpdatePresence(b *testing.B, db *store.DB) {
	const computers, batchSize = 10_000, 1000
	ctx := b.Context()
	if err := db.CreateToken(ctx, store.Token{ID: "bench", Hash: "bench", CreatedAt: base}); err != nil {
		b.Fatal(err)
	}
	// Seed concurrently: on PostgreSQL each enrolment is a few round trips.
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	const seeders = 8
	for w := range seeders {
		wg.Go(func() {
			for i := w; i < computers; i += seeders {
				c := store.Computer{ID: fmt.Sprintf("c%05d", i), Hostname: fmt.Sprintf("host-%05d", i), OS: "linux"}
				if _, err := db.EnrollComputer(ctx, "bench", base, c); err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	batches := make([][]store.Presence, computers/batchSize)
	for i := range batches {
		batches[i] = make([]store.Presence, batchSize)
		for j := range batches[i] {
			n := i*batchSize + j
			batches[i][j] = store.Presence{
				ID: fmt.Sprintf("c%05d", n), Hostname: fmt.Sprintf("host-%05d", n),
				OS: "linux", OSVersion: "Debian 12", AgentVersion: "1.0.0",
				IPs:    []string{fmt.Sprintf("10.0.%d.%d", n/256, n%256), "2001:db8::1"},
				Uptime: time.Hour, ClockOffset: time.Millisecond,
			}
		}
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		batch := batches[n%len(batches)]
		seen := base.Add(time.Duration(n) * time.Second)
		for i := range batch {
			batch[i].LastSeen = seen
		}
		if err := db.UpdatePresence(ctx, batch); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(n*batchSize)/b.Elapsed().Seconds(), "presences/s")
}

func testEvents(t *testing.T, db *store.DB) {
	ctx := t.Context()
	evs := []store.Event{
		{ComputerID: "c1", ID: "e1", Type: "agent-started", Severity: "info", Time: base, ReceivedAt: base.Add(time.Second), Data: `{"version":"1"}`},
		{ComputerID: "c1", ID: "e2", Type: "firewall-deny", Severity: "warning", Time: base.Add(time.Minute), ReceivedAt: base.Add(time.Minute)},
		{ComputerID: "c2", ID: "e1", Type: "firewall-deny", Severity: "warning", Time: base.Add(2 * time.Minute), ReceivedAt: base.Add(2 * time.Minute)},
	}
	n, err := db.InsertEvents(ctx, evs)
	checkErr(t, "InsertEvents", err, nil)
	if n != 3 {
		t.Fatalf("InsertEvents stored %d, want 3 (the same ID on two computers is two events)", n)
	}
	got, err := db.ListEvents(ctx, store.EventFilter{})
	checkErr(t, "ListEvents", err, nil)
	want := []store.Event{evs[2], evs[1], evs[0]}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("ListEvents, newest first (-got +want):\n%s", diff)
	}
	tests := []struct {
		name string
		f    store.EventFilter
		want []string // computer/id
	}{
		{"computer", store.EventFilter{ComputerID: "c1"}, []string{"c1/e2", "c1/e1"}},
		{"types", store.EventFilter{Types: []string{"firewall-deny"}}, []string{"c2/e1", "c1/e2"}},
		{"since", store.EventFilter{Since: base.Add(time.Minute)}, []string{"c2/e1", "c1/e2"}},
		{"until", store.EventFilter{Until: base.Add(time.Minute)}, []string{"c1/e1"}},
		{"limit", store.EventFilter{Limit: 1}, []string{"c2/e1"}},
		{"nothing", store.EventFilter{ComputerID: "c9"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := db.ListEvents(ctx, tt.f)
			checkErr(t, "ListEvents", err, nil)
			var ids []string
			for _, e := range got {
				ids = append(ids, e.ComputerID+"/"+e.ID)
			}
			if diff := cmp.Diff(ids, tt.want); diff != "" {
				t.Errorf("(-got +want):\n%s", diff)
			}
			f := tt.f
			f.Limit = 0
			if c, err := db.CountEvents(ctx, f); err != nil || (tt.f.Limit == 0 && c != len(tt.want)) {
				t.Errorf("CountEvents = %d, %v; want %d", c, err, len(tt.want))
			}
		})
	}
	_, err = db.InsertEvents(ctx, []store.Event{{ComputerID: "c1", Type: "x", Time: base}})
	checkErr(t, "InsertEvents without an ID", err, store.ErrInvalid)
}

func testEventsIdempotent(t *testing.T, db *store.DB) {
	ctx := t.Context()
	batch := make([]store.Event, 100)
	for i := range batch {
		batch[i] = store.Event{ComputerID: "c1", ID: fmt.Sprintf("e%03d", i), Type: "t", Severity: "info", Time: base, ReceivedAt: base}
	}
	if n, err := db.InsertEvents(ctx, batch[:60]); err != nil || n != 60 {
		t.Fatalf("first batch: %d, %v", n, err)
	}
	// A resent batch overlapping the first stores only what is new, and
	// concurrent resends never store an event twice.
	var wg sync.WaitGroup
	var total atomic.Int64
	for range 4 {
		wg.Go(func() {
			n, err := db.InsertEvents(ctx, batch)
			if err != nil {
				t.Error(err)
			}
			total.Add(int64(n))
		})
	}
	wg.Wait()
	if total.Load() != 40 {
		t.Errorf("resends stored %d new events, want 40", total.Load())
	}
	if c, _ := db.CountEvents(ctx, store.EventFilter{}); c != 100 {
		t.Errorf("%d events stored, want 100", c)
	}
}

func jobIDs(js []store.Job) []string {
	var out []string
	for _, j := range js {
		out = append(out, j.ID)
	}
	return out
}

func testJobs(t *testing.T, db *store.DB) {
	ctx := t.Context()
	j1 := store.Job{ID: "j1", Kind: "heartbeat-now", CreatedBy: "admin", CreatedAt: base, ExpiresAt: base.Add(time.Hour)}
	j2 := store.Job{ID: "j2", Kind: "collect-logs", Params: `{"paths":["/var/log/*.log"]}`, CreatedAt: base.Add(time.Second), ExpiresAt: base.Add(time.Hour)}
	checkErr(t, "CreateJob j1", db.CreateJob(ctx, j1, []string{"c1", "c2"}), nil)
	checkErr(t, "CreateJob j2", db.CreateJob(ctx, j2, []string{"c1"}), nil)
	checkErr(t, "CreateJob duplicate", db.CreateJob(ctx, j1, []string{"c3"}), store.ErrConflict)
	checkErr(t, "CreateJob without targets", db.CreateJob(ctx, store.Job{ID: "j3", Kind: "x", CreatedAt: base, ExpiresAt: base}, nil), store.ErrInvalid)

	got, err := db.GetJob(ctx, "j2")
	checkErr(t, "GetJob", err, nil)
	if diff := cmp.Diff(got, j2); diff != "" {
		t.Errorf("GetJob (-got +want):\n%s", diff)
	}
	_, err = db.GetJob(ctx, "nope")
	checkErr(t, "GetJob unknown", err, store.ErrNotFound)
	js, err := db.ListJobs(ctx, 0)
	checkErr(t, "ListJobs", err, nil)
	if diff := cmp.Diff(jobIDs(js), []string{"j2", "j1"}); diff != "" {
		t.Errorf("ListJobs, newest first (-got +want):\n%s", diff)
	}

	now := base.Add(time.Minute)
	un, err := db.UnfinishedJobs(ctx, "c1", now)
	checkErr(t, "UnfinishedJobs", err, nil)
	if diff := cmp.Diff(jobIDs(un), []string{"j1", "j2"}); diff != "" {
		t.Errorf("UnfinishedJobs, oldest first (-got +want):\n%s", diff)
	}
	checkErr(t, "MarkDelivered", db.MarkDelivered(ctx, "c1", []string{"j1", "j2"}, now), nil)
	ts, _ := db.JobTargets(ctx, "j1")
	if ts[0].ComputerID != "c1" || ts[0].Status != store.JobDelivered || !ts[0].DeliveredAt.Equal(now) || ts[1].Status != store.JobPending {
		t.Errorf("after delivery to c1: %+v", ts)
	}
	// Delivered but unfinished jobs are sent again (the agent dedups).
	if un, _ := db.UnfinishedJobs(ctx, "c1", now); len(un) != 2 {
		t.Errorf("delivered jobs no longer unfinished: %v", jobIDs(un))
	}

	run, err := db.UpdateJobTarget(ctx, store.JobTarget{JobID: "j1", ComputerID: "c1", Status: store.JobRunning}, now.Add(time.Second))
	checkErr(t, "running", err, nil)
	if !run.StartedAt.Equal(now.Add(time.Second)) || !run.FinishedAt.IsZero() {
		t.Errorf("running: %+v", run)
	}
	done, err := db.UpdateJobTarget(ctx, store.JobTarget{JobID: "j1", ComputerID: "c1", Status: store.JobSucceeded, Result: `{"ok":true}`}, now.Add(2*time.Second))
	checkErr(t, "succeeded", err, nil)
	if done.Result != `{"ok":true}` || !done.FinishedAt.Equal(now.Add(2*time.Second)) || !done.StartedAt.Equal(run.StartedAt) {
		t.Errorf("succeeded: %+v", done)
	}
	// A repeated report is harmless; a different one after the end is refused.
	_, err = db.UpdateJobTarget(ctx, store.JobTarget{JobID: "j1", ComputerID: "c1", Status: store.JobSucceeded, Result: `{"ok":true}`}, now.Add(3*time.Second))
	checkErr(t, "same final report again", err, nil)
	_, err = db.UpdateJobTarget(ctx, store.JobTarget{JobID: "j1", ComputerID: "c1", Status: store.JobFailed}, now.Add(3*time.Second))
	checkErr(t, "report after the end", err, store.ErrConflict)
	_, err = db.UpdateJobTarget(ctx, store.JobTarget{JobID: "j1", ComputerID: "c1", Status: store.JobCancelled}, now)
	checkErr(t, "agents cannot cancel", err, store.ErrInvalid)
	_, err = db.UpdateJobTarget(ctx, store.JobTarget{JobID: "j1", ComputerID: "c9", Status: store.JobRunning}, now)
	checkErr(t, "unknown target", err, store.ErrNotFound)
	if un, _ := db.UnfinishedJobs(ctx, "c1", now); len(un) != 1 || un[0].ID != "j2" {
		t.Errorf("after j1 finished, unfinished: %v", jobIDs(un))
	}
	cj, err := db.ComputerJobs(ctx, "c1")
	checkErr(t, "ComputerJobs", err, nil)
	if len(cj) != 2 {
		t.Errorf("ComputerJobs(c1) = %d targets, want 2", len(cj))
	}
}

func testJobCancelExpire(t *testing.T, db *store.DB) {
	ctx := t.Context()
	j := store.Job{ID: "j", Kind: "collect-logs", CreatedAt: base, ExpiresAt: base.Add(time.Hour)}
	checkErr(t, "CreateJob", db.CreateJob(ctx, j, []string{"c1", "c2", "c3"}), nil)
	db.MarkDelivered(ctx, "c2", []string{"j"}, base)
	db.UpdateJobTarget(ctx, store.JobTarget{JobID: "j", ComputerID: "c3", Status: store.JobRunning}, base)
	cancelled, err := db.CancelJob(ctx, "j", base.Add(time.Minute))
	checkErr(t, "CancelJob", err, nil)
	if !cancelled.CancelledAt.Equal(base.Add(time.Minute)) {
		t.Errorf("cancelled at %v", cancelled.CancelledAt)
	}
	_, err = db.CancelJob(ctx, "j", base.Add(time.Minute))
	checkErr(t, "CancelJob twice", err, store.ErrConflict)
	ts, _ := db.JobTargets(ctx, "j")
	got := map[string]string{}
	for _, x := range ts {
		got[x.ComputerID] = x.Status
	}
	want := map[string]string{"c1": store.JobCancelled, "c2": store.JobCancelled, "c3": store.JobRunning}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("after cancel (-got +want):\n%s", diff)
	}
	if un, _ := db.UnfinishedJobs(ctx, "c1", base); len(un) != 0 {
		t.Error("a cancelled job is still offered to a computer that had not started it")
	}
	if un, _ := db.UnfinishedJobs(ctx, "c3", base); len(un) != 1 {
		t.Error("the computer running a cancelled job no longer sees it")
	}

	e := store.Job{ID: "e", Kind: "heartbeat-now", CreatedAt: base, ExpiresAt: base.Add(time.Minute)}
	checkErr(t, "CreateJob", db.CreateJob(ctx, e, []string{"c1", "c2"}), nil)
	db.UpdateJobTarget(ctx, store.JobTarget{JobID: "e", ComputerID: "c2", Status: store.JobSucceeded}, base)
	if un, _ := db.UnfinishedJobs(ctx, "c1", base.Add(time.Minute)); len(un) != 0 {
		t.Error("an expired job is offered")
	}
	n, err := db.ExpireJobs(ctx, base.Add(2*time.Minute))
	checkErr(t, "ExpireJobs", err, nil)
	// e on c1 expires; c3's running part of the (cancelled) job j does not
	// expire before j's own expiry.
	if n != 1 {
		t.Errorf("ExpireJobs = %d, want 1", n)
	}
	ts, _ = db.JobTargets(ctx, "e")
	if ts[0].Status != store.JobExpired || ts[1].Status != store.JobSucceeded {
		t.Errorf("after expiry: %+v", ts)
	}
}

func testFiles(t *testing.T, db *store.DB) {
	ctx := t.Context()
	f := store.File{ID: "f1", JobID: "j", ComputerID: "c1", Name: "logs.zip", Size: 1000, SHA256: strings.Repeat("ab", 32), CreatedAt: base}
	checkErr(t, "CreateFile", db.CreateFile(ctx, f), nil)
	checkErr(t, "CreateFile twice", db.CreateFile(ctx, f), store.ErrConflict)
	checkErr(t, "CreateFile bad hash", db.CreateFile(ctx, store.File{ID: "f2", JobID: "j", ComputerID: "c", SHA256: "x"}), store.ErrInvalid)
	checkErr(t, "progress", db.SetFileReceived(ctx, "f1", 500, time.Time{}), nil)
	got, err := db.GetFile(ctx, "f1")
	checkErr(t, "GetFile", err, nil)
	if got.Received != 500 || !got.CompleteAt.IsZero() {
		t.Errorf("after progress: %+v", got)
	}
	checkErr(t, "complete", db.SetFileReceived(ctx, "f1", 1000, base.Add(time.Second)), nil)
	got, _ = db.GetFile(ctx, "f1")
	f.Received, f.CompleteAt = 1000, base.Add(time.Second)
	if diff := cmp.Diff(got, f); diff != "" {
		t.Errorf("GetFile (-got +want):\n%s", diff)
	}
	checkErr(t, "SetFileReceived unknown", db.SetFileReceived(ctx, "nope", 1, time.Time{}), store.ErrNotFound)
}

func testComputerCommunication(t *testing.T, db *store.DB) {
	ctx := t.Context()
	if err := db.CreateToken(ctx, store.Token{ID: "t", Hash: "h", CreatedAt: base}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.EnrollComputer(ctx, "h", base, store.Computer{ID: "c1", Hostname: "h1", EnrolledAt: base}); err != nil {
		t.Fatal(err)
	}
	c, err := db.SetComputerCommunication(ctx, "c1", "manager-initiated")
	checkErr(t, "SetComputerCommunication", err, nil)
	if c.Communication != "manager-initiated" {
		t.Errorf("got %q", c.Communication)
	}
	cs, _ := db.ListComputers(ctx)
	if len(cs) != 1 || cs[0].Communication != "manager-initiated" {
		t.Errorf("ListComputers: %+v", cs)
	}
	c, _ = db.SetComputerCommunication(ctx, "c1", "")
	if c.Communication != "" {
		t.Errorf("override not removed: %q", c.Communication)
	}
	_, err = db.SetComputerCommunication(ctx, "nope", "bidirectional")
	checkErr(t, "SetComputerCommunication unknown", err, store.ErrNotFound)
}

func testPendingAndUninstalled(t *testing.T, db *store.DB) {
	ctx := t.Context()
	ids, err := db.PendingComputers(ctx)
	checkErr(t, "PendingComputers on an empty store", err, nil)
	if len(ids) != 0 {
		t.Errorf("PendingComputers = %v", ids)
	}
	j := store.Job{ID: "j", Kind: "heartbeat-now", CreatedAt: base, ExpiresAt: base.Add(time.Hour)}
	checkErr(t, "CreateJob", db.CreateJob(ctx, j, []string{"c1", "c2"}), nil)
	db.UpdateJobTarget(ctx, store.JobTarget{JobID: "j", ComputerID: "c2", Status: store.JobSucceeded}, base)
	ids, _ = db.PendingComputers(ctx)
	if diff := cmp.Diff(ids, []string{"c1"}); diff != "" {
		t.Errorf("PendingComputers (-got +want):\n%s", diff)
	}

	if err := db.CreateToken(ctx, store.Token{ID: "t", Hash: "h", CreatedAt: base}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.EnrollComputer(ctx, "h", base, store.Computer{ID: "c1", Hostname: "h1", EnrolledAt: base}); err != nil {
		t.Fatal(err)
	}
	checkErr(t, "MarkUninstalled", db.MarkUninstalled(ctx, "c1", base.Add(time.Minute)), nil)
	c, _ := db.GetComputer(ctx, "c1")
	if c.State != store.ComputerUninstalled || !c.DeactivatedAt.Equal(base.Add(time.Minute)) {
		t.Errorf("after MarkUninstalled: %+v", c)
	}
	checkErr(t, "MarkUninstalled unknown", db.MarkUninstalled(ctx, "nope", base), store.ErrNotFound)
}

func testUsers(t *testing.T, db *store.DB) {
	ctx := t.Context()
	u := store.User{ID: "u1", Username: "alice", PasswordHash: "$argon2id$x", Role: "admin", CreatedAt: base}
	checkErr(t, "CreateUser", db.CreateUser(ctx, u), nil)
	checkErr(t, "CreateUser same name", db.CreateUser(ctx, store.User{ID: "u2", Username: "alice", PasswordHash: "h", Role: "auditor", CreatedAt: base}), store.ErrConflict)
	checkErr(t, "CreateUser without role", db.CreateUser(ctx, store.User{ID: "u3", Username: "bob", PasswordHash: "h"}), store.ErrInvalid)
	got, err := db.UserByName(ctx, "alice")
	checkErr(t, "UserByName", err, nil)
	if diff := cmp.Diff(got, u); diff != "" {
		t.Errorf("UserByName (-got +want):\n%s", diff)
	}
	_, err = db.UserByName(ctx, "nobody")
	checkErr(t, "UserByName unknown", err, store.ErrNotFound)
	u.Role, u.DisabledAt = "auditor", base.Add(time.Hour)
	checkErr(t, "UpdateUser", db.UpdateUser(ctx, u), nil)
	got, _ = db.GetUser(ctx, "u1")
	if diff := cmp.Diff(got, u); diff != "" {
		t.Errorf("after UpdateUser (-got +want):\n%s", diff)
	}
	checkErr(t, "UpdateUser unknown", db.UpdateUser(ctx, store.User{ID: "nope"}), store.ErrNotFound)
	db.CreateUser(ctx, store.User{ID: "u0", Username: "Zed", PasswordHash: "h", Role: "operator", CreatedAt: base})
	us, err := db.ListUsers(ctx)
	checkErr(t, "ListUsers", err, nil)
	if len(us) != 2 || us[0].Username != "Zed" || us[1].Username != "alice" {
		t.Errorf("ListUsers, byte order: %+v", us)
	}
}

func testAPIClients(t *testing.T, db *store.DB) {
	ctx := t.Context()
	c := store.APIClient{ID: "cl1", SecretHash: "h", Role: "operator", CreatedBy: "user:alice", CreatedAt: base, ExpiresAt: base.Add(time.Hour)}
	checkErr(t, "CreateAPIClient", db.CreateAPIClient(ctx, c), nil)
	checkErr(t, "CreateAPIClient twice", db.CreateAPIClient(ctx, c), store.ErrConflict)
	got, err := db.GetAPIClient(ctx, "cl1")
	checkErr(t, "GetAPIClient", err, nil)
	if diff := cmp.Diff(got, c); diff != "" {
		t.Errorf("GetAPIClient (-got +want):\n%s", diff)
	}
	tok := store.OAuthToken{Hash: "a1", Kind: "access", Family: "f", Subject: "client:cl1", Role: "operator", CreatedAt: base, ExpiresAt: base.Add(time.Hour)}
	checkErr(t, "SaveOAuthToken", db.SaveOAuthToken(ctx, tok), nil)
	checkErr(t, "RevokeAPIClient", db.RevokeAPIClient(ctx, "cl1", base.Add(time.Minute)), nil)
	checkErr(t, "RevokeAPIClient twice", db.RevokeAPIClient(ctx, "cl1", base.Add(time.Minute)), store.ErrConflict)
	checkErr(t, "RevokeAPIClient unknown", db.RevokeAPIClient(ctx, "nope", base), store.ErrNotFound)
	_, err = db.OAuthToken(ctx, "a1", "access", base.Add(2*time.Minute))
	checkErr(t, "token of a revoked client", err, store.ErrTokenInvalid)
	cs, _ := db.ListAPIClients(ctx)
	if len(cs) != 1 || cs[0].RevokedAt.IsZero() {
		t.Errorf("ListAPIClients: %+v", cs)
	}
}

func testOAuthTokens(t *testing.T, db *store.DB) {
	ctx := t.Context()
	mk := func(hash, kind, family string, exp time.Duration) store.OAuthToken {
		return store.OAuthToken{Hash: hash, Kind: kind, Family: family, Subject: "user:u1", Role: "admin", CreatedAt: base, ExpiresAt: base.Add(exp)}
	}
	for _, tk := range []store.OAuthToken{mk("a1", "access", "f1", time.Hour), mk("r1", "refresh", "f1", 48*time.Hour), mk("a2", "access", "f2", time.Hour)} {
		checkErr(t, "SaveOAuthToken", db.SaveOAuthToken(ctx, tk), nil)
	}
	got, err := db.OAuthToken(ctx, "a1", "access", base)
	checkErr(t, "OAuthToken", err, nil)
	if got.Subject != "user:u1" || got.Family != "f1" {
		t.Errorf("OAuthToken: %+v", got)
	}
	_, err = db.OAuthToken(ctx, "a1", "refresh", base)
	checkErr(t, "OAuthToken of the wrong kind", err, store.ErrTokenInvalid)
	_, err = db.OAuthToken(ctx, "a1", "access", base.Add(time.Hour))
	checkErr(t, "OAuthToken expired", err, store.ErrTokenInvalid)
	// Rotation: first use works, second revokes the family.
	_, err = db.UseRefreshToken(ctx, "r1", base)
	checkErr(t, "UseRefreshToken", err, nil)
	checkErr(t, "SaveOAuthToken (next in family)", db.SaveOAuthToken(ctx, mk("r2", "refresh", "f1", 48*time.Hour)), nil)
	_, err = db.UseRefreshToken(ctx, "r1", base)
	checkErr(t, "UseRefreshToken reused", err, store.ErrTokenReused)
	for _, h := range []string{"a1"} {
		_, err = db.OAuthToken(ctx, h, "access", base)
		checkErr(t, "access token after reuse", err, store.ErrTokenInvalid)
	}
	_, err = db.UseRefreshToken(ctx, "r2", base)
	checkErr(t, "newer refresh token after reuse", err, store.ErrTokenInvalid)
	_, err = db.OAuthToken(ctx, "a2", "access", base)
	checkErr(t, "other family untouched", err, nil)
	checkErr(t, "RevokeOAuthFamily", db.RevokeOAuthFamily(ctx, "f2", base), nil)
	_, err = db.OAuthToken(ctx, "a2", "access", base)
	checkErr(t, "after RevokeOAuthFamily", err, store.ErrTokenInvalid)
	db.SaveOAuthToken(ctx, mk("a3", "access", "f3", time.Hour))
	checkErr(t, "RevokeSubjectTokens", db.RevokeSubjectTokens(ctx, "user:u1", base), nil)
	_, err = db.OAuthToken(ctx, "a3", "access", base)
	checkErr(t, "after RevokeSubjectTokens", err, store.ErrTokenInvalid)
	_, err = db.UseRefreshToken(ctx, "nope", base)
	checkErr(t, "unknown refresh token", err, store.ErrTokenInvalid)
}

func testAudit(t *testing.T, db *store.DB) {
	ctx := t.Context()
	for i := range 5 {
		actor := "user:alice"
		if i%2 == 1 {
			actor = "client:ci"
		}
		e := store.AuditEntry{ID: fmt.Sprintf("e%d", i), Time: base.Add(time.Duration(i) * time.Minute), Actor: actor, Remote: "192.0.2.1",
			Method: "POST", Route: "/api/v1/jobs", Resource: fmt.Sprintf("j%d", i), Summary: `{"kind":"heartbeat-now"}`, Status: 201}
		checkErr(t, "AppendAudit", db.AppendAudit(ctx, e), nil)
	}
	ids := func(es []store.AuditEntry) []string {
		var out []string
		for _, e := range es {
			out = append(out, e.ID)
		}
		return out
	}
	tests := []struct {
		name string
		f    store.AuditFilter
		want []string
	}{
		{"all", store.AuditFilter{}, []string{"e4", "e3", "e2", "e1", "e0"}},
		{"actor", store.AuditFilter{Actor: "client:ci"}, []string{"e3", "e1"}},
		{"since", store.AuditFilter{Since: base.Add(3 * time.Minute)}, []string{"e4", "e3"}},
		{"until", store.AuditFilter{Until: base.Add(time.Minute)}, []string{"e0"}},
		{"page", store.AuditFilter{Before: "e3", Limit: 2}, []string{"e2", "e1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := db.ListAudit(ctx, tt.f)
			checkErr(t, "ListAudit", err, nil)
			if diff := cmp.Diff(ids(got), tt.want); diff != "" {
				t.Errorf("(-got +want):\n%s", diff)
			}
		})
	}
	all, _ := db.ListAudit(ctx, store.AuditFilter{Limit: 1})
	if all[0].Status != 201 || all[0].Summary != `{"kind":"heartbeat-now"}` || !all[0].Time.Equal(base.Add(4*time.Minute)) {
		t.Errorf("round trip: %+v", all[0])
	}
}

func testUpdateSettingsIf(t *testing.T, db *store.DB) {
	ctx := t.Context()
	v1, err := db.UpdateSettings(ctx, "", map[string]string{"a": "1"})
	checkErr(t, "UpdateSettings", err, nil)
	if v1 != "1" {
		t.Errorf("first version %q, want 1", v1)
	}
	_, err = db.UpdateSettings(ctx, "7", map[string]string{"a": "2"})
	checkErr(t, "UpdateSettings with a stale version", err, store.ErrConflict)
	m, _ := db.Settings(ctx)
	if m["a"] != "1" || m[store.SettingVersion] != "1" {
		t.Errorf("a refused update changed settings: %v", m)
	}
	// Two writers with the same version: exactly one wins.
	var wg sync.WaitGroup
	var wins, conflicts atomic.Int32
	for i := range 6 {
		wg.Go(func() {
			_, err := db.UpdateSettings(ctx, v1, map[string]string{"a": fmt.Sprint(10 + i)})
			switch {
			case err == nil:
				wins.Add(1)
			case errors.Is(err, store.ErrConflict):
				conflicts.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 || conflicts.Load() != 5 {
		t.Errorf("%d wins, %d conflicts; want 1 and 5", wins.Load(), conflicts.Load())
	}
	m, _ = db.Settings(ctx)
	if m[store.SettingVersion] != "2" {
		t.Errorf("version %q, want 2", m[store.SettingVersion])
	}
}
