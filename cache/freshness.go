package cache

import (
	"net/http"
	"slices"
	"strings"
	"time"
)

// This file decides whether a response may be stored (RFC 9111 §3), how
// long it stays fresh (§4.2.1, §4.2.2), how old it is (§4.2.3), and
// whether a stored response may answer a request (§4.2, §4.2.4, §5.2.1,
// RFC 5861).

// Storable reports why a response to req may not be stored by a shared
// cache ("" when it may): RFC 9111 §3 with §3.5 (Authorization), plus
// Set-Cookie responses unless allowSetCookie. hasLifetime says whether
// the response has explicit or heuristic freshness, or a default TTL.
//
// The reasons are short tokens fit for the Cache-Status detail parameter:
//   - "method": the request method is not GET (HEAD is answered from a
//     stored GET but its response is not stored);
//   - "status": a 1xx, a 206 or 304 (ranges are not merged), a 412 (it
//     answers the request's own preconditions), or a status not
//     understood under must-understand;
//   - "no-store", "private" (bare; the qualified form only strips fields);
//   - "authorization": the request had Authorization and the response none
//     of public, s-maxage, must-revalidate (§3.5);
//   - "set-cookie": the response sets a cookie and allowSetCookie is false,
//     unless its no-cache="…" or private="…" names Set-Cookie, which is
//     then left out of what is stored;
//   - "no-freshness": neither hasLifetime nor public (§3 also allows
//     storing a heuristically cacheable status without freshness, but such
//     an entry would be stale at once; DefaultTTL opts in to storing it,
//     except a 414 or 501: see OperatorFreshness), unless the response has
//     no-cache and a validator (ETag or Last-Modified): stored to be
//     revalidated on every use.
func Storable(req *http.Request, status int, h http.Header, rc ResponseControl, hasLifetime, allowSetCookie bool) string {
	if req.Method != http.MethodGet {
		return "method"
	}
	if status < 200 || status > 999 || status == http.StatusPartialContent || status == http.StatusNotModified ||
		status == http.StatusPreconditionFailed { // answers this request's own preconditions (RFC 9110 §15.5.13)
		return "status"
	}
	if rc.MustUnderstand {
		// §5.2.2.3: a cache that understands the status may ignore
		// no-store; one that does not must not store.
		if !understoodStatus(status) {
			return "status"
		}
	} else if rc.NoStore {
		return "no-store"
	}
	if rc.Private {
		return "private"
	}
	// Presence, not value: a first, empty Authorization line must not hide
	// a second one that the origin reads.
	if len(req.Header["Authorization"]) > 0 && !rc.Public && !rc.MustRevalidate && rc.SMaxAge < 0 {
		return "authorization"
	}
	// A Set-Cookie named by no-cache="…" or private="…" is not stored
	// (§5.2.2.4, §5.2.2.7: the rest may be; packStorable leaves it out).
	if !allowSetCookie && len(h["Set-Cookie"]) > 0 &&
		!slices.Contains(rc.NoCacheFields, "Set-Cookie") && !slices.Contains(rc.PrivateFields, "Set-Cookie") {
		return "set-cookie"
	}
	// A heuristically cacheable status may be stored with no lifetime
	// (§3); it is then of use only to revalidate, so this cache stores
	// it when the origin says so: no-cache, with a validator to
	// revalidate by.
	revalidateOnly := rc.NoCache && HeuristicallyCacheable(status) && hasValidator(h)
	if !hasLifetime && !rc.Public && !revalidateOnly {
		return "no-freshness"
	}
	return ""
}

// understoodStatus lists the status codes whose caching requirements this
// cache implements, for must-understand (RFC 9111 §5.2.2.3).
func understoodStatus(status int) bool {
	switch status {
	case 200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501:
		return true
	}
	return false
}

// HeuristicallyCacheable reports whether status is cacheable by default
// (RFC 9110 §15.1).
func HeuristicallyCacheable(status int) bool {
	switch status {
	case 200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501:
		return true
	}
	return false
}

