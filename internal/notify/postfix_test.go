package notify

import (
	"context"
	"encoding/base64"
	"io"
	"mime"
	"net"
	"net/mail"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/yagura/yagura/internal/testdaemon"
)

// TestPostfix sends a Japanese alert through a real Postfix that delivers it
// to a Maildir, and reads it back as a mail client would.
func TestPostfix(t *testing.T) {
	start := time.Now()
	p := testdaemon.StartPostfix(t)
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
	testdaemon.WaitFor(t, 20*time.Second, "delivery to the Maildir", func() bool {
		mails = p.Delivered(t, testdaemon.Mailbox)
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
