package agent

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/yagura/yagura/internal/proto"
)

// Inventory describes this host.
func Inventory(version string) proto.Inventory {
	host, _ := os.Hostname()
	if host == "" {
		host = "unknown"
	}
	return proto.Inventory{
		Hostname:     host,
		OS:           runtime.GOOS,
		OSVersion:    osVersion(),
		AgentVersion: version,
		IPs:          hostIPs(),
	}
}

// osVersion reads PRETTY_NAME from os-release on Linux.
func osVersion() string {
	for _, p := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "PRETTY_NAME="); ok {
				return strings.Trim(v, `"'`)
			}
		}
	}
	return runtime.GOOS + "/" + runtime.GOARCH
}

// hostIPs lists the host's unicast addresses, loopback and link-local
// excluded, sorted so that an unchanged host gives an unchanged inventory.
func hostIPs() []string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var ips []string
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || n.IP.IsLoopback() || n.IP.IsLinkLocalUnicast() || n.IP.IsMulticast() {
			continue
		}
		ips = append(ips, n.IP.String())
	}
	slices.Sort(ips)
	if len(ips) > 64 {
		ips = ips[:64]
	}
	return ips
}

// hostUptime reads /proc/uptime, falling back to the agent's own uptime.
func hostUptime(started time.Time) time.Duration {
	if b, err := os.ReadFile("/proc/uptime"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			if s, err := strconv.ParseFloat(f[0], 64); err == nil {
				return time.Duration(s * float64(time.Second))
			}
		}
	}
	return time.Since(started)
}
