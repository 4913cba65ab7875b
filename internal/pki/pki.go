// Package pki provides Yagura's internal certificate authority, the
// certificates it issues to the manager and to agents, CA pinning by
// fingerprint, and the TLS settings both ends must use.
//
// It imports only the standard library so that the agent build can use it.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"
)

// agentURIPrefix marks the URI SAN that binds a certificate to an agent ID.
// The ID lives in a SAN rather than only the CN because SANs are what modern
// verifiers read, and a URI cannot be confused with a host name.
const agentURIPrefix = "urn:yagura:agent:"

// backdate absorbs small clock differences between manager and agents so a
// freshly issued certificate is not "not yet valid" on a host a little behind.
const backdate = 5 * time.Minute

// CA is the manager's certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA creates a self-signed ECDSA P-256 CA.
func NewCA(name string, now time.Time, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Yagura"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("self-sign CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse new CA: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// ParseCA reads a CA from PEM.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCertificatePEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, errors.New("CA certificate: not a CA")
	}
	key, err := ParseECKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("CA key does not match the CA certificate")
	}
	return &CA{Cert: cert, Key: key}, nil
}

// PEM returns the CA certificate and key in PEM form.
func (ca *CA) PEM() (certPEM, keyPEM []byte, err error) {
	keyPEM, err = MarshalECKeyPEM(ca.Key)
	if err != nil {
		return nil, nil, err
	}
	return CertificatePEM(ca.Cert), keyPEM, nil
}

// Fingerprint is the hex SHA-256 of the CA certificate, what agents pin.
func (ca *CA) Fingerprint() string { return Fingerprint(ca.Cert) }

// IssueServer creates a key and a server certificate for the given DNS names
// and IP addresses. It returns a chain (leaf then CA) so that clients that
// pin the CA by fingerprint find it in the handshake.
func (ca *CA) IssueServer(names []string, now time.Time, validity time.Duration) (chainPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate server key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "yagura manager", Organization: []string{"Yagura"}},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if n != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign server certificate: %w", err)
	}
	keyPEM, err = MarshalECKeyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	chain := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	chain = append(chain, CertificatePEM(ca.Cert)...)
	return chain, keyPEM, nil
}

// SignAgentCSR issues a client certificate bound to agentID for the public
// key in csrPEM. The CSR's own subject is ignored: the manager, not the
// agent, decides the identity.
func (ca *CA) SignAgentCSR(csrPEM []byte, agentID string, now time.Time, validity time.Duration) (*x509.Certificate, error) {
	csr, err := ParseCSRPEM(csrPEM)
	if err != nil {
		return nil, err
	}
	uri, err := url.Parse(agentURIPrefix + agentID)
	if err != nil {
		return nil, fmt.Errorf("agent ID %q: %w", agentID, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: agentID, Organization: []string{"Yagura agents"}},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{uri},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign agent certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// ParseCSRPEM parses and checks a PEM certificate request: it must be
// self-signed correctly and carry an ECDSA P-256 or Ed25519 key, or an RSA
// key of at least 2048 bits.
func ParseCSRPEM(csrPEM []byte) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("certificate request: not a PEM \"CERTIFICATE REQUEST\" block")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request signature: %w", err)
	}
	if err := checkKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	return csr, nil
}

func checkKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("ECDSA curve %s not accepted (use P-256 or P-384)", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.Size()*8 < 2048 {
			return fmt.Errorf("RSA key of %d bits is too short (at least 2048)", k.Size()*8)
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("unsupported key type %T", pub)
	}
	return nil
}

// NewAgentKey creates the agent's key pair and a CSR for it. The CSR's CN is
// informational only (the hostname); the manager assigns the identity.
func NewAgentKey(hostname string) (keyPEM, csrPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate agent key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: hostname},
	}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate request: %w", err)
	}
	keyPEM, err = MarshalECKeyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	return keyPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// CSRForKey makes a new certificate request for an existing key, used when an
