// Package gateway provides the manager's agent gateway: the HTTPS endpoints
// agents call to enrol, heartbeat and renew their certificates.
//
// Every endpoint but enrolment requires a client certificate verified
// against the manager CA (the TLS layer refuses other CAs and expired
// certificates during the handshake); the gateway maps it to the agent ID
// and refuses deactivated and unknown agents with an RFC 9457 problem whose
// code the agent acts on.
package gateway

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/yagura/yagura/internal/fleet"
	"github.com/yagura/yagura/internal/pki"
	"github.com/yagura/yagura/internal/proto"
	"github.com/yagura/yagura/internal/secret"
	"github.com/yagura/yagura/internal/settings"
	"github.com/yagura/yagura/internal/store"
	"github.com/yagura/yagura/internal/telemetry"
)

// Store is what the gateway needs from the state store.
type Store interface {
	EnrollComputer(ctx context.Context, tokenHash string, now time.Time, c store.Computer) (store.Token, error)
	GetComputer(ctx context.Context, id string) (store.Computer, error)
	SetComputerCert(ctx context.Context, id, serial string, notAfter time.Time) error
	DeactivateComputer(ctx context.Context, id string, at time.Time) (store.Computer, error)
}

// Events is where agent events go: the telemetry writer, which returns once
// they are durable.
type Events interface {
	Write(ctx context.Context, evs []telemetry.Event) error
}

// Fleet is the live view heartbeats go to.
type Fleet interface {
	HeartbeatFrom(id, host string, hb *proto.Heartbeat, now time.Time) (fleet.Reply, error)
	Active(id string) error
	Add(c store.Computer)
	Deactivate(id string)
	Settings() settings.Settings
}

// Jobs is the job service, as the gateway uses it. Nil disables jobs.
type Jobs interface {
	ForAgent(ctx context.Context, id string, now time.Time) ([]proto.Job, error)
	Report(ctx context.Context, agentID string, r *proto.JobStatus, now time.Time) (store.JobTarget, error)
	Wait(ctx context.Context, id string, max time.Duration) bool
	StartUpload(ctx context.Context, agentID string, r *proto.UploadRequest, now time.Time) (proto.UploadState, error)
	UploadState(ctx context.Context, agentID, id string) (proto.UploadState, error)
	Append(ctx context.Context, agentID, id string, offset int64, body io.Reader, now time.Time) (proto.UploadState, error)
}

// Config tunes the gateway.
type Config struct {
	// AgentCertValidity is how long agent certificates last; agents renew
	// when a third is left.
	AgentCertValidity time.Duration `koanf:"agent_cert_validity"`
}

// DefaultConfig returns production defaults.
func DefaultConfig() Config { return Config{AgentCertValidity: 90 * 24 * time.Hour} }

// Gateway serves the agent endpoints.
type Gateway struct {
	cfg   Config
	ca    *pki.CA
	caPEM string
	store Store
	fleet Fleet
	jobs  Jobs
	// policies answers policy requests; set with SetPolicies.
	policies Policies
	sink     Events
	log      *slog.Logger
	now      func() time.Time

	enrolments *prometheus.CounterVec
	refusals   *prometheus.CounterVec
	latency    prometheus.Histogram
	eventsIn   prometheus.Counter
}

// New returns a gateway. It does no I/O.
func New(cfg Config, ca *pki.CA, st Store, fl Fleet, jobs Jobs, log *slog.Logger, reg prometheus.Registerer) *Gateway {
	g := &Gateway{
		cfg: cfg, ca: ca, caPEM: string(pki.CertificatePEM(ca.Cert)), store: st, fleet: fl, jobs: jobs, log: log, now: time.Now,
		enrolments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "yagura_enrolments_total", Help: "Agent enrolment attempts by result.",
		}, []string{"result"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "yagura_agent_requests_refused_total", Help: "Agent requests refused, by problem code.",
		}, []string{"code"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "yagura_heartbeat_seconds",
			Help:    "Time to handle a heartbeat inside the manager (excluding network and TLS).",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1},
		}),
	}
	g.eventsIn = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "yagura_events_stored_total", Help: "Agent events accepted (durably stored; a resent batch counts again).",
	})
	if reg != nil {
		reg.MustRegister(g.enrolments, g.refusals, g.latency, g.eventsIn)
	}
	return g
}

// SetEvents enables the events endpoint.
func (g *Gateway) SetEvents(e Events) { g.sink = e }

// SetPolicies enables the policy endpoint.
func (g *Gateway) SetPolicies(p Policies) { g.policies = p }

// Mux is where routes are registered (an http.ServeMux).
type Mux interface {
	HandleFunc(pattern string, handler func(http.ResponseWriter, *http.Request))
}

