package flowmon

import (
	"errors"
	"net/url"
	"slices"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/yagura/yagura/internal/flowfilter"
	"github.com/yagura/yagura/internal/flowstore"
)

var statisticsSeeds = []struct{ body, search, showonly string }{
	{`{"search": {"from": "2025-02-03 10:00", "to": "2025-02-03 10:10", "profile": "live", "channels": ["192.0.2.1"], ` +
		`"statistics": {"statistics": "record", "orderBy": "bytes"}, "specific": {"aggregateBy": ["srcip", "dstip"]}, "filter": "proto tcp"}, "showonly": 10}`, "", ""},
	{`{"search": {"from": "2025-02-03T10:00:00Z", "to": "2025-02-03T10:10:00+09:00", "statistics": {"statistics": "dstport"}}, "showOnly": 0}`, "", ""},
	{`{"search": {"from": "2025-02-03 10:00", "to": "2025-02-03 10:10", "specific": {"aggregateBy": ["sa", "da", "sa", 1]}}}`, "", ""},
	{`{"search": {"channels": "x", "filter": "port in [22, 3389] and not net 10.0.0.0/8"}, "showonly": "5"}`, "", ""},
	{``, `{"from": "2025-02-03 10:00", "to": "2025-02-03 10:05", "statistics": {"statistics": "srcip", "orderBy": "pkt"}}`, "3"},
	{``, `{"from": "2025-02-03 10:00"`, "-1"},
	{`null`, "", ""},
	{`[]`, "", ""},
	{`{"search": {"from": "2025-02-03 10:00", "to": "2025-02-03 10:10"}, "showonly": 1e99}`, "", ""},
}

// FuzzStatisticsRequest: any body and parameters either give a query the
// store accepts, or a client error that says what is wrong.
func FuzzStatisticsRequest(f *testing.F) {
	for _, s := range statisticsSeeds {
		f.Add([]byte(s.body), s.search, s.showonly)
	}
	f.Fuzz(func(t *testing.T, body []byte, search, showonly string) {
		params := url.Values{}
		if search != "" {
			params.Set("search", search)
		}
		if showonly != "" {
			params.Set("showonly", showonly)
		}
		q, err := parseStatistics(body, params, time.UTC)
		if err != nil {
			checkClientError(t, err)
			return
		}
		if err := q.Top.Validate(); err != nil {
			t.Fatalf("accepted a query the store refuses: %v", err)
		}
		if q.Top.Limit < 1 || q.Top.Limit > maxShowonly {
			t.Fatalf("limit %d", q.Top.Limit)
		}
		if len(q.Top.By) == 0 {
			t.Fatal("no aggregation key")
		}
		for i, k := range q.Top.By {
			if _, err := flowstore.ParseKey(string(k)); err != nil || slices.Contains(q.Top.By[:i], k) {
				t.Fatalf("keys %v", q.Top.By)
			}
		}
		if _, err := flowstore.ParseMeasure(string(q.Top.OrderBy)); err != nil {
			t.Fatalf("order by %q", q.Top.OrderBy)
		}
		checkSelection(t, q.Profile, q.Channels)
		if q.Filter != nil {
			if _, err := flowfilter.Parse(q.Filter.String()); err != nil {
				t.Fatalf("filter %q does not parse back: %v", q.Filter, err)
			}
		}
	})
}

// FuzzChartRequest: the same for charts.
func FuzzChartRequest(f *testing.F) {
	seeds := []struct{ body, search string }{
		{`{"search": {"from": "2025-02-03 10:00", "to": "2025-02-03 10:10", "profile": "live", "channels": ["192.0.2.1", "router1"], "chart": {"measure": "traffic", "protocol": 6}}}`, ""},
		{`{"search": {"from": "2025-02-03 10:01", "to": "2025-02-03 10:04", "chart": {"measure": "flows"}}}`, ""},
		{`{"search": {"from": "2024-01-01T00:00:00Z", "to": "2025-01-01T00:00:00Z", "chart": {"measure": "packets", "protocol": -1}}}`, ""},
		{`{"search": {"chart": {"protocol": "tcp"}}}`, ""},
		{``, `{"from": "2016-03-04 00:05", "to": "2016-03-04 14:20", "profile": "live", "chart": {"measure": "traffic", "protocol": 1}}`},
		{``, `{"from": `},
	}
	for _, s := range seeds {
		f.Add([]byte(s.body), s.search)
	}
	f.Fuzz(func(t *testing.T, body []byte, search string) {
		params := url.Values{}
		if search != "" {
			params.Set("search", search)
		}
		q, err := parseChart(body, params, time.UTC)
		if err != nil {
			checkClientError(t, err)
			return
		}
		s := q.Series
		if s.Interval != flowstore.RollupInterval {
			t.Fatalf("interval %s", s.Interval)
		}
		if !s.Until.Truncate(s.Interval).After(s.Since.Truncate(s.Interval)) || s.Until.Sub(s.Since) > maxChartRange {
			t.Fatalf("range %s – %s", s.Since, s.Until)
		}
		if _, err := flowstore.ParseMeasure(string(s.Measure)); err != nil {
			t.Fatalf("measure %q", s.Measure)
		}
		checkSelection(t, q.Profile, q.Channels)
	})
}

func checkClientError(t *testing.T, err error) {
	t.Helper()
	var br *badRequest
	if !errors.As(err, &br) {
		t.Fatalf("error %T (%v) is not the client's", err, err)
	}
	if br.msg == "" || !utf8.ValidString(br.msg) {
		t.Fatalf("error message %q", br.msg)
	}
}

func checkSelection(t *testing.T, profile string, channels []string) {
	t.Helper()
	if profile == "" || len(channels) > maxChannels {
		t.Fatalf("profile %q, %d channels", profile, len(channels))
	}
	for i, c := range channels {
		if c == "" || slices.Contains(channels[:i], c) {
			t.Fatalf("channels %q", channels)
		}
	}
}
