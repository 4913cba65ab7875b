package notify

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leodido/go-syslog/v4"
	"github.com/leodido/go-syslog/v4/octetcounting"
	"github.com/leodido/go-syslog/v4/rfc5424"

	"github.com/yagura/yagura/internal/testdaemon"
)

func TestSyslogFormat(t *testing.T) {
	m := testMessage("01JQ7Z")
	pid := strconv.Itoa(os.Getpid())
	for _, tc := range []struct {
		name string
		cfg  SyslogConfig
		edit func(*Message)
		want string
	}{
		{
			name: "rfc5424 cef",
			cfg:  SyslogConfig{Hostname: "mgr01"},
			want: `<130>1 2026-04-01T09:30:15.123000Z mgr01 yagura ` + pid + ` computer-offline [yagura@32473 id="01JQ7Z" kind="alert" type="computer-offline" severity="critical"] CEF:0|Yagura|Yagura|1.2.3|computer-offline|`,
		},
		{
			name: "facility and severity",
			cfg:  SyslogConfig{Hostname: "mgr01", Facility: "auth", AppName: "ds"},
			edit: func(m *Message) { m.Severity = "info" },
			want: `<38>1 2026-04-01T09:30:15.123000Z mgr01 ds ` + pid + ` computer-offline [yagura@32473 id="01JQ7Z" kind="alert" type="computer-offline" severity="info"] CEF:`,
		},
		{
			name: "unknown severity is notice",
			cfg:  SyslogConfig{Hostname: "mgr01", Facility: "0"},
			edit: func(m *Message) { m.Severity = "bogus" },
			want: `<5>1 `,
		},
		{
			name: "msgid and sd escaping",
			cfg:  SyslogConfig{Hostname: "mgr01"},
			edit: func(m *Message) {
				m.Type = "firewall drop/ファイア" + strings.Repeat("x", 40)
				m.ID = `a"b\c]d` + "\n"
			},
			want: `<130>1 2026-04-01T09:30:15.123000Z mgr01 yagura ` + pid + ` firewall_drop/____xxxxxxxxxxxxxx [yagura@32473 id="a\"b\\c\]d` + "\uFFFD" + `" kind="alert"`,
		},
		{
			name: "rfc3164 json",
			cfg:  SyslogConfig{Hostname: "mgr01", Format: FormatRFC3164, Payload: PayloadJSON, Facility: "local7"},
			edit: func(m *Message) { m.Severity = "warning" },
			want: `<188>` + m.Time.In(time.Local).Format("Jan _2 15:04:05") + ` mgr01 yagura[` + pid + `]: {"id":"01JQ7Z","kind":"alert","time":"2026-04-01T09:30:15.123Z","type":"computer-offline","severity":"warning","title":"【Yagura】コンピューターがオフラインです | pipe",`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := newSyslogFormatter(tc.cfg, options{version: "1.2.3", now: time.Now})
			if err != nil {
				t.Fatal(err)
			}
			m := m
			if tc.edit != nil {
				tc.edit(&m)
			}
			got := string(f.Format(m))
			if !strings.HasPrefix(got, tc.want) {
				t.Errorf("got  %s\nwant %s…", got, tc.want)
			}
			if strings.ContainsAny(got, "\r\n") {
				t.Errorf("a line break in %q", got)
			}
			if tc.cfg.format() == FormatRFC5424 {
				if _, err := rfc5424.NewParser().Parse([]byte(got)); err != nil {
					t.Errorf("go-syslog rejects it: %v", err)
				}
			}
		})
	}
	// A zero time is stamped with the clock.
	clock := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	f, _ := newSyslogFormatter(SyslogConfig{}, options{now: func() time.Time { return clock }})
	zero := m
	zero.Time = time.Time{}
	if got := string(f.Format(zero)); !strings.Contains(got, " 2026-05-06T07:08:09.000000Z ") {
		t.Errorf("zero time: %s", got)
	}
}

