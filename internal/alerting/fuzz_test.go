package alerting

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/telemetry"
)

// FuzzParseDefinition: any bytes an administrator (or a client) sends as a
// rule either parse into a valid definition that survives a round trip and
// can be evaluated, or give an error — never a panic.
func FuzzParseDefinition(f *testing.F) {
	f.Add([]byte(`{"filter":{"types":["firewall"],"data":{"action":"deny"}},"group_by":"data.src","threshold":20,"window":"1m"}`))
	f.Add([]byte(`{"threshold":1,"window":"1s","suppress":"1h","filter":{"text":"ポリシー","min_severity":"warning"}}`))
	f.Add([]byte(`{"threshold":3,"window":"1m","group_by":"computer"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseDefinition(b)
		if err != nil {
			return
		}
		out, err := json.Marshal(d)
		if err != nil {
			t.Fatalf("marshal %+v: %v", d, err)
		}
		d2, err := ParseDefinition(out)
		if err != nil {
			t.Fatalf("a valid definition does not parse again: %s: %v", out, err)
		}
		e := decode(telemetry.Event{ComputerID: "c", ID: "1", Type: "firewall", Severity: "warning", Time: time.Now(), Data: `{"src":"x","action":"deny"}`})
		if d2.Filter.match(e) {
			if _, _, _, ok := d2.group(e); ok {
				var g window
				g.add(e.Time, e.ComputerID, e.ID, d2.Threshold, time.Duration(d2.Window))
			}
		}
	})
}
