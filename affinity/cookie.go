package affinity

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"hash"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"golang.org/x/net/publicsuffix"

	"github.com/f06cdff9/caddy-affinity-cache/internal/placeholder"
)

// This file implements cookie mode: when no configured key resolves, the
// client gets a random affinity id in a signed cookie and is routed by the
// hash of that id from then on. Unlike Caddy's `cookie` policy, the cookie
// never names an upstream: the server verifies it with one HMAC (O(1), not
// one per upstream) and hashes the id like any other key, so the id keeps
// working when upstreams come and go, and a client can neither choose an
// upstream (the id is hashed) nor mint ids (they are signed).

// CookieConfig configures cookie mode of the affinity policy.
type CookieConfig struct {
	// Name of the cookie. Default: `lb_affinity`.
	Name string `json:"name,omitempty"`

	// Secret key for the HMAC-SHA256 that signs affinity ids. Required.
	// Global placeholders are replaced when the config loads (e.g.
	// `{env.AFFINITY_SECRET}` or `{file./run/secrets/affinity}`; in a
	// Caddyfile, `{$AFFINITY_SECRET}` is replaced as it is read); one that
	// is unknown or empty then is an error. Use at least 32 random bytes:
	// a short secret can be guessed offline from one cookie. Changing it
	// invalidates every issued cookie (clients get new ids, and most move
	// to another upstream) unless the old one is kept in PreviousSecrets.
	Secret string `json:"secret,omitempty"` //nolint:gosec // it must round-trip through JSON config

	// PreviousSecrets verify cookies but never sign them: to rotate the
	// secret, set Secret to the new one and list the old one here. A
	// cookie signed with a previous secret keeps its id, so its client
	// stays on its upstream, and is issued again under Secret; remove the
	// old secret once clients have been back (after MaxAge, or the longest
	// session you care about). Placeholders as in Secret. Default: none.
	PreviousSecrets []string `json:"previous_secrets,omitempty"` //nolint:gosec // idem

	// Max-Age of the cookie, rounded up to whole seconds. Zero (the
	// default) makes a session cookie; negative values are invalid.
	MaxAge caddy.Duration `json:"max_age,omitempty"`

	// Path attribute of the cookie. Default: `/`.
	Path string `json:"path,omitempty"`

	// Domain attribute of the cookie. Default: none (host-only cookie).
	Domain string `json:"domain,omitempty"`

	// Secure attribute of the cookie. Default (null): set when the
	// request came over TLS, or from a trusted proxy whose last
	// X-Forwarded-Proto is `https` (as Caddy's `cookie` policy decides).
	// Always set when same_site is `none`, or when Name begins with
	// `__Secure-` or `__Host-`, which browsers require (`__Host-` also
	// requires Path `/` and no Domain).
	Secure *bool `json:"secure,omitempty"`

	// HttpOnly attribute of the cookie. Default (null): true, since
	// scripts have no use for the id.
	HTTPOnly *bool `json:"http_only,omitempty"`

	// SameSite attribute of the cookie: `lax`, `strict` or `none`.
	// Default: `lax`.
	SameSite string `json:"same_site,omitempty"`
}

const (
	defaultCookieName = "lb_affinity"

	idBytes  = 16 // random bytes in an affinity id
	macBytes = 16 // HMAC-SHA256 output kept in the cookie

	// minSecretLen is the secret length below which provisioning warns.
	minSecretLen = 16
)

var (
	// b64 encodes ids and MACs; raw URL encoding needs no quoting in a
	// cookie value.
	b64 = base64.RawURLEncoding

	idLen     = b64.EncodedLen(idBytes)
	macLen    = b64.EncodedLen(macBytes)
	cookieLen = idLen + 1 + macLen // "<id>.<mac>"
)

// cookieJar issues and verifies affinity cookies; it is built in Provision
// from a validated CookieConfig and is safe for concurrent use.
type cookieJar struct {
	cfg      CookieConfig
	sameSite http.SameSite
	// macs holds pools of *macer: under cfg.Secret first, then under
	// each of cfg.PreviousSecrets.
	macs []*sync.Pool
}

// macer is a reusable HMAC state with scratch space, so that verifying a
// cookie allocates nothing.
type macer struct {
	h   hash.Hash
	in  [64]byte // the id to sign, copied (passing a string to Write would allocate)
	sum [sha256.Size]byte
	enc [64]byte // the encoded MAC
	got [64]byte // the MAC from the cookie
}