// Register adds the gateway's routes to mux.
func (g *Gateway) Register(mux Mux) {
	mux.HandleFunc("POST "+proto.PathEnroll, g.enroll)
	mux.HandleFunc("POST "+proto.PathHeartbeat, g.heartbeat)
	mux.HandleFunc("POST "+proto.PathRenew, g.renew)
	mux.HandleFunc("POST "+proto.PathEvents, g.events)
	if g.policies != nil {
		mux.HandleFunc("POST "+proto.PathPolicy, g.policy)
	}
	if g.jobs != nil {
		mux.HandleFunc("POST "+proto.PathWait, g.wait)
		mux.HandleFunc("POST "+proto.PathJobStatus, g.jobStatus)
		mux.HandleFunc("POST "+proto.PathUploads, g.startUpload)
		mux.HandleFunc("GET "+proto.PathUploads+"/{id}", g.uploadState)
		mux.HandleFunc("PUT "+proto.PathUploads+"/{id}", g.appendUpload)
	}
}

// active checks the agent may talk to the manager, learning it from the
// store if this node has not seen it.
func (g *Gateway) active(ctx context.Context, w http.ResponseWriter, id string) bool {
	err := g.fleet.Active(id)
	if errors.Is(err, fleet.ErrUnknown) {
		if !g.learn(ctx, w, id) {
			return false
		}
		err = g.fleet.Active(id)
	}
	if err != nil {
		g.refuseAgent(w, id, err)
		return false
	}
	return true
}

// events stores a batch of events and acknowledges it only once the
// telemetry store has committed it: the agent deletes what is acknowledged,
// so answering before the commit could lose events in a crash. A resent
// batch is stored once (the store skips IDs it holds).
func (g *Gateway) events(w http.ResponseWriter, r *http.Request) {
	id, _, ok := g.agent(w, r)
	if !ok || !g.active(r.Context(), w, id) {
		return
	}
	if g.sink == nil {
		g.problem(w, http.StatusServiceUnavailable, proto.CodeUnavailable, "events are not accepted by this manager")
		return
	}
	var b proto.EventBatch
	if err := proto.DecodeLimit(r.Body, &b, proto.MaxEventsBody); err != nil {
		g.problem(w, http.StatusBadRequest, proto.CodeBadRequest, "event batch: "+err.Error())
		return
	}
	if err := b.Validate(); err != nil {
		g.problem(w, http.StatusBadRequest, proto.CodeBadRequest, "event batch: "+err.Error())
		return
	}
	now := g.now()
	evs := make([]telemetry.Event, len(b.Events))
	for i, e := range b.Events {
		evs[i] = telemetry.Event{ComputerID: id, ID: e.ID, Type: e.Type, Severity: e.Severity, Time: e.Time.UTC(), ReceivedAt: now.UTC(), Data: string(e.Data)}
	}
	if err := g.sink.Write(r.Context(), evs); err != nil {
		if errors.Is(err, telemetry.ErrStopped) {
			g.problem(w, http.StatusServiceUnavailable, proto.CodeUnavailable, "manager is stopping; send the batch again")
			return
		}
		g.internal(w, "store events", err)
		return
	}
	g.eventsIn.Add(float64(len(evs)))
	reply(w, proto.EventAck{V: proto.Version, Stored: len(evs)})
}