// OperatorFreshness reports whether freshness that the operator rather
// than the origin gives may apply to a response of status: default_ttl,
// and what the caching fields set by handlers before the cache allow
// (`header /static/* Cache-Control "public, max-age=3600"`). These are the
// heuristically cacheable statuses (RFC 9110 §15.1) that tell of the
// target resource, the same whoever asks for it: 200, 203, 204, 206, 300,
// 301, 308, 404, 405 and 410. Not 414 and 501, which tell of the request
// (a URI too long, under a key without the query; a feature the origin
// does not implement), nor any other status (400, 413, 431, 5xx; 302,
// 303, 307, which may depend on a cookie, a language or a device): a
// client can provoke those for a URL whose answer is a 200, and stored
// under that URL they would answer everyone else. The origin's own fields
// decide for them alone (default_ttl applies to them only when the origin
// says public); those set before the cache may only restrict.
func OperatorFreshness(status int) bool {
	switch status {
	case 200, 203, 204, 206, 300, 301, 308, 404, 405, 410:
		return true
	}
	return false
}

// Lifetime returns the freshness lifetime of a response (RFC 9111 §4.2.1:
// s-maxage over max-age over Expires-Date; §4.2.2 heuristic at most 10% of
// Date-Last-Modified for heuristically cacheable statuses; else
// defaultTTL, for the statuses of OperatorFreshness or a public response)
// and whether it has any (false: nothing gave it a lifetime).
// An invalid or duplicated freshness value gives lifetime 0, true (stale).
//
// It is LifetimeAt with the response's Date as the time received; use
// LifetimeAt when the receive time is known, so that a response without
// Date gets Expires measured from when it arrived.
func Lifetime(status int, h http.Header, rc ResponseControl, defaultTTL time.Duration) (time.Duration, bool) {
	return LifetimeAt(status, h, rc, defaultTTL, time.Time{})
}

// LifetimeAt is Lifetime for a response received at responseTime, which
// stands in for a missing or invalid Date (RFC 9111 §4.2.1). A zero
// responseTime means unknown: then Expires without a usable Date makes the
// response stale and no heuristic applies.
//
// Precedence: rc.Invalid (0, stale); s-maxage; max-age; Expires - Date,
// unless rc is from a targeted field, which overrides Expires (RFC 9213);
// an invalid Expires (such as "0") or differing Expires or Date lines mean
// already expired (0, true). Without explicit freshness, for a
// heuristically cacheable status or a public response: 10% of Date -
// Last-Modified when Last-Modified is valid and earlier (§4.2.2), else
// defaultTTL when positive, the operator's stand-in for a heuristic: for
// the statuses of OperatorFreshness, and for others only when rc is
// public (§4.2.2 lets a cache give a public response a heuristic
// lifetime), so not for a 414 or 501 that does not say public. Nothing
// gives a lifetime to other statuses: (0, false).
func LifetimeAt(status int, h http.Header, rc ResponseControl, defaultTTL time.Duration, responseTime time.Time) (time.Duration, bool) {
	if rc.Invalid {
		return 0, true
	}
	if rc.SMaxAge >= 0 {
		return rc.SMaxAge, true
	}
	if rc.MaxAge >= 0 {
		return rc.MaxAge, true
	}
	date, unambiguous := headerDate(h, "Date")
	if date.IsZero() {
		date = standInDate(responseTime)
	}
	if !rc.Targeted {
		if _, present := h["Expires"]; present {
			exp, ok := headerDate(h, "Expires")
			if !ok || !unambiguous || exp.IsZero() || date.IsZero() {
				return 0, true
			}
			return max(0, exp.Sub(date)), true
		}
	}
	if !HeuristicallyCacheable(status) && !rc.Public {
		return 0, false
	}
	if !unambiguous {
		return 0, true // differing Date lines: treat as stale (§4.2.1)
	}
	if lm, ok := headerDate(h, "Last-Modified"); ok && !lm.IsZero() && !date.IsZero() && lm.Before(date) {
		return date.Sub(lm) / 10, true
	}
	if defaultTTL > 0 && (OperatorFreshness(status) || rc.Public) {
		return defaultTTL, true
	}
	return 0, false
}

