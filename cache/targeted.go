package cache

import (
	"net/http"
	"strings"
	"time"
)

// This file parses targeted cache-control fields (RFC 9213), such as
// CDN-Cache-Control, which are RFC 8941 structured-field dictionaries.

// sfKind is the type of a structured-field member value.
type sfKind uint8

const (
	sfInteger sfKind = iota
	sfDecimal
	sfString
	sfToken
	sfBytes
	sfBoolean
	sfDate
	sfDisplayString
	sfInnerList
)

// sfMember is one dictionary member. Only what the cache directives need
// is kept: parameters and inner-list contents are parsed and dropped.
type sfMember struct {
	key  string
	kind sfKind
	num  int64  // sfInteger, sfDate; sfBoolean: 1 or 0
	str  string // sfString (unescaped), sfToken
}

// parseTargeted returns the ResponseControl described by the targeted field
// named field and whether it applies: false when the field is absent or
// does not parse, in which case RFC 9213 §2.1 says to ignore it and fall
// back to Cache-Control and Expires.
//
// Directives map to dictionary members as RFC 9213 §2.1 describes: Boolean
// for directives without an argument (?0 means absent), Integer for
// delta-seconds, String for the field lists of no-cache and private.
// s-maxage counts like max-age. A max-age or s-maxage that is not a
// non-negative Integer sets Invalid; any other directive with a value of the
// wrong type is ignored. Parameters are ignored.
func parseTargeted(h http.Header, field string) (ResponseControl, bool) {
	lines := fieldLines(h, field)
	if len(lines) == 0 {
		return ResponseControl{}, false
	}
	members, ok := parseSFDictionary(strings.Join(lines, ","))
	if !ok {
		return ResponseControl{}, false
	}
	rc := ResponseControl{MaxAge: -1, SMaxAge: -1, StaleWhileRevalidate: -1, StaleIfError: -1, Targeted: true}
	flag := func(m sfMember) bool { return m.kind == sfBoolean && m.num == 1 }
	for _, m := range members {
		switch m.key {
		case "max-age", "s-maxage":
			dst := &rc.MaxAge
			if m.key == "s-maxage" {
				dst = &rc.SMaxAge
			}
			if m.kind != sfInteger || m.num < 0 {
				rc.Invalid = true
				continue
			}
			*dst = sfSeconds(m.num)
		case "stale-while-revalidate", "stale-if-error":
			dst := &rc.StaleWhileRevalidate
			if m.key == "stale-if-error" {
				dst = &rc.StaleIfError
			}
			if m.kind == sfInteger && m.num >= 0 {
				*dst = sfSeconds(m.num)
			}
		case "no-store":
			rc.NoStore = flag(m)
		case "no-cache":
			rc.NoCache, rc.NoCacheFields = targetedFieldList(m)
		case "private":
			rc.Private, rc.PrivateFields = targetedFieldList(m)
		case "public":
			rc.Public = flag(m)
		case "must-revalidate":
			rc.MustRevalidate = flag(m)
		case "proxy-revalidate":
			rc.ProxyRevalidate = flag(m)
		case "must-understand":
			rc.MustUnderstand = flag(m)
		case "immutable":
			rc.Immutable = flag(m)
		}
	}
	return rc, true
}

// fieldLines returns the lines of field in h without allocating: the
// configured name need not be in canonical form ("CDN-Cache-Control" is
// stored as "Cdn-Cache-Control").
func fieldLines(h http.Header, field string) []string {
	if vs, ok := h[field]; ok {
		return vs
	}
	for k, vs := range h {
		if strings.EqualFold(k, field) {
			return vs
		}
	}
	return nil
}

// targetedFieldList maps a targeted no-cache or private member: true is
// the bare directive, a String the qualified form.
func targetedFieldList(m sfMember) (bare bool, fields []string) {
	switch m.kind {
	case sfBoolean:
		return m.num == 1, nil
	case sfString:
		if f := directiveFields(m.str, true); f != nil {
			return false, f
		}
		return true, nil // an empty list is the stricter, bare form
	}
	return false, nil
}

