package ctl

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/yagura/yagura/internal/api"
	"github.com/yagura/yagura/internal/flowfilter"
)

// flowSearch holds the flags every flow analysis shares; they map to the
// API's FlowSearch query parameters.
type flowSearch struct {
	from, to, profile, filter string
	channels                  []string
}

func (s *flowSearch) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&s.from, "from", "", `flows that started at or after: a duration back from now (30m, 24h, 7d), an RFC 3339 time, a date, or Flowmon's "2025-04-01 09:00" (UTC) (default: an hour before --to)`)
	f.StringVar(&s.to, "to", "", "flows that started before this time, in the same forms (default: now)")
	f.StringVar(&s.profile, "profile", "", "profile (default live: every flow, a channel per exporter)")
	f.StringSliceVar(&s.channels, "channels", nil, "only these channels of the profile, by ID or name (comma-separated or repeated)")
	f.StringVar(&s.filter, "filter", "", `nfdump-like filter, e.g. 'proto tcp and dst port 443 and not src net 10.0.0.0/8', 'exporter core-router'`)
}

// flowTimeLayouts are Flowmon's time forms, in UTC, which the API reads
// as they are.
var flowTimeLayouts = []string{"2006-01-02 15:04", "2006-01-02 15:04:05"}

// flowWhen reads a --from or --to value for the API.
func flowWhen(flag, s string, now time.Time) (string, error) {
	t, err := parseWhen(flag, s, now)
	if err == nil {
		return t.UTC().Format(time.RFC3339Nano), nil
	}
	for _, layout := range flowTimeLayouts {
		if _, ferr := time.Parse(layout, strings.TrimSpace(s)); ferr == nil {
			return strings.TrimSpace(s), nil
		}
	}
	return "", fmt.Errorf(`%w, or Flowmon's "2025-04-01 09:00" (UTC)`, err)
}

// checkFilter parses a filter given as what (--filter) here, to point at
// a mistake with a caret before asking the manager.
func checkFilter(what, s string) error {
	_, err := flowfilter.Parse(s)
	var se *flowfilter.SyntaxError
	if !errors.As(err, &se) {
		return err
	}
	msg := fmt.Sprintf("%s: column %d: %s", what, se.Col, se.Msg)
	if !strings.ContainsAny(s, "\r\n") {
		msg += "\n  " + s + "\n  " + strings.Repeat(" ", se.Col-1) + "^"
	}
	return errors.New(msg)
}

func (s *flowSearch) query(now time.Time) (url.Values, error) {
	q := url.Values{}
	for _, f := range [...]struct{ name, value string }{{"from", s.from}, {"to", s.to}} {
		if f.value == "" {
			continue
		}
		v, err := flowWhen(f.name, f.value, now)
		if err != nil {
			return nil, err
		}
		q.Set(f.name, v)
	}
	if s.profile != "" {
		q.Set("profile", s.profile)
	}
	setList(q, "channels", nonEmpty(s.channels))
	if strings.TrimSpace(s.filter) != "" {
		if err := checkFilter("--filter", s.filter); err != nil {
			return nil, err
		}
		q.Set("filter", s.filter)
	}
	return q, nil
}

// ---- human-readable numbers (exact ones with -o json) ----

// siCount is n in SI units to one decimal: 999, 1.2 k, 3.4 M.
func siCount(n uint64) string {
	if n < 1000 {
		return strconv.FormatUint(n, 10)
	}
	v, i := float64(n), -1
	for v >= 999.95 && i < 5 {
		v /= 1000
		i++
	}
	return fmt.Sprintf("%.1f %c", v, "kMGTPE"[i])
}

// siRate is a per-second rate in SI units: 812.0 bit/s, 1.2 Mbit/s.
func siRate(r float64, unit string) string {
	i := -1
	for r >= 999.95 && i < 5 {
		r /= 1000
		i++
	}
	if i < 0 {
		return fmt.Sprintf("%.1f %s", r, unit)
	}
	return fmt.Sprintf("%.1f %c%s", r, "kMGTPE"[i], unit)
}

