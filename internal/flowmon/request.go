package flowmon

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/yagura/yagura/internal/flowfilter"
	"github.com/yagura/yagura/internal/flowprofile"
	"github.com/yagura/yagura/internal/flowstore"
)

// Limits on a request.
const (
	// defaultShowonly is the number of rows when showonly is absent
	// (nfdump's -n default).
	defaultShowonly = 10
	// maxShowonly is the most rows a statistic returns; showonly 0 asks
	// for this many, as nfdump's -n 0 asks for all.
	maxShowonly = 10000
	// maxChartRange bounds a chart: a year of 5-minute values per channel.
	maxChartRange = 366 * 24 * time.Hour
	maxChannels   = 1000
)

// badRequest is an error in what the client sent; its text is shown to
// the client as is.
type badRequest struct{ msg string }

func (e *badRequest) Error() string { return e.msg }

func badf(format string, args ...any) error {
	return &badRequest{msg: fmt.Sprintf(format, args...)}
}

// statisticsRequest is the body of POST /rest/fmc/analysis/statistics.
// Field names match case-insensitively (encoding/json), so "showOnly"
// works too; fields Yagura does not know are ignored, because Flowmon
// clients send more than Yagura needs.
type statisticsRequest struct {
	Search   statisticsSearch `json:"search"`
	Showonly *int             `json:"showonly"`
}

type statisticsSearch struct {
	From       string   `json:"from"`
	To         string   `json:"to"`
	Profile    string   `json:"profile"`
	Channels   []string `json:"channels"`
	Statistics struct {
		Statistics string `json:"statistics"`
		OrderBy    string `json:"orderBy"`
	} `json:"statistics"`
	Specific struct {
		AggregateBy []string `json:"aggregateBy"`
	} `json:"specific"`
	Filter string `json:"filter"`
}

// chartRequest is the body of POST /rest/fmc/analysis/chart.
type chartRequest struct {
	Search chartSearch `json:"search"`
}

type chartSearch struct {
	From     string   `json:"from"`
	To       string   `json:"to"`
	Profile  string   `json:"profile"`
	Channels []string `json:"channels"`
	Chart    struct {
		Measure  string `json:"measure"`
		Protocol *int   `json:"protocol"`
	} `json:"chart"`
}

// statisticsQuery is a validated statistics request. Top lacks the
// profile's filter, which needs the profile source.
type statisticsQuery struct {
	Profile  string
	Channels []string
	Filter   flowfilter.Expr // the request's own filter; nil: none
	Top      flowstore.TopQuery
}

// chartQuery is a validated chart request. Series lacks the channel
// filters.
type chartQuery struct {
	Profile  string
	Channels []string
	Series   flowstore.SeriesQuery
}

// parseStatistics reads a statistics request from the JSON body, or, when
// the body is empty, from the "search" (JSON) and "showonly" parameters,
// as older Flowmon clients send them in the query string. A showonly
// parameter also applies to a body without one.
func parseStatistics(body []byte, params url.Values, loc *time.Location) (statisticsQuery, error) {
	var req statisticsRequest
	switch {
	case len(bytes.TrimSpace(body)) > 0:
		if err := decodeJSON(body, "", &req); err != nil {
			return statisticsQuery{}, err
		}
	case params.Has("search"):
		if err := decodeJSON([]byte(params.Get("search")), "search", &req.Search); err != nil {
			return statisticsQuery{}, err
		}
	default:
		return statisticsQuery{}, badf(`the request has no analysis: send JSON {"search": {"from", "to", "profile", "channels", "statistics", "specific", "filter"}, "showonly": N}`)
	}
	if req.Showonly == nil && params.Has("showonly") {
		n, err := strconv.Atoi(strings.TrimSpace(params.Get("showonly")))
		if err != nil {
			return statisticsQuery{}, badf("showonly %q is not a whole number", params.Get("showonly"))
		}
		req.Showonly = &n
	}
	return req.query(loc)
}

