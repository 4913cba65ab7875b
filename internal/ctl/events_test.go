package ctl

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseWhen(t *testing.T) {
	now := time.Date(2025, 4, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		in      string
		want    time.Time
		wantErr string
	}{
		{name: "minutes", in: "30m", want: now.Add(-30 * time.Minute)},
		{name: "hours", in: "24h", want: now.Add(-24 * time.Hour)},
		{name: "days", in: "7d", want: now.Add(-7 * 24 * time.Hour)},
		{name: "zero", in: "0s", want: now},
		{name: "RFC 3339", in: "2025-03-31T09:00:00+09:00", want: time.Date(2025, 3, 31, 0, 0, 0, 0, time.UTC)},
		{name: "RFC 3339 with fraction", in: "2025-03-31T00:00:00.5Z", want: time.Date(2025, 3, 31, 0, 0, 0, 5e8, time.UTC)},
		{name: "date", in: "2025-03-31", want: time.Date(2025, 3, 31, 0, 0, 0, 0, time.Local)},
		{name: "negative", in: "-1h", wantErr: `--since "-1h": a duration means that long ago; give it without a sign`},
		{name: "words", in: "yesterday", wantErr: `--since "yesterday": want a duration back from now (30m, 24h, 7d), an RFC 3339 time`},
		{name: "bad days", in: "xd", wantErr: `--since "xd": want a duration`},
		{name: "time without zone", in: "2025-03-31T09:00:00", wantErr: "want a duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseWhen("since", tt.in, now)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseWhen(%q) = %v, %v; want an error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseWhen(%q): %v", tt.in, err)
			}
			if !got.Equal(tt.want) {
				t.Errorf("parseWhen(%q) = %v; want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestEventSearchQuery(t *testing.T) {
	now := time.Date(2025, 4, 1, 12, 0, 0, 0, time.UTC)
	s := eventSearch{since: "1h", until: "2025-04-01T11:30:00Z", computers: []string{"a", "b"}, types: []string{"firewall"}, severities: []string{"critical", "error"}, text: "203.0.113.5"}
	q, err := s.query(now)
	if err != nil {
		t.Fatal(err)
	}
	want := "computer=a%2Cb&q=203.0.113.5&severity=critical%2Cerror&since=2025-04-01T11%3A00%3A00Z&type=firewall&until=2025-04-01T11%3A30%3A00Z"
	if diff := cmp.Diff(q.Encode(), want); diff != "" {
		t.Errorf("query (-got +want):\n%s", diff)
	}
	if _, err := (&eventSearch{until: "soon"}).query(now); err == nil || !strings.Contains(err.Error(), `--until "soon"`) {
		t.Errorf("bad --until: %v", err)
	}
}

func TestTailWriterComplete(t *testing.T) {
	long := strings.Repeat("x", 3*tailSize)
	tests := []struct {
		name    string
		format  string
		writes  []string
		wantErr string
	}{
		{name: "csv header only", format: "csv", writes: []string{"\ufefftime,computer_id\n"}},
		{name: "csv rows", format: "csv", writes: []string{"\ufefftime,computer_id\n", "a,b\n", long + "\n"}},
		{name: "csv cut short", format: "csv", writes: []string{"\ufefftime,computer_id\n", "a,b\nc,"}, wantErr: "stopped early"},
		{name: "csv nothing", format: "csv", wantErr: "sent nothing"},
		{name: "json empty", format: "json"},
		{name: "json lines", format: "json", writes: []string{`{"id":"1"}` + "\n", `{"id":"2","data":{"error":"x"}}` + "\n"}},
		{name: "json long write", format: "json", writes: []string{`{"id":"` + long + `"}` + "\n"}},
		{
			name: "json error line", format: "json",
			writes:  []string{`{"id":"1"}` + "\n" + `{"error":"export stopped after 1 events: the telemetry store failed"}` + "\n"},
			wantErr: "export events: export stopped after 1 events: the telemetry store failed",
		},
		{name: "json error only", format: "json", writes: []string{`{"error":"export stopped after 0 events: x"}` + "\n"}, wantErr: "after 0 events"},
		{name: "json cut short", format: "json", writes: []string{`{"id":"1"}` + "\n" + `{"id":`}, wantErr: "stopped early"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w tailWriter
			for _, s := range tt.writes {
				if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if len(w.tail) > tailSize {
				t.Errorf("tail holds %d bytes, more than %d", len(w.tail), tailSize)
			}
			err := w.complete("events", tt.format)
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("complete: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("complete = %v; want an error containing %q", err, tt.wantErr)
			}
		})
	}
	// Flow exports share the check; the error names what was exported.
	var w tailWriter
	if err := w.complete("flows", "csv"); err == nil || !strings.HasPrefix(err.Error(), "export flows: ") {
		t.Errorf("complete(flows) = %v; want an error starting with %q", err, "export flows: ")
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 20: "5.0 MiB", 3 << 40: "3.0 TiB"} {
		if got := byteSize(in); got != want {
			t.Errorf("byteSize(%d) = %q; want %q", in, got, want)
		}
	}
}
