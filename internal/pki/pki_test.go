package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func newCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA("Test CA", time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestCARoundTrip(t *testing.T) {
	ca := newCA(t)
	certPEM, keyPEM, err := ca.PEM()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if got.Fingerprint() != ca.Fingerprint() {
		t.Errorf("fingerprint changed: %s != %s", got.Fingerprint(), ca.Fingerprint())
	}
	if !got.Cert.IsCA || got.Cert.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("want an ECDSA CA, got IsCA=%v alg=%v", got.Cert.IsCA, got.Cert.PublicKeyAlgorithm)
	}
	other := newCA(t)
	_, otherKey, _ := other.PEM()
	if _, err := ParseCA(certPEM, otherKey); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("mismatched key: got %v", err)
	}
}

func TestAgentCertificate(t *testing.T) {
	ca := newCA(t)
	keyPEM, csrPEM, err := NewAgentKey("web01")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.SignAgentCSR(csrPEM, "agent-123", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := AgentID(cert)
	if err != nil || id != "agent-123" {
		t.Fatalf("AgentID = %q, %v; want agent-123", id, err)
	}
	// The certificate verifies as a client certificate under the CA, and
	// pairs with the agent's key.
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("verify agent certificate: %v", err)
	}
	if _, err := tls.X509KeyPair(CertificatePEM(cert), keyPEM); err != nil {
		t.Errorf("certificate does not pair with key: %v", err)
	}
	// Renewal with the same key.
	csr2, err := CSRForKey(keyPEM, "web01")
	if err != nil {
		t.Fatal(err)
	}
	cert2, err := ca.SignAgentCSR(csr2, "agent-123", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if SerialHex(cert2) == SerialHex(cert) {
		t.Error("renewed certificate reuses the serial number")
	}
}

func TestParseCSRRejects(t *testing.T) {
	ca := newCA(t)
	_, csrPEM, _ := NewAgentKey("h")
	tests := []struct {
		name, csr, want string
	}{
		{"empty", "", "not a PEM"},
		{"certificate instead", string(CertificatePEM(ca.Cert)), "not a PEM"},
		{"garbage in block", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "certificate request"},
		{"tampered", tamper(string(csrPEM)), "certificate request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ca.SignAgentCSR([]byte(tc.csr), "x", time.Now(), time.Hour)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
}

// tamper flips a character inside the base64 body.
func tamper(p string) string {
	lines := strings.Split(p, "\n")
	b := []byte(lines[2])
	if b[10] == 'A' {
		b[10] = 'B'
	} else {
		b[10] = 'A'
	}
	lines[2] = string(b)
	return strings.Join(lines, "\n")
}

func TestParseFingerprint(t *testing.T) {
	const fp = "3f9a0b7c1d2e3f405162738495a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e"
	colons := ""
	for i := 0; i < len(fp); i += 2 {
		if i > 0 {
			colons += ":"
		}
		colons += strings.ToUpper(fp[i : i+2])
	}
	tests := []struct {
		name, in, want, err string
	}{
		{"plain", fp, fp, ""},
		{"upper", strings.ToUpper(fp), fp, ""},
		{"openssl", "SHA256 Fingerprint=" + colons, fp, ""},
		{"prefixed", "sha256:" + fp, fp, ""},
		{"spaces", "  " + fp + "\n", fp, ""},
		{"short", fp[:60], "", "64 hex digits"},
		{"not hex", strings.Repeat("zz", 32), "", "not hexadecimal"},
		{"empty", "", "", "64 hex digits"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseFingerprint(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %q, %v; want error containing %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// serve starts an HTTPS server with the manager's TLS settings.
func serve(t *testing.T, ca *CA) *httptest.Server {
	t.Helper()
	chain, key, err := ca.IssueServer([]string{"localhost", "127.0.0.1"}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := tls.X509KeyPair(chain, key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.VerifiedChains) > 0 {
			id, _ := AgentID(r.TLS.VerifiedChains[0][0])
			io.WriteString(w, "agent "+id)
			return
		}
		io.WriteString(w, "anonymous")
	}))
	srv.TLS = ServerConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &kp, nil }, pool)
	// httptest installs its own certificate unless one is given.
	srv.TLS.Certificates = []tls.Certificate{kp}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string, tc *tls.Config) (string, error) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestPinnedClient(t *testing.T) {
	ca := newCA(t)
	srv := serve(t, ca)

	t.Run("pinned CA is trusted", func(t *testing.T) {
		tc, err := PinnedClientConfig(ca.Fingerprint(), "127.0.0.1", nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := get(t, srv.URL, tc); err != nil || got != "anonymous" {
			t.Fatalf("got %q, %v", got, err)
		}
	})
	t.Run("other pin is refused", func(t *testing.T) {
		tc, _ := PinnedClientConfig(newCA(t).Fingerprint(), "127.0.0.1", nil)
		_, err := get(t, srv.URL, tc)
		if !errors.Is(err, ErrPinMismatch) {
			t.Fatalf("got %v, want ErrPinMismatch", err)
		}
	})
	t.Run("wrong host name is refused", func(t *testing.T) {
		tc, _ := PinnedClientConfig(ca.Fingerprint(), "manager.example", nil)
		_, err := get(t, srv.URL, tc)
		if err == nil || !strings.Contains(err.Error(), "manager.example") {
			t.Fatalf("got %v, want a host name error", err)
		}
	})
	t.Run("client certificate maps to agent", func(t *testing.T) {
		keyPEM, csrPEM, _ := NewAgentKey("h")
		cert, _ := ca.SignAgentCSR(csrPEM, "a-1", time.Now(), time.Hour)
		kp, _ := tls.X509KeyPair(CertificatePEM(cert), keyPEM)
		tc, _ := PinnedClientConfig(ca.Fingerprint(), "127.0.0.1", nil)
		tc.Certificates = []tls.Certificate{kp}
		if got, err := get(t, srv.URL, tc); err != nil || got != "agent a-1" {
			t.Fatalf("got %q, %v", got, err)
		}
	})
	t.Run("client certificate from another CA is refused", func(t *testing.T) {
		other := newCA(t)
		keyPEM, csrPEM, _ := NewAgentKey("h")
		cert, _ := other.SignAgentCSR(csrPEM, "a-1", time.Now(), time.Hour)
		kp, _ := tls.X509KeyPair(CertificatePEM(cert), keyPEM)
		tc, _ := PinnedClientConfig(ca.Fingerprint(), "127.0.0.1", nil)
		tc.Certificates = []tls.Certificate{kp}
		if got, err := get(t, srv.URL, tc); err == nil {
			t.Fatalf("foreign certificate accepted: %q", got)
		}
	})
	t.Run("expired client certificate is refused", func(t *testing.T) {
		keyPEM, csrPEM, _ := NewAgentKey("h")
		cert, _ := ca.SignAgentCSR(csrPEM, "a-1", time.Now().Add(-3*time.Hour), time.Hour)
		kp, _ := tls.X509KeyPair(CertificatePEM(cert), keyPEM)
		tc, _ := PinnedClientConfig(ca.Fingerprint(), "127.0.0.1", nil)
		tc.Certificates = []tls.Certificate{kp}
		if got, err := get(t, srv.URL, tc); err == nil {
			t.Fatalf("expired certificate accepted: %q", got)
		}
	})
}

func TestServerRefusesWeakTLS(t *testing.T) {
	ca := newCA(t)
	srv := serve(t, ca)
	host := strings.TrimPrefix(srv.URL, "https://")
	tests := []struct {
		name string
		cfg  *tls.Config
	}{
		{"TLS 1.1", &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}},
		{"TLS 1.0", &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10}},
		{"TLS 1.2 CBC", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}}},
		{"TLS 1.2 no forward secrecy", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.InsecureSkipVerify = true
			d := tls.Dialer{Config: tc.cfg}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			conn, err := d.DialContext(ctx, "tcp", host)
			if err == nil {
				st := conn.(*tls.Conn).ConnectionState()
				conn.Close()
				t.Fatalf("handshake succeeded with version %x suite %x", st.Version, st.CipherSuite)
			}
		})
	}
	t.Run("TLS 1.2 ECDHE AES-GCM accepted", func(t *testing.T) {
		d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}}
		conn, err := d.DialContext(context.Background(), "tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if s := conn.(*tls.Conn).ConnectionState().CipherSuite; s != tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 && s != tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 {
			t.Errorf("negotiated %s", tls.CipherSuiteName(s))
		}
	})
	t.Run("TLS 1.3 accepted", func(t *testing.T) {
		d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}}
		conn, err := d.DialContext(context.Background(), "tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
	})
}

