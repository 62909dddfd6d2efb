package cache

import (
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// ParseVary returns the canonical field names listed in h's Vary fields,
// sorted and deduplicated, and whether the response varies on what no
// request shows the cache: Vary contains "*", a member that is not a
// field name (Vary: Cookie User-Agent, "X-A", X-A;q=1; RFC 9110 §12.5.5:
// no request carries such a field, so all would match, the requests the
// origin told apart among them), X-Forwarded-For, which reverse_proxy
// writes from the client's address after the cache, or Via, to which it
// adds the client's HTTP version ("1.0 Caddy", "2.0 Caddy").
func ParseVary(h http.Header) (fields []string, star bool) {
	for _, line := range h["Vary"] {
		for f := range strings.SplitSeq(line, ",") {
			f = strings.TrimSpace(f)
			switch {
			case f == "":
			case f == "*" || !isFieldName(f):
				star = true
			default:
				f = textproto.CanonicalMIMEHeaderKey(f)
				if f == "X-Forwarded-For" || f == "Via" {
					star = true
				}
				fields = append(fields, f)
			}
		}
	}
	slices.Sort(fields)
	return slices.Compact(fields), star
}

// hopByHop reports whether the canonical request field name is one that
// reverse_proxy does not forward (RFC 9110 §7.6.1; its hopHeaders).
func hopByHop(name string) bool {
	switch name {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authorization", "Proxy-Authenticate",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Alt-Svc":
		return true
	}
	return false
}

// requestVaryKey is VaryKey for the request r, whose X-Forwarded-Proto
// and X-Forwarded-Host reverse_proxy replaces with its own unless r comes
// from a trusted proxy (trusted_proxies): a response varying on one that
// an untrusted client sent was made for another value (its connection's
// scheme, its Host), so the request matches no variant and its answer is
// not stored, lest a client reaching a node directly store the answer
// for http under the variant a trusted front asks for with https.
func requestVaryKey(fields []string, r *http.Request) string {
	if rewritesForwarded(fields, r) {
		return unmatchedVaryKey
	}
	return VaryKey(fields, r.Header)
}

// matchesNoVariant reports whether requestVaryKey gives r unmatchedVaryKey
// for fields, without making the key.
func matchesNoVariant(fields []string, r *http.Request) bool {
	return forwardsUnseen(fields, r.Header) || rewritesForwarded(fields, r)
}

// rewritesForwarded reports whether reverse_proxy replaces a field among
// fields that r carries (see requestVaryKey).
func rewritesForwarded(fields []string, r *http.Request) bool {
	for _, f := range fields {
		if f != "X-Forwarded-Proto" && f != "X-Forwarded-Host" {
			continue
		}
		if _, present := r.Header[f]; present {
			trusted, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool)
			return !trusted
		}
	}
	return false
}

// unmatchedVaryKey is what VaryKey gives a request that carries a field
// its Vary names but the origin may not see: no stored variant has it
// (whyNotStored), so the request matches none.
const unmatchedVaryKey = "!"

// forwardsUnseen reports whether req carries one of fields that
// reverse_proxy does not forward: a hop-by-hop field, or one its
// Connection field names (RFC 9110 §7.6.1). The origin's answer then
// varies on a value other than the one the request shows the cache, so
// the request is matched to no variant and its answer not stored.
func forwardsUnseen(fields []string, req http.Header) bool {
	for _, f := range fields {
		if _, present := req[f]; !present {
			continue
		}
		if hopByHop(f) {
			return true
		}
		for _, line := range req["Connection"] {
			for name := range strings.SplitSeq(line, ",") {
				if strings.EqualFold(textproto.TrimString(name), f) {
					return true
				}
			}
		}
	}
	return false
}

