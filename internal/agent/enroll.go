package agent

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/yagura/yagura/internal/pki"
	"github.com/yagura/yagura/internal/proto"
)

// EnrollOptions are the inputs of `yagura agent enroll`.
type EnrollOptions struct {
	Manager       string
	Token         string
	CAFingerprint string // empty: trust on first use, see Accept and Confirm
	// Accept trusts the fingerprint the manager presents without asking
	// (for scripted installs where the network path is trusted).
	Accept bool
	// Confirm asks the operator whether to trust a fingerprint; nil when
	// there is nobody to ask.
	Confirm func(fingerprint, subject string) bool
	// Force discards an existing identity.
	Force bool
	// Proxy is the HTTP proxy to go through; nil: the environment's.
	Proxy   *url.URL
	DataDir string
	Version string
	// Notify tells the operator what is going on (which fingerprint was
	// trusted); may be nil.
	Notify func(msg string)
}

// ErrAlreadyEnrolled is returned when an identity exists and Force is off.
var ErrAlreadyEnrolled = errors.New("this host is already enrolled")

// ErrFingerprintUnconfirmed is returned when nobody confirmed the manager's
// CA fingerprint.
var ErrFingerprintUnconfirmed = errors.New("manager CA fingerprint not confirmed")

// Enroll obtains an identity from the manager and saves it in DataDir.
func Enroll(ctx context.Context, o EnrollOptions) (*Identity, error) {
	notify := o.Notify
	if notify == nil {
		notify = func(string) {}
	}
	old, err := LoadIdentity(o.DataDir)
	if err == nil {
		if !o.Force {
			return nil, fmt.Errorf("%w as agent %s with manager %s; pass --force to discard that identity and enrol again", ErrAlreadyEnrolled, old.AgentID, old.Manager)
		}
	} else if !errors.Is(err, ErrNotEnrolled) && !o.Force {
		return nil, err
	}
	if _, err := ParseManagerURL(o.Manager); err != nil {
		return nil, err
	}
	if o.Token == "" {
		return nil, errors.New("an activation token is required (--token); create one with `yagura ctl tokens create`")
	}
	pin := o.CAFingerprint
	if pin != "" {
		p, err := pki.ParseFingerprint(pin)
		if err != nil {
			return nil, err
		}
		pin = p
	} else {
		fp, subject, err := ProbeCA(ctx, o.Manager, o.Proxy)
		if err != nil {
			return nil, err
		}
		switch {
		case o.Accept:
			notify(fmt.Sprintf("Trusting the manager CA %q with SHA-256 fingerprint %s (--accept-fingerprint).", subject, fp))
		case o.Confirm != nil && o.Confirm(fp, subject):
		default:
			return nil, fmt.Errorf("%w: the manager presents CA %q with SHA-256 fingerprint\n  %s\ncompare it with the one `yagura server` printed at start (or `yagura ctl ca`), then run again with --ca-fingerprint %s, or pass --accept-fingerprint to trust it without checking", ErrFingerprintUnconfirmed, subject, fp, fp)
		}
		pin = fp
	}

	inv := Inventory(o.Version)
	keyPEM, csrPEM, err := pki.NewAgentKey(inv.Hostname)
	if err != nil {
		return nil, err
	}
	// Re-enrolling with the same manager: present the old certificate, so
	// the manager retires the old computer record instead of leaving it to
	// go offline forever. Only a certificate that manager would accept is
	// presented; anything else would fail the handshake.
	copts := ClientOptions{Manager: o.Manager, CAFingerprint: pin, Proxy: o.Proxy}
	if old != nil && old.Manager == o.Manager && old.CAFingerprint == pin {
		if c, err := old.Certificate(); err == nil && time.Now().Before(c.NotAfter) {
			copts.Cert, _ = old.TLSCertificate()
		}
	}
	client, err := NewClient(copts)
	if err != nil {
		return nil, err
	}
	defer client.Close()
	resp, err := client.Enroll(ctx, &proto.EnrollRequest{V: proto.Version, Token: o.Token, CSR: string(csrPEM), Inventory: inv})
	if err != nil {
		return nil, fmt.Errorf("enrol with %s: %w", o.Manager, err)
	}
	id := &Identity{
		AgentID: resp.AgentID, Manager: o.Manager, CAFingerprint: pin, EnrolledAt: time.Now().UTC(),
		CertPEM: []byte(resp.Certificate), KeyPEM: keyPEM, CAPEM: []byte(resp.CA),
	}
	if _, err := id.TLSCertificate(); err != nil {
		return nil, fmt.Errorf("manager returned an unusable certificate: %w", err)
	}
	// Save replaces every file, identity.json last: no need to remove the
	// old identity first and risk being left with none.
	if err := id.Save(o.DataDir); err != nil {
		return nil, err
	}
	return id, nil
}
