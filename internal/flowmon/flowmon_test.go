package flowmon_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/yagura/yagura/internal/auth"
	"github.com/yagura/yagura/internal/flowmon"
	"github.com/yagura/yagura/internal/flowprofile"
)

type env struct {
	srv   *httptest.Server
	flows *memFlows
}

// newEnv serves the endpoints at the root of a mux, as the manager does,
// over two exporters and the test flows. Tokens: "alice" (admin), "bob"
// (auditor), "nobody" (a role without flows:read).
func newEnv(t *testing.T, mod func(*flowmon.Deps)) *env {
	t.Helper()
	fl := &memFlows{flows: testFlows()}
	d := flowmon.Deps{
		Flows: fl,
		Profiles: profiles{
			exporters: []flowprofile.Exporter{{Address: r1, Name: "router1"}, {Address: r2}},
			others:    []flowprofile.Profile{{ID: "web", Name: "Web", Filter: "port 443"}},
		},
		Auth: tokens{
			"alice":  {Subject: "user:alice", Role: auth.RoleAdmin},
			"bob":    {Subject: "user:bob", Role: auth.RoleAuditor},
			"nobody": {Subject: "user:carol", Role: "nobody"}, // no role of that name holds flows:read
		},
	}
	if mod != nil {
		mod(&d)
	}
	mux := http.NewServeMux()
	flowmon.New(d).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &env{srv: srv, flows: fl}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) String() string { return fmt.Sprintf("%d %s", r.status, r.body) }

// problem decodes an error answer.
func (r response) detail(t *testing.T) string {
	t.Helper()
	var p struct {
		Title  string `json:"title"`
		Status int    `json:"status"`
		Detail string `json:"detail"`
	}
	if err := json.Unmarshal(r.body, &p); err != nil || p.Status != r.status || p.Detail == "" {
		t.Fatalf("error answer is not a problem document: %s (%v)", r, err)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("error Content-Type %q", ct)
	}
	return p.Detail
}