func bytesText(n uint64) string { return byteSize(int64(min(n, 1<<63-1))) }

// protoName is an IP protocol as filters write it (tcp, udp, 47).
func protoName(n uint8) string {
	return strings.TrimPrefix(flowfilter.Proto{N: n}.String(), "proto ")
}

// protoNumber reads --proto: a number or a name as filters take it.
func protoNumber(s string) (int, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "all" || s == "0" {
		return 0, nil
	}
	e, err := flowfilter.Parse("proto " + s)
	if p, ok := e.(flowfilter.Proto); err == nil && ok {
		return int(p.N), nil
	}
	return 0, fmt.Errorf("--proto %q: want a protocol number (6) or name (tcp, udp, icmp, …), or all", s)
}

// sparkline draws values as a row of block characters, highest full.
func sparkline(values []uint64) string {
	const bars = "▁▂▃▄▅▆▇█"
	var top uint64
	for _, v := range values {
		top = max(top, v)
	}
	blocks := []rune(bars)
	var b strings.Builder
	for _, v := range values {
		i := 0
		if top > 0 {
			// In floating point: v × 7 overflows near the top of uint64.
			i = int(math.Round(float64(v) / float64(top) * float64(len(blocks)-1)))
			if v > 0 && i == 0 {
				i = 1 // something is not nothing
			}
		}
		b.WriteRune(blocks[i])
	}
	return b.String()
}

func flowsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "flows",
		Short: "Analyse network flows: top talkers, charts, raw flows, exporters, profiles",
		Long: `Every analysis selects flows the same way: --from/--to (default: the last hour),
--profile and --channels (default: the live profile, all exporters), and
--filter, an nfdump-like expression:

  proto tcp and dst port 443 and not src net 10.0.0.0/8
  host 192.0.2.1 or port in [22, 3389]
  bytes > 1M and exporter core-router

Tables show sizes and counts rounded (1.2 GiB, 3.4 M); -o json gives exact numbers.`,
	}
	cmd.AddCommand(flowsTopCmd(g), flowsChartCmd(g), flowsListCmd(g), flowsExportCmd(g), flowsExportersCmd(g), flowsProfilesCmd(g), flowsStatsCmd(g))
	return cmd
}

func flowsTopCmd(g *globals) *cobra.Command {
	var s flowSearch
	var by []string
	var order string
	var limit int
	var asCSV bool
	top := &cobra.Command{
		Use:   "top",
		Short: "Show the largest groups of flows: top talkers, ports, protocols, exporters",
		Long: `Aggregates the selected flows by --by (any of srcip, dstip, srcport, dstport,
proto, exporter, inif, outif, ipver) and shows the --limit largest by --order
(bytes, packets or flows), each with its share of the total.`,
		Example: `  yagura ctl flows top --by srcip,dstip --order bytes --limit 10
  yagura ctl flows top --by dstport --filter 'proto tcp' --from 24h
  yagura ctl flows top --by exporter --order flows --from "2025-04-01 00:00" --to "2025-04-02 00:00"
  yagura ctl flows top --profile dmz --channels web --by srcip --csv > top.csv`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := s.query(time.Now())
			if err != nil {
				return err
			}
			setList(q, "by", nonEmpty(by))
			q.Set("order", order)
			q.Set("limit", strconv.Itoa(limit))
			if asCSV {
				return g.export(cmd, "flows", "/api/v1/flows/top/export", q, "csv", "", false)
			}
			var t api.FlowTop
			if err := g.do(cmd, http.MethodGet, "/api/v1/flows/top", q, nil, &t); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), t, func(tw *tabwriter.Writer) { topTable(tw, &t) })
		},
	}
	s.addFlags(top)
	f := top.Flags()
	f.StringSliceVar(&by, "by", []string{"srcip"}, "aggregate by these keys: srcip, dstip, srcport, dstport, proto, exporter, inif, outif, ipver")
	f.StringVar(&order, "order", "bytes", "order by bytes, packets or flows")
	f.IntVar(&limit, "limit", 10, "this many groups (1 to 10000)")
	f.BoolVar(&asCSV, "csv", false, "print CSV (exact numbers, UTF-8 with a byte order mark) instead of a table")
	return top
}

