// Package server assembles the Yagura manager — state store, CA, fleet
// monitor, agent gateway, REST API, health and metrics — and owns its
// lifecycle: start in dependency order, stop in reverse, flush on the way
// out.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/yagura/yagura/internal/alerting"
	"github.com/yagura/yagura/internal/api"
	"github.com/yagura/yagura/internal/auth"
	"github.com/yagura/yagura/internal/console"
	"github.com/yagura/yagura/internal/credentials"
	"github.com/yagura/yagura/internal/fleet"
	"github.com/yagura/yagura/internal/flowmon"
	"github.com/yagura/yagura/internal/flowstore"
	"github.com/yagura/yagura/internal/gateway"
	"github.com/yagura/yagura/internal/jobs"
	"github.com/yagura/yagura/internal/pki"
	"github.com/yagura/yagura/internal/reach"
	"github.com/yagura/yagura/internal/rollout"
	"github.com/yagura/yagura/internal/settings"
	"github.com/yagura/yagura/internal/store"
	"github.com/yagura/yagura/internal/store/postgres"
	"github.com/yagura/yagura/internal/store/sqlite"
	"github.com/yagura/yagura/internal/telemetry"
)

// Options are per-run choices that are not configuration.
type Options struct {
	Version string
	// CredentialsFile is where the bootstrap administrator's credentials
	// are written, relative to the data folder.
	CredentialsFile string
	// ResetAdminPassword gives the user "admin" a new password and writes
	// a new credentials file (when it was lost), revoking admin's tokens.
	ResetAdminPassword bool
	// AdminPassword is the bootstrap administrator's password; empty: a
	// random one.
	AdminPassword string
}

// Server is the manager.
type Server struct {
	cfg  Config
	opts Options
	log  *slog.Logger

	ready    chan struct{}
	stopping atomic.Bool
	info     atomic.Pointer[Info]
}

// Info describes a running manager, for banners and tests.
type Info struct {
	URL             string
	Addr            string
	CAFingerprint   string
	CredentialsPath string
	// AdminPassword is set only when this run created or reset it.
	AdminPassword string
	// Routes lists every pattern the HTTPS server serves, so a test can
	// check that nothing under /api escapes the OpenAPI document (and its
	// permission checks).
	Routes []string
	Store  *store.DB
}

// New checks the configuration; it does no I/O.
func New(cfg Config, opts Options, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.CredentialsFile == "" {
		opts.CredentialsFile = "admin-credentials.json"
	}
	return &Server{cfg: cfg, opts: opts, log: log, ready: make(chan struct{})}, nil
}

// Ready is closed once the manager accepts connections.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Info is valid after Ready.
func (s *Server) Info() *Info { return s.info.Load() }