func (e *env) do(t *testing.T, method, path, token, contentType, body string) response {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		// Flowmon's own scripts write the scheme in lower case.
		req.Header.Set("Authorization", "bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

func (e *env) post(t *testing.T, path, token, body string) response {
	t.Helper()
	return e.do(t, http.MethodPost, path, token, "application/json", body)
}

// statistics posts an analysis and returns its result.
func (e *env) statistics(t *testing.T, token, body string) response {
	t.Helper()
	r := e.post(t, "/rest/fmc/analysis/statistics", token, body)
	if r.status != http.StatusCreated {
		t.Fatalf("statistics: %s", r)
	}
	var id struct {
		ID int64 `json:"id"`
	}
	if err := json.Unmarshal(r.body, &id); err != nil || id.ID == 0 {
		t.Fatalf("statistics answer %s: want {\"id\": N} (%v)", r.body, err)
	}
	return e.do(t, http.MethodGet, fmt.Sprintf("/rest/fmc/analysis/results/%d", id.ID), token, "", "")
}

// seedStatistics is the seed's statistics request: IP communication on
// profile live, aggregated by source and destination address.
const seedStatistics = `{
    "search": {
      "from": "2025-02-03 10:00",
      "to": "2025-02-03 10:10",
      "profile": "live",
      "channels": %s,
      "statistics": {
        "statistics": "record",
        "orderBy": "bytes"
      },
      "specific": {
        "aggregateBy": [
          "srcip", "dstip"
        ]
      },
      "filter": %q
    },
    "showonly": 10
  }`

func TestStatisticsAndResults(t *testing.T) {
	e := newEnv(t, nil)
	tests := []struct {
		name, channels, filter string
		want                   string
	}{
		{"all channels", `[]`, "",
			`[{"ts":"2025-02-03 10:01:00.000","td":420.000,"srcip":"10.0.0.1","dstip":"10.0.0.2","pkt":31,"byt":3100,"fl":3},` +
				`{"ts":"2025-02-03 10:03:00.000","td":0.000,"srcip":"10.0.0.3","dstip":"10.0.0.4","pkt":5,"byt":500,"fl":1}]`},
		{"both channels by id and name", `["192.0.2.1", "192.0.2.2"]`, "",
			`[{"ts":"2025-02-03 10:01:00.000","td":420.000,"srcip":"10.0.0.1","dstip":"10.0.0.2","pkt":31,"byt":3100,"fl":3},` +
				`{"ts":"2025-02-03 10:03:00.000","td":0.000,"srcip":"10.0.0.3","dstip":"10.0.0.4","pkt":5,"byt":500,"fl":1}]`},
		{"one channel", `["192.0.2.2"]`, "",
			`[{"ts":"2025-02-03 10:03:00.000","td":0.000,"srcip":"10.0.0.3","dstip":"10.0.0.4","pkt":5,"byt":500,"fl":1},` +
				`{"ts":"2025-02-03 10:08:00.000","td":0.000,"srcip":"10.0.0.1","dstip":"10.0.0.2","pkt":1,"byt":100,"fl":1}]`},
		{"channel by name", `["router1"]`, "",
			`[{"ts":"2025-02-03 10:01:00.000","td":390.000,"srcip":"10.0.0.1","dstip":"10.0.0.2","pkt":30,"byt":3000,"fl":2}]`},
		{"filter", `[]`, "proto tcp or proto udp",
			`[{"ts":"2025-02-03 10:01:00.000","td":390.000,"srcip":"10.0.0.1","dstip":"10.0.0.2","pkt":30,"byt":3000,"fl":2},` +
				`{"ts":"2025-02-03 10:03:00.000","td":0.000,"srcip":"10.0.0.3","dstip":"10.0.0.4","pkt":5,"byt":500,"fl":1}]`},
		{"filter and channel", `["192.0.2.2"]`, "proto icmp",
			`[{"ts":"2025-02-03 10:08:00.000","td":0.000,"srcip":"10.0.0.1","dstip":"10.0.0.2","pkt":1,"byt":100,"fl":1}]`},
		{"nothing matches", `[]`, "host 198.51.100.1", `[]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.statistics(t, "alice", fmt.Sprintf(seedStatistics, tt.channels, tt.filter))
			if r.status != http.StatusOK || r.header.Get("Content-Type") != "application/json" {
				t.Fatalf("results: %s (%s)", r, r.header.Get("Content-Type"))
			}
			if diff := cmp.Diff(string(r.body), tt.want); diff != "" {
				t.Errorf("results (-got +want):\n%s", diff)
			}
		})
	}
}

func TestStatisticsFields(t *testing.T) {
	e := newEnv(t, nil)
	tests := []struct {
		name, body, want string
	}{
		{"srcport statistic ordered by packets, first row",
			`{"search": {"from": "2025-02-03 10:00", "to": "2025-02-03 10:10", "profile": "live", "statistics": {"statistics": "dstport", "orderBy": "packets"}}, "showonly": 1}`,
			`[{"ts":"2025-02-03 10:01:00.000","td":390.000,"dstport":443,"pkt":30,"byt":3000,"fl":2}]`},
		{"record without aggregateBy is the 5-tuple, flows first",
			`{"search": {"from": "2025-02-03 10:00", "to": "2025-02-03 10:10", "filter": "proto udp", "statistics": {"statistics": "record"}}}`,
			`[{"ts":"2025-02-03 10:03:00.000","td":0.000,"srcip":"10.0.0.3","dstip":"10.0.0.4","srcport":53,"dstport":53,"proto":17,"pkt":5,"byt":500,"fl":1}]`},
		{"nfdump names, exporter and protocol",
			`{"search": {"from": "2025-02-03T10:00:00Z", "to": "2025-02-03T10:10:00Z", "statistics": {"statistics": "RECORD", "orderBy": "byt"}, "specific": {"aggregateBy": ["ra", "pr", "proto"]}}, "showOnly": 2}`,
			`[{"ts":"2025-02-03 10:01:00.000","td":390.000,"exporter":"192.0.2.1","proto":6,"pkt":30,"byt":3000,"fl":2},` +
				`{"ts":"2025-02-03 10:03:00.000","td":0.000,"exporter":"192.0.2.2","proto":17,"pkt":5,"byt":500,"fl":1}]`},
		{"a user profile",
			`{"search": {"from": "2025-02-03 10:00", "to": "2025-02-03 10:15", "profile": "web", "statistics": {"statistics": "srcip"}}}`,
			`[{"ts":"2025-02-03 10:01:00.000","td":390.000,"srcip":"10.0.0.1","pkt":30,"byt":3000,"fl":2}]`},
		{"extra fields Flowmon clients send are ignored",
			`{"search": {"from": "2025-02-03 10:00", "to": "2025-02-03 10:10", "statistics": {"statistics": "dstip", "orderBy": "flows", "extra": 1}, "output": ["da"], "listing": {}}, "showonly": 1, "async": true}`,
			`[{"ts":"2025-02-03 10:01:00.000","td":420.000,"dstip":"10.0.0.2","pkt":31,"byt":3100,"fl":3}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.statistics(t, "bob", tt.body)
			if diff := cmp.Diff(string(r.body), tt.want); diff != "" || r.status != http.StatusOK {
				t.Errorf("status %d, results (-got +want):\n%s", r.status, diff)
			}
		})
	}
}

// TestStatisticsQuery checks what reaches the store: the profile's
// channels and the request's filter both, the order and the limit.
func TestStatisticsQuery(t *testing.T) {
	e := newEnv(t, nil)
	e.statistics(t, "alice", fmt.Sprintf(seedStatistics, `["192.0.2.1"]`, "dst port 443"))
	e.statistics(t, "alice", `{"search": {"from": "2025-02-03 10:00", "to": "2025-02-03 10:10"}, "showonly": 0}`)
	e.statistics(t, "alice", `{"search": {"from": "2025-02-03 10:00", "to": "2025-02-03 10:10"}}`)
	type got struct {
		Filter, OrderBy string
		Limit           int
		Since, Until    time.Time
	}
	var gots []got
	for _, q := range e.flows.tops {
		f := "<none>"
		if q.Filter != nil {
			f = q.Filter.String()
		}
		gots = append(gots, got{f, string(q.OrderBy), q.Limit, q.Since, q.Until})
	}
	want := []got{
		{`exporter "192.0.2.1" and dst port 443`, "bytes", 10, t0, t0.Add(10 * time.Minute)},
		{"<none>", "flows", 10000, t0, t0.Add(10 * time.Minute)},
		{"<none>", "flows", 10, t0, t0.Add(10 * time.Minute)},
	}
	if diff := cmp.Diff(gots, want); diff != "" {
		t.Errorf("queries (-got +want):\n%s", diff)
	}
}

func TestStatisticsErrors(t *testing.T) {
	e := newEnv(t, nil)
	const (
		from = `"from": "2025-02-03 10:00", "to": "2025-02-03 10:10"`
	)
	tests := []struct {
		name, body string
		status     int
		want       []string // substrings of the detail
	}{
		{"no body", ``, 400, []string{"no analysis", `"search"`}},
		{"not JSON", `{"search": `, 400, []string{"not valid JSON"}},
		{"not an object", `[1]`, 400, []string{"must be an object"}},
		{"showonly is a string", `{"search": {` + from + `}, "showonly": "10"}`, 400, []string{"showonly is a JSON string", "whole number"}},
		{"channels is a string", `{"search": {` + from + `, "channels": "192.0.2.1"}}`, 400, []string{"search.channels is a JSON string", "array of strings"}},
		{"aggregateBy holds a number", `{"search": {` + from + `, "specific": {"aggregateBy": ["srcip", 4]}}}`, 400, []string{"search.specific.aggregateBy is a JSON number", "must be a string"}},
		{"bad filter", `{"search": {` + from + `, "filter": "proto tcp and port"}}`, 400, []string{"search.filter: column 19"}},
		{"unknown aggregateBy", `{"search": {` + from + `, "specific": {"aggregateBy": ["srcip", "hhost"]}}}`, 400,
			[]string{`aggregateBy[1] "hhost" is not supported`, "srcip, dstip, srcport, dstport, proto, exporter, inif, outif, ipver"}},
		{"unknown statistics", `{"search": {` + from + `, "statistics": {"statistics": "srcas"}}}`, 400, []string{`"srcas" is not supported`, "record"}},
		{"unknown orderBy", `{"search": {` + from + `, "statistics": {"orderBy": "bps"}}}`, 400, []string{`orderBy "bps"`, "bytes, packets or flows"}},
		{"unknown profile", `{"search": {` + from + `, "profile": "dmz"}}`, 400, []string{`"dmz" does not exist`, "profiles: live, web"}},
		{"unknown channel", `{"search": {` + from + `, "channels": ["192.0.2.9"]}}`, 400, []string{`no channel "192.0.2.9"`, "192.0.2.1, 192.0.2.2"}},
		{"empty channel", `{"search": {` + from + `, "channels": [""]}}`, 400, []string{"search.channels[0] is empty"}},
		{"missing from", `{"search": {"to": "2025-02-03 10:10"}}`, 400, []string{"search.from is required", "YYYY-MM-DD HH:MM"}},
		{"bad time", `{"search": {"from": "03/02/2025 10:00", "to": "2025-02-03 10:10"}}`, 400, []string{`search.from "03/02/2025 10:00" is not a time`}},
		{"to before from", `{"search": {"from": "2025-02-03 10:10", "to": "2025-02-03 10:00"}}`, 400, []string{"is not after"}},
		{"negative showonly", `{"search": {` + from + `}, "showonly": -1}`, 400, []string{"showonly -1"}},
		{"too many rows", `{"search": {` + from + `}, "showonly": 10001}`, 400, []string{"at most 10000"}},
		{"too large", `{"search": {` + from + `, "filter": "` + strings.Repeat(" ", 70<<10) + `"}}`, 413, []string{"larger than 64 KiB"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.post(t, "/rest/fmc/analysis/statistics", "alice", tt.body)
			if r.status != tt.status {
				t.Fatalf("status: %s, want %d", r, tt.status)
			}
			d := r.detail(t)
			for _, w := range tt.want {
				if !strings.Contains(d, w) {
					t.Errorf("detail %q does not say %q", d, w)
				}
			}
		})
	}
	if len(e.flows.tops) != 0 {
		t.Errorf("%d bad requests reached the store", len(e.flows.tops))
	}
}

func TestAuthorization(t *testing.T) {
	e := newEnv(t, nil)
	routes := []struct{ method, path, body string }{
		{http.MethodPost, "/rest/fmc/analysis/statistics", fmt.Sprintf(seedStatistics, `[]`, "")},
		{http.MethodGet, "/rest/fmc/analysis/results/1", ""},
		{http.MethodPost, "/rest/fmc/analysis/chart", `{"search": {"from": "2025-02-03 10:00", "to": "2025-02-03 10:10", "chart": {"measure": "traffic"}}}`},
		{http.MethodGet, "/rest/fmc/analysis/chart?search=" + url.QueryEscape(`{"from": "2025-02-03 10:00", "to": "2025-02-03 10:10", "chart": {"measure": "traffic"}}`), ""},
	}
	tests := []struct {
		token  string
		status int
		want   string
	}{
		{"", 401, "missing bearer token"},
		{"forged", 401, "invalid, expired or revoked"},
		{"nobody", 403, "role nobody may not read flows (needs flows:read)"},
	}
	for _, rt := range routes {
		for _, tt := range tests {
			t.Run(rt.method+" "+rt.path[:min(len(rt.path), 40)]+" "+tt.token, func(t *testing.T) {
				r := e.do(t, rt.method, rt.path, tt.token, "application/json", rt.body)
				if r.status != tt.status {
					t.Fatalf("got %s, want %d", r, tt.status)
				}
				if d := r.detail(t); !strings.Contains(d, tt.want) {
					t.Errorf("detail %q does not say %q", d, tt.want)
				}
				if tt.status == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("401 without a Bearer challenge: %q", r.header.Get("WWW-Authenticate"))
				}
			})
		}
	}
	if len(e.flows.tops)+len(e.flows.serieses) != 0 {
		t.Error("a refused request reached the store")
	}
}

func TestResultsNotFound(t *testing.T) {
	e := newEnv(t, nil)
	r := e.post(t, "/rest/fmc/analysis/statistics", "alice", fmt.Sprintf(seedStatistics, `[]`, ""))
	var id struct{ ID int64 }
	if err := json.Unmarshal(r.body, &id); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, token string
		want              string
	}{
		{"unknown id", "/rest/fmc/analysis/results/999", "alice", "analysis result 999 does not exist or has expired"},
		{"not a number", "/rest/fmc/analysis/results/abc", "alice", `analysis result "abc" does not exist`},
		{"another user's", fmt.Sprintf("/rest/fmc/analysis/results/%d", id.ID), "bob", "does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, http.MethodGet, tt.path, tt.token, "", "")
			if r.status != http.StatusNotFound {
				t.Fatalf("got %s, want 404", r)
			}
			if d := r.detail(t); !strings.Contains(d, tt.want) {
				t.Errorf("detail %q does not say %q", d, tt.want)
			}
		})
	}
	// The owner still gets it, as often as asked.
	for range 2 {
		if r := e.do(t, http.MethodGet, fmt.Sprintf("/rest/fmc/analysis/results/%d", id.ID), "alice", "", ""); r.status != http.StatusOK {
			t.Fatalf("owner: %s", r)
		}
	}
}

