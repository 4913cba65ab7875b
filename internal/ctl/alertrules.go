package ctl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/yagura/yagura/internal/api"
)

// decodeFile reads -f FILE (or standard input) strictly into v, whose
// fields it replaces; what the file leaves out keeps v's value.
func decodeFile(cmd *cobra.Command, path string, v any, want string) error {
	b, err := readInput(cmd, path)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s: %w (want %s)", path, err, want)
	}
	return nil
}

// putIfMatch replaces a resource only if nobody changed it since the read
// that gave etag.
func putIfMatch(cmd *cobra.Command, c *Client, path, etag string, version int64, in, out any) error {
	if etag == "" {
		etag = strconv.Quote(strconv.FormatInt(version, 10))
	}
	err := c.DoHeader(cmd.Context(), http.MethodPut, path, http.Header{"If-Match": {etag}}, in, out)
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.Status == http.StatusPreconditionFailed {
		return fmt.Errorf("%w\nsomeone changed it while this command ran; run the command again", err)
	}
	return err
}

// alertRuleFile is what -f FILE may hold: an AlertRuleInput, or the output
// of `alert-rules show -o json`, whose read-only fields are ignored, so that
// a rule can be shown, edited and sent back.
type alertRuleFile struct {
	api.AlertRuleInput
	ID        json.RawMessage `json:"id,omitempty"`
	AlertType json.RawMessage `json:"alert_type,omitempty"`
	Version   json.RawMessage `json:"version,omitempty"`
	CreatedAt json.RawMessage `json:"created_at,omitempty"`
	CreatedBy json.RawMessage `json:"created_by,omitempty"`
	UpdatedAt json.RawMessage `json:"updated_at,omitempty"`
	UpdatedBy json.RawMessage `json:"updated_by,omitempty"`
}

const alertRuleShape = `{"name": …, "severity": …, "definition": {"filter": {…}, "threshold": N, "window": "1m", …}}`

// alertRuleFlags are create's and update's flags.
type alertRuleFlags struct {
	file                        string
	name, severity, description string
	types, computers, data      []string
	minSeverity, text, groupBy  string
	window, suppress            string
	threshold                   int
	disabled                    bool
}

func (f *alertRuleFlags) add(cmd *cobra.Command, create bool) {
	fs := cmd.Flags()
	fs.StringVarP(&f.file, "file", "f", "", "the rule as JSON, "+alertRuleShape+" (- for standard input); flags apply on top")
	fs.StringVar(&f.name, "name", "", "the rule's name")
	fs.StringVar(&f.severity, "severity", "", "severity of the alerts it raises: critical, error, warning or info"+ifCreate(create, " (default warning)"))
	fs.StringVar(&f.description, "description", "", "what the rule is for")
	fs.StringSliceVar(&f.types, "type", nil, `count only events of this type (repeat for several; "" for every type)`)
	fs.StringSliceVar(&f.computers, "computer", nil, `count only this computer's events (ID; repeat; "" for every computer)`)
	fs.StringVar(&f.minSeverity, "min-severity", "", "count only events at least this severe: critical, error, warning or info")
	fs.StringArrayVar(&f.data, "data", nil, `count only events whose data field KEY equals VALUE: KEY=VALUE (repeat; replaces every data condition; "" for none)`)
	fs.StringVar(&f.text, "text", "", "count only events whose type or data contain this text")
	fs.StringVar(&f.groupBy, "group-by", "", `count separately per "computer" or per a data field such as "data.src" ("" for all together)`)
	fs.IntVar(&f.threshold, "threshold", 0, "raise an alert at this many matching events…"+ifCreate(create, " (default 1)"))
	fs.StringVar(&f.window, "window", "", "…within this long, e.g. 1m, 1h"+ifCreate(create, " (default 1m)"))
	fs.StringVar(&f.suppress, "suppress", "", "no new alert for the same group for this long after one (default: the window)")
	if create {
		fs.BoolVar(&f.disabled, "disabled", false, "create the rule disabled")
	}
}

func ifCreate(create bool, s string) string {
	if create {
		return s
	}
	return ""
}