func TestSameNames(t *testing.T) {
	ca := newCA(t)
	chain, _, err := ca.IssueServer([]string{"Manager.Example", "10.0.0.1", "::1"}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := ParseCertificatePEM(chain)
	if !SameNames(leaf, []string{"manager.example", "0:0:0:0:0:0:0:1", "10.0.0.1"}) {
		t.Error("same names reported different")
	}
	if SameNames(leaf, []string{"manager.example", "10.0.0.1"}) {
		t.Error("missing name not noticed")
	}
	certs, err := ParseCertificatesPEM(chain)
	if err != nil || len(certs) != 2 || Fingerprint(certs[1]) != ca.Fingerprint() {
		t.Errorf("server chain must end with the CA: %d certs, %v", len(certs), err)
	}
}

func FuzzParseFingerprint(f *testing.F) {
	f.Add("3f9a0b7c1d2e3f405162738495a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e")
	f.Add("SHA256 Fingerprint=AB:CD")
	f.Add("sha256:")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseFingerprint(s)
		if err != nil {
			return
		}
		if len(got) != 64 || strings.ToLower(got) != got {
			t.Fatalf("accepted %q as %q", s, got)
		}
		again, err := ParseFingerprint(got)
		if err != nil || again != got {
			t.Fatalf("not idempotent: %q -> %q (%v)", got, again, err)
		}
	})
}

func FuzzParseCSRPEM(f *testing.F) {
	_, csr, _ := NewAgentKey("seed")
	f.Add(csr)
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		csr, err := ParseCSRPEM(b)
		if err == nil && csr.CheckSignature() != nil {
			t.Fatal("accepted a CSR with a bad signature")
		}
	})
}