// sfSeconds converts a non-negative sf-integer number of seconds,
// saturating like delta-seconds.
func sfSeconds(n int64) time.Duration {
	if n > int64(maxDelta/time.Second) {
		return maxDelta
	}
	return time.Duration(n) * time.Second
}

// parseSFDictionary parses s as an RFC 8941 §4.2.2 dictionary (with the
// Date and Display String types of RFC 9651 accepted so that newer senders
// do not make the whole field invalid). Later duplicates of a key replace
// earlier ones, keeping the first one's position.
func parseSFDictionary(s string) ([]sfMember, bool) {
	p := sfParser{s: s}
	p.skipSP()
	var out []sfMember
	for !p.done() {
		key, ok := p.key()
		if !ok {
			return nil, false
		}
		m := sfMember{key: key, kind: sfBoolean, num: 1}
		if p.peek() == '=' {
			p.i++
			if p.peek() == '(' {
				if !p.innerList() {
					return nil, false
				}
				m.kind, m.num = sfInnerList, 0
			} else if m, ok = p.bareItem(key); !ok {
				return nil, false
			}
		}
		if !p.params() {
			return nil, false
		}
		replaced := false
		for i := range out {
			if out[i].key == key {
				out[i] = m
				replaced = true
				break
			}
		}
		if !replaced {
			out = append(out, m)
		}
		if end, ok := p.next(); !ok {
			return nil, false
		} else if end {
			return out, true
		}
	}
	// Only an empty (all-space) field gets here; RFC 8941 §4.2 treats an
	// empty dictionary field as absent, so fall back to Cache-Control.
	return nil, false
}

// isSFList reports whether s is a structured-field list (RFC 8941
// §4.2.1), such as a Cache-Status line.
func isSFList(s string) bool {
	p := sfParser{s: s}
	p.skipSP()
	for !p.done() {
		if p.peek() == '(' {
			if !p.innerList() {
				return false
			}
		} else if _, ok := p.bareItem(""); !ok || !p.params() {
			return false
		}
		if end, ok := p.next(); !ok || end {
			return ok
		}
	}
	return true
}

// sfParser is a cursor over a structured field value.
type sfParser struct {
	s string
	i int
}

func (p *sfParser) done() bool { return p.i >= len(p.s) }

// next moves past the end of a list's or dictionary's member: end at the
// end of the input, ok false when what follows is not a comma and another
// member (a trailing comma fails too: RFC 8941 §4.2.1).
func (p *sfParser) next() (end, ok bool) {
	p.skipOWS()
	if p.done() {
		return true, true
	}
	if p.peek() != ',' {
		return false, false
	}
	p.i++
	p.skipOWS()
	return false, !p.done()
}