// apply builds the rule: in, then the file, then the flags given.
func (f *alertRuleFlags) apply(cmd *cobra.Command, in *api.AlertRuleInput) error {
	if f.file != "" {
		file := alertRuleFile{AlertRuleInput: *in}
		if err := decodeFile(cmd, f.file, &file, alertRuleShape); err != nil {
			return err
		}
		*in = file.AlertRuleInput
	}
	fs := cmd.Flags()
	def := &in.Definition
	for _, s := range []struct {
		flag string
		dst  *string
		src  string
	}{
		{"name", &in.Name, f.name}, {"severity", &in.Severity, f.severity}, {"description", &in.Description, f.description},
		{"min-severity", &def.Filter.MinSeverity, f.minSeverity}, {"text", &def.Filter.Text, f.text},
		{"group-by", &def.GroupBy, f.groupBy}, {"window", &def.Window, f.window}, {"suppress", &def.Suppress, f.suppress},
	} {
		if fs.Changed(s.flag) {
			*s.dst = s.src
		}
	}
	if fs.Changed("type") {
		def.Filter.Types = nonEmpty(f.types)
	}
	if fs.Changed("computer") {
		def.Filter.Computers = nonEmpty(f.computers)
	}
	if fs.Changed("threshold") {
		def.Threshold = f.threshold
	}
	if fs.Changed("data") {
		def.Filter.Data = nil
		for _, kv := range nonEmpty(f.data) {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || strings.TrimSpace(k) == "" {
				return fmt.Errorf("--data %q: want KEY=VALUE, e.g. action=deny", kv)
			}
			if def.Filter.Data == nil {
				def.Filter.Data = map[string]string{}
			}
			def.Filter.Data[strings.TrimSpace(k)] = v
		}
	}
	if f.disabled {
		no := false
		in.Enabled = &no
	}
	if in.Name == "" {
		return fmt.Errorf("the rule needs a name: give --name (or \"name\" in -f FILE)")
	}
	return nil
}

// nonEmpty drops empty values, so that `--type ""` clears a list.
func nonEmpty(v []string) []string {
	out := slices.DeleteFunc(slices.Clone(v), func(s string) bool { return strings.TrimSpace(s) == "" })
	if len(out) == 0 {
		return nil
	}
	return out
}

func alertRuleInput(r *api.AlertRule) api.AlertRuleInput {
	enabled := r.Enabled
	return api.AlertRuleInput{Name: r.Name, Enabled: &enabled, Severity: r.Severity, Description: r.Description, Definition: r.Definition}
}

// ruleCondition says when a rule fires: "20 in 1m per data.src".
func ruleCondition(d *api.RuleDefinition) string {
	s := fmt.Sprintf("%d in %s", d.Threshold, d.Window)
	if d.GroupBy != "" {
		s += " per " + d.GroupBy
	}
	return s
}

// ruleFilterText says which events a rule counts.
func ruleFilterText(f *api.RuleFilter) string {
	var parts []string
	if len(f.Types) > 0 {
		parts = append(parts, "type="+strings.Join(f.Types, ","))
	}
	if f.MinSeverity != "" {
		parts = append(parts, "severity>="+f.MinSeverity)
	}
	if len(f.Computers) > 0 {
		parts = append(parts, "computer="+strings.Join(f.Computers, ","))
	}
	for _, k := range slices.Sorted(maps.Keys(f.Data)) {
		parts = append(parts, "data."+k+"="+f.Data[k])
	}
	if f.Text != "" {
		parts = append(parts, "text="+strconv.Quote(f.Text))
	}
	if len(parts) == 0 {
		return "every event"
	}
	return strings.Join(parts, " ")
}

func onOff(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func showAlertRule(tw *tabwriter.Writer, r *api.AlertRule) {
	d := &r.Definition
	suppress := d.Suppress
	if suppress == "" {
		suppress = d.Window + " (the window)"
	}
	rows := [][2]string{
		{"ID", r.ID}, {"Name", r.Name}, {"Enabled", onOff(r.Enabled)}, {"Severity", r.Severity},
		{"Description", dash(r.Description)},
		{"Counts", ruleFilterText(&d.Filter)},
		{"Raises an alert at", ruleCondition(d)},
		{"Suppresses repeats for", suppress},
		{"Alert type", r.AlertType},
		{"Version", strconv.FormatInt(r.Version, 10)},
		{"Created", ts(&r.CreatedAt) + " by " + dash(r.CreatedBy)},
		{"Updated", ts(&r.UpdatedAt) + " by " + dash(r.UpdatedBy)},
	}
	for _, row := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1])
	}
}

func alertRulePath(id string) string { return "/api/v1/alert-rules/" + url.PathEscape(id) }

func alertRulesCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "alert-rules",
		Aliases: []string{"alert-rule"},
		Short:   "Alert rules: raise an alert when events match often enough",
		Long: `An alert rule counts the events that match its filter (types, minimum severity,
computers, data fields, text) and raises an alert when --threshold of them
arrive within --window, separately per --group-by if given. Its alerts have
the type rule:RULE-ID; notification channels route them like any alert.`,
	}
	ls := &cobra.Command{
		Use: "list", Short: "List alert rules", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out list[api.AlertRule]
			if err := g.do(cmd, http.MethodGet, "/api/v1/alert-rules", nil, nil, &out); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), out.Items, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "ID\tNAME\tENABLED\tSEVERITY\tFIRES AT\tCOUNTS")
				for i := range out.Items {
					r := &out.Items[i]
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Name, onOff(r.Enabled), r.Severity, ruleCondition(&r.Definition), ruleFilterText(&r.Definition.Filter))
				}
			})
		},
	}
	show := &cobra.Command{
		Use: "show ID", Short: "Show an alert rule", Args: cobra.ExactArgs(1),
		Example: "  yagura ctl alert-rules show 0193a5c2-… -o json > rule.json   # edit, then alert-rules update ID -f rule.json",
		RunE: func(cmd *cobra.Command, args []string) error {
			var r api.AlertRule
			if err := g.do(cmd, http.MethodGet, alertRulePath(args[0]), nil, nil, &r); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), r, func(tw *tabwriter.Writer) { showAlertRule(tw, &r) })
		},
	}

	var cf alertRuleFlags
	create := &cobra.Command{
		Use:   "create (--name NAME [flags] | -f FILE)",
		Short: "Create an alert rule",
		Long: `Builds the rule from -f FILE (JSON, as the API takes it or as alert-rules show
-o json prints it), then the flags on top. Without them: severity warning and an
alert at every matching event (--threshold 1 --window 1m).`,
		Example: `  # 20 firewall denies from one source address within a minute
  yagura ctl alert-rules create --name "SSH brute force" --severity critical \
    --type firewall --data action=deny --group-by data.src --threshold 20 --window 1m --suppress 10m
  # every critical event
  yagura ctl alert-rules create --name "Critical events" --min-severity critical --severity critical
  yagura ctl alert-rules create -f rule.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in := api.AlertRuleInput{Severity: "warning", Definition: api.RuleDefinition{Threshold: 1, Window: "1m"}}
			if err := cf.apply(cmd, &in); err != nil {
				return err
			}
			var r api.AlertRule
			if err := g.do(cmd, http.MethodPost, "/api/v1/alert-rules", nil, in, &r); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), r, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Alert rule %s %q created (%s); its alerts have type %s.\n", r.ID, r.Name, enabledText(r.Enabled), r.AlertType)
			})
		},
	}
	cf.add(create, true)

	var uf alertRuleFlags
	update := &cobra.Command{
		Use:   "update ID [flags] [-f FILE]",
		Short: "Change an alert rule",
		Long: `Flags change only what they name; --type, --computer and --data replace their
whole list (give "" to clear one). With -f FILE, the file replaces the whole rule
(flags then apply on top; "enabled" stays as it is unless the file sets it).
The change is made only if nobody changed the rule since this command read it
(If-Match). Counting starts again for the changed rule.`,
		Example: `  yagura ctl alert-rules update 0193a5c2-… --threshold 50 --window 5m
  yagura ctl alert-rules update 0193a5c2-… --type firewall --type ids --data ""
  yagura ctl alert-rules update 0193a5c2-… -f rule.json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			path := alertRulePath(args[0])
			var cur api.AlertRule
			etag, err := c.GetETag(cmd.Context(), path, &cur)
			if err != nil {
				return err
			}
			in := alertRuleInput(&cur)
			if uf.file != "" {
				in = api.AlertRuleInput{Enabled: in.Enabled}
			}
			if err := uf.apply(cmd, &in); err != nil {
				return err
			}
			var r api.AlertRule
			if err := putIfMatch(cmd, c, path, etag, cur.Version, in, &r); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), r, func(tw *tabwriter.Writer) { showAlertRule(tw, &r) })
		},
	}
	uf.add(update, false)

	setEnabled := func(enabled bool) func(cmd *cobra.Command, args []string) error {
		return func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			path := alertRulePath(args[0])
			var r api.AlertRule
			etag, err := c.GetETag(cmd.Context(), path, &r)
			if err != nil {
				return err
			}
			if r.Enabled != enabled {
				in := alertRuleInput(&r)
				in.Enabled = &enabled
				if err := putIfMatch(cmd, c, path, etag, r.Version, in, &r); err != nil {
					return err
				}
			}
			return g.emit(cmd.OutOrStdout(), r, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Alert rule %s %q %s.\n", r.ID, r.Name, enabledText(r.Enabled))
			})
		}
	}
	enable := &cobra.Command{Use: "enable ID", Short: "Enable an alert rule", Args: cobra.ExactArgs(1), RunE: setEnabled(true)}
	disable := &cobra.Command{
		Use: "disable ID", Short: "Disable an alert rule (it keeps its settings; alerts it raised stay open)", Args: cobra.ExactArgs(1),
		RunE: setEnabled(false),
	}
	del := &cobra.Command{
		Use: "delete ID", Short: "Delete an alert rule (alerts it raised stay, to be cleared as usual)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.do(cmd, http.MethodDelete, alertRulePath(args[0]), nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Alert rule %s deleted.\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(ls, show, create, update, enable, disable, del)
	return cmd
}

func enabledText(enabled bool) string {
	if enabled {
		return "enabled"
	}
	return "disabled"
}
