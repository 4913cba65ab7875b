package api

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"
)

// TestExportWriter streams rows through a real HTTP server and checks what
// a client sees: whole exports end cleanly, an export whose store fails
// midway is cut off (and JSON lines say why first), in both formats.
func TestExportWriter(t *testing.T) {
	mux := http.NewServeMux()
	hapi := humago.New(mux, huma.DefaultConfig("test", "0"))
	huma.Register(hapi, huma.Operation{OperationID: "export", Method: http.MethodGet, Path: "/export"},
		func(ctx context.Context, in *struct {
			Format string `query:"format"`
			Rows   int    `query:"rows"`
			FailAt int    `query:"fail_at"`
		}) (*huma.StreamResponse, error) {
			return &huma.StreamResponse{Body: func(hctx huma.Context) {
				x := newExportWriter(hctx, in.Format, "yagura-things", []string{"n"})
				var err error
				for i := 1; i <= in.Rows && err == nil; i++ {
					if i == in.FailAt {
						err = errors.New("disk on fire")
						break
					}
					if x.csv() {
						err = x.writeCSV([]string{strconv.Itoa(i)})
					} else {
						err = x.writeJSON(map[string]int{"n": i})
					}
				}
				x.finish(ctx, slog.New(slog.DiscardHandler), "things", "thing store", err)
			}}, nil
		})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	tests := []struct {
		name, format    string
		rows, failAt    int
		wantType        string
		wantLines       int    // lines received, header and error line included
		wantLast        string // the last line
		wantCut         bool
		wantDisposition string
	}{
		{"csv whole", "csv", 2500, 0, "text/csv; charset=utf-8", 2501, "2500", false, `attachment; filename="yagura-things.csv"`},
		{"csv cut", "csv", 2500, 1500, "text/csv; charset=utf-8", 1500, "1499", true, `attachment; filename="yagura-things.csv"`},
		{"json whole", "json", 2500, 0, "application/x-ndjson", 2500, `{"n":2500}`, false, `attachment; filename="yagura-things.jsonl"`},
		{"json cut", "json", 2500, 1500, "application/x-ndjson", 1500,
			`{"error":"export stopped after 1499 things: the thing store failed"}`, true, `attachment; filename="yagura-things.jsonl"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := http.Get(srv.URL + "/export?format=" + tt.format + "&rows=" + strconv.Itoa(tt.rows) + "&fail_at=" + strconv.Itoa(tt.failAt))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if got := resp.Header.Get("Content-Type"); got != tt.wantType {
				t.Errorf("Content-Type %q, want %q", got, tt.wantType)
			}
			if got := resp.Header.Get("Content-Disposition"); got != tt.wantDisposition {
				t.Errorf("Content-Disposition %q, want %q", got, tt.wantDisposition)
			}
			body, err := io.ReadAll(resp.Body)
			if cut := err != nil; cut != tt.wantCut {
				t.Errorf("read error %v; want the body cut off: %v", err, tt.wantCut)
			}
			if tt.format == "csv" && !strings.HasPrefix(string(body), "\ufeffn\n") {
				t.Errorf("CSV starts %q, want a byte order mark and the header", body[:min(len(body), 8)])
			}
			var lines []string
			for s := bufio.NewScanner(strings.NewReader(string(body))); s.Scan(); {
				lines = append(lines, s.Text())
			}
			if len(lines) != tt.wantLines || lines[len(lines)-1] != tt.wantLast {
				t.Errorf("%d lines ending %q; want %d ending %q", len(lines), lines[len(lines)-1], tt.wantLines, tt.wantLast)
			}
		})
	}
}
