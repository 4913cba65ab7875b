// Package ctl provides `yagura ctl`, the administrator's command line. It
// is a client of the manager's REST API only: everything it does, a script
// can do with curl.
package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/yagura/yagura/internal/api"
)

type globals struct {
	server, token, fingerprint, credentials string
	output                                  string
	getenv                                  func(string) string
}

func (g *globals) client() (*Client, error) {
	t, err := ResolveTarget(g.server, g.token, g.fingerprint, g.credentials, g.getenv)
	if err != nil {
		return nil, err
	}
	return NewClient(t)
}

// do calls the API for a command: sign-in, request and decoding.
func (g *globals) do(cmd *cobra.Command, method, path string, q url.Values, in, out any) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	return c.Do(cmd.Context(), method, path, q, in, out)
}

// Command returns the `ctl` command tree.
func Command() *cobra.Command {
	g := &globals{getenv: os.Getenv}
	cmd := &cobra.Command{
		Use:   "ctl",
		Short: "Administer a Yagura manager from the shell",
		Long: `yagura ctl talks to a manager's REST API.

It finds the manager in this order: --server/--token/--ca-fingerprint, the
YAGURA_SERVER/YAGURA_TOKEN/YAGURA_CA_FINGERPRINT environment variables,
--credentials (or YAGURA_CREDENTIALS), then the first credentials file found
among ~/.config/yagura/credentials.json, ./yagura-data/dev-credentials.json
(written by yagura dev) and /var/lib/yagura/admin-credentials.json.`,
		Example: `  yagura ctl computers list
  yagura ctl tokens create --max-uses 50 --expires 72h --description "web servers"
  yagura ctl alerts list --state all -o json`,
		SilenceUsage: true,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&g.server, "server", "", "manager URL, https://HOST:PORT")
	pf.StringVar(&g.token, "token", "", "API credential (prefer YAGURA_TOKEN: flags show up in ps)")
	pf.StringVar(&g.fingerprint, "ca-fingerprint", "", "SHA-256 fingerprint of the manager CA")
	pf.StringVar(&g.credentials, "credentials", "", "credentials file (url, ca_fingerprint, token)")
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table, json or yaml")
	cmd.AddCommand(tokensCmd(g), computersCmd(g), alertsCmd(g), eventsCmd(g), jobsCmd(g),
		loginCmd(g), logoutCmd(g), whoamiCmd(g), usersCmd(g), clientsCmd(g), auditCmd(g), settingsCmd(g), caCmd(g), policiesCmd(g),
		rulesCmd(g), listsCmd(g), alertRulesCmd(g), channelsCmd(g), notificationsCmd(g), flowsCmd(g))
	return cmd
}

// emit prints v as JSON, or calls table for humans.
func (g *globals) emit(w io.Writer, v any, table func(tw *tabwriter.Writer)) error {
	switch g.output {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		// Through JSON, so the field names are the API's.
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		var generic any
		if err := json.Unmarshal(b, &generic); err != nil {
			return err
		}
		y, err := yaml.Marshal(generic)
		if err != nil {
			return err
		}
		_, err = w.Write(y)
		return err
	case "table", "":
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		table(tw)
		return tw.Flush()
	}
	return fmt.Errorf("--output %q: want table, json or yaml", g.output)
}

func ts(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ago(t *time.Time, now time.Time) string {
	if t == nil {
		return "never"
	}
	d := now.Sub(*t).Round(time.Second)
	if d < 0 {
		d = 0
	}
	return d.String() + " ago"
}

type list[T any] struct {
	Items []T `json:"items"`
}

func tokensCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "tokens", Short: "Activation tokens that agents enrol with"}
	var desc, expires string
	var maxUses int
	create := &cobra.Command{
		Use:   "create",
		Short: "Create an activation token (the secret is shown once)",
		Example: `  yagura ctl tokens create --max-uses 10 --expires 24h --description "branch office"
  yagura ctl tokens create --expires never -o json | jq -r .token`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var t api.Token
			body := api.TokenCreate{Description: desc, ExpiresIn: expires, MaxUses: maxUses}
			if err := g.do(cmd, http.MethodPost, "/api/v1/activation-tokens", nil, body, &t); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), t, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "ID\t%s\nToken\t%s\nExpires\t%s\nMax uses\t%s\n", t.ID, t.Token, ts(t.ExpiresAt), uses(t.MaxUses))
				fmt.Fprintf(tw, "\nEnrol an agent with:\n  yagura agent enroll --manager %s --token %s --ca-fingerprint <fingerprint from `yagura ctl ca`>\n",
					c.base, t.Token)
			})
		},
	}
	create.Flags().StringVar(&desc, "description", "", "what the token is for")
	create.Flags().StringVar(&expires, "expires", "24h", `lifetime ("24h", "30m") or "never"`)
	create.Flags().IntVar(&maxUses, "max-uses", 0, "how many agents may enrol with it (0: unlimited)")

	ls := &cobra.Command{
		Use: "list", Short: "List activation tokens", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out list[api.Token]
			if err := g.do(cmd, http.MethodGet, "/api/v1/activation-tokens", nil, nil, &out); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), out.Items, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "ID\tSTATE\tUSES\tEXPIRES\tCREATED\tDESCRIPTION")
				for _, t := range out.Items {
					fmt.Fprintf(tw, "%s\t%s\t%d/%s\t%s\t%s\t%s\n", t.ID, t.State, t.Uses, uses(t.MaxUses), ts(t.ExpiresAt), ts(&t.CreatedAt), dash(t.Description))
				}
			})
		},
	}
	revoke := &cobra.Command{
		Use: "revoke ID", Short: "Revoke an activation token", Args: cobra.ExactArgs(1),
		Example: "  yagura ctl tokens revoke 0193a5c2-…",
		RunE: func(cmd *cobra.Command, args []string) error {
			var t api.Token
			if err := g.do(cmd, http.MethodPost, "/api/v1/activation-tokens/"+url.PathEscape(args[0])+"/revoke", nil, nil, &t); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), t, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Token %s revoked at %s\n", t.ID, ts(t.RevokedAt))
			})
		},
	}
	cmd.AddCommand(create, ls, revoke)
	return cmd
}