// standInDate is the Date of a response without a valid one, received at
// responseTime: in whole seconds, as the Date the cache then stores with
// it. Freshness and age must agree on it: a file modified in the second
// it was fetched otherwise got 10% of a fraction of a second at its first
// store and default_ttl at its first 304, whose Date equals its
// Last-Modified, and a response was fresh up to a second past its
// Expires (two reviews).
func standInDate(responseTime time.Time) time.Time { return responseTime.Truncate(time.Second) }

// headerDate parses the HTTP-date in field name. ok is false when the
// field has differing values (ambiguous); the time is zero when the field
// is absent or not a valid HTTP-date.
func headerDate(h HeaderReader, name string) (t time.Time, ok bool) {
	vs := h.Values(name)
	if len(vs) == 0 {
		return time.Time{}, true
	}
	for _, v := range vs[1:] {
		if strings.TrimSpace(v) != strings.TrimSpace(vs[0]) {
			return time.Time{}, false
		}
	}
	t, err := parseHTTPDate(strings.TrimSpace(vs[0]))
	if err != nil {
		return time.Time{}, true
	}
	return t, true
}

// InitialAge is the corrected initial age of a response received at
// responseTime for a request sent at requestTime (RFC 9111 §4.2.3). ok is
// false when Age is invalid, which makes the response stale.
//
//	apparent_age = max(0, response_time - date_value)
//	response_delay = response_time - request_time
//	corrected_age_value = age_value + response_delay
//	corrected_initial_age = max(apparent_age, corrected_age_value)
//
// With several Age values the first is used. A missing or invalid Date
// stands for standInDate(responseTime), as in LifetimeAt (an apparent age
// of its fraction of a second); an Age too large saturates at 2^31
// seconds.
func InitialAge(h http.Header, requestTime, responseTime time.Time) (age time.Duration, ok bool) {
	var ageValue time.Duration
	ok = true
	if vs := h["Age"]; len(vs) > 0 {
		first, _, _ := strings.Cut(vs[0], ",")
		d, valid := parseDeltaSeconds(strings.TrimSpace(first))
		if valid {
			ageValue = d
		} else {
			ok = false
		}
	}
	date, _ := headerDate(h, "Date")
	if date.IsZero() {
		date = standInDate(responseTime)
	}
	apparent := max(0, responseTime.Sub(date))
	delay := max(0, responseTime.Sub(requestTime))
	return max(apparent, ageValue+delay), ok
}

// CurrentAge is the age at now of a response with the given corrected
// initial age, received at responseTime (RFC 9111 §4.2.3: plus the
// resident time). A clock that went backwards adds nothing.
func CurrentAge(initialAge time.Duration, responseTime, now time.Time) time.Duration {
	return initialAge + max(0, now.Sub(responseTime))
}

// Freshness is what a stored response's freshness depends on, computed
// once when it is stored or refreshed by a 304. The zero value is a
// response that is always stale.
type Freshness struct {
	// Lifetime is the freshness lifetime (LifetimeAt); 0 for a response
	// that must be revalidated on every use (no-cache, invalid Age).
	Lifetime time.Duration
	// InitialAge is the corrected initial age (InitialAge).
	InitialAge time.Duration
	// ResponseTime is when the response was received.
	ResponseTime time.Time
	// Defaulted marks a Lifetime that is the cache's default_ttl: the
	// response had none of its own. A later config's shorter default_ttl
	// (or none) then bounds it (see Handler.freshness).
	Defaulted bool
	// Heuristic marks a Lifetime that came from the heuristic (10% of the
	// time since Last-Modified): the current config's heuristic_max
	// bounds it (see Handler.freshness).
	Heuristic bool
}

// NewFreshness computes the Freshness of a response with header h and
// parsed directives rc to a request sent at requestTime, received at
// responseTime; hasLifetime is LifetimeAt's second result, for Storable.
// no-cache (bare) and an invalid Age make the lifetime 0, so every use
// revalidates (RFC 9111 §5.2.2.4, §4.2.3).
func NewFreshness(status int, h http.Header, rc ResponseControl, defaultTTL time.Duration, requestTime, responseTime time.Time) (f Freshness, hasLifetime bool) {
	lifetime, hasLifetime := LifetimeAt(status, h, rc, defaultTTL, responseTime)
	return freshnessWith(lifetime, h, rc, requestTime, responseTime), hasLifetime
}

