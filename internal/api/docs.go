package api

import (
	"html/template"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/danielgtaylor/huma/v2"
)

// The browsable API reference: one page rendered on the manager from the
// OpenAPI document, with no script and no asset from anywhere else (the
// manager often runs where the Internet is not reachable, and a strict
// Content-Security-Policy forbids third-party code anyway).

var docsPage = template.Must(template.New("docs").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}} — API reference</title>
<link rel="stylesheet" href="/api/docs/style.css"></head>
<body><header><h1>{{.Title}} <small>{{.Version}}</small></h1>
<p>{{.Description}}</p>
<p>Authenticate with an OAuth2 bearer token: <code>curl -d grant_type=password -d username=admin --data-urlencode password@- https://MANAGER/oauth/token</code>.
The machine-readable document: <a href="/api/v1/openapi.json">openapi.json</a>, <a href="/api/v1/openapi.yaml">openapi.yaml</a>.</p>
<nav>{{range .Tags}}<a href="#{{.ID}}">{{.Name}}</a> {{end}}</nav></header>
{{range .Tags}}<section id="{{.ID}}"><h2>{{.Name}}</h2>
{{range .Ops}}<article id="{{.ID}}"><h3><span class="m {{.Method}}">{{.Method}}</span> <code>{{.Path}}</code></h3>
<p><b>{{.Summary}}</b>{{if .Permission}} — needs <code>{{.Permission}}</code>{{end}}</p>
{{if .Description}}<p>{{.Description}}</p>{{end}}
{{if .Params}}<table><tr><th>parameter</th><th>in</th><th>description</th></tr>
{{range .Params}}<tr><td><code>{{.Name}}</code></td><td>{{.In}}</td><td>{{.Description}}</td></tr>{{end}}</table>{{end}}
{{if .Body}}<p>Body: <code>{{.Body}}</code> (see the document's schemas)</p>{{end}}
</article>{{end}}</section>{{end}}
</body></html>`))

const docsCSS = `body{font:15px/1.5 system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}
h1 small{font-size:.5em;color:#777}nav a{margin-right:1em}article{border-top:1px solid #ddd;padding:.5em 0}
code{background:#f4f4f4;padding:0 .2em}.m{font:bold 12px monospace;padding:2px 6px;border-radius:3px;color:#fff;background:#555}
.GET{background:#2a7}.POST{background:#27c}.PATCH{background:#c82}.DELETE{background:#c33}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left}`

type docsOp struct {
	ID, Method, Path, Summary, Description, Permission, Body string
	Params                                                   []*huma.Param
}

type docsTag struct {
	ID, Name string
	Ops      []docsOp
}

// registerDocs serves /api/docs (public: it describes the API, nothing of
// the data).
func (a *API) registerDocs(mux interface {
	HandleFunc(string, func(http.ResponseWriter, *http.Request))
}) {
	var once sync.Once
	var page []byte
	render := func() {
		doc := a.api.OpenAPI()
		byTag := map[string]*docsTag{}
		for path, item := range doc.Paths {
			for method, op := range map[string]*huma.Operation{"GET": item.Get, "POST": item.Post, "PUT": item.Put, "PATCH": item.Patch, "DELETE": item.Delete} {
				if op == nil {
					continue
				}
				tag := "Other"
				if len(op.Tags) > 0 {
					tag = op.Tags[0]
				}
				t, ok := byTag[tag]
				if !ok {
					t = &docsTag{ID: strings.ToLower(strings.ReplaceAll(tag, " ", "-")), Name: tag}
					byTag[tag] = t
				}
				perm, _ := op.Extensions["x-yagura-permission"].(string)
				d := docsOp{ID: op.OperationID, Method: method, Path: path, Summary: op.Summary, Description: op.Description, Permission: perm, Params: op.Parameters}
				if op.RequestBody != nil {
					for _, c := range op.RequestBody.Content {
						if c.Schema != nil && c.Schema.Ref != "" {
							d.Body = strings.TrimPrefix(c.Schema.Ref, "#/components/schemas/")
						} else {
							d.Body = "JSON"
						}
					}
				}
				t.Ops = append(t.Ops, d)
			}
		}
		var tags []docsTag
		for _, t := range byTag {
			slices.SortFunc(t.Ops, func(x, y docsOp) int { return strings.Compare(x.Path+x.Method, y.Path+y.Method) })
			tags = append(tags, *t)
		}
		slices.SortFunc(tags, func(x, y docsTag) int { return strings.Compare(x.Name, y.Name) })
		var b strings.Builder
		_ = docsPage.Execute(&b, map[string]any{"Title": doc.Info.Title, "Version": doc.Info.Version, "Description": doc.Info.Description, "Tags": tags})
		page = []byte(b.String())
	}
	mux.HandleFunc("GET /api/docs", func(w http.ResponseWriter, r *http.Request) {
		once.Do(render)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		_, _ = w.Write(page)
	})
	mux.HandleFunc("GET /api/docs/style.css", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		_, _ = w.Write([]byte(docsCSS))
	})
}
