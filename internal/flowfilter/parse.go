package flowfilter

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits on what Parse accepts, so that a filter from an API request
// cannot make the parser, the compiled SQL or the database's parser work
// without bound.
const (
	MaxLen   = 10000 // bytes
	MaxDepth = 100   // nested parentheses and "not"s
)

// SyntaxError is a filter that does not parse. Pos and Col say where: Pos
// is a byte offset into the filter (0-based), Col the column in runes
// (1-based), which is what a user counting characters sees. Expected
// lists what would have been accepted there, when that is a short list.
type SyntaxError struct {
	Pos      int
	Col      int
	Msg      string
	Expected []string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("filter: column %d: %s", e.Col, e.Msg)
}

type tokKind uint8

const (
	tkEOF    tokKind = iota
	tkWord           // keyword, number, address or bare name
	tkString         // quoted string; text is its contents
	tkLParen
	tkRParen
	tkLBrack
	tkRBrack
	tkComma
	tkAnd // &&
	tkOr  // ||
	tkNot // !
	tkOp  // = == != < <= > >=
)

type token struct {
	kind tokKind
	text string // as written, except for tkString
	pos  int
}

// isWordByte reports whether c may appear in a bare word: keywords,
// numbers with units, IPv4 and IPv6 addresses and prefixes, names.
func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == ':' || c == '/' || c == '-' || c == '_'
}

func syntaxErr(src string, pos int, msg string, expected ...string) *SyntaxError {
	if pos > len(src) {
		pos = len(src)
	}
	return &SyntaxError{Pos: pos, Col: utf8.RuneCountInString(src[:pos]) + 1, Msg: msg, Expected: expected}
}

// lex splits src into tokens, ending with tkEOF. A '#' starts a comment
// that runs to the end of the line, as in nfdump filter files.
func lex(src string) ([]token, error) {
	var toks []token
	i := 0
	for i < len(src) {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '#':
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case isWordByte(c):
			j := i
			for j < len(src) && isWordByte(src[j]) {
				j++
			}
			toks = append(toks, token{tkWord, src[i:j], i})
			i = j
		case c == '"' || c == '\'':
			end := strings.IndexByte(src[i+1:], c)
			if end < 0 {
				return nil, syntaxErr(src, i, fmt.Sprintf("unterminated string: expected a closing %c", c), string(c))
			}
			s := src[i+1 : i+1+end]
			if !utf8.ValidString(s) {
				return nil, syntaxErr(src, i, "string is not valid UTF-8")
			}
			for k, r := range s {
				if r < 0x20 || r == 0x7f {
					return nil, syntaxErr(src, i+1+k, "control character in string")
				}
			}
			toks = append(toks, token{tkString, s, i})
			i += end + 2
		case c == '(':
			toks = append(toks, token{tkLParen, "(", i})
			i++
		case c == ')':
			toks = append(toks, token{tkRParen, ")", i})
			i++
		case c == '[':
			toks = append(toks, token{tkLBrack, "[", i})
			i++
		case c == ']':
			toks = append(toks, token{tkRBrack, "]", i})
			i++
		case c == ',':
			toks = append(toks, token{tkComma, ",", i})
			i++
		case c == '&' || c == '|':
			if i+1 >= len(src) || src[i+1] != c {
				return nil, syntaxErr(src, i, fmt.Sprintf("expected %q, found %q", string([]byte{c, c}), string(c)), string([]byte{c, c}))
			}
			kind := tkAnd
			if c == '|' {
				kind = tkOr
			}
			toks = append(toks, token{kind, src[i : i+2], i})
			i += 2
		case c == '!' || c == '=' || c == '<' || c == '>':
			n := 1
			if i+1 < len(src) && src[i+1] == '=' {
				n = 2
			}
			if c == '!' && n == 1 {
				toks = append(toks, token{tkNot, "!", i})
			} else {
				toks = append(toks, token{tkOp, src[i : i+n], i})
			}
			i += n
		default:
			r, _ := utf8.DecodeRuneInString(src[i:])
			found := strconv.QuoteRune(r)
			if r == utf8.RuneError {
				found = fmt.Sprintf("byte 0x%02x", c)
			}
			return nil, syntaxErr(src, i, "unexpected character "+found)
		}
	}
	return append(toks, token{tkEOF, "", len(src)}), nil
}

