package ctl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/yagura/yagura/internal/api"
)

var listKinds = []string{"ip", "mac", "port"}

func listKindNoun(kind string) string {
	switch kind {
	case "ip":
		return "IP list"
	case "mac":
		return "MAC list"
	}
	return "port list"
}

// readInput reads a file, or standard input for "-".
func readInput(cmd *cobra.Command, path string) ([]byte, error) {
	if path == "" {
		return nil, fmt.Errorf("say which file with -f FILE (- for standard input)")
	}
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), 64<<20))
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if !json.Valid(b) {
		return nil, fmt.Errorf("%s is not JSON", path)
	}
	return b, nil
}

func ruleID(arg string) (string, error) {
	if n, err := strconv.Atoi(arg); err != nil || n <= 0 {
		return "", fmt.Errorf("%q is not a rule ID (a number)", arg)
	}
	return arg, nil
}

// allPages follows next_cursor until the last page.
func allPages[T any](cmd *cobra.Command, g *globals, path string, q url.Values) ([]T, error) {
	c, err := g.client()
	if err != nil {
		return nil, err
	}
	if q == nil {
		q = url.Values{}
	}
	q.Set("limit", "10000")
	var items []T
	for {
		var page struct {
			Items      []T    `json:"items"`
			NextCursor string `json:"next_cursor"`
		}
		if err := c.Do(cmd.Context(), http.MethodGet, path, q, nil, &page); err != nil {
			return nil, err
		}
		items = append(items, page.Items...)
		if page.NextCursor == "" {
			return items, nil
		}
		q.Set("cursor", page.NextCursor)
	}
}

// addrText summarises an address, MAC or port condition of a rule.
func addrText(typ, value, mask, from, to string, multiple []string, listID int, not bool) string {
	var s string
	switch typ {
	case "", "any":
		return "any"
	case "single":
		s = value
	case "masked-ip":
		s = value + "/" + mask
	case "range":
		s = from + "-" + to
	case "multiple":
		s = strings.Join(multiple, ",")
		if len(s) > 40 {
			s = fmt.Sprintf("%d entries", len(multiple))
		}
	case "ip-list", "mac-list", "port-list":
		s = fmt.Sprintf("%s %d", typ, listID)
	default:
		s = typ
	}
	if not {
		s = "not " + s
	}
	return s
}

func ruleSource(r *api.FirewallRule) (ip, port string) {
	return addrText(r.SourceIPType, r.SourceIPValue, r.SourceIPMask, r.SourceIPRangeFrom, r.SourceIPRangeTo, r.SourceIPMultiple, r.SourceIPListID, r.SourceIPNot),
		addrText(r.SourcePortType, "", "", "", "", r.SourcePortMultiple, r.SourcePortListID, r.SourcePortNot)
}

func ruleDestination(r *api.FirewallRule) (ip, port string) {
	return addrText(r.DestinationIPType, r.DestinationIPValue, r.DestinationIPMask, r.DestinationIPRangeFrom, r.DestinationIPRangeTo, r.DestinationIPMultiple, r.DestinationIPListID, r.DestinationIPNot),
		addrText(r.DestinationPortType, "", "", "", "", r.DestinationPortMultiple, r.DestinationPortListID, r.DestinationPortNot)
}

func protocolText(r *api.FirewallRule) string {
	p := dash(r.Protocol)
	if r.Protocol == "other" {
		p = fmt.Sprintf("other %d", r.ProtocolNumber)
	}
	if r.ProtocolNot {
		p = "not " + p
	}
	return p
}

