package api

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/csv"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/yagura/yagura/internal/collector"
	"github.com/yagura/yagura/internal/flowfilter"
	"github.com/yagura/yagura/internal/flowprofile"
	"github.com/yagura/yagura/internal/flowstore"
	"github.com/yagura/yagura/internal/store"
)

// FlowStore is what the flow analysis operations need from the flow store;
// flowstore.Store implements it. It must be safe for concurrent use.
type FlowStore interface {
	Top(ctx context.Context, q flowstore.TopQuery) (flowstore.TopResult, error)
	Series(ctx context.Context, q flowstore.SeriesQuery) ([]flowstore.Point, error)
	// ScanFlows calls fn for each flow, newest first, from the calling
	// goroutine; an error from fn stops the scan and is returned.
	ScanFlows(ctx context.Context, q flowstore.ListQuery, fn func(flowstore.Record, flowstore.Cursor) error) error
	Stats(ctx context.Context) (flowstore.Stats, error)
}

// FlowCollector is the running collector's live view of exporters and
// sockets. Its methods are called from request goroutines, concurrently;
// the slices and map passed or returned are not kept or modified by the
// other side after the call.
type FlowCollector interface {
	Exporters() []collector.ExporterStatus
	Listeners() []collector.ListenerStatus
	// SetExporterSettings replaces every exporter's administrator
	// settings (name, sampling-rate override); exporters absent from the
	// map have none.
	SetExporterSettings(map[netip.Addr]collector.ExporterSettings)
}

// FlowStateStore is what the flow operations need from the state store:
// exporters' names and overrides, and saved profiles.
type FlowStateStore interface {
	ListFlowExporters(ctx context.Context) ([]store.FlowExporter, error)
	GetFlowExporter(ctx context.Context, addr netip.Addr) (store.FlowExporter, error)
	UpdateFlowExporter(ctx context.Context, e store.FlowExporter, ifVersion int64) (store.FlowExporter, error)
	ListFlowProfiles(ctx context.Context) ([]flowprofile.Profile, error)
	GetFlowProfile(ctx context.Context, id string) (flowprofile.Profile, error)
	CreateFlowProfile(ctx context.Context, p flowprofile.Profile) (flowprofile.Profile, error)
	UpdateFlowProfile(ctx context.Context, p flowprofile.Profile, ifVersion int64) (flowprofile.Profile, error)
	DeleteFlowProfile(ctx context.Context, id string, ifVersion int64) error
}

// flowsEnabled refuses every flow operation of a manager whose flow store
// is not configured, saying how to turn it on.
func (a *API) flowsEnabled() error {
	if a.d.Flows == nil {
		return huma.Error503ServiceUnavailable("flow collection is disabled on this manager: set flows.enabled: true in its configuration file (or YAGURA_FLOWS_ENABLED=true) and restart it")
	}
	return nil
}

// ---- the search every analysis shares ----

// FlowSearch selects flows: a time range, a profile and some of its
// channels, and a filter.
type FlowSearch struct {
	From     string   `query:"from" maxLength:"40" doc:"Flows that started at or after this time: RFC 3339 (2025-04-01T09:00:00+09:00) or Flowmon's \"2025-04-01 00:00\" (UTC). Default: an hour before to."`
	To       string   `query:"to" maxLength:"40" doc:"Flows that started before this time, in the same forms. Default: now."`
	Profile  string   `query:"profile" maxLength:"64" doc:"Profile ID; default live (all flows, a channel per exporter)."`
	Channels []string `query:"channels" doc:"Only these channels of the profile (IDs or names, comma-separated); default: all."`
	Filter   string   `query:"filter" maxLength:"10000" doc:"nfdump-like filter, e.g. proto tcp and dst port 443 and not src net 10.0.0.0/8; exporter NAME takes an exporter's name or address (see docs/flow-filters.md)."`
}

// flowTimeLayouts are the forms a from/to parameter may take besides RFC
// 3339: Flowmon's, and shorter ones people type; all in UTC.
var flowTimeLayouts = []string{"2006-01-02 15:04", "2006-01-02 15:04:05", "2006-01-02T15:04", "2006-01-02T15:04:05", time.DateOnly}

// parseFlowTime reads a from/to parameter.
func parseFlowTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	for _, layout := range flowTimeLayouts {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, errors.New(`want RFC 3339 (2025-04-01T09:00:00+09:00) or "2025-04-01 00:00" (UTC)`)
}

const maxFlowRange = 100 * 365 * 24 * time.Hour

// flowRange reads the time range of s; an hour to now by default.
func flowRange(s FlowSearch, now time.Time) (from, to time.Time, err error) {
	to = now.UTC()
	if s.To != "" {
		if to, err = parseFlowTime(s.To); err != nil {
			return from, to, huma.Error422UnprocessableEntity("invalid time range", &huma.ErrorDetail{Location: "query.to", Message: err.Error(), Value: s.To})
		}
	}
	from = to.Add(-time.Hour)
	if s.From != "" {
		if from, err = parseFlowTime(s.From); err != nil {
			return from, to, huma.Error422UnprocessableEntity("invalid time range", &huma.ErrorDetail{Location: "query.from", Message: err.Error(), Value: s.From})
		}
	}
	if !to.After(from) {
		return from, to, huma.Error422UnprocessableEntity("invalid time range", &huma.ErrorDetail{Location: "query.to",
			Message: fmt.Sprintf("to (%s) must be after from (%s)", to.Format(time.RFC3339), from.Format(time.RFC3339)), Value: s.To})
	}
	// time.Duration saturates at 292 years, which would throw off the
	// interval arithmetic of series; no flows are kept that long.
	if to.Sub(from) > maxFlowRange {
		return from, to, huma.Error422UnprocessableEntity("invalid time range", &huma.ErrorDetail{Location: "query.from",
			Message: "the range is longer than 100 years", Value: s.From})
	}
	return from, to, nil
}

// flowExporters is what a request knows about exporters: the state
// store's (names, overrides) merged with the collector's (live status).
type flowExporters struct {
	stored []store.FlowExporter
	live   []collector.ExporterStatus
	merged []flowprofile.Exporter // by address
}

func (a *API) loadFlowExporters(ctx context.Context) (*flowExporters, error) {
	stored, err := a.d.Store.ListFlowExporters(ctx)
	if err != nil {
		return nil, a.storeErr("flow exporters", err)
	}
	var live []collector.ExporterStatus
	if a.d.FlowCollector != nil {
		live = a.d.FlowCollector.Exporters()
	}
	return &flowExporters{stored: stored, live: live, merged: liveExporters(stored, live)}, nil
}

// liveExporters merges the stored exporters with those the collector
// reports (which may include one heard a moment ago, not registered yet)
// into the exporters of the live profile, by address. A stored name wins
// over the collector's.
func liveExporters(stored []store.FlowExporter, live []collector.ExporterStatus) []flowprofile.Exporter {
	byAddr := map[netip.Addr]flowprofile.Exporter{}
	for _, l := range live {
		a := l.Address.Unmap()
		byAddr[a] = flowprofile.Exporter{Address: a, Name: l.Name}
	}
	for _, e := range stored {
		x := byAddr[e.Address]
		x.Address = e.Address
		if e.Name != "" || x.Name == "" {
			x.Name = e.Name
		}
		byAddr[e.Address] = x
	}
	out := slices.Collect(maps.Values(byAddr))
	slices.SortFunc(out, func(a, b flowprofile.Exporter) int { return a.Address.Compare(b.Address) })
	return out
}

