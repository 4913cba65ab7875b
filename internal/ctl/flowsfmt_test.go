package ctl

import (
	"strings"
	"testing"
	"time"
)

func TestSparkline(t *testing.T) {
	tests := []struct {
		name string
		in   []uint64
		want string
	}{
		{"empty", nil, ""},
		{"all zero", []uint64{0, 0, 0}, "▁▁▁"},
		{"ramp", []uint64{0, 1, 2, 3, 4, 5, 6, 7}, "▁▂▃▄▅▆▇█"},
		{"small but not nothing", []uint64{1, 1000}, "▂█"},
		{"huge", []uint64{1 << 62, 1 << 61, 0}, "█▅▁"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sparkline(tt.in); got != tt.want {
				t.Errorf("sparkline(%v) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestHumanNumbers(t *testing.T) {
	for in, want := range map[uint64]string{0: "0", 999: "999", 1000: "1.0 k", 1234: "1.2 k", 999_949: "999.9 k", 999_950: "1.0 M",
		3_400_000: "3.4 M", 12_000_000_000: "12.0 G", 1<<64 - 1: "18.4 E"} {
		if got := siCount(in); got != want {
			t.Errorf("siCount(%d) = %q, want %q", in, got, want)
		}
	}
	for _, tt := range []struct {
		r    float64
		unit string
		want string
	}{
		{0, "bit/s", "0.0 bit/s"}, {812, "bit/s", "812.0 bit/s"}, {1_250_000, "bit/s", "1.2 Mbit/s"},
		{10e9, "bit/s", "10.0 Gbit/s"}, {0.25, "flows/s", "0.2 flows/s"}, {2500, "packets/s", "2.5 kpackets/s"},
	} {
		if got := siRate(tt.r, tt.unit); got != tt.want {
			t.Errorf("siRate(%v, %s) = %q, want %q", tt.r, tt.unit, got, tt.want)
		}
	}
	if got := bytesText(1<<64 - 1); got != "8.0 EiB" {
		t.Errorf("bytesText(max) = %q", got)
	}
	for d, want := range map[time.Duration]string{5 * time.Minute: "5m", time.Hour: "1h", 90 * time.Minute: "1h30m", 24 * time.Hour: "24h", 35 * time.Minute: "35m"} {
		if got := shortDuration(d); got != want {
			t.Errorf("shortDuration(%s) = %q, want %q", d, got, want)
		}
	}
}

func TestProtoNumber(t *testing.T) {
	for in, want := range map[string]int{"": 0, "all": 0, "0": 0, "tcp": 6, "UDP": 17, "icmp6": 58, "47": 47, "255": 255} {
		if got, err := protoNumber(in); err != nil || got != want {
			t.Errorf("protoNumber(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"256", "tcp or udp", "web", "-1"} {
		if _, err := protoNumber(bad); err == nil {
			t.Errorf("protoNumber(%q) succeeded", bad)
		}
	}
	if got := protoName(6) + "," + protoName(200); got != "tcp,200" {
		t.Errorf("protoName = %q", got)
	}
}

func TestFlowWhen(t *testing.T) {
	now := time.Date(2025, 4, 1, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]string{
		"30m":                       "2025-04-01T11:30:00Z",
		"7d":                        "2025-03-25T12:00:00Z",
		"2025-04-01T09:00:00+09:00": "2025-04-01T00:00:00Z",
		"2025-04-01 09:00":          "2025-04-01 09:00",
		" 2025-04-01 09:00:30 ":     "2025-04-01 09:00:30",
	} {
		if got, err := flowWhen("from", in, now); err != nil || got != want {
			t.Errorf("flowWhen(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := flowWhen("from", "2025-04-01 9h", now); err == nil || !strings.Contains(err.Error(), `--from "2025-04-01 9h"`) {
		t.Errorf("flowWhen(bad) = %v", err)
	}
	if err := checkFilter("--filter", "host 東京 and port 22"); err == nil || !strings.Contains(err.Error(), "--filter: column 6: ") ||
		!strings.HasSuffix(err.Error(), "\n  host 東京 and port 22\n       ^") {
		t.Errorf("checkFilter = %v", err)
	}
	if err := checkFilter("--filter", "port 22 # a comment\n and"); err == nil || strings.Contains(err.Error(), "^") {
		t.Errorf("checkFilter(multi-line) = %v, want no caret", err)
	}
	if err := checkFilter("--filter", "proto tcp"); err != nil {
		t.Errorf("checkFilter(valid) = %v", err)
	}
}