func showRule(tw *tabwriter.Writer, r *api.FirewallRule) {
	srcIP, srcPort := ruleSource(r)
	dstIP, dstPort := ruleDestination(r)
	frame := dash(r.FrameType)
	if r.FrameType == "other" {
		frame = fmt.Sprintf("other 0x%04x", r.FrameNumber)
	}
	if r.FrameNot {
		frame = "not " + frame
	}
	flags := "any"
	if len(r.TCPFlags) > 0 {
		flags = strings.Join(r.TCPFlags, ",")
		if r.TCPNot {
			flags = "not " + flags
		}
	}
	icmp := "any"
	if r.ICMPType != nil {
		icmp = fmt.Sprintf("type %d", *r.ICMPType)
		if r.ICMPCode != nil {
			icmp += fmt.Sprintf(" code %d", *r.ICMPCode)
		}
		if r.ICMPNot {
			icmp = "not " + icmp
		}
	}
	var logging []string
	if !r.LogDisabled {
		logging = append(logging, "events")
	}
	if r.IncludePacketData {
		logging = append(logging, "packet data")
	}
	if r.AlertEnabled {
		logging = append(logging, "alert")
	}
	rows := [][2]string{
		{"ID", strconv.Itoa(r.ID)}, {"Name", r.Name}, {"Description", dash(r.Description)},
		{"Action", r.Action}, {"Priority", r.Priority}, {"Direction", r.Direction},
		{"Frame", frame}, {"Protocol", protocolText(r)},
		{"Source IP", srcIP},
		{"Source MAC", addrText(r.SourceMACType, r.SourceMACValue, "", "", "", r.SourceMACMultiple, r.SourceMACListID, r.SourceMACNot)},
		{"Source port", srcPort},
		{"Destination IP", dstIP},
		{"Destination MAC", addrText(r.DestinationMACType, r.DestinationMACValue, "", "", "", r.DestinationMACMultiple, r.DestinationMACListID, r.DestinationMACNot)},
		{"Destination port", dstPort},
		{"TCP flags", flags}, {"ICMP", icmp}, {"Logging", dash(strings.Join(logging, ", "))},
	}
	for _, row := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1])
	}
}

func rulesCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rules",
		Short: "Firewall rules, in Deep Security's JSON form",
		Long: `Firewall rules are kept in the JSON form of Deep Security's REST API, so
rules exported from Deep Security import unchanged. Rules reference IP, MAC
and port lists by ID (see yagura ctl lists).`,
	}
	var search string
	ls := &cobra.Command{
		Use: "list", Short: "List firewall rules", Args: cobra.NoArgs,
		Example: "  yagura ctl rules list --search ssh",
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			if search != "" {
				q.Set("q", search)
			}
			rules, err := allPages[api.FirewallRule](cmd, g, "/api/v1/firewall/rules", q)
			if err != nil {
				return err
			}
			if rules == nil {
				rules = []api.FirewallRule{}
			}
			return g.emit(cmd.OutOrStdout(), rules, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "ID\tACTION\tPRIORITY\tDIRECTION\tPROTOCOL\tSOURCE\tDESTINATION\tPORTS\tNAME")
				for i := range rules {
					r := &rules[i]
					srcIP, _ := ruleSource(r)
					dstIP, dstPort := ruleDestination(r)
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Action, r.Priority, r.Direction, protocolText(r), srcIP, dstIP, dstPort, r.Name)
				}
			})
		},
	}
	ls.Flags().StringVar(&search, "search", "", "only rules whose name contains this")

	show := &cobra.Command{
		Use: "show ID", Short: "Show one firewall rule", Args: cobra.ExactArgs(1),
		Example: "  yagura ctl rules show 12 -o json > rule.json",
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := ruleID(args[0])
			if err != nil {
				return err
			}
			var r api.FirewallRule
			if err := g.do(cmd, http.MethodGet, "/api/v1/firewall/rules/"+id, nil, nil, &r); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), r, func(tw *tabwriter.Writer) { showRule(tw, &r) })
		},
	}

	var file string
	create := &cobra.Command{
		Use: "create -f FILE", Short: "Create a firewall rule from a JSON file", Args: cobra.NoArgs,
		Example: `  cat > ssh.json <<'END'
  {"name": "Allow SSH", "action": "allow", "direction": "incoming", "protocol": "tcp",
   "destinationPortType": "multiple", "destinationPortMultiple": ["22"]}
  END
  yagura ctl rules create -f ssh.json`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body, err := readInput(cmd, file)
			if err != nil {
				return err
			}
			var r api.FirewallRule
			if err := g.do(cmd, http.MethodPost, "/api/v1/firewall/rules", nil, json.RawMessage(body), &r); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), r, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Rule %d %q created.\n", r.ID, r.Name)
			})
		},
	}
	create.Flags().StringVarP(&file, "file", "f", "", "the rule in Deep Security's JSON form (- for standard input)")

	update := &cobra.Command{
		Use: "update ID -f FILE", Short: "Replace a firewall rule with a JSON file", Args: cobra.ExactArgs(1),
		Example: `  yagura ctl rules show 12 -o json > rule.json   # edit it, then
  yagura ctl rules update 12 -f rule.json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := ruleID(args[0])
			if err != nil {
				return err
			}
			body, err := readInput(cmd, file)
			if err != nil {
				return err
			}
			var r api.FirewallRule
			if err := g.do(cmd, http.MethodPut, "/api/v1/firewall/rules/"+id, nil, json.RawMessage(body), &r); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), r, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Rule %d %q updated.\n", r.ID, r.Name)
			})
		},
	}
	update.Flags().StringVarP(&file, "file", "f", "", "the whole rule in Deep Security's JSON form (- for standard input)")

	del := &cobra.Command{
		Use: "delete ID", Short: "Delete a firewall rule (refused while it is assigned)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := ruleID(args[0])
			if err != nil {
				return err
			}
			if err := g.do(cmd, http.MethodDelete, "/api/v1/firewall/rules/"+id, nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Rule %s deleted.\n", id)
			return nil
		},
	}

	imp := &cobra.Command{
		Use:   "import FILE",
		Short: "Import rules and lists from a Deep Security (or Yagura) export",
		Long: `The file holds rules as Deep Security's REST API writes them: a JSON array
of rules, one rule, {"firewallRules": [...]}, or a document with "ipLists",
"macLists" and "portLists" too (what yagura ctl rules export writes).
Everything is imported in one transaction, or nothing. Rules and lists get
new IDs; the table shows which.`,
		Example: `  yagura ctl rules import ds-export.json
  yagura ctl rules import - < ds-export.json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := readInput(cmd, args[0])
			if err != nil {
				return err
			}
			var res api.FirewallImportResult
			if err := g.do(cmd, http.MethodPost, "/api/v1/firewall/rules/import", nil, json.RawMessage(body), &res); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), res, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Imported %d rules, %d IP lists, %d MAC lists and %d port lists.\n\n",
					len(res.FirewallRules), len(res.IPLists), len(res.MACLists), len(res.PortLists))
				fmt.Fprintln(tw, "KIND\tID IN FILE\tNEW ID")
				for _, m := range []struct {
					kind string
					ids  map[string]int
				}{{"rule", res.FirewallRules}, {"IP list", res.IPLists}, {"MAC list", res.MACLists}, {"port list", res.PortLists}} {
					old := make([]string, 0, len(m.ids))
					for k := range m.ids {
						old = append(old, k)
					}
					slices.SortFunc(old, func(a, b string) int {
						x, _ := strconv.Atoi(a)
						y, _ := strconv.Atoi(b)
						return x - y
					})
					for _, k := range old {
						fmt.Fprintf(tw, "%s\t%s\t%d\n", m.kind, k, m.ids[k])
					}
				}
			})
		},
	}

	var ids []int
	var out string
	var force bool
	exp := &cobra.Command{
		Use:   "export [--id N]... [-O FILE]",
		Short: "Export rules with the lists they use, as yagura ctl rules import reads them",
		Example: `  yagura ctl rules export -O firewall.json            # every rule
  yagura ctl rules export --id 3 --id 7 > two-rules.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			for _, id := range ids {
				q.Add("id", strconv.Itoa(id))
			}
			var e api.FirewallExport
			if err := g.do(cmd, http.MethodGet, "/api/v1/firewall/rules/export", q, nil, &e); err != nil {
				return err
			}
			b, err := json.MarshalIndent(e, "", "  ")
			if err != nil {
				return err
			}
			b = append(b, '\n')
			if out == "" || out == "-" {
				_, err = cmd.OutOrStdout().Write(b)
				return err
			}
			if err := writeNew(out, b, force); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%s: %d rules, %d IP lists, %d MAC lists, %d port lists\n",
				out, len(e.FirewallRules), len(e.IPLists), len(e.MACLists), len(e.PortLists))
			return nil
		},
	}
	exp.Flags().IntSliceVar(&ids, "id", nil, "rule ID (repeat; default: every rule)")
	exp.Flags().StringVarP(&out, "output-file", "O", "", "write to this file (default: standard output)")
	exp.Flags().BoolVar(&force, "force", false, "replace an existing file")

	cmd.AddCommand(ls, show, create, update, del, imp, exp)
	return cmd
}

// writeNew writes a file through a temporary one, refusing to replace an
// existing file unless forced.
func writeNew(path string, b []byte, force bool) error {
	if _, err := os.Lstat(path); err == nil && !force {
		return fmt.Errorf("%s exists; choose another name or pass --force to replace it", path)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func listsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lists",
		Short: "IP, MAC and port lists that firewall rules reference",
		Long: `Reusable lists, as in Deep Security. Entries:
  ip    10.0.0.1, 10.0.0.0/8, 10.0.0.0/255.0.0.0, 10.0.0.1-10.0.0.9, 2001:db8::/32
  mac   00:11:22:33:44:55 or 00-11-22-33-44-55
  port  22 or 5900-5910
Text after # is a comment.`,
	}
	var kind string
	checkKind := func(required bool) error {
		if kind == "" && !required {
			return nil
		}
		if !slices.Contains(listKinds, kind) {
			return fmt.Errorf("--kind %q: want ip, mac or port", kind)
		}
		return nil
	}
	listPath := func(id string) string {
		p := "/api/v1/firewall/lists/" + kind
		if id != "" {
			p += "/" + id
		}
		return p
	}
	listID := func(arg string) (string, error) {
		if n, err := strconv.Atoi(arg); err != nil || n <= 0 {
			return "", fmt.Errorf("%q is not a list ID (a number)", arg)
		}
		return arg, nil
	}

	ls := &cobra.Command{
		Use: "list [--kind ip|mac|port]", Short: "List IP, MAC and port lists", Args: cobra.NoArgs,
		Example: "  yagura ctl lists list --kind port",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkKind(false); err != nil {
				return err
			}
			kinds := listKinds
			if kind != "" {
				kinds = []string{kind}
			}
			type row struct {
				Kind string `json:"kind"`
				api.FirewallList
			}
			rows := []row{}
			for _, k := range kinds {
				ls, err := allPages[api.FirewallList](cmd, g, "/api/v1/firewall/lists/"+k, nil)
				if err != nil {
					return err
				}
				for _, l := range ls {
					rows = append(rows, row{k, l})
				}
			}
			slices.SortStableFunc(rows, func(a, b row) int { return a.ID - b.ID })
			return g.emit(cmd.OutOrStdout(), rows, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "ID\tKIND\tNAME\tITEMS\tENTRIES\tDESCRIPTION")
				for _, r := range rows {
					entries := strings.Join(r.Items, ", ")
					if len(entries) > 50 {
						entries = entries[:47] + "..."
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n", r.ID, r.Kind, r.Name, len(r.Items), dash(entries), dash(r.Description))
				}
			})
		},
	}
	show := &cobra.Command{
		Use: "show ID --kind ip|mac|port", Short: "Show one list and its entries", Args: cobra.ExactArgs(1),
		Example: "  yagura ctl lists show 4 --kind ip",
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkKind(true); err != nil {
				return err
			}
			id, err := listID(args[0])
			if err != nil {
				return err
			}
			var l api.FirewallList
			if err := g.do(cmd, http.MethodGet, listPath(id), nil, nil, &l); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), l, func(tw *tabwriter.Writer) { showList(tw, kind, &l) })
		},
	}

	var name, desc, file string
	var items []string
	// body builds a list from -f FILE, then the flags given on top of it.
	body := func(cmd *cobra.Command, base api.FirewallList) (api.FirewallList, error) {
		l := base
		if file != "" {
			b, err := readInput(cmd, file)
			if err != nil {
				return l, err
			}
			dec := json.NewDecoder(bytes.NewReader(b))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&l); err != nil {
				return l, fmt.Errorf("%s: %w (want {\"name\": …, \"description\": …, \"items\": […]})", file, err)
			}
		}
		f := cmd.Flags()
		if f.Changed("name") {
			l.Name = name
		}
		if f.Changed("description") {
			l.Description = desc
		}
		if f.Changed("item") {
			l.Items = items
		}
		if l.Items == nil {
			l.Items = []string{}
		}
		return l, nil
	}
	flags := func(c *cobra.Command) {
		c.Flags().StringVar(&kind, "kind", "", "ip, mac or port (required)")
		c.Flags().StringVar(&name, "name", "", "the list's name")
		c.Flags().StringVar(&desc, "description", "", "what the list is for")
		c.Flags().StringArrayVar(&items, "item", nil, "an entry (repeat); replaces all entries")
		c.Flags().StringVarP(&file, "file", "f", "", `the list as JSON, {"name": …, "description": …, "items": […]} (- for standard input)`)
	}
	create := &cobra.Command{
		Use: "create --kind ip|mac|port (--name NAME [--item ENTRY]... | -f FILE)", Short: "Create a list", Args: cobra.NoArgs,
		Example: `  yagura ctl lists create --kind ip --name "Admin networks" --item 10.10.0.0/16 --item "192.0.2.7 # jump host"
  yagura ctl lists create --kind port --name Web --item 80 --item 443 --item 8000-8080`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkKind(true); err != nil {
				return err
			}
			l, err := body(cmd, api.FirewallList{})
			if err != nil {
				return err
			}
			l.ID = 0
			var out api.FirewallList
			if err := g.do(cmd, http.MethodPost, listPath(""), nil, l, &out); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), out, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "%s %d %q created with %d entries.\n", listKindNoun(kind), out.ID, out.Name, len(out.Items))
			})
		},
	}
	flags(create)
	update := &cobra.Command{
		Use: "update ID --kind ip|mac|port [--name NAME] [--description TEXT] [--item ENTRY]... [-f FILE]", Short: "Change a list",
		Long: "Flags change only what they name; --item replaces every entry. With -f, the file replaces the whole list (flags then apply on top).",
		Example: `  yagura ctl lists update 4 --kind port --item 80 --item 443
  yagura ctl lists update 4 --kind ip --name "Admin networks (old)"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkKind(true); err != nil {
				return err
			}
			id, err := listID(args[0])
			if err != nil {
				return err
			}
			var cur api.FirewallList
			if file == "" {
				if err := g.do(cmd, http.MethodGet, listPath(id), nil, nil, &cur); err != nil {
					return err
				}
			}
			l, err := body(cmd, cur)
			if err != nil {
				return err
			}
			l.ID = 0
			var out api.FirewallList
			if err := g.do(cmd, http.MethodPut, listPath(id), nil, l, &out); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), out, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "%s %d %q updated: %d entries.\n", listKindNoun(kind), out.ID, out.Name, len(out.Items))
			})
		},
	}
	flags(update)
	del := &cobra.Command{
		Use: "delete ID --kind ip|mac|port", Short: "Delete a list (refused while rules use it)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkKind(true); err != nil {
				return err
			}
			id, err := listID(args[0])
			if err != nil {
				return err
			}
			if err := g.do(cmd, http.MethodDelete, listPath(id), nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s deleted.\n", listKindNoun(kind), id)
			return nil
		},
	}
	for _, c := range []*cobra.Command{ls, show, del} {
		c.Flags().StringVar(&kind, "kind", "", "ip, mac or port")
	}
	cmd.AddCommand(ls, show, create, update, del)
	return cmd
}

func showList(tw *tabwriter.Writer, kind string, l *api.FirewallList) {
	fmt.Fprintf(tw, "ID\t%d\nKind\t%s\nName\t%s\nDescription\t%s\nEntries\t%d\n", l.ID, listKindNoun(kind), l.Name, dash(l.Description), len(l.Items))
	for _, it := range l.Items {
		fmt.Fprintf(tw, "\t%s\n", it)
	}
}