// ExporterSettings turns the stored exporters into the settings the
// collector applies (collector.SetExporterSettings): the server pushes
// them at start and when the flow revision moves, the API after each
// change.
func ExporterSettings(es []store.FlowExporter) map[netip.Addr]collector.ExporterSettings {
	m := make(map[netip.Addr]collector.ExporterSettings, len(es))
	for _, e := range es {
		m[e.Address] = collector.ExporterSettings{Name: e.Name, SamplingRate: e.SamplingRate}
	}
	return m
}

// name returns the name of the exporter at addr (its stored text), or "".
func (x *flowExporters) name(addr string) string {
	for _, e := range x.merged {
		if store.FlowExporterKey(e.Address) == addr {
			return e.Name
		}
	}
	return ""
}

// resolveExporters rewrites "exporter NAME" terms of e to the exporter's
// address, which is what the flow table holds; an address is written in
// its stored form. An unknown name is an error listing the known ones.
func (x *flowExporters) resolveExporters(e flowfilter.Expr) (flowfilter.Expr, error) {
	return flowprofile.ResolveExporterNames(e, x.merged)
}

// filterErr is the 422 for a filter that does not parse or names an
// unknown exporter, at location (query.filter, body.filter, …).
func filterErr(location, filter string, err error) error {
	msg := err.Error()
	var se *flowfilter.SyntaxError
	if errors.As(err, &se) {
		msg = fmt.Sprintf("column %d: %s", se.Col, se.Msg)
	}
	return huma.Error422UnprocessableEntity("invalid filter", &huma.ErrorDetail{Location: location, Message: msg, Value: filter})
}

// parseFilter parses a user's filter and resolves its exporter names.
func (x *flowExporters) parseFilter(location, s string) (flowfilter.Expr, error) {
	e, err := flowfilter.Parse(s)
	if err != nil {
		return nil, filterErr(location, s, err)
	}
	if e, err = x.resolveExporters(e); err != nil {
		return nil, filterErr(location, s, err)
	}
	return e, nil
}

// flowProfile returns profile id: "live" made from the exporters, or a
// stored one; 404 naming the profiles there are.
func (a *API) flowProfile(ctx context.Context, id string, x *flowExporters) (flowprofile.Profile, error) {
	if id == flowprofile.LiveID {
		return flowprofile.Live(x.merged), nil
	}
	p, err := a.d.Store.GetFlowProfile(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		ids := []string{flowprofile.LiveID}
		if ps, err := a.d.Store.ListFlowProfiles(ctx); err == nil {
			for _, p := range ps {
				ids = append(ids, p.ID)
			}
		}
		return p, huma.Error404NotFound(fmt.Sprintf("flow profile %q does not exist; the profiles are: %s", id, strings.Join(ids, ", ")))
	}
	if err != nil {
		return p, a.storeErr("flow profile "+id, err)
	}
	return p, nil
}

// flowSelection is a resolved FlowSearch.
type flowSelection struct {
	query     flowstore.Query
	profile   string
	channels  []string
	exporters *flowExporters
}

// selectFlows turns a search into a store query: the profile's filter,
// its channels', and the user's, with exporter names resolved.
func (a *API) selectFlows(ctx context.Context, s FlowSearch) (*flowSelection, error) {
	if err := a.flowsEnabled(); err != nil {
		return nil, err
	}
	from, to, err := flowRange(s, a.d.Now())
	if err != nil {
		return nil, err
	}
	x, err := a.loadFlowExporters(ctx)
	if err != nil {
		return nil, err
	}
	id := s.Profile
	if id == "" {
		id = flowprofile.LiveID
	}
	p, err := a.flowProfile(ctx, id, x)
	if err != nil {
		return nil, err
	}
	var channels []string
	for _, c := range s.Channels {
		if c = strings.TrimSpace(c); c != "" {
			channels = append(channels, c)
		}
	}
	pe, err := flowprofile.Select(p, channels)
	if errors.Is(err, flowprofile.ErrNotFound) {
		return nil, huma.Error404NotFound(strings.TrimSuffix(err.Error(), ": "+flowprofile.ErrNotFound.Error()))
	}
	if err != nil {
		// A stored filter the parser no longer accepts.
		return nil, huma.Error422UnprocessableEntity(fmt.Sprintf("profile %s cannot be used: %v; fix it with PUT /api/v1/flows/profiles/%s", p.ID, err, p.ID))
	}
	if pe, err = x.resolveExporters(pe); err != nil {
		return nil, huma.Error422UnprocessableEntity("invalid profile", &huma.ErrorDetail{Location: "query.profile",
			Message: fmt.Sprintf("profile %s: %v; fix it with PUT /api/v1/flows/profiles/%s", p.ID, err, p.ID), Value: p.ID})
	}
	ue, err := x.parseFilter("query.filter", s.Filter)
	if err != nil {
		return nil, err
	}
	return &flowSelection{
		query:   flowstore.Query{Since: from, Until: to, Filter: flowfilter.AndAll(pe, ue)},
		profile: p.ID, channels: channels, exporters: x,
	}, nil
}

