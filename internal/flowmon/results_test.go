package flowmon

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/yagura/yagura/internal/flowstore"
)

func TestResultsBounds(t *testing.T) {
	now := time.Date(2025, 2, 3, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name               string
		maxCount, maxBytes int
		sizes              []int
		want               []int64 // IDs left
	}{
		{"within bounds", 3, 100, []int{10, 10, 10}, []int64{1, 2, 3}},
		{"by count, oldest first", 2, 100, []int{10, 10, 10}, []int64{2, 3}},
		{"by size, oldest first", 10, 25, []int{10, 10, 10}, []int64{2, 3}},
		{"the newest stays even when too large alone", 10, 25, []int{10, 30}, []int64{2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newResults(time.Hour, tt.maxCount, tt.maxBytes)
			for _, n := range tt.sizes {
				s.put("user:a", []byte(strings.Repeat("x", n)), now)
			}
			var left []int64
			for id := int64(1); id <= int64(len(tt.sizes)); id++ {
				if _, ok := s.get("user:a", id, now); ok {
					left = append(left, id)
				}
			}
			if diff := cmp.Diff(left, tt.want); diff != "" {
				t.Errorf("left (-got +want):\n%s", diff)
			}
		})
	}
}

func TestResultsExpire(t *testing.T) {
	now := time.Date(2025, 2, 3, 10, 0, 0, 0, time.UTC)
	s := newResults(time.Hour, 10, 1000)
	a := s.put("user:a", []byte("[]"), now)
	b := s.put("user:a", []byte("[]"), now.Add(30*time.Minute))
	if _, ok := s.get("user:b", a, now); ok {
		t.Error("another user read a result")
	}
	if _, ok := s.get("user:a", a, now.Add(59*time.Minute)); !ok {
		t.Error("result gone before its hour")
	}
	if _, ok := s.get("user:a", a, now.Add(61*time.Minute)); ok {
		t.Error("result still there after its hour")
	}
	if _, ok := s.get("user:a", b, now.Add(61*time.Minute)); !ok {
		t.Error("a younger result went with the old one")
	}
	if s.len() != 1 {
		t.Errorf("%d results kept, want 1", s.len())
	}
}

func TestEncodeRows(t *testing.T) {
	t0 := time.Date(2025, 2, 3, 10, 0, 1, 234_567_000, time.UTC)
	by := []flowstore.Key{flowstore.KeySrcIP, flowstore.KeyDstIP, flowstore.KeySrcPort, flowstore.KeyProto, flowstore.KeyExporter, flowstore.KeyInIf, flowstore.KeyIPVer}
	rows := []flowstore.TopRow{
		{Keys: []string{"::ffff:10.0.0.1", "2001:db8::1", "443", "6", "192.0.2.1", "3", "4"}, Bytes: 1 << 40, Packets: 7, Flows: 1, FirstSeen: t0, LastSeen: t0.Add(1500 * time.Millisecond)},
		// A backend that returns something unexpected still yields JSON.
		{Keys: []string{"not an address", `"quoted"`}, FirstSeen: t0, LastSeen: t0.Add(-time.Second)},
	}
	got := string(encodeRows(by, rows, time.UTC))
	want := `[{"ts":"2025-02-03 10:00:01.234","td":1.500,"srcip":"10.0.0.1","dstip":"2001:db8::1","srcport":443,"proto":6,"exporter":"192.0.2.1","inif":3,"ipver":4,"pkt":7,"byt":1099511627776,"fl":1},` +
		`{"ts":"2025-02-03 10:00:01.234","td":0.000,"srcip":"not an address","dstip":"\"quoted\"","srcport":"","proto":"","exporter":"","inif":"","ipver":"","pkt":0,"byt":0,"fl":0}]`
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("rows (-got +want):\n%s", diff)
	}
}