// Parse parses a filter. An empty filter (or one of only spaces and
// comments) is All, which matches every flow. Errors are *SyntaxError.
func Parse(src string) (Expr, error) {
	if len(src) > MaxLen {
		return nil, syntaxErr(src, MaxLen, fmt.Sprintf("filter is longer than %d bytes", MaxLen))
	}
	toks, err := lex(src)
	if err != nil {
		return nil, err
	}
	p := &parser{src: src, toks: toks}
	if p.peek().kind == tkEOF {
		return All{}, nil
	}
	e, err := p.or()
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tkEOF {
		return nil, p.fail(t, `"and", "or" or the end of the filter`, "and", "or", "end of filter")
	}
	return e, nil
}

type parser struct {
	src   string
	toks  []token
	i     int
	depth int
}

func (p *parser) peek() token { return p.toks[p.i] }

func (p *parser) peekAt(n int) token {
	if p.i+n >= len(p.toks) {
		return p.toks[len(p.toks)-1]
	}
	return p.toks[p.i+n]
}

func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tkEOF {
		p.i++
	}
	return t
}

// describe names a token for an error message.
func describe(t token) string {
	switch t.kind {
	case tkEOF:
		return "the end of the filter"
	case tkString:
		return "string " + strconv.Quote(t.text)
	}
	return strconv.Quote(t.text)
}

// fail reports that t is not what was expected.
func (p *parser) fail(t token, what string, expected ...string) error {
	return syntaxErr(p.src, t.pos, "expected "+what+", found "+describe(t), expected...)
}

// failAfter reports that t, following the keyword after, is not what was
// expected.
func (p *parser) failAfter(t token, what, after string, expected ...string) error {
	return syntaxErr(p.src, t.pos, fmt.Sprintf("expected %s after %q, found %s", what, after, describe(t)), expected...)
}

// isWord reports whether t is the keyword kw (keywords are
// case-insensitive, as in nfdump).
func isWord(t token, kw string) bool { return t.kind == tkWord && strings.EqualFold(t.text, kw) }

func isAnd(t token) bool { return t.kind == tkAnd || isWord(t, "and") }
func isOr(t token) bool  { return t.kind == tkOr || isWord(t, "or") }

func (p *parser) enter(t token) error {
	p.depth++
	if p.depth > MaxDepth {
		return syntaxErr(p.src, t.pos, fmt.Sprintf("filter nested too deeply: more than %d parentheses and \"not\"s", MaxDepth))
	}
	return nil
}

func (p *parser) or() (Expr, error) {
	var terms []Expr
	for {
		e, err := p.and()
		if err != nil {
			return nil, err
		}
		if o, ok := e.(Or); ok {
			terms = append(terms, o.Terms...)
		} else {
			terms = append(terms, e)
		}
		if !isOr(p.peek()) {
			break
		}
		p.next()
	}
	if len(terms) == 1 {
		return terms[0], nil
	}
	return Or{Terms: terms}, nil
}

func (p *parser) and() (Expr, error) {
	var terms []Expr
	for {
		e, err := p.unary()
		if err != nil {
			return nil, err
		}
		if a, ok := e.(And); ok {
			terms = append(terms, a.Terms...)
		} else {
			terms = append(terms, e)
		}
		if !isAnd(p.peek()) {
			break
		}
		p.next()
	}
	if len(terms) == 1 {
		return terms[0], nil
	}
	return And{Terms: terms}, nil
}

func (p *parser) unary() (Expr, error) {
	t := p.peek()
	switch {
	case t.kind == tkNot || isWord(t, "not"):
		p.next()
		if err := p.enter(t); err != nil {
			return nil, err
		}
		x, err := p.unary()
		if err != nil {
			return nil, err
		}
		p.depth--
		return Not{X: x}, nil
	case t.kind == tkLParen:
		p.next()
		if err := p.enter(t); err != nil {
			return nil, err
		}
		e, err := p.or()
		if err != nil {
			return nil, err
		}
		if c := p.peek(); c.kind != tkRParen {
			return nil, p.fail(c, `"and", "or" or ")"`, "and", "or", ")")
		}
		p.next()
		p.depth--
		return e, nil
	}
	return p.primitive()
}

// primitiveKeywords are the words that start a primitive, for errors.
var primitiveKeywords = []string{
	"any", "ipv4", "ipv6", "proto", "src", "dst", "host", "ip", "net", "port",
	"if", "in", "out", "bytes", "packets", "duration", "bps", "pps", "bpp",
	"flags", "exporter", "not", "(",
}