// parseSameSite maps a same_site value to http.SameSite.
func parseSameSite(s string) (http.SameSite, error) {
	switch strings.ToLower(s) {
	case "", "lax":
		return http.SameSiteLaxMode, nil
	case "strict":
		return http.SameSiteStrictMode, nil
	case "none":
		return http.SameSiteNoneMode, nil
	}
	return 0, fmt.Errorf("same_site must be lax, strict or none, got %q", s)
}

// notKeyedBy reports a key that reads the policy's own cookie: the
// cookie mode reads it, checks its signature and picks by the id in it;
// a key before it would pick by the raw signed value instead, which
// differs from the id (the first request, without a cookie, goes where
// the id says; later ones elsewhere) and is never checked (a forged
// value would be taken).
func (c *CookieConfig) notKeyedBy(key string) error {
	name := c.Name
	if name == "" {
		name = defaultCookieName
	}
	for _, n := range placeholder.Names(key) {
		// Caddy matches cookie and header names without regard to case.
		cookie, isCookie := strings.CutPrefix(n, "http.request.cookie.")
		header, isHeader := strings.CutPrefix(n, "http.request.header.")
		if isCookie && strings.EqualFold(cookie, name) || isHeader && strings.EqualFold(header, "Cookie") {
			return fmt.Errorf("key %q reads the policy's own cookie %s; leave it out: with a cookie block the policy reads and checks that cookie itself", key, name)
		}
	}
	return nil
}

// validate checks a CookieConfig as configured (before defaults).
func (c *CookieConfig) validate() error {
	if c.Secret == "" {
		return fmt.Errorf("cookie secret is required")
	}
	if err := checkSecret("secret", c.Secret); err != nil {
		return err
	}
	for i, p := range c.PreviousSecrets {
		if err := checkSecret(fmt.Sprintf("previous_secrets[%d]", i), p); err != nil {
			return err
		}
	}
	for _, f := range []struct{ field, value string }{{"name", c.Name}, {"path", c.Path}, {"domain", c.Domain}} {
		if err := checkCookieField(f.field, f.value); err != nil {
			return err
		}
	}
	if c.MaxAge < 0 {
		return fmt.Errorf("cookie max_age must not be negative, got %s", time.Duration(c.MaxAge))
	}
	ss, err := parseSameSite(c.SameSite)
	if err != nil {
		return fmt.Errorf("cookie %w", err)
	}
	if ss == http.SameSiteNoneMode && c.Secure != nil && !*c.Secure {
		return fmt.Errorf("cookie same_site none requires secure; browsers reject it otherwise")
	}
	if securePrefixed(c.Name) && c.Secure != nil && !*c.Secure {
		return fmt.Errorf("cookie name %q requires secure (its prefix does); browsers reject it otherwise", c.Name)
	}
	if hasPrefixFold(c.Name, "__Host-") && (c.Domain != "" || c.Path != "" && c.Path != "/") {
		return fmt.Errorf("cookie name %q requires path / and no domain (its prefix does); browsers reject it otherwise", c.Name)
	}
	return nil
}

// securePrefixed reports whether a cookie name has a prefix that browsers
// accept only on a cookie with the Secure attribute (RFC 6265bis §4.1.3,
// matched without regard to case).
func securePrefixed(name string) bool {
	return hasPrefixFold(name, "__Secure-") || hasPrefixFold(name, "__Host-")
}