func (a *API) flowStoreErr(what string, err error) error {
	switch {
	case errors.Is(err, flowstore.ErrInvalid):
		return huma.Error422UnprocessableEntity(what + ": " + err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return huma.Error503ServiceUnavailable(what + ": the query was cancelled or took too long; narrow the time range or the filter")
	}
	a.d.Log.Error(what, "err", err)
	return huma.Error500InternalServerError(what + ": the flow store failed; see the manager log")
}

// FlowSelected says what an analysis covered, so that a saved answer
// explains itself.
type FlowSelected struct {
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	Profile  string    `json:"profile"`
	Channels []string  `json:"channels" doc:"The channels selected; empty: all of the profile."`
	Filter   string    `json:"filter" doc:"The filter applied, profile and channels included, exporter names resolved to addresses (canonical form)."`
}

func (s *flowSelection) selected() FlowSelected {
	ch := s.channels
	if ch == nil {
		ch = []string{}
	}
	filter := flowfilter.Expr(flowfilter.All{})
	if s.query.Filter != nil {
		filter = s.query.Filter
	}
	return FlowSelected{From: s.query.Since, To: s.query.Until, Profile: s.profile, Channels: ch, Filter: filter.String()}
}

// ---- top N ----

// FlowTopRow is one group of a top-N statistic.
type FlowTopRow struct {
	Keys      map[string]string `json:"keys" doc:"The group's value of each by key, e.g. {\"srcip\": \"192.0.2.1\", \"dstport\": \"443\"}."`
	Bytes     uint64            `json:"bytes"`
	Packets   uint64            `json:"packets"`
	Flows     uint64            `json:"flows"`
	FirstSeen time.Time         `json:"first_seen"`
	LastSeen  time.Time         `json:"last_seen"`
	Share     float64           `json:"share" doc:"This group's part of the total by the order measure, 0 to 1."`
}

// FlowTotals are the sums over every flow selected.
type FlowTotals struct {
	Bytes     uint64     `json:"bytes"`
	Packets   uint64     `json:"packets"`
	Flows     uint64     `json:"flows"`
	FirstSeen *time.Time `json:"first_seen,omitempty"`
	LastSeen  *time.Time `json:"last_seen,omitempty"`
}

// FlowTop is a top-N statistic.
type FlowTop struct {
	FlowSelected
	By            []string          `json:"by"`
	Order         string            `json:"order"`
	Rows          []FlowTopRow      `json:"rows"`
	Total         FlowTotals        `json:"total"`
	ExporterNames map[string]string `json:"exporter_names,omitempty" doc:"Names of the exporters in the rows, by address, when aggregated by exporter."`
}

type flowTopInput struct {
	FlowSearch
	By    []string `query:"by" doc:"Aggregate by these keys (comma-separated): srcip, dstip, srcport, dstport, proto, exporter, inif, outif, ipver. Default srcip."`
	Order string   `query:"order" enum:"bytes,packets,flows" default:"bytes"`
	Limit int      `query:"limit" minimum:"1" maximum:"10000" default:"10"`
}

func (a *API) flowTop(ctx context.Context, in *flowTopInput) (*FlowTop, error) {
	var by []flowstore.Key
	for _, s := range in.By {
		s = strings.ToLower(strings.TrimSpace(s))
		if s == "" {
			continue
		}
		k, err := flowstore.ParseKey(s)
		if err != nil {
			return nil, huma.Error422UnprocessableEntity("invalid aggregation", &huma.ErrorDetail{Location: "query.by",
				Message: "unknown key: use srcip, dstip, srcport, dstport, proto, exporter, inif, outif or ipver", Value: s})
		}
		if slices.Contains(by, k) {
			return nil, huma.Error422UnprocessableEntity("invalid aggregation", &huma.ErrorDetail{Location: "query.by", Message: "key given twice", Value: s})
		}
		by = append(by, k)
	}
	if len(by) == 0 {
		by = []flowstore.Key{flowstore.KeySrcIP}
	}
	order, err := flowstore.ParseMeasure(in.Order)
	if err != nil {
		return nil, huma.Error422UnprocessableEntity("invalid order", &huma.ErrorDetail{Location: "query.order", Message: err.Error(), Value: in.Order})
	}
	sel, err := a.selectFlows(ctx, in.FlowSearch)
	if err != nil {
		return nil, err
	}
	res, err := a.d.Flows.Top(ctx, flowstore.TopQuery{Query: sel.query, By: by, OrderBy: order, Limit: in.Limit})
	if err != nil {
		return nil, a.flowStoreErr("top flows", err)
	}
	out := &FlowTop{FlowSelected: sel.selected(), Order: string(order), Rows: make([]FlowTopRow, 0, len(res.Rows)),
		Total: FlowTotals{Bytes: res.Total.Bytes, Packets: res.Total.Packets, Flows: res.Total.Flows,
			FirstSeen: ptime(res.Total.FirstSeen), LastSeen: ptime(res.Total.LastSeen)}}
	for _, k := range by {
		out.By = append(out.By, string(k))
	}
	total := measureOf(res.Total, order)
	exporterCol := slices.Index(by, flowstore.KeyExporter)
	for _, r := range res.Rows {
		row := FlowTopRow{Keys: make(map[string]string, len(by)), Bytes: r.Bytes, Packets: r.Packets, Flows: r.Flows,
			FirstSeen: r.FirstSeen.UTC(), LastSeen: r.LastSeen.UTC()}
		for i, k := range by {
			if i < len(r.Keys) {
				row.Keys[string(k)] = r.Keys[i]
			}
		}
		if total > 0 {
			row.Share = float64(measureOf(r, order)) / float64(total)
		}
		if exporterCol >= 0 && exporterCol < len(r.Keys) {
			if name := sel.exporters.name(r.Keys[exporterCol]); name != "" {
				if out.ExporterNames == nil {
					out.ExporterNames = map[string]string{}
				}
				out.ExporterNames[r.Keys[exporterCol]] = name
			}
		}
		out.Rows = append(out.Rows, row)
	}
	return out, nil
}

func measureOf(r flowstore.TopRow, m flowstore.Measure) uint64 {
	switch m {
	case flowstore.Packets:
		return r.Packets
	case flowstore.Flows:
		return r.Flows
	}
	return r.Bytes
}

// ---- series ----

// FlowPoint is one interval of a series.
type FlowPoint struct {
	Time  time.Time `json:"time" doc:"Start of the interval."`
	Value uint64    `json:"value" doc:"The measure's sum over the interval: bytes for traffic and bytes, else packets or flows."`
	Rate  float64   `json:"rate" doc:"Per second over the interval, in unit: bits for traffic."`
}

// FlowSeries is a measure over time.
type FlowSeries struct {
	FlowSelected
	Measure         string      `json:"measure"`
	Unit            string      `json:"unit" doc:"The unit of rate: bit/s, B/s, packets/s or flows/s."`
	Interval        string      `json:"interval" doc:"The length of each point, e.g. 5m0s."`
	IntervalSeconds int64       `json:"interval_seconds"`
	Proto           int         `json:"proto" doc:"The IP protocol counted; 0: all."`
	Points          []FlowPoint `json:"points"`
	Total           uint64      `json:"total" doc:"Sum of the values."`
}

type flowSeriesInput struct {
	FlowSearch
	Measure  string `query:"measure" enum:"traffic,bytes,packets,flows" default:"traffic" doc:"traffic: bytes, with rates in bits per second."`
	Interval string `query:"interval" maxLength:"20" doc:"Length of each point, a multiple of 5m (5m, 1h, 24h). Default: 5m, or the smallest multiple of 5m that keeps the range within 288 points."`
	Proto    int    `query:"proto" minimum:"0" maximum:"255" default:"0" doc:"Count only this IP protocol (6 TCP, 17 UDP, 1 ICMP); 0: all."`
}

// Series limits: a chart of more points than a screen is wide says no
// more, and costs the store as much.
const (
	maxSeriesPoints     = 10000
	defaultSeriesPoints = 288 // a day of 5-minute points
)

// seriesInterval reads the interval parameter, or picks one for the range.
func seriesInterval(s string, from, to time.Time) (time.Duration, error) {
	step := flowstore.RollupInterval
	if s == "" {
		n := (to.Sub(from) + step - 1) / step // 5-minute points in the range
		mult := (n + defaultSeriesPoints - 1) / defaultSeriesPoints
		return max(mult, 1) * step, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		if days, aerr := strconv.Atoi(strings.TrimSuffix(s, "d")); aerr == nil && strings.HasSuffix(s, "d") {
			d, err = time.Duration(days)*24*time.Hour, nil
		}
	}
	if err != nil || d <= 0 || d%step != 0 {
		return 0, huma.Error422UnprocessableEntity("invalid interval", &huma.ErrorDetail{Location: "query.interval",
			Message: "want a multiple of 5m, such as 5m, 15m, 1h or 1d: flows are summed in 5-minute intervals", Value: s})
	}
	return d, nil
}

func (a *API) flowSeries(ctx context.Context, in *flowSeriesInput) (*FlowSeries, error) {
	measure, unit, scale := flowstore.Bytes, "bit/s", 8.0
	switch in.Measure {
	case "bytes":
		unit, scale = "B/s", 1
	case "packets":
		measure, unit, scale = flowstore.Packets, "packets/s", 1
	case "flows":
		measure, unit, scale = flowstore.Flows, "flows/s", 1
	case "traffic", "":
	default:
		return nil, huma.Error422UnprocessableEntity("invalid measure", &huma.ErrorDetail{Location: "query.measure", Message: "use traffic, bytes, packets or flows", Value: in.Measure})
	}
	sel, err := a.selectFlows(ctx, in.FlowSearch)
	if err != nil {
		return nil, err
	}
	iv, err := seriesInterval(in.Interval, sel.query.Since, sel.query.Until)
	if err != nil {
		return nil, err
	}
	// Whole intervals covering the range: a 10-minute range on 5-minute
	// intervals is 2 points, and a range ending mid-interval includes it.
	q := sel.query
	q.Since = q.Since.Truncate(iv)
	if end := q.Until.Truncate(iv); end.Before(q.Until) {
		q.Until = end.Add(iv)
	}
	if n := q.Until.Sub(q.Since) / iv; n > maxSeriesPoints {
		return nil, huma.Error422UnprocessableEntity("invalid interval", &huma.ErrorDetail{Location: "query.interval",
			Message: fmt.Sprintf("%d points are more than %d: choose a longer interval or a shorter range", n, maxSeriesPoints), Value: in.Interval})
	}
	pts, err := a.d.Flows.Series(ctx, flowstore.SeriesQuery{Query: q, Measure: measure, Interval: iv, Proto: uint8(in.Proto)})
	if err != nil {
		return nil, a.flowStoreErr("flow series", err)
	}
	sel.query = q
	out := &FlowSeries{FlowSelected: sel.selected(), Measure: cmp.Or(in.Measure, "traffic"), Unit: unit, Interval: iv.String(),
		IntervalSeconds: int64(iv / time.Second), Proto: in.Proto, Points: make([]FlowPoint, 0, len(pts))}
	for _, p := range pts {
		out.Points = append(out.Points, FlowPoint{Time: p.Time.UTC(), Value: p.Value, Rate: float64(p.Value) * scale / iv.Seconds()})
		out.Total += p.Value
	}
	return out, nil
}

// ---- raw flows ----

// Flow is one stored flow record.
type Flow struct {
	TimeStart    time.Time `json:"time_start"`
	TimeEnd      time.Time `json:"time_end"`
	Exporter     string    `json:"exporter" doc:"The exporter's address."`
	ExporterName string    `json:"exporter_name,omitempty"`
	InIf         uint32    `json:"in_if"`
	OutIf        uint32    `json:"out_if"`
	IPVersion    uint8     `json:"ip_version"`
	SrcAddr      string    `json:"src_addr"`
	DstAddr      string    `json:"dst_addr"`
	SrcPort      uint16    `json:"src_port"`
	DstPort      uint16    `json:"dst_port"`
	Proto        uint8     `json:"proto"`
	TCPFlags     uint8     `json:"tcp_flags"`
	Bytes        uint64    `json:"bytes" doc:"Multiplied by the sampling rate."`
	Packets      uint64    `json:"packets" doc:"Multiplied by the sampling rate."`
	RawBytes     uint64    `json:"raw_bytes" doc:"As the exporter sent it."`
	RawPackets   uint64    `json:"raw_packets" doc:"As the exporter sent it."`
	SamplingRate uint32    `json:"sampling_rate"`
	CommunityID  string    `json:"community_id" doc:"Community ID v1, to join with IDS alerts."`
}

func (x *flowExporters) flowOut(r flowstore.Record) Flow {
	exp := ""
	if r.Exporter.IsValid() {
		exp = store.FlowExporterKey(r.Exporter)
	}
	return Flow{TimeStart: r.TimeStart.UTC(), TimeEnd: r.TimeEnd.UTC(), Exporter: exp, ExporterName: x.name(exp),
		InIf: r.InIf, OutIf: r.OutIf, IPVersion: r.IPVersion, SrcAddr: addrText(r.SrcAddr), DstAddr: addrText(r.DstAddr),
		SrcPort: r.SrcPort, DstPort: r.DstPort, Proto: r.Proto, TCPFlags: r.TCPFlags, Bytes: r.Bytes, Packets: r.Packets,
		RawBytes: r.RawBytes(), RawPackets: r.RawPackets(), SamplingRate: r.SamplingRate, CommunityID: r.CommunityID()}
}

func addrText(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.Unmap().String()
}

// A flow cursor is base64url of the last record's start time (8 bytes,
// µs since the epoch) and sequence number (8 bytes).
func encodeFlowCursor(c flowstore.Cursor) string {
	b := binary.BigEndian.AppendUint64(nil, uint64(c.TimeStart.UnixMicro()))
	b = binary.BigEndian.AppendUint64(b, c.Seq)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeFlowCursor(s string) (*flowstore.Cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != 16 {
		return nil, huma.Error422UnprocessableEntity("invalid cursor", &huma.ErrorDetail{Location: "query.cursor",
			Message: "not a cursor this API returned; start again without it", Value: s})
	}
	return &flowstore.Cursor{TimeStart: time.UnixMicro(int64(binary.BigEndian.Uint64(b))).UTC(), Seq: binary.BigEndian.Uint64(b[8:])}, nil
}

// FlowPage is a page of raw flows.
type FlowPage struct {
	FlowSelected
	Items      []Flow `json:"items"`
	NextCursor string `json:"next_cursor,omitempty" doc:"Pass as cursor for the next page; absent on the last page."`
}

type flowListInput struct {
	FlowSearch
	Limit  int    `query:"limit" minimum:"1" maximum:"10000" default:"100"`
	Cursor string `query:"cursor" maxLength:"100" doc:"next_cursor of the previous page."`
}

func (a *API) listFlows(ctx context.Context, in *flowListInput) (*FlowPage, error) {
	var after *flowstore.Cursor
	if in.Cursor != "" {
		var err error
		if after, err = decodeFlowCursor(in.Cursor); err != nil {
			return nil, err
		}
	}
	sel, err := a.selectFlows(ctx, in.FlowSearch)
	if err != nil {
		return nil, err
	}
	out := &FlowPage{FlowSelected: sel.selected(), Items: make([]Flow, 0, min(in.Limit, 1000))}
	// One more than a page says whether there is a next one.
	var last flowstore.Cursor
	err = a.d.Flows.ScanFlows(ctx, flowstore.ListQuery{Query: sel.query, After: after, Limit: in.Limit + 1}, func(r flowstore.Record, c flowstore.Cursor) error {
		if len(out.Items) == in.Limit {
			out.NextCursor = encodeFlowCursor(last)
			return errPageFull
		}
		out.Items = append(out.Items, sel.exporters.flowOut(r))
		last = c
		return nil
	})
	if err != nil && !errors.Is(err, errPageFull) {
		return nil, a.flowStoreErr("list flows", err)
	}
	return out, nil
}

var errPageFull = errors.New("page full")

// ---- CSV ----

// csvCell keeps a text cell from being read as a formula by spreadsheet
// programs (names are user text).
func csvCell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

func timeCell(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

var flowCSVHeader = []string{"time_start", "time_end", "exporter", "exporter_name", "in_if", "out_if", "ip_version",
	"src_addr", "dst_addr", "src_port", "dst_port", "proto", "tcp_flags", "bytes", "packets", "raw_bytes", "raw_packets",
	"sampling_rate", "community_id"}

func flowCSV(f Flow) []string {
	u := func(n uint64) string { return strconv.FormatUint(n, 10) }
	return []string{timeCell(f.TimeStart), timeCell(f.TimeEnd), f.Exporter, csvCell(f.ExporterName), u(uint64(f.InIf)), u(uint64(f.OutIf)),
		u(uint64(f.IPVersion)), f.SrcAddr, f.DstAddr, u(uint64(f.SrcPort)), u(uint64(f.DstPort)), u(uint64(f.Proto)), u(uint64(f.TCPFlags)),
		u(f.Bytes), u(f.Packets), u(f.RawBytes), u(f.RawPackets), u(uint64(f.SamplingRate)), f.CommunityID}
}

// writeCSV answers with a small CSV document (UTF-8 with a byte order
// mark, so spreadsheet programs read names in Japanese correctly).
func writeCSV(hctx huma.Context, filename string, rows [][]string) {
	hctx.SetHeader("Content-Type", "text/csv; charset=utf-8")
	hctx.SetHeader("Content-Disposition", `attachment; filename="`+filename+`"`)
	w := hctx.BodyWriter()
	_, _ = w.Write([]byte("\ufeff"))
	cw := csv.NewWriter(w)
	_ = cw.WriteAll(rows)
}

func topCSV(t *FlowTop) [][]string {
	header := append(slices.Clone(t.By), "bytes", "packets", "flows", "first_seen", "last_seen", "share")
	rows := [][]string{header}
	for _, r := range t.Rows {
		var row []string
		for _, k := range t.By {
			row = append(row, r.Keys[k])
		}
		row = append(row, strconv.FormatUint(r.Bytes, 10), strconv.FormatUint(r.Packets, 10), strconv.FormatUint(r.Flows, 10),
			timeCell(r.FirstSeen), timeCell(r.LastSeen), strconv.FormatFloat(r.Share, 'f', 6, 64))
		rows = append(rows, row)
	}
	return rows
}

func seriesCSV(s *FlowSeries) [][]string {
	rows := [][]string{{"time", s.Measure, "rate_" + strings.ReplaceAll(s.Unit, "/", "_per_")}}
	for _, p := range s.Points {
		rows = append(rows, []string{timeCell(p.Time), strconv.FormatUint(p.Value, 10), strconv.FormatFloat(p.Rate, 'f', 3, 64)})
	}
	return rows
}

// exportFlows streams the flows sel selects, as events are exported (see
// exportWriter): CSV with a byte order mark, or JSON lines; a failure
// midway aborts the response so that no client takes a cut-off export for
// a whole one.
func (a *API) exportFlows(ctx context.Context, hctx huma.Context, sel *flowSelection, format string, limit int) {
	x := newExportWriter(hctx, format, "yagura-flows", flowCSVHeader)
	err := a.d.Flows.ScanFlows(ctx, flowstore.ListQuery{Query: sel.query, Limit: limit}, func(r flowstore.Record, _ flowstore.Cursor) error {
		f := sel.exporters.flowOut(r)
		if x.csv() {
			return x.writeCSV(flowCSV(f))
		}
		return x.writeJSON(f)
	})
	x.finish(ctx, a.d.Log, "flows", "flow store", err)
}

// ---- exporters ----

// FlowExporter is an exporter as the API shows it: the collector's live
// status merged with what administrators set.
type FlowExporter struct {
	Address         string     `json:"address"`
	Name            string     `json:"name"`
	Protocols       []string   `json:"protocols" doc:"Protocols heard: netflow5, netflow9, ipfix, sflow5."`
	FirstSeen       *time.Time `json:"first_seen,omitempty"`
	LastPacket      *time.Time `json:"last_packet,omitempty"`
	Packets         uint64     `json:"packets" doc:"Datagrams received since the collector started."`
	Flows           uint64     `json:"flows"`
	DecodeErrors    uint64     `json:"decode_errors"`
	TemplateMisses  uint64     `json:"template_misses" doc:"Data sets dropped because their template was not known yet."`
	Templates       int        `json:"templates" doc:"NetFlow v9/IPFIX templates held."`
	SamplingRate    uint32     `json:"sampling_rate" doc:"The rate in use (1: unsampled or unknown)."`
	SamplingSource  string     `json:"sampling_source" doc:"Where the rate comes from: override, options-template, flow-record, sflow-header, v5-header, or empty when unknown."`
	SamplingWarning string     `json:"sampling_warning,omitempty" doc:"Set when a rate is missing where the protocol should carry it, or changed."`
	Override        uint32     `json:"sampling_rate_override" doc:"The administrator's override; 0: none."`
	Live            bool       `json:"live" doc:"Heard by this manager's collector since it started."`
	Version         int64      `json:"version" doc:"For If-Match on PATCH; 0 until the exporter is stored."`
}

func (x *flowExporters) list() []FlowExporter {
	byAddr := map[netip.Addr]*FlowExporter{}
	var order []netip.Addr
	get := func(a netip.Addr) *FlowExporter {
		if e, ok := byAddr[a]; ok {
			return e
		}
		e := &FlowExporter{Address: store.FlowExporterKey(a), Protocols: []string{}}
		byAddr[a] = e
		order = append(order, a)
		return e
	}
	for _, l := range x.live {
		e := get(l.Address.Unmap())
		e.Name, e.Protocols, e.FirstSeen, e.LastPacket = l.Name, append([]string{}, l.Protocols...), ptime(l.FirstSeen), ptime(l.LastSeen)
		e.Packets, e.Flows, e.DecodeErrors, e.TemplateMisses, e.Templates = l.Packets, l.Flows, l.DecodeErrors, l.TemplateMisses, l.Templates
		e.SamplingRate, e.SamplingSource, e.SamplingWarning, e.Live = l.SamplingRate, l.SamplingSource, l.SamplingWarning, true
	}
	for _, s := range x.stored {
		e := get(s.Address)
		if s.Name != "" || e.Name == "" {
			e.Name = s.Name
		}
		e.Override, e.Version = s.SamplingRate, s.Version
		if e.FirstSeen == nil || (!s.FirstSeen.IsZero() && s.FirstSeen.Before(*e.FirstSeen)) {
			e.FirstSeen = ptime(s.FirstSeen)
		}
		if !e.Live && s.SamplingRate != 0 {
			e.SamplingRate, e.SamplingSource = s.SamplingRate, collector.SamplingOverride
		}
	}
	slices.SortFunc(order, func(a, b netip.Addr) int { return a.Compare(b) })
	out := make([]FlowExporter, len(order))
	for i, a := range order {
		out[i] = *byAddr[a]
	}
	return out
}

// FlowExporterPatch changes an exporter's settings; absent fields keep
// theirs.
type FlowExporterPatch struct {
	Name         *string `json:"name,omitempty" maxLength:"200" doc:"Name used in filters (exporter NAME) and lists; empty removes it. Unique; not an address."`
	SamplingRate *uint32 `json:"sampling_rate,omitempty" maximum:"16777215" doc:"Overrides the rate the exporter reports (1 in N packets); 0 removes the override."`
}

type flowExporterOne = versioned[FlowExporter]

// pushExporterSettings gives the collector every exporter's settings
// after a change.
func (a *API) pushExporterSettings(ctx context.Context) {
	if a.d.FlowCollector == nil {
		return
	}
	es, err := a.d.Store.ListFlowExporters(ctx)
	if err != nil {
		// The change is stored; the server applies it when it next
		// reloads the settings (flow revision).
		a.d.Log.Error("push exporter settings to the collector", "err", err)
		return
	}
	a.d.FlowCollector.SetExporterSettings(ExporterSettings(es))
}

func (a *API) updateFlowExporter(ctx context.Context, in *struct {
	Address string `path:"address" maxLength:"64" doc:"The exporter's IP address."`
	IfMatch string `header:"If-Match" doc:"ETag of the exporter (its version); the change is refused with 412 if it changed meanwhile."`
	Body    FlowExporterPatch
}) (*flowExporterOne, error) {
	if err := a.flowsEnabled(); err != nil {
		return nil, err
	}
	addr, err := netip.ParseAddr(in.Address)
	if err != nil {
		return nil, huma.Error422UnprocessableEntity("invalid exporter address", &huma.ErrorDetail{Location: "path.address",
			Message: "want an IPv4 or IPv6 address, such as 192.0.2.1", Value: in.Address})
	}
	addr = addr.Unmap()
	want, err := ifMatch(in.IfMatch, "/api/v1/flows/exporters")
	if err != nil {
		return nil, err
	}
	cur, err := a.d.Store.GetFlowExporter(ctx, addr)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, a.storeErr("flow exporter "+addr.String(), err)
	}
	e := store.FlowExporter{Address: addr, Name: cur.Name, SamplingRate: cur.SamplingRate, UpdatedAt: a.d.Now()}
	if in.Body.Name != nil {
		e.Name = strings.TrimSpace(*in.Body.Name)
		if err := store.CheckFlowExporterName(e.Name); err != nil {
			return nil, huma.Error422UnprocessableEntity("invalid exporter name", &huma.ErrorDetail{Location: "body.name",
				Message: strings.TrimSuffix(err.Error(), ": "+store.ErrInvalid.Error()), Value: e.Name})
		}
	}
	if in.Body.SamplingRate != nil {
		e.SamplingRate = *in.Body.SamplingRate
	}
	stored, err := a.d.Store.UpdateFlowExporter(ctx, e, want)
	switch {
	case errors.Is(err, store.ErrInvalid):
		return nil, huma.Error422UnprocessableEntity(strings.TrimSuffix(err.Error(), ": "+store.ErrInvalid.Error()))
	case err != nil:
		return nil, a.versionedErr("flow exporter "+addr.String(), want, err)
	}
	a.pushExporterSettings(ctx)
	note(ctx, "flow-exporter", map[string]any{"address": addr.String(), "name": stored.Name, "sampling_rate": stored.SamplingRate, "version": stored.Version})
	x, err := a.loadFlowExporters(ctx)
	if err != nil {
		return nil, err
	}
	out := &flowExporterOne{ETag: etag(strconv.FormatInt(stored.Version, 10))}
	for _, fe := range x.list() {
		if fe.Address == store.FlowExporterKey(addr) {
			out.Body = fe
		}
	}
	return out, nil
}

// ---- profiles ----

// FlowChannel is one slice of a profile.
type FlowChannel struct {
	ID     string `json:"id" pattern:"^[a-z0-9][a-z0-9_.-]{0,63}$" doc:"Unique within the profile: lower-case letters, digits, '.', '_', '-'."`
	Name   string `json:"name" required:"false" maxLength:"200" doc:"Shown in lists; channels may be selected by name too."`
	Filter string `json:"filter" required:"false" maxLength:"10000" doc:"Flows of the profile in this channel; empty: all of them."`
}

// FlowProfileInput creates or replaces a profile.
type FlowProfileInput struct {
	Name        string        `json:"name" minLength:"1" maxLength:"200"`
	Description string        `json:"description,omitempty" maxLength:"2000"`
	Filter      string        `json:"filter,omitempty" maxLength:"10000" doc:"Which flows the profile covers; empty: all."`
	Channels    []FlowChannel `json:"channels,omitempty" maxItems:"1000"`
}

// FlowProfileCreate creates a profile.
type FlowProfileCreate struct {
	ID string `json:"id" pattern:"^[a-z0-9][a-z0-9_.-]{0,63}$" doc:"Lower-case letters, digits, '.', '_', '-', as in Flowmon's profile names; not live."`
	FlowProfileInput
}

// FlowProfile is a profile as the API shows it.
type FlowProfile struct {
	ID          string        `json:"id"`
	Name        string        `json:"name"`
	Description string        `json:"description,omitempty"`
	Filter      string        `json:"filter"`
	Channels    []FlowChannel `json:"channels"`
	Builtin     bool          `json:"builtin" doc:"The built-in live profile: read-only, a channel per exporter."`
	Version     int64         `json:"version,omitempty"`
	CreatedAt   *time.Time    `json:"created_at,omitempty"`
	UpdatedAt   *time.Time    `json:"updated_at,omitempty"`
}

func flowProfileOut(p flowprofile.Profile) FlowProfile {
	out := FlowProfile{ID: p.ID, Name: p.Name, Description: p.Description, Filter: p.Filter, Builtin: p.Builtin, Version: p.Version,
		CreatedAt: ptime(p.CreatedAt), UpdatedAt: ptime(p.UpdatedAt), Channels: make([]FlowChannel, 0, len(p.Channels))}
	for _, c := range p.Channels {
		out.Channels = append(out.Channels, FlowChannel(c))
	}
	return out
}

type flowProfileOne = versioned[FlowProfile]

func flowProfileETag(p flowprofile.Profile) string {
	if p.Builtin {
		return ""
	}
	return etag(strconv.FormatInt(p.Version, 10))
}

// checkProfileInput validates the filters of a profile's input, saying
// where one is wrong, with exporter names checked against x.
func checkProfileInput(in FlowProfileInput, x *flowExporters) error {
	if strings.TrimSpace(in.Filter) != "" {
		if _, err := x.parseFilter("body.filter", in.Filter); err != nil {
			return err
		}
	}
	seen := map[string]int{}
	for i, c := range in.Channels {
		if j, dup := seen[c.ID]; dup {
			return huma.Error422UnprocessableEntity("invalid profile", &huma.ErrorDetail{Location: fmt.Sprintf("body.channels[%d].id", i),
				Message: fmt.Sprintf("channels[%d] has this ID already", j), Value: c.ID})
		}
		seen[c.ID] = i
		if strings.TrimSpace(c.Filter) != "" {
			if _, err := x.parseFilter(fmt.Sprintf("body.channels[%d].filter", i), c.Filter); err != nil {
				return err
			}
		}
	}
	return nil
}

func profileFromInput(id string, in FlowProfileInput) flowprofile.Profile {
	p := flowprofile.Profile{ID: id, Name: strings.TrimSpace(in.Name), Description: in.Description, Filter: in.Filter, Channels: []flowprofile.Channel{}}
	for _, c := range in.Channels {
		if c.Name = strings.TrimSpace(c.Name); c.Name == "" {
			c.Name = c.ID
		}
		p.Channels = append(p.Channels, flowprofile.Channel(c))
	}
	return p
}

func (a *API) flowProfileErr(what string, want int64, err error) error {
	if errors.Is(err, store.ErrInvalid) {
		msg := strings.TrimSuffix(err.Error(), ": "+store.ErrInvalid.Error())
		msg = strings.TrimSuffix(msg, ": "+flowprofile.ErrInvalid.Error())
		for _, p := range []string{"create flow profile: ", "update flow profile: "} {
			msg = strings.TrimPrefix(msg, p)
		}
		return huma.Error422UnprocessableEntity(msg)
	}
	return a.versionedErr(what, want, err)
}

func builtinErr(id string) error {
	return huma.Error409Conflict(fmt.Sprintf("profile %s is built in (all flows, a channel per exporter) and cannot be changed; create a profile of your own with POST /api/v1/flows/profiles", id))
}

func (a *API) registerFlowProfiles() {
	tags := []string{"Flow profiles"}
	register(a, PermFlowsRead, huma.Operation{
		OperationID: "list-flow-profiles", Method: http.MethodGet, Path: "/api/v1/flows/profiles",
		Summary: "List flow profiles", Tags: tags,
		Description: "The built-in live profile (all flows, a channel per exporter) first, then the saved profiles by ID.",
	}, func(ctx context.Context, _ *struct{}) (*items[FlowProfile], error) {
		if err := a.flowsEnabled(); err != nil {
			return nil, err
		}
		x, err := a.loadFlowExporters(ctx)
		if err != nil {
			return nil, err
		}
		ps, err := a.d.Store.ListFlowProfiles(ctx)
		if err != nil {
			return nil, a.storeErr("flow profiles", err)
		}
		return itemsOf(append([]flowprofile.Profile{flowprofile.Live(x.merged)}, ps...), flowProfileOut), nil
	})
	register(a, PermFlowsWrite, huma.Operation{
		OperationID: "create-flow-profile", Method: http.MethodPost, Path: "/api/v1/flows/profiles", DefaultStatus: http.StatusCreated,
		Summary: "Create a flow profile", Tags: tags,
		Description: `A saved filter over all flows, split into channels. Example: {"id":"dmz","name":"DMZ","filter":"net 203.0.113.0/24","channels":[{"id":"web","name":"Web","filter":"port in [80, 443]"},{"id":"mail","name":"Mail","filter":"port in [25, 465, 587]"}]}`,
	}, func(ctx context.Context, in *struct{ Body FlowProfileCreate }) (*flowProfileOne, error) {
		if err := a.flowsEnabled(); err != nil {
			return nil, err
		}
		if in.Body.ID == flowprofile.LiveID {
			return nil, huma.Error422UnprocessableEntity("invalid profile", &huma.ErrorDetail{Location: "body.id",
				Message: "live is the built-in profile of all flows: choose another ID", Value: in.Body.ID})
		}
		x, err := a.loadFlowExporters(ctx)
		if err != nil {
			return nil, err
		}
		if err := checkProfileInput(in.Body.FlowProfileInput, x); err != nil {
			return nil, err
		}
		p := profileFromInput(in.Body.ID, in.Body.FlowProfileInput)
		p.CreatedAt = a.d.Now()
		got, err := a.d.Store.CreateFlowProfile(ctx, p)
		if err != nil {
			return nil, a.flowProfileErr("flow profile "+p.ID, 0, err)
		}
		note(ctx, "flow-profile", map[string]any{"id": got.ID, "name": got.Name})
		return &flowProfileOne{ETag: flowProfileETag(got), Body: flowProfileOut(got)}, nil
	})
	register(a, PermFlowsRead, huma.Operation{
		OperationID: "get-flow-profile", Method: http.MethodGet, Path: "/api/v1/flows/profiles/{id}",
		Summary: "Show a flow profile", Tags: tags,
	}, func(ctx context.Context, in *objPath) (*flowProfileOne, error) {
		if err := a.flowsEnabled(); err != nil {
			return nil, err
		}
		x, err := a.loadFlowExporters(ctx)
		if err != nil {
			return nil, err
		}
		p, err := a.flowProfile(ctx, in.ID, x)
		if err != nil {
			return nil, err
		}
		return &flowProfileOne{ETag: flowProfileETag(p), Body: flowProfileOut(p)}, nil
	})
	register(a, PermFlowsWrite, huma.Operation{
		OperationID: "update-flow-profile", Method: http.MethodPut, Path: "/api/v1/flows/profiles/{id}",
		Summary: "Replace a flow profile", Tags: tags,
		Description: "With If-Match (the ETag of GET), refused with 412 if the profile changed meanwhile. The built-in live profile cannot be changed (409).",
	}, func(ctx context.Context, in *replace[FlowProfileInput]) (*flowProfileOne, error) {
		if err := a.flowsEnabled(); err != nil {
			return nil, err
		}
		if in.ID == flowprofile.LiveID {
			return nil, builtinErr(in.ID)
		}
		want, err := ifMatch(in.IfMatch, "/api/v1/flows/profiles/{id}")
		if err != nil {
			return nil, err
		}
		x, err := a.loadFlowExporters(ctx)
		if err != nil {
			return nil, err
		}
		if err := checkProfileInput(in.Body, x); err != nil {
			return nil, err
		}
		p := profileFromInput(in.ID, in.Body)
		p.UpdatedAt = a.d.Now()
		got, err := a.d.Store.UpdateFlowProfile(ctx, p, want)
		if err != nil {
			return nil, a.flowProfileErr("flow profile "+in.ID, want, err)
		}
		note(ctx, "flow-profile", map[string]any{"id": got.ID, "version": got.Version})
		return &flowProfileOne{ETag: flowProfileETag(got), Body: flowProfileOut(got)}, nil
	})
	register(a, PermFlowsWrite, huma.Operation{
		OperationID: "delete-flow-profile", Method: http.MethodDelete, Path: "/api/v1/flows/profiles/{id}", DefaultStatus: http.StatusNoContent,
		Summary: "Delete a flow profile", Tags: tags,
		Description: "The flows stay; only the saved selection goes. With If-Match, refused with 412 if the profile changed meanwhile.",
	}, func(ctx context.Context, in *struct {
		ID      string `path:"id" maxLength:"64"`
		IfMatch string `header:"If-Match" doc:"ETag of GET; refused with 412 if the profile changed meanwhile."`
	}) (*struct{}, error) {
		if err := a.flowsEnabled(); err != nil {
			return nil, err
		}
		if in.ID == flowprofile.LiveID {
			return nil, builtinErr(in.ID)
		}
		want, err := ifMatch(in.IfMatch, "/api/v1/flows/profiles/{id}")
		if err != nil {
			return nil, err
		}
		if err := a.d.Store.DeleteFlowProfile(ctx, in.ID, want); err != nil {
			return nil, a.versionedErr("flow profile "+in.ID, want, err)
		}
		note(ctx, "flow-profile", map[string]any{"id": in.ID, "deleted": true})
		return nil, nil
	})
}

// ---- registration ----

// FlowStats is what the flow store holds and how the collector's sockets
// fare.
type FlowStats struct {
	Backend   string                     `json:"backend"`
	Flows     int64                      `json:"flows"`
	Bytes     int64                      `json:"bytes" doc:"On disk, as the engine reports it."`
	Oldest    *time.Time                 `json:"oldest,omitempty"`
	Newest    *time.Time                 `json:"newest,omitempty"`
	Exporters int                        `json:"exporters" doc:"Exporters known (heard or configured)."`
	Collector bool                       `json:"collector" doc:"This manager runs a collector."`
	Listeners []collector.ListenerStatus `json:"listeners"`
}

func (a *API) registerFlows() {
	tags := []string{"Flows"}
	csvResponse := map[string]*huma.Response{"200": {Description: "CSV, UTF-8 with a byte order mark.", Content: map[string]*huma.MediaType{"text/csv": {}}}}
	register(a, PermFlowsRead, huma.Operation{
		OperationID: "flows-top", Method: http.MethodGet, Path: "/api/v1/flows/top",
		Summary: "Top-N flow statistics", Tags: tags,
		Description: "The largest groups of flows by bytes, packets or flows, aggregated by any of srcip, dstip, srcport, dstport, proto, exporter, inif, outif, ipver, " +
			"with the totals over every flow selected. Example: /api/v1/flows/top?by=srcip,dstip&order=bytes&limit=10&filter=proto%20tcp. Bytes and packets are corrected for sampling.",
	}, func(ctx context.Context, in *flowTopInput) (*struct{ Body FlowTop }, error) {
		t, err := a.flowTop(ctx, in)
		if err != nil {
			return nil, err
		}
		return &struct{ Body FlowTop }{*t}, nil
	})
	register(a, PermFlowsRead, huma.Operation{
		OperationID: "export-flows-top", Method: http.MethodGet, Path: "/api/v1/flows/top/export",
		Summary: "Top-N flow statistics as CSV", Tags: tags, Description: "The same statistic as /api/v1/flows/top, as a CSV file.",
		Responses: csvResponse,
	}, func(ctx context.Context, in *flowTopInput) (*huma.StreamResponse, error) {
		t, err := a.flowTop(ctx, in)
		if err != nil {
			return nil, err
		}
		return &huma.StreamResponse{Body: func(hctx huma.Context) { writeCSV(hctx, "yagura-flows-top.csv", topCSV(t)) }}, nil
	})
	register(a, PermFlowsRead, huma.Operation{
		OperationID: "flows-series", Method: http.MethodGet, Path: "/api/v1/flows/series",
		Summary: "Traffic, packets or flows over time", Tags: tags,
		Description: "One point per interval (a multiple of 5 minutes), zeros included; intervals cover the range whole, so 10 minutes on 5-minute intervals are 2 points. " +
			"Without a filter the 5-minute rollups answer, so long ranges are fast.",
	}, func(ctx context.Context, in *flowSeriesInput) (*struct{ Body FlowSeries }, error) {
		s, err := a.flowSeries(ctx, in)
		if err != nil {
			return nil, err
		}
		return &struct{ Body FlowSeries }{*s}, nil
	})
	register(a, PermFlowsRead, huma.Operation{
		OperationID: "export-flows-series", Method: http.MethodGet, Path: "/api/v1/flows/series/export",
		Summary: "A flow series as CSV", Tags: tags, Description: "The same series as /api/v1/flows/series, as a CSV file.",
		Responses: csvResponse,
	}, func(ctx context.Context, in *flowSeriesInput) (*huma.StreamResponse, error) {
		s, err := a.flowSeries(ctx, in)
		if err != nil {
			return nil, err
		}
		return &huma.StreamResponse{Body: func(hctx huma.Context) { writeCSV(hctx, "yagura-flows-series.csv", seriesCSV(s)) }}, nil
	})
	register(a, PermFlowsRead, huma.Operation{
		OperationID: "list-flows", Method: http.MethodGet, Path: "/api/v1/flows",
		Summary: "List raw flows", Tags: tags,
		Description: "Flow records, newest first, a page at a time, with the exporter's raw counters beside the sampling-corrected ones and each flow's Community ID.",
	}, func(ctx context.Context, in *flowListInput) (*struct{ Body FlowPage }, error) {
		p, err := a.listFlows(ctx, in)
		if err != nil {
			return nil, err
		}
		return &struct{ Body FlowPage }{*p}, nil
	})
	register(a, PermFlowsRead, huma.Operation{
		OperationID: "export-flows", Method: http.MethodGet, Path: "/api/v1/flows/export",
		Summary: "Export raw flows as CSV or JSON lines", Tags: tags,
		Description: "Streams every flow selected, newest first, straight from the store: nothing is held in memory. CSV is UTF-8 with a byte order mark. " +
			"A response cut off midway (the store failed) ends without its final chunk; JSON lines first get an {\"error\": …} line.",
		Responses: map[string]*huma.Response{"200": {Description: "The flows.", Content: map[string]*huma.MediaType{"text/csv": {}, "application/x-ndjson": {}}}},
	}, func(ctx context.Context, in *struct {
		FlowSearch
		Format string `query:"format" enum:"csv,json" default:"csv"`
		Limit  int    `query:"limit" minimum:"0" default:"0" doc:"At most this many flows; 0: all."`
	}) (*huma.StreamResponse, error) {
		sel, err := a.selectFlows(ctx, in.FlowSearch)
		if err != nil {
			return nil, err
		}
		return &huma.StreamResponse{Body: func(hctx huma.Context) { a.exportFlows(ctx, hctx, sel, in.Format, in.Limit) }}, nil
	})
	register(a, PermFlowsRead, huma.Operation{
		OperationID: "list-flow-exporters", Method: http.MethodGet, Path: "/api/v1/flows/exporters",
		Summary: "List flow exporters", Tags: tags,
		Description: "Every exporter heard or configured, by address: protocols, last packet, counters, templates, and the sampling rate in use with where it comes from " +
			"(and a warning when it is missing or changed). Exporters that went silent stay listed.",
	}, func(ctx context.Context, _ *struct{}) (*items[FlowExporter], error) {
		if err := a.flowsEnabled(); err != nil {
			return nil, err
		}
		x, err := a.loadFlowExporters(ctx)
		if err != nil {
			return nil, err
		}
		out := &items[FlowExporter]{}
		out.Body.Items = x.list()
		return out, nil
	})
	register(a, PermFlowsWrite, huma.Operation{
		OperationID: "update-flow-exporter", Method: http.MethodPatch, Path: "/api/v1/flows/exporters/{address}",
		Summary: "Name an exporter or override its sampling rate", Tags: tags,
		Description: `Example: {"name":"core-router","sampling_rate":1000}. An exporter that has not sent yet may be configured ahead. ` +
			"The collector applies the change to the next datagram; flows already stored keep the rate they were stored with.",
	}, a.updateFlowExporter)
	register(a, PermFlowsRead, huma.Operation{
		OperationID: "flows-stats", Method: http.MethodGet, Path: "/api/v1/flows/stats",
		Summary: "What the flow store holds and how the collector's sockets fare", Tags: tags,
		Description: "Backend, flows stored, size on disk and time span; per listening socket, datagrams received and kernel drops (a sign the collector cannot keep up).",
	}, func(ctx context.Context, _ *struct{}) (*struct{ Body FlowStats }, error) {
		if err := a.flowsEnabled(); err != nil {
			return nil, err
		}
		st, err := a.d.Flows.Stats(ctx)
		if err != nil {
			return nil, a.flowStoreErr("flow store stats", err)
		}
		x, err := a.loadFlowExporters(ctx)
		if err != nil {
			return nil, err
		}
		out := FlowStats{Backend: st.Backend, Flows: st.Flows, Bytes: st.Bytes, Oldest: ptime(st.Oldest), Newest: ptime(st.Newest),
			Exporters: len(x.list()), Listeners: []collector.ListenerStatus{}}
		if a.d.FlowCollector != nil {
			out.Collector = true
			out.Listeners = append(out.Listeners, a.d.FlowCollector.Listeners()...)
		}
		return &struct{ Body FlowStats }{out}, nil
	})
	a.registerFlowProfiles()
}
