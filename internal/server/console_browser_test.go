package server_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/yagura/yagura/internal/api"
	"github.com/yagura/yagura/internal/credentials"
	"github.com/yagura/yagura/internal/server"
	"github.com/yagura/yagura/internal/server/servertest"
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
	// A real enrolled agent, for the computers page.
	mm := &manager{m}
	mm.enroll(t, mm.createToken(t, api.TokenCreate{Description: "console test", MaxUses: 1}).Token)
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
	shot("computers-en")
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
	// And the session is gone for the server too.
	if err := chromedp.Do(ctx, chromedp.Navigate(m.URL+"/console/"), chromedp.WaitVisible(chromedp.CSS("#login-form"))); err != nil {
		t.Fatalf("reload after sign-out: %v", err)
	}
}
