package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/yagura/yagura/internal/firewall"
	"github.com/yagura/yagura/internal/store"
)

// FirewallStore is what the firewall operations need from the state store.
type FirewallStore interface {
	CreateRule(ctx context.Context, r firewall.Rule) (firewall.Rule, error)
	GetRule(ctx context.Context, id int) (firewall.Rule, error)
	ListRules(ctx context.Context) ([]firewall.Rule, error)
	UpdateRule(ctx context.Context, r firewall.Rule) (firewall.Rule, error)
	DeleteRule(ctx context.Context, id int) error
	ImportFirewall(ctx context.Context, in store.FirewallImport) (store.FirewallImportResult, error)
	ExportFirewall(ctx context.Context, ruleIDs []int) (store.FirewallExport, error)
	CreateList(ctx context.Context, l store.List) (store.List, error)
	GetList(ctx context.Context, kind store.ListKind, id int) (store.List, error)
	ListLists(ctx context.Context, kind store.ListKind) ([]store.List, error)
	UpdateList(ctx context.Context, l store.List) (store.List, error)
	DeleteList(ctx context.Context, kind store.ListKind, id int) error
}

// FirewallRule is a firewall rule in the JSON form of Deep Security's REST
// API (FirewallRule), so rules exported from Deep Security are accepted
// as they are.
type FirewallRule firewall.Rule

// FirewallList is an IP, MAC or port list in the JSON form of Deep
// Security's REST API (IPList, MACList, PortList).
type FirewallList struct {
	ID          int      `json:"ID,omitempty" readOnly:"true" doc:"Given by the manager."`
	Name        string   `json:"name" minLength:"1" maxLength:"255"`
	Description string   `json:"description,omitempty" maxLength:"4000"`
	Items       []string `json:"items" required:"false" maxItems:"100000" doc:"One entry each. IP: 10.0.0.1, 10.0.0.0/8, 10.0.0.0/255.0.0.0, 10.0.0.1-10.0.0.9 (IPv6 alike); MAC: 00:11:22:33:44:55; port: 22 or 5900-5910. Text after # is a comment."`
}

// FirewallExport is rules with the lists they use, as Deep Security's REST
// API shows them (/api/firewallrules, /api/iplists, /api/maclists and
// /api/portlists in one document).
type FirewallExport struct {
	FirewallRules []FirewallRule `json:"firewallRules"`
	IPLists       []FirewallList `json:"ipLists"`
	MACLists      []FirewallList `json:"macLists"`
	PortLists     []FirewallList `json:"portLists"`
}

// FirewallImportResult maps the IDs of an imported file to the new ones.
// Deep Security numbers each list kind on its own, hence one map per kind.
type FirewallImportResult struct {
	FirewallRules map[string]int `json:"firewallRules" doc:"Rule ID in the file → new rule ID."`
	IPLists       map[string]int `json:"ipLists" doc:"IP list ID in the file → new list ID."`
	MACLists      map[string]int `json:"macLists" doc:"MAC list ID in the file → new list ID."`
	PortLists     map[string]int `json:"portLists" doc:"Port list ID in the file → new list ID."`
}

func firewallList(l store.List) FirewallList {
	items := l.Items
	if items == nil {
		items = []string{}
	}
	return FirewallList{ID: l.ID, Name: l.Name, Description: l.Description, Items: items}
}

func firewallLists[T any](ls []T, conv func(T) FirewallList) []FirewallList {
	out := make([]FirewallList, len(ls))
	for i, l := range ls {
		out[i] = conv(l)
	}
	return out
}

func firewallExport(e store.FirewallExport) FirewallExport {
	out := FirewallExport{FirewallRules: make([]FirewallRule, len(e.Rules))}
	for i, r := range e.Rules {
		out.FirewallRules[i] = FirewallRule(r)
	}
	out.IPLists = firewallLists(e.IPLists, func(l firewall.IPList) FirewallList {
		return firewallList(store.List{ID: l.ID, Name: l.Name, Description: l.Description, Items: l.Items})
	})
	out.MACLists = firewallLists(e.MACLists, func(l firewall.MACList) FirewallList {
		return firewallList(store.List{ID: l.ID, Name: l.Name, Description: l.Description, Items: l.Items})
	})
	out.PortLists = firewallLists(e.PortLists, func(l firewall.PortList) FirewallList {
		return firewallList(store.List{ID: l.ID, Name: l.Name, Description: l.Description, Items: l.Items})
	})
	return out
}