// VaryKey returns the values of fields in req that select a variant (RFC
// 9111 §4.1), in a form where two requests share a key only when the
// origin cannot tell their values apart; an absent field is distinct from
// an empty one.
//
// Fields are taken in the order given (ParseVary's sorted order) under
// their canonical names. Only the fields isListField names, whose values
// RFC 9110 defines as comma-separated lists, are normalised, and only as
// far as an origin reading them loosely cannot tell: each line of Accept,
// Accept-Charset and Accept-Language on its own (normalizeListLine:
// members trimmed, runs of spaces and tabs outside quoted strings made
// one space, an unterminated quoted string closed at the end of its line;
// empty members and the lines kept), and Accept-Encoding's codings as one
// set (normalizeCodings), whose every answer says its coding. Every other
// field (Cookie, User-Agent, Origin, X-…) is kept as it came, byte for
// byte and line by line: most are not lists, so a comma, a space or an
// empty member may change what the origin makes of them ("lang=en," is
// not "lang=en"). reverse_proxy forwards a field's lines as separate
// lines, of which many origins read only the first (Go's Header.Get does,
// and Go's transport sends only the first User-Agent line): an empty
// first Accept-Language line got the default language's page stored for
// French browsers when lines were combined (a review).
//
// The encoding, name length:name then "-" for absent, value length:value
// for one value (a list field's, or the one line of another field), or
// "*" line count ":" then each line's length:value for a field of several
// lines, cannot be confused between different inputs. A request that
// carries a field among fields that reverse_proxy does not forward (see
// forwardsUnseen) gets unmatchedVaryKey, which no stored variant has.
func VaryKey(fields []string, req http.Header) string {
	if forwardsUnseen(fields, req) {
		return unmatchedVaryKey
	}
	var b []byte
	for _, f := range fields {
		name := textproto.CanonicalMIMEHeaderKey(f)
		b = strconv.AppendInt(b, int64(len(name)), 10)
		b = append(b, ':')
		b = append(b, name...)
		lines, present := req[name]
		switch {
		case !present:
			b = append(b, '-')
		case name == "Accept-Encoding":
			b = appendLenValue(b, normalizeCodings(lines))
		case isListField(name):
			b = appendLines(b, lines, normalizeListLine)
		default:
			b = appendLines(b, lines, nil)
		}
	}
	return string(b)
}

// appendLines appends a field's lines, each through norm unless it is
// nil: one line as its length:value, several as "*", their count, ":"
// and each line's length:value.
func appendLines(b []byte, lines []string, norm func(string) string) []byte {
	if len(lines) != 1 {
		b = append(b, '*')
		b = strconv.AppendInt(b, int64(len(lines)), 10)
		b = append(b, ':')
	}
	for _, line := range lines {
		if norm != nil {
			line = norm(line)
		}
		b = appendLenValue(b, line)
	}
	return b
}

// appendLenValue appends v's length, ':' and v.
func appendLenValue(b []byte, v string) []byte {
	b = strconv.AppendInt(b, int64(len(v)), 10)
	b = append(b, ':')
	return append(b, v...)
}

// isListField reports whether VaryKey normalises the canonical request
// field name: the proactive negotiation fields of RFC 9110 §12.5, each a
// #( member ) list of media ranges, charsets, codings or language ranges
// with their weights. Spacing around their commas and empty members carry
// no meaning there (§5.6.1), and an origin that negotiates reads them as
// lists. Other fields are compared as they came, lists or not: responses
// rarely vary on the other lists of RFC 9110 (Cache-Control,
// If-None-Match, Via…), an origin may read them loosely, and the
// structured fields of client hints (Sec-CH-*) fail to parse as a whole
// with an empty member (RFC 8941 §4.2.1), so there a trailing comma does
// change what the origin sees.
func isListField(name string) bool {
	switch name {
	case "Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language":
		return true
	}
	return false
}

// normalizeCodings combines the lines of Accept-Encoding into one
// normalised value: codings and their weights are tokens (no quoted
// strings, and whitespace and case carry no meaning), empty members are
// dropped and the members sorted. Whatever an origin makes of the lines,
// it answers with a coding the set allows, and says which
// (Content-Encoding), so any request of the same set can take it.
func normalizeCodings(lines []string) string {
	var members []string
	for _, line := range lines {
		for m := range strings.SplitSeq(line, ",") {
			m = compactLower(m)
			if m != "" {
				members = append(members, m)
			}
		}
	}
	slices.Sort(members)
	return strings.Join(members, ", ")
}

// normalizeListLine normalises one line of a list field other than
// Accept-Encoding (isListField): members trimmed, runs of spaces and tabs
// outside quoted strings made one space, joined by ", ", in their order
// and empty ones kept. An origin reading the line loosely (the first
// member of strings.Split(v, ",")) answers ",fr" as it answers no
// language, not as it answers "fr" (a review stored the default
// language's page for French browsers so).
func normalizeListLine(line string) string {
	return strings.Join(appendListMembers(nil, line), ", ")
}

// appendListMembers splits line at commas outside quoted strings and
// appends the members, empty ones too, trimmed, with whitespace runs
// outside quoted strings collapsed to one space.
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
		dst = append(dst, b.String())
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
