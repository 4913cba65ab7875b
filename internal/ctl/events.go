package ctl

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/yagura/yagura/internal/api"
	"github.com/yagura/yagura/internal/telemetry"
)

// parseWhen reads a --since or --until value: a duration back from now
// ("30m", "24h", "7d"), an RFC 3339 time, or a local date.
func parseWhen(flag, s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	d, err := time.ParseDuration(s)
	if err != nil {
		// time.ParseDuration stops at hours; a week back is "7d" to people.
		if n, aerr := strconv.Atoi(strings.TrimSuffix(s, "d")); aerr == nil && strings.HasSuffix(s, "d") {
			d, err = time.Duration(n)*24*time.Hour, nil
		}
	}
	if err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("--%s %q: a duration means that long ago; give it without a sign", flag, s)
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation(time.DateOnly, s, time.Local); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--%s %q: want a duration back from now (30m, 24h, 7d), an RFC 3339 time (2025-04-01T09:00:00+09:00) or a date (2025-04-01)", flag, s)
}

// eventSearch holds the flags every events command shares; they map to the
// API's EventSearch query parameters.
type eventSearch struct {
	since, until                 string
	computers, types, severities []string
	text                         string
}

func (s *eventSearch) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&s.since, "since", "", "from this time: a duration back from now (30m, 24h, 7d), an RFC 3339 time or a date (default: 24h before --until)")
	f.StringVar(&s.until, "until", "", "before this time, in the same forms as --since (default: now)")
	f.StringSliceVar(&s.computers, "computer", nil, "only this computer's events (ID; repeat for several)")
	f.StringSliceVar(&s.types, "type", nil, "only this type, e.g. firewall, policy-applied (repeat for several)")
	f.StringSliceVar(&s.severities, "severity", nil, "only critical, error, warning or info (repeat for several)")
	f.StringVar(&s.text, "q", "", "only events whose type or data contain this text (ASCII case ignored)")
}

func (s *eventSearch) query(now time.Time) (url.Values, error) {
	q := url.Values{}
	for _, f := range [...]struct{ name, value string }{{"since", s.since}, {"until", s.until}} {
		if f.value == "" {
			continue
		}
		t, err := parseWhen(f.name, f.value, now)
		if err != nil {
			return nil, err
		}
		q.Set(f.name, t.UTC().Format(time.RFC3339Nano))
	}
	setList(q, "computer", s.computers)
	setList(q, "type", s.types)
	setList(q, "severity", s.severities)
	if s.text != "" {
		q.Set("q", s.text)
	}
	return q, nil
}

// setList sets a list query parameter the API reads comma-separated
// (OpenAPI explode: false): repeating it would keep only the first value.
func setList(q url.Values, key string, values []string) {
	if len(values) > 0 {
		q.Set(key, strings.Join(values, ","))
	}
}

type eventPage struct {
	Items      []api.Event `json:"items"`
	NextCursor string      `json:"next_cursor,omitempty"`
}

func eventRows(tw *tabwriter.Writer, header bool, events []api.Event) {
	if header {
		fmt.Fprintln(tw, "TIME\tSEVERITY\tTYPE\tCOMPUTER\tDATA")
	}
	for _, e := range events {
		t := e.Time
		computer := e.ComputerID
		if computer == "" {
			computer = "manager"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", ts(&t), e.Severity, e.Type, computer, dash(string(e.Data)))
	}
}

func eventsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Search, count and export the events agents and the manager record",
		Long: `Every events command searches the same way: --since/--until (default: the last
24 hours), --computer, --type, --severity (each repeatable) and --q for free text.`,
	}
	cmd.AddCommand(eventsListCmd(g), eventsCountCmd(g), eventsTopCmd(g), eventsStatsCmd(g), eventsExportCmd(g))
	return cmd
}

func eventsListCmd(g *globals) *cobra.Command {
	var s eventSearch
	var limit int
	var all bool
	var cursor string
	ls := &cobra.Command{
		Use:   "list",
		Short: "Search events, newest first, a page at a time",
		Long: `Prints one page of events, newest first (--limit, 100 by default). When there
are more, the --cursor for the next page is printed on standard error.

With --all, follows every page to the end and prints each as it arrives; --limit
is then the page size (1000 by default). With --all, -o json prints JSON lines
(one event object per line) instead of one array, so the output can be
streamed into jq or a file however many events there are.`,
		Example: `  yagura ctl events list --since 1h --severity critical --severity error
  yagura ctl events list --computer 0193a5c2-… --type firewall --q 203.0.113.5
  yagura ctl events list --since 2025-04-01T00:00:00+09:00 --until 2025-04-02T00:00:00+09:00 --all -o json > day.jsonl
  yagura ctl events list --cursor eyJ0Ijo…   # the next page`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch g.output {
			case "table", "", "json", "yaml":
			default:
				return fmt.Errorf("--output %q: want table, json or yaml", g.output)
			}
			q, err := s.query(time.Now())
			if err != nil {
				return err
			}
			if all && !cmd.Flags().Changed("limit") {
				limit = 1000
			}
			if limit < 1 || limit > 10000 {
				return fmt.Errorf("--limit %d: want 1 to 10000", limit)
			}
			q.Set("limit", strconv.Itoa(limit))
			if cursor != "" {
				q.Set("cursor", cursor)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if !all {
				var page eventPage
				if err := c.Do(cmd.Context(), http.MethodGet, "/api/v1/events", q, nil, &page); err != nil {
					return err
				}
				if err := g.emit(w, page.Items, func(tw *tabwriter.Writer) { eventRows(tw, true, page.Items) }); err != nil {
					return err
				}
				if page.NextCursor != "" {
					fmt.Fprintf(cmd.ErrOrStderr(), "More events: add --cursor %s for the next page, or --all for every page.\n", page.NextCursor)
				}
				return nil
			}
			for first := true; ; first = false {
				var page eventPage
				if err := c.Do(cmd.Context(), http.MethodGet, "/api/v1/events", q, nil, &page); err != nil {
					return err
				}
				if err := g.emitEventPage(w, page.Items, first); err != nil {
					return err
				}
				if page.NextCursor == "" {
					return nil
				}
				q.Set("cursor", page.NextCursor)
			}
		},
	}
	s.addFlags(ls)
	ls.Flags().IntVar(&limit, "limit", 100, "at most this many (1 to 10000); with --all, the page size")
	ls.Flags().BoolVar(&all, "all", false, "follow every page to the end, printing as it goes (-o json: JSON lines)")
	ls.Flags().StringVar(&cursor, "cursor", "", "start after the page that printed this cursor")
	return ls
}