// freshnessWith is NewFreshness for a lifetime already computed with
// LifetimeAt.
func freshnessWith(lifetime time.Duration, h http.Header, rc ResponseControl, requestTime, responseTime time.Time) Freshness {
	age, ok := InitialAge(h, requestTime, responseTime)
	if rc.NoCache || !ok {
		lifetime = 0
	}
	return Freshness{Lifetime: lifetime, InitialAge: age, ResponseTime: responseTime}
}

// Age is the current age at now, for the Age header of a response served
// from the cache (send it rounded down to whole seconds).
func (f Freshness) Age(now time.Time) time.Duration {
	return CurrentAge(f.InitialAge, f.ResponseTime, now)
}

// TTL is the remaining freshness at now: positive while fresh, zero or
// negative (how long it has been stale) after. It is the Cache-Status ttl.
func (f Freshness) TTL(now time.Time) time.Duration {
	return f.Lifetime - f.Age(now)
}

// Fresh reports whether the response is fresh at now (RFC 9111 §4.2:
// freshness_lifetime > current_age).
func (f Freshness) Fresh(now time.Time) bool { return f.TTL(now) > 0 }

// Satisfies reports whether the stored response may answer a request with
// directives req at now without contacting the origin (RFC 9111 §4.2,
// §5.2.1): not under request no-cache; not older than request max-age;
// fresh for at least request min-fresh; and either fresh, or stale by no
// more than request max-stale when rc allows serving stale at all.
// Stale-while-revalidate and stale-if-error are decided separately, see
// StaleAllowance.
func (f Freshness) Satisfies(now time.Time, req RequestControl, rc ResponseControl) bool {
	if req.NoCache {
		return false
	}
	age := f.Age(now)
	if req.MaxAge >= 0 && age > req.MaxAge {
		return false
	}
	ttl := f.Lifetime - age
	if req.MinFresh >= 0 && ttl < req.MinFresh {
		return false
	}
	if ttl > 0 {
		return true
	}
	return req.MaxStale >= 0 && rc.MayServeStale() && -ttl <= req.MaxStale
}

// StaleAllowance returns how long past its freshness a stored response may
// be served while it is revalidated in the background (swr, RFC 5861 §3)
// and when the origin fails (sie, RFC 5861 §4: a 500, 502, 503, 504 or no
// answer).
//
// The configured windows cfgSWR and cfgSIE are the default when the
// response has no such directive and the upper bound when it has (0 =
// uncapped; a response without the directive then gets none). A request
// stale-if-error also allows stale-on-error, capped the same way. Nothing
// is allowed when rc forbids serving stale (must-revalidate,
// proxy-revalidate, s-maxage, no-cache). swr is 0 when the request asks
// for a validated or fresh response (no-cache, max-age, min-fresh).
//
// A stale entry with staleness s = -TTL(now) may be served and revalidated
// in the background when s <= swr, and served on an origin error when
// s <= sie.
func StaleAllowance(rc ResponseControl, req RequestControl, cfgSWR, cfgSIE time.Duration) (swr, sie time.Duration) {
	if !rc.MayServeStale() {
		return 0, 0
	}
	swr = staleWindow(rc.StaleWhileRevalidate, cfgSWR)
	sie = staleWindow(rc.StaleIfError, cfgSIE)
	if req.StaleIfError >= 0 {
		sie = max(sie, staleWindow(req.StaleIfError, cfgSIE))
	}
	if req.NoCache || req.MaxAge >= 0 || req.MinFresh >= 0 {
		swr = 0
	}
	return swr, sie
}

// staleWindow applies the configured default / cap cfg to a directive value d
// (-1 when absent); a negative cfg allows none.
func staleWindow(d, cfg time.Duration) time.Duration {
	switch {
	case cfg < 0:
		return 0
	case d < 0:
		return max(0, cfg)
	case cfg > 0:
		return min(d, cfg)
	}
	return d
}