func (p *parser) primitive() (Expr, error) {
	t := p.peek()
	if t.kind != tkWord {
		return nil, p.fail(t, "a filter primitive such as \"host\", \"port\" or \"proto\"", primitiveKeywords...)
	}
	kw := strings.ToLower(t.text)
	switch kw {
	case "any":
		p.next()
		return All{}, nil
	case "ipv4", "inet":
		p.next()
		return IPVersion{V: 4}, nil
	case "ipv6", "inet6":
		p.next()
		return IPVersion{V: 6}, nil
	case "proto":
		p.next()
		return p.proto(t)
	case "src", "dst", "host", "ip", "net", "port":
		return p.addrOrPort()
	case "if", "in", "out":
		return p.iface()
	case "bytes", "packets", "duration", "bps", "pps", "bpp":
		p.next()
		return p.counter(t, kw)
	case "flags":
		p.next()
		return p.flags(t)
	case "exporter":
		p.next()
		n := p.next()
		if n.kind != tkString && n.kind != tkWord || n.text == "" {
			return nil, p.failAfter(n, "an exporter name", t.text, "name")
		}
		if strings.Contains(n.text, `"`) && strings.Contains(n.text, "'") {
			return nil, syntaxErr(p.src, n.pos, "an exporter name cannot contain both kinds of quotes")
		}
		return Exporter{Name: n.text}, nil
	}
	return nil, p.fail(t, "a filter primitive such as \"host\", \"port\" or \"proto\"", primitiveKeywords...)
}

func (p *parser) proto(kwTok token) (Expr, error) {
	t := p.next()
	if t.kind == tkWord {
		if n, ok := protoNames[strings.ToLower(t.text)]; ok {
			return Proto{N: n}, nil
		}
		if n, ok := parseNumber(t.text); ok && n <= 255 {
			return Proto{N: uint8(n)}, nil
		}
	}
	return nil, p.failAfter(t, "a protocol name (tcp, udp, icmp, icmp6, gre, esp, ah, sctp, …) or number 0-255", kwTok.text, "protocol")
}

// addrOrPort parses [dir] (host|ip|net|port) ….
func (p *parser) addrOrPort() (Expr, error) {
	dir := DirEither
	first := p.peek()
	if isWord(first, "src") || isWord(first, "dst") {
		p.next()
		dir = DirSrc
		if isWord(first, "dst") {
			dir = DirDst
		}
		if conj := p.peek(); isAnd(conj) || isOr(conj) {
			other := "dst"
			if dir == DirDst {
				other = "src"
			}
			p.next()
			if o := p.peek(); !isWord(o, other) {
				return nil, p.failAfter(o, fmt.Sprintf("%q", other), first.text+" "+conj.text, other)
			}
			p.next()
			dir = DirBoth
			if isOr(conj) {
				dir = DirEither
			}
		}
	}
	t := p.next()
	switch strings.ToLower(t.text) {
	case "host", "ip":
		if t.kind == tkWord {
			return p.host(dir, t)
		}
	case "net":
		if t.kind == tkWord {
			return p.net(dir, t)
		}
	case "port":
		if t.kind == tkWord {
			return p.port(dir, t)
		}
	}
	return nil, p.failAfter(t, `"host", "ip", "net" or "port"`, first.text, "host", "ip", "net", "port")
}

func (p *parser) host(dir Dir, kwTok token) (Expr, error) {
	if isWord(p.peek(), "in") {
		p.next()
		list, err := p.addrList()
		if err != nil {
			return nil, err
		}
		return HostIn{Dir: dir, List: list}, nil
	}
	t := p.next()
	if t.kind == tkWord {
		if a, err := parseAddr(t.text); err == nil {
			return Host{Dir: dir, Addr: a}, nil
		}
		if strings.Contains(t.text, "/") {
			return nil, p.failAfter(t, `an IPv4 or IPv6 address (for a network, use "net")`, kwTok.text, "address")
		}
	}
	return nil, p.failAfter(t, `an IPv4 or IPv6 address or "in"`, kwTok.text, "address", "in")
}