func (r statisticsRequest) query(loc *time.Location) (statisticsQuery, error) {
	s := r.Search
	var q statisticsQuery
	var err error
	if q.Top.Since, q.Top.Until, err = parseRange(s.From, s.To, loc); err != nil {
		return q, err
	}
	if q.Profile, q.Channels, err = parseProfile(s.Profile, s.Channels); err != nil {
		return q, err
	}

	q.Top.Limit = defaultShowonly
	if r.Showonly != nil {
		switch n := *r.Showonly; {
		case n < 0:
			return q, badf("showonly %d: give a number of rows from 1 to %d (0: %d)", n, maxShowonly, maxShowonly)
		case n == 0:
			q.Top.Limit = maxShowonly
		case n > maxShowonly:
			return q, badf("showonly %d: at most %d rows", n, maxShowonly)
		default:
			q.Top.Limit = n
		}
	}

	stat := strings.ToLower(strings.TrimSpace(s.Statistics.Statistics))
	switch stat {
	case "", "record":
		if len(s.Specific.AggregateBy) == 0 {
			// nfdump -a: the 5-tuple.
			q.Top.By = []flowstore.Key{flowstore.KeySrcIP, flowstore.KeyDstIP, flowstore.KeySrcPort, flowstore.KeyDstPort, flowstore.KeyProto}
		}
		for i, name := range s.Specific.AggregateBy {
			k, ok := parseKey(name)
			if !ok {
				return q, badf("search.specific.aggregateBy[%d] %q is not supported: use %s", i, name, keyList())
			}
			if !contains(q.Top.By, k) {
				q.Top.By = append(q.Top.By, k)
			}
		}
	default:
		k, ok := parseKey(stat)
		if !ok {
			return q, badf("search.statistics.statistics %q is not supported: use record (IP communication, aggregated by search.specific.aggregateBy) or one of %s", s.Statistics.Statistics, keyList())
		}
		q.Top.By = []flowstore.Key{k}
	}

	switch o := strings.ToLower(strings.TrimSpace(s.Statistics.OrderBy)); o {
	case "", "flows", "fl":
		q.Top.OrderBy = flowstore.Flows
	case "bytes", "byt", "traffic":
		q.Top.OrderBy = flowstore.Bytes
	case "packets", "pkt":
		q.Top.OrderBy = flowstore.Packets
	default:
		return q, badf("search.statistics.orderBy %q is not supported: use bytes, packets or flows", s.Statistics.OrderBy)
	}

	if q.Filter, err = parseFilter(s.Filter); err != nil {
		return q, err
	}
	return q, nil
}

// parseChart reads a chart request from the JSON body or, when the body is
// empty, from the "search" parameter (older Flowmon clients GET the chart
// with the search JSON in the query string).
func parseChart(body []byte, params url.Values, loc *time.Location) (chartQuery, error) {
	var req chartRequest
	switch {
	case len(bytes.TrimSpace(body)) > 0:
		if err := decodeJSON(body, "", &req); err != nil {
			return chartQuery{}, err
		}
	case params.Has("search"):
		if err := decodeJSON([]byte(params.Get("search")), "search", &req.Search); err != nil {
			return chartQuery{}, err
		}
	default:
		return chartQuery{}, badf(`the request has no chart: send JSON {"search": {"from", "to", "profile", "channels", "chart": {"measure", "protocol"}}}`)
	}
	s := req.Search
	var q chartQuery
	var err error
	if q.Series.Since, q.Series.Until, err = parseRange(s.From, s.To, loc); err != nil {
		return q, err
	}
	// The store counts whole 5-minute intervals; an empty range after
	// rounding is the client's mistake, said here in its terms.
	q.Series.Interval = flowstore.RollupInterval
	if !q.Series.Until.Truncate(q.Series.Interval).After(q.Series.Since.Truncate(q.Series.Interval)) {
		return q, badf("search.from %s and search.to %s are in the same 5-minute interval: a chart has one value per 5 minutes, from the interval that holds search.from up to the one that starts at search.to",
			s.From, s.To)
	}
	if q.Series.Until.Sub(q.Series.Since) > maxChartRange {
		return q, badf("search.from to search.to spans %s: a chart covers at most 366 days", q.Series.Until.Sub(q.Series.Since))
	}
	if q.Profile, q.Channels, err = parseProfile(s.Profile, s.Channels); err != nil {
		return q, err
	}
	switch m := strings.ToLower(strings.TrimSpace(s.Chart.Measure)); m {
	case "traffic", "bytes":
		q.Series.Measure = flowstore.Bytes
	case "packets":
		q.Series.Measure = flowstore.Packets
	case "flows":
		q.Series.Measure = flowstore.Flows
	case "":
		return q, badf("search.chart.measure is required: traffic (bytes), packets or flows")
	default:
		return q, badf("search.chart.measure %q is not supported: use traffic (bytes), packets or flows", s.Chart.Measure)
	}
	if p := s.Chart.Protocol; p != nil {
		if *p < 0 || *p > 255 {
			return q, badf("search.chart.protocol %d: use an IP protocol number from 1 to 255 (6 TCP, 17 UDP, 1 ICMP), or 0 for all", *p)
		}
		q.Series.Proto = uint8(*p)
	}
	return q, nil
}

