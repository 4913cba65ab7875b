package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/yagura/yagura/internal/firewall"
)

// exitDrop is the exit status of `yagura fw eval` when a packet is dropped.
const exitDrop = 3

func fwCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "fw",
		Short: "Check firewall rules and see what they do to a packet, offline",
		Long: `Work with firewall rule files on this machine, without a manager or an agent.
ファイアウォールのルールファイルを検査し、パケットの扱いを確かめます。

A rules file is either a Deep Security export (a JSON array of FirewallRule
objects, one rule object, or {"firewallRules": [...]}) or a Yagura rule set
{"rules": [...], "ipLists": [...], "macLists": [...], "portLists": [...]}
when rules refer to lists. See docs/firewall.md.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(fwEvalCmd(), fwCheckCmd())
	return cmd
}

func fwEvalCmd() *cobra.Command {
	var (
		rulesPath string
		packets   []string
		stateful  bool
		asJSON    bool
	)
	cmd := &cobra.Command{
		Use:   "eval --rules FILE --packet PACKET...",
		Short: "Show what the rules do to packets: verdict, reason, deciding rule, events",
		Long: `Evaluates each --packet against the rules, exactly as the host firewall
would, and prints the verdict, the reason, the rule that decided, the
log-only rules matched and the events the host would report.
各パケットの判定 (pass/drop)、理由、判定したルール、イベントを表示します。

Exit status: 0 when every packet passes, 3 when at least one is dropped,
1 on an error (a bad rules file or packet), so scripts can test a policy.
終了コード: 全て通過 0、いずれかが破棄 3、エラー 1。

Packet syntax (one packet per --packet; repeat the flag for more):

` + indent(firewall.PacketSyntax, "  ") + `

Under --stateful a new TCP packet must be a pure SYN ("flags S") to open a
connection; anything else in state new is out of connection and dropped.`,
		Example: `  yagura fw eval --rules policy.json --packet 'in tcp 10.0.0.5:40000 > 10.0.0.1:22 flags S'
  yagura fw eval --rules policy.json --stateful \
      --packet 'in tcp 10.0.0.5:40000 > 10.0.0.1:22 flags S' \
      --packet 'in tcp 10.0.0.5:443 > 10.0.0.1:51000 flags A state established'
  yagura fw eval --rules policy.json --packet 'out udp [2001:db8::5]:5353 > [2001:db8::1]:53'
  yagura fw eval --rules policy.json --packet 'in icmp 10.0.0.5 > 10.0.0.1 type 8 code 0'
  yagura fw eval --rules policy.json --packet 'in arp 10.0.0.5 > 10.0.0.1' --json
  yagura fw eval --rules policy.json --packet 'in tcp 10.0.0.5:1 > 10.0.0.1:23 flags S' || echo "dropped (exit $?)"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(packets) == 0 {
				return errors.New("give at least one --packet; see yagura fw eval --help for the syntax")
			}
			set, err := loadRuleSet(cmd, rulesPath)
			if err != nil {
				return err
			}
			prog, err := compileSet(rulesPath, set)
			if err != nil {
				return err
			}
			// Parse every packet first: a typo in the third must not
			// leave half an answer behind.
			pkts := make([]firewall.Packet, len(packets))
			for i, s := range packets {
				if pkts[i], err = firewall.ParsePacket(s); err != nil {
					return fmt.Errorf("--packet %d: %w (see yagura fw eval --help)", i+1, err)
				}
			}
			out := cmd.OutOrStdout()
			opt := firewall.Options{Stateful: stateful}
			enc := json.NewEncoder(out)
			enc.SetEscapeHTML(false) // packets have ">"
			dropped := false
			for i, pkt := range pkts {
				d := firewall.Evaluate(prog, opt, pkt)
				dropped = dropped || d.Verdict == firewall.Drop
				if asJSON {
					if err := enc.Encode(newEvalResult(pkt, d)); err != nil {
						return err
					}
					continue
				}
				if i > 0 {
					fmt.Fprintln(out)
				}
				printDecision(out, pkt, opt, d)
			}
			if dropped {
				return exitError(exitDrop)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&rulesPath, "rules", "", "rules file (JSON; - for standard input)")
	f.StringArrayVar(&packets, "packet", nil, "packet to evaluate, e.g. 'in tcp 10.0.0.5:40000 > 10.0.0.1:22 flags S' (repeatable)")
	f.BoolVar(&stateful, "stateful", false, "evaluate with stateful inspection on, as hosts usually run")
	f.BoolVar(&asJSON, "json", false, "print one JSON object per packet instead of text")
	_ = cmd.MarkFlagRequired("rules")
	return cmd
}

