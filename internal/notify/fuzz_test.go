package notify

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/leodido/go-syslog/v4/rfc5424"

	"github.com/yagura/yagura/internal/cef"
)

// FuzzSyslogFormat: every RFC 5424 message the sender writes parses with
// go-syslog's strict parser, its ID comes back unchanged (as SDParamValue
// says), its MSGID is the sanitised type, and its CEF or JSON payload parses
// back to what was sent.
func FuzzSyslogFormat(f *testing.F) {
	f.Add("01JQ7Z", "computer-offline", "critical", "【Yagura】オフライン", "本文\n2行目 a=b", "mgr01", "rule", "r=1|x", false, int64(1775035815123))
	f.Add(`a"b\c]d`, "", "", "", "", "", "", "", true, int64(0))
	f.Add("\xff\x00\n]", "type with spaces/ファイア", "info", "\\|", "\r", "host name", "src", "::1", false, int64(-1))
	f.Add("id", "\x7f"+strings.Repeat("t", 40), "warning", "t", "x", "h", "dpt", "99999", true, int64(253402300800000))
	f.Fuzz(func(t *testing.T, id, typ, sev, title, text, host, fk, fv string, jsonPayload bool, ms int64) {
		if id == "" {
			id = "-" // Send refuses an empty ID
		}
		m := Message{
			ID: id, Kind: "alert", Time: time.UnixMilli(ms).UTC(), Type: typ, Severity: sev,
			Title: title, Text: text, Hostname: host, Fields: map[string]string{fk: fv},
		}
		cfg := SyslogConfig{Hostname: host}
		if jsonPayload {
			cfg.Payload = PayloadJSON
		}
		fixed := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		fm, err := newSyslogFormatter(cfg, options{version: "1.0", now: func() time.Time { return fixed }})
		if err != nil {
			t.Fatal(err)
		}
		line := fm.Format(m)
		if strings.ContainsAny(string(line), "\r\n") {
			t.Fatalf("line break in %q", line)
		}
		res, err := rfc5424.NewParser().Parse(line)
		if err != nil {
			t.Fatalf("parse %q: %v", line, err)
		}
		sm := res.(*rfc5424.SyslogMessage)
		if sm.StructuredData == nil {
			t.Fatalf("no structured data in %q", line)
		}
		if got, want := (*sm.StructuredData)[SDID]["id"], SDParamValue(id); got != want {
			t.Fatalf("SD id = %q, want %q\nline %q", got, want, line)
		}
		wantMsgID := headerToken(typ, 32)
		if (sm.MsgID == nil) != (wantMsgID == "-") || sm.MsgID != nil && *sm.MsgID != wantMsgID {
			t.Fatalf("MSGID = %v, want %q", sm.MsgID, wantMsgID)
		}
		if sm.Message == nil {
			t.Fatalf("no MSG in %q", line)
		}
		mt := msgTime(m, func() time.Time { return fixed })
		if !sm.Timestamp.Equal(mt.Truncate(time.Microsecond)) {
			t.Fatalf("timestamp %v, want %v", sm.Timestamp, mt)
		}
		if jsonPayload {
			var got Message
			if err := json.Unmarshal([]byte(*sm.Message), &got); err != nil {
				t.Fatalf("JSON payload: %v\n%s", err, *sm.Message)
			}
			if utf8.ValidString(id) && got.ID != id {
				t.Fatalf("JSON id = %q, want %q", got.ID, id)
			}
			return
		}
		rec, err := cef.Parse(*sm.Message)
		if err != nil {
			t.Fatalf("CEF payload: %v\n%q", err, *sm.Message)
		}
		m.Time = mt
		if diff := cmp.Diff(rec, CEFRecord(m, "1.0"), cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("CEF (-got +want):\n%s", diff)
		}
	})
}

// FuzzConfigJSON: any JSON either fails to decode or to validate with a
// *FieldError, or gives a config whose sender can be made, whose redacted
// form holds no secret and gets them back from WithSecretsFrom, and which
// survives a JSON round trip.
func FuzzConfigJSON(f *testing.F) {
	files, _ := filepath.Glob("testdata/config/*.json")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var c Config
		if json.Unmarshal(data, &c) != nil {
			return
		}
		if err := c.Validate(); err != nil {
			if strings.TrimSpace(err.Error()) == "" {
				t.Fatal("empty error")
			}
			return
		}
		s, err := New(c)
		if err != nil {
			t.Fatalf("Validate passed but New: %v", err)
		}
		s.Close()

		r := c.Redacted()
		b, _ := json.Marshal(r)
		if c.SMTP != nil && c.SMTP.Password != "" && strings.Contains(string(b), `"password":`) {
			t.Fatalf("redacted SMTP config shows a password: %s", b)
		}
		if c.Webhook != nil && strings.Contains(string(b), `"secret":`) {
			t.Fatalf("redacted webhook config shows the secret: %s", b)
		}
		want := c.clone()
		if want.SMTP != nil {
			want.SMTP.PasswordSet = false
		}
		if want.Webhook != nil {
			want.Webhook.SecretSet = false
		}
		if diff := cmp.Diff(r.WithSecretsFrom(c), want, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("Redacted().WithSecretsFrom() (-got +want):\n%s", diff)
		}

		b, err = json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		var again Config
		if err := json.Unmarshal(b, &again); err != nil {
			t.Fatalf("re-decode %s: %v", b, err)
		}
		if err := again.Validate(); err != nil {
			t.Fatalf("re-decoded config invalid: %v\n%s", err, b)
		}
		if diff := cmp.Diff(again, c, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("JSON round trip (-got +want):\n%s", diff)
		}
	})
}
