package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/yagura/yagura/internal/pki"
)

// serverNames are the names the generated certificate covers: this host's
// name, localhost, the loopback addresses, every address of this host (so
// agents can use an IP), and the operator's extra names.
func serverNames(extra []string) []string {
	names := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && h != "" {
		names = append(names, strings.ToLower(h))
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLinkLocalUnicast() {
				names = append(names, n.IP.String())
			}
		}
	}
	for _, e := range extra {
		names = append(names, strings.ToLower(strings.TrimSpace(e)))
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// ensureServerCert loads DATA/server.crt and server.key, and issues new ones
// when they are missing, signed by another CA, for other names, or within
// 30 days of expiry.
func ensureServerCert(dir string, ca *pki.CA, names []string, validity time.Duration, now time.Time, log *slog.Logger) (*tls.Certificate, error) {
	certPath, keyPath := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	reason := ""
	c, err := tls.LoadX509KeyPair(certPath, keyPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		reason = "none yet"
	case err != nil:
		reason = "unreadable: " + err.Error()
	default:
		leaf, perr := x509.ParseCertificate(c.Certificate[0])
		switch {
		case perr != nil:
			reason = "unparsable"
		case leaf.CheckSignatureFrom(ca.Cert) != nil:
			reason = "signed by another CA"
		case !pki.SameNames(leaf, names):
			reason = "host names or addresses changed"
		case leaf.NotAfter.Sub(now) < 30*24*time.Hour:
			reason = "expires soon"
		}
	}
	if reason == "" {
		return &c, nil
	}
	chain, key, err := ca.IssueServer(names, now, validity)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyPath+".tmp", key, 0o600); err != nil {
		return nil, fmt.Errorf("write server key: %w", err)
	}
	if err := os.WriteFile(certPath+".tmp", chain, 0o644); err != nil {
		return nil, fmt.Errorf("write server certificate: %w", err)
	}
	for _, p := range []string{keyPath, certPath} {
		if err := os.Rename(p+".tmp", p); err != nil {
			return nil, fmt.Errorf("install server certificate: %w", err)
		}
	}
	log.Info("issued the manager's server certificate", "reason", reason, "names", names)
	nc, err := tls.X509KeyPair(chain, key)
	if err != nil {
		return nil, fmt.Errorf("new server certificate: %w", err)
	}
	return &nc, nil
}

// renewingCert serves the generated server certificate and reissues it
// when it nears expiry, so a manager that runs for longer than the
// certificate's lifetime keeps its agents.
type renewingCert struct {
	dir      string
	ca       *pki.CA
	names    []string
	validity time.Duration
	log      *slog.Logger

	mu   sync.Mutex
	cert *tls.Certificate
}

func (r *renewingCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cert.Leaf != nil && time.Until(r.cert.Leaf.NotAfter) > 30*24*time.Hour {
		return r.cert, nil
	}
	c, err := ensureServerCert(r.dir, r.ca, r.names, r.validity, time.Now(), r.log)
	if err != nil {
		// Keep serving the old one; the next handshake tries again.
		r.log.Error("renew the server certificate", "err", err)
		return r.cert, nil
	}
	r.cert = c
	return c, nil
}
