package firewall

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Case is one named case of the semantic table in testdata/semantics: a
// rule set, the host's options, a packet and what must happen to it. The
// evaluator's tests run every case; the nftables tests replay the cases
// marked Kernel on real traffic, so both implementations answer the same
// table.
//
// A file holds a JSON array of cases:
//
//	[
//	  {
//	    "name": "force-allow-beats-deny-same-priority",
//	    "note": "why the case exists (optional)",
//	    "set": {"rules": [ … Deep Security FirewallRule objects … ],
//	            "ipLists": [ … ], "macLists": [ … ], "portLists": [ … ]},
//	    "options": {"stateful": false},
//	    "packet": "in tcp 10.0.0.5:40000 > 10.0.0.1:22 flags S",
//	    "verdict": "pass",
//	    "reason": "rule",
//	    "ruleID": 2,
//	    "logged": [7],
//	    "events": 1,
//	    "kernel": true
//	  }
//	]
//
// verdict is "pass" or "drop"; reason one of "rule", "out-of-allowed-policy",
// "invalid-state", "stateful", "default"; ruleID the deciding rule's ID
// (absent or 0 when no rule decided); logged the IDs of the log-only rules
// matched, in evaluation order; events how many events the packet makes.
// Unknown keys are errors.
//
// Kernel cases use only IPv4 or IPv6 TCP, UDP, ICMP and ICMPv6 packets and
// no MAC condition, and keep to one address plan, so that a test can send
// them from a peer network namespace: the host under test is 10.0.0.1 and
// 2001:db8::1, its peers are other addresses in 10.0.0.0/24 and
// 2001:db8::/64. A kernel case's packet may carry a state other than new:
// the replay must first open the connection (or skip the case).
type Case struct {
	Name    string  `json:"name"`
	Note    string  `json:"note,omitempty"`
	Set     Set     `json:"set"`
	Options Options `json:"options"`
	Packet  string  `json:"packet"`
	Verdict string  `json:"verdict"`
	Reason  string  `json:"reason"`
	RuleID  int     `json:"ruleID,omitempty"`
	Logged  []int   `json:"logged,omitempty"`
	Events  int     `json:"events"`
	Kernel  bool    `json:"kernel"`
}

// LoadCases reads the cases of one JSON file or, when path is a folder, of
// every *.json file in it (in name order). Names must be unique.
func LoadCases(path string) ([]Case, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	files := []string{path}
	if st.IsDir() {
		if files, err = filepath.Glob(filepath.Join(path, "*.json")); err != nil {
			return nil, err
		}
		slices.Sort(files)
	}
	var all []Case
	names := map[string]string{}
	for _, f := range files {
		cs, err := readCases(f)
		if err != nil {
			return nil, err
		}
		for _, c := range cs {
			if prev, ok := names[c.Name]; ok {
				return nil, fmt.Errorf("%s: case %q: name already used in %s", f, c.Name, prev)
			}
			names[c.Name] = f
		}
		all = append(all, cs...)
	}
	return all, nil
}

func readCases(path string) ([]Case, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%s: want a JSON array of cases: %w", path, err)
	}
	out := make([]Case, 0, len(raw))
	for i, m := range raw {
		var c Case
		dec := json.NewDecoder(bytes.NewReader(m))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			return nil, fmt.Errorf("%s: case %d: %w", path, i+1, err)
		}
		if err := c.check(); err != nil {
			return nil, fmt.Errorf("%s: case %d %q: %w", path, i+1, c.Name, err)
		}
		out = append(out, c)
	}
	return out, nil
}

func (c *Case) check() error {
	switch {
	case strings.TrimSpace(c.Name) == "":
		return errors.New("name is required")
	case c.Packet == "":
		return errors.New("packet is required")
	case c.Verdict != Pass && c.Verdict != Drop:
		return fmt.Errorf("verdict %q: want pass or drop", c.Verdict)
	case c.Events < 0:
		return errors.New("events must not be negative")
	}
	switch c.Reason {
	case ReasonRule:
		if c.RuleID == 0 {
			return errors.New(`reason "rule" needs the deciding ruleID`)
		}
	case ReasonOutOfPolicy, ReasonInvalid, ReasonStateful, ReasonDefault:
		if c.RuleID != 0 {
			return fmt.Errorf("reason %q: no rule decides, so ruleID must be absent", c.Reason)
		}
	default:
		return fmt.Errorf("reason %q: want rule, out-of-allowed-policy, invalid-state, stateful or default", c.Reason)
	}
	return nil
}

// Evaluate compiles the case's set, parses its packet and evaluates it.
func (c *Case) Evaluate() (Packet, Decision, error) {
	p, err := Compile(&c.Set)
	if err != nil {
		return Packet{}, Decision{}, fmt.Errorf("compile: %w", err)
	}
	pkt, err := ParsePacket(c.Packet)
	if err != nil {
		return Packet{}, Decision{}, err
	}
	return pkt, Evaluate(p, c.Options, pkt), nil
}

// Check returns how d differs from what the case expects, one line per
// difference, or nil.
func (c *Case) Check(d Decision) error {
	var diffs []string
	if d.Verdict != c.Verdict {
		diffs = append(diffs, fmt.Sprintf("verdict %s, want %s", d.Verdict, c.Verdict))
	}
	if d.Reason != c.Reason {
		diffs = append(diffs, fmt.Sprintf("reason %s, want %s", d.Reason, c.Reason))
	}
	id := 0
	if d.Rule != nil {
		id = d.Rule.ID
	}
	if id != c.RuleID {
		diffs = append(diffs, fmt.Sprintf("rule %d, want %d", id, c.RuleID))
	}
	var logged []int
	for _, r := range d.Logged {
		logged = append(logged, r.ID)
	}
	if !slices.Equal(logged, c.Logged) {
		diffs = append(diffs, fmt.Sprintf("logged %v, want %v", logged, c.Logged))
	}
	if len(d.Events) != c.Events {
		diffs = append(diffs, fmt.Sprintf("%d events, want %d", len(d.Events), c.Events))
	}
	if diffs == nil {
		return nil
	}
	return errors.New(strings.Join(diffs, "; "))
}