func uses(n int) string {
	if n == 0 {
		return "∞"
	}
	return strconv.Itoa(n)
}

func computersCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "computers", Short: "Enrolled computers and their status"}
	var status string
	ls := &cobra.Command{
		Use: "list", Short: "List computers", Args: cobra.NoArgs,
		Example: "  yagura ctl computers list --status offline",
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			if status != "" {
				q.Set("status", status)
			}
			var out list[api.Computer]
			if err := g.do(cmd, http.MethodGet, "/api/v1/computers", q, nil, &out); err != nil {
				return err
			}
			now := time.Now()
			return g.emit(cmd.OutOrStdout(), out.Items, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "ID\tHOSTNAME\tSTATUS\tLAST SEEN\tOS\tAGENT\tIP")
				for _, x := range out.Items {
					ip := "-"
					if len(x.IPs) > 0 {
						ip = x.IPs[0]
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", x.ID, x.Hostname, x.Status, ago(x.LastSeen, now), dash(x.OSVersion), dash(x.AgentVersion), ip)
				}
			})
		},
	}
	ls.Flags().StringVar(&status, "status", "", "only online, warning, offline, pending or deactivated")
	show := &cobra.Command{
		Use: "show ID", Short: "Show one computer", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var x api.Computer
			if err := g.do(cmd, http.MethodGet, "/api/v1/computers/"+url.PathEscape(args[0]), nil, nil, &x); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), x, func(tw *tabwriter.Writer) { showComputer(tw, &x) })
		},
	}
	deact := &cobra.Command{
		Use: "deactivate ID", Short: "Refuse a computer's agent from now on", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var x api.Computer
			if err := g.do(cmd, http.MethodPost, "/api/v1/computers/"+url.PathEscape(args[0])+"/deactivate", nil, nil, &x); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), x, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Computer %s (%s) deactivated; its agent is refused from now on.\n", x.ID, x.Hostname)
			})
		},
	}
	setComm := &cobra.Command{
		Use:   "set-communication ID agent-initiated|bidirectional|manager-initiated|default",
		Short: "Override who opens connections for one computer",
		Example: `  yagura ctl computers set-communication 0193a5c2-… manager-initiated
  yagura ctl computers set-communication 0193a5c2-… default   # back to agent.communication`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			mode := args[1]
			if mode == "default" {
				mode = ""
			}
			var x api.Computer
			body := map[string]string{"communication": mode}
			if err := g.do(cmd, http.MethodPatch, "/api/v1/computers/"+url.PathEscape(args[0]), nil, body, &x); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), x, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Computer %s (%s): communication %s\n", x.ID, x.Hostname, dash(x.Communication))
			})
		},
	}
	cmd.AddCommand(ls, show, deact, setComm)
	cmd.AddCommand(computerPolicyCmds(g)...)
	return cmd
}

