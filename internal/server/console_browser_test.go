package server_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/yagura/yagura/internal/agent"
	"github.com/yagura/yagura/internal/api"
	"github.com/yagura/yagura/internal/auth"
	"github.com/yagura/yagura/internal/await"
	"github.com/yagura/yagura/internal/credentials"
	"github.com/yagura/yagura/internal/server"
	"github.com/yagura/yagura/internal/server/servertest"
	"github.com/yagura/yagura/internal/settings"
	"github.com/yagura/yagura/internal/testdaemon"
)

// chromium is Debian's browser (apt-get install chromium).
const chromium = "/usr/bin/chromium"

// screenshotDir is where the console tests leave a screenshot of each page
// in each language: YAGURA_SCREENSHOTS, or test-output/console in the
// repository.
func screenshotDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("YAGURA_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join("..", "..", "test-output", "console")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// spki is the base64 SHA-256 of the manager's certificate key, which
// Chromium is told to trust (and nothing else).
func spki(t *testing.T, m *servertest.Manager) string {
	t.Helper()
	u, err := url.Parse(m.URL)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.Dial("tcp", u.Host, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // only to read the certificate the browser is told to pin
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sum := sha256.Sum256(c.ConnectionState().PeerCertificates[0].RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// js runs a script in the page for its effect.
func js(script string) chromedp.Action[chromedp.Void] {
	ev := chromedp.Evaluate[bool]("(() => { " + script + "; return true })()")
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := ev(ctx, t)
		return chromedp.Void{}, err
	}
}

// TestConsoleInBrowser signs in to the console in headless Chromium, sees
// the dashboard, switches to Japanese and back, and signs out; it writes a
// screenshot of each page in each language.
func TestConsoleInBrowser(t *testing.T) {
	testdaemon.RequireFile(t, "chromium", chromium)
	m := servertest.Start(t, servertest.Config(t), server.Options{})
	// A real agent, enrolled and running (heartbeats every second, offline
	// after two missed), for the computers and alerts pages.
	mm := &manager{m}
	mm.settings(t, map[string]string{settings.KeyHeartbeatInterval: "1s", settings.KeyOfflineAfter: "2"})
	dir, id := mm.enroll(t, mm.createToken(t, api.TokenCreate{Description: "console test", MaxUses: 1}).Token)
	stopAgent := runAgent(t, agent.Config{DataDir: dir, Version: "test"})
	await.Cond(t, 10*time.Second, "computer online", func() error {
		if c := mm.computer(t, id.AgentID); c.Status != "online" {
			return fmt.Errorf("status %s", c.Status)
		}
		return nil
	})
	mm.Call(t, http.MethodPost, "/api/v1/users", map[string]string{"username": "audrey", "password": "a long enough password", "role": auth.RoleAuditor}, http.StatusCreated, nil)
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	admin, err := credentials.Load(m.CredentialsPath)
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("ignore-certificate-errors-spki-list", spki(t, m)),
		chromedp.Flag("lang", "en-US"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelA := chromedp.NewExecAllocator(t.Context(), opts...)
	defer cancelA()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 90*time.Second)
	defer cancelT()
	shots := screenshotDir(t)
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return strings.TrimSpace(s)
	}

	if err := chromedp.Do(ctx,
		chromedp.Navigate(m.URL+"/console/"),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
	); err != nil {
		t.Fatalf("open the console: %v", err)
	}
	if got := text("#login h1"); got != "Sign in to Yagura" {
		t.Errorf("sign-in title %q", got)
	}
	shot("login-en")

	// A wrong password is refused on the page.
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS(`input[name=username]`), admin.User),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), "wrong password, surely"),
		chromedp.Click(chromedp.CSS(`#login-form button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS("#login-error")),
	); err != nil {
		t.Fatalf("sign in with a wrong password: %v", err)
	}
	if got := text("#login-error"); !strings.Contains(got, "Sign-in failed") {
		t.Errorf("error for a wrong password: %q", got)
	}

	if err := chromedp.Do(ctx,
		js(`document.querySelector("input[name=password]").value = ""`),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), admin.Password),
		chromedp.Click(chromedp.CSS(`#login-form button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS("#dashboard")),
		chromedp.WaitVisible(chromedp.CSS(`#computers-by-status dd[data-key=online]`)),
	); err != nil {
		t.Fatalf("sign in: %v", err)
	}
	if got := text("#dashboard h1"); got != "Dashboard" {
		t.Errorf("dashboard title %q", got)
	}
	if got := text("#who"); !strings.Contains(got, admin.User) {
		t.Errorf("signed-in user shown as %q", got)
	}
	shot("dashboard-en")

	// Computers: the enrolled agent is listed.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(m.URL+"/console/#/computers"),
		chromedp.WaitVisible(chromedp.CSS("#computers-rows tr")),
	); err != nil {
		t.Fatalf("computers page: %v", err)
	}
	if got := text("#computers-rows tr td"); got != host {
		t.Errorf("first computer listed %q, want %q", got, host)
	}
	if got := text("#computers-rows tr td .badge"); got != "Online" {
		t.Errorf("agent's status on the computers page %q", got)
	}
	shot("computers-en")

	// The agent stops: its offline alert is acknowledged on the alerts
	// page.
	stopAgent()
	await.Cond(t, 10*time.Second, "computer-offline alert", func() error {
		if as := mm.alerts(t, "type=computer-offline&computer="+id.AgentID); len(as) != 1 {
			return fmt.Errorf("open alerts %+v", as)
		}
		return nil
	})
	if err := chromedp.Do(ctx,
		chromedp.Navigate(m.URL+"/console/#/alerts"),
		chromedp.WaitVisible(chromedp.CSS("#alerts-rows tr button.alert-ack")),
	); err != nil {
		t.Fatalf("alerts page: %v", err)
	}
	shot("alerts-en")
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#alerts-rows tr button.alert-ack")),
		chromedp.WaitNotPresent(chromedp.CSS("#alerts-rows tr button.alert-ack")),
	); err != nil {
		t.Fatalf("acknowledge the alert: %v", err)
	}
	if as := mm.alerts(t, "type=computer-offline&computer="+id.AgentID); len(as) != 1 || as[0].AckedBy != admin.User || as[0].AckedAt == nil {
		t.Errorf("alert after acknowledging it in the console: %+v", as)
	}
	if got := text("#alerts-rows tr td:nth-child(6)"); !strings.Contains(got, admin.User) {
		t.Errorf("acknowledged column %q", got)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(m.URL+"/console/#/dashboard"), chromedp.WaitVisible(chromedp.CSS("#computers-by-status dd[data-key=online]"))); err != nil {
		t.Fatalf("back to the dashboard: %v", err)
	}

	// Japanese: the same page translated, numbers still there.
	if err := chromedp.Do(ctx,
		js(`const l = document.getElementById("lang"); l.value = "ja"; l.dispatchEvent(new Event("change"))`),
		chromedp.WaitVisible(chromedp.CSS(`#computers-by-status dd[data-key=online]`)),
	); err != nil {
		t.Fatalf("switch to Japanese: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for text("#dashboard h1") != "ダッシュボード" && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if got := text("#dashboard h1"); got != "ダッシュボード" {
		t.Errorf("dashboard title in Japanese %q", got)
	}
	if got := text("#computers-by-status dt"); got != "オンライン" {
		t.Errorf("first status in Japanese %q", got)
	}
	shot("dashboard-ja")
	if err := chromedp.Do(ctx,
		chromedp.Navigate(m.URL+"/console/#/computers"),
		chromedp.WaitVisible(chromedp.CSS("#computers-rows tr")),
	); err != nil {
		t.Fatalf("computers page in Japanese: %v", err)
	}
	if got := text("#computers th"); got != "ホスト名" {
		t.Errorf("computers table heading in Japanese %q", got)
	}
	shot("computers-ja")

	// Signing out shows the sign-in page, in the language chosen.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#logout")),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
	); err != nil {
		t.Fatalf("sign out: %v", err)
	}
	if got := text("#login h1"); got != "Yagura にサインイン" {
		t.Errorf("sign-in title after sign-out %q", got)
	}
	shot("login-ja")

	// An auditor sees the alert but no control to change it.
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS(`input[name=username]`), "audrey"),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), "a long enough password"),
		chromedp.Click(chromedp.CSS(`#login-form button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS("#logout")),
		chromedp.Navigate(m.URL+"/console/#/alerts"),
		chromedp.WaitVisible(chromedp.CSS("#alerts-rows tr")),
	); err != nil {
		t.Fatalf("auditor's alerts page: %v", err)
	}
	n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#alerts button").length - document.querySelectorAll("#alerts-filter button").length`))
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("the auditor's alerts page shows %d controls to change alerts", n)
	}
	shot("alerts-auditor-en")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#logout")), chromedp.WaitVisible(chromedp.CSS("#login-form"))); err != nil {
		t.Fatalf("auditor signs out: %v", err)
	}
	// And the session is gone for the server too.
	if err := chromedp.Do(ctx, chromedp.Navigate(m.URL+"/console/"), chromedp.WaitVisible(chromedp.CSS("#login-form"))); err != nil {
		t.Fatalf("reload after sign-out: %v", err)
	}
}