// emitEventPage prints one page of `events list --all`: table rows (the
// header with the first page), JSON lines, or YAML list items, which
// concatenate into one list.
func (g *globals) emitEventPage(w io.Writer, events []api.Event, first bool) error {
	switch g.output {
	case "json":
		enc := json.NewEncoder(w)
		for _, e := range events {
			if err := enc.Encode(e); err != nil {
				return err
			}
		}
		return nil
	case "yaml":
		if len(events) == 0 && !first {
			return nil // "[]" would end the list the earlier pages began
		}
		return g.emit(w, events, nil)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	eventRows(tw, first, events)
	return tw.Flush()
}

func eventsCountCmd(g *globals) *cobra.Command {
	var s eventSearch
	count := &cobra.Command{
		Use:   "count",
		Short: "Count the events a search matches",
		Example: `  yagura ctl events count --since 24h --type firewall
  yagura ctl events count --since 7d --severity critical -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := s.query(time.Now())
			if err != nil {
				return err
			}
			var out struct {
				Count int64 `json:"count"`
			}
			if err := g.do(cmd, http.MethodGet, "/api/v1/events/count", q, nil, &out); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), out, func(tw *tabwriter.Writer) { fmt.Fprintf(tw, "%d\n", out.Count) })
		},
	}
	s.addFlags(count)
	return count
}

func eventsTopCmd(g *globals) *cobra.Command {
	var s eventSearch
	var limit int
	top := &cobra.Command{
		Use:   "top",
		Short: "Show the event types a search matches most often",
		Example: `  yagura ctl events top --since 24h
  yagura ctl events top --since 7d --computer 0193a5c2-… --limit 20`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := s.query(time.Now())
			if err != nil {
				return err
			}
			q.Set("limit", strconv.Itoa(limit))
			var out list[telemetry.TypeCount]
			if err := g.do(cmd, http.MethodGet, "/api/v1/events/top-types", q, nil, &out); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), out.Items, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "TYPE\tCOUNT")
				for _, t := range out.Items {
					fmt.Fprintf(tw, "%s\t%d\n", t.Type, t.Count)
				}
			})
		},
	}
	s.addFlags(top)
	top.Flags().IntVar(&limit, "limit", 10, "this many types (1 to 1000)")
	return top
}

func eventsStatsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "stats",
		Short: "Show what the event store holds: backend, events, size, time span",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st telemetry.Stats
			if err := g.do(cmd, http.MethodGet, "/api/v1/events/stats", nil, nil, &st); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), st, func(tw *tabwriter.Writer) {
				when := func(t time.Time) string {
					if t.IsZero() {
						return "-"
					}
					return ts(&t)
				}
				fmt.Fprintf(tw, "Backend\t%s\nEvents\t%d\nSize on disk\t%s\nOldest\t%s\nNewest\t%s\n",
					st.Backend, st.Events, byteSize(st.Bytes), when(st.Oldest), when(st.Newest))
			})
		},
	}
}

// byteSize is n in binary units, to one decimal.
func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func eventsExportCmd(g *globals) *cobra.Command {
	var s eventSearch
	var format, out string
	var force bool
	export := &cobra.Command{
		Use:   "export",
		Short: "Export the events a search matches as CSV or JSON lines (streamed)",
		Long: `Streams every matching event, newest first, to standard output or to a file
(-O). Nothing is held in memory on either side, so a month exports as easily
as a minute. CSV is UTF-8 with a byte order mark, so spreadsheet programs read
Japanese correctly; --format json writes one JSON object per line.

Writing to a file shows the bytes received on standard error (when it is a
terminal); the file appears under its name only once the export is complete.
If the manager's store fails midway, the command says so and exits non-zero.`,
		Example: `  yagura ctl events export --since 24h > events.csv
  yagura ctl events export --since 720h --type firewall --format json -O firewall.jsonl
  yagura ctl events export --since 2025-04-01 --until 2025-05-01 -O april.csv --force`,
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
			return g.export(cmd, "events", "/api/v1/events/export", q, format, out, force)
		},
	}
	s.addFlags(export)
	export.Flags().StringVar(&format, "format", "csv", "csv or json (JSON lines)")
	export.Flags().StringVarP(&out, "output-file", "O", "", "write to this file (default: standard output)")
	export.Flags().BoolVar(&force, "force", false, "replace an existing file")
	return export
}
