package notify

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/yagura/yagura/internal/cef"
)

func TestCEFRecord(t *testing.T) {
	m := testMessage("01JQ7Z")
	m.Fields["spt"] = "not-a-port" // wrong type: a custom string
	m.Fields["msg"] = "mine"       // a key CEFRecord fills itself
	m.Fields["protocol"] = "TCP"   // alias of proto
	m.Fields["cs2"] = "explicit"   // takes its own slot
	m.Fields["smac"] = "02:00:00:00:00:01"
	m.Fields["tab"] = "a\tb\x00c\x7f" // controls become spaces
	got := CEFRecord(m, "1.2.3")
	want := cef.Record{
		DeviceVendor: "Yagura", DeviceProduct: "Yagura", DeviceVersion: "1.2.3",
		SignatureID: "computer-offline", Name: m.Title, Severity: "10",
		Extensions: []cef.Extension{
			{Key: "rt", Value: "1775035815123"},
			{Key: "externalId", Value: "01JQ7Z"},
			{Key: "cat", Value: "alert"},
			{Key: "dvchost", Value: "経理-PC01"},
			{Key: "deviceExternalId", Value: "c-0042"},
			{Key: "msg", Value: m.Text},
			{Key: "act", Value: "deny"},
			{Key: "cs2", Value: "explicit"},
			{Key: "dpt", Value: "443"},
			{Key: "dst", Value: "2001:db8::1"},
			{Key: "proto", Value: "TCP"},
			{Key: "smac", Value: "02:00:00:00:00:01"},
			{Key: "src", Value: "192.0.2.10"},
			{Key: "cs1", Value: "mine"}, {Key: "cs1Label", Value: "msg"},
			{Key: "cs3", Value: "ルール=1 | \\block"}, {Key: "cs3Label", Value: "rule"},
			{Key: "cs4", Value: "not-a-port"}, {Key: "cs4Label", Value: "spt"},
			{Key: "cs5", Value: "a b c "}, {Key: "cs5Label", Value: "tab"},
		},
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("(-got +want):\n%s", diff)
	}
	if err := got.Validate(); err != nil {
		t.Error(err)
	}
}

func TestCEFRecordOverflow(t *testing.T) {
	m := Message{ID: "x", Kind: "event", Type: "t", Severity: "warning", Title: "t", Text: "body", Fields: map[string]string{}}
	for i := range 8 {
		m.Fields[fmt.Sprintf("f%d", i)] = fmt.Sprintf("v%d", i)
	}
	r := CEFRecord(m, "")
	if v, _ := r.Get("cs6Label"); v != "f5" {
		t.Errorf("cs6Label = %q, want f5", v)
	}
	if v, _ := r.Get("msg"); v != "body\nf6=v6\nf7=v7" {
		t.Errorf("msg = %q: the fields past cs6 belong there", v)
	}
	if r.Severity != "5" {
		t.Errorf("severity %q", r.Severity)
	}
	for sev, want := range map[string]string{"critical": "10", "ERROR": "8", "warning": "5", "info": "3", "debug": "Unknown"} {
		if got := CEFSeverity(sev); got != want {
			t.Errorf("CEFSeverity(%q) = %q, want %q", sev, got, want)
		}
	}
	// Duplicate aliases: the CEF key wins, the alias becomes a custom string.
	m = Message{ID: "y", Fields: map[string]string{"act": "allow", "action": "deny"}}
	r = CEFRecord(m, "")
	if v, _ := r.Get("act"); v != "allow" {
		t.Errorf("act = %q", v)
	}
	if v, _ := r.Get("cs1Label"); v != "action" {
		t.Errorf("cs1Label = %q", v)
	}
	if _, ok := r.Get("msg"); ok {
		t.Error("empty text still wrote msg")
	}
}
