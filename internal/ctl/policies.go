package ctl

import (
	"encoding/json"
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
	"github.com/yagura/yagura/internal/policy"
)

// parseSets reads KEY=VALUE arguments.
func parseSets(args []string) (map[string]string, error) {
	out := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("%q: want KEY=VALUE, e.g. firewall.enabled=on (keys: %s; value %q to inherit)", a, strings.Join(policy.Keys(), ", "), policy.Inherited)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out, nil
}

func policyPath(id string) (string, error) {
	if _, err := strconv.Atoi(id); err != nil {
		return "", fmt.Errorf("policy ID %q: want a number (see `yagura ctl policies list`)", id)
	}
	return "/api/v1/policies/" + id, nil
}

func showEffective(tw *tabwriter.Writer, e *api.EffectivePolicy) {
	fmt.Fprintf(tw, "Fingerprint/フィンガープリント:\t%s\n", e.Fingerprint)
	if e.Status != "" {
		fmt.Fprintf(tw, "Agent reports/エージェント報告:\t%s (%s)\n", dash(e.Reported), e.Status)
	}
	fmt.Fprintln(tw, "\nSETTING/設定\tVALUE/値\tFROM/継承元")
	for _, k := range slices.Sorted(maps.Keys(e.Settings)) {
		v := e.Settings[k]
		fmt.Fprintf(tw, "%s\t%s\t%s\n", k, v.Value, v.Source)
	}
	fmt.Fprintln(tw, "\nRULE/ルール\tNAME/名前\tFROM/継承元")
	for _, r := range e.Rules {
		fmt.Fprintf(tw, "%d\t%s\t%s\n", r.ID, r.Name, r.Source)
	}
}