// keyText shows one key of a top row: protocols by name, exporters with
// their names.
func keyText(t *api.FlowTop, key, v string) string {
	switch key {
	case "proto":
		if n, err := strconv.ParseUint(v, 10, 8); err == nil {
			return protoName(uint8(n))
		}
	case "exporter":
		if name := t.ExporterNames[v]; name != "" {
			return name + " (" + v + ")"
		}
	}
	return v
}

func topTable(tw *tabwriter.Writer, t *api.FlowTop) {
	for _, k := range t.By {
		fmt.Fprint(tw, strings.ToUpper(k)+"\t")
	}
	fmt.Fprintln(tw, "BYTES\tPACKETS\tFLOWS\tSHARE")
	for _, r := range t.Rows {
		for _, k := range t.By {
			fmt.Fprint(tw, keyText(t, k, r.Keys[k])+"\t")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f%%\n", bytesText(r.Bytes), siCount(r.Packets), siCount(r.Flows), 100*r.Share)
	}
	fmt.Fprint(tw, "TOTAL\t")
	for i := 1; i < len(t.By); i++ {
		fmt.Fprint(tw, "\t")
	}
	fmt.Fprintf(tw, "%s\t%s\t%s\t\n", bytesText(t.Total.Bytes), siCount(t.Total.Packets), siCount(t.Total.Flows))
}

func flowsChartCmd(g *globals) *cobra.Command {
	var s flowSearch
	var measure, interval, proto string
	var asCSV bool
	chart := &cobra.Command{
		Use:   "chart",
		Short: "Chart traffic, packets or flows over time, with a sparkline",
		Long: `Prints a sparkline of --measure per --interval (a multiple of 5m; by default 5m,
or longer so that a long range stays within 288 points), then each interval's
value and rate. traffic counts bytes and shows bits per second.`,
		Example: `  yagura ctl flows chart --measure traffic --interval 5m
  yagura ctl flows chart --measure flows --proto udp --from 24h --interval 1h
  yagura ctl flows chart --from 7d --filter 'host 192.0.2.1' -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := s.query(time.Now())
			if err != nil {
				return err
			}
			n, err := protoNumber(proto)
			if err != nil {
				return err
			}
			q.Set("measure", measure)
			if interval != "" {
				q.Set("interval", interval)
			}
			if n != 0 {
				q.Set("proto", strconv.Itoa(n))
			}
			if asCSV {
				return g.export(cmd, "flows", "/api/v1/flows/series/export", q, "csv", "", false)
			}
			var sr api.FlowSeries
			if err := g.do(cmd, http.MethodGet, "/api/v1/flows/series", q, nil, &sr); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), sr, func(tw *tabwriter.Writer) { chartTable(tw, &sr) })
		},
	}
	s.addFlags(chart)
	f := chart.Flags()
	f.StringVar(&measure, "measure", "traffic", "traffic (bits per second), bytes, packets or flows")
	f.StringVar(&interval, "interval", "", "length of each point, a multiple of 5m: 5m, 15m, 1h, 1d (default: 5m, longer for long ranges)")
	f.StringVar(&proto, "proto", "", "count only this IP protocol: tcp, udp, icmp, a number, or all (default all)")
	f.BoolVar(&asCSV, "csv", false, "print CSV (exact numbers) instead of the chart")
	return chart
}

func chartTable(tw *tabwriter.Writer, s *api.FlowSeries) {
	values := make([]uint64, len(s.Points))
	var peak float64
	for i, p := range s.Points {
		values[i] = p.Value
		peak = max(peak, p.Rate)
	}
	what := s.Measure
	if s.Proto != 0 {
		what += " of " + protoName(uint8(s.Proto))
	}
	from, to := s.From, s.To
	avg := 0.0
	if secs := to.Sub(from).Seconds(); secs > 0 {
		scale := 1.0
		if s.Measure == "traffic" {
			scale = 8
		}
		avg = float64(s.Total) * scale / secs
	}
	// The sparkline and summary are not table rows: write them around
	// the tab writer's columns.
	fmt.Fprintf(tw, "%s, profile %s, %s to %s, every %s\n", what, s.Profile, ts(&from), ts(&to), shortDuration(time.Duration(s.IntervalSeconds)*time.Second))
	fmt.Fprintf(tw, "%s\n", sparkline(values))
	fmt.Fprintf(tw, "peak %s, average %s, total %s\n\n", siRate(peak, s.Unit), siRate(avg, s.Unit), valueText(s.Measure, s.Total))
	fmt.Fprintln(tw, "TIME\tVALUE\tRATE")
	for _, p := range s.Points {
		t := p.Time
		fmt.Fprintf(tw, "%s\t%s\t%s\n", ts(&t), valueText(s.Measure, p.Value), siRate(p.Rate, s.Unit))
	}
}

// shortDuration writes 5m, 1h, 1h30m rather than 5m0s, 1h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

func valueText(measure string, v uint64) string {
	switch measure {
	case "traffic", "bytes":
		return bytesText(v)
	}
	return siCount(v)
}

type flowPage struct {
	Items      []api.Flow `json:"items"`
	NextCursor string     `json:"next_cursor,omitempty"`
}

func hostPort(addr string, port uint16, proto uint8) string {
	if proto != 6 && proto != 17 && proto != 132 {
		return addr
	}
	if a, err := netip.ParseAddr(addr); err == nil {
		return netip.AddrPortFrom(a, port).String()
	}
	return addr
}

func flowsListCmd(g *globals) *cobra.Command {
	var s flowSearch
	var limit int
	var cursor string
	ls := &cobra.Command{
		Use:   "list",
		Short: "List raw flows, newest first, a page at a time",
		Long: `Prints one page of flows, newest first (--limit, 100 by default); when there are
more, the --cursor for the next page is printed on standard error. Bytes and
packets are corrected for sampling; -o json also has the exporter's raw
counters and each flow's Community ID. For everything at once, use flows export.`,
		Example: `  yagura ctl flows list --filter 'host 192.0.2.1 and port 22' --from 24h
  yagura ctl flows list --limit 20 -o json | jq -r '.[].community_id'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := s.query(time.Now())
			if err != nil {
				return err
			}
			if limit < 1 || limit > 10000 {
				return fmt.Errorf("--limit %d: want 1 to 10000", limit)
			}
			q.Set("limit", strconv.Itoa(limit))
			if cursor != "" {
				q.Set("cursor", cursor)
			}
			var page flowPage
			if err := g.do(cmd, http.MethodGet, "/api/v1/flows", q, nil, &page); err != nil {
				return err
			}
			if err := g.emit(cmd.OutOrStdout(), page.Items, func(tw *tabwriter.Writer) { flowRows(tw, page.Items) }); err != nil {
				return err
			}
			if page.NextCursor != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "More flows: add --cursor %s for the next page.\n", page.NextCursor)
			}
			return nil
		},
	}
	s.addFlags(ls)
	ls.Flags().IntVar(&limit, "limit", 100, "at most this many (1 to 10000)")
	ls.Flags().StringVar(&cursor, "cursor", "", "start after the page that printed this cursor")
	return ls
}

func flowRows(tw *tabwriter.Writer, flows []api.Flow) {
	fmt.Fprintln(tw, "START\tDURATION\tEXPORTER\tPROTO\tSOURCE\tDESTINATION\tFLAGS\tBYTES\tPACKETS\tSAMPLING")
	for _, f := range flows {
		start := f.TimeStart
		exp := f.Exporter
		if f.ExporterName != "" {
			exp = f.ExporterName
		}
		flags := strings.TrimSpace(strings.TrimPrefix(flowfilter.Flags{Mask: f.TCPFlags}.String(), "flags"))
		sampling := "-"
		if f.SamplingRate > 1 {
			sampling = "1:" + strconv.FormatUint(uint64(f.SamplingRate), 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ts(&start), f.TimeEnd.Sub(f.TimeStart).Round(time.Millisecond), exp, protoName(f.Proto),
			hostPort(f.SrcAddr, f.SrcPort, f.Proto), hostPort(f.DstAddr, f.DstPort, f.Proto), dash(flags), bytesText(f.Bytes), siCount(f.Packets), sampling)
	}
}

func flowsExportCmd(g *globals) *cobra.Command {
	var s flowSearch
	var format, out string
	var limit int
	var force bool
	export := &cobra.Command{
		Use:   "export",
		Short: "Export raw flows as CSV or JSON lines (streamed)",
		Long: `Streams every selected flow, newest first, to standard output or to a file (-O).
Nothing is held in memory on either side. CSV is UTF-8 with a byte order mark;
--format json writes one JSON object per line. Writing to a file shows the
bytes received on standard error (when it is a terminal); the file appears
under its name only once the export is complete.`,
		Example: `  yagura ctl flows export --from 24h --filter 'port 53' > dns.csv
  yagura ctl flows export --from 7d --format json -O week.jsonl`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "csv" && format != "json" {
				return fmt.Errorf("--format %q: want csv or json", format)
			}
			q, err := s.query(time.Now())
			if err != nil {
				return err
			}
			q.Set("format", format)
			if limit > 0 {
				q.Set("limit", strconv.Itoa(limit))
			}
			return g.export(cmd, "flows", "/api/v1/flows/export", q, format, out, force)
		},
	}
	s.addFlags(export)
	f := export.Flags()
	f.StringVar(&format, "format", "csv", "csv or json (JSON lines)")
	f.StringVarP(&out, "output-file", "O", "", "write to this file (default: standard output)")
	f.IntVar(&limit, "limit", 0, "at most this many flows (0: all)")
	f.BoolVar(&force, "force", false, "replace an existing file")
	return export
}

// samplingText says the rate in use and where it came from.
func samplingText(e *api.FlowExporter) string {
	if e.SamplingRate <= 1 && e.SamplingSource == "" {
		return "none"
	}
	s := "1:" + strconv.FormatUint(uint64(e.SamplingRate), 10)
	if e.SamplingSource != "" {
		s += " (" + e.SamplingSource + ")"
	}
	return s
}

func flowsExportersCmd(g *globals) *cobra.Command {
	exporters := &cobra.Command{
		Use:     "exporters",
		Aliases: []string{"exporter"},
		Short:   "List flow exporters (routers, switches, probes) with their status",
		Long: `Lists every exporter heard or configured: name, protocols, last packet, the
sampling rate in use and where it comes from (with a warning when it is
missing or changed), and counters since the collector started.`,
		Example: `  yagura ctl flows exporters
  yagura ctl flows exporters set 192.0.2.1 --name core-router --sampling-rate 1000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out list[api.FlowExporter]
			if err := g.do(cmd, http.MethodGet, "/api/v1/flows/exporters", nil, nil, &out); err != nil {
				return err
			}
			now := time.Now()
			return g.emit(cmd.OutOrStdout(), out.Items, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "ADDRESS\tNAME\tPROTOCOLS\tLAST PACKET\tSAMPLING\tWARNING\tPACKETS\tFLOWS\tERRORS\tTEMPLATES")
				for i := range out.Items {
					e := &out.Items[i]
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", e.Address, dash(e.Name), dash(strings.Join(e.Protocols, ",")),
						ago(e.LastPacket, now), samplingText(e), dash(e.SamplingWarning), siCount(e.Packets), siCount(e.Flows),
						siCount(e.DecodeErrors+e.TemplateMisses), e.Templates)
				}
			})
		},
	}
	var name string
	var rate uint32
	set := &cobra.Command{
		Use:   "set ADDRESS [--name NAME] [--sampling-rate N]",
		Short: "Name an exporter or override its sampling rate",
		Long: `Filters may then name the exporter (exporter core-router). --sampling-rate N
multiplies the exporter's bytes and packets by N from the next datagram on,
whatever it reports; 0 removes the override. An exporter that has not sent
yet may be configured ahead; --name "" removes the name.`,
		Example: `  yagura ctl flows exporters set 192.0.2.1 --name core-router
  yagura ctl flows exporters set 192.0.2.1 --sampling-rate 1000
  yagura ctl flows exporters set 2001:db8::1 --sampling-rate 0`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var body api.FlowExporterPatch
			if cmd.Flags().Changed("name") {
				body.Name = &name
			}
			if cmd.Flags().Changed("sampling-rate") {
				body.SamplingRate = &rate
			}
			if body.Name == nil && body.SamplingRate == nil {
				return errors.New("nothing to set: give --name, --sampling-rate or both")
			}
			addr, err := netip.ParseAddr(args[0])
			if err != nil {
				return fmt.Errorf("%q is not an IP address: give the exporter's address, such as 192.0.2.1", args[0])
			}
			var e api.FlowExporter
			if err := g.do(cmd, http.MethodPatch, "/api/v1/flows/exporters/"+url.PathEscape(addr.String()), nil, body, &e); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), e, func(tw *tabwriter.Writer) {
				override := "none"
				if e.Override != 0 {
					override = "1:" + strconv.FormatUint(uint64(e.Override), 10)
				}
				fmt.Fprintf(tw, "Exporter %s: name %s, sampling-rate override %s.\n", e.Address, dash(e.Name), override)
			})
		},
	}
	set.Flags().StringVar(&name, "name", "", "name for filters and lists (unique; not an address)")
	set.Flags().Uint32Var(&rate, "sampling-rate", 0, "count each sampled packet as N (1 in N sampling); 0 removes the override")
	exporters.AddCommand(set)
	return exporters
}

func flowsStatsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "stats",
		Short: "Show what the flow store holds and how the collector's sockets fare",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st api.FlowStats
			if err := g.do(cmd, http.MethodGet, "/api/v1/flows/stats", nil, nil, &st); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), st, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Backend\t%s\nFlows\t%s\nSize on disk\t%s\nOldest\t%s\nNewest\t%s\nExporters\t%d\n",
					st.Backend, siCount(uint64(max(st.Flows, 0))), byteSize(st.Bytes), ts(st.Oldest), ts(st.Newest), st.Exporters)
				if !st.Collector {
					fmt.Fprintln(tw, "Collector\tnot running on this manager")
					return
				}
				fmt.Fprintln(tw, "\nPROTOCOL\tLISTEN\tSOCKETS\tBUFFER\tDATAGRAMS\tKERNEL DROPS")
				for _, l := range st.Listeners {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", l.Protocol, l.Address, l.Sockets, byteSize(int64(l.ReadBuffer)), siCount(l.Datagrams), siCount(l.KernelDrops))
				}
			})
		},
	}
}

// ---- profiles ----

// flowProfileFile is what -f FILE may hold: the API's input, or the
// output of `flows profiles show -o json`, whose read-only fields are
// ignored.
type flowProfileFile struct {
	api.FlowProfileInput
	ID        string `json:"id,omitempty"`
	Builtin   bool   `json:"builtin,omitempty"`
	Version   int64  `json:"version,omitempty"`
	CreatedAt any    `json:"created_at,omitempty"`
	UpdatedAt any    `json:"updated_at,omitempty"`
}

