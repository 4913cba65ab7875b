package notify

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const postfixBin = "/usr/sbin/postfix"

// postfix is a private Postfix instance: its own config directory, queue and
// port on 127.0.0.1, delivering mail for yagura.test to Maildirs under Mail
// through the virtual(8) agent, so no local user is needed.
type postfix struct {
	Addr string // 127.0.0.1:port of smtpd
	Dir  string
	Mail string // virtual_mailbox_base
}

func startPostfix(t *testing.T) *postfix {
	t.Helper()
	requireFile(t, "postfix", postfixBin)
	requireFile(t, "postfix", "/usr/lib/postfix/sbin/master")
	requireRoot(t)
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
	p := &postfix{
		Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t, "tcp"))),
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
	files := map[string]string{"main.cf": mainCF, "master.cf": masterCF, "vmailbox": "ops@yagura.test ops/\n"}
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
	out := &syncBuffer{}
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
	waitFor(t, 15*time.Second, "postfix smtpd on "+p.Addr, func() bool {
		select {
		case <-exited:
			t.Fatalf("postfix master exited: %s", out)
		default:
		}
		c, err := net.DialTimeout("tcp", p.Addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	return p
}

// Delivered returns the mails in the Maildir of user@yagura.test.
func (p *postfix) Delivered(t *testing.T, user string) []string {
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

// TestPostfix sends a Japanese alert through a real Postfix that delivers it
// to a Maildir, and reads it back as a mail client would.
func TestPostfix(t *testing.T) {
	start := time.Now()
	p := startPostfix(t)
	t.Logf("postfix ready in %v", time.Since(start).Round(time.Millisecond))
	host, port, _ := net.SplitHostPort(p.Addr)
	portN, _ := strconv.Atoi(port)
	cfg := Config{Kind: KindSMTP, SMTP: &SMTPConfig{
		Host: host, Port: portN, Security: SecurityNone,
		From: "Yagura 監視 <yagura@yagura.test>",
		To:   []string{"ops@yagura.test"},
	}}
	s, err := New(cfg, WithProductVersion("1.2.3"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	m := testMessage("01JQ7Z-offline-42")
	m.Title = "【Yagura】コンピューターがオフラインです"
	m.Text = "コンピューター「経理-PC01」から 10 分間ハートビートがありません。\nネットワーク接続と電源を確認してください。"
	// Sent twice, as a retry would: both copies carry the same Message-ID.
	for range 2 {
		if err := s.Send(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	var mails []string
	waitFor(t, 20*time.Second, "delivery to the Maildir", func() bool {
		mails = p.Delivered(t, "ops")
		return len(mails) == 2
	})
	for _, raw := range mails {
		checkDeliveredMail(t, raw, m, "<"+MessageID(m.ID, "yagura.test")+">")
	}

	// A recipient Postfix does not know is refused for good.
	bad := cfg
	bad.SMTP = &SMTPConfig{Host: host, Port: portN, Security: SecurityNone, From: "yagura@yagura.test", To: []string{"nobody@yagura.test"}}
	bs, err := New(bad)
	if err != nil {
		t.Fatal(err)
	}
	err = bs.Send(ctx, m)
	if err == nil {
		t.Fatal("send to an unknown mailbox succeeded")
	}
	t.Logf("unknown mailbox: %v", err)
	if !strings.HasPrefix(err.Error(), "smtp "+p.Addr+": send: ") || !strings.Contains(err.Error(), "550") || !IsPermanent(err) {
		t.Errorf("unknown mailbox: error %q (permanent %v), want a permanent \"smtp %s: send: ... 550 ...\"", err, IsPermanent(err), p.Addr)
	}
	t.Logf("postfix test took %v", time.Since(start).Round(time.Millisecond))
}

func checkDeliveredMail(t *testing.T, raw string, m Message, wantID string) {
	t.Helper()
	msg, err := mail.ReadMessage(strings.NewReader(raw))
	if err != nil {
		t.Fatalf("read mail: %v\n%s", err, raw)
	}
	var dec mime.WordDecoder
	subject, err := dec.DecodeHeader(msg.Header.Get("Subject"))
	if err != nil {
		t.Fatalf("decode subject %q: %v", msg.Header.Get("Subject"), err)
	}
	if subject != m.Title {
		t.Errorf("subject = %q, want %q (raw %q)", subject, m.Title, msg.Header.Get("Subject"))
	}
	if raw := msg.Header.Get("Subject"); !strings.Contains(raw, "=?UTF-8?") {
		t.Errorf("subject is not RFC 2047 encoded: %q", raw)
	}
	from, err := (&mail.AddressParser{WordDecoder: &dec}).Parse(msg.Header.Get("From"))
	if err != nil || from.Name != "Yagura 監視" || from.Address != "yagura@yagura.test" {
		t.Errorf("from = %+v, %v", from, err)
	}
	if got := msg.Header.Get("Message-Id"); got != wantID {
		t.Errorf("Message-ID = %q, want %q", got, wantID)
	}
	if got := msg.Header.Get("X-Yagura-Id"); got != m.ID {
		t.Errorf("X-Yagura-ID = %q, want %q", got, m.ID)
	}
	ct, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || ct != "text/plain" || !strings.EqualFold(params["charset"], "utf-8") {
		t.Errorf("Content-Type = %q", msg.Header.Get("Content-Type"))
	}
	if cte := msg.Header.Get("Content-Transfer-Encoding"); !strings.EqualFold(cte, "base64") {
		t.Fatalf("Content-Transfer-Encoding = %q", cte)
	}
	body, err := io.ReadAll(base64.NewDecoder(base64.StdEncoding, msg.Body))
	if err != nil {
		t.Fatalf("base64 body: %v", err)
	}
	text := strings.ReplaceAll(string(body), "\r\n", "\n")
	if !strings.HasPrefix(text, m.Text+"\n") {
		t.Errorf("body does not start with the text:\n%s", text)
	}
	for _, want := range []string{"Severity:", m.Severity, "src:", "192.0.2.10", "rule:", m.Fields["rule"], "ID:", m.ID, "Host:", m.Hostname} {
		if !strings.Contains(text, want) {
			t.Errorf("body lacks %q:\n%s", want, text)
		}
	}
}