func ints(v []int) string {
	if len(v) == 0 {
		return "-"
	}
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

func policiesCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "policies", Aliases: []string{"policy"}, Short: "Policies: a tree of settings and firewall rule assignments"}
	ls := &cobra.Command{
		Use: "list", Short: "List policies as a tree", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out list[api.Policy]
			if err := g.do(cmd, http.MethodGet, "/api/v1/policies", nil, nil, &out); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), out.Items, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "ID\tNAME/名前\tSETTINGS/設定\tRULES/ルール\tVERSION")
				children := map[int][]api.Policy{}
				for _, p := range out.Items {
					children[p.ParentID] = append(children[p.ParentID], p)
				}
				var walk func(parent, depth int)
				walk = func(parent, depth int) {
					for _, p := range children[parent] {
						fmt.Fprintf(tw, "%d\t%s%s\t%d\t+%s -%s\t%d\n", p.ID, strings.Repeat("  ", depth), p.Name, len(p.Settings), ints(p.AssignedRules), ints(p.RemovedRules), p.Version)
						walk(p.ID, depth+1)
					}
				}
				walk(0, 0)
			})
		},
	}
	show := &cobra.Command{
		Use: "show ID", Short: "Show a policy", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := policyPath(args[0])
			if err != nil {
				return err
			}
			var p api.Policy
			if err := g.do(cmd, http.MethodGet, path, nil, nil, &p); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), p, func(tw *tabwriter.Writer) { showPolicy(tw, &p) })
		},
	}
	effective := &cobra.Command{
		Use: "effective ID", Short: "Show a policy's resolved settings and rules, each with its source", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := policyPath(args[0])
			if err != nil {
				return err
			}
			var e api.EffectivePolicy
			if err := g.do(cmd, http.MethodGet, path+"/effective", nil, nil, &e); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), e, func(tw *tabwriter.Writer) { showEffective(tw, &e) })
		},
	}
	var parent int
	var desc string
	var sets []string
	var assign, remove []int
	create := &cobra.Command{
		Use: "create NAME", Short: "Create a policy", Args: cobra.ExactArgs(1),
		Example: `  yagura ctl policies create "Web servers" --parent 1 --set firewall.enabled=on --assign 3 --assign 4`,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := parseSets(sets)
			if err != nil {
				return err
			}
			in := api.PolicyInput{Name: args[0], Description: desc, ParentID: parent, Settings: s, AssignedRules: assign, RemovedRules: remove}
			var p api.Policy
			if err := g.do(cmd, http.MethodPost, "/api/v1/policies", nil, in, &p); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), p, func(tw *tabwriter.Writer) { showPolicy(tw, &p) })
		},
	}
	cf := create.Flags()
	cf.IntVar(&parent, "parent", 0, "parent policy ID (0: a root)")
	cf.StringVar(&desc, "description", "", "what the policy is for")
	cf.StringArrayVar(&sets, "set", nil, "KEY=VALUE setting (repeat); keys: "+strings.Join(policy.Keys(), ", "))
	cf.IntSliceVar(&assign, "assign", nil, "firewall rule ID to assign (repeat)")
	cf.IntSliceVar(&remove, "remove", nil, "inherited firewall rule ID to remove (repeat)")

	var uSets []string
	var uAssign, uRemove, uClear []int
	var uParent int
	var uName string
	update := &cobra.Command{
		Use:   "set ID [KEY=VALUE...]",
		Short: "Change a policy: settings, rule assignments, name or parent",
		Long: `Changes only what is given. A setting set to "inherited" takes the parent's value again.
The change is made only if nobody changed the policy since it was read (If-Match).
Online agents get the new configuration within seconds.`,
		Example: `  yagura ctl policies set 2 firewall.enabled=on heartbeat.interval=30s
  yagura ctl policies set 2 firewall.stateful=inherited --assign 7 --unassign 3`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := policyPath(args[0])
			if err != nil {
				return err
			}
			s, err := parseSets(append(uSets, args[1:]...))
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			var p api.Policy
			if err := c.Do(cmd.Context(), http.MethodGet, path, nil, nil, &p); err != nil {
				return err
			}
			in := api.PolicyInput{Name: p.Name, Description: p.Description, ParentID: p.ParentID, Settings: p.Settings}
			if uName != "" {
				in.Name = uName
			}
			if cmd.Flags().Changed("parent") {
				in.ParentID = uParent
			}
			for k, v := range s {
				in.Settings[k] = v
			}
			rules := map[int]bool{}
			for _, id := range p.AssignedRules {
				rules[id] = true
			}
			for _, id := range p.RemovedRules {
				rules[id] = false
			}
			for _, id := range uAssign {
				rules[id] = true
			}
			for _, id := range uRemove {
				rules[id] = false
			}
			for _, id := range uClear {
				delete(rules, id)
			}
			for _, id := range slices.Sorted(maps.Keys(rules)) {
				if rules[id] {
					in.AssignedRules = append(in.AssignedRules, id)
				} else {
					in.RemovedRules = append(in.RemovedRules, id)
				}
			}
			var out api.Policy
			// Only if nobody changed it since the read above.
			h := http.Header{"If-Match": {strconv.Quote(strconv.FormatInt(p.Version, 10))}}
			if err := c.DoHeader(cmd.Context(), http.MethodPut, path, h, in, &out); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), out, func(tw *tabwriter.Writer) { showPolicy(tw, &out) })
		},
	}
	uf := update.Flags()
	uf.StringArrayVar(&uSets, "set", nil, "KEY=VALUE setting (repeat)")
	uf.IntSliceVar(&uAssign, "assign", nil, "firewall rule ID to assign")
	uf.IntSliceVar(&uRemove, "unassign", nil, "firewall rule ID to remove (also one inherited from a parent)")
	uf.IntSliceVar(&uClear, "inherit-rule", nil, "rule ID whose assignment is inherited again")
	uf.IntVar(&uParent, "parent", 0, "new parent policy ID (0: make it a root)")
	uf.StringVar(&uName, "name", "", "new name")
	del := &cobra.Command{
		Use: "delete ID", Short: "Delete a policy no computer or child policy uses", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := policyPath(args[0])
			if err != nil {
				return err
			}
			if err := g.do(cmd, http.MethodDelete, path, nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Policy %s deleted. / ポリシー %s を削除しました。\n", args[0], args[0])
			return nil
		},
	}
	cmd.AddCommand(ls, show, effective, create, update, del)
	return cmd
}

func showPolicy(tw *tabwriter.Writer, p *api.Policy) {
	fmt.Fprintf(tw, "ID:\t%d\nName/名前:\t%s\n", p.ID, p.Name)
	if p.Description != "" {
		fmt.Fprintf(tw, "Description/説明:\t%s\n", p.Description)
	}
	parent := "- (root)"
	if p.ParentID != 0 {
		parent = strconv.Itoa(p.ParentID)
	}
	fmt.Fprintf(tw, "Parent/親:\t%s\nVersion:\t%d\n", parent, p.Version)
	for _, k := range slices.Sorted(maps.Keys(p.Settings)) {
		fmt.Fprintf(tw, "  %s\t%s\n", k, p.Settings[k])
	}
	fmt.Fprintf(tw, "Assigned rules/割り当てルール:\t%s\nRemoved rules/除外ルール:\t%s\n", ints(p.AssignedRules), ints(p.RemovedRules))
}

