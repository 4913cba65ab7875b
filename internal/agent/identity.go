package agent

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/yagura/yagura/internal/pki"
)

// Identity is what enrolment gives an agent, kept in its data folder.
type Identity struct {
	AgentID       string    `json:"agent_id"`
	Manager       string    `json:"manager"`
	CAFingerprint string    `json:"ca_fingerprint"`
	EnrolledAt    time.Time `json:"enrolled_at"`

	// Loaded from the PEM files next to identity.json.
	CertPEM []byte `json:"-"`
	KeyPEM  []byte `json:"-"`
	CAPEM   []byte `json:"-"`
}

// Files in the agent's data folder. The key never leaves the host.
const (
	identityFile = "identity.json"
	certFile     = "agent.crt"
	keyFile      = "agent.key"
	caFile       = "ca.crt"
)

// ErrNotEnrolled means the data folder holds no identity.
var ErrNotEnrolled = errors.New("this host is not enrolled")

// LoadIdentity reads the identity in dir.
func LoadIdentity(dir string) (*Identity, error) {
	b, err := os.ReadFile(filepath.Join(dir, identityFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w (no %s in %s): run `yagura agent enroll` first", ErrNotEnrolled, identityFile, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("read agent identity: %w", err)
	}
	var id Identity
	if err := json.Unmarshal(b, &id); err != nil {
		return nil, fmt.Errorf("agent identity %s: %w", filepath.Join(dir, identityFile), err)
	}
	for _, f := range []struct {
		name string
		dst  *[]byte
	}{{certFile, &id.CertPEM}, {keyFile, &id.KeyPEM}, {caFile, &id.CAPEM}} {
		if *f.dst, err = os.ReadFile(filepath.Join(dir, f.name)); err != nil {
			return nil, fmt.Errorf("agent identity is incomplete (enrol again with --force): %w", err)
		}
	}
	return &id, nil
}

// Save writes the identity atomically: every file is written aside and
// renamed, identity.json last, so a crash leaves either the old identity or
// the new one.
func (id *Identity) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create agent data folder: %w", err)
	}
	meta, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{keyFile, id.KeyPEM, 0o600}, {certFile, id.CertPEM, 0o644}, {caFile, id.CAPEM, 0o644}, {identityFile, meta, 0o600},
	} {
		if err := writeFileAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// RemoveIdentity deletes an identity, for re-enrolment with --force.
func RemoveIdentity(dir string) error {
	for _, n := range []string{identityFile, certFile, keyFile, caFile} {
		if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove old identity: %w", err)
		}
	}
	return nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// TLSCertificate returns the key pair for the TLS client.
func (id *Identity) TLSCertificate() (*tls.Certificate, error) {
	c, err := tls.X509KeyPair(id.CertPEM, id.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("agent certificate and key: %w", err)
	}
	return &c, nil
}

// Certificate parses the agent certificate.
func (id *Identity) Certificate() (*x509.Certificate, error) {
	return pki.ParseCertificatePEM(id.CertPEM)
}

// Roots returns the stored manager CA.
func (id *Identity) Roots() []*x509.Certificate {
	certs, err := pki.ParseCertificatesPEM(id.CAPEM)
	if err != nil {
		return nil // the pin alone still identifies the manager
	}
	return certs
}

// NeedsRenewal reports whether less than a third of the certificate's
// lifetime is left: early enough that an agent offline for a while still
// renews before expiry.
func NeedsRenewal(cert *x509.Certificate, now time.Time) bool {
	life := cert.NotAfter.Sub(cert.NotBefore)
	return cert.NotAfter.Sub(now) < life/3
}