func (g *Gateway) problem(w http.ResponseWriter, status int, code, detail string) {
	g.refusals.WithLabelValues(code).Inc()
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(proto.Problem{Title: http.StatusText(status), Status: status, Detail: detail, Code: code})
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (g *Gateway) enroll(w http.ResponseWriter, r *http.Request) {
	var req proto.EnrollRequest
	if err := proto.Decode(r.Body, &req); err != nil {
		g.enrolments.WithLabelValues("bad-request").Inc()
		g.problem(w, http.StatusBadRequest, proto.CodeBadRequest, "enrolment request: "+err.Error())
		return
	}
	if err := req.Validate(); err != nil {
		g.enrolments.WithLabelValues("bad-request").Inc()
		g.problem(w, http.StatusBadRequest, proto.CodeBadRequest, "enrolment request: "+err.Error())
		return
	}
	now := g.now()
	id, err := uuid.NewV7()
	if err != nil {
		g.internal(w, "new agent ID", err)
		return
	}
	cert, err := g.ca.SignAgentCSR([]byte(req.CSR), id.String(), now, g.cfg.AgentCertValidity)
	if err != nil {
		g.enrolments.WithLabelValues("bad-request").Inc()
		g.problem(w, http.StatusBadRequest, proto.CodeBadRequest, "enrolment request: csr: "+err.Error())
		return
	}
	c := store.Computer{
		ID: id.String(), Hostname: req.Inventory.Hostname, OS: req.Inventory.OS, OSVersion: req.Inventory.OSVersion,
		AgentVersion: req.Inventory.AgentVersion, IPs: req.Inventory.IPs, State: store.ComputerActive,
		EnrolledAt: now, CertSerial: pki.SerialHex(cert), CertNotAfter: cert.NotAfter,
	}
	tok, err := g.store.EnrollComputer(r.Context(), secret.Hash(req.Token), now, c)
	if err != nil {
		if code, status, detail, ok := tokenProblem(err); ok {
			g.enrolments.WithLabelValues(code).Inc()
			g.log.Warn("enrolment refused", "reason", code, "remote", r.RemoteAddr, "hostname", req.Inventory.Hostname)
			g.problem(w, status, code, detail)
			return
		}
		g.internal(w, "enrol computer", err)
		return
	}
	c.TokenID = tok.ID
	g.fleet.Add(c)
	if g.policies != nil {
		g.policies.Changed()
	}
	g.enrolments.WithLabelValues("ok").Inc()
	replaced := g.retire(r, c.ID, now)
	g.log.Info("agent enrolled", "agent", c.ID, "hostname", c.Hostname, "remote", r.RemoteAddr, "token", tok.ID, "replaces", replaced)
	reply(w, proto.EnrollResponse{
		V: proto.Version, AgentID: c.ID, Certificate: string(pki.CertificatePEM(cert)), CA: g.caPEM,
		HeartbeatMillis: proto.Millis(g.fleet.Settings().HeartbeatInterval), Replaced: replaced,
	})
}

// retire deactivates the computer whose still-valid certificate a
// re-enrolling host presented, so the old record does not linger as a
// computer that is offline forever. It returns the retired ID, if any.
func (g *Gateway) retire(r *http.Request, newID string, now time.Time) string {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return ""
	}
	old, err := pki.AgentID(r.TLS.VerifiedChains[0][0])
	if err != nil || old == newID {
		return ""
	}
	if _, err := g.store.DeactivateComputer(r.Context(), old, now); err != nil && !errors.Is(err, store.ErrConflict) {
		if !errors.Is(err, store.ErrNotFound) {
			g.log.Error("retire the re-enrolled computer", "agent", old, "err", err)
		}
		return ""
	}
	g.fleet.Deactivate(old)
	return old
}

// tokenProblem turns a token refusal into what the agent is told. The texts
// say what to do, since the person reading them is installing an agent.
func tokenProblem(err error) (code string, status int, detail string, ok bool) {
	switch {
	case errors.Is(err, store.ErrTokenUnknown):
		return proto.CodeTokenUnknown, http.StatusForbidden, "unknown activation token: check it was copied whole, or create one with `yagura ctl tokens create`", true
	case errors.Is(err, store.ErrTokenExpired):
		return proto.CodeTokenExpired, http.StatusForbidden, "activation token expired: create a new one with `yagura ctl tokens create`", true
	case errors.Is(err, store.ErrTokenRevoked):
		return proto.CodeTokenRevoked, http.StatusForbidden, "activation token was revoked by an administrator: ask for a new one", true
	case errors.Is(err, store.ErrTokenUsedUp):
		return proto.CodeTokenUsedUp, http.StatusForbidden, "activation token has no uses left: create one with a higher --max-uses", true
	}
	return "", 0, "", false
}

func (g *Gateway) internal(w http.ResponseWriter, what string, err error) {
	// The cause stays in the log; the agent learns only that it should retry.
	g.log.Error("agent request failed", "op", what, "err", err)
	g.problem(w, http.StatusInternalServerError, proto.CodeInternal, "the manager could not complete the request; it will be retried")
}

// agent returns the verified agent ID of the request's client certificate,
// or writes a problem and returns false.
func (g *Gateway) agent(w http.ResponseWriter, r *http.Request) (string, *x509.Certificate, bool) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		g.problem(w, http.StatusUnauthorized, proto.CodeCertRequired,
			"this endpoint needs the agent's client certificate issued by this manager; enrol first with `yagura agent enroll`")
		return "", nil, false
	}
	leaf := r.TLS.VerifiedChains[0][0]
	// The handshake checked validity when the connection opened; a kept
	// connection can outlive the certificate, so check it per request.
	if now := g.now(); now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		g.problem(w, http.StatusUnauthorized, proto.CodeCertExpired,
			fmt.Sprintf("the agent's certificate is valid from %s to %s only; enrol again with `yagura agent enroll --force`",
				leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339)))
		return "", nil, false
	}
	id, err := pki.AgentID(leaf)
	if err != nil {
		g.problem(w, http.StatusUnauthorized, proto.CodeCertRequired, "client certificate: "+err.Error())
		return "", nil, false
	}
	return id, leaf, true
}