// timeLayouts are what from and to may look like: Flowmon's form first.
var timeLayouts = []string{"2006-01-02 15:04", "2006-01-02 15:04:05", "2006-01-02T15:04", "2006-01-02T15:04:05"}

// parseTime reads Flowmon's "YYYY-MM-DD HH:MM" (seconds optional) in loc,
// or RFC 3339 with its own offset.
func parseTime(field, s string, loc *time.Location) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, badf("%s is required: a time as YYYY-MM-DD HH:MM (%s) or RFC 3339", field, loc)
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	for _, l := range timeLayouts {
		if t, err := time.ParseInLocation(l, s, loc); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, badf("%s %q is not a time: use YYYY-MM-DD HH:MM (%s), e.g. 2025-02-03 10:00, or RFC 3339, e.g. 2025-02-03T10:00:00Z", field, s, loc)
}

// parseRange reads from and to: the flows that started in [from, to).
func parseRange(from, to string, loc *time.Location) (since, until time.Time, err error) {
	if since, err = parseTime("search.from", from, loc); err != nil {
		return
	}
	if until, err = parseTime("search.to", to, loc); err != nil {
		return
	}
	if !until.After(since) {
		err = badf("search.to %s is not after search.from %s", strings.TrimSpace(to), strings.TrimSpace(from))
	}
	return
}

func parseProfile(profile string, channels []string) (string, []string, error) {
	profile = strings.TrimSpace(profile)
	if profile == "" {
		profile = flowprofile.LiveID
	}
	if len(channels) > maxChannels {
		return "", nil, badf("search.channels names %d channels: at most %d", len(channels), maxChannels)
	}
	var out []string
	for i, c := range channels {
		c = strings.TrimSpace(c)
		if c == "" {
			return "", nil, badf("search.channels[%d] is empty: name a channel of profile %s, or leave channels out for all of them", i, profile)
		}
		if !contains(out, c) {
			out = append(out, c)
		}
	}
	return profile, out, nil
}

func parseFilter(s string) (flowfilter.Expr, error) {
	e, err := flowfilter.Parse(s)
	if err != nil {
		var se *flowfilter.SyntaxError
		if errors.As(err, &se) {
			return nil, badf("search.filter: column %d: %s", se.Col, se.Msg)
		}
		return nil, badf("search.filter: %v", err)
	}
	if _, all := e.(flowfilter.All); all {
		return nil, nil
	}
	return e, nil
}

// keyAliases are other names Flowmon users may know a key by: nfdump's
// output format tokens.
var keyAliases = map[string]flowstore.Key{
	"sa": flowstore.KeySrcIP, "da": flowstore.KeyDstIP, "sp": flowstore.KeySrcPort, "dp": flowstore.KeyDstPort,
	"pr": flowstore.KeyProto, "ra": flowstore.KeyExporter, "in": flowstore.KeyInIf, "out": flowstore.KeyOutIf,
}

func parseKey(s string) (flowstore.Key, bool) {
	s = strings.ToLower(strings.TrimSpace(s))
	if k, ok := keyAliases[s]; ok {
		return k, true
	}
	k, err := flowstore.ParseKey(s)
	return k, err == nil
}

func keyList() string {
	names := make([]string, 0, len(flowstore.Keys()))
	for _, k := range flowstore.Keys() {
		names = append(names, string(k))
	}
	return strings.Join(names, ", ")
}

func contains[T comparable](s []T, v T) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// decodeJSON decodes data into v. Errors name the field (prefix is the
// path of v in the request) and what it should have been.
func decodeJSON(data []byte, prefix string, v any) error {
	err := json.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if prefix != "" {
			field = strings.TrimSuffix(prefix+"."+field, ".")
		}
		if field == "" {
			return badf("the request is a JSON %s; it must be an object", te.Value)
		}
		return badf("%s is a JSON %s; it must be %s", field, te.Value, kindName(te.Type))
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		where := "the body"
		if prefix != "" {
			where = "the " + prefix + " parameter"
		}
		return badf("%s is not valid JSON at byte %d: %v", where, se.Offset, se)
	}
	return badf("the request is not valid JSON: %v", err)
}

func kindName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Slice, reflect.Array:
		return "an array of " + strings.TrimPrefix(strings.TrimPrefix(kindName(t.Elem()), "a "), "an ") + "s"
	case reflect.Struct, reflect.Map:
		return "an object"
	}
	return t.String()
}
