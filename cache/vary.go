package cache

import (
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
)

// ParseVary returns the canonical field names listed in h's Vary fields,
// sorted and deduplicated, and whether Vary contains "*".
func ParseVary(h http.Header) (fields []string, star bool) {
	for _, line := range h["Vary"] {
		for f := range strings.SplitSeq(line, ",") {
			f = strings.TrimSpace(f)
			switch f {
			case "":
			case "*":
				star = true
			default:
				fields = append(fields, textproto.CanonicalMIMEHeaderKey(f))
			}
		}
	}
	slices.Sort(fields)
	return slices.Compact(fields), star
}

// VaryKey returns the normalised values of fields in req (RFC 9111 §4.1):
// whitespace collapsed, combined field lines joined; an absent field is
// distinct from an empty one.
//
// Fields are taken in the order given (ParseVary's sorted order) under
// their canonical names. A field's lines are combined as one list: list
// members are trimmed, runs of spaces and tabs outside quoted strings
// become one space, empty members are dropped (RFC 9110 §5.6.1), and the
// members are joined with ", ". An unterminated quoted string is closed
// at the end of its line. Accept-Encoding members are also
// lowercased, stripped of all whitespace and sorted, so "gzip, br" matches
// "br,gzip". The encoding, name length:name then "-" for absent or value
// length:value, cannot be confused between different inputs.
func VaryKey(fields []string, req http.Header) string {
	var b []byte
	for _, f := range fields {
		name := textproto.CanonicalMIMEHeaderKey(f)
		b = strconv.AppendInt(b, int64(len(name)), 10)
		b = append(b, ':')
		b = append(b, name...)
		lines, present := req[name]
		if !present {
			b = append(b, '-')
			continue
		}
		v := normalizeVaryValue(name, lines)
		b = strconv.AppendInt(b, int64(len(v)), 10)
		b = append(b, ':')
		b = append(b, v...)
	}
	return string(b)
}

// normalizeVaryValue combines the lines of field name into one normalised
// value as VaryKey describes.
func normalizeVaryValue(name string, lines []string) string {
	var members []string
	if name == "Accept-Encoding" {
		// Codings and their weights are tokens: no quoted strings, and
		// whitespace and case carry no meaning.
		for _, line := range lines {
			for m := range strings.SplitSeq(line, ",") {
				m = compactLower(m)
				if m != "" {
					members = append(members, m)
				}
			}
		}
		slices.Sort(members)
	} else {
		for _, line := range lines {
			members = appendListMembers(members, line)
		}
	}
	return strings.Join(members, ", ")
}

// appendListMembers splits line at commas outside quoted strings and
// appends the non-empty members, trimmed, with whitespace runs outside
// quoted strings collapsed to one space.
func appendListMembers(dst []string, line string) []string {
	var b strings.Builder
	inQuote, escaped, pendingSpace := false, false, false
	flush := func() {
		if inQuote {
			// An unterminated quoted string would swallow the members
			// joined after it; close it (dropping a dangling escape) so
			// that normalising a normalised value changes nothing.
			m := b.String()
			if escaped {
				m = m[:len(m)-1]
			}
			b.Reset()
			b.WriteString(m)
			b.WriteByte('"')
			inQuote, escaped = false, false
		}
		if b.Len() > 0 {
			dst = append(dst, b.String())
		}
		b.Reset()
		pendingSpace = false
	}
	for i := 0; i < len(line); i++ {
		c := line[i]
		if inQuote {
			b.WriteByte(c)
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inQuote = false
			}
			continue
		}
		switch c {
		case ',':
			flush()
		case ' ', '\t':
			pendingSpace = b.Len() > 0
		default:
			if pendingSpace {
				b.WriteByte(' ')
				pendingSpace = false
			}
			b.WriteByte(c)
			if c == '"' {
				inQuote = true
			}
		}
	}
	flush()
	return dst
}

// compactLower returns s lowercased (ASCII) without spaces and tabs.
func compactLower(s string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			continue
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		b = append(b, c)
	}
	return string(b)
}