func idMap(m map[int]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[strconv.Itoa(k)] = v
	}
	return out
}

// decodeError is a request body that cannot be read, with where.
type decodeError struct {
	location string // "body.firewallRules[2]"
	err      error
}

func (e *decodeError) Error() string { return e.location + ": " + e.err.Error() }

// decodeFirewallImport reads an import body: rules as DecodeRules takes
// them (a JSON array of rules, one rule, or {"firewallRules": [...]}), or
// a document that also holds lists ({"firewallRules", "ipLists",
// "macLists", "portLists"}). Unknown fields are errors that say where.
func decodeFirewallImport(data []byte) (store.FirewallImport, error) {
	var in store.FirewallImport
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return in, &decodeError{"body", errors.New("empty: want firewall rules in Deep Security's JSON form")}
	}
	switch trimmed[0] {
	case '[':
		rules, err := decodeRules(data, "body")
		in.Rules = rules
		return in, err
	case '{':
	default:
		return in, &decodeError{"body", errors.New(`want a JSON array of rules, a rule object, or {"firewallRules": [...], "ipLists": [...], "macLists": [...], "portLists": [...]}`)}
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(data, &doc); err != nil {
		return in, &decodeError{"body", err}
	}
	isDoc := false
	for _, k := range []string{"firewallRules", "ipLists", "macLists", "portLists"} {
		if _, ok := doc[k]; ok {
			isDoc = true
		}
	}
	if !isDoc {
		r, err := firewall.DecodeRule(data)
		if err != nil {
			return in, &decodeError{"body", err}
		}
		in.Rules = []firewall.Rule{r}
		return in, nil
	}
	for _, k := range slices.Sorted(maps.Keys(doc)) {
		var err error
		switch k {
		case "firewallRules":
			in.Rules, err = decodeRules(doc[k], "body.firewallRules")
		case "ipLists":
			in.IPLists, err = decodeLists[firewall.IPList](doc[k], "body.ipLists")
		case "macLists":
			in.MACLists, err = decodeLists[firewall.MACList](doc[k], "body.macLists")
		case "portLists":
			in.PortLists, err = decodeLists[firewall.PortList](doc[k], "body.portLists")
		default:
			err = &decodeError{"body." + k, errors.New(`unknown field: want firewallRules, ipLists, macLists or portLists`)}
		}
		if err != nil {
			return in, err
		}
	}
	return in, nil
}

func decodeArray(data []byte, at string) ([]json.RawMessage, error) {
	var raw []json.RawMessage
	if bytes.Equal(bytes.TrimSpace(data), []byte("null")) {
		return nil, nil
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, &decodeError{at, fmt.Errorf("want a JSON array: %w", err)}
	}
	return raw, nil
}

func decodeRules(data []byte, at string) ([]firewall.Rule, error) {
	raw, err := decodeArray(data, at)
	if err != nil {
		return nil, err
	}
	out := make([]firewall.Rule, 0, len(raw))
	for i, m := range raw {
		r, err := firewall.DecodeRule(m)
		if err != nil {
			return nil, &decodeError{fmt.Sprintf("%s[%d]", at, i), err}
		}
		out = append(out, r)
	}
	return out, nil
}

func decodeLists[T any](data []byte, at string) ([]T, error) {
	raw, err := decodeArray(data, at)
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(raw))
	for i, m := range raw {
		var l T
		dec := json.NewDecoder(bytes.NewReader(m))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			return nil, &decodeError{fmt.Sprintf("%s[%d]", at, i), err}
		}
		out = append(out, l)
	}
	return out, nil
}

// decodeRuleBody reads one rule strictly.
func decodeRuleBody(data []byte) (firewall.Rule, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return firewall.Rule{}, huma.Error400BadRequest("want one rule object in Deep Security's JSON form; to add several rules, POST them to /api/v1/firewall/rules/import")
	}
	r, err := firewall.DecodeRule(data)
	if err != nil {
		return r, huma.Error400BadRequest("invalid firewall rule", &huma.ErrorDetail{Location: "body", Message: err.Error()})
	}
	return r, nil
}

