package cef

import (
	"fmt"
	"strings"
)

// ParseError says what is wrong with a CEF line and at which byte.
type ParseError struct {
	Offset int // byte offset into the string given to Parse
	Msg    string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("cef: byte %d: %s", e.Offset, e.Msg)
}

func errAt(off int, format string, args ...any) error {
	return &ParseError{Offset: off, Msg: fmt.Sprintf(format, args...)}
}

// headerNames name the seven header fields in error messages.
var headerNames = [7]string{"version", "device vendor", "device product", "device version", "signature ID", "name", "severity"}

// Parse reads one CEF line, as Encode writes it. A single trailing LF or
// CRLF is ignored; any other raw line break is an error. Parse does not
// check that the text is UTF-8: it gives back the bytes it was given.
func Parse(s string) (Record, error) {
	line := strings.TrimSuffix(s, "\n")
	line = strings.TrimSuffix(line, "\r")
	if i := strings.IndexAny(line, "\r\n"); i >= 0 {
		return Record{}, errAt(i, "raw line break inside the record (a producer must write it as \\n or \\r)")
	}
	if !strings.HasPrefix(line, "CEF:") {
		return Record{}, errAt(0, "want %q at the start, got %q", "CEF:", prefix(line, 8))
	}
	var fields [7]string
	i := len("CEF:")
	for n := range fields {
		start := i
		var b strings.Builder
		for closed := false; !closed; {
			if i >= len(line) {
				return Record{}, errAt(start, "header field %d (%s) has no closing '|': a CEF header has 7 fields, each ended by '|'", n+1, headerNames[n])
			}
			switch c := line[i]; c {
			case '|':
				closed = true
				i++
			case '\\':
				if i+1 >= len(line) {
					return Record{}, errAt(i, "backslash at the end of the line")
				}
				switch e := line[i+1]; e {
				case '\\', '|':
					b.WriteByte(e)
				case 'n':
					b.WriteByte('\n')
				case 'r':
					b.WriteByte('\r')
				default:
					return Record{}, errAt(i, "invalid escape %q in header field %d (%s): want \\\\ or \\|", line[i:i+2], n+1, headerNames[n])
				}
				i += 2
			default:
				b.WriteByte(c)
				i++
			}
		}
		fields[n] = b.String()
	}
	r := Record{
		DeviceVendor:  fields[1],
		DeviceProduct: fields[2],
		DeviceVersion: fields[3],
		SignatureID:   fields[4],
		Name:          fields[5],
		Severity:      fields[6],
	}
	switch fields[0] {
	case "0":
	case "1":
		r.Version = 1
	default:
		return Record{}, errAt(len("CEF:"), "version %q: want 0 or 1", fields[0])
	}
	if !ValidSeverity(r.Severity) {
		return Record{}, errAt(severityOffset(line), "severity %q: want 0-10 or Unknown, Low, Medium, High, Very-High", r.Severity)
	}
	ext, err := parseExtensions(line, i)
	if err != nil {
		return Record{}, err
	}
	r.Extensions = ext
	return r, nil
}

// severityOffset finds where the seventh header field starts, for errors.
func severityOffset(line string) int {
	n := 0
	for i := 0; i < len(line); i++ {
		switch line[i] {
		case '\\':
			i++
		case '|':
			n++
			if n == 6 {
				return i + 1
			}
		}
	}
	return 0
}

// parseExtensions reads key=value pairs from s[off:]. Values may contain
// spaces; a value ends at the last space before the next unescaped "=",
// whose key is the text between that space and the "=".
func parseExtensions(s string, off int) ([]Extension, error) {
	i := off
	for i < len(s) && s[i] == ' ' {
		i++
	}
	if i == len(s) {
		return nil, nil
	}
	keyStart := i
	for i < len(s) && isKeyByte(s[i]) {
		i++
	}
	if i == keyStart || i == len(s) || s[i] != '=' {
		return nil, errAt(keyStart, "extension must start with key=value (key of ASCII letters, digits, '_', '.', '-'), got %q", prefix(s[keyStart:], 16))
	}
	key := s[keyStart:i]
	var out []Extension
	for {
		if len(key) > maxKeyLen {
			return nil, errAt(keyStart, "extension key %q is longer than %d bytes", prefix(key, 16)+"…", maxKeyLen)
		}
		i++ // past '='
		valStart, lastSpace, next := i, -1, -1
		for i < len(s) && next < 0 {
			switch s[i] {
			case '\\':
				if i+1 >= len(s) {
					return nil, errAt(i, "backslash at the end of the line")
				}
				i += 2
				continue
			case ' ':
				lastSpace = i
			case '=':
				if lastSpace < 0 || !ValidKey(s[lastSpace+1:i]) {
					return nil, errAt(i, "unescaped '=' in the value of %q (a producer must write it as \\=)", key)
				}
				next = lastSpace + 1
				continue
			}
			i++
		}
		valEnd := i
		if next >= 0 {
			valEnd = lastSpace
		}
		v, err := unescapeValue(s, valStart, valEnd, key)
		if err != nil {
			return nil, err
		}
		out = append(out, Extension{Key: key, Value: v})
		if next < 0 {
			return out, nil
		}
		keyStart, key = next, s[next:i]
	}
}

func unescapeValue(s string, start, end int, key string) (string, error) {
	raw := s[start:end]
	if !strings.Contains(raw, `\`) {
		return raw, nil
	}
	var b strings.Builder
	b.Grow(len(raw))
	for i := start; i < end; i++ {
		c := s[i]
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		if i+1 >= end {
			return "", errAt(i, "backslash at the end of the value of %q", key)
		}
		i++
		switch e := s[i]; e {
		case '\\', '=', '|':
			b.WriteByte(e)
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		default:
			return "", errAt(i-1, "invalid escape %q in the value of %q: want \\\\, \\=, \\n or \\r", s[i-1:i+1], key)
		}
	}
	return b.String(), nil
}

func prefix(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