// seedChart is the seed's chart request: 10 minutes on the 5-minute
// profile live.
const seedChart = `{
    "search": {
      "from": "2025-02-03 10:00",
      "to": "2025-02-03 10:10",
      "profile": "live",
      "channels": %s,
      "chart": {
        "measure": %q,
        "protocol": %d
      }
    }
  }`

func TestChart(t *testing.T) {
	e := newEnv(t, nil)
	ms := func(d time.Duration) int64 { return t0.Add(d).UnixMilli() }
	a, b := ms(0), ms(5*time.Minute)
	tests := []struct {
		name, channels, measure string
		protocol                int
		want                    string
	}{
		{"traffic per channel", `[]`, "traffic", 0,
			fmt.Sprintf(`[{"channel":{"id":"192.0.2.1","name":"router1"},"values":[[%d,1000],[%d,2000]]},{"channel":{"id":"192.0.2.2","name":"192.0.2.2"},"values":[[%d,500],[%d,100]]}]`, a, b, a, b)},
		{"tcp only", `["192.0.2.1", "192.0.2.2"]`, "traffic", 6,
			fmt.Sprintf(`[{"channel":{"id":"192.0.2.1","name":"router1"},"values":[[%d,1000],[%d,2000]]},{"channel":{"id":"192.0.2.2","name":"192.0.2.2"},"values":[[%d,0],[%d,0]]}]`, a, b, a, b)},
		{"packets of one channel by name", `["router1"]`, "packets", 0,
			fmt.Sprintf(`[{"channel":{"id":"192.0.2.1","name":"router1"},"values":[[%d,10],[%d,20]]}]`, a, b)},
		{"icmp flows", `["192.0.2.2"]`, "flows", 1,
			fmt.Sprintf(`[{"channel":{"id":"192.0.2.2","name":"192.0.2.2"},"values":[[%d,0],[%d,1]]}]`, a, b)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.post(t, "/rest/fmc/analysis/chart", "bob", fmt.Sprintf(seedChart, tt.channels, tt.measure, tt.protocol))
			if r.status != http.StatusOK {
				t.Fatalf("chart: %s", r)
			}
			if diff := cmp.Diff(strings.TrimSpace(string(r.body)), tt.want); diff != "" {
				t.Errorf("chart (-got +want):\n%s", diff)
			}
		})
	}
	// A profile without channels is one series; without a filter the store
	// may answer from its rollups.
	e.flows.serieses = nil
	r := e.post(t, "/rest/fmc/analysis/chart", "bob", `{"search": {"from": "2025-02-03 10:00", "to": "2025-02-03 10:15", "profile": "web", "chart": {"measure": "traffic"}}}`)
	want := fmt.Sprintf(`[{"channel":{"id":"web","name":"Web"},"values":[[%d,1000],[%d,2000],[%d,0]]}]`, a, b, ms(10*time.Minute))
	if diff := cmp.Diff(strings.TrimSpace(string(r.body)), want); diff != "" || r.status != 200 {
		t.Errorf("profile without channels: %d (-got +want):\n%s", r.status, diff)
	}
	e.flows.serieses = nil
	e.post(t, "/rest/fmc/analysis/chart", "bob", `{"search": {"from": "2025-02-03 10:00", "to": "2025-02-03 10:10", "profile": "live", "channels": ["192.0.2.1"], "chart": {"measure": "flows", "protocol": 17}}}`)
	if len(e.flows.serieses) != 1 || e.flows.serieses[0].Filter.String() != `exporter "192.0.2.1"` || e.flows.serieses[0].Proto != 17 || e.flows.serieses[0].Interval != 5*time.Minute {
		t.Errorf("series query %+v", e.flows.serieses)
	}
}