// Run starts the manager and blocks until ctx is cancelled and everything
// has stopped. A clean shutdown returns nil.
func (s *Server) Run(ctx context.Context) error {
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data folder: %w", err)
	}
	db, err := s.openStore(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	ts, err := s.openTelemetry(ctx)
	if err != nil {
		return err
	}
	defer ts.Close()
	if err := moveLegacyEvents(ctx, db, ts, s.log); err != nil {
		return err
	}
	events := telemetry.NewWriter(ts, s.cfg.Telemetry.BatchEvents, s.log.With("component", "telemetry"))
	var fs flowstore.Store
	if s.cfg.Flows.Enabled {
		if fs, err = s.openFlowStore(ctx); err != nil {
			return err
		}
		// Closed after the collector's last flush (g.Wait below).
		defer fs.Close()
	}

	ca, err := loadOrCreateCA(ctx, db, s.cfg.PKI.CAValidity, s.log)
	if err != nil {
		return err
	}
	// Before the settings are read: it sets the default policy.
	if err := ensureBasePolicy(ctx, db, s.log); err != nil {
		return err
	}
	stored, err := db.Settings(ctx)
	if err != nil {
		return fmt.Errorf("load settings: %w", err)
	}
	set, err := settings.FromMap(stored)
	if err != nil {
		return fmt.Errorf("stored settings: %w", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Alerts are raised with their notifications (the outbox) in one
	// transaction, whoever raises them: the fleet monitor, alert rules.
	var fl *fleet.Fleet
	hostname := func(id string) string {
		if fl == nil || id == "" {
			return ""
		}
		return fl.Hostname(id)
	}
	notes, err := newNotifications(ctx, s.cfg.Notifications, keepDeliveries(s.cfg.Telemetry.MaxAge), db, hostname, s.opts.Version, s.log.With("component", "notifications"), reg)
	if err != nil {
		return err
	}
	events.Observe(notes.engine)
	events.Observe(notes.notifier)
	var fw *flows
	if fs != nil {
		if fw, err = newFlows(ctx, s.cfg.Flows, s.cfg.DataDir, fs, db, s.log.With("component", "flows"), reg); err != nil {
			return err
		}
	}
	fl = fleet.New(s.cfg.Fleet, alertingStore{db, notes.notifier}, set, s.log.With("component", "fleet"), reg)
	if err := fl.Load(ctx, time.Now()); err != nil {
		return err
	}

	jcfg := s.cfg.Jobs
	if jcfg.FilesDir == "" {
		jcfg.FilesDir = filepath.Join(s.cfg.DataDir, "files")
	}
	js := jobs.New(jcfg, db, fl, s.log.With("component", "jobs"), reg)
	dialer := reach.New(fl, s.log.With("component", "reach"), reg)
	js.SetNudger(dialer.Nudge)
	if err := js.Load(ctx); err != nil {
		return err
	}
	ro := rollout.New(s.cfg.Rollout, db, fl, js, s.log.With("component", "rollout"), reg)
	if err := ro.Refresh(ctx, true); err != nil {
		return fmt.Errorf("resolve effective policies: %w", err)
	}

	getCert, pin, err := s.serverCertificate(ca)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", s.cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (is another manager running? change http.listen)", s.cfg.HTTP.Listen, err)
	}
	info := &Info{Addr: ln.Addr().String(), CAFingerprint: pki.Fingerprint(pin), Store: db}
	info.URL = s.publicURL(ln.Addr())
	if err := s.bootstrapAdmin(ctx, db, info); err != nil {
		ln.Close()
		return err
	}

	issuer := &auth.Issuer{Store: db, AccessTTL: s.cfg.Auth.AccessTokenTTL, RefreshTTL: s.cfg.Auth.RefreshTokenTTL, Subjects: db}
	authn := principals{issuer}
	mux := &routes{ServeMux: http.NewServeMux()}
	oa := &auth.OAuth{Issuer: issuer, Accounts: db, Limiter: auth.NewLimiter(), Log: s.log.With("component", "oauth"), Now: time.Now,
		Audit: func(ctx context.Context, actor, remote, what string, status int) {
			id, _ := uuid.NewV7()
			b, _ := json.Marshal(map[string]string{"event": what})
			if err := db.AppendAudit(context.WithoutCancel(ctx), store.AuditEntry{ID: id.String(), Time: time.Now(), Actor: actor, Remote: remote,
				Method: http.MethodPost, Route: "/oauth/token", Summary: string(b), Status: status}); err != nil {
				s.log.Error("write audit entry", "err", err)
			}
		}}
	oa.Register(mux)
	// Flowmon's path for the same grants, its tokens valid for a day as
	// scripts written for Flowmon expect.
	oa.RegisterFlowmon(mux, auth.FlowmonTokenTTL)
	// The web console: its session endpoints and embedded pages.
	oa.RegisterConsole(mux, s.cfg.Auth.ConsoleSessionTTL)
	console.Register(mux)
	gw := gateway.New(s.cfg.Gateway, ca, db, fl, js, s.log.With("component", "gateway"), reg)
	gw.SetPolicies(ro)
	gw.SetEvents(events)
	gw.Register(mux)
	deps := api.Deps{
		Store: db, Fleet: fl, Jobs: js, Policies: db, Rollout: ro, Auth: authn, Telemetry: ts, Notifications: notes, CAFingerprint: info.CAFingerprint, CAPEM: string(pki.CertificatePEM(pin)),
		Version: s.opts.Version, Log: s.log.With("component", "api"),
	}
	if fw != nil {
		deps.Flows, deps.FlowCollector = fs, fw.collector
		loc, err := time.LoadLocation(s.cfg.Flows.FlowmonTimeZone) // checked by Validate
		if err != nil {
			ln.Close()
			return err
		}
		flowmon.New(flowmon.Deps{Flows: fs, Profiles: db.FlowProfiles(), Auth: authn, Location: loc, Log: s.log.With("component", "flowmon")}).Register(mux)
	}
	api.New(mux, deps)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if s.stopping.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "stopping")
			return
		}
		pctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := db.Ping(pctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "state store unreachable")
			return
		}
		fmt.Fprintln(w, "ready")
	})
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	if !s.cfg.HTTP.MetricsAnonymous {
		metrics = requireBearer(authn, "metrics:read", metrics)
	}
	mux.Handle("GET /metrics", metrics)

	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(ca.Cert)
	tlsCfg := pki.ServerConfig(getCert, clientCAs)
	sessions := newSessionStore(100_000, 24*time.Hour)
	tlsCfg.WrapSession, tlsCfg.UnwrapSession = sessions.wrap, sessions.unwrap
	info.Routes = mux.patterns
	srv := &http.Server{
		Handler:           mux,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       s.cfg.HTTP.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		// Failed handshakes (old TLS, foreign client certificates) are
		// routine on an Internet-facing port: debug level, not error.
		ErrorLog: slog.NewLogLogger(s.log.With("component", "http").Handler(), slog.LevelDebug),
	}

	// Agents' long polls would hold Shutdown for up to a minute.
	srv.RegisterOnShutdown(js.ReleaseWaiters)
	g, gctx := errgroup.WithContext(ctx)
	fctx, stopFleet := context.WithCancel(context.WithoutCancel(ctx))
	defer stopFleet()
	g.Go(func() error { return fl.Run(fctx) })
	g.Go(func() error { return js.Run(fctx) })
	g.Go(func() error { return ro.Run(fctx) })
	g.Go(func() error { return dialer.Run(fctx) })
	g.Go(func() error { return events.Run(fctx) })
	notes.start(g, fctx)
	g.Go(func() error { return retain(fctx, ts, s.cfg.Telemetry, s.log.With("component", "telemetry")) })
	if fw != nil {
		g.Go(func() error { return fw.run(fctx) })
		g.Go(func() error { return retainFlows(fctx, fs, s.cfg.Flows, s.log.With("component", "flows")) })
	}
	g.Go(func() error {
		// Connections the manager opens to agents (bidirectional and
		// manager-initiated), served like any other.
		if err := srv.Serve(tls.NewListener(dialer.Listener(), tlsCfg)); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve connections to agents: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("https server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		s.stopping.Store(true)
		s.log.Info("shutting down")
		// A fresh deadline: ctx is already cancelled.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		err := srv.Shutdown(sctx)
		if err != nil {
			// Handlers still running past the deadline: cut them off
			// before the store closes under them.
			s.log.Warn("requests still running at the shutdown deadline; closing connections", "err", err)
			err = srv.Close()
		}
		// The fleet stops after the listener so that the final flush
		// includes the last heartbeats.
		stopFleet()
		return err
	})
	if fw != nil {
		// A port in use must stop the start, not leave a manager that
		// silently collects nothing.
		select {
		case <-fw.collector.Ready():
		case <-gctx.Done():
			stopFleet()
			return g.Wait()
		}
	}
	s.info.Store(info)
	warnFileLimit(s.log)
	s.log.Info("manager listening", "url", info.URL, "addr", info.Addr, "ca_fingerprint", info.CAFingerprint,
		"store", db.DialectName())
	close(s.ready)
	err = g.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	s.log.Info("manager stopped")
	return nil
}

