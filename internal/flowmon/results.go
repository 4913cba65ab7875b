package flowmon

import (
	"encoding/json"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/yagura/yagura/internal/flowstore"
)

// tsLayout is how results show a time: nfdump's %ts ("first seen").
const tsLayout = "2006-01-02 15:04:05.000"

// encodeRows renders a statistic as Flowmon's results: a JSON array of
// objects with ts, td, the aggregated fields by name, pkt, byt and fl, in
// that order (jq shows keys in the order they come).
func encodeRows(by []flowstore.Key, rows []flowstore.TopRow, loc *time.Location) []byte {
	b := make([]byte, 0, 64+len(rows)*(100+24*len(by)))
	b = append(b, '[')
	for i, r := range rows {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"ts":`...)
		b = strconv.AppendQuote(b, r.FirstSeen.In(loc).Format(tsLayout))
		b = append(b, `,"td":`...)
		td := max(r.LastSeen.Sub(r.FirstSeen), 0)
		b = strconv.AppendFloat(b, td.Seconds(), 'f', 3, 64)
		for j, k := range by {
			b = append(b, ',')
			b = strconv.AppendQuote(b, string(k))
			b = append(b, ':')
			v := ""
			if j < len(r.Keys) {
				v = r.Keys[j]
			}
			b = appendKeyValue(b, k, v)
		}
		b = append(b, `,"pkt":`...)
		b = strconv.AppendUint(b, r.Packets, 10)
		b = append(b, `,"byt":`...)
		b = strconv.AppendUint(b, r.Bytes, 10)
		b = append(b, `,"fl":`...)
		b = strconv.AppendUint(b, r.Flows, 10)
		b = append(b, '}')
	}
	return append(b, ']')
}

// appendKeyValue writes a group's value: addresses as text (IPv4 in dotted
// form even if the store returns it IPv4-mapped), numbers as JSON numbers,
// as nfdump's JSON output does.
func appendKeyValue(b []byte, k flowstore.Key, v string) []byte {
	switch k {
	case flowstore.KeySrcIP, flowstore.KeyDstIP, flowstore.KeyExporter:
		if a, err := netip.ParseAddr(v); err == nil {
			v = a.Unmap().String()
		}
	default:
		if n, err := strconv.ParseUint(v, 10, 64); err == nil {
			return strconv.AppendUint(b, n, 10)
		}
	}
	out, _ := json.Marshal(v) // escapes what strconv.Quote would not (HTML-safe, valid UTF-8)
	return append(b, out...)
}

// results keeps finished analyses for a while, as Flowmon does, so a
// client can fetch them by ID. It is bounded by age, count and size.
type results struct {
	ttl      time.Duration
	maxCount int
	maxBytes int

	mu    sync.Mutex
	next  int64
	byID  map[int64]*result
	order []int64 // IDs, oldest first
	bytes int
}

type result struct {
	owner   string // the subject that ran it: others cannot read it
	created time.Time
	body    []byte // the encoded rows
}

func newResults(ttl time.Duration, maxCount, maxBytes int) *results {
	return &results{ttl: ttl, maxCount: maxCount, maxBytes: maxBytes, byID: map[int64]*result{}}
}

// put stores a result and returns its ID.
func (s *results) put(owner string, body []byte, now time.Time) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next++
	id := s.next
	s.byID[id] = &result{owner: owner, created: now, body: body}
	s.order = append(s.order, id)
	s.bytes += len(body)
	s.evict(now)
	return id
}

// get returns the result id if it exists, has not expired and belongs to
// owner.
func (s *results) get(owner string, id int64, now time.Time) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.evict(now)
	r, ok := s.byID[id]
	if !ok || r.owner != owner {
		return nil, false
	}
	return r.body, true
}

// evict drops expired results, then the oldest while there are too many
// or they are too large (the newest always stays).
func (s *results) evict(now time.Time) {
	drop := 0
	for drop < len(s.order) {
		r := s.byID[s.order[drop]]
		over := len(s.order)-drop > s.maxCount || s.bytes > s.maxBytes
		if !over && now.Sub(r.created) < s.ttl {
			break
		}
		if drop == len(s.order)-1 && now.Sub(r.created) < s.ttl {
			break // the newest stays even if it alone is over the size
		}
		s.bytes -= len(r.body)
		delete(s.byID, s.order[drop])
		drop++
	}
	if drop > 0 {
		s.order = append(s.order[:0], s.order[drop:]...)
	}
}

func (s *results) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.order)
}
