package ctl

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/yagura/yagura/internal/api"
)

// channelFile is what -f FILE may hold: a ChannelInput, or the output of
// `channels show -o json`, whose read-only fields are ignored. Secrets are
// never shown; left empty, the manager keeps the stored ones.
type channelFile struct {
	api.ChannelInput
	ID        json.RawMessage `json:"id,omitempty"`
	Kind      json.RawMessage `json:"kind,omitempty"`
	Outbox    json.RawMessage `json:"outbox,omitempty"`
	Version   json.RawMessage `json:"version,omitempty"`
	CreatedAt json.RawMessage `json:"created_at,omitempty"`
	CreatedBy json.RawMessage `json:"created_by,omitempty"`
	UpdatedAt json.RawMessage `json:"updated_at,omitempty"`
	UpdatedBy json.RawMessage `json:"updated_by,omitempty"`
}

const channelShape = `{"name": …, "config": {"kind": "syslog", "syslog": {…}}, "routes": [{"source": "alerts"}]}`

func channelPath(id string) string { return "/api/v1/channels/" + url.PathEscape(id) }

func readChannel(cmd *cobra.Command, file string, in *api.ChannelInput) error {
	f := channelFile{ChannelInput: *in}
	if err := decodeFile(cmd, file, &f, channelShape); err != nil {
		return err
	}
	*in = f.ChannelInput
	if len(in.Config) == 0 {
		return fmt.Errorf("%s: \"config\" is missing (want %s)", file, channelShape)
	}
	if in.Routes == nil {
		in.Routes = []api.Route{}
	}
	return nil
}

func routeText(r api.Route) string {
	s := r.Source
	if len(r.Types) > 0 {
		s += " type=" + strings.Join(r.Types, ",")
	}
	if r.MinSeverity != "" {
		s += " severity>=" + r.MinSeverity
	}
	return s
}

func routesText(rs []api.Route) string {
	if len(rs) == 0 {
		return "nothing (test messages only)"
	}
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = routeText(r)
	}
	return strings.Join(parts, "; ")
}

