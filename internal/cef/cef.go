// Package cef provides ArcSight Common Event Format (CEF) records: Encode
// writes one as a single line with the escaping the CEF specification asks
// for, and Parse reads one back. It knows nothing about Yagura's alerts;
// internal/notify maps those onto records. Any package may import it.
//
// A line is
//
//	CEF:Version|Device Vendor|Device Product|Device Version|Device Event Class ID|Name|Severity|Extension
//
// Escaping, as in "Implementing ArcSight CEF":
//
//   - header fields: "\" becomes "\\" and "|" becomes "\|". The specification
//     allows no line breaks in the header; so that a record stays one line, CR
//     and LF are written as "\r" and "\n" there too, and Parse reads them back.
//   - extension values: "\" becomes "\\", "=" becomes "\=", LF "\n", CR "\r".
//     "|" needs no escaping in the extension; Parse also accepts "\|" there,
//     which some producers write.
//   - extension keys are not escaped at all, so they are restricted to ASCII
//     letters, digits, "_", "." and "-" (see ValidKey).
//
// Encode followed by Parse gives back the same record whenever
// Record.Validate accepts it.
package cef

import (
	"fmt"
	"strconv"
	"strings"
)

// Record is one CEF event. Extensions keep their order; a key may appear more
// than once (Parse keeps every occurrence, Get returns the first).
type Record struct {
	Version       int // CEF format version: 0 or 1
	DeviceVendor  string
	DeviceProduct string
	DeviceVersion string
	SignatureID   string // Device Event Class ID
	Name          string
	Severity      string // "0".."10", or Unknown, Low, Medium, High, Very-High
	Extensions    []Extension
}

// Extension is one key=value pair of the extension part.
type Extension struct {
	Key   string
	Value string
}

// Get returns the value of the first extension named key.
func (r Record) Get(key string) (string, bool) {
	for _, e := range r.Extensions {
		if e.Key == key {
			return e.Value, true
		}
	}
	return "", false
}

// maxKeyLen bounds extension keys. The longest key of the CEF dictionary
// (deviceCustomFloatingPoint1Label) has 31 characters; vendor keys may be
// longer, but not unboundedly.
const maxKeyLen = 128

// ValidKey reports whether k can be an extension key: 1 to 128 ASCII
// letters, digits, "_", "." or "-". Keys cannot be escaped, so anything else
// ("=", spaces, "\") would make the line ambiguous.
func ValidKey(k string) bool {
	if k == "" || len(k) > maxKeyLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		if !isKeyByte(k[i]) {
			return false
		}
	}
	return true
}

func isKeyByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-'
}

// namedSeverities are the words CEF allows instead of a number.
var namedSeverities = []string{"Unknown", "Low", "Medium", "High", "Very-High"}

// ValidSeverity reports whether s is a CEF severity: an integer from 0 to 10,
// or one of Unknown, Low, Medium, High, Very-High (any case).
func ValidSeverity(s string) bool {
	if n, err := strconv.Atoi(s); err == nil {
		return n >= 0 && n <= 10 && strconv.Itoa(n) == s
	}
	for _, w := range namedSeverities {
		if strings.EqualFold(s, w) {
			return true
		}
	}
	return false
}

// Validate reports the first thing that keeps r from being a well-formed CEF
// record: the version, the severity or an extension key.
func (r Record) Validate() error {
	if r.Version != 0 && r.Version != 1 {
		return fmt.Errorf("cef: version %d: want 0 or 1", r.Version)
	}
	if !ValidSeverity(r.Severity) {
		return fmt.Errorf("cef: severity %q: want 0-10 or Unknown, Low, Medium, High, Very-High", r.Severity)
	}
	for i, e := range r.Extensions {
		if !ValidKey(e.Key) {
			return fmt.Errorf("cef: extension %d: key %q: want 1-%d ASCII letters, digits, '_', '.' or '-'", i, e.Key, maxKeyLen)
		}
	}
	return nil
}

// Encode writes r as one CEF line, without a trailing newline. It does not
// validate r (see Validate): an invalid version, severity or key is written
// as given, escaped so that the line still has no line break, but Parse may
// refuse it.
func Encode(r Record) string {
	var b strings.Builder
	b.WriteString("CEF:")
	b.WriteString(strconv.Itoa(r.Version))
	for _, h := range []string{r.DeviceVendor, r.DeviceProduct, r.DeviceVersion, r.SignatureID, r.Name, r.Severity} {
		b.WriteByte('|')
		writeHeader(&b, h)
	}
	b.WriteByte('|')
	for i, e := range r.Extensions {
		if i > 0 {
			b.WriteByte(' ')
		}
		writeHeader(&b, e.Key) // a valid key has nothing to escape; an invalid one stays on one line
		b.WriteByte('=')
		writeValue(&b, e.Value)
	}
	return b.String()
}

// EscapeHeader returns s escaped for a header field.
func EscapeHeader(s string) string {
	var b strings.Builder
	writeHeader(&b, s)
	return b.String()
}

// EscapeValue returns s escaped for an extension value.
func EscapeValue(s string) string {
	var b strings.Builder
	writeValue(&b, s)
	return b.String()
}

func writeHeader(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			b.WriteString(`\\`)
		case '|':
			b.WriteString(`\|`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		default:
			b.WriteByte(c)
		}
	}
}

func writeValue(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			b.WriteString(`\\`)
		case '=':
			b.WriteString(`\=`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		default:
			b.WriteByte(c)
		}
	}
}
