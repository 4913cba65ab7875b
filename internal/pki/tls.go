package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
)

// tls12Suites are the only TLS 1.2 suites Yagura speaks: forward-secret key
// exchange and AEAD encryption. TLS 1.3 suites are all AEAD and not
// configurable in Go, so TLS 1.3 is accepted as a whole.
var tls12Suites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
}

// TLS12Suites returns the TLS 1.2 cipher suites both ends allow.
func TLS12Suites() []uint16 { return slices.Clone(tls12Suites) }

// ServerConfig returns the manager's TLS settings: TLS 1.3, or TLS 1.2 with
// ECDHE and AES-GCM only. Client certificates are verified against clientCAs
// when presented (enrolment happens before the agent has one); handlers that
// need an agent identity must insist on a verified chain.
func ServerConfig(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error), clientCAs *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		CipherSuites:   TLS12Suites(),
		GetCertificate: getCert,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		ClientCAs:      clientCAs,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}

// PinnedClientConfig returns client TLS settings that trust a server only if
// its chain leads to a certificate whose SHA-256 fingerprint is pin. roots
// are certificates already known (the stored CA); the handshake's own chain
// is searched too, which is how an agent that has never seen the CA checks it
// against a fingerprint given by the administrator.
//
// Standard verification is replaced, not weakened: the pinned certificate
// becomes the only root, and the server name is checked as usual.
func PinnedClientConfig(pin, serverName string, roots []*x509.Certificate) (*tls.Config, error) {
	pin, err := ParseFingerprint(pin)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: TLS12Suites(),
		ServerName:   serverName,
		// Verification happens in VerifyConnection against the pin.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPinned(cs, pin, serverName, roots)
		},
	}, nil
}

// ErrPinMismatch means the manager presented a chain that does not contain
// the pinned CA: the wrong manager, a proxy intercepting TLS, or a manager
// whose CA was replaced.
var ErrPinMismatch = errors.New("manager certificate does not chain to the pinned CA")

func verifyPinned(cs tls.ConnectionState, pin, serverName string, roots []*x509.Certificate) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("manager presented no certificate")
	}
	pool := x509.NewCertPool()
	found := false
	for _, c := range append(slices.Clone(roots), cs.PeerCertificates...) {
		if Fingerprint(c) == pin {
			pool.AddCert(c)
			found = true
		}
	}
	if !found {
		chain := cs.PeerCertificates
		return fmt.Errorf("%w: pinned %s, presented %s (%q)", ErrPinMismatch, pin,
			Fingerprint(chain[len(chain)-1]), chain[len(chain)-1].Subject.CommonName)
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	leaf := cs.PeerCertificates[0]
	if Fingerprint(leaf) == pin {
		// The server presented the pinned certificate itself (a self-signed
		// server certificate): the pin is the whole proof.
		return nil
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		DNSName:       serverName,
		Roots:         pool,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("verify manager certificate: %w", err)
	}
	return nil
}

// RootFingerprint returns the fingerprint of the last certificate a server
// presented, the one an operator is asked to confirm on first contact.
func RootFingerprint(cs tls.ConnectionState) (fp, subject string, err error) {
	if len(cs.PeerCertificates) == 0 {
		return "", "", errors.New("manager presented no certificate")
	}
	c := cs.PeerCertificates[len(cs.PeerCertificates)-1]
	return Fingerprint(c), c.Subject.CommonName, nil
}