func (p *parser) addrList() ([]netip.Prefix, error) {
	open := p.next()
	if open.kind != tkLBrack {
		return nil, p.failAfter(open, `"["`, "in", "[")
	}
	var list []netip.Prefix
	for {
		t := p.next()
		if t.kind == tkRBrack && len(list) > 0 {
			return list, nil
		}
		if t.kind == tkComma && len(list) > 0 {
			continue
		}
		var pfx netip.Prefix
		ok := false
		if t.kind == tkWord {
			if strings.Contains(t.text, "/") {
				var err error
				pfx, err = parsePrefix(t.text)
				ok = err == nil
			} else if a, err := parseAddr(t.text); err == nil {
				pfx, ok = netip.PrefixFrom(a, a.BitLen()), true
			}
		}
		if !ok {
			if len(list) == 0 {
				return nil, p.fail(t, "an IPv4 or IPv6 address or network in the list", "address", "network")
			}
			return nil, p.fail(t, `an address, a network, "," or "]"`, "address", "network", ",", "]")
		}
		list = append(list, pfx)
	}
}

// parseAddr parses an IPv4 or IPv6 address without zone, and unmaps an
// IPv4-mapped IPv6 address: the store keeps IPv4 as mapped, so both
// spellings name the same stored value.
func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	return a.Unmap(), nil
}

// parsePrefix parses a CIDR network and canonicalises it: masked, and
// IPv4 when it lies within ::ffff:0:0/96.
func parsePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return canonPrefix(p), nil
}

func canonPrefix(p netip.Prefix) netip.Prefix {
	p = p.Masked()
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p
}

func (p *parser) net(dir Dir, kwTok token) (Expr, error) {
	t := p.next()
	if t.kind == tkWord {
		if strings.Contains(t.text, "/") {
			if pfx, err := parsePrefix(t.text); err == nil {
				return Net{Dir: dir, Prefix: pfx}, nil
			}
		} else if a, err := parseAddr(t.text); err == nil {
			// nfdump's "net 10.0.0.0 255.0.0.0".
			m := p.peek()
			if !a.Is4() {
				return nil, p.failAfter(t, "a network with a prefix length, such as 2001:db8::/32", kwTok.text, "network")
			}
			if bits, ok := maskBits(m); ok {
				p.next()
				return Net{Dir: dir, Prefix: canonPrefix(netip.PrefixFrom(a, bits))}, nil
			}
			return nil, p.failAfter(m, "a netmask such as 255.255.255.0", t.text, "netmask")
		}
	}
	return nil, p.failAfter(t, "a network such as 10.0.0.0/8 or 2001:db8::/32", kwTok.text, "network")
}

// maskBits returns the prefix length of a contiguous IPv4 netmask.
func maskBits(t token) (int, bool) {
	if t.kind != tkWord {
		return 0, false
	}
	m, err := netip.ParseAddr(t.text)
	if err != nil || !m.Is4() {
		return 0, false
	}
	b := m.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	ones := 0
	for v&(1<<31) != 0 {
		ones++
		v <<= 1
	}
	return ones, v == 0
}

func (p *parser) port(dir Dir, kwTok token) (Expr, error) {
	if isWord(p.peek(), "in") {
		inTok := p.next()
		open := p.next()
		if open.kind != tkLBrack {
			return nil, p.failAfter(open, `"["`, inTok.text, "[")
		}
		var list []uint16
		for {
			t := p.next()
			if t.kind == tkRBrack && len(list) > 0 {
				return PortIn{Dir: dir, List: list}, nil
			}
			if t.kind == tkComma && len(list) > 0 {
				continue
			}
			n, ok := parseNumber(t.text)
			if t.kind != tkWord || !ok || n > math.MaxUint16 {
				if len(list) == 0 {
					return nil, p.fail(t, "a port number (0-65535) in the list", "port")
				}
				return nil, p.fail(t, `a port number (0-65535), "," or "]"`, "port", ",", "]")
			}
			list = append(list, uint16(n))
		}
	}
	opTok := p.peek()
	op, hasOp := p.op()
	t := p.next()
	if n, ok := parseNumber(t.text); t.kind == tkWord && ok && n <= math.MaxUint16 {
		return Port{Dir: dir, Op: op, N: uint16(n)}, nil
	}
	after := kwTok.text
	if hasOp {
		return nil, p.failAfter(t, "a port number (0-65535)", after+" "+opTok.text, "port")
	}
	return nil, p.failAfter(t, `a port number (0-65535), a comparison or "in"`, after, "port", "comparison", "in")
}

// op parses an optional comparison operator: = == != < <= > >= or nfdump's
// eq ne lt le gt ge. Without one, the comparison is equality.
func (p *parser) op() (Op, bool) {
	t := p.peek()
	var s string
	switch t.kind {
	case tkOp:
		s = t.text
	case tkWord:
		s = strings.ToLower(t.text)
	default:
		return OpEq, false
	}
	var op Op
	switch s {
	case "=", "==", "eq":
		op = OpEq
	case "!=", "ne":
		op = OpNe
	case "<", "lt":
		op = OpLt
	case "<=", "le":
		op = OpLe
	case ">", "gt":
		op = OpGt
	case ">=", "ge":
		op = OpGe
	default:
		return OpEq, false
	}
	p.next()
	return op, true
}

