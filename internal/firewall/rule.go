// Package firewall provides Yagura's host firewall: the rule and list model
// (in the field names of Deep Security's REST API, so exported rules import
// unchanged), their validation, the normalised [Program] that the evaluator
// and the nftables compiler both consume, and the evaluator itself.
//
// The package imports only the standard library: it is linked into the agent.
package firewall

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Actions, as in Deep Security.
const (
	ActionAllow      = "allow"
	ActionDeny       = "deny"
	ActionForceAllow = "force-allow"
	ActionBypass     = "bypass"
	ActionLogOnly    = "log-only"
)

// Directions.
const (
	Incoming = "incoming"
	Outgoing = "outgoing"
)

// Address, MAC and port forms ("…IPType", "…MACType", "…PortType").
const (
	TypeAny      = "any"
	TypeSingle   = "single"
	TypeMasked   = "masked-ip"
	TypeRange    = "range"
	TypeMultiple = "multiple"
	TypeIPList   = "ip-list"
	TypeMACList  = "mac-list"
	TypePortList = "port-list"
)

// Rule is a firewall rule in the JSON form of Deep Security's REST API
// (FirewallRule). Fields Yagura does not enforce (schedules, contexts) are
// accepted only when empty, so a rule never silently means less than it did.
type Rule struct {
	ID          int    `json:"ID,omitempty"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Action      string `json:"action"`
	Priority    string `json:"priority"`
	Direction   string `json:"direction"`

	FrameType   string `json:"frameType,omitempty"`
	FrameNumber int    `json:"frameNumber,omitempty"`
	FrameNot    bool   `json:"frameNot,omitempty"`

	Protocol       string `json:"protocol,omitempty"`
	ProtocolNumber int    `json:"protocolNumber,omitempty"`
	ProtocolNot    bool   `json:"protocolNot,omitempty"`

	SourceIPType      string   `json:"sourceIPType,omitempty"`
	SourceIPValue     string   `json:"sourceIPValue,omitempty"`
	SourceIPMask      string   `json:"sourceIPMask,omitempty"`
	SourceIPRangeFrom string   `json:"sourceIPRangeFrom,omitempty"`
	SourceIPRangeTo   string   `json:"sourceIPRangeTo,omitempty"`
	SourceIPMultiple  []string `json:"sourceIPMultiple,omitempty"`
	SourceIPListID    int      `json:"sourceIPListID,omitempty"`
	SourceIPNot       bool     `json:"sourceIPNot,omitempty"`

	SourceMACType     string   `json:"sourceMACType,omitempty"`
	SourceMACValue    string   `json:"sourceMACValue,omitempty"`
	SourceMACMultiple []string `json:"sourceMACMultiple,omitempty"`
	SourceMACListID   int      `json:"sourceMACListID,omitempty"`
	SourceMACNot      bool     `json:"sourceMACNot,omitempty"`

	SourcePortType     string   `json:"sourcePortType,omitempty"`
	SourcePortMultiple []string `json:"sourcePortMultiple,omitempty"`
	SourcePortListID   int      `json:"sourcePortListID,omitempty"`
	SourcePortNot      bool     `json:"sourcePortNot,omitempty"`

	DestinationIPType      string   `json:"destinationIPType,omitempty"`
	DestinationIPValue     string   `json:"destinationIPValue,omitempty"`
	DestinationIPMask      string   `json:"destinationIPMask,omitempty"`
	DestinationIPRangeFrom string   `json:"destinationIPRangeFrom,omitempty"`
	DestinationIPRangeTo   string   `json:"destinationIPRangeTo,omitempty"`
	DestinationIPMultiple  []string `json:"destinationIPMultiple,omitempty"`
	DestinationIPListID    int      `json:"destinationIPListID,omitempty"`
	DestinationIPNot       bool     `json:"destinationIPNot,omitempty"`

	DestinationMACType     string   `json:"destinationMACType,omitempty"`
	DestinationMACValue    string   `json:"destinationMACValue,omitempty"`
	DestinationMACMultiple []string `json:"destinationMACMultiple,omitempty"`
	DestinationMACListID   int      `json:"destinationMACListID,omitempty"`
	DestinationMACNot      bool     `json:"destinationMACNot,omitempty"`

	DestinationPortType     string   `json:"destinationPortType,omitempty"`
	DestinationPortMultiple []string `json:"destinationPortMultiple,omitempty"`
	DestinationPortListID   int      `json:"destinationPortListID,omitempty"`
	DestinationPortNot      bool     `json:"destinationPortNot,omitempty"`

	// AnyFlags: any TCP flags match (Deep Security's default). When false,
	// TCPFlags lists flags that must all be set.
	AnyFlags bool     `json:"anyFlags,omitempty"`
	TCPFlags []string `json:"tcpflags,omitempty"`
	TCPNot   bool     `json:"TCPNot,omitempty"`

	// ICMPType and ICMPCode are absent for "any".
	ICMPType *int `json:"ICMPType,omitempty"`
	ICMPCode *int `json:"ICMPCode,omitempty"`
	ICMPNot  bool `json:"ICMPNot,omitempty"`

	LogDisabled       bool `json:"logDisabled,omitempty"`
	IncludePacketData bool `json:"includePacketData,omitempty"`
	AlertEnabled      bool `json:"alertEnabled,omitempty"`

	// Accepted for import compatibility; must be zero.
	ScheduleID int `json:"scheduleID,omitempty"`
	ContextID  int `json:"contextID,omitempty"`
}

// IPList is a reusable list of addresses: single (10.0.0.1, 2001:db8::1),
// CIDR (10.0.0.0/8), masked (10.0.0.0/255.0.0.0) or range (10.0.0.1-10.0.0.9)
// entries, one per item. Text after '#' is a comment, as in Deep Security.
type IPList struct {
	ID          int      `json:"ID,omitempty"`
	Name        string   `json:"name"`
	Description string   `json:"description,omitempty"`
	Items       []string `json:"items"`
}

// MACList is a reusable list of MAC addresses (aa:bb:cc:dd:ee:ff or
// aa-bb-cc-dd-ee-ff).
type MACList struct {
	ID          int      `json:"ID,omitempty"`
	Name        string   `json:"name"`
	Description string   `json:"description,omitempty"`
	Items       []string `json:"items"`
}

// PortList is a reusable list of ports: single (22) or range (5900-5910).
type PortList struct {
	ID          int      `json:"ID,omitempty"`
	Name        string   `json:"name"`
	Description string   `json:"description,omitempty"`
	Items       []string `json:"items"`
}

// FieldError is a validation error that names the field (and the entry
// within it) that is wrong.
type FieldError struct {
	Field string // JSON field, e.g. "sourceIPMultiple[2]"
	Value string
	Msg   string
}

func (e *FieldError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("%s: %s", e.Field, e.Msg)
	}
	return fmt.Sprintf("%s: %.80q %s", e.Field, e.Value, e.Msg)
}

func fieldErr(field, value, format string, args ...any) error {
	return &FieldError{Field: field, Value: value, Msg: fmt.Sprintf(format, args...)}
}

// Priority returns the rule's priority as a number (0 lowest, 4 highest).
func (r *Rule) PriorityLevel() int {
	if len(r.Priority) == 1 && r.Priority[0] >= '0' && r.Priority[0] <= '4' {
		return int(r.Priority[0] - '0')
	}
	return 0
}

// Normalize fills Deep Security's defaults for omitted fields, so a stored
// rule always spells every form out.
func (r *Rule) Normalize() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&r.Priority, "0")
	def(&r.FrameType, "ip")
	def(&r.Protocol, "any")
	for _, s := range []*string{&r.SourceIPType, &r.DestinationIPType, &r.SourceMACType, &r.DestinationMACType, &r.SourcePortType, &r.DestinationPortType} {
		def(s, TypeAny)
	}
	if len(r.TCPFlags) == 0 {
		r.AnyFlags = true
	}
}

// DecodeRules reads rules as Deep Security exports them: a JSON array of
// rules, one rule object, or {"firewallRules": [...]}. Unknown fields are
// errors that name the rule and the field.
func DecodeRules(data []byte) ([]Rule, error) {
	trimmed := strings.TrimSpace(string(data))
	switch {
	case trimmed == "":
		return nil, errors.New("no rules: the input is empty")
	case trimmed[0] == '[':
		var raw []json.RawMessage
		if err := json.Unmarshal(data, &raw); err != nil {
			return nil, fmt.Errorf("rules: %w", err)
		}
		return decodeEach(raw)
	case trimmed[0] == '{':
		var wrapper map[string]json.RawMessage
		if err := json.Unmarshal(data, &wrapper); err != nil {
			return nil, fmt.Errorf("rules: %w", err)
		}
		if list, ok := wrapper["firewallRules"]; ok {
			var raw []json.RawMessage
			if err := json.Unmarshal(list, &raw); err != nil {
				return nil, fmt.Errorf("firewallRules: %w", err)
			}
			return decodeEach(raw)
		}
		return decodeEach([]json.RawMessage{data})
	}
	return nil, errors.New(`rules: want a JSON array, a rule object or {"firewallRules": [...]}`)
}

func decodeEach(raw []json.RawMessage) ([]Rule, error) {
	rules := make([]Rule, 0, len(raw))
	for i, m := range raw {
		r, err := DecodeRule(m)
		if err != nil {
			return nil, fmt.Errorf("rule %d: %w", i+1, err)
		}
		rules = append(rules, r)
	}
	return rules, nil
}

// DecodeRule reads one rule strictly.
func DecodeRule(data []byte) (Rule, error) {
	var r Rule
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return r, err
	}
	return r, nil
}

// Validate checks a rule on its own. References to lists are checked when a
// [Set] is compiled, because lists live apart from rules.
func (r *Rule) Validate() error {
	if strings.TrimSpace(r.Name) == "" {
		return fieldErr("name", "", "is required")
	}
	if len(r.Name) > 255 {
		return fieldErr("name", "", "is longer than 255 bytes")
	}
	p := r.Priority
	if p == "" {
		p = "0"
	}
	if len(p) != 1 || p[0] < '0' || p[0] > '4' {
		return fieldErr("priority", r.Priority, `must be "0" (lowest) to "4" (highest)`)
	}
	switch r.Action {
	case ActionAllow:
		if p != "0" {
			return fieldErr("priority", r.Priority, `allow rules must have priority "0" (Deep Security's rule)`)
		}
	case ActionLogOnly:
		if p != "4" {
			return fieldErr("priority", r.Priority, `log-only rules must have priority "4" (Deep Security's rule)`)
		}
	case ActionDeny, ActionForceAllow, ActionBypass:
	default:
		return fieldErr("action", r.Action, "must be allow, deny, force-allow, bypass or log-only")
	}
	if r.Direction != Incoming && r.Direction != Outgoing {
		return fieldErr("direction", r.Direction, "must be incoming or outgoing")
	}
	if r.ScheduleID != 0 {
		return fieldErr("scheduleID", fmt.Sprint(r.ScheduleID), "schedules are not supported: remove the field to enforce the rule at all times")
	}
	if r.ContextID != 0 {
		return fieldErr("contextID", fmt.Sprint(r.ContextID), "contexts are not supported: remove the field to enforce the rule everywhere")
	}
	if _, err := r.frame(); err != nil {
		return err
	}
	if _, err := r.protocol(); err != nil {
		return err
	}
	if len(r.TCPFlags) > 0 && r.AnyFlags {
		return fieldErr("anyFlags", "true", "cannot be set together with tcpflags")
	}
	for i, f := range r.TCPFlags {
		if _, ok := tcpFlagBits[f]; !ok {
			return fieldErr(fmt.Sprintf("tcpflags[%d]", i), f, "must be fin, syn, rst, psh, ack or urg")
		}
	}
	if r.ICMPType != nil && (*r.ICMPType < 0 || *r.ICMPType > 255) {
		return fieldErr("ICMPType", fmt.Sprint(*r.ICMPType), "must be 0 to 255")
	}
	if r.ICMPCode != nil && (*r.ICMPCode < 0 || *r.ICMPCode > 255) {
		return fieldErr("ICMPCode", fmt.Sprint(*r.ICMPCode), "must be 0 to 255")
	}
	if r.ICMPCode != nil && r.ICMPType == nil {
		return fieldErr("ICMPCode", fmt.Sprint(*r.ICMPCode), "needs ICMPType")
	}
	return nil
}

// References returns the IDs of the lists a rule uses, by kind.
func (r *Rule) References() (ipLists, macLists, portLists []int) {
	if r.SourceIPType == TypeIPList && r.SourceIPListID != 0 {
		ipLists = append(ipLists, r.SourceIPListID)
	}
	if r.DestinationIPType == TypeIPList && r.DestinationIPListID != 0 {
		ipLists = append(ipLists, r.DestinationIPListID)
	}
	if r.SourceMACType == TypeMACList && r.SourceMACListID != 0 {
		macLists = append(macLists, r.SourceMACListID)
	}
	if r.DestinationMACType == TypeMACList && r.DestinationMACListID != 0 {
		macLists = append(macLists, r.DestinationMACListID)
	}
	if r.SourcePortType == TypePortList && r.SourcePortListID != 0 {
		portLists = append(portLists, r.SourcePortListID)
	}
	if r.DestinationPortType == TypePortList && r.DestinationPortListID != 0 {
		portLists = append(portLists, r.DestinationPortListID)
	}
	return slices.Compact(ipLists), slices.Compact(macLists), slices.Compact(portLists)
}