// keepDeliveries is how long the delivery history is kept: as long as
// events, at least a week; forever when events are (0). A notification's
// ID is checked against it, so a resend of something older notifies again.
func keepDeliveries(eventsMaxAge time.Duration) time.Duration {
	if eventsMaxAge == 0 {
		return 0
	}
	return max(eventsMaxAge, 7*24*time.Hour)
}

// alertingStore is the state store with alerts raised through the
// notifier, so they carry their notifications.
type alertingStore struct {
	*store.DB
	n *alerting.Notifier
}

func (a alertingStore) RaiseAlert(ctx context.Context, al store.Alert) (store.Alert, bool, error) {
	return a.n.RaiseAlert(ctx, al)
}

func (s *Server) openStore(ctx context.Context) (*store.DB, error) {
	switch s.cfg.Store.Driver {
	case "postgres":
		db, err := postgres.Open(ctx, s.cfg.Store.DSN)
		if err != nil {
			return nil, fmt.Errorf("open PostgreSQL state store: %w", err)
		}
		return db, nil
	default:
		path := s.cfg.Store.DSN
		if path == "" {
			path = filepath.Join(s.cfg.DataDir, "state.db")
		}
		db, err := sqlite.Open(ctx, path)
		if err != nil {
			return nil, fmt.Errorf("open SQLite state store %s: %w", path, err)
		}
		return db, nil
	}
}

