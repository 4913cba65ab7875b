package testdaemon

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// PostfixPath is where Debian's postfix package puts the postfix command.
const PostfixPath = "/usr/sbin/postfix"

// MailDomain is the domain a private Postfix accepts mail for, and Mailbox
// its one mailbox there: mail to Mailbox@MailDomain is delivered, mail to
// anyone else refused with 550.
const (
	MailDomain = "yagura.test"
	Mailbox    = "ops"
)

// Postfix is a private Postfix instance: its own config directory, queue and
// port on 127.0.0.1, delivering mail for MailDomain to Maildirs under Mail
// through the virtual(8) agent, so no local user is needed.
type Postfix struct {
	Addr string // 127.0.0.1:port of smtpd; no TLS, no AUTH
	Dir  string // the instance's root: etc, queue, data, mail, maillog
	Mail string // virtual_mailbox_base
}

// StartPostfix configures and starts Postfix's master(8) in the foreground,
// waits until smtpd accepts, and stops it and removes its files when the
// test ends, logging its output and mail log if the test failed. It needs
// root and the postfix package.
func StartPostfix(t testing.TB) *Postfix {
	t.Helper()
	RequireFile(t, "postfix", PostfixPath)
	RequireFile(t, "postfix", "/usr/lib/postfix/sbin/master")
	RequireRoot(t)
	pf, err := user.Lookup("postfix")
	if err != nil {
		t.Fatalf("no postfix user (the postfix package creates it): %v", err)
	}
	// Not t.TempDir: its 0700 directories would keep the postfix user, as
	// which virtual(8) writes mail, out of the mailbox base.
	dir, err := os.MkdirTemp("", "yagura-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := &Postfix{
		Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t, "tcp"))),
		Dir:  dir,
		Mail: filepath.Join(dir, "mail"),
	}
	etc := filepath.Join(dir, "etc")
	for _, d := range []string{etc, filepath.Join(dir, "queue"), filepath.Join(dir, "data"), p.Mail} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	uid, _ := strconv.Atoi(pf.Uid)
	gid, _ := strconv.Atoi(pf.Gid)
	for _, d := range []string{filepath.Join(dir, "data"), p.Mail} {
		if err := os.Chown(d, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	mainCF := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/queue
data_directory = %[1]s/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.yagura.test
mydomain = yagura.test
myorigin = yagura.test
mydestination = localhost
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
smtpd_tls_security_level = none
smtp_tls_security_level = none
smtpd_banner = mx.yagura.test ESMTP
biff = no
alias_maps =
alias_database =
virtual_mailbox_domains = yagura.test
virtual_mailbox_base = %[1]s/mail
virtual_mailbox_maps = texthash:%[1]s/etc/vmailbox
virtual_uid_maps = static:%[2]d
virtual_gid_maps = static:%[3]d
syslog_name = postfix-yagura-test
maillog_file = %[1]s/maillog
maillog_file_prefixes = %[1]s
`, dir, uid, gid)
	// Only the services a local delivery needs, none chrooted, smtpd on our
	// port.
	masterCF := fmt.Sprintf(`%s inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -  - proxymap
smtp      unix  - - n -  - smtp
relay     unix  - - n -  - smtp
error     unix  - - n -  - error
retry     unix  - - n -  - error
discard   unix  - - n -  - discard
local     unix  - n n -  - local
virtual   unix  - n n -  - virtual
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
postlog   unix-dgram n - n - 1 postlogd
`, p.Addr)
	files := map[string]string{"main.cf": mainCF, "master.cf": masterCF, "vmailbox": Mailbox + "@" + MailDomain + " " + Mailbox + "/\n"}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// "postfix start" would create the queue through post-install, which
	// takes about 6 s here; making the directories (the layout postfix-files
	// prescribes) and starting master(8) directly takes a tenth of a second.
	pd, err := user.LookupGroup("postdrop")
	if err != nil {
		t.Fatalf("no postdrop group (the postfix package creates it): %v", err)
	}
	postdrop, _ := strconv.Atoi(pd.Gid)
	queue := filepath.Join(dir, "queue")
	for _, q := range []struct {
		name     string
		uid, gid int
		mode     os.FileMode
	}{
		{"active", uid, 0, 0o700}, {"bounce", uid, 0, 0o700}, {"corrupt", uid, 0, 0o700},
		{"defer", uid, 0, 0o700}, {"deferred", uid, 0, 0o700}, {"flush", uid, 0, 0o700},
		{"hold", uid, 0, 0o700}, {"incoming", uid, 0, 0o700}, {"private", uid, 0, 0o700},
		{"saved", uid, 0, 0o700}, {"trace", uid, 0, 0o700},
		{"maildrop", uid, postdrop, 0o730}, {"public", uid, postdrop, 0o710}, {"pid", 0, 0, 0o755},
	} {
		d := filepath.Join(queue, q.name)
		if err := os.Mkdir(d, q.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, q.mode); err != nil { // past the umask
			t.Fatal(err)
		}
		if err := os.Chown(d, q.uid, q.gid); err != nil {
			t.Fatal(err)
		}
	}
	// master -d stays in the foreground, so the test owns the process and
	// stops it by its PID. Its listeners open after about 2 s, most of it
	// spent bringing up postlogd for the maillog file, kept because that log
	// is what explains a failure.
	cmd := exec.Command("/usr/lib/postfix/sbin/master", "-c", etc, "-d")
	out := &SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		t.Fatalf("start postfix master: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		// SIGTERM: master stops its children and exits.
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			t.Error("postfix master did not stop in 15s; killing it")
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "maillog"))
			t.Logf("postfix master output:\n%s\npostfix log:\n%s", out, log)
		}
		os.RemoveAll(dir)
	})
	WaitFor(t, 15*time.Second, "postfix smtpd on "+p.Addr, func() bool {
		select {
		case <-exited:
			t.Fatalf("postfix master exited: %s", out)
		default:
		}
		return dialable(p.Addr)
	})
	return p
}

// Delivered returns the mails delivered so far to user@yagura.test (only
// Mailbox exists), raw as in its Maildir's new folder.
func (p *Postfix) Delivered(t testing.TB, user string) []string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(p.Mail, user, "new", "*"))
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}
