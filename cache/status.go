package cache

import (
	"strconv"
	"time"
)

// Status is one Cache-Status member (RFC 9211).
type Status struct {
	Hit       bool
	Fwd       string        // uri-miss, vary-miss, miss, request, stale, bypass, method, partial; "" for a hit
	FwdStatus int           // 0: omit
	TTL       time.Duration // remaining freshness (negative when stale); used when HasTTL
	HasTTL    bool
	Stored    bool
	Collapsed bool
	Key       string // omitted when ""
	Detail    string // omitted when ""
}

// sfIntegerMax is the largest magnitude of an RFC 8941 Integer.
const sfIntegerMax = 999_999_999_999_999

// AppendStatus appends s as a structured-field list member for cacheName
// to dst (e.g. `caddy; hit; ttl=42`).
//
// The member is cacheName as an sf-token when it is a valid token, else
// as an sf-string, then the parameters in RFC 9211 order: hit (when Hit)
// or fwd=<token> (when Fwd is a valid token), fwd-status, ttl in whole
// seconds rounded down, stored, collapsed, key (always an
// sf-string) and detail (a token when it is one, else an sf-string).
// Bytes an sf-string cannot hold (controls, non-ASCII) are written as %XX.
// It does not allocate when dst has room. To add to an existing
// Cache-Status value, append ", " and the member (RFC 9211 §2: a cache adds
// its member last).
func AppendStatus(dst []byte, cacheName string, s Status) []byte {
	dst = appendSFTokenOrString(dst, cacheName)
	if s.Hit {
		dst = append(dst, "; hit"...)
	} else if s.Fwd != "" && isSFToken(s.Fwd) {
		dst = append(dst, "; fwd="...)
		dst = append(dst, s.Fwd...)
	}
	if s.FwdStatus > 0 {
		dst = append(dst, "; fwd-status="...)
		dst = strconv.AppendInt(dst, int64(s.FwdStatus), 10)
	}
	if s.HasTTL {
		// Rounded down, not toward zero: a response stale by part of a
		// second is ttl=-1, as RFC 9211 §2.4's negative ttl tells
		// staleness (a review saw ttl=0 on stale hits).
		ttl := int64(s.TTL / time.Second)
		if s.TTL < 0 && s.TTL%time.Second != 0 {
			ttl--
		}
		ttl = max(-sfIntegerMax, min(sfIntegerMax, ttl))
		dst = append(dst, "; ttl="...)
		dst = strconv.AppendInt(dst, ttl, 10)
	}
	if s.Stored {
		dst = append(dst, "; stored"...)
	}
	if s.Collapsed {
		dst = append(dst, "; collapsed"...)
	}
	if s.Key != "" {
		dst = append(dst, "; key="...)
		dst = appendSFString(dst, s.Key)
	}
	if s.Detail != "" {
		dst = append(dst, "; detail="...)
		dst = appendSFTokenOrString(dst, s.Detail)
	}
	return dst
}

// appendSFTokenOrString appends v as an sf-token when it is one, else as
// an sf-string.
func appendSFTokenOrString(dst []byte, v string) []byte {
	if isSFToken(v) {
		return append(dst, v...)
	}
	return appendSFString(dst, v)
}

// isSFToken reports whether v is an RFC 8941 sf-token: ALPHA or "*", then
// tchar, ":" or "/".
func isSFToken(v string) bool {
	if v == "" {
		return false
	}
	if c := v[0]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '*') {
		return false
	}
	for i := 1; i < len(v); i++ {
		if c := v[i]; !isTokenChar(c) && c != ':' && c != '/' {
			return false
		}
	}
	return true
}

// appendSFString appends v as an RFC 8941 sf-string, escaping `"` and
// `\` and percent-encoding bytes outside printable ASCII.
func appendSFString(dst []byte, v string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20 || c > 0x7e:
			dst = appendPercent(dst, c)
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}