func (g *Gateway) heartbeat(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	id, _, ok := g.agent(w, r)
	if !ok {
		return
	}
	var hb proto.Heartbeat
	if err := proto.Decode(r.Body, &hb); err != nil {
		g.problem(w, http.StatusBadRequest, proto.CodeBadRequest, "heartbeat: "+err.Error())
		return
	}
	if err := hb.Validate(); err != nil {
		g.problem(w, http.StatusBadRequest, proto.CodeBadRequest, "heartbeat: "+err.Error())
		return
	}
	now := g.now()
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	rep, err := g.fleet.HeartbeatFrom(id, host, &hb, now)
	if errors.Is(err, fleet.ErrUnknown) {
		// Enrolled through another manager node, or just loaded: look it up.
		if !g.learn(r.Context(), w, id) {
			return
		}
		rep, err = g.fleet.HeartbeatFrom(id, host, &hb, now)
	}
	if err != nil {
		g.refuseAgent(w, id, err)
		return
	}
	resp := proto.HeartbeatResponse{
		V: proto.Version, IntervalMillis: proto.Millis(rep.Interval), ClockMillis: now.UnixMilli(), SendInventory: rep.SendInventory,
		PolicyFingerprint: rep.PolicyFingerprint,
	}
	if rep.Communication != "" && rep.Communication != settings.AgentInitiated {
		resp.Communication, resp.ListenPort = rep.Communication, rep.ListenPort
	}
	if g.jobs != nil {
		// A failure here must not fail the heartbeat: the jobs come with
		// the next one.
		if resp.Jobs, err = g.jobs.ForAgent(r.Context(), id, now); err != nil {
			g.log.Error("load jobs for agent", "agent", id, "err", err)
		}
	}
	reply(w, resp)
	g.latency.Observe(time.Since(start).Seconds())
}

// learn loads a computer the fleet does not know from the store.
func (g *Gateway) learn(ctx context.Context, w http.ResponseWriter, id string) bool {
	c, err := g.store.GetComputer(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		g.problem(w, http.StatusForbidden, proto.CodeAgentUnknown,
			fmt.Sprintf("agent %s is not known to this manager (removed?); re-enrol with `yagura agent enroll --force`", id))
		return false
	}
	if err != nil {
		g.internal(w, "load computer", err)
		return false
	}
	g.fleet.Add(c)
	return true
}

func (g *Gateway) refuseAgent(w http.ResponseWriter, id string, err error) {
	switch {
	case errors.Is(err, fleet.ErrDeactivated):
		g.problem(w, http.StatusForbidden, proto.CodeAgentDeactivate,
			fmt.Sprintf("computer %s was deactivated by an administrator and may no longer talk to the manager; to bring it back, enrol again with a new token (`yagura agent enroll --force`)", id))
	case errors.Is(err, fleet.ErrUnknown):
		g.problem(w, http.StatusForbidden, proto.CodeAgentUnknown,
			fmt.Sprintf("agent %s is not known to this manager; re-enrol with `yagura agent enroll --force`", id))
	default:
		g.internal(w, "heartbeat", err)
	}
}

func (g *Gateway) renew(w http.ResponseWriter, r *http.Request) {
	id, _, ok := g.agent(w, r)
	if !ok {
		return
	}
	var req proto.RenewRequest
	if err := proto.Decode(r.Body, &req); err != nil {
		g.problem(w, http.StatusBadRequest, proto.CodeBadRequest, "renewal request: "+err.Error())
		return
	}
	c, err := g.store.GetComputer(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		g.refuseAgent(w, id, fleet.ErrUnknown)
		return
	} else if err != nil {
		g.internal(w, "load computer", err)
		return
	}
	if c.State != store.ComputerActive {
		g.refuseAgent(w, id, fleet.ErrDeactivated)
		return
	}
	now := g.now()
	cert, err := g.ca.SignAgentCSR([]byte(req.CSR), id, now, g.cfg.AgentCertValidity)
	if err != nil {
		g.problem(w, http.StatusBadRequest, proto.CodeBadRequest, "renewal request: csr: "+err.Error())
		return
	}
	if err := g.store.SetComputerCert(r.Context(), id, pki.SerialHex(cert), cert.NotAfter); err != nil {
		g.internal(w, "record renewed certificate", err)
		return
	}
	g.log.Info("agent certificate renewed", "agent", id, "not_after", cert.NotAfter)
	reply(w, proto.RenewResponse{V: proto.Version, Certificate: string(pki.CertificatePEM(cert)), CA: g.caPEM})
}
