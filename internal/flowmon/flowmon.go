// Package flowmon provides REST endpoints shaped like Progress Flowmon's
// Monitoring Center API (/rest/fmc/...), so that scripts written for a
// Flowmon appliance run unchanged against a Yagura manager. It answers
// from the flow store (internal/flowstore) and the profiles
// (internal/flowprofile); only the server imports it.
//
// # Endpoints
//
//   - POST /rest/fmc/analysis/statistics runs a top-N statistic and answers
//     201 {"id": N}. The body is {"search": {"from", "to", "profile",
//     "channels", "statistics": {"statistics", "orderBy"}, "specific":
//     {"aggregateBy"}, "filter"}, "showonly": N}; older clients' form,
//     ?search=<JSON>&showonly=N, works too.
//   - GET /rest/fmc/analysis/results/{id} returns that statistic: a JSON
//     array of {"ts", "td", <aggregated fields>, "pkt", "byt", "fl"}.
//   - POST (or GET with ?search=) /rest/fmc/analysis/chart returns one
//     series per channel: [{"channel": {"id", "name"}, "values": [[ms,
//     value], …]}], a value per 5-minute interval.
//
// The token endpoint, POST /resources/oauth/token, is auth.OAuth's
// RegisterFlowmon. Every route here needs a bearer token whose role holds
// "flows:read".
//
// # What Flowmon's documentation does not say, and what Yagura does
//
// Flowmon's REST guide lives on the appliance; what is public are the
// Japanese reseller's examples (the seed "Flowmon REST API講座") and
// scripts that call the API. From those: the token endpoint takes
// client_id=invea-tech; the analysis answers 201 with {"id": <integer>};
// results are an array of objects whose keys are nfdump's output tokens
// (ts, td, pkt, byt, fl) and the aggregation names (srcip, dstip, …);
// charts are an array of per-channel objects with "channel" and "values"
// of [time, value] pairs. Where no public source says, Yagura chooses, and
// docs/flowmon-api.md lists each choice: times in results are nfdump's
// "YYYY-MM-DD HH:MM:SS.mmm"; td is seconds with milliseconds; ports,
// protocol and interfaces are JSON numbers, as in nfdump's JSON output;
// chart times are milliseconds since the epoch and chart values are totals
// per interval (bytes, packets or flows), not rates. A Flowmon appliance
// answers 202 while an analysis runs and 204 for an empty or unknown
// result; Yagura runs the analysis before answering, returns [] for an
// empty result and 404 for an unknown one. from and to are in the
// configured location (UTC by default; Flowmon uses the appliance's
// zone) and select the flows that started in [from, to).
package flowmon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/yagura/yagura/internal/auth"
	"github.com/yagura/yagura/internal/flowfilter"
	"github.com/yagura/yagura/internal/flowprofile"
	"github.com/yagura/yagura/internal/flowstore"
)

// permFlowsRead is the permission every route needs: the API's
// flows:read (api.PermFlowsRead).
const permFlowsRead = "flows:read"

// maxBody bounds a request body; a Flowmon analysis is a few hundred bytes.
const maxBody = 64 << 10

// Flows is what the endpoints need of the flow store; flowstore.Store has
// it. Implementations are safe for concurrent use.
type Flows interface {
	Top(ctx context.Context, q flowstore.TopQuery) (flowstore.TopResult, error)
	Series(ctx context.Context, q flowstore.SeriesQuery) ([]flowstore.Point, error)
}

// ProfileLister is optionally implemented by a profile source, so that an
// unknown profile's error can name the ones that exist.
type ProfileLister interface {
	Profiles(ctx context.Context) ([]flowprofile.Profile, error)
}

// Authenticator maps a bearer token to its principal; the server's
// api.Authenticator is one.
type Authenticator interface {
	Authenticate(ctx context.Context, bearer string) (auth.Principal, bool)
}

// Deps are the endpoints' collaborators and settings.
type Deps struct {
	Flows Flows
	// Profiles looks profiles up, "live" included; an unknown ID is an
	// error wrapping flowprofile.ErrNotFound.
	Profiles flowprofile.Source
	Auth     Authenticator
	Log      *slog.Logger // with component=flowmon; nil: discard

	// Location is the time zone of from/to without an offset and of the
	// ts in results; nil: UTC. Flowmon uses the appliance's zone, so a
	// script written for an appliance in Japan wants Asia/Tokyo.
	Location *time.Location
	// ResultTTL is how long a statistic can be fetched; 0: one hour.
	ResultTTL time.Duration
	// MaxResults and MaxResultBytes bound the statistics kept; the
	// oldest go first. 0: 1000 and 64 MiB.
	MaxResults     int
	MaxResultBytes int
}

// Handler serves the endpoints. It is safe for concurrent use.
type Handler struct {
	d       Deps
	results *results
}