// checkSecret reports, without quoting the secret of field, that it is
// empty or white space, has an unclosed { or a stray } (Caddy's replacer leaves such a
// brace as it is, and {env.SECRET without its } would be a secret anyone
// can read in the docs), or names a placeholder that is not replaced when
// the config loads: only Caddy's global ones are ({env.*}, {file.*}),
// and a request's, such as {header.X}, would fail the load; {system.*}
// ones are, but guessable.
func checkSecret(field, secret string) error {
	if secret == "" {
		return fmt.Errorf("cookie %s is empty", field)
	}
	if strings.TrimSpace(secret) == "" {
		return fmt.Errorf("cookie %s is only white space: use a long random value, kept in a file ({file./path}) or the environment ({env.NAME})", field)
	}
	if err := placeholder.Balanced(secret); err != nil {
		return fmt.Errorf("cookie %s %w; write a literal brace as \\{ or \\}", field, err)
	}
	global := caddy.NewReplacer()
	for _, name := range placeholder.Names(secret) {
		if strings.HasPrefix(name, "time.") {
			return fmt.Errorf("cookie %s names a {time.*} placeholder, which changes with the clock: each load, and each node, would sign with another secret", field)
		}
		if strings.HasPrefix(name, "file.") {
			continue // read when the config loads, not now (the file may be the deployed host's)
		}
		if strings.HasPrefix(name, "system.") {
			// The host name, the OS, the working directory: what anyone
			// who knows the machine can guess is no secret.
			return fmt.Errorf("cookie %s names {%s}, which anyone who knows the machine can guess: keep the secret in a file ({file./path}) or the environment ({env.NAME})", field, name)
		}
		if _, ok := global.Get(name); !ok {
			return fmt.Errorf("cookie %s names a placeholder that is not replaced when the config loads (only global ones are, such as {env.NAME} or {file./path}; a request's, such as {header.X}, is not); write a literal brace as \\{ or \\}", field)
		}
	}
	return nil
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// newCookieJar returns a jar for cfg, with defaults applied. cfg must have
// passed validate.
func newCookieJar(cfg CookieConfig) (*cookieJar, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Name == "" {
		cfg.Name = defaultCookieName
	}
	if cfg.Path == "" {
		cfg.Path = "/"
	}
	repl := caddy.NewReplacer()
	secret, err := repl.ReplaceOrErr(cfg.Secret, true, true)
	if err != nil {
		// Taken literally, {env.SECRET} would be a secret anyone can read
		// in the docs.
		return nil, fmt.Errorf("cookie secret: %w (global placeholders such as {env.NAME} are replaced when the config loads; write a literal brace as \\{ or \\})", err)
	}
	if strings.TrimSpace(secret) == "" {
		return nil, fmt.Errorf("cookie secret is only white space once its placeholders are replaced (%s): set it to a long random value", cfg.Secret)
	}
	cfg.Secret = secret
	ss, _ := parseSameSite(cfg.SameSite)
	j := &cookieJar{sameSite: ss, macs: []*sync.Pool{macers(cfg.Secret)}}
	cfg.PreviousSecrets = slices.Clone(cfg.PreviousSecrets)
	for i, p := range cfg.PreviousSecrets {
		if p, err = repl.ReplaceOrErr(p, true, true); err != nil {
			return nil, fmt.Errorf("cookie previous_secrets[%d]: %w (global placeholders such as {env.NAME} are replaced when the config loads; write a literal brace as \\{ or \\})", i, err)
		}
		if strings.TrimSpace(p) == "" {
			return nil, fmt.Errorf("cookie previous_secrets[%d] is only white space once its placeholders are replaced (%s)", i, cfg.PreviousSecrets[i])
		}
		cfg.PreviousSecrets[i] = p
		j.macs = append(j.macs, macers(p))
	}
	j.cfg = cfg
	return j, nil
}

// macers returns a pool of macers for secret.
func macers(secret string) *sync.Pool {
	key := []byte(secret)
	return &sync.Pool{New: func() any { return &macer{h: hmac.New(sha256.New, key)} }}
}

// mac writes the encoded MAC of id into m.enc and returns it.
func mac(m *macer, id string) []byte {
	n := copy(m.in[:], id)
	m.h.Reset()
	m.h.Write(m.in[:n])
	m.h.Sum(m.sum[:0])
	b64.Encode(m.enc[:macLen], m.sum[:macBytes])
	return m.enc[:macLen]
}

// verify returns the affinity id in value if value is a well-formed cookie
// whose MAC checks out under the secret or a previous one, or "". renew
// is true for a previous one: the cookie should be issued again.
func (j *cookieJar) verify(value string) (id string, renew bool) {
	if len(value) != cookieLen || value[idLen] != '.' {
		return "", false
	}
	id, given := value[:idLen], value[idLen+1:]
	for i, pool := range j.macs {
		if macMatches(pool, id, given) {
			return id, i > 0
		}
	}
	return "", false
}

// macMatches reports whether given is the MAC of id under the secret of
// pool's macers.
func macMatches(pool *sync.Pool, id, given string) bool {
	m := pool.Get().(*macer)
	want := mac(m, id)
	copy(m.got[:], given)
	ok := hmac.Equal(want, m.got[:macLen])
	pool.Put(m)
	return ok
}

// maxCookieCandidates is how many cookies of the jar's name read verifies
// at most, so that a crafted Cookie field cannot cost thousands of MACs.
const maxCookieCandidates = 4

// read returns the verified affinity id from r's cookies, or "" if none
// has one; renew as verify. A browser sends every cookie of the name whose
// domain and path match (another site's on a parent domain, one left by an
// earlier path or domain setting), the most specific path first: the first
// that verifies under the secret counts, so a foreign cookie cannot hide
// the client's own; failing that, the first that verifies under a previous
// secret. A cookie left by an earlier path under the old secret would
// otherwise win over the current one at every request and be issued again
// each time (the new one goes to the configured path, beside it).
func (j *cookieJar) read(r *http.Request) (id string, renew bool) {
	n := 0
	cookieValues(r.Header, j.cfg.Name, func(v string) bool {
		got, old := j.verify(v)
		if got != "" && (id == "" || !old) {
			id, renew = got, old
		}
		n++
		return (id == "" || renew) && n < maxCookieCandidates
	})
	return id, renew
}

// issue makes a new signed affinity id and returns the id and the cookie
// value.
func (j *cookieJar) issue() (id, value string) {
	var raw [idBytes]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails (it crashes the program instead)
	var buf [64]byte
	b64.Encode(buf[:idLen], raw[:])
	id = string(buf[:idLen])
	return id, j.sign(id)
}

// sign returns the cookie value for id under the secret.
func (j *cookieJar) sign(id string) string {
	m := j.macs[0].Get().(*macer)
	value := id + "." + string(mac(m, id))
	j.macs[0].Put(m)
	return value
}

// set adds the Set-Cookie header for value to w, with attributes for r,
// and reports whether it went out Secure over what looks like plain HTTP
// (see AffinitySelection.setCookie).
func (j *cookieJar) set(w http.ResponseWriter, r *http.Request, value string) (secureOverHTTP bool) {
	c := &http.Cookie{
		Name:     j.cfg.Name,
		Value:    value,
		Path:     j.cfg.Path,
		Domain:   j.cfg.Domain,
		HttpOnly: j.cfg.HTTPOnly == nil || *j.cfg.HTTPOnly,
		SameSite: j.sameSite,
	}
	https := requestIsHTTPS(r)
	switch {
	case j.sameSite == http.SameSiteNoneMode || securePrefixed(j.cfg.Name):
		c.Secure = true
	case j.cfg.Secure != nil:
		c.Secure = *j.cfg.Secure
	default:
		c.Secure = https
	}
	if j.cfg.MaxAge > 0 {
		// Max-Age counts seconds: a part second rounds up (0 would mean
		// no Max-Age at all), dividing first (adding a second to the
		// largest durations would wrap them negative), and at most 68
		// years, what an int holds on 32-bit platforms: a value that
		// wrapped would be Max-Age=0, a cookie deleted at once.
		d := time.Duration(j.cfg.MaxAge)
		secs := int64(d / time.Second)
		if d%time.Second != 0 {
			secs++
		}
		c.MaxAge = int(min(secs, math.MaxInt32))
	}
	line := c.String()
	if line == "" {
		return false // http.Cookie rejected a field; Validate makes this unreachable
	}
	w.Header().Add("Set-Cookie", line)
	// Tell a response_cache in front that this Set-Cookie is the proxy's
	// routing cookie, not the origin's: it must reach the client but does
	// not make the response private to this client.
	caddyhttp.SetVar(r.Context(), proxySetCookieVar, line)
	return c.Secure && !https && !loopbackHost(r)
}

// proxySetCookieVar is cache.ProxySetCookieVar (the packages do not import
// each other; integration/TestBuiltBinary checks the two work together).
const proxySetCookieVar = "response_cache.proxy_set_cookie"

// requestIsHTTPS reports whether the client reached us over HTTPS: directly
// (r.TLS) or through a trusted proxy that says so in its last
// X-Forwarded-Proto, which is how Caddy's cookie policy decides (here in
// any case: a scheme's case does not matter, RFC 3986 §3.1).
func requestIsHTTPS(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	trusted, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool)
	if !trusted {
		return false
	}
	v := r.Header.Values("X-Forwarded-Proto")
	return len(v) > 0 && strings.EqualFold(strings.TrimSpace(v[len(v)-1]), "https")
}

