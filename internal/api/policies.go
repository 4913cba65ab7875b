package api

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/yagura/yagura/internal/policy"
	"github.com/yagura/yagura/internal/rollout"
	"github.com/yagura/yagura/internal/settings"
	"github.com/yagura/yagura/internal/store"
)

// PolicyStore is what the policy operations need from the state store.
type PolicyStore interface {
	CreatePolicy(ctx context.Context, p policy.Policy, now time.Time) (policy.Policy, error)
	GetPolicy(ctx context.Context, id int) (policy.Policy, error)
	ListPolicies(ctx context.Context) ([]policy.Policy, error)
	UpdatePolicy(ctx context.Context, p policy.Policy, ifVersion int64, now time.Time) (policy.Policy, error)
	DeletePolicy(ctx context.Context, id int) error
	SetComputerPolicy(ctx context.Context, id string, cp store.ComputerPolicy) (store.Computer, error)
	ComputerRules(ctx context.Context, id string) (map[int]bool, error)
}

// Rollout is the policy delivery service.
type Rollout interface {
	Refresh(ctx context.Context, force bool) error
	Computer(id string) (*rollout.Resolved, bool)
	Preview(ctx context.Context, policyID int, ov policy.Override) (*rollout.Resolved, error)
}

// changed makes the rollout service recompute effective policies now, so
// the answer to the write and the next read already show them, and online
// agents are woken. A failure is logged: the service retries on its own.
func (a *API) changed(ctx context.Context) {
	if a.d.Rollout == nil {
		return
	}
	if err := a.d.Rollout.Refresh(context.WithoutCancel(ctx), false); err != nil {
		a.d.Log.Error("refresh effective policies after a change; the rollout service retries", "err", err)
	}
}

// Policy is a policy as the API shows it.
type Policy struct {
	ID            int               `json:"id"`
	Name          string            `json:"name"`
	Description   string            `json:"description,omitempty"`
	ParentID      int               `json:"parent_id,omitempty" doc:"The parent policy; 0 or absent: a root of the tree."`
	Settings      map[string]string `json:"settings" doc:"Settings this policy sets; a key that is absent is inherited from the parent (or the manager's default)."`
	AssignedRules []int             `json:"assigned_rules" doc:"Firewall rules this policy assigns (on top of those inherited)."`
	RemovedRules  []int             `json:"removed_rules" doc:"Inherited firewall rules this policy removes."`
	Version       int64             `json:"version"`
	CreatedAt     time.Time         `json:"created_at"`
	UpdatedAt     time.Time         `json:"updated_at"`
}

// PolicyInput creates or replaces a policy.
type PolicyInput struct {
	Name          string            `json:"name" minLength:"1" maxLength:"255"`
	Description   string            `json:"description,omitempty" maxLength:"4096"`
	ParentID      int               `json:"parent_id,omitempty"`
	Settings      map[string]string `json:"settings,omitempty" doc:"Setting key → value; \"inherited\" or absent: take the parent's."`
	AssignedRules []int             `json:"assigned_rules,omitempty"`
	RemovedRules  []int             `json:"removed_rules,omitempty"`
}

func policyOut(p policy.Policy) Policy {
	out := Policy{ID: p.ID, Name: p.Name, Description: p.Description, ParentID: p.ParentID, Settings: p.Settings,
		Version: p.Version, CreatedAt: p.CreatedAt.UTC(), UpdatedAt: p.UpdatedAt.UTC(), AssignedRules: []int{}, RemovedRules: []int{}}
	if out.Settings == nil {
		out.Settings = map[string]string{}
	}
	for _, id := range slices.Sorted(maps.Keys(p.Rules)) {
		if p.Rules[id] {
			out.AssignedRules = append(out.AssignedRules, id)
		} else {
			out.RemovedRules = append(out.RemovedRules, id)
		}
	}
	return out
}

// checkSettings validates policy settings and drops "inherited" values.
func checkSettings(in map[string]string) (map[string]string, error) {
	out := map[string]string{}
	for _, k := range slices.Sorted(maps.Keys(in)) {
		v := strings.TrimSpace(in[k])
		if strings.EqualFold(v, policy.Inherited) {
			continue
		}
		err := policy.CheckValue(k, v, func(key, value string) error {
			_, err := settings.Default().Apply(map[string]string{key: value})
			return err
		})
		if err != nil {
			return nil, huma.Error422UnprocessableEntity("invalid settings", &huma.ErrorDetail{Location: "body.settings." + k, Message: err.Error(), Value: in[k]})
		}
		out[k] = v
	}
	return out, nil
}