// firewallErr turns store errors into problems: invalid input names the
// field, a refused delete says what still uses the rule or list.
func (a *API) firewallErr(what string, invalidStatus int, err error) error {
	var fe *firewall.FieldError
	switch {
	case errors.Is(err, store.ErrInvalid) && errors.As(err, &fe):
		// The store made this text: it holds no driver error.
		d := &huma.ErrorDetail{Location: "body." + fe.Field, Message: fe.Msg}
		if fe.Value != "" {
			d.Value = fe.Value
		}
		return huma.NewError(invalidStatus, strings.TrimSuffix(err.Error(), ": "+fe.Error()), d)
	case errors.Is(err, store.ErrConflict):
		return huma.Error409Conflict(conflictText(err))
	}
	return a.storeErr(what, err)
}

type rulePath struct {
	ID int `path:"id" minimum:"1" doc:"Rule ID."`
}

type listIDPath struct {
	Kind string `path:"kind" enum:"ip,mac,port" doc:"IP, MAC or port list."`
	ID   int    `path:"id" minimum:"1" doc:"List ID."`
}

// ruleBody is a body the handler decodes itself, strictly and in the
// order Deep Security's fields need; huma only reads it.
type ruleBody struct {
	RawBody []byte
}

type ruleOne struct{ Body FirewallRule }

type listOne struct{ Body FirewallList }

// registerRaw registers an operation whose JSON body (schema s, for the
// document) the handler decodes itself from RawBody: huma neither checks
// nor parses it, so a malformed body is the handler's 400 and unknown
// fields are named as Deep Security's decoder names them.
func registerRaw[I, O any](a *API, perm string, s *huma.Schema, desc string, maxBytes int64, op huma.Operation, h func(context.Context, *I) (*O, error)) {
	rb := &huma.RequestBody{Required: true, Description: desc, Content: map[string]*huma.MediaType{"application/json": {Schema: s}}}
	op.RequestBody, op.SkipValidateBody = rb, true
	op.MaxBodyBytes, op.BodyReadTimeout = maxBytes, time.Minute
	register(a, perm, op, h)
	// huma adds RawBody's own media type; the body is JSON only.
	delete(rb.Content, "application/octet-stream")
}

