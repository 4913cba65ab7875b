package main

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/yagura/yagura/internal/api"
	"github.com/yagura/yagura/internal/credentials"
)

// TestLoginAndRoles: ctl login keeps refreshable tokens; an operator may run
// jobs but not manage users or settings; an auditor only reads.
func TestLoginAndRoles(t *testing.T) {
	endToEnd(t)
	m := startManager(t, t.TempDir())
	f, err := credentials.Load(m.creds)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.ctl(t, "users", "create", "olivia", "--role", "operator", "--password-stdin"); err == nil {
		t.Fatal("created a user with an empty password")
	}
	run := func(home string, stdin string, args ...string) (string, error) {
		cmd := exec.Command(yaguraBin(t), append([]string{"ctl"}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home+"/.config")
		cmd.Stdin = strings.NewReader(stdin)
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	admin := t.TempDir()
	if out, err := run(admin, f.Password+"\n", "login", "--server", m.url, "--ca-fingerprint", m.fp, "--user", "admin", "--password-stdin"); err != nil {
		t.Fatalf("login: %v\n%s", err, out)
	}
	st, err := os.Stat(admin + "/.config/yagura/credentials.json")
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("credentials after login: %v %v", st, err)
	}
	stored, _ := credentials.Load(admin + "/.config/yagura/credentials.json")
	if stored.Password != "" || stored.RefreshToken == "" {
		t.Fatalf("login stored the password or no refresh token")
	}
	for _, u := range []struct{ name, role string }{{"olivia", "operator"}, {"audrey", "auditor"}} {
		if out, err := run(admin, "a long enough password\n", "users", "create", u.name, "--role", u.role, "--password-stdin"); err != nil {
			t.Fatalf("create %s: %v\n%s", u.name, err, out)
		}
	}
	if out, err := run(admin, "", "whoami"); err != nil || !strings.Contains(out, "user:admin") {
		t.Fatalf("whoami: %v %s", err, out)
	}
	op, aud := t.TempDir(), t.TempDir()
	for _, x := range []struct{ home, user string }{{op, "olivia"}, {aud, "audrey"}} {
		if out, err := run(x.home, "a long enough password\n", "login", "--server", m.url, "--ca-fingerprint", m.fp, "--user", x.user, "--password-stdin"); err != nil {
			t.Fatalf("login %s: %v\n%s", x.user, err, out)
		}
	}
	tests := []struct {
		name, home string
		args       []string
		ok         bool
	}{
		{"operator creates a token", op, []string{"tokens", "create"}, true},
		{"operator lists computers", op, []string{"computers", "list"}, true},
		{"operator may not change settings", op, []string{"settings", "set", "heartbeat.interval=30s"}, false},
		{"operator may not list users", op, []string{"users", "list"}, false},
		{"operator may not read the audit log", op, []string{"audit", "list"}, false},
		{"auditor reads the audit log", aud, []string{"audit", "list"}, true},
		{"auditor lists users", aud, []string{"users", "list"}, true},
		{"auditor may not create a token", aud, []string{"tokens", "create"}, false},
		{"auditor may not create a job", aud, []string{"jobs", "create", "heartbeat-now", "--all"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(tc.home, "", tc.args...)
			if tc.ok && err != nil {
				t.Fatalf("refused: %v\n%s", err, out)
			}
			if !tc.ok && (err == nil || !strings.Contains(out, "HTTP 403")) {
				t.Fatalf("allowed (or not 403): %v\n%s", err, out)
			}
		})
	}
	// Disabling a user signs them out at once.
	if out, err := run(admin, "", "users", "disable", "olivia"); err != nil {
		t.Fatalf("disable: %v\n%s", err, out)
	}
	if out, err := run(op, "", "computers", "list"); err == nil || !strings.Contains(out, "HTTP 401") {
		t.Fatalf("disabled user still works: %v\n%s", err, out)
	}
	// Logout revokes.
	if out, err := run(aud, "", "logout"); err != nil {
		t.Fatalf("logout: %v\n%s", err, out)
	}
	if _, err := os.Stat(aud + "/.config/yagura/credentials.json"); !os.IsNotExist(err) {
		t.Error("credentials still on disk after logout")
	}
	var entries []api.AuditEntry
	m.mustCtlJSON(t, &entries, "audit", "list")
	actors := map[string]bool{}
	for _, e := range entries {
		actors[e.Actor] = true
	}
	for _, want := range []string{"user:admin", "user:olivia", "user:audrey"} {
		if !actors[want] {
			t.Errorf("no audit entry by %s (%v)", want, actors)
		}
	}
	m.proc.stop(t, syscall.SIGTERM)
}