func (p *sfParser) peek() byte {
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

func (p *sfParser) skipSP() {
	for p.i < len(p.s) && p.s[p.i] == ' ' {
		p.i++
	}
}

func (p *sfParser) skipOWS() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

// key parses an sf key: lcalpha or "*", then lcalpha, DIGIT, "_", "-",
// "." or "*".
func (p *sfParser) key() (string, bool) {
	start := p.i
	if c := p.peek(); !(c >= 'a' && c <= 'z' || c == '*') {
		return "", false
	}
	p.i++
	for p.i < len(p.s) {
		c := p.s[p.i]
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || c == '*' {
			p.i++
			continue
		}
		break
	}
	return p.s[start:p.i], true
}

// params parses and discards parameters: *( ";" *SP key [ "=" bare-item ] ).
func (p *sfParser) params() bool {
	for p.peek() == ';' {
		p.i++
		p.skipSP()
		key, ok := p.key()
		if !ok {
			return false
		}
		if p.peek() == '=' {
			p.i++
			if _, ok := p.bareItem(key); !ok {
				return false
			}
		}
	}
	return true
}

// innerList parses and discards an inner list: "(" *SP [ item *( 1*SP
// item ) *SP ] ")" parameters.
func (p *sfParser) innerList() bool {
	p.i++ // '('
	for {
		p.skipSP()
		if p.peek() == ')' {
			p.i++
			return p.params()
		}
		if p.done() {
			return false
		}
		if _, ok := p.bareItem(""); !ok || !p.params() {
			return false
		}
		if c := p.peek(); c != ' ' && c != ')' {
			return false
		}
	}
}

// bareItem parses one bare item into a member named key.
func (p *sfParser) bareItem(key string) (sfMember, bool) {
	m := sfMember{key: key}
	c := p.peek()
	switch {
	case c == '-' || c >= '0' && c <= '9':
		return m, p.number(&m)
	case c == '"':
		m.kind = sfString
		s, ok := p.sfString()
		m.str = s
		return m, ok
	case c == '*' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		m.kind = sfToken
		start := p.i
		p.i++
		for p.i < len(p.s) && (isTokenChar(p.s[p.i]) || p.s[p.i] == ':' || p.s[p.i] == '/') {
			p.i++
		}
		m.str = p.s[start:p.i]
		return m, true
	case c == ':':
		m.kind = sfBytes
		p.i++
		for p.i < len(p.s) && p.s[p.i] != ':' {
			b := p.s[p.i]
			if !(b >= 'A' && b <= 'Z' || b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '+' || b == '/' || b == '=') {
				return m, false
			}
			p.i++
		}
		if p.done() {
			return m, false
		}
		p.i++
		return m, true
	case c == '?':
		m.kind = sfBoolean
		p.i++
		switch p.peek() {
		case '1':
			m.num = 1
		case '0':
		default:
			return m, false
		}
		p.i++
		return m, true
	case c == '@': // RFC 9651 Date
		p.i++
		if !p.number(&m) || m.kind != sfInteger {
			return m, false
		}
		m.kind = sfDate
		return m, true
	case c == '%': // RFC 9651 Display String
		p.i++
		if p.peek() != '"' {
			return m, false
		}
		p.i++
		for p.i < len(p.s) {
			b := p.s[p.i]
			switch {
			case b == '"':
				p.i++
				m.kind = sfDisplayString
				return m, true
			case b == '%':
				if p.i+2 >= len(p.s) || !isLowerHex(p.s[p.i+1]) || !isLowerHex(p.s[p.i+2]) {
					return m, false
				}
				p.i += 3
			case b < 0x20 || b > 0x7e:
				return m, false
			default:
				p.i++
			}
		}
		return m, false
	}
	return m, false
}

// number parses an sf-integer (at most 15 digits) or sf-decimal (at most
// 12 integer and 3 fractional digits).
func (p *sfParser) number(m *sfMember) bool {
	neg := false
	if p.peek() == '-' {
		neg = true
		p.i++
	}
	start := p.i
	var n int64
	for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		n = n*10 + int64(p.s[p.i]-'0')
		p.i++
		if p.i-start > 15 {
			return false
		}
	}
	digits := p.i - start
	if digits == 0 {
		return false
	}
	if p.peek() != '.' {
		m.kind = sfInteger
		if neg {
			n = -n
		}
		m.num = n
		return true
	}
	if digits > 12 {
		return false
	}
	p.i++
	fstart := p.i
	for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		p.i++
	}
	if f := p.i - fstart; f == 0 || f > 3 {
		return false
	}
	m.kind = sfDecimal
	return true
}

// sfString parses an sf-string: printable ASCII, with \" and \\ the only
// escapes.
func (p *sfParser) sfString() (string, bool) {
	p.i++ // opening quote
	var b []byte
	start := p.i
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			if b == nil {
				return p.s[start : p.i-1], true
			}
			return string(b), true
		case c == '\\':
			if p.i+1 >= len(p.s) || (p.s[p.i+1] != '"' && p.s[p.i+1] != '\\') {
				return "", false
			}
			if b == nil {
				b = append([]byte(nil), p.s[start:p.i]...)
			}
			b = append(b, p.s[p.i+1])
			p.i += 2
		case c < 0x20 || c > 0x7e:
			return "", false
		default:
			if b != nil {
				b = append(b, c)
			}
			p.i++
		}
	}
	return "", false
}

func isLowerHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' }

// isTokenChar reports whether c is an RFC 9110 §5.6.2 tchar.
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