func TestChartErrors(t *testing.T) {
	e := newEnv(t, nil)
	tests := []struct {
		name, body string
		want       []string
	}{
		{"no body", ``, []string{"no chart"}},
		{"unknown measure", `{"search": {"from": "2025-02-03 10:00", "to": "2025-02-03 10:10", "chart": {"measure": "bps"}}}`, []string{`measure "bps"`, "traffic"}},
		{"missing measure", `{"search": {"from": "2025-02-03 10:00", "to": "2025-02-03 10:10"}}`, []string{"search.chart.measure is required"}},
		{"protocol out of range", `{"search": {"from": "2025-02-03 10:00", "to": "2025-02-03 10:10", "chart": {"measure": "traffic", "protocol": 300}}}`, []string{"search.chart.protocol 300"}},
		{"protocol is a string", `{"search": {"from": "2025-02-03 10:00", "to": "2025-02-03 10:10", "chart": {"measure": "traffic", "protocol": "tcp"}}}`, []string{"search.chart.protocol is a JSON string", "whole number"}},
		{"one interval", `{"search": {"from": "2025-02-03 10:01", "to": "2025-02-03 10:04", "chart": {"measure": "traffic"}}}`, []string{"same 5-minute interval"}},
		{"over a year", `{"search": {"from": "2023-02-03 10:00", "to": "2025-02-03 10:00", "chart": {"measure": "traffic"}}}`, []string{"at most 366 days"}},
		{"unknown profile", `{"search": {"from": "2025-02-03 10:00", "to": "2025-02-03 10:10", "profile": "x", "chart": {"measure": "traffic"}}}`, []string{`"x" does not exist`, "live, web"}},
		{"unknown channel", `{"search": {"from": "2025-02-03 10:00", "to": "2025-02-03 10:10", "channels": ["r9"], "chart": {"measure": "traffic"}}}`, []string{`no channel "r9"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.post(t, "/rest/fmc/analysis/chart", "alice", tt.body)
			if r.status != http.StatusBadRequest {
				t.Fatalf("got %s, want 400", r)
			}
			d := r.detail(t)
			for _, w := range tt.want {
				if !strings.Contains(d, w) {
					t.Errorf("detail %q does not say %q", d, w)
				}
			}
		})
	}
}

// TestOlderClients: scripts for older Flowmon versions put the search JSON
// in the query string (GET chart, POST statistics with ?showonly=) or in a
// form body.
func TestOlderClients(t *testing.T) {
	e := newEnv(t, nil)
	search := url.QueryEscape(`{"from": "2025-02-03 10:00", "to": "2025-02-03 10:10", "profile": "live", "chart": {"measure": "traffic", "protocol": 0}}`)
	r := e.do(t, http.MethodGet, "/rest/fmc/analysis/chart?search="+search, "alice", "", "")
	var series []struct {
		Channel struct{ ID, Name string }
		Values  [][2]int64
	}
	if err := json.Unmarshal(r.body, &series); err != nil || r.status != 200 || len(series) != 2 || len(series[0].Values) != 2 {
		t.Fatalf("GET chart: %s (%v)", r, err)
	}

	stat := url.QueryEscape(`{"from": "2025-02-03 10:00", "to": "2025-02-03 10:10", "profile": "live", "statistics": {"statistics": "dstip"}}`)
	want := `[{"ts":"2025-02-03 10:01:00.000","td":420.000,"dstip":"10.0.0.2","pkt":31,"byt":3100,"fl":3}]`
	for name, req := range map[string]struct{ path, ct, body string }{
		"query string": {"/rest/fmc/analysis/statistics?showonly=1&search=" + stat, "", ""},
		"form body":    {"/rest/fmc/analysis/statistics", "application/x-www-form-urlencoded", "showonly=1&search=" + stat},
	} {
		r := e.do(t, http.MethodPost, req.path, "alice", req.ct, req.body)
		var id struct{ ID int64 }
		if err := json.Unmarshal(r.body, &id); err != nil || r.status != http.StatusCreated {
			t.Fatalf("%s: %s", name, r)
		}
		res := e.do(t, http.MethodGet, fmt.Sprintf("/rest/fmc/analysis/results/%d", id.ID), "alice", "", "")
		if diff := cmp.Diff(string(res.body), want); diff != "" {
			t.Errorf("%s (-got +want):\n%s", name, diff)
		}
	}
	r = e.do(t, http.MethodPost, "/rest/fmc/analysis/statistics?showonly=ten&search="+stat, "alice", "", "")
	if r.status != 400 || !strings.Contains(r.detail(t), `showonly "ten"`) {
		t.Errorf("bad showonly parameter: %s", r)
	}
	r = e.do(t, http.MethodGet, "/rest/fmc/analysis/chart?search=%7Bnope", "alice", "", "")
	if r.status != 400 || !strings.Contains(r.detail(t), "the search parameter is not valid JSON") {
		t.Errorf("bad search parameter: %s", r)
	}
}

// TestLocation: from and to without an offset are read, and ts written, in
// the configured zone, as a Flowmon appliance does in its own.
func TestLocation(t *testing.T) {
	jst := time.FixedZone("JST", 9*60*60)
	e := newEnv(t, func(d *flowmon.Deps) { d.Location = jst })
	r := e.statistics(t, "alice", `{"search": {"from": "2025-02-03 19:00", "to": "2025-02-03 19:10", "statistics": {"statistics": "dstip"}}, "showonly": 1}`)
	want := `[{"ts":"2025-02-03 19:01:00.000","td":420.000,"dstip":"10.0.0.2","pkt":31,"byt":3100,"fl":3}]`
	if diff := cmp.Diff(string(r.body), want); diff != "" {
		t.Errorf("JST (-got +want):\n%s", diff)
	}
	// RFC 3339 carries its own offset.
	r = e.statistics(t, "alice", `{"search": {"from": "2025-02-03T10:00:00Z", "to": "2025-02-03T19:10:00+09:00", "statistics": {"statistics": "dstip"}}, "showonly": 1}`)
	if diff := cmp.Diff(string(r.body), want); diff != "" {
		t.Errorf("RFC 3339 (-got +want):\n%s", diff)
	}
}

// TestResultTTL: a result can be fetched for ResultTTL, then it is gone.
func TestResultTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := flowmon.Deps{
			Flows:    &memFlows{flows: testFlows()},
			Profiles: profiles{exporters: []flowprofile.Exporter{{Address: r1}}},
			Auth:     tokens{"alice": {Subject: "user:alice", Role: auth.RoleAdmin}},
		}
		mux := http.NewServeMux()
		flowmon.New(d).Register(mux)
		serve := func(method, path, body string) *httptest.ResponseRecorder {
			req := httptest.NewRequest(method, path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer alice")
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, req)
			return rec
		}
		rec := serve(http.MethodPost, "/rest/fmc/analysis/statistics", fmt.Sprintf(seedStatistics, `[]`, ""))
		if rec.Code != http.StatusCreated || strings.TrimSpace(rec.Body.String()) != `{"id":1}` {
			t.Fatalf("statistics: %d %s", rec.Code, rec.Body)
		}
		time.Sleep(59 * time.Minute)
		if rec := serve(http.MethodGet, "/rest/fmc/analysis/results/1", ""); rec.Code != http.StatusOK {
			t.Fatalf("after 59 minutes: %d %s", rec.Code, rec.Body)
		}
		time.Sleep(2 * time.Minute)
		rec = serve(http.MethodGet, "/rest/fmc/analysis/results/1", "")
		if rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), "kept for 1h,") {
			t.Fatalf("after 61 minutes: %d %s", rec.Code, rec.Body)
		}
	})
}