func showChannel(tw *tabwriter.Writer, c *api.Channel) {
	now := time.Now()
	rows := [][2]string{
		{"ID", c.ID}, {"Name", c.Name}, {"Kind", c.Kind}, {"Enabled", onOff(c.Enabled)},
		{"Receives", routesText(c.Routes)},
		{"Pending", strconv.Itoa(c.Outbox.Pending)}, {"Failed", strconv.Itoa(c.Outbox.Failed)},
		{"Oldest pending", oldest(c.Outbox.Oldest, now)},
		{"Version", strconv.FormatInt(c.Version, 10)},
		{"Created", ts(&c.CreatedAt) + " by " + dash(c.CreatedBy)},
		{"Updated", ts(&c.UpdatedAt) + " by " + dash(c.UpdatedBy)},
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	cfg, err := json.MarshalIndent(c.Config, "  ", "  ")
	if err != nil {
		cfg = c.Config
	}
	fmt.Fprintf(tw, "Config (secrets hidden)\n  %s\n", cfg)
}

func oldest(t *time.Time, now time.Time) string {
	if t == nil {
		return "-"
	}
	return ago(t, now)
}

func channelsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "channels",
		Aliases: []string{"channel"},
		Short:   "Notification channels: mail (SMTP), syslog and webhook receivers",
		Long: `A channel sends what its routes select (alerts as they are raised, events as
they are stored) to one receiver. Messages wait in the manager's outbox until
the receiver accepts them; see yagura ctl notifications. Secrets (SMTP
password, webhook secret, credential headers) are never shown; left empty in
an update, the stored ones are kept. See docs/notifications.md for every
config setting.`,
	}
	ls := &cobra.Command{
		Use: "list", Short: "List notification channels with their backlog", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out list[api.Channel]
			if err := g.do(cmd, http.MethodGet, "/api/v1/channels", nil, nil, &out); err != nil {
				return err
			}
			now := time.Now()
			return g.emit(cmd.OutOrStdout(), out.Items, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "ID\tNAME\tKIND\tENABLED\tPENDING\tFAILED\tOLDEST PENDING")
				for _, c := range out.Items {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", c.ID, c.Name, c.Kind, onOff(c.Enabled), c.Outbox.Pending, c.Outbox.Failed, oldest(c.Outbox.Oldest, now))
				}
			})
		},
	}
	show := &cobra.Command{
		Use: "show ID", Short: "Show a notification channel (secrets hidden)", Args: cobra.ExactArgs(1),
		Example: "  yagura ctl channels show 0193a5c2-… -o json > channel.json   # edit, then channels update ID -f channel.json",
		RunE: func(cmd *cobra.Command, args []string) error {
			var c api.Channel
			if err := g.do(cmd, http.MethodGet, channelPath(args[0]), nil, nil, &c); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), c, func(tw *tabwriter.Writer) { showChannel(tw, &c) })
		},
	}
	var file string
	create := &cobra.Command{
		Use:   "create -f FILE",
		Short: "Create a notification channel from a JSON file",
		Long: `The file holds {"name", "enabled" (default true), "config", "routes"}. Routes
select what the channel receives: {"source": "alerts" or "events", "types":
[…] with * wildcards, "min_severity": …}; no routes: test messages only.
Check the channel with yagura ctl channels test ID.`,
		Example: `  cat > siem.json <<'END'
  {"name": "SIEM", "config": {"kind": "syslog", "syslog": {"address": "siem.example.jp:6514", "transport": "tls", "payload": "cef"}},
   "routes": [{"source": "alerts"}, {"source": "events", "types": ["firewall"], "min_severity": "warning"}]}
  END
  yagura ctl channels create -f siem.json

  cat > mail.json <<'END'
  {"name": "Security team", "config": {"kind": "smtp", "smtp": {"host": "smtp.example.jp", "username": "yagura",
   "password": "…", "from": "Yagura <yagura@example.jp>", "to": ["security@example.jp"]}},
   "routes": [{"source": "alerts", "min_severity": "warning"}]}
  END
  yagura ctl channels create -f mail.json

  # webhook: https (or http to this host), signed with the secret (16 bytes or more)
  echo '{"name": "Chat", "config": {"kind": "webhook", "webhook": {"url": "https://hooks.example.jp/yagura", "secret": "…"}},
   "routes": [{"source": "alerts", "types": ["rule:*"]}]}' | yagura ctl channels create -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var in api.ChannelInput
			if err := readChannel(cmd, file, &in); err != nil {
				return err
			}
			var c api.Channel
			if err := g.do(cmd, http.MethodPost, "/api/v1/channels", nil, in, &c); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), c, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Channel %s %q (%s) created; send a test message with: yagura ctl channels test %s\n", c.ID, c.Name, c.Kind, c.ID)
			})
		},
	}
	create.Flags().StringVarP(&file, "file", "f", "", "the channel as JSON (- for standard input)")
	update := &cobra.Command{
		Use:   "update ID -f FILE",
		Short: "Replace a notification channel with a JSON file",
		Long: `The file replaces the whole channel; "enabled" stays as it is unless the file
sets it. Secrets left empty keep the stored ones (an SMTP password only while
host and username stay the same). The change is made only if nobody changed the
channel since this command read it (If-Match).`,
		Example: `  yagura ctl channels show 0193a5c2-… -o json > channel.json   # edit it, then
  yagura ctl channels update 0193a5c2-… -f channel.json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			path := channelPath(args[0])
			var cur api.Channel
			etag, err := c.GetETag(cmd.Context(), path, &cur)
			if err != nil {
				return err
			}
			in := api.ChannelInput{Enabled: &cur.Enabled}
			if err := readChannel(cmd, file, &in); err != nil {
				return err
			}
			var out api.Channel
			if err := putIfMatch(cmd, c, path, etag, cur.Version, in, &out); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), out, func(tw *tabwriter.Writer) { showChannel(tw, &out) })
		},
	}
	update.Flags().StringVarP(&file, "file", "f", "", "the whole channel as JSON (- for standard input)")
	setEnabled := func(enabled bool) func(cmd *cobra.Command, args []string) error {
		return func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			path := channelPath(args[0])
			var ch api.Channel
			etag, err := c.GetETag(cmd.Context(), path, &ch)
			if err != nil {
				return err
			}
			if ch.Enabled != enabled {
				// The shown config has its secrets blanked; the manager
				// keeps the stored ones for blanks.
				in := api.ChannelInput{Name: ch.Name, Enabled: &enabled, Config: ch.Config, Routes: ch.Routes}
				if err := putIfMatch(cmd, c, path, etag, ch.Version, in, &ch); err != nil {
					return err
				}
			}
			return g.emit(cmd.OutOrStdout(), ch, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Channel %s %q %s.\n", ch.ID, ch.Name, enabledText(ch.Enabled))
			})
		}
	}
	enable := &cobra.Command{Use: "enable ID", Short: "Enable a notification channel", Args: cobra.ExactArgs(1), RunE: setEnabled(true)}
	disable := &cobra.Command{Use: "disable ID", Short: "Disable a notification channel (it receives nothing meanwhile)", Args: cobra.ExactArgs(1), RunE: setEnabled(false)}
	del := &cobra.Command{
		Use: "delete ID", Short: "Delete a notification channel and discard its undelivered notifications", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.do(cmd, http.MethodDelete, channelPath(args[0]), nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Channel %s deleted; its undelivered notifications were discarded (see yagura ctl notifications deliveries).\n", args[0])
			return nil
		},
	}
	test := &cobra.Command{
		Use:   "test ID",
		Short: "Send a test message over a channel now and say whether the receiver accepted it",
		Long: `Sends a test message (Japanese and English) at once, bypassing the outbox, and
prints OK or FAILED with the receiver's error and how long it took. Exits
non-zero when the message was not accepted.`,
		Example: "  yagura ctl channels test 0193a5c2-…",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res struct {
				OK       bool    `json:"ok"`
				Error    string  `json:"error,omitempty"`
				Seconds  float64 `json:"seconds"`
				TestedAt string  `json:"tested_at"`
			}
			if err := g.do(cmd, http.MethodPost, channelPath(args[0])+"/test", nil, nil, &res); err != nil {
				return err
			}
			err := g.emit(cmd.OutOrStdout(), res, func(tw *tabwriter.Writer) {
				if res.OK {
					fmt.Fprintf(tw, "OK\t%.2fs\n", res.Seconds)
				} else {
					fmt.Fprintf(tw, "FAILED\t%.2fs\t%s\n", res.Seconds, res.Error)
				}
			})
			if err != nil || res.OK {
				return err
			}
			return fmt.Errorf("channel %s: the receiver did not accept the test message; check the channel's config (yagura ctl channels show %s) and that the receiver is up and reachable from the manager", args[0], args[0])
		},
	}
	cmd.AddCommand(ls, show, create, update, enable, disable, del, test)
	return cmd
}

func notificationsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "notifications",
		Aliases: []string{"notification"},
		Short:   "The notification outbox: what waits to be sent, what failed, what was delivered",
		Long: `Notifications wait in the outbox until their channel's receiver accepts them.
Pending ones are retried with backoff; failed ones were given up on and wait
for an administrator to retry or discard them.`,
	}
	var status, channel string
	var limit int
	ls := &cobra.Command{
		Use: "list", Short: "List notifications not yet delivered", Args: cobra.NoArgs,
		Example: `  yagura ctl notifications list --status failed
  yagura ctl notifications list --channel 0193a5c2-… -o json`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if status != "pending" && status != "failed" && status != "all" {
				return fmt.Errorf("--status %q: want pending, failed or all", status)
			}
			q := url.Values{"status": {status}, "limit": {strconv.Itoa(limit)}}
			if channel != "" {
				q.Set("channel", channel)
			}
			var out list[api.Notification]
			if err := g.do(cmd, http.MethodGet, "/api/v1/notifications", q, nil, &out); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), out.Items, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "ID\tCHANNEL\tKIND\tSTATUS\tATTEMPTS\tCREATED\tNEXT ATTEMPT\tLAST ERROR")
				for _, n := range out.Items {
					next := "-"
					if n.Status == "pending" {
						next = ts(&n.NextAt)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", n.ID, n.ChannelID, n.Kind, n.Status, n.Attempts, ts(&n.CreatedAt), next, dash(n.LastError))
				}
			})
		},
	}
	ls.Flags().StringVar(&status, "status", "all", "pending, failed or all")
	ls.Flags().StringVar(&channel, "channel", "", "only this channel's (ID)")
	ls.Flags().IntVar(&limit, "limit", 100, "at most this many (1 to 10000)")
	retry := &cobra.Command{
		Use: "retry ID", Short: "Send a failed notification again now", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var n api.Notification
			if err := g.do(cmd, http.MethodPost, "/api/v1/notifications/"+url.PathEscape(args[0])+"/retry", nil, nil, &n); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), n, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Notification %s is pending again and is being sent now; follow it with: yagura ctl notifications deliveries --channel %s\n", n.ID, n.ChannelID)
			})
		},
	}
	discard := &cobra.Command{
		Use: "discard ID", Short: "Give up on a failed notification (the delivery history records who did)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.do(cmd, http.MethodPost, "/api/v1/notifications/"+url.PathEscape(args[0])+"/discard", nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Notification %s discarded.\n", args[0])
			return nil
		},
	}
	var dChannel, dStatus, dSince string
	var dLimit int
	deliveries := &cobra.Command{
		Use: "deliveries", Short: "Show what became of notifications: delivered, failed or discarded, newest first", Args: cobra.NoArgs,
		Example: `  yagura ctl notifications deliveries --since 24h --status failed
  yagura ctl notifications deliveries --channel 0193a5c2-…`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch dStatus {
			case "delivered", "failed", "discarded", "all":
			default:
				return fmt.Errorf("--status %q: want delivered, failed, discarded or all", dStatus)
			}
			q := url.Values{"status": {dStatus}, "limit": {strconv.Itoa(dLimit)}}
			if dChannel != "" {
				q.Set("channel", dChannel)
			}
			if dSince != "" {
				t, err := parseWhen("since", dSince, time.Now())
				if err != nil {
					return err
				}
				q.Set("since", t.UTC().Format(time.RFC3339Nano))
			}
			var out list[api.Delivery]
			if err := g.do(cmd, http.MethodGet, "/api/v1/deliveries", q, nil, &out); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), out.Items, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "ID\tCHANNEL\tKIND\tSTATUS\tATTEMPTS\tCREATED\tFINISHED\tBY\tLAST ERROR")
				for _, d := range out.Items {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", d.ID, d.ChannelID, d.Kind, d.Status, d.Attempts, ts(&d.CreatedAt), ts(&d.FinishedAt), dash(d.FinishedBy), dash(d.LastError))
				}
			})
		},
	}
	deliveries.Flags().StringVar(&dChannel, "channel", "", "only this channel's (ID)")
	deliveries.Flags().StringVar(&dStatus, "status", "all", "delivered, failed, discarded or all")
	deliveries.Flags().StringVar(&dSince, "since", "", "only those finished since: a duration back from now (24h, 7d), an RFC 3339 time or a date")
	deliveries.Flags().IntVar(&dLimit, "limit", 100, "at most this many (1 to 10000)")
	cmd.AddCommand(ls, retry, discard, deliveries)
	return cmd
}