func assignments(assigned, removed []int) (map[int]bool, error) {
	m := map[int]bool{}
	for _, id := range assigned {
		m[id] = true
	}
	for _, id := range removed {
		if m[id] {
			return nil, huma.Error422UnprocessableEntity(fmt.Sprintf("rule %d is both assigned and removed", id))
		}
		m[id] = false
	}
	return m, nil
}

func (in *PolicyInput) policy() (policy.Policy, error) {
	s, err := checkSettings(in.Settings)
	if err != nil {
		return policy.Policy{}, err
	}
	r, err := assignments(in.AssignedRules, in.RemovedRules)
	if err != nil {
		return policy.Policy{}, err
	}
	return policy.Policy{Name: strings.TrimSpace(in.Name), Description: in.Description, ParentID: in.ParentID, Settings: s, Rules: r}, nil
}

// policyErr maps store errors of policy writes: invalid references are the
// caller's mistake (422), conflicts say who is in the way (409).
func (a *API) policyErr(what string, err error) error {
	if errors.Is(err, store.ErrInvalid) {
		return huma.Error422UnprocessableEntity(what + ": " + conflictText(err))
	}
	return a.storeErr(what, err)
}

// ResolvedValue is one effective setting with where it came from.
type ResolvedValue struct {
	Value  string `json:"value"`
	Source string `json:"source" doc:"\"default\" (the manager-wide value), \"policy:ID\" (set by that policy) or \"computer\" (the computer's override)."`
}

// EffectivePolicy is a resolved configuration.
type EffectivePolicy struct {
	Fingerprint string                   `json:"fingerprint" doc:"Hash of the canonical form; agents report the one they enforce."`
	Settings    map[string]ResolvedValue `json:"settings"`
	Rules       []ResolvedRule           `json:"rules"`
	// Computer-only fields.
	Reported string `json:"reported_fingerprint,omitempty" doc:"What the agent last reported enforcing."`
	Status   string `json:"status,omitempty" enum:"up-to-date,out-of-date,unknown"`
}

// ResolvedRule is an assigned rule and where the assignment came from.
type ResolvedRule struct {
	ID     int    `json:"id"`
	Name   string `json:"name"`
	Source string `json:"source"`
}

func effectiveOut(r *rollout.Resolved) EffectivePolicy {
	out := EffectivePolicy{Fingerprint: r.Fingerprint, Settings: map[string]ResolvedValue{}, Rules: []ResolvedRule{}}
	for k, v := range r.Effective.Settings {
		out.Settings[k] = ResolvedValue{v.Value, v.Source}
	}
	for _, id := range r.Effective.RuleIDs() {
		out.Rules = append(out.Rules, ResolvedRule{ID: id, Name: r.RuleNames[id], Source: r.Effective.Rules[id]})
	}
	return out
}

type policyOutput struct {
	ETag string `header:"ETag" doc:"Send it back in If-Match to change the policy only if nobody else did meanwhile."`
	Body Policy
}