// loopbackHost reports whether r names localhost or a loopback address,
// where browsers keep a Secure cookie over plain HTTP (a secure context).
func loopbackHost(r *http.Request) bool {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// cookieValues calls yield with the value of each cookie called name in
// h's Cookie fields, in order, until yield returns false, without
// allocating (http.Request.Cookie parses every cookie into new values).
// Surrounding double quotes are removed, as net/http does.
func cookieValues(h http.Header, name string, yield func(string) bool) {
	for _, line := range h["Cookie"] {
		for len(line) > 0 {
			var part string
			if i := strings.IndexByte(line, ';'); i >= 0 {
				part, line = line[:i], line[i+1:]
			} else {
				part, line = line, ""
			}
			part = strings.TrimSpace(part)
			k, v, ok := strings.Cut(part, "=")
			if !ok || k != name {
				continue
			}
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			if !yield(v) {
				return
			}
		}
	}
}

// checkCookieField reports why value cannot be the cookie's field (name,
// path or domain) as net/http would send it; empty means the default.
func checkCookieField(field, value string) error {
	if value == "" {
		return nil
	}
	probe := &http.Cookie{Name: defaultCookieName, Value: "x"}
	switch field {
	case "name":
		probe.Name = value
	case "path":
		probe.Path = value
	case "domain":
		probe.Domain = value
	}
	if err := probe.Valid(); err != nil {
		return fmt.Errorf("invalid cookie %s %q: %v", field, value, err)
	}
	switch field {
	case "name":
		if len(value)+cookieLen > maxCookieBytes {
			return fmt.Errorf("cookie name is %d bytes: with the %d of its value it passes the %d bytes browsers take for a cookie's name and value (RFC 6265bis §5.6), so they would drop it; use a short name", len(value), cookieLen, maxCookieBytes)
		}
	case "path":
		return checkCookiePath(value)
	case "domain":
		if isPublicSuffix(value) {
			return fmt.Errorf("cookie domain %q is a public suffix: browsers take a cookie for it only from that very host, and then for it alone, never for the sites under it; name your site's domain (such as example.com), or leave domain out for a cookie of this host alone", value)
		}
	}
	return nil
}

// isPublicSuffix reports whether domain is listed as a public suffix,
// under which browsers set no cookie for other hosts (RFC 6265 §5.3,
// step 5): com, co.uk, github.io. Names of one label the list does not
// have (localhost, an intranet's) and IP addresses are not: a cookie for
// such a host alone is what it can have.
func isPublicSuffix(domain string) bool {
	d := strings.ToLower(strings.Trim(domain, "."))
	if d == "" || net.ParseIP(d) != nil {
		return false
	}
	suffix, icann := publicsuffix.PublicSuffix(d)
	// A name the list does not have gets its last label, under the
	// list's default rule, and icann false: one of the private section
	// has a dot.
	return suffix == d && (icann || strings.Contains(d, "."))
}

// maxCookieBytes is what browsers take for a cookie's name and value
// together (RFC 6265bis §5.6).
const maxCookieBytes = 4096

// checkCookiePath reports a cookie path browsers would not honour, and
// one with a brace: the path is sent as written, and a placeholder there
// would never match a request's path.
func checkCookiePath(path string) error {
	if path != "" && !strings.HasPrefix(path, "/") {
		return fmt.Errorf("cookie path must start with /, got %q (browsers ignore such a path and use the request's directory)", path)
	}
	if strings.ContainsAny(path, "{}") {
		return fmt.Errorf("cookie path %q has a brace: the path is sent as written (placeholders are not replaced in it), and browsers would send the cookie back to no page", path)
	}
	// Browsers compare the cookie's path with the path a request sends,
	// in which these bytes never appear as they are.
	if i := strings.IndexAny(path, "?#\\ \"<>^`"); i >= 0 {
		var fix string
		switch c := path[i]; c {
		case '?', '#':
			fix = "a URL's path ends before ? or #: give the path alone"
		case '\\':
			fix = "browsers read \\ in a URL as /: write /"
		default:
			fix = fmt.Sprintf("browsers send it escaped: write %%%02X", c)
		}
		return fmt.Errorf("cookie path %q has %q, which a request's path never holds, so browsers would send the cookie back to no page; %s", path, path[i], fix)
	}
	return nil
}
