package logging

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// logAll logs one line at each level with a component attribute.
func logAll(t *testing.T, cfg Config) string {
	t.Helper()
	var buf bytes.Buffer
	log, err := New(&buf, cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	log = log.With("component", "test")
	log.Debug("debug line", "n", 1)
	log.Info("info line", "n", 2)
	log.Warn("warn line", "n", 3)
	log.Error("error line", "n", 4)
	return buf.String()
}

var textTime = regexp.MustCompile(`(?m)^time=\S+ `)

// textLines drops the time from text log lines.
func textLines(t *testing.T, out string) []string {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if out == "" {
		return nil
	}
	for i, l := range lines {
		if !textTime.MatchString(l) {
			t.Errorf("line %q does not start with a time", l)
		}
		lines[i] = textTime.ReplaceAllString(l, "")
	}
	return lines
}

func TestText(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{
			name: "default",
			cfg:  DefaultConfig(),
			want: []string{
				"level=INFO msg=\"info line\" component=test n=2",
				"level=WARN msg=\"warn line\" component=test n=3",
				"level=ERROR msg=\"error line\" component=test n=4",
			},
		},
		{
			name: "debug",
			cfg:  Config{Format: "text", Level: "debug"},
			want: []string{
				"level=DEBUG msg=\"debug line\" component=test n=1",
				"level=INFO msg=\"info line\" component=test n=2",
				"level=WARN msg=\"warn line\" component=test n=3",
				"level=ERROR msg=\"error line\" component=test n=4",
			},
		},
		{
			name: "empty format is text",
			cfg:  Config{Level: "error"},
			want: []string{"level=ERROR msg=\"error line\" component=test n=4"},
		},
		{
			name: "format and level in capitals",
			cfg:  Config{Format: "TEXT", Level: "WARN"},
			want: []string{
				"level=WARN msg=\"warn line\" component=test n=3",
				"level=ERROR msg=\"error line\" component=test n=4",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := textLines(t, logAll(t, tt.cfg))
			if diff := cmp.Diff(got, tt.want); diff != "" {
				t.Errorf("log lines (-got +want):\n%s", diff)
			}
		})
	}
}

func TestJSON(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []map[string]any
	}{
		{
			name: "info",
			cfg:  Config{Format: "json", Level: "info"},
			want: []map[string]any{
				{"level": "INFO", "msg": "info line", "component": "test", "n": 2.0},
				{"level": "WARN", "msg": "warn line", "component": "test", "n": 3.0},
				{"level": "ERROR", "msg": "error line", "component": "test", "n": 4.0},
			},
		},
		{
			name: "warn",
			cfg:  Config{Format: "JSON", Level: "warn"},
			want: []map[string]any{
				{"level": "WARN", "msg": "warn line", "component": "test", "n": 3.0},
				{"level": "ERROR", "msg": "error line", "component": "test", "n": 4.0},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := logAll(t, tt.cfg)
			var got []map[string]any
			for line := range strings.Lines(out) {
				var rec map[string]any
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Fatalf("line %q is not JSON: %v", line, err)
				}
				if _, ok := rec["time"].(string); !ok {
					t.Errorf("line %q has no time", line)
				}
				delete(rec, "time")
				got = append(got, rec)
			}
			if diff := cmp.Diff(got, tt.want); diff != "" {
				t.Errorf("log records (-got +want):\n%s", diff)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"unknown level", Config{Format: "text", Level: "verbose"}, `log.level "verbose": want debug, info, warn or error`},
		{"empty level", Config{Format: "text"}, `log.level "": want debug, info, warn or error`},
		{"unknown format", Config{Format: "logfmt", Level: "info"}, `log.format "logfmt": want text or json`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			log, err := New(&buf, tt.cfg)
			if err == nil {
				t.Fatalf("New(%+v) = %v; want an error", tt.cfg, log)
			}
			if err.Error() != tt.wantErr {
				t.Errorf("New(%+v) error = %q; want %q", tt.cfg, err, tt.wantErr)
			}
			if buf.Len() != 0 {
				t.Errorf("New wrote %q", buf.String())
			}
		})
	}
}