func showComputer(tw *tabwriter.Writer, x *api.Computer) {
	rows := [][2]string{
		{"ID", x.ID}, {"Hostname", x.Hostname}, {"Status", x.Status}, {"State", x.State},
		{"Last seen", ts(x.LastSeen)}, {"Missed heartbeats", strconv.Itoa(x.Missed)},
		{"OS", strings.TrimSpace(x.OS + " " + x.OSVersion)}, {"Agent version", dash(x.AgentVersion)},
		{"IP addresses", dash(strings.Join(x.IPs, ", "))},
		{"Clock offset", (time.Duration(x.ClockOffsetS * float64(time.Second))).Round(time.Millisecond).String()},
		{"Uptime", (time.Duration(x.UptimeS) * time.Second).String()},
		{"Enrolled", ts(&x.EnrolledAt)}, {"Certificate expires", ts(x.CertNotAfter)},
		{"Deactivated", ts(x.DeactivatedAt)}, {"Activation token", dash(x.TokenID)},
		{"Communication", dash(x.Communication)},
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
}

func alertsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "alerts", Short: "Alerts raised by the manager"}
	var state, computer string
	var types []string
	ls := &cobra.Command{
		Use: "list", Short: "List alerts (open ones by default)", Args: cobra.NoArgs,
		Example: "  yagura ctl alerts list --state all --type computer-offline",
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{"state": {state}}
			if computer != "" {
				q.Set("computer", computer)
			}
			setList(q, "type", types)
			var out list[api.Alert]
			if err := g.do(cmd, http.MethodGet, "/api/v1/alerts", q, nil, &out); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), out.Items, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "ID\tSEVERITY\tTYPE\tCOMPUTER\tSUBJECT\tOCCURRENCES\tRAISED\tACKED BY\tCLEARED\tMESSAGE")
				for _, a := range out.Items {
					cleared := ts(a.ClearedAt)
					if a.ClearedBy != "" {
						cleared += " by " + a.ClearedBy
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", a.ID, a.Severity, a.Type, dash(a.ComputerID), dash(a.Subject),
						a.Occurrences, ts(&a.RaisedAt), dash(a.AckedBy), cleared, a.Message)
				}
			})
		},
	}
	ls.Flags().StringVar(&state, "state", "open", "open, cleared or all")
	ls.Flags().StringVar(&computer, "computer", "", "only this computer's alerts")
	ls.Flags().StringSliceVar(&types, "type", nil, "only these types (computer-offline, clock-drift, rule:RULE-ID, …)")
	ack := &cobra.Command{
		Use:   "ack ID",
		Short: "Acknowledge an alert: record that you are handling it (it stays open until cleared)",
		Example: `  yagura ctl alerts ack 0193a5c2-…
  yagura ctl alerts clear 0193a5c2-…   # once it is dealt with`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var a api.Alert
			if err := g.do(cmd, http.MethodPost, "/api/v1/alerts/"+url.PathEscape(args[0])+"/ack", nil, nil, &a); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), a, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Alert %s acknowledged at %s by %s; it stays open until cleared.\n", a.ID, ts(a.AckedAt), a.AckedBy)
			})
		},
	}
	clear := &cobra.Command{
		Use: "clear ID", Short: "Clear an alert", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var a api.Alert
			if err := g.do(cmd, http.MethodPost, "/api/v1/alerts/"+url.PathEscape(args[0])+"/clear", nil, nil, &a); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), a, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Alert %s cleared at %s by %s\n", a.ID, ts(a.ClearedAt), a.ClearedBy)
			})
		},
	}
	cmd.AddCommand(ls, ack, clear)
	return cmd
}

func settingsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "settings", Short: "Manager-wide settings (heartbeat interval, offline alert, clock drift)"}
	get := &cobra.Command{
		Use: "get", Short: "Show settings", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var m map[string]string
			if err := g.do(cmd, http.MethodGet, "/api/v1/settings", nil, nil, &m); err != nil {
				return err
			}
			return g.emitSettings(cmd.OutOrStdout(), m)
		},
	}
	set := &cobra.Command{
		Use: "set KEY=VALUE...", Short: "Change settings", Args: cobra.MinimumNArgs(1),
		Example: `  yagura ctl settings set heartbeat.interval=30s heartbeat.offline_after_missed=5
  yagura ctl settings set heartbeat.offline_after_missed=unlimited   # laptops
  yagura ctl settings set heartbeat.max_clock_drift=2m`,
		RunE: func(cmd *cobra.Command, args []string) error {
			kv := map[string]string{}
			for _, a := range args {
				k, v, ok := strings.Cut(a, "=")
				if !ok {
					return fmt.Errorf("%q: want KEY=VALUE", a)
				}
				kv[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
			var m map[string]string
			if err := g.do(cmd, http.MethodPatch, "/api/v1/settings", nil, kv, &m); err != nil {
				return err
			}
			return g.emitSettings(cmd.OutOrStdout(), m)
		},
	}
	cmd.AddCommand(get, set)
	return cmd
}

func (g *globals) emitSettings(w io.Writer, m map[string]string) error {
	return g.emit(w, m, func(tw *tabwriter.Writer) {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(tw, "%s\t%s\n", k, m[k])
		}
	})
}

func caCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use: "ca", Short: "Show the manager CA fingerprint agents pin", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ca api.CA
			if err := g.do(cmd, http.MethodGet, "/api/v1/ca", nil, nil, &ca); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), ca, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "SHA-256 fingerprint\t%s\n\n%s", ca.Fingerprint, ca.Certificate)
			})
		},
	}
}

// Run executes ctl with args, for callers outside cobra (yagura dev).
func Run(ctx context.Context, args []string, stdout io.Writer) error {
	cmd := Command()
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	return cmd.ExecuteContext(ctx)
}