func (a *API) registerPolicies() {
	tags := []string{"Policies"}
	register(a, PermPoliciesRead, huma.Operation{
		OperationID: "list-policies", Method: http.MethodGet, Path: "/api/v1/policies",
		Summary: "List policies", Tags: tags, Description: "Every policy of the tree, by ID. A policy's parent_id links it to its parent.",
	}, func(ctx context.Context, _ *struct{}) (*struct {
		Body struct {
			Items []Policy `json:"items"`
		}
	}, error) {
		ps, err := a.d.Policies.ListPolicies(ctx)
		if err != nil {
			return nil, a.storeErr("policies", err)
		}
		out := &struct {
			Body struct {
				Items []Policy `json:"items"`
			}
		}{}
		out.Body.Items = []Policy{}
		for _, p := range ps {
			out.Body.Items = append(out.Body.Items, policyOut(p))
		}
		return out, nil
	})
	register(a, PermPoliciesWrite, huma.Operation{
		OperationID: "create-policy", Method: http.MethodPost, Path: "/api/v1/policies", DefaultStatus: http.StatusCreated,
		Summary: "Create a policy", Tags: tags,
		Description: "Settings not given are inherited from the parent policy (or, for a root, from the manager's settings). Keys: " + strings.Join(policy.Keys(), ", ") + ".",
	}, func(ctx context.Context, in *struct{ Body PolicyInput }) (*policyOutput, error) {
		p, err := in.Body.policy()
		if err != nil {
			return nil, err
		}
		created, err := a.d.Policies.CreatePolicy(ctx, p, a.d.Now())
		if err != nil {
			return nil, a.policyErr("policy", err)
		}
		a.changed(ctx)
		note(ctx, "policy", map[string]any{"id": created.ID, "name": created.Name})
		return &policyOutput{ETag: etag(strconv.FormatInt(created.Version, 10)), Body: policyOut(created)}, nil
	})
	register(a, PermPoliciesRead, huma.Operation{
		OperationID: "get-policy", Method: http.MethodGet, Path: "/api/v1/policies/{id}",
		Summary: "Show a policy", Tags: tags,
	}, func(ctx context.Context, in *struct {
		ID int `path:"id"`
	}) (*policyOutput, error) {
		p, err := a.d.Policies.GetPolicy(ctx, in.ID)
		if err != nil {
			return nil, a.storeErr(fmt.Sprintf("policy %d", in.ID), err)
		}
		return &policyOutput{ETag: etag(strconv.FormatInt(p.Version, 10)), Body: policyOut(p)}, nil
	})
	register(a, PermPoliciesWrite, huma.Operation{
		OperationID: "update-policy", Method: http.MethodPut, Path: "/api/v1/policies/{id}",
		Summary: "Replace a policy", Tags: tags,
		Description: "Replaces name, parent, settings and rule assignments. With If-Match (the ETag of GET), the change is refused with 412 if the policy changed meanwhile. Online agents get the change within seconds.",
	}, func(ctx context.Context, in *struct {
		ID      int    `path:"id"`
		IfMatch string `header:"If-Match" doc:"ETag from GET /api/v1/policies/{id}."`
		Body    PolicyInput
	}) (*policyOutput, error) {
		p, err := in.Body.policy()
		if err != nil {
			return nil, err
		}
		p.ID = in.ID
		var want int64
		if tag := strings.Trim(strings.TrimPrefix(strings.TrimSpace(in.IfMatch), "W/"), `"`); tag != "" && tag != "*" {
			if want, err = strconv.ParseInt(tag, 10, 64); err != nil || want < 1 {
				return nil, huma.Error400BadRequest("If-Match: want the ETag of GET /api/v1/policies/{id}, such as \"3\"")
			}
		}
		upd, err := a.d.Policies.UpdatePolicy(ctx, p, want, a.d.Now())
		if errors.Is(err, store.ErrConflict) && want > 0 && strings.Contains(err.Error(), "version") {
			return nil, huma.Error412PreconditionFailed(fmt.Sprintf("policy %d changed since you read it (If-Match %s); read it again and reapply your change", in.ID, in.IfMatch))
		}
		if err != nil {
			return nil, a.policyErr(fmt.Sprintf("policy %d", in.ID), err)
		}
		a.changed(ctx)
		note(ctx, "policy", map[string]any{"id": upd.ID, "version": upd.Version})
		return &policyOutput{ETag: etag(strconv.FormatInt(upd.Version, 10)), Body: policyOut(upd)}, nil
	})
	register(a, PermPoliciesWrite, huma.Operation{
		OperationID: "delete-policy", Method: http.MethodDelete, Path: "/api/v1/policies/{id}", DefaultStatus: http.StatusNoContent,
		Summary: "Delete a policy", Tags: tags, Description: "Refused (409) while child policies or computers use it; the error names them.",
	}, func(ctx context.Context, in *struct {
		ID int `path:"id"`
	}) (*struct{}, error) {
		if err := a.d.Policies.DeletePolicy(ctx, in.ID); err != nil {
			return nil, a.storeErr(fmt.Sprintf("policy %d", in.ID), err)
		}
		a.changed(ctx)
		note(ctx, "policy", map[string]any{"id": in.ID, "deleted": true})
		return nil, nil
	})
	register(a, PermPoliciesRead, huma.Operation{
		OperationID: "get-effective-policy", Method: http.MethodGet, Path: "/api/v1/policies/{id}/effective",
		Summary: "Show a policy's effective configuration", Tags: tags,
		Description: "The policy's settings and rules resolved through its ancestors, each with its source.",
	}, func(ctx context.Context, in *struct {
		ID int `path:"id"`
	}) (*struct{ Body EffectivePolicy }, error) {
		if _, err := a.d.Policies.GetPolicy(ctx, in.ID); err != nil {
			return nil, a.storeErr(fmt.Sprintf("policy %d", in.ID), err)
		}
		r, err := a.d.Rollout.Preview(ctx, in.ID, policy.Override{})
		if err != nil {
			return nil, a.storeErr(fmt.Sprintf("policy %d", in.ID), err)
		}
		return &struct{ Body EffectivePolicy }{effectiveOut(r)}, nil
	})
	register(a, PermComputersRead, huma.Operation{
		OperationID: "get-computer-policy", Method: http.MethodGet, Path: "/api/v1/computers/{id}/policy",
		Summary: "Show a computer's effective configuration", Tags: []string{"Computers"},
		Description: "Resolved from its policy's ancestors and its own overrides, each value with its source, and whether the agent enforces it.",
	}, func(ctx context.Context, in *struct {
		ID string `path:"id"`
	}) (*struct{ Body EffectivePolicy }, error) {
		if _, err := a.d.Store.GetComputer(ctx, in.ID); err != nil {
			return nil, a.storeErr("computer", err)
		}
		r, ok := a.d.Rollout.Computer(in.ID)
		if !ok {
			return nil, huma.Error404NotFound("computer " + in.ID + " has no effective policy (deactivated, or its policy cannot be resolved: see the manager log)")
		}
		out := effectiveOut(r)
		if l, ok := a.d.Fleet.Live(in.ID, a.d.Now()); ok {
			out.Reported, out.Status = l.PolicyReported, l.PolicyStatus()
		}
		return &struct{ Body EffectivePolicy }{out}, nil
	})
	register(a, PermComputersWrite, huma.Operation{
		OperationID: "update-computer-policy", Method: http.MethodPut, Path: "/api/v1/computers/{id}/policy",
		Summary: "Set a computer's policy and overrides", Tags: []string{"Computers"},
		Description: "Replaces the computer's policy (0: the default policy), its setting overrides and its rule assignment overrides.",
	}, func(ctx context.Context, in *struct {
		ID   string `path:"id"`
		Body struct {
			PolicyID      int               `json:"policy_id"`
			Settings      map[string]string `json:"settings,omitempty" doc:"Overrides; \"inherited\" or absent: the policy's value."`
			AssignedRules []int             `json:"assigned_rules,omitempty"`
			RemovedRules  []int             `json:"removed_rules,omitempty"`
		}
	}) (*struct{ Body EffectivePolicy }, error) {
		s, err := checkSettings(in.Body.Settings)
		if err != nil {
			return nil, err
		}
		rules, err := assignments(in.Body.AssignedRules, in.Body.RemovedRules)
		if err != nil {
			return nil, err
		}
		// The communication override predates policies and keeps its
		// column (and its fleet fast path).
		comm := s[policy.KeyCommunication]
		delete(s, policy.KeyCommunication)
		c, err := a.d.Policies.SetComputerPolicy(ctx, in.ID, store.ComputerPolicy{PolicyID: in.Body.PolicyID, Settings: s, Rules: rules, Communication: comm})
		if err != nil {
			return nil, a.policyErr("computer", err)
		}
		a.d.Fleet.Add(c)
		a.changed(ctx)
		note(ctx, "computer-policy", map[string]any{"id": in.ID, "policy_id": in.Body.PolicyID})
		r, err := a.d.Rollout.Preview(ctx, c.PolicyID, rollout.Override(c, rules))
		if err != nil {
			return nil, a.storeErr("computer", err)
		}
		return &struct{ Body EffectivePolicy }{effectiveOut(r)}, nil
	})
}
