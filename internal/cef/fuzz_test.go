package cef

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// FuzzCEFRoundTrip checks two things:
//   - a valid record built from arbitrary strings comes back from
//     Parse(Encode(r)) unchanged, on one line;
//   - Parse never panics on arbitrary input, and whatever it accepts
//     survives Encode and Parse again.
func FuzzCEFRoundTrip(f *testing.F) {
	f.Add("Yagura", "Yagura|x", "1.0", "computer-offline", "【Yagura】オフライン", uint8(10),
		"msg", "a=b\\c\nd", "cs1Label", " rule | name ", `CEF:0|a|b|c|d|e|1|msg=x\=y act=z`)
	f.Add("", "", "", "", "", uint8(0), "k", "", "k2", " ", "CEF:1|||||Low|")
	f.Add("\\", "|", "\r\n", "=", " ", uint8(3), "a.b-c_d", "x y=z", "k", "\\n", "CEF:0|a|b|c|d|e|1|msg=a b c=d")
	f.Add("v", "p", "1", "s", "n", uint8(5), "bad key", "v", "k", "v", "CEF:0|v|p|1|s|n|5|msg=\\")
	if b, err := os.ReadFile("testdata/samples.cef"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f.Add("v", "p", "1", "s", "n", uint8(1), "k", "v", "k", "v", line)
		}
	}
	f.Fuzz(func(t *testing.T, vendor, product, version, sig, name string, sev uint8, k1, v1, k2, v2, raw string) {
		r := Record{
			Version:       int(sev) & 1,
			DeviceVendor:  vendor,
			DeviceProduct: product,
			DeviceVersion: version,
			SignatureID:   sig,
			Name:          name,
			Severity:      strconv.Itoa(int(sev) % 11),
			Extensions:    []Extension{{k1, v1}, {k2, v2}},
		}
		line := Encode(r)
		if strings.ContainsAny(line, "\r\n") {
			t.Fatalf("Encode wrote a line break: %q", line)
		}
		if r.Validate() == nil {
			got, err := Parse(line)
			if err != nil {
				t.Fatalf("Parse(Encode(%#v)) = %v\nline: %q", r, err, line)
			}
			if diff := cmp.Diff(got, r, cmpopts.EquateEmpty()); diff != "" {
				t.Fatalf("round trip (-got +want):\n%s\nline: %q", diff, line)
			}
		} else {
			_, _ = Parse(line) // must not panic
		}

		p, err := Parse(raw)
		if err != nil {
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("Parse accepted %q but Validate says %v", raw, err)
		}
		again, err := Parse(Encode(p))
		if err != nil {
			t.Fatalf("Parse(Encode(Parse(%q))) = %v", raw, err)
		}
		if diff := cmp.Diff(again, p, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("re-encode of %q (-got +want):\n%s", raw, diff)
		}
	})
}
