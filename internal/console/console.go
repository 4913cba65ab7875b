// Package console serves the web console: static pages embedded in the
// binary that sign in with a session cookie (auth.RegisterConsole) and
// use the public API like any other client. It has no back door: every
// figure a page shows comes from /api/v1 with the user's own role.
package console

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed web
var files embed.FS

// ContentSecurityPolicy allows the console's own scripts, styles and API
// calls and nothing else: no inline script or style, no other origin, no
// framing.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Register serves the console under /console/ and sends / there.
func Register(mux interface {
	Handle(string, http.Handler)
	HandleFunc(string, func(http.ResponseWriter, *http.Request))
}) {
	web, err := fs.Sub(files, "web")
	if err != nil {
		panic(err) // the embedded tree is part of the binary
	}
	static := http.StripPrefix("/console/", http.FileServerFS(web))
	mux.Handle("GET /console/", secure(static))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/console/", http.StatusFound)
	})
}

// secure adds the console's security headers.
func secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		// Pages change with each release; the binary is the cache.
		h.Set("Cache-Control", "no-cache")
		next.ServeHTTP(w, r)
	})
}
