package proto

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDecodeHeartbeat(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want *Heartbeat
		err  string
	}{
		{
			name: "minimal",
			in:   `{"v":1,"seq":2,"clock":1700000000000,"up":5}`,
			want: &Heartbeat{V: 1, Seq: 2, ClockMillis: 1700000000000, UptimeSeconds: 5},
		},
		{
			name: "newer agent's unknown fields are ignored",
			in:   `{"v":2,"seq":1,"clock":1700000000000,"up":5,"future":{"x":1}}`,
			want: &Heartbeat{V: 2, Seq: 1, ClockMillis: 1700000000000, UptimeSeconds: 5},
		},
		{
			name: "inventory",
			in:   `{"v":1,"seq":1,"clock":1,"up":0,"inv":{"hostname":"web01","os":"linux","agent_version":"1.0","ips":["10.0.0.1","2001:db8::1"]}}`,
			want: &Heartbeat{V: 1, Seq: 1, ClockMillis: 1, Inventory: &Inventory{Hostname: "web01", OS: "linux", AgentVersion: "1.0", IPs: []string{"10.0.0.1", "2001:db8::1"}}},
		},
		{name: "empty body", in: ``, err: "body is empty"},
		{name: "truncated", in: `{"v":1,"seq":`, err: "body is truncated"},
		{name: "syntax", in: `{"v":1,}`, err: "malformed JSON at byte"},
		{name: "wrong type", in: `{"v":"one"}`, err: `field "v": want int`},
		{name: "trailing data", in: `{"v":1,"clock":1} {}`, err: "after the JSON message"},
		{name: "version zero", in: `{"seq":1,"clock":1}`, err: "v: unsupported"},
		{name: "no clock", in: `{"v":1}`, err: "clock: missing"},
		{name: "negative uptime", in: `{"v":1,"clock":1,"up":-1}`, err: "up: uptime -1 s out of range"},
		{name: "huge uptime", in: `{"v":1,"clock":1,"up":9223372036854775807}`, err: "out of range"},
		{name: "bad ip", in: `{"v":1,"clock":1,"inv":{"hostname":"h","ips":["10.0.0.300"]}}`, err: `inv.ips[0]: "10.0.0.300" is not an IP`},
		{name: "no hostname", in: `{"v":1,"clock":1,"inv":{"os":"linux"}}`, err: "inv.hostname: missing"},
		{name: "long hostname", in: `{"v":1,"clock":1,"inv":{"hostname":"` + strings.Repeat("h", 256) + `"}}`, err: "inv.hostname: longer than 255"},
		{name: "too big", in: `{"v":1,"clock":1,"pad":"` + strings.Repeat("x", MaxBody) + `"}`, err: "larger than 64 KiB"},
		{name: "exactly one byte too big", in: `{"v":1,"clock":1,"pad":"` + strings.Repeat("x", MaxBody-25) + `"}`, err: "larger than 64 KiB"},
		{name: "exactly the limit", in: `{"v":1,"clock":1,"pad":"` + strings.Repeat("x", MaxBody-26) + `"}`, want: &Heartbeat{V: 1, ClockMillis: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var hb Heartbeat
			err := Decode(strings.NewReader(tc.in), &hb)
			if err == nil {
				err = hb.Validate()
			}
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(&hb, tc.want); diff != "" {
				t.Errorf("(-got +want)\n%s", diff)
			}
		})
	}
}

func TestEnrollValidate(t *testing.T) {
	ok := EnrollRequest{V: 1, Token: "yat_x", CSR: "pem", Inventory: Inventory{Hostname: "h"}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*EnrollRequest){
		"token: missing":     func(e *EnrollRequest) { e.Token = "" },
		"csr: missing":       func(e *EnrollRequest) { e.CSR = "" },
		"inventory.hostname": func(e *EnrollRequest) { e.Inventory.Hostname = "" },
		"v: unsupported":     func(e *EnrollRequest) { e.V = 0 },
	} {
		e := ok
		mut(&e)
		if err := e.Validate(); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: got %v", name, err)
		}
	}
}

// FuzzHeartbeat: whatever arrives from the network is either refused with
// an error or valid by every rule, and never panics.
func FuzzHeartbeat(f *testing.F) {
	f.Add([]byte(`{"v":1,"seq":2,"clock":1700000000000,"up":5,"ctr":{"a":1}}`))
	f.Add([]byte(`{"v":1,"clock":1,"inv":{"hostname":"h","ips":["::1"]}}`))
	f.Add([]byte(`{"v":1,"clock":1,"inv":null,"ctr":null}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var hb Heartbeat
		if err := Decode(strings.NewReader(string(b)), &hb); err != nil {
			return
		}
		if err := hb.Validate(); err != nil {
			return
		}
		if hb.V < 1 || hb.ClockMillis <= 0 || len(hb.Counters) > maxCounters {
			t.Fatalf("accepted invalid heartbeat %+v", hb)
		}
	})
}

func FuzzEnroll(f *testing.F) {
	f.Add([]byte(`{"v":1,"token":"t","csr":"c","inventory":{"hostname":"h"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var e EnrollRequest
		if Decode(strings.NewReader(string(b)), &e) != nil || e.Validate() != nil {
			return
		}
		if e.Token == "" || e.CSR == "" || e.Inventory.Hostname == "" {
			t.Fatalf("accepted %+v", e)
		}
	})
}

func FuzzEventBatch(f *testing.F) {
	f.Add([]byte(`{"v":1,"events":[{"id":"e1","type":"agent-started","time":"2026-01-02T03:04:05Z","severity":"info","data":{"version":"1"}}]}`))
	f.Add([]byte(`{"v":1,"events":[{"id":"e1","type":"x","time":"2026-01-02T03:04:05Z","severity":"warning","data":[1]}]}`))
	f.Add([]byte(`{"v":1,"events":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var batch EventBatch
		if DecodeLimit(strings.NewReader(string(b)), &batch, MaxEventsBody) != nil || batch.Validate() != nil {
			return
		}
		for _, e := range batch.Events {
			if e.ID == "" || !validName(e.Type) || !severities[e.Severity] || e.Time.IsZero() {
				t.Fatalf("accepted %+v", e)
			}
			if len(e.Data) > 0 && !json.Valid(e.Data) {
				t.Fatalf("accepted invalid JSON data %q", e.Data)
			}
		}
	})
}

func FuzzJobStatus(f *testing.F) {
	f.Add([]byte(`{"v":1,"job_id":"j1","status":"succeeded","result":{"ok":true},"file_id":"abc"}`))
	f.Add([]byte(`{"v":1,"job_id":"j1","status":"cancelled"}`))
	f.Add([]byte(`{"v":1,"job_id":"","status":"failed","result":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var s JobStatus
		if Decode(strings.NewReader(string(b)), &s) != nil || s.Validate() != nil {
			return
		}
		if s.JobID == "" || (s.Status != "running" && s.Status != "succeeded" && s.Status != "failed") {
			t.Fatalf("accepted %+v", s)
		}
		if len(s.Result) > 0 && !json.Valid(s.Result) {
			t.Fatalf("accepted invalid result %q", s.Result)
		}
	})
}