// New returns the endpoints; they do nothing until registered.
func New(d Deps) *Handler {
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Location == nil {
		d.Location = time.UTC
	}
	if d.ResultTTL <= 0 {
		d.ResultTTL = time.Hour
	}
	if d.MaxResults <= 0 {
		d.MaxResults = 1000
	}
	if d.MaxResultBytes <= 0 {
		d.MaxResultBytes = 64 << 20
	}
	return &Handler{d: d, results: newResults(d.ResultTTL, d.MaxResults, d.MaxResultBytes)}
}

// Register adds the routes to mux, at Flowmon's paths from the root.
func (h *Handler) Register(mux interface {
	HandleFunc(string, func(http.ResponseWriter, *http.Request))
}) {
	mux.HandleFunc("POST /rest/fmc/analysis/statistics", h.guard(h.statistics))
	mux.HandleFunc("GET /rest/fmc/analysis/results/{id}", h.guard(h.result))
	mux.HandleFunc("POST /rest/fmc/analysis/chart", h.guard(h.chart))
	// Older clients GET the chart with ?search=<JSON>.
	mux.HandleFunc("GET /rest/fmc/analysis/chart", h.guard(h.chart))
}

type handlerFunc func(w http.ResponseWriter, r *http.Request, p auth.Principal)