// loadOrCreateCA returns the CA from the store, creating it on first start.
// Two manager nodes starting together may both create one; the store keeps
// the first and the loser loads it.
func loadOrCreateCA(ctx context.Context, db *store.DB, validity time.Duration, log *slog.Logger) (*pki.CA, error) {
	c, err := db.LoadCA(ctx)
	if errors.Is(err, store.ErrNotFound) {
		ca, err := pki.NewCA("Yagura CA", time.Now(), validity)
		if err != nil {
			return nil, err
		}
		certPEM, keyPEM, err := ca.PEM()
		if err != nil {
			return nil, err
		}
		err = db.SaveCA(ctx, store.CA{CertPEM: string(certPEM), KeyPEM: string(keyPEM), CreatedAt: time.Now()})
		if err == nil {
			log.Info("created the manager CA", "fingerprint", ca.Fingerprint(), "not_after", ca.Cert.NotAfter)
			return ca, nil
		}
		if !errors.Is(err, store.ErrConflict) {
			return nil, fmt.Errorf("save CA: %w", err)
		}
		c, err = db.LoadCA(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	ca, err := pki.ParseCA([]byte(c.CertPEM), []byte(c.KeyPEM))
	if err != nil {
		return nil, fmt.Errorf("stored CA: %w", err)
	}
	return ca, nil
}

// serverCertificate returns the certificate source for the listener and
// the certificate agents pin: the last one of the chain the server
// presents. That is the internal CA, unless the operator brought their own
// certificate; client certificates are always issued by the internal CA.
func (s *Server) serverCertificate(ca *pki.CA) (func(*tls.ClientHelloInfo) (*tls.Certificate, error), *x509.Certificate, error) {
	var c *tls.Certificate
	var get func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	if s.cfg.HTTP.CertFile != "" {
		kp, err := tls.LoadX509KeyPair(s.cfg.HTTP.CertFile, s.cfg.HTTP.KeyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("http.cert_file/key_file: %w", err)
		}
		c = &kp
		get = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c, nil }
	} else {
		r := &renewingCert{dir: s.cfg.DataDir, ca: ca, names: serverNames(s.cfg.HTTP.Names), validity: s.cfg.PKI.ServerCertValidity, log: s.log}
		var err error
		if r.cert, err = ensureServerCert(r.dir, ca, r.names, r.validity, time.Now(), s.log); err != nil {
			return nil, nil, err
		}
		c = r.cert
		get = r.get
	}
	pin, err := x509.ParseCertificate(c.Certificate[len(c.Certificate)-1])
	if err != nil {
		return nil, nil, fmt.Errorf("server certificate chain: %w", err)
	}
	if s.cfg.HTTP.CertFile != "" && pin.Equal(c.Leaf) {
		s.log.Warn("http.cert_file holds only the server certificate; agents will pin it directly and must re-enrol when it is renewed. Append the issuing CA to the file to pin the CA instead.")
	}
	return get, pin, nil
}

// publicURL is what operators and agents should use to reach this manager.
func (s *Server) publicURL(addr net.Addr) string {
	if s.cfg.HTTP.PublicURL != "" {
		return s.cfg.HTTP.PublicURL
	}
	host, port, _ := net.SplitHostPort(addr.String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		if h, err := os.Hostname(); err == nil && h != "" {
			host = h
		} else {
			host = "localhost"
		}
	}
	return (&url.URL{Scheme: "https", Host: net.JoinHostPort(host, port)}).String()
}

// bootstrapAdmin makes sure an administrator can sign in: when the manager
// has no user yet (or with --reset-admin-password) it creates the user
// "admin" with a random password, or YAGURA_ADMIN_PASSWORD, and writes it,
// with the URL and CA fingerprint, to the credentials file (mode 0600).
func (s *Server) bootstrapAdmin(ctx context.Context, db *store.DB, info *Info) error {
	path := filepath.Join(s.cfg.DataDir, s.opts.CredentialsFile)
	info.CredentialsPath = path
	users, err := db.ListUsers(ctx)
	if err != nil {
		return fmt.Errorf("list users: %w", err)
	}
	if len(users) > 0 && !s.opts.ResetAdminPassword {
		if f, err := credentials.Load(path); err == nil {
			// Keep the file current if the address changed.
			if f.URL != info.URL || f.CAFingerprint != info.CAFingerprint {
				f.URL, f.CAFingerprint = info.URL, info.CAFingerprint
				return credentials.Save(path, f)
			}
		}
		return nil
	}
	password := s.opts.AdminPassword
	if password == "" {
		if password, err = auth.NewPassword(); err != nil {
			return err
		}
	}
	hash, err := auth.HashPassword(password)
	if err != nil {
		return fmt.Errorf("admin password: %w", err)
	}
	u, err := db.UserByName(ctx, "admin")
	switch {
	case errors.Is(err, store.ErrNotFound):
		id, _ := uuid.NewV7()
		err = db.CreateUser(ctx, store.User{ID: id.String(), Username: "admin", PasswordHash: hash, Role: auth.RoleAdmin, CreatedAt: time.Now()})
	case err == nil:
		u.PasswordHash, u.Role, u.DisabledAt = hash, auth.RoleAdmin, time.Time{}
		if err = db.UpdateUser(ctx, u); err == nil {
			err = db.RevokeSubjectTokens(ctx, "user:admin", time.Now())
		}
	}
	if err != nil {
		return fmt.Errorf("bootstrap the admin user: %w", err)
	}
	if err := credentials.Save(path, &credentials.File{
		URL: info.URL, CAFingerprint: info.CAFingerprint, User: "admin", Password: password,
		Note: "Bootstrap administrator of this Yagura manager. Keep this file secret; change the password with `yagura ctl users set-password admin`.",
	}); err != nil {
		return err
	}
	info.AdminPassword = password
	s.log.Info("administrator \"admin\" created; credentials written", "path", path)
	return nil
}

// routes is a ServeMux that remembers its patterns.
type routes struct {
	*http.ServeMux
	patterns []string
}

func (r *routes) Handle(pattern string, h http.Handler) {
	r.patterns = append(r.patterns, pattern)
	r.ServeMux.Handle(pattern, h)
}

func (r *routes) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	r.patterns = append(r.patterns, pattern)
	r.ServeMux.HandleFunc(pattern, h)
}

// principals adapts the token issuer to the API.
type principals struct{ issuer *auth.Issuer }

func (p principals) Authenticate(ctx context.Context, bearer string) (auth.Principal, bool) {
	pr, err := p.issuer.Authenticate(ctx, bearer, time.Now())
	return pr, err == nil
}

// requireBearer protects a plain handler with the API's authentication and
// a permission.
func requireBearer(authn api.Authenticator, perm string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bearer, ok := api.BearerToken(r.Header.Get("Authorization"))
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="yagura"`)
			http.Error(w, "authentication required (or set http.metrics_anonymous: true)", http.StatusUnauthorized)
			return
		}
		p, ok := authn.Authenticate(r.Context(), bearer)
		if !ok {
			http.Error(w, "invalid bearer token", http.StatusUnauthorized)
			return
		}
		if !auth.Allowed(p.Role, perm) {
			http.Error(w, "role "+p.Role+" may not read metrics", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}