// maxDurationMS keeps a duration in microseconds within Int64.
const maxDurationMS = math.MaxInt64 / 1000

func (p *parser) counter(kwTok token, kw string) (Expr, error) {
	field := map[string]Field{
		"bytes": FieldBytes, "packets": FieldPackets, "duration": FieldDuration,
		"bps": FieldBPS, "pps": FieldPPS, "bpp": FieldBPP,
	}[kw]
	opTok := p.peek()
	op, hasOp := p.op()
	t := p.next()
	what := "a number (units k, M, G, T multiply by 1000)"
	if field == FieldDuration {
		what = "a duration in milliseconds"
	}
	if n, ok := parseNumber(t.text); t.kind == tkWord && ok {
		if field == FieldDuration && n > maxDurationMS {
			return nil, syntaxErr(p.src, t.pos, fmt.Sprintf("duration %s ms is too long", t.text))
		}
		return Counter{Field: field, Op: op, N: n}, nil
	}
	if _, err := parseNumberErr(t.text); t.kind == tkWord && err == errRange {
		return nil, syntaxErr(p.src, t.pos, fmt.Sprintf("number %s is too large", t.text))
	}
	if hasOp {
		return nil, p.failAfter(t, what, kwTok.text+" "+opTok.text, "number")
	}
	return nil, p.failAfter(t, "a comparison or "+what, kwTok.text, "comparison", "number")
}

func (p *parser) flags(kwTok token) (Expr, error) {
	t := p.next()
	var mask uint8
	ok := t.kind == tkWord
	for i := 0; ok && i < len(t.text); i++ {
		c := t.text[i] &^ 0x20 // upper case
		if c == 'X' {
			mask |= 0x3f // nfdump: all of FIN, SYN, RST, PSH, ACK, URG
			continue
		}
		k := strings.IndexByte(flagLetters, c)
		if k < 0 || t.text[i] < 'A' {
			ok = false
			break
		}
		mask |= 1 << k
	}
	if !ok {
		return nil, p.failAfter(t, "TCP flags, letters of FSRPAUEC or X for all", kwTok.text, "flags")
	}
	return Flags{Mask: mask}, nil
}

func (p *parser) iface() (Expr, error) {
	first := p.next()
	dir := IfEither
	kw := first
	switch strings.ToLower(first.text) {
	case "in", "out":
		dir = IfIn
		if isWord(first, "out") {
			dir = IfOut
		}
		kw = p.next()
		if !isWord(kw, "if") {
			return nil, p.failAfter(kw, `"if"`, first.text, "if")
		}
	}
	t := p.next()
	if n, ok := parseNumber(t.text); t.kind == tkWord && ok && n <= math.MaxUint32 {
		return Iface{Dir: dir, N: uint32(n)}, nil
	}
	return nil, p.failAfter(t, "an interface number", kw.text, "number")
}

var errRange = fmt.Errorf("out of range")

// parseNumber parses a decimal number with an optional unit k, M, G or T
// (in either case, each a factor of 1000 as in nfdump), or a hex number
// with 0x.
func parseNumber(s string) (uint64, bool) {
	n, err := parseNumberErr(s)
	return n, err == nil
}

func parseNumberErr(s string) (uint64, error) {
	if len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X") {
		for i := 2; i < len(s); i++ {
			c := s[i] | 0x20
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return 0, strconv.ErrSyntax
			}
		}
		n, err := strconv.ParseUint(s[2:], 16, 64)
		if err != nil {
			return 0, errRange
		}
		return n, nil
	}
	digits, mult := s, uint64(1)
	if len(s) > 1 {
		switch s[len(s)-1] | 0x20 {
		case 'k':
			mult = 1e3
		case 'm':
			mult = 1e6
		case 'g':
			mult = 1e9
		case 't':
			mult = 1e12
		}
		if mult != 1 {
			digits = s[:len(s)-1]
		}
	}
	if digits == "" {
		return 0, strconv.ErrSyntax
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, strconv.ErrSyntax
		}
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return 0, errRange
	}
	if n > math.MaxUint64/mult {
		return 0, errRange
	}
	return n * mult, nil
}