const flowProfileShape = `{"name": …, "filter": "…", "channels": [{"id": …, "name": …, "filter": "…"}]}`

type flowProfileFlags struct {
	file, name, description, filter string
	channels                        []string
}

func (f *flowProfileFlags) add(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVarP(&f.file, "file", "f", "", "the profile as JSON, "+flowProfileShape+" (- for standard input); flags apply on top")
	fs.StringVar(&f.name, "name", "", "the profile's name")
	fs.StringVar(&f.description, "description", "", "what the profile is for")
	fs.StringVar(&f.filter, "filter", "", "which flows the profile covers (empty: all)")
	fs.StringArrayVar(&f.channels, "channel", nil, `a channel, ID=FILTER, e.g. web='port in [80, 443]' (repeat; replaces every channel; "" for none)`)
}

// apply builds the profile input: in, then the file, then the flags given.
func (f *flowProfileFlags) apply(cmd *cobra.Command, in *api.FlowProfileInput) (string, error) {
	var fileID string
	if f.file != "" {
		file := flowProfileFile{FlowProfileInput: *in}
		if err := decodeFile(cmd, f.file, &file, flowProfileShape); err != nil {
			return "", err
		}
		*in, fileID = file.FlowProfileInput, file.ID
	}
	fs := cmd.Flags()
	if fs.Changed("name") {
		in.Name = f.name
	}
	if fs.Changed("description") {
		in.Description = f.description
	}
	if fs.Changed("filter") {
		if err := checkFilter("--filter", f.filter); err != nil {
			return "", err
		}
		in.Filter = f.filter
	}
	if fs.Changed("channel") {
		in.Channels = nil
		for _, c := range nonEmpty(f.channels) {
			id, filter, ok := strings.Cut(c, "=")
			if !ok || strings.TrimSpace(id) == "" {
				return "", fmt.Errorf("--channel %q: want ID=FILTER, e.g. web='port in [80, 443]'", c)
			}
			if err := checkFilter("--channel "+strings.TrimSpace(id), filter); err != nil {
				return "", err
			}
			in.Channels = append(in.Channels, api.FlowChannel{ID: strings.TrimSpace(id), Filter: filter})
		}
	}
	if strings.TrimSpace(in.Name) == "" {
		return "", errors.New(`the profile needs a name: give --name (or "name" in -f FILE)`)
	}
	return fileID, nil
}

