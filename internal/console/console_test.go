package console

import (
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func catalogue(t *testing.T, lang string) map[string]string {
	t.Helper()
	b, err := files.ReadFile("web/i18n/" + lang + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("i18n/%s.json: %v", lang, err)
	}
	return m
}

// dynamicKeys are message keys the console builds at run time (from a
// computer's status, an alert's severity, a user's role).
var dynamicKeys = []string{
	"status.online", "status.warning", "status.offline", "status.pending", "status.deactivated",
	"policy.up-to-date", "policy.out-of-date", "policy.unknown",
	"alerts.ack", "alerts.clear",
	"severity.critical", "severity.error", "severity.warning", "severity.info",
	"role.admin", "role.operator", "role.auditor",
}

// TestCatalogues: English and Japanese have the same keys, none empty,
// and every key the pages use is in both.
func TestCatalogues(t *testing.T) {
	en, ja := catalogue(t, "en"), catalogue(t, "ja")
	for _, pair := range [][2]map[string]string{{en, ja}, {ja, en}} {
		for k := range pair[0] {
			if _, ok := pair[1][k]; !ok {
				t.Errorf("message %q is in one catalogue only", k)
			}
		}
	}
	for lang, m := range map[string]map[string]string{"en": en, "ja": ja} {
		for k, v := range m {
			if strings.TrimSpace(v) == "" {
				t.Errorf("%s: message %q is empty", lang, k)
			}
		}
	}
	used := slices.Clone(dynamicKeys)
	html, err := files.ReadFile("web/index.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`data-i18n="([^"]+)"`).FindAllStringSubmatch(string(html), -1) {
		used = append(used, m[1])
	}
	js, err := files.ReadFile("web/app.js")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`\bt\("([a-zA-Z0-9.]+)"`).FindAllStringSubmatch(string(js), -1) {
		used = append(used, m[1])
	}
	if len(used) < len(dynamicKeys)+10 {
		t.Fatalf("found only %d message keys in the pages: is the scan broken?", len(used))
	}
	for _, k := range used {
		if _, ok := en[k]; !ok {
			t.Errorf("message %q is used but not in the catalogues", k)
		}
	}
	// Japanese text really is Japanese (a copy of English would pass the
	// key check).
	same := 0
	for _, k := range slices.Sorted(maps.Keys(en)) {
		if en[k] == ja[k] {
			same++
		}
	}
	if same > 0 {
		t.Errorf("%d messages are the same in English and Japanese", same)
	}
}

// TestNoInlineCode: the pages hold no inline script, style or event
// handler, which the CSP would block anyway (and which would weaken it
// if it were relaxed to allow them).
func TestNoInlineCode(t *testing.T) {
	html, err := files.ReadFile("web/index.html")
	if err != nil {
		t.Fatal(err)
	}
	s := string(html)
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`<script(?:(?:\s+[a-z-]+(?:="[^"]*")?)*)>\s*[^<\s]`), // a script with a body
		regexp.MustCompile(`\son[a-z]+\s*=`),
		regexp.MustCompile(`\sstyle\s*=`),
		regexp.MustCompile(`<style`),
		regexp.MustCompile(`javascript:`),
	} {
		if m := bad.FindString(s); m != "" {
			t.Errorf("index.html has inline code: %q", m)
		}
	}
	if !strings.Contains(s, `<script type="module" src="app.js"></script>`) {
		t.Error("index.html does not load app.js as a module")
	}
}

// TestHeaders: every console file is served with the security headers.
func TestHeaders(t *testing.T) {
	mux := http.NewServeMux()
	Register(mux)
	for _, path := range []string{"/console/", "/console/app.js", "/console/style.css", "/console/i18n/ja.json"} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK {
			t.Errorf("GET %s: %d", path, rec.Code)
			continue
		}
		h := rec.Header()
		if h.Get("Content-Security-Policy") != ContentSecurityPolicy || h.Get("X-Content-Type-Options") != "nosniff" || h.Get("X-Frame-Options") != "DENY" {
			t.Errorf("GET %s: headers %v", path, h)
		}
	}
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/console/missing.js", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("GET a missing file: %d", rec.Code)
	}
}