func fwCheckCmd() *cobra.Command {
	var rulesPath string
	cmd := &cobra.Command{
		Use:   "check --rules FILE",
		Short: "Validate a rules file and summarise it",
		Long: `Validates every rule and list of a rules file as the manager would, and
prints how many rules there are per action and direction. An error names
the rule (its position in the file, ID and name) and the field that is
wrong, e.g. sourceIPMultiple[2] for the third entry of that field.
ルールファイルを検証し、アクションと方向ごとのルール数を表示します。`,
		Example: `  yagura fw check --rules policy.json
  curl -s … | yagura fw check --rules -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			set, err := loadRuleSet(cmd, rulesPath)
			if err != nil {
				return err
			}
			prog, err := compileSet(rulesPath, set)
			if err != nil {
				return err
			}
			printSummary(cmd.OutOrStdout(), set, prog)
			return nil
		},
	}
	cmd.Flags().StringVar(&rulesPath, "rules", "", "rules file (JSON; - for standard input)")
	_ = cmd.MarkFlagRequired("rules")
	return cmd
}

// indent prefixes every line that is not empty.
func indent(s, prefix string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "\n")
}

// loadRuleSet reads a Deep Security rule export or a Yagura rule set.
func loadRuleSet(cmd *cobra.Command, path string) (*firewall.Set, error) {
	var (
		data []byte
		err  error
	)
	if path == "-" {
		data, err = io.ReadAll(cmd.InOrStdin())
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	set, err := decodeRuleSet(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return set, nil
}

func decodeRuleSet(data []byte) (*firewall.Set, error) {
	var probe map[string]json.RawMessage
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' && json.Unmarshal(t, &probe) == nil {
		if _, ok := probe["rules"]; ok {
			var raw struct {
				Rules     json.RawMessage     `json:"rules"`
				IPLists   []firewall.IPList   `json:"ipLists"`
				MACLists  []firewall.MACList  `json:"macLists"`
				PortLists []firewall.PortList `json:"portLists"`
			}
			dec := json.NewDecoder(bytes.NewReader(data))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&raw); err != nil {
				return nil, fmt.Errorf("rule set: %w", err)
			}
			if t := bytes.TrimSpace(raw.Rules); len(t) == 0 || t[0] != '[' {
				return nil, errors.New(`rule set: "rules" must be an array of rules`)
			}
			rules, err := firewall.DecodeRules(raw.Rules)
			if err != nil {
				return nil, err
			}
			return &firewall.Set{Rules: rules, IPLists: raw.IPLists, MACLists: raw.MACLists, PortLists: raw.PortLists}, nil
		}
	}
	rules, err := firewall.DecodeRules(data)
	if err != nil {
		return nil, err
	}
	return &firewall.Set{Rules: rules}, nil
}

// compileSet compiles a set and, on an error, says which rule of the file
// (by position) is wrong, since exported rules may lack IDs.
func compileSet(path string, set *firewall.Set) (*firewall.Program, error) {
	prog, err := firewall.Compile(set)
	if err == nil {
		return prog, nil
	}
	lists := *set
	lists.Rules = nil
	if _, lerr := firewall.Compile(&lists); lerr != nil {
		return nil, fmt.Errorf("%s: %w", path, lerr)
	}
	for i := range set.Rules {
		one := lists
		one.Rules = set.Rules[i : i+1]
		if _, rerr := firewall.Compile(&one); rerr != nil {
			r := &set.Rules[i]
			var fe *firewall.FieldError
			if errors.As(rerr, &fe) {
				rerr = fe // the rule is named below, by position too
			}
			return nil, fmt.Errorf("%s: rule %d of %d (ID %d, %q): %w", path, i+1, len(set.Rules), r.ID, r.Name, rerr)
		}
	}
	return nil, fmt.Errorf("%s: %w", path, err)
}

var reasonText = map[string]string{
	firewall.ReasonRule:        "a rule decided / ルールによる判定",
	firewall.ReasonOutOfPolicy: "allow rules exist in this direction and none matched / 許可ポリシー外",
	firewall.ReasonInvalid:     "stateful inspection: not part of a valid connection / 不正な接続状態",
	firewall.ReasonStateful:    "stateful inspection: part of a connection already passed / 既存の接続",
	firewall.ReasonDefault:     "no rule decided and no allow rule applies / 該当ルールなし",
}

func ruleText(r *firewall.Rule) string {
	return fmt.Sprintf("#%d %q (%s, priority %s, %s)", r.ID, r.Name, r.Action, strconv.Itoa(r.PriorityLevel()), r.Direction)
}

func printDecision(w io.Writer, pkt firewall.Packet, opt firewall.Options, d firewall.Decision) {
	fmt.Fprintf(w, "packet/パケット: %s\n", pkt)
	fmt.Fprintf(w, "verdict/判定: %s\n", d.Verdict)
	fmt.Fprintf(w, "reason/理由: %s (%s)\n", d.Reason, reasonText[d.Reason])
	if d.Rule != nil {
		fmt.Fprintf(w, "rule/ルール: %s\n", ruleText(d.Rule))
	}
	for _, r := range d.Logged {
		fmt.Fprintf(w, "log-only/ログのみ: %s\n", ruleText(r))
	}
	for _, e := range d.Events {
		b, _ := json.Marshal(e)
		fmt.Fprintf(w, "event/イベント: %s\n", b)
	}
	newTCP := pkt.Protocol == 6 && (pkt.EtherType == firewall.EtherIPv4 || pkt.EtherType == firewall.EtherIPv6) &&
		(pkt.State == "" || pkt.State == firewall.StateNew)
	if d.Reason == firewall.ReasonInvalid && opt.Stateful && newTCP {
		fmt.Fprintln(w, `hint/ヒント: a new TCP connection opens with a pure SYN: "flags S"; give "state established" for a later packet`)
	}
}

type evalRule struct {
	ID        int    `json:"ID"`
	Name      string `json:"name"`
	Action    string `json:"action"`
	Priority  string `json:"priority"`
	Direction string `json:"direction"`
}

type evalResult struct {
	Packet  string           `json:"packet"`
	Verdict string           `json:"verdict"`
	Reason  string           `json:"reason"`
	Rule    *evalRule        `json:"rule,omitempty"`
	Logged  []evalRule       `json:"logged,omitempty"`
	Events  []firewall.Event `json:"events,omitempty"`
}

func newEvalRule(r *firewall.Rule) evalRule {
	return evalRule{ID: r.ID, Name: r.Name, Action: r.Action, Priority: strconv.Itoa(r.PriorityLevel()), Direction: r.Direction}
}

func newEvalResult(pkt firewall.Packet, d firewall.Decision) evalResult {
	res := evalResult{Packet: pkt.String(), Verdict: d.Verdict, Reason: d.Reason, Events: d.Events}
	if d.Rule != nil {
		r := newEvalRule(d.Rule)
		res.Rule = &r
	}
	for _, r := range d.Logged {
		res.Logged = append(res.Logged, newEvalRule(r))
	}
	return res
}

func printSummary(w io.Writer, set *firewall.Set, prog *firewall.Program) {
	fmt.Fprintf(w, "OK: %d rules, %d IP lists, %d MAC lists, %d port lists / 問題なし\n\n",
		len(set.Rules), len(set.IPLists), len(set.MACLists), len(set.PortLists))
	count := map[[2]string]int{}
	for _, c := range prog.Rules {
		count[[2]string{c.Action, c.Direction}]++
	}
	fmt.Fprintln(w, "rules per action and direction / アクション・方向ごとのルール数:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  action\tincoming\toutgoing")
	for _, a := range []string{firewall.ActionBypass, firewall.ActionLogOnly, firewall.ActionForceAllow, firewall.ActionDeny, firewall.ActionAllow} {
		fmt.Fprintf(tw, "  %s\t%d\t%d\n", a, count[[2]string{a, firewall.Incoming}], count[[2]string{a, firewall.Outgoing}])
	}
	tw.Flush()
	onOff := func(b bool) string {
		if b {
			return "on: IP traffic that no allow rule matches is dropped / 許可されない IP 通信を拒否"
		}
		return "off: no allow rule / 許可ルールなし"
	}
	fmt.Fprintf(w, "\nimplicit deny/暗黙の拒否:\n  incoming/受信: %s\n  outgoing/送信: %s\n", onOff(prog.AllowIn), onOff(prog.AllowOut))
}
