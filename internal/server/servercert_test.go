package server

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/pki"
)

func TestServerCertificateRenewsWhileRunning(t *testing.T) {
	ca, err := pki.NewCA("Test CA", time.Now(), 10*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	names := []string{"127.0.0.1", "localhost"}
	// A certificate with ten days left, as a long-running manager would
	// eventually hold.
	short, err := ensureServerCert(dir, ca, names, 40*24*time.Hour, time.Now().Add(-30*24*time.Hour), log)
	if err != nil {
		t.Fatal(err)
	}
	r := &renewingCert{dir: dir, ca: ca, names: names, validity: 365 * 24 * time.Hour, log: log, cert: short}
	got, err := r.get(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Leaf.NotAfter.After(short.Leaf.NotAfter.Add(300 * 24 * time.Hour)) {
		t.Fatalf("not renewed: expires %s (was %s)", got.Leaf.NotAfter, short.Leaf.NotAfter)
	}
	again, _ := r.get(nil)
	if again != got {
		t.Error("a fresh certificate was reissued again")
	}
	// The file on disk is the new one, so a restart keeps it.
	reloaded, err := ensureServerCert(dir, ca, names, 365*24*time.Hour, time.Now(), log)
	if err != nil || !reloaded.Leaf.NotAfter.Equal(got.Leaf.NotAfter) {
		t.Fatalf("on disk: %v, %v", reloaded.Leaf.NotAfter, err)
	}
}