// syslogServer accepts TCP connections and collects framed messages.
type syslogServer struct {
	l    net.Listener
	mu   sync.Mutex
	msgs []string
	// closeAfter, when set, closes each connection after that many messages.
	closeAfter int
	conns      int
}

func startSyslogServer(t *testing.T, l net.Listener, closeAfter int) *syslogServer {
	t.Helper()
	s := &syslogServer{l: l, closeAfter: closeAfter}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns++
			s.mu.Unlock()
			go s.serve(c)
		}
	}()
	t.Cleanup(func() { l.Close() })
	return s
}

func (s *syslogServer) serve(c net.Conn) {
	defer c.Close()
	n := 0
	octetcounting.NewParser(syslog.WithBestEffort(), syslog.WithListener(func(r *syslog.Result) {
		if r.Error != nil {
			return
		}
		sm := r.Message.(*rfc5424.SyslogMessage)
		n++
		// Hang up before the message counts as received, so that the
		// sender's next Send finds the connection closed. (Had it come
		// after, the next message could go into a socket the collector is
		// about to close: plain syslog has no acknowledgements.)
		if s.closeAfter > 0 && n >= s.closeAfter {
			c.Close()
		}
		s.mu.Lock()
		s.msgs = append(s.msgs, (*sm.StructuredData)[SDID]["id"])
		s.mu.Unlock()
	})).Parse(c)
}

func (s *syslogServer) IDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.msgs...)
}

func (s *syslogServer) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// TestSyslogReconnect: a collector that hangs up, goes away and comes back
// loses nothing that Send reported as sent.
func TestSyslogReconnect(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	srv := startSyslogServer(t, l, 1) // hangs up after every message
	s, err := New(Config{Kind: KindSyslog, Syslog: &SyslogConfig{Address: addr, Transport: TransportTCP}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 5 {
		id := fmt.Sprintf("m%d", i)
		if err := s.Send(ctx, testMessage(id)); err != nil {
			t.Fatalf("send %s: %v", id, err)
		}
		testdaemon.WaitFor(t, 5*time.Second, id, func() bool { return len(srv.IDs()) == i+1 })
	}
	if got := srv.Conns(); got != 5 {
		t.Errorf("%d connections, want 5 (one per message)", got)
	}

	l.Close()
	err = s.Send(ctx, testMessage("down"))
	want := "syslog tcp " + addr + ": "
	if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("collector down: error %v, want %q… connection refused", err, want)
	}
	var ne *Error
	if !errors.As(err, &ne) || ne.Op != "dial" || IsPermanent(err) {
		t.Errorf("collector down: %#v", err)
	}

	l2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("cannot listen on %s again: %v", addr, err)
	}
	srv2 := startSyslogServer(t, l2, 0)
	for _, id := range []string{"back1", "back2"} {
		if err := s.Send(ctx, testMessage(id)); err != nil {
			t.Fatalf("after restart: %v", err)
		}
	}
	testdaemon.WaitFor(t, 5*time.Second, "two messages after the restart", func() bool { return len(srv2.IDs()) == 2 })
	if got := srv2.Conns(); got != 1 {
		t.Errorf("%d connections after restart, want 1 (kept open)", got)
	}
}