// computerPolicyCmds are `computers policy` and `computers isolate|release`.
func computerPolicyCmds(g *globals) []*cobra.Command {
	var pid int
	var sets []string
	var assign, remove []int
	pol := &cobra.Command{
		Use:   "policy ID",
		Short: "Show a computer's effective configuration, or change its policy and overrides",
		Long: `Without flags, shows every effective setting and rule with where it comes from, and
whether the agent enforces it. With --policy, --set, --assign or --remove, replaces the
computer's policy and overrides (what is not given is cleared).`,
		Example: `  yagura ctl computers policy 0193a5c2-…
  yagura ctl computers policy 0193a5c2-… --policy 3 --set heartbeat.interval=10s --assign 12`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/api/v1/computers/" + url.PathEscape(args[0]) + "/policy"
			var e api.EffectivePolicy
			f := cmd.Flags()
			if !f.Changed("policy") && !f.Changed("set") && !f.Changed("assign") && !f.Changed("remove") {
				if err := g.do(cmd, http.MethodGet, path, nil, nil, &e); err != nil {
					return err
				}
				return g.emit(cmd.OutOrStdout(), e, func(tw *tabwriter.Writer) { showEffective(tw, &e) })
			}
			s, err := parseSets(sets)
			if err != nil {
				return err
			}
			body := map[string]any{"policy_id": pid, "settings": s, "assigned_rules": assign, "removed_rules": remove}
			if err := g.do(cmd, http.MethodPut, path, nil, body, &e); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), e, func(tw *tabwriter.Writer) { showEffective(tw, &e) })
		},
	}
	pf := pol.Flags()
	pf.IntVar(&pid, "policy", 0, "policy ID (0: the default policy)")
	pf.StringArrayVar(&sets, "set", nil, "KEY=VALUE override (repeat)")
	pf.IntSliceVar(&assign, "assign", nil, "rule ID the computer adds")
	pf.IntSliceVar(&remove, "remove", nil, "rule ID the computer removes")

	var allow []string
	var watch bool
	isolate := &cobra.Command{
		Use:   "isolate ID...",
		Short: "Isolate computers: only the manager (and --allow) stay reachable",
		Long: `Creates an isolate job. The agent applies priority-4 rules that deny all IP traffic but the
manager's and the allow-list's, checks it can still reach the manager, and rolls back by itself
if it cannot. Release with ` + "`yagura ctl computers release ID`" + `.`,
		Example: `  yagura ctl computers isolate 0193a5c2-… --allow "udp 192.0.2.53:53" --watch`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			params, _ := json.Marshal(map[string]any{"allow": allow})
			return g.createJob(cmd, "isolate", args, params, watch)
		},
	}
	isolate.Flags().StringArrayVar(&allow, "allow", nil, `what stays reachable besides the manager: "[tcp|udp|icmp|any] ADDRESS[/PREFIX][:PORT]" (repeat)`)
	isolate.Flags().BoolVar(&watch, "watch", false, "follow the job until every computer is done")
	release := &cobra.Command{
		Use: "release ID...", Short: "End the isolation of computers", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.createJob(cmd, "release", args, nil, watch)
		},
	}
	release.Flags().BoolVar(&watch, "watch", false, "follow the job until every computer is done")
	return []*cobra.Command{pol, isolate, release}
}

func (g *globals) createJob(cmd *cobra.Command, kind string, computers []string, params json.RawMessage, watch bool) error {
	body := api.JobCreate{Kind: kind, Computers: computers, Params: params}
	var j api.Job
	if err := g.do(cmd, http.MethodPost, "/api/v1/jobs", nil, body, &j); err != nil {
		return err
	}
	if watch {
		c, err := g.client()
		if err != nil {
			return err
		}
		return watchJob(cmd, g, c, j.ID)
	}
	return g.emit(cmd.OutOrStdout(), j, func(tw *tabwriter.Writer) {
		fmt.Fprintf(tw, "Job %s (%s) created for %d computers; follow it with: yagura ctl jobs watch %s\n", j.ID, j.Kind, j.Total, j.ID)
	})
}
