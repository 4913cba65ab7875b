package testdaemon

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// RsyslogdPath is where Debian's rsyslog package puts the daemon.
const RsyslogdPath = "/usr/sbin/rsyslogd"

// Rsyslog is a private rsyslogd: plain TCP, TLS (gtls, anonymous client
// auth) and UDP inputs on loopback, writing every message as received
// (rsyslog's rawmsg, without the octet count of TCP framing) as one line
// of the file Out. Its own log messages stay out of Out.
type Rsyslog struct {
	TCP, TLS, UDP string // 127.0.0.1:port of each input
	Out           string // received messages, one per line
	// PKI holds the CA that signed the TLS input's certificate (for
	// 127.0.0.1 and localhost); clients trust PKI.CAPEM.
	PKI *PKI

	stderr        *SyncBuffer
	conf, pidFile string
	cmd           *exec.Cmd
	exited        chan struct{}
}

// StartRsyslog configures and starts rsyslogd, waits until its TCP and TLS
// inputs accept, and stops it when the test ends, logging its output if the
// test failed. It needs the rsyslog and rsyslog-gnutls packages.
func StartRsyslog(t testing.TB) *Rsyslog {
	t.Helper()
	RequireFile(t, "rsyslog", RsyslogdPath)
	RequireFile(t, "rsyslog-gnutls", "/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so",
		"/usr/lib/aarch64-linux-gnu/rsyslog/lmnsd_gtls.so", "/usr/lib/rsyslog/lmnsd_gtls.so")
	dir := t.TempDir()
	r := &Rsyslog{
		TCP:    net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t, "tcp"))),
		TLS:    net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t, "tcp"))),
		UDP:    net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t, "udp"))),
		Out:    filepath.Join(dir, "received.log"),
		PKI:    NewPKI(t),
		stderr: &SyncBuffer{},
	}
	ca, cert, key := r.PKI.WriteFiles(t, dir)
	port := func(hp string) string { _, p, _ := net.SplitHostPort(hp); return p }
	// No imuxsock or imklog: only the inputs below. Inputs are bound to a
	// ruleset of their own so that rsyslogd's internal messages stay out of
	// the file. rawmsg is the message as received, without the octet count.
	conf := fmt.Sprintf(`global(workDirectory=%[1]q maxMessageSize="64k")
module(load="imtcp")
module(load="imudp")
template(name="raw" type="string" string="%%rawmsg%%\n")
ruleset(name="yagura") { action(type="omfile" file=%[2]q template="raw") }
input(type="imtcp" address="127.0.0.1" port=%[3]q ruleset="yagura")
input(type="imtcp" address="127.0.0.1" port=%[4]q ruleset="yagura"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon"
      streamDriver.caFile=%[6]q streamDriver.certFile=%[7]q streamDriver.keyFile=%[8]q)
input(type="imudp" address="127.0.0.1" port=%[5]q ruleset="yagura")
`, dir, r.Out, port(r.TCP), port(r.TLS), port(r.UDP), ca, cert, key)
	confPath := filepath.Join(dir, "rsyslog.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	r.conf, r.pidFile = confPath, filepath.Join(dir, "rsyslogd.pid")
	r.Start(t)
	t.Cleanup(func() {
		r.Stop()
		if t.Failed() {
			t.Logf("rsyslogd output:\n%s", r.stderr)
		}
	})
	return r
}

// Start runs rsyslogd again after Stop, on the same ports and file, and
// waits until its TCP and TLS inputs accept.
func (r *Rsyslog) Start(t testing.TB) {
	t.Helper()
	cmd := exec.Command(RsyslogdPath, "-n", "-f", r.conf, "-i", r.pidFile)
	cmd.Stdout, cmd.Stderr = r.stderr, r.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start rsyslogd: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	r.cmd, r.exited = cmd, exited
	for _, addr := range []string{r.TCP, r.TLS} {
		WaitFor(t, 15*time.Second, "rsyslogd to listen on "+addr, func() bool {
			select {
			case <-exited:
				t.Fatalf("rsyslogd exited: %s", r.stderr)
			default:
			}
			return dialable(addr)
		})
	}
}

// Stop ends rsyslogd (SIGTERM, then SIGKILL after 10 s). Stopping a stopped
// one does nothing.
func (r *Rsyslog) Stop() {
	if r.cmd == nil {
		return
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(10 * time.Second):
		r.cmd.Process.Kill()
		<-r.exited
	}
	r.cmd = nil
}

// Lines returns the messages received so far on all inputs, in the order
// rsyslogd wrote them.
func (r *Rsyslog) Lines(t testing.TB) []string {
	t.Helper()
	b, err := os.ReadFile(r.Out)
	if os.IsNotExist(err) || (err == nil && len(b) == 0) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}