func (a *API) registerFirewall() {
	reg := a.api.OpenAPI().Components.Schemas
	ruleSchema := reg.Schema(reflect.TypeFor[FirewallRule](), true, "FirewallRule")
	exportSchema := reg.Schema(reflect.TypeFor[FirewallExport](), true, "FirewallExport")
	tags := []string{"Firewall"}

	register(a, PermRulesRead, huma.Operation{
		OperationID: "list-firewall-rules", Method: http.MethodGet, Path: "/api/v1/firewall/rules",
		Summary: "List firewall rules", Tags: tags, Description: "By ID, in Deep Security's JSON form.",
	}, func(ctx context.Context, in *struct {
		Search string `query:"q" maxLength:"255" doc:"Only rules whose name contains this (any case)."`
		PageQuery
	}) (*struct {
		Body struct {
			Items      []FirewallRule `json:"items"`
			NextCursor string         `json:"next_cursor,omitempty"`
		}
	}, error) {
		rs, err := a.d.Store.ListRules(ctx)
		if err != nil {
			return nil, a.storeErr("firewall rules", err)
		}
		out := &struct {
			Body struct {
				Items      []FirewallRule `json:"items"`
				NextCursor string         `json:"next_cursor,omitempty"`
			}
		}{}
		out.Body.Items = make([]FirewallRule, 0, len(rs))
		q := strings.ToLower(in.Search)
		for _, r := range rs {
			if q == "" || strings.Contains(strings.ToLower(r.Name), q) {
				out.Body.Items = append(out.Body.Items, FirewallRule(r))
			}
		}
		out.Body.Items, out.Body.NextCursor, err = page(out.Body.Items, in.PageQuery)
		return out, err
	})
	registerRaw(a, PermRulesWrite, ruleSchema, "A firewall rule (its ID, if any, is ignored).", 1<<20, huma.Operation{
		OperationID: "create-firewall-rule", Method: http.MethodPost, Path: "/api/v1/firewall/rules",
		Summary: "Create a firewall rule", Tags: tags, DefaultStatus: http.StatusCreated,
		Description: "The body is one rule in Deep Security's JSON form; an unknown field is refused (400) with its name. " +
			"Omitted fields take Deep Security's defaults. An invalid rule, or one naming a list that does not exist or is of another kind, is refused (422) with the field.",
	}, func(ctx context.Context, in *ruleBody) (*ruleOne, error) {
		r, err := decodeRuleBody(in.RawBody)
		if err != nil {
			return nil, err
		}
		r.ID = 0
		r, err = a.d.Store.CreateRule(ctx, r)
		if err != nil {
			return nil, a.firewallErr("firewall rule", http.StatusUnprocessableEntity, err)
		}
		a.d.Log.Info("firewall rule created", "rule", r.ID, "name", r.Name, "by", Principal(ctx))
		a.changed(ctx) // rule and list contents are part of effective policies
		note(ctx, strconv.Itoa(r.ID), map[string]any{"name": r.Name, "action": r.Action, "direction": r.Direction})
		return &ruleOne{Body: FirewallRule(r)}, nil
	})
	register(a, PermRulesRead, huma.Operation{
		OperationID: "export-firewall-rules", Method: http.MethodGet, Path: "/api/v1/firewall/rules/export",
		Summary: "Export firewall rules with the lists they use", Tags: tags,
		Description: "A document that POST /api/v1/firewall/rules/import (here or on another manager) reads back: the rules chosen with id (all without), and the IP, MAC and port lists they reference.",
	}, func(ctx context.Context, in *struct {
		IDs []int `query:"id,explode" maxItems:"100000" doc:"Rule IDs (repeat: ?id=1&id=2); none: every rule."`
	}) (*struct{ Body FirewallExport }, error) {
		e, err := a.d.Store.ExportFirewall(ctx, in.IDs)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return nil, huma.Error404NotFound(strings.TrimSuffix(err.Error(), ": "+store.ErrNotFound.Error()))
			}
			return nil, a.storeErr("firewall export", err)
		}
		return &struct{ Body FirewallExport }{Body: firewallExport(e)}, nil
	})
	importSchema := &huma.Schema{OneOf: []*huma.Schema{exportSchema, {Type: huma.TypeArray, Items: ruleSchema}, ruleSchema}}
	registerRaw(a, PermRulesWrite, importSchema, "A Deep Security export.", 64<<20, huma.Operation{
		OperationID: "import-firewall-rules", Method: http.MethodPost, Path: "/api/v1/firewall/rules/import",
		Summary: "Import firewall rules and lists", Tags: tags,
		Description: "The body is a Deep Security export: a JSON array of rules, one rule, {\"firewallRules\": [...]}, or a document with ipLists, macLists and portLists too (as GET /api/v1/firewall/rules/export writes). " +
			"Everything is stored in one transaction, or nothing. Rules and lists get new IDs; rules' references to lists of the file follow them, and a reference to a list not in the file must name a list of that kind on this manager. " +
			"The answer maps the file's IDs to the new ones. Bad input is refused (400) naming the rule or list and the field.",
	}, func(ctx context.Context, in *ruleBody) (*struct{ Body FirewallImportResult }, error) {
		doc, err := decodeFirewallImport(in.RawBody)
		if err != nil {
			var de *decodeError
			if errors.As(err, &de) {
				return nil, huma.Error400BadRequest("invalid import", &huma.ErrorDetail{Location: de.location, Message: de.err.Error()})
			}
			return nil, huma.Error400BadRequest("invalid import: " + err.Error())
		}
		res, err := a.d.Store.ImportFirewall(ctx, doc)
		if err != nil {
			return nil, a.firewallErr("firewall import", http.StatusBadRequest, err)
		}
		lists := len(res.IPLists) + len(res.MACLists) + len(res.PortLists)
		a.d.Log.Info("firewall rules imported", "rules", len(doc.Rules), "lists", len(doc.IPLists)+len(doc.MACLists)+len(doc.PortLists), "by", Principal(ctx))
		a.changed(ctx) // rule and list contents are part of effective policies
		note(ctx, "firewall", map[string]int{"rules": len(doc.Rules), "lists": lists})
		return &struct{ Body FirewallImportResult }{Body: FirewallImportResult{
			FirewallRules: idMap(res.Rules), IPLists: idMap(res.IPLists), MACLists: idMap(res.MACLists), PortLists: idMap(res.PortLists),
		}}, nil
	})
	register(a, PermRulesRead, huma.Operation{
		OperationID: "get-firewall-rule", Method: http.MethodGet, Path: "/api/v1/firewall/rules/{id}",
		Summary: "Show a firewall rule", Tags: tags,
	}, func(ctx context.Context, in *rulePath) (*ruleOne, error) {
		r, err := a.d.Store.GetRule(ctx, in.ID)
		if err != nil {
			return nil, a.storeErr(fmt.Sprintf("firewall rule %d", in.ID), err)
		}
		return &ruleOne{Body: FirewallRule(r)}, nil
	})
	registerRaw(a, PermRulesWrite, ruleSchema, "The firewall rule (its ID, if any, must be the one in the path).", 1<<20, huma.Operation{
		OperationID: "update-firewall-rule", Method: http.MethodPut, Path: "/api/v1/firewall/rules/{id}",
		Summary: "Replace a firewall rule", Tags: tags,
		Description: "The body is the whole rule, as for create. Computers with the rule get the change with their next policy update.",
	}, func(ctx context.Context, in *struct {
		ID      int `path:"id" minimum:"1" doc:"Rule ID."`
		RawBody []byte
	}) (*ruleOne, error) {
		r, err := decodeRuleBody(in.RawBody)
		if err != nil {
			return nil, err
		}
		if r.ID != 0 && r.ID != in.ID {
			return nil, huma.Error422UnprocessableEntity("invalid firewall rule", &huma.ErrorDetail{
				Location: "body.ID", Value: r.ID, Message: fmt.Sprintf("is not the ID in the path (%d); leave it out", in.ID)})
		}
		r.ID = in.ID
		r, err = a.d.Store.UpdateRule(ctx, r)
		if err != nil {
			return nil, a.firewallErr(fmt.Sprintf("firewall rule %d", in.ID), http.StatusUnprocessableEntity, err)
		}
		a.d.Log.Info("firewall rule updated", "rule", r.ID, "name", r.Name, "by", Principal(ctx))
		a.changed(ctx) // rule and list contents are part of effective policies
		note(ctx, strconv.Itoa(r.ID), map[string]any{"name": r.Name, "action": r.Action, "direction": r.Direction})
		return &ruleOne{Body: FirewallRule(r)}, nil
	})
	register(a, PermRulesWrite, huma.Operation{
		OperationID: "delete-firewall-rule", Method: http.MethodDelete, Path: "/api/v1/firewall/rules/{id}",
		Summary: "Delete a firewall rule", Tags: tags, DefaultStatus: http.StatusNoContent,
		Description: "Refused (409) while a policy or a computer has the rule assigned; the answer names them.",
	}, func(ctx context.Context, in *rulePath) (*struct{}, error) {
		if err := a.d.Store.DeleteRule(ctx, in.ID); err != nil {
			return nil, a.firewallErr(fmt.Sprintf("firewall rule %d", in.ID), http.StatusUnprocessableEntity, err)
		}
		a.d.Log.Info("firewall rule deleted", "rule", in.ID, "by", Principal(ctx))
		return nil, nil
	})

	register(a, PermListsRead, huma.Operation{
		OperationID: "list-firewall-lists", Method: http.MethodGet, Path: "/api/v1/firewall/lists/{kind}",
		Summary: "List IP, MAC or port lists", Tags: tags, Description: "By ID, in Deep Security's JSON form.",
	}, func(ctx context.Context, in *struct {
		Kind string `path:"kind" enum:"ip,mac,port" doc:"IP, MAC or port list."`
		PageQuery
	}) (*struct {
		Body struct {
			Items      []FirewallList `json:"items"`
			NextCursor string         `json:"next_cursor,omitempty"`
		}
	}, error) {
		ls, err := a.d.Store.ListLists(ctx, store.ListKind(in.Kind))
		if err != nil {
			return nil, a.storeErr(store.ListKind(in.Kind).Noun()+"s", err)
		}
		out := &struct {
			Body struct {
				Items      []FirewallList `json:"items"`
				NextCursor string         `json:"next_cursor,omitempty"`
			}
		}{}
		out.Body.Items = firewallLists(ls, firewallList)
		out.Body.Items, out.Body.NextCursor, err = page(out.Body.Items, in.PageQuery)
		return out, err
	})
	register(a, PermListsWrite, huma.Operation{
		OperationID: "create-firewall-list", Method: http.MethodPost, Path: "/api/v1/firewall/lists/{kind}",
		Summary: "Create an IP, MAC or port list", Tags: tags, DefaultStatus: http.StatusCreated,
		Description: "Every entry is checked; a bad one is refused (422) naming it (body.items[3]).",
	}, func(ctx context.Context, in *struct {
		Kind string `path:"kind" enum:"ip,mac,port" doc:"IP, MAC or port list."`
		Body FirewallList
	}) (*listOne, error) {
		kind := store.ListKind(in.Kind)
		l, err := a.d.Store.CreateList(ctx, store.List{Kind: kind, Name: in.Body.Name, Description: in.Body.Description, Items: in.Body.Items})
		if err != nil {
			return nil, a.firewallErr(kind.Noun(), http.StatusUnprocessableEntity, err)
		}
		a.d.Log.Info("firewall list created", "kind", kind, "list", l.ID, "name", l.Name, "by", Principal(ctx))
		a.changed(ctx) // rule and list contents are part of effective policies
		note(ctx, strconv.Itoa(l.ID), map[string]any{"kind": kind, "name": l.Name, "items": len(l.Items)})
		return &listOne{Body: firewallList(l)}, nil
	})
	register(a, PermListsRead, huma.Operation{
		OperationID: "get-firewall-list", Method: http.MethodGet, Path: "/api/v1/firewall/lists/{kind}/{id}",
		Summary: "Show an IP, MAC or port list", Tags: tags,
	}, func(ctx context.Context, in *listIDPath) (*listOne, error) {
		kind := store.ListKind(in.Kind)
		l, err := a.d.Store.GetList(ctx, kind, in.ID)
		if err != nil {
			return nil, a.storeErr(fmt.Sprintf("%s %d", kind.Noun(), in.ID), err)
		}
		return &listOne{Body: firewallList(l)}, nil
	})
	register(a, PermListsWrite, huma.Operation{
		OperationID: "update-firewall-list", Method: http.MethodPut, Path: "/api/v1/firewall/lists/{kind}/{id}",
		Summary: "Replace an IP, MAC or port list", Tags: tags,
		Description: "Name, description and entries are replaced. Rules using the list follow at once; computers with those rules get the change with their next policy update.",
	}, func(ctx context.Context, in *struct {
		Kind string `path:"kind" enum:"ip,mac,port" doc:"IP, MAC or port list."`
		ID   int    `path:"id" minimum:"1" doc:"List ID."`
		Body FirewallList
	}) (*listOne, error) {
		kind := store.ListKind(in.Kind)
		if in.Body.ID != 0 && in.Body.ID != in.ID {
			return nil, huma.Error422UnprocessableEntity("invalid "+kind.Noun(), &huma.ErrorDetail{
				Location: "body.ID", Value: in.Body.ID, Message: fmt.Sprintf("is not the ID in the path (%d); leave it out", in.ID)})
		}
		l, err := a.d.Store.UpdateList(ctx, store.List{ID: in.ID, Kind: kind, Name: in.Body.Name, Description: in.Body.Description, Items: in.Body.Items})
		if err != nil {
			return nil, a.firewallErr(fmt.Sprintf("%s %d", kind.Noun(), in.ID), http.StatusUnprocessableEntity, err)
		}
		a.d.Log.Info("firewall list updated", "kind", kind, "list", l.ID, "name", l.Name, "by", Principal(ctx))
		a.changed(ctx) // rule and list contents are part of effective policies
		note(ctx, strconv.Itoa(l.ID), map[string]any{"kind": kind, "name": l.Name, "items": len(l.Items)})
		return &listOne{Body: firewallList(l)}, nil
	})
	register(a, PermListsWrite, huma.Operation{
		OperationID: "delete-firewall-list", Method: http.MethodDelete, Path: "/api/v1/firewall/lists/{kind}/{id}",
		Summary: "Delete an IP, MAC or port list", Tags: tags, DefaultStatus: http.StatusNoContent,
		Description: "Refused (409) while rules use the list; the answer names them.",
	}, func(ctx context.Context, in *listIDPath) (*struct{}, error) {
		kind := store.ListKind(in.Kind)
		if err := a.d.Store.DeleteList(ctx, kind, in.ID); err != nil {
			return nil, a.firewallErr(fmt.Sprintf("%s %d", kind.Noun(), in.ID), http.StatusUnprocessableEntity, err)
		}
		a.d.Log.Info("firewall list deleted", "kind", kind, "list", in.ID, "by", Principal(ctx))
		return nil, nil
	})
}