func TestSyslogFraming(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		line, _ := bufio.NewReader(c).ReadString('\n')
		got <- line
	}()
	s, err := New(Config{Kind: KindSyslog, Syslog: &SyslogConfig{Address: l.Addr().String(), Transport: TransportTCP, Framing: FramingLF}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Send(context.Background(), testMessage("lf")); err != nil {
		t.Fatal(err)
	}
	select {
	case line := <-got:
		if !strings.HasPrefix(line, "<130>1 ") || !strings.HasSuffix(line, "\n") || strings.Count(line, "\n") != 1 {
			t.Errorf("LF frame: %q", line)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no line")
	}

	ss := &syslogSender{cfg: SyslogConfig{Transport: TransportTLS}}
	if got := string(ss.frame([]byte("<1>1 - - - - - - é"))); got != "19 <1>1 - - - - - - é" {
		t.Errorf("octet counting: %q", got)
	}
	ss.cfg.Transport = TransportUDP
	if got := string(ss.frame([]byte("x"))); got != "x" {
		t.Errorf("udp: %q", got)
	}
}

func TestSyslogTLS(t *testing.T) {
	pki := testdaemon.NewPKI(t)
	l, err := tls.Listen("tcp", "127.0.0.1:0", pki.ServerTLS())
	if err != nil {
		t.Fatal(err)
	}
	srv := startSyslogServer(t, l, 0)
	addr := l.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Without the CA: refused, and nothing is sent.
	s, err := New(Config{Kind: KindSyslog, Syslog: &SyslogConfig{Address: addr, Transport: TransportTLS}})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Send(ctx, testMessage("x"))
	if want := "syslog tls " + addr + ": tls handshake: "; err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("error %v, want %q…certificate…", err, want)
	}
	s.Close()

	// With WithRootCAs, and with ca_pem.
	for _, c := range []struct {
		cfg  SyslogConfig
		opts []Option
	}{
		{SyslogConfig{Address: addr, Transport: TransportTLS}, []Option{WithRootCAs(pki.CA)}},
		{SyslogConfig{Address: addr, Transport: TransportTLS, CAPEM: string(pki.CAPEM)}, nil},
		{SyslogConfig{Address: "localhost:" + strings.Split(addr, ":")[1], Transport: TransportTLS, CAPEM: string(pki.CAPEM)}, nil},
	} {
		s, err := New(Config{Kind: KindSyslog, Syslog: &c.cfg}, c.opts...)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(ctx, testMessage("tls")); err != nil {
			t.Fatalf("%+v: %v", c.cfg, err)
		}
		s.Close()
		if err := s.Send(ctx, testMessage("after close")); !errors.Is(err, ErrClosed) {
			t.Errorf("after Close: %v", err)
		}
	}
	testdaemon.WaitFor(t, 5*time.Second, "3 messages", func() bool { return len(srv.IDs()) == 3 })

	// A server name that the certificate does not hold.
	bad := SyslogConfig{Address: addr, Transport: TransportTLS, CAPEM: string(pki.CAPEM), ServerName: "siem.example.jp"}
	s, _ = New(Config{Kind: KindSyslog, Syslog: &bad})
	if err := s.Send(ctx, testMessage("x")); err == nil || !strings.Contains(err.Error(), "siem.example.jp") {
		t.Errorf("wrong server name: %v", err)
	}
	s.Close()
}

func TestSyslogUDPAndContext(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	s, err := New(Config{Kind: KindSyslog, Syslog: &SyslogConfig{Address: pc.LocalAddr().String(), Transport: TransportUDP}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Send(context.Background(), testMessage("udp")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65536)
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rfc5424.NewParser().Parse(buf[:n]); err != nil {
		t.Errorf("datagram does not parse: %v\n%s", err, buf[:n])
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Send(ctx, testMessage("udp")); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	if err := s.Send(context.Background(), Message{}); err == nil || !IsPermanent(err) {
		t.Errorf("no ID: %v", err)
	}
}

// TestSyslogWriteBlocked: a collector that stops reading makes Send fail at
// the context's deadline instead of hanging.
func TestSyslogWriteBlocked(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c // and never read from it
		}
	}()
	s, err := New(Config{Kind: KindSyslog, Syslog: &SyslogConfig{Address: l.Addr().String(), Transport: TransportTCP}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Send(context.Background(), testMessage("first")); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-accepted:
		defer c.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("no connection")
	}
	big := testMessage("big")
	big.Text = strings.Repeat("あ", 1<<20)
	start := time.Now()
	var sendErr error
	for range 64 { // until the socket buffers are full
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		sendErr = s.Send(ctx, big)
		cancel()
		if sendErr != nil {
			break
		}
	}
	if sendErr == nil || !errors.Is(sendErr, context.DeadlineExceeded) && !strings.Contains(sendErr.Error(), "timeout") {
		t.Errorf("error %v, want a deadline", sendErr)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("took %v", d)
	}
}