// guard checks the bearer token and the permission.
func (h *Handler) guard(next handlerFunc) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		bearer, ok := bearerToken(r.Header.Get("Authorization"))
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="yagura"`)
			writeError(w, http.StatusUnauthorized, "missing bearer token: get one from POST /resources/oauth/token (grant_type=password) and send Authorization: Bearer <access_token>")
			return
		}
		p, ok := h.d.Auth.Authenticate(r.Context(), bearer)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="yagura", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "invalid, expired or revoked bearer token: sign in again at POST /resources/oauth/token")
			return
		}
		if !auth.Allowed(p.Role, permFlowsRead) {
			writeError(w, http.StatusForbidden, fmt.Sprintf("role %s may not read flows (needs %s): ask an administrator for a role that has it", p.Role, permFlowsRead))
			return
		}
		next(w, r, p)
	}
}

func (h *Handler) statistics(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	body, params, ok := readRequest(w, r)
	if !ok {
		return
	}
	q, err := parseStatistics(body, params, h.d.Location)
	if err != nil {
		h.fail(w, "statistics request", err)
		return
	}
	pf, err := h.selection(r.Context(), q.Profile, q.Channels)
	if err != nil {
		h.fail(w, "statistics profile", err)
		return
	}
	q.Top.Filter = flowfilter.AndAll(pf, q.Filter)
	res, err := h.d.Flows.Top(r.Context(), q.Top)
	if err != nil {
		h.fail(w, "statistics query", err)
		return
	}
	id := h.results.put(p.Subject, encodeRows(q.Top.By, res.Rows, h.d.Location), time.Now())
	writeJSON(w, http.StatusCreated, map[string]int64{"id": id})
}

func (h *Handler) result(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	raw := r.PathValue("id")
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("analysis result %q does not exist: use the id that POST /rest/fmc/analysis/statistics returned", raw))
		return
	}
	body, ok := h.results.get(p.Subject, id, time.Now())
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("analysis result %d does not exist or has expired (results are kept for %s, for the user who ran them): run the analysis again", id, shortDuration(h.d.ResultTTL)))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// chartSeries is one channel's values.
type chartSeries struct {
	Channel chartChannel `json:"channel"`
	Values  []chartPoint `json:"values"`
}

type chartChannel struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// chartPoint is [milliseconds since the epoch, value].
type chartPoint struct {
	T int64
	V uint64
}

func (p chartPoint) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 40)
	b = append(b, '[')
	b = strconv.AppendInt(b, p.T, 10)
	b = append(b, ',')
	b = strconv.AppendUint(b, p.V, 10)
	return append(b, ']'), nil
}

func (h *Handler) chart(w http.ResponseWriter, r *http.Request, _ auth.Principal) {
	body, params, ok := readRequest(w, r)
	if !ok {
		return
	}
	q, err := parseChart(body, params, h.d.Location)
	if err != nil {
		h.fail(w, "chart request", err)
		return
	}
	prof, err := h.profile(r.Context(), q.Profile)
	if err != nil {
		h.fail(w, "chart profile", err)
		return
	}
	// One series per channel asked for, or per channel of the profile;
	// a profile without channels is one series of its own.
	type target struct {
		ch       chartChannel
		channels []string
	}
	var targets []target
	switch {
	case len(q.Channels) > 0:
		for _, name := range q.Channels {
			ch := chartChannel{ID: name, Name: name}
			for _, c := range prof.Channels {
				if c.ID == name || c.Name == name {
					ch = chartChannel{ID: c.ID, Name: c.Name}
					break
				}
			}
			targets = append(targets, target{ch, []string{name}})
		}
	case len(prof.Channels) > 0:
		for _, c := range prof.Channels {
			targets = append(targets, target{chartChannel{ID: c.ID, Name: c.Name}, []string{c.ID}})
		}
	default:
		targets = []target{{chartChannel{ID: prof.ID, Name: prof.Name}, nil}}
	}
	out := make([]chartSeries, 0, len(targets))
	for _, t := range targets {
		f, err := flowprofile.Select(prof, t.channels)
		if errors.Is(err, flowprofile.ErrNotFound) {
			err = badf("search.channels: %s", strings.TrimSuffix(err.Error(), ": "+flowprofile.ErrNotFound.Error()))
		}
		if err != nil {
			h.fail(w, "chart channel", err)
			return
		}
		sq := q.Series
		sq.Filter = flowfilter.AndAll(f)
		pts, err := h.d.Flows.Series(r.Context(), sq)
		if err != nil {
			h.fail(w, "chart query", err)
			return
		}
		s := chartSeries{Channel: t.ch, Values: make([]chartPoint, len(pts))}
		for i, pt := range pts {
			s.Values[i] = chartPoint{T: pt.Time.UnixMilli(), V: pt.Value}
		}
		out = append(out, s)
	}
	writeJSON(w, http.StatusOK, out)
}

// profile looks a profile up; an unknown one is the client's error, naming
// those that exist when the source can list them.
func (h *Handler) profile(ctx context.Context, id string) (flowprofile.Profile, error) {
	p, err := h.d.Profiles.Profile(ctx, id)
	if errors.Is(err, flowprofile.ErrNotFound) {
		msg := fmt.Sprintf("search.profile %q does not exist", id)
		if l, ok := h.d.Profiles.(ProfileLister); ok {
			if all, lerr := l.Profiles(ctx); lerr == nil {
				ids := make([]string, len(all))
				for i, p := range all {
					ids[i] = p.ID
				}
				msg += " (profiles: " + strings.Join(ids, ", ") + ")"
			}
		}
		return p, badf("%s; %q is all flows", msg, flowprofile.LiveID)
	}
	if err != nil {
		return p, fmt.Errorf("look up profile %q: %w", id, err)
	}
	return p, nil
}

// selection is the filter of a profile's channels.
func (h *Handler) selection(ctx context.Context, id string, channels []string) (flowfilter.Expr, error) {
	p, err := h.profile(ctx, id)
	if err != nil {
		return nil, err
	}
	f, err := flowprofile.Select(p, channels)
	if errors.Is(err, flowprofile.ErrNotFound) {
		return nil, badf("search.channels: %s", strings.TrimSuffix(err.Error(), ": "+flowprofile.ErrNotFound.Error()))
	}
	return f, err
}

// fail answers an error: the client's own mistakes (a bad request, an
// unknown profile or channel, an argument the store refuses) with their
// text, anything else with a pointer to the log.
func (h *Handler) fail(w http.ResponseWriter, what string, err error) {
	var br *badRequest
	switch {
	case errors.As(err, &br):
		writeError(w, http.StatusBadRequest, br.msg)
	case errors.Is(err, flowstore.ErrInvalid):
		writeError(w, http.StatusBadRequest, strings.TrimSuffix(err.Error(), ": "+flowstore.ErrInvalid.Error()))
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads the answer.
	case errors.Is(err, context.DeadlineExceeded):
		h.d.Log.Warn("flowmon "+what+" timed out", "err", err)
		writeError(w, http.StatusServiceUnavailable, "the flow store did not answer in time: narrow the time range or the filter, or try again")
	default:
		h.d.Log.Error("flowmon "+what, "err", err)
		writeError(w, http.StatusInternalServerError, "the manager could not run the analysis; see its log")
	}
}

// readRequest returns the body (at most maxBody) and the parameters: the
// query string, and a form body's fields, which older clients send the
// search in. A form body is returned as parameters, not as body.
func readRequest(w http.ResponseWriter, r *http.Request) ([]byte, url.Values, bool) {
	params := r.URL.Query()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the request body is larger than %d KiB", maxBody>>10))
			return nil, nil, false
		}
		writeError(w, http.StatusBadRequest, "could not read the request body")
		return nil, nil, false
	}
	if ct := r.Header.Get("Content-Type"); strings.HasPrefix(strings.ToLower(strings.TrimSpace(ct)), "application/x-www-form-urlencoded") {
		form, err := url.ParseQuery(string(body))
		if err != nil {
			writeError(w, http.StatusBadRequest, "the form body does not parse: "+err.Error())
			return nil, nil, false
		}
		for k, v := range form {
			params[k] = append(params[k], v...)
		}
		body = nil
	}
	return body, params, true
}

// problem is an error answer, in the shape of the rest of Yagura's API
// (RFC 9457).
type problem struct {
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

func writeError(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(problem{Title: http.StatusText(status), Status: status, Detail: detail})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// shortDuration writes d as people do: 1h, 1h30m, 90s.
func shortDuration(d time.Duration) string {
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// bearerToken extracts the credential of an RFC 6750 Authorization header;
// the scheme is case-insensitive, and Flowmon's scripts write "bearer".
// It is api.BearerToken's rule, repeated so that this package does not
// depend on the whole API.
func bearerToken(header string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