// agent renews its certificate without changing keys.
func CSRForKey(keyPEM []byte, hostname string) ([]byte, error) {
	key, err := ParseECKeyPEM(keyPEM)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: hostname},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("create certificate request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// AgentID returns the agent ID a certificate is bound to.
func AgentID(cert *x509.Certificate) (string, error) {
	// Read the parsed URN without rebuilding its string: this runs on
	// every heartbeat.
	const opaquePrefix = "yagura:agent:"
	for _, u := range cert.URIs {
		if u.Scheme == "urn" && strings.HasPrefix(u.Opaque, opaquePrefix) && len(u.Opaque) > len(opaquePrefix) {
			return u.Opaque[len(opaquePrefix):], nil
		}
	}
	return "", errors.New("certificate is not bound to an agent ID")
}

// Fingerprint is the lowercase hex SHA-256 of a certificate's DER encoding.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// ParseFingerprint accepts a SHA-256 fingerprint as operators paste it: hex,
// any case, with or without colons or spaces, optionally prefixed "sha256:" or
// "SHA256 Fingerprint=" (as `openssl x509 -fingerprint -sha256` prints it).
func ParseFingerprint(s string) (string, error) {
	t := strings.TrimSpace(s)
	if _, after, ok := strings.Cut(t, "="); ok && strings.Contains(strings.ToLower(t), "fingerprint") {
		t = after
	} else if len(t) > 7 && strings.EqualFold(t[:7], "sha256:") {
		t = t[7:]
	}
	t = strings.NewReplacer(":", "", " ", "", "-", "").Replace(t)
	t = strings.ToLower(t)
	if len(t) != sha256.Size*2 {
		return "", fmt.Errorf("CA fingerprint %q: want a SHA-256 (64 hex digits), got %d digits", s, len(t))
	}
	if _, err := hex.DecodeString(t); err != nil {
		return "", fmt.Errorf("CA fingerprint %q: not hexadecimal", s)
	}
	return t, nil
}

// CertificatePEM encodes one certificate.
func CertificatePEM(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}

// ParseCertificatePEM parses the first certificate in a PEM bundle.
func ParseCertificatePEM(b []byte) (*x509.Certificate, error) {
	certs, err := ParseCertificatesPEM(b)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// ParseCertificatesPEM parses every certificate in a PEM bundle.
func ParseCertificatesPEM(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

// MarshalECKeyPEM encodes an ECDSA key as PKCS#8 PEM.
func MarshalECKeyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseECKeyPEM reads an ECDSA private key in PKCS#8 or SEC 1 PEM.
func ParseECKeyPEM(b []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM private key found")
	}
	if block.Type == "EC PRIVATE KEY" {
		return x509.ParseECPrivateKey(block.Bytes)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private key is %T, want ECDSA", k)
	}
	return ec, nil
}

// SerialHex renders a certificate serial number for storage and display.
func SerialHex(cert *x509.Certificate) string { return cert.SerialNumber.Text(16) }

func newSerial() (*big.Int, error) {
	// 128 random bits, as CAs are expected to use (at least 64 bits of entropy).
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	b[0] &= 0x7f // keep it positive in DER
	return new(big.Int).SetBytes(b), nil
}

// SameNames reports whether cert covers exactly the given names, so the
// manager can tell when its server certificate must be reissued.
func SameNames(cert *x509.Certificate, names []string) bool {
	want := map[string]bool{}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			want[ip.String()] = true
		} else if n != "" {
			want[strings.ToLower(n)] = true
		}
	}
	got := map[string]bool{}
	for _, n := range cert.DNSNames {
		got[strings.ToLower(n)] = true
	}
	for _, ip := range cert.IPAddresses {
		got[ip.String()] = true
	}
	if len(got) != len(want) {
		return false
	}
	for n := range want {
		if !got[n] {
			return false
		}
	}
	return true
}