func flowProfilePath(id string) string { return "/api/v1/flows/profiles/" + url.PathEscape(id) }

func showFlowProfile(tw *tabwriter.Writer, p *api.FlowProfile) {
	kind := "saved, version " + strconv.FormatInt(p.Version, 10)
	if p.Builtin {
		kind = "built in (read-only)"
	}
	filter := p.Filter
	if strings.TrimSpace(filter) == "" {
		filter = "(all flows)"
	}
	fmt.Fprintf(tw, "ID\t%s\nName\t%s\nDescription\t%s\nFilter\t%s\nKind\t%s\n", p.ID, p.Name, dash(p.Description), filter, kind)
	if p.UpdatedAt != nil {
		fmt.Fprintf(tw, "Updated\t%s\n", ts(p.UpdatedAt))
	}
	fmt.Fprintln(tw, "\nCHANNEL\tNAME\tFILTER")
	for _, c := range p.Channels {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.ID, dash(c.Name), dash(c.Filter))
	}
}

func flowsProfilesCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "profiles",
		Aliases: []string{"profile"},
		Short:   "Flow profiles: saved filters over all flows, split into channels",
		Long: `A profile is a saved filter over all flows (one per site, or per application);
its channels split it (per exporter, per service). Analyses take --profile and
--channels. The built-in profile live is every flow, with a channel per exporter.`,
	}
	ls := &cobra.Command{
		Use: "list", Short: "List flow profiles", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out list[api.FlowProfile]
			if err := g.do(cmd, http.MethodGet, "/api/v1/flows/profiles", nil, nil, &out); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), out.Items, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "ID\tNAME\tCHANNELS\tFILTER")
				for _, p := range out.Items {
					filter := p.Filter
					if p.Builtin {
						filter = "(all flows; built in)"
					}
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", p.ID, p.Name, len(p.Channels), dash(filter))
				}
			})
		},
	}
	show := &cobra.Command{
		Use: "show ID", Short: "Show a flow profile and its channels", Args: cobra.ExactArgs(1),
		Example: "  yagura ctl flows profiles show dmz -o json > dmz.json   # edit, then flows profiles update dmz -f dmz.json",
		RunE: func(cmd *cobra.Command, args []string) error {
			var p api.FlowProfile
			if err := g.do(cmd, http.MethodGet, flowProfilePath(args[0]), nil, nil, &p); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), p, func(tw *tabwriter.Writer) { showFlowProfile(tw, &p) })
		},
	}
	var cf flowProfileFlags
	create := &cobra.Command{
		Use:   "create ID (--name NAME [flags] | -f FILE)",
		Short: "Create a flow profile",
		Long: `Builds the profile from -f FILE (JSON, as the API takes it or as flows profiles
show -o json prints it), then the flags on top. The ID is lower-case letters,
digits, '.', '_' and '-'; it may come from the file instead.`,
		Example: `  yagura ctl flows profiles create dmz --name DMZ --filter 'net 203.0.113.0/24' \
    --channel web='port in [80, 443]' --channel mail='port in [25, 465, 587]'
  yagura ctl flows profiles create -f dmz.json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var in api.FlowProfileInput
			fileID, err := cf.apply(cmd, &in)
			if err != nil {
				return err
			}
			body := api.FlowProfileCreate{ID: fileID, FlowProfileInput: in}
			if len(args) == 1 {
				body.ID = args[0]
			}
			if body.ID == "" {
				return errors.New(`the profile needs an ID: give it as the argument (or "id" in -f FILE)`)
			}
			var p api.FlowProfile
			if err := g.do(cmd, http.MethodPost, "/api/v1/flows/profiles", nil, body, &p); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), p, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Flow profile %s %q created with %d channels.\n", p.ID, p.Name, len(p.Channels))
			})
		},
	}
	cf.add(create)
	var uf flowProfileFlags
	update := &cobra.Command{
		Use:   "update ID [flags] [-f FILE]",
		Short: "Change a flow profile",
		Long: `Flags change only what they name; --channel replaces every channel (give "" to
remove them all). With -f FILE, the file replaces the whole profile (flags then
apply on top). The change is made only if nobody changed the profile since this
command read it (If-Match).`,
		Example: `  yagura ctl flows profiles update dmz --filter 'net 203.0.113.0/24 or net 2001:db8:1::/48'
  yagura ctl flows profiles update dmz -f dmz.json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			path := flowProfilePath(args[0])
			var cur api.FlowProfile
			etag, err := c.GetETag(cmd.Context(), path, &cur)
			if err != nil {
				return err
			}
			if cur.Builtin {
				return fmt.Errorf("profile %s is built in and cannot be changed; create one of your own with flows profiles create", cur.ID)
			}
			in := api.FlowProfileInput{Name: cur.Name, Description: cur.Description, Filter: cur.Filter, Channels: cur.Channels}
			if uf.file != "" {
				in = api.FlowProfileInput{}
			}
			if _, err := uf.apply(cmd, &in); err != nil {
				return err
			}
			var p api.FlowProfile
			if err := putIfMatch(cmd, c, path, etag, cur.Version, in, &p); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), p, func(tw *tabwriter.Writer) { showFlowProfile(tw, &p) })
		},
	}
	uf.add(update)
	del := &cobra.Command{
		Use: "delete ID", Short: "Delete a flow profile (the flows stay)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.do(cmd, http.MethodDelete, flowProfilePath(args[0]), nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Flow profile %s deleted.\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(ls, show, create, update, del)
	return cmd
}
