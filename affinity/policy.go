package affinity

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/cespare/xxhash/v2"
	"github.com/f06cdff9/caddy-affinity-cache/internal/placeholder"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func init() {
	caddy.RegisterModule(new(AffinitySelection))
}

// AffinitySelection is a consistent-hashing load-balancing policy: requests
// with the same key go to the same upstream for as long as it is available,
// and when the upstream set changes only the keys of the upstreams that
// came or went move.
//
// The key is the first of Keys that resolves to a non-empty value (default
// `{http.vars.client_ip}`, the client IP after trusted_proxies). When none
// does, cookie mode (if configured) gives the client a random signed
// affinity id to use as its key; otherwise the Fallback policy picks.
//
// An upstream that is not available (health checks, max_requests) is
// skipped: its keys go to their next choice and come back when it
// recovers. Retries within one request go to the key's next choice; once
// every available upstream was tried, they start over in the same order.
// With Bound set, an upstream already
// carrying its share of the in-flight requests is skipped the same way
// (consistent hashing with bounded loads).
//
// The placeholder `{http.reverse_proxy.affinity.key}` holds the resolved
// key (or the affinity id in cookie mode) once an upstream is selected.
// Setting it costs one small allocation per request; it is the only one on
// the steady-state path.
//
// At debug level each pick is logged with the key's source, a hash of the
// key (never the key: keys are often personal data; the hash is seeded per
// policy, anew at each config load), the chosen dial and the attempt number.
type AffinitySelection struct {
	// Keys are placeholder expressions tried in order; the first that
	// resolves to a non-empty value is the request's key. A key that is
	// exactly one placeholder (e.g. `{http.request.cookie.sid}`) resolves
	// when the placeholder is known and non-empty; a composite key (e.g.
	// `{http.request.host}{http.request.uri}`) resolves only when every
	// placeholder in it does. Caddyfile shorthands (`{client_ip}`,
	// `{header.X-User}`, ...) are accepted and expanded. Default:
	// `{http.vars.client_ip}`, unless Cookie is set, in which case the
	// cookie is the only key.
	Keys []string `json:"keys,omitempty"`

	// Algorithm is the consistent-hashing scheme: `rendezvous` (default;
	// weighted highest random weight), `ring` (weighted virtual nodes),
	// `maglev` (O(1) lookup table) or `compat` (the exact mapping of
	// Caddy's built-in hash policies, weights not supported).
	Algorithm string `json:"algorithm,omitempty"`

	// Weights gives upstreams, by dial address, a share of keys
	// proportional to their weight (an integer from 1 to 1000000; only
	// ratios matter). Upstreams not listed
	// weigh 1. With static upstreams, every dial listed must be one of
	// them; with dynamic upstreams, weights of absent dials are unused.
	Weights map[string]int `json:"weights,omitempty"`

	// Bound caps each upstream's in-flight requests at Bound times its
	// share of those over available upstreams, in proportion to Weights
	// (the mean, when weights are equal; rounded up, counting the request
	// being placed); an upstream at its cap is skipped like an unavailable
	// one. Must be >= 1, e.g. 1.25. Zero (the default) means no bound.
	// Bounding costs one pass over the pool per request.
	Bound float64 `json:"bound,omitempty"`

	// BoundFloor is the least cap Bound gives an upstream, in in-flight
	// requests: below it, keys stay on their upstream however uneven the
	// load. Under light traffic the cap is 1 (with three upstreams and one
	// request in flight, ceil(1.25 × 2 / 3)), so any in-flight request
	// sends the other keys of its upstream to their next choice: sticky
	// sessions held in a replica's memory move. A floor such as 8 keeps
	// them where they are until a replica is busy. Needs Bound; default
	// 1 (the cap of the paper).
	BoundFloor int `json:"bound_floor,omitempty"`

	// Cookie enables cookie mode for requests where no key resolves.
	// Default: off.
	Cookie *CookieConfig `json:"cookie,omitempty"`

	// FallbackRaw is the selection policy for requests where no key
	// resolves and cookie mode is off. It receives the real
	// ResponseWriter. Default: `random`. Must not be set with Cookie.
	FallbackRaw json.RawMessage `json:"fallback,omitempty" caddy:"namespace=http.reverse_proxy.selection_policies inline_key=policy"`

	alg      Algorithm
	keys     []keyExpr
	jar      *cookieJar
	fallback reverseproxy.Selector
	sets     setCache
	stateKey string // vars key of this instance's attempts for a request
	logSeed  uint64 // seeds key hashes in debug logs
	// ownFallback: the config names a fallback (not the default one).
	ownFallback bool
	// retriesKeepKey: compat reads a key from a header field of the
	// request reverse_proxy sends, which its header_up edits; a retry
	// takes the first attempt's key instead (see Select).
	retriesKeepKey bool
	logger         *zap.Logger
	// fallbackSetsCookie: the fallback is Caddy's cookie policy, which
	// needs the response (see fallbackSelect).
	fallbackSetsCookie bool
	// noWriter warns, once, that a policy calling this one as its
	// fallback gave it no response to set the cookie on.
	noWriter sync.Once
	// secureOverHTTP warns, once, of a Secure cookie set over plain HTTP
	// (see setCookie).
	secureOverHTTP sync.Once
	// warned: the key warnings were logged (by the first Validate that
	// passed).
	warned atomic.Bool
	// unmatchedWeights holds the weights (by dial) logged as matching
	// none of a set of dynamic upstreams: each is logged once.
	unmatchedWeights sync.Map
}

// CaddyModule returns the Caddy module information.
func (*AffinitySelection) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.selection_policies.affinity",
		New: func() caddy.Module { return new(AffinitySelection) },
	}
}

const (
	// defaultKey is Caddy's client IP: the remote address, or the
	// forwarded client address when the request came from a trusted proxy.
	defaultKey = "{http.vars.client_ip}"

	// keyPlaceholder names the placeholder set to the resolved key.
	keyPlaceholder = "http.reverse_proxy.affinity.key"
)

// instances numbers policy instances, so that two affinity policies serving
// one request (say, forward_auth then reverse_proxy) keep separate attempts.
var instances atomic.Uint64

// Provision sets defaults and prepares the keys, the cookie jar, the
// fallback policy and the table cache.
func (s *AffinitySelection) Provision(ctx caddy.Context) error {
	s.logger = ctx.Logger()
	s.stateKey = "affinity_attempts_" + strconv.FormatUint(instances.Add(1), 10)
	s.logSeed = rand.Uint64()

	alg := Rendezvous
	if s.Algorithm != "" {
		a, err := ParseAlgorithm(s.Algorithm)
		if err != nil {
			return fmt.Errorf("lb_policy affinity: algorithm: %w", err)
		}
		alg = a
	}
	s.alg = alg

	if len(s.Keys) == 0 && s.Cookie == nil {
		s.Keys = []string{defaultKey}
	}
	s.keys = parseKeys(s.Keys)
	s.ownFallback = s.hasFallback()
	if alg == Compat {
		for i := range s.keys {
			k := &s.keys[i]
			switch field, isField := strings.CutPrefix(k.name, "http.request.header."); {
			case k.name == "http.request.uri":
				k.rawTarget = true
			case isField && field != "":
				k.field = field
				s.retriesKeepKey = true
			}
		}
	}

	withheldBy := responseWithheldBy(ctx)
	if s.Cookie != nil {
		if withheldBy != "" {
			return fmt.Errorf("lb_policy affinity: cookie: as the fallback of lb_policy %s it can never set its cookie (Caddy's %s policy calls its fallback without the response); use lb_policy affinity with the key first and the cookie after it: `lb_policy affinity {http.request.header.X-User} {`, then a `cookie { ... }` block on the lines after it", withheldBy, withheldBy)
		}
		jar, err := newCookieJar(*s.Cookie)
		if err != nil {
			return fmt.Errorf("lb_policy affinity: %w", err)
		}
		if n := len(jar.cfg.Secret); n < minSecretLen {
			s.logger.Warn("affinity cookie secret is short: anyone holding one cookie can guess it offline and choose their upstream; use at least 32 random bytes",
				zap.Int("bytes", n))
		}
		for i, p := range jar.cfg.PreviousSecrets {
			switch {
			case p == jar.cfg.Secret:
				s.logger.Warn("affinity cookie previous secret is the current secret: it does nothing; list the secret you rotated away from",
					zap.Int("previous_secrets_index", i))
			case len(p) < minSecretLen:
				s.logger.Warn("affinity cookie previous secret is short: a cookie forged with it would be renewed under the current secret; drop it as soon as clients have come back",
					zap.Int("previous_secrets_index", i), zap.Int("bytes", len(p)))
			}
		}
		s.jar = jar
		// Never used for routing: with a cookie every request has a key.
		// It only covers a Table that cannot be built, which Validate
		// rules out.
		s.fallback = reverseproxy.RandomSelection{}
	} else {
		if !s.hasFallback() {
			s.FallbackRaw = caddyconfig.JSONModuleObject(reverseproxy.RandomSelection{}, "policy", "random", nil)
		}
		mod, err := ctx.LoadModule(s, "FallbackRaw")
		if err != nil {
			return fmt.Errorf("lb_policy affinity: loading fallback policy: %w", err)
		}
		s.fallback = mod.(reverseproxy.Selector)
		switch mod.(type) {
		case reverseproxy.CookieHashSelection, *reverseproxy.CookieHashSelection:
			if withheldBy != "" {
				return fmt.Errorf("lb_policy affinity: fallback cookie: under lb_policy %s it would never get the response (Caddy's %s policy calls its fallback without it), so it could never set its cookie, and Caddy's cookie policy fails the request then; use lb_policy affinity with the key first and its own cookie after it: `lb_policy affinity {http.request.header.X-User} {`, then a `cookie { ... }` block on the lines after it", withheldBy, withheldBy)
			}
			s.fallbackSetsCookie = true
		}
	}

	weights := make(map[string]int, len(s.Weights))
	for d, w := range s.Weights {
		weights[rootless(d)] = w
	}
	s.sets.build = func(nodes []Node) (*Table, error) {
		used := make(map[string]bool, len(weights))
		for i := range nodes {
			nodes[i].Weight = 1
			if d := rootless(nodes[i].Name); weights[d] > 0 {
				nodes[i].Weight = weights[d]
				used[d] = true
			}
		}
		if len(used) < len(weights) {
			s.warnUnmatchedWeights(used, nodes)
		}
		return NewTable(s.alg, nodes)
	}

	return s.prepareStatic(ctx)
}

// responseWithheldBy names the policy above this one, within its
// reverse_proxy, that calls its fallback without the response ("header"
// or "query": Caddy's header and query policies do), or is empty. The
// policies in between (affinity, Caddy's cookie) pass on what they got,
// and none has a response of its own to give. A cookie, this policy's own
// or Caddy's cookie policy's as this one's fallback, could never be set
// there, and every request without the parent's key would go to a random
// upstream.
func responseWithheldBy(ctx caddy.Context) string {
	mods := ctx.Modules() // the last is this policy
	for i := len(mods) - 2; i >= 0; i-- {
		switch mods[i].(type) {
		case *reverseproxy.Handler:
			return "" // this policy's reverse_proxy: no policy above it
		case reverseproxy.HeaderHashSelection, *reverseproxy.HeaderHashSelection:
			return "header"
		case reverseproxy.QueryHashSelection, *reverseproxy.QueryHashSelection:
			return "query"
		}
	}
	return ""
}

// prepareStatic looks for the reverse_proxy handler that owns this policy.
// If it has only static upstreams, it rejects a weight for a dial that is
// none of them (a typo there would silently do nothing), and builds the
// table for them now: the first request does not pay for it, and a table
// that cannot be built is a config error rather than a runtime one.
func (s *AffinitySelection) prepareStatic(ctx caddy.Context) error {
	var h *reverseproxy.Handler
	for _, m := range slices.Backward(ctx.Modules()) {
		if rp, ok := m.(*reverseproxy.Handler); ok {
			h = rp
			break
		}
	}
	if h == nil || len(h.Upstreams) == 0 || h.DynamicUpstreamsRaw != nil || h.DynamicUpstreams != nil {
		return nil
	}
	if s.validate() != nil {
		return nil // reported by Validate, which runs next
	}
	dials := make([]string, len(h.Upstreams))
	for i, u := range h.Upstreams {
		dials[i] = u.Dial
	}
	for _, d := range slices.Sorted(maps.Keys(s.Weights)) {
		if !slices.ContainsFunc(dials, func(dial string) bool { return rootless(dial) == rootless(d) }) {
			return fmt.Errorf("lb_policy affinity: weight for %q matches no upstream; weights name upstreams by their dial address (host:port), and the upstreams are %s",
				d, strings.Join(dials, ", "))
		}
	}
	if _, err := s.sets.get(h.Upstreams); err != nil {
		return fmt.Errorf("lb_policy affinity: %w", err)
	}
	// Once nothing here refuses the config (Validate runs next, and logs
	// the key warnings once it passes).
	for _, d := range repeatedDials(dials) {
		// Caddy's round_robin sends such an upstream more requests; here
		// it is one node of the table.
		s.logger.Warn("affinity: upstream listed more than once counts once; to give it a larger share of keys, list it once and set its weight",
			zap.String("upstream", d))
	}
	return nil
}

// warnUnmatchedWeights logs the weights that match none of nodes (a set
// of dynamic upstreams; static ones were checked at load), other than
// used, each the first time. A weight whose upstream is briefly missing
// from the resolver's answer is logged too: the line lists the set.
func (s *AffinitySelection) warnUnmatchedWeights(used map[string]bool, nodes []Node) {
	var unmatched []string
	for _, d := range slices.Sorted(maps.Keys(s.Weights)) {
		if used[rootless(d)] {
			continue
		}
		if _, logged := s.unmatchedWeights.LoadOrStore(d, true); !logged {
			unmatched = append(unmatched, d)
		}
	}
	if len(unmatched) == 0 {
		return
	}
	dials := make([]string, len(nodes))
	for i, n := range nodes {
		dials[i] = n.Name
	}
	s.logger.Warn("affinity: weight matches none of the upstreams, which get weight 1; weights name upstreams by their dial address (host:port) as the dynamic upstreams give it",
		zap.Strings("weights", unmatched), zap.Strings("upstreams", dials))
}

// rootless returns dial with its host's root dot dropped (app.internal.:80
// is app.internal:80): the dials of SRV upstreams have it, as DNS gives
// their targets, and those of weights usually do not. A dial that is no
// host and port is returned as it is.
func rootless(dial string) string {
	host, port, err := net.SplitHostPort(dial)
	if err != nil || len(host) < 2 || !strings.HasSuffix(host, ".") {
		return dial
	}
	return net.JoinHostPort(strings.TrimSuffix(host, "."), port)
}

// repeatedDials returns the dials listed more than once, in their order.
func repeatedDials(dials []string) []string {
	var repeated []string
	seen := make(map[string]int, len(dials))
	for _, d := range dials {
		if seen[d]++; seen[d] == 2 {
			repeated = append(repeated, d)
		}
	}
	return repeated
}

// Validate checks the configuration.
func (s *AffinitySelection) Validate() error {
	if err := s.validate(); err != nil {
		return fmt.Errorf("validating affinity policy: %w", err)
	}
	// Warnings only for a config that loads: before an error, they would
	// send the reader after what is not wrong. Once, however often
	// Validate runs.
	if s.logger != nil && s.warned.CompareAndSwap(false, true) {
		for _, w := range s.keyWarnings() {
			s.logger.Warn(w.msg, w.fields...)
		}
	}
	return nil
}

// hasFallback reports whether a fallback policy is configured: JSON null
// means none, as for the cookie.
// warning is a message for the log at config load.
type warning struct {
	msg    string
	fields []zap.Field
}

// alwaysResolves are placeholders that have a value for every request.
var alwaysResolves = map[string]bool{
	"http.vars.client_ip": true, "http.request.remote": true, "http.request.remote.host": true,
	"http.request.remote.port": true, "http.request.uri": true, "http.request.uri.path": true,
	"http.request.method": true, "http.request.proto": true, "http.request.scheme": true,
}

// keyWarnings reports keys, parsed, that are valid but probably not what
// was meant: placeholders no request has unless a plugin provides them (a
// misspelt shorthand), and a key that resolves for every request ahead of
// keys, a cookie or a fallback that are then never used.
func (s *AffinitySelection) keyWarnings() []warning {
	var out []warning
	for _, k := range s.keys {
		if names := placeholder.Misspelt(k.expr); len(names) > 0 {
			out = append(out, warning{"affinity key names placeholders that look like a misspelt shorthand (such as {remote_ip} for {client_ip}); unless a map or a plugin sets them, the key never resolves",
				[]zap.Field{zap.String("key", k.expr), zap.Strings("placeholders", names)}})
		}
		if names := placeholder.IPv6OnlyPrefixes(k.expr); len(names) > 0 {
			out = append(out, warning{"affinity key names a client address prefix whose one length fits IPv6 addresses only: Caddy gives IPv4 clients an empty prefix, so the key does not resolve for them and they are not kept on an upstream (the next key, the cookie or the fallback decides); write /V4,V6 (such as /24,64) unless every client comes over IPv6",
				[]zap.Field{zap.String("key", k.expr), zap.Strings("placeholders", names)}})
		}
		if names := placeholder.ZeroPrefixes(k.expr); len(names) > 0 {
			out = append(out, warning{"affinity key names a client address prefix of length 0 for IPv4 or IPv6 addresses: every client of that family has the same key and goes to the same upstream; give it a length (such as /24,64) unless no client comes over it",
				[]zap.Field{zap.String("key", k.expr), zap.Strings("placeholders", names)}})
		}
		if names := placeholder.AfterProxy(k.expr); len(names) > 0 {
			out = append(out, warning{"affinity key names placeholders reverse_proxy sets once it has picked an upstream: they have a value only where another reverse_proxy ran before for the request (after forward_auth, in handle_response); elsewhere the key never resolves",
				[]zap.Field{zap.String("key", k.expr), zap.Strings("placeholders", names)}})
		}
	}
	for i, k := range s.keys {
		if alwaysResolves[k.name] && (i < len(s.keys)-1 || s.Cookie != nil || s.ownFallback) {
			out = append(out, warning{"affinity key resolves for every request: the keys after it, the cookie and the fallback are never used",
				[]zap.Field{zap.String("key", k.expr)}})
			break
		}
	}
	return out
}

func (s *AffinitySelection) hasFallback() bool {
	return len(s.FallbackRaw) > 0 && string(s.FallbackRaw) != "null"
}

func (s *AffinitySelection) validate() error {
	seen := make(map[string]string, len(s.Keys)) // by placeholder.Canonical
	for _, k := range s.Keys {
		k = placeholder.Expand(k)
		if err := checkKey(k); err != nil {
			return fmt.Errorf("key: %w", err)
		}
		same := placeholder.Canonical(k)
		if have, ok := seen[same]; ok {
			return errors.New(keyTwice(k, have))
		}
		seen[same] = k
	}
	alg := Rendezvous
	if s.Algorithm != "" {
		a, err := ParseAlgorithm(s.Algorithm)
		if err != nil {
			return fmt.Errorf("algorithm: %w", err)
		}
		alg = a
	}
	for _, d := range slices.Sorted(maps.Keys(s.Weights)) {
		if strings.TrimSpace(d) == "" {
			return fmt.Errorf("weight for an empty upstream address: name the upstream's dial address (host:port), as in reverse_proxy")
		}
		if w := s.Weights[d]; w < 1 || w > MaxWeight {
			return fmt.Errorf("weight for %q must be an integer from 1 to %d, got %d", d, MaxWeight, w)
		}
		if r := rootless(d); r != d {
			if _, dup := s.Weights[r]; dup {
				return fmt.Errorf("weights for %q and %q name one upstream; keep one", r, d)
			}
		}
	}
	if alg == Compat && len(s.Weights) > 0 {
		return fmt.Errorf("algorithm compat does not support weights (Caddy's hash policies have none)")
	}
	if alg == Ring {
		if err := ringWeights(s.Weights); err != nil {
			return err
		}
	}
	if err := checkBound(s.Bound); err != nil {
		return err
	}
	if err := checkBoundFloor(s.BoundFloor, s.Bound); err != nil {
		return err
	}
	if s.Cookie != nil {
		if err := s.Cookie.validate(); err != nil {
			return err
		}
		if s.hasFallback() {
			return fmt.Errorf("fallback is never used when cookie is set (every request then has a key); remove one")
		}
		for _, k := range s.Keys {
			if err := s.Cookie.notKeyedBy(placeholder.Expand(k)); err != nil {
				return err
			}
		}
	}
	return nil
}

// keyTwice says that key k is listed twice, as have before it (equal by
// placeholder.Canonical), naming have when only the case tells them apart.
func keyTwice(k, have string) string {
	if !strings.EqualFold(k, have) || k == have {
		return fmt.Sprintf("key %q is listed twice; a key is tried once", k)
	}
	return fmt.Sprintf("key %q is listed twice, as %q (header names are not case-sensitive); a key is tried once", k, have)
}

// checkKey checks an expanded key template: CheckKey's rules, and no
// request body. reverse_proxy hands the policy its copy of the request,
// whose body the replacer cannot buffer (it buffers the original's): the
// upstream would get an empty or truncated body.
func checkKey(k string) error {
	if err := placeholder.CheckKey(k); err != nil {
		if alg, algErr := ParseAlgorithm(strings.ToLower(k)); algErr == nil {
			return fmt.Errorf("%w; to choose the algorithm, set the policy's algorithm (`algorithm %s` in its Caddyfile block, \"algorithm\": \"%s\" in JSON)", err, alg, alg)
		}
		return err
	}
	if name := placeholder.Body(k); name != "" {
		return fmt.Errorf("%q names {%s}: reverse_proxy has copied the request when the policy reads its key, and reading the body there would send the upstream an empty body; key on a header, a cookie or the URI instead", k, name)
	}
	return nil
}

// ringWeights reports listed weights that alone pass the ring's limit;
// with static upstreams Provision would say so, with dynamic ones only
// the requests would (each then going to the fallback).
func ringWeights(weights map[string]int) error {
	var sum int64
	for _, w := range weights {
		sum += int64(w)
	}
	if total := sum * RingPointsPerWeight; total > MaxRingPoints {
		return fmt.Errorf("weights: %w", errRingTooBig(total))
	}
	return nil
}

// maxBoundFloor is the largest bound_floor: what an int holds on 32-bit
// platforms, and far more requests in flight than an upstream takes.
const maxBoundFloor = math.MaxInt32

// checkBoundFloor accepts 0 (the default, 1) or a floor >= 1 with a bound.
func checkBoundFloor(floor int, bound float64) error {
	switch {
	case floor < 0 || floor > maxBoundFloor:
		return fmt.Errorf("bound_floor must be a whole number from 1 to %d, got %d", maxBoundFloor, floor)
	case floor > 0 && bound == 0:
		return fmt.Errorf("bound_floor %d needs bound: it is the least cap bound gives an upstream", floor)
	}
	return nil
}

// checkBound accepts 0 (off) or a finite factor >= 1.
func checkBound(b float64) error {
	if b == 0 {
		return nil
	}
	if math.IsNaN(b) || math.IsInf(b, 0) || b < 1 {
		return fmt.Errorf("bound must be a number >= 1 (or 0 for none), got %v", b)
	}
	return nil
}

// keyExpr is a configured key, pre-parsed.
type keyExpr struct {
	expr string // the expression, shorthands expanded
	name string // the placeholder name if expr is exactly one placeholder
	// varName is the variable if name is http.vars.<var>: read straight
	// from the vars map, skipping the HTTP placeholder provider's dozens of
	// prefix checks (this is the default key, {http.vars.client_ip}).
	varName string
	// With compat, the request target ({http.request.uri}) and a header
	// field ({http.request.header.X}) are read from the request Select
	// is given, as Caddy's uri_hash and header policies read them: the
	// raw target (the placeholder is the parsed URL's), and the fields
	// after reverse_proxy rewrote X-Forwarded-* and removed hop-by-hop
	// fields, first line only.
	rawTarget bool
	field     string
	// remoteHost: the key is {http.request.remote.host}, read from the
	// request's RemoteAddr as ip_hash reads it. Caddy's placeholder is
	// empty for a request in TLS early data (HTTP/3 0-RTT: its address
	// may be spoofed), which would send a returning client's requests to
	// the fallback, a random upstream each; an address, spoofed or not,
	// only chooses the upstream here.
	remoteHost bool
	// clientCert: the key names the client's certificate
	// (http.request.tls.client.*), which does not resolve without one.
	// Caddy answers those placeholders from an empty certificate over a
	// TLS connection that has none (caddy #7530): the same fingerprint,
	// serial or PEM for every such client, which sent them all to one
	// upstream without a cookie (a review).
	clientCert bool
}

// parseKeys expands Caddyfile shorthands (the Caddyfile adapter already has;
// in JSON a `{client_ip}` would otherwise be an unknown placeholder) and
// spots keys that are a single placeholder.
func parseKeys(keys []string) []keyExpr {
	out := make([]keyExpr, len(keys))
	for i, k := range keys {
		e := keyExpr{expr: placeholder.Expand(k)}
		// (Caddy reads what follows http.request.tls. in any case.)
		e.clientCert = strings.Contains(strings.ToLower(e.expr), "{http.request.tls.client.")
		if x := e.expr; len(x) > 2 && x[0] == '{' && x[len(x)-1] == '}' &&
			strings.Count(x, "{") == 1 && strings.Count(x, "}") == 1 && !strings.Contains(x, `\`) {
			e.name = x[1 : len(x)-1]
			if v, ok := strings.CutPrefix(e.name, "http.vars."); ok && v != "" {
				e.varName = v
			}
			e.remoteHost = e.name == "http.request.remote.host"
		}
		out[i] = e
	}
	return out
}

// resolve returns k's value for the request r, or "" if it does not
// resolve. vars is the request's vars map, or nil.
func (k *keyExpr) resolve(r *http.Request, repl *caddy.Replacer, vars map[string]any) string {
	switch {
	case k.clientCert && (r.TLS == nil || len(r.TLS.PeerCertificates) == 0):
		return ""
	case k.rawTarget:
		return r.RequestURI
	case k.field != "":
		return r.Header.Get(k.field)
	case k.remoteHost:
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			return host
		}
		return r.RemoteAddr // a Unix socket's path, as the placeholder gives
	}
	if k.varName != "" && vars != nil {
		if s, ok := vars[k.varName].(string); ok {
			return s
		}
		return caddy.ToString(vars[k.varName])
	}
	if k.name != "" {
		v, ok := repl.Get(k.name)
		if !ok {
			return ""
		}
		if s, ok := v.(string); ok {
			return s
		}
		return caddy.ToString(v)
	}
	// A composite with an unknown or empty part would still be non-empty
	// (the literal text around it), and could send everyone to one upstream.
	v, err := repl.ReplaceOrErr(k.expr, true, true)
	if err != nil {
		return ""
	}
	return v
}

// upperEscapes returns key with the hex digits of its percent-escapes in
// upper case (%2f as %2F), as response_cache's key has them: one URL
// written both ways then picks one caching node of a tier, where it is
// one entry. Keys without a lower-case escape come back as they are,
// without allocating. (Keys that differ only there share an upstream,
// which costs affinity nothing.)
func upperEscapes(key string) string {
	i := strings.IndexByte(key, '%')
	if i < 0 {
		return key
	}
	var b []byte
	for ; i+2 < len(key); i++ {
		if key[i] != '%' || !isHex(key[i+1]) || !isHex(key[i+2]) {
			continue
		}
		for j := i + 1; j <= i+2; j++ {
			if c := key[j]; 'a' <= c && c <= 'f' {
				if b == nil {
					b = []byte(key)
				}
				b[j] = c - 'a' + 'A'
			}
		}
		i += 2
	}
	if b == nil {
		return key
	}
	return string(b)
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// attempts records, for one request, the upstreams this policy already
// picked. The first pick is stored in the vars map as a bare
// *reverseproxy.Upstream (which costs no allocation); a retry or a freshly
// issued cookie turns it into an *attempts.
type attempts struct {
	tried  []*reverseproxy.Upstream
	issued string // affinity id issued in cookie mode for this request
	keyed  bool   // the first attempt had a key (see keyedPick)
}

// keyedPick is the first pick of a policy whose retries keep the first
// attempt's key (retriesKeepKey), or of one whose first attempt's key was
// a valid affinity cookie, when that attempt had one: a retry then
// reads it back from the key placeholder, which is this policy's own only
// then (another affinity policy the request met, or this one's fallback,
// may have set it otherwise). Pointer-shaped, it costs no allocation in
// the vars map.
type keyedPick struct{ up *reverseproxy.Upstream }

// Key sources in debug logs, besides the key expressions themselves.
const (
	srcCookie    = "cookie"
	srcNewCookie = "new cookie"
	srcFallback  = "fallback"
	// A compat retry's key, the first attempt's.
	srcFirstAttempt = "first attempt"
)

// Select returns the upstream for r: the first available upstream in the
// key's preference order that this request has not tried yet in this round
// of its retries (and that is under its load cap when Bound is set), or
// nil (see choose).
func (s *AffinitySelection) Select(pool reverseproxy.UpstreamPool, r *http.Request, w http.ResponseWriter) *reverseproxy.Upstream {
	if len(pool) == 0 {
		return nil
	}
	ctx := r.Context()
	vars, _ := ctx.Value(caddyhttp.VarsCtxKey).(map[string]any)
	var tried []*reverseproxy.Upstream
	var st *attempts
	var keyed bool // the first attempt had a key
	if vars != nil {
		switch v := vars[s.stateKey].(type) {
		case *reverseproxy.Upstream:
			tried = []*reverseproxy.Upstream{v}
		case keyedPick:
			tried, keyed = []*reverseproxy.Upstream{v.up}, true
		case *attempts:
			st, tried, keyed = v, v.tried, v.keyed
		}
	}

	var key, src string
	repl, _ := ctx.Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl != nil && len(tried) > 0 && (s.retriesKeepKey || keyed) {
		// A retry: compat reads a header field, and cookie mode its
		// cookie, from the request reverse_proxy sends, to which it has
		// applied the last attempt's header_up (`header_up -X-User` or
		// `header_up -Cookie` would leave the key empty, and the retry to
		// the fallback's random pick or a new cookie); the first attempt's
		// key holds, or its lack of one.
		if v, ok := repl.Get(keyPlaceholder); ok && keyed {
			key, _ = v.(string)
			src = srcFirstAttempt
		}
	} else if repl != nil {
		for i := range s.keys {
			if key = s.keys[i].resolve(r, repl, vars); key != "" {
				src = s.keys[i].expr
				if s.alg != Compat {
					key = upperEscapes(key)
				}
				break
			}
		}
	}
	if key == "" && s.jar != nil {
		switch {
		case st != nil && st.issued != "":
			key, src = st.issued, srcNewCookie // a retry: the cookie is already set
		default:
			var renew bool
			if key, renew = s.jar.read(r); key != "" {
				src = srcCookie
				if renew {
					// Signed with a previous secret: the same id, signed
					// with the current one, once per request.
					if w != nil {
						s.setCookie(w, r, s.jar.sign(key))
					} else {
						s.warnNoWriter()
					}
					if st == nil {
						st = &attempts{tried: tried}
					}
					st.issued = key
				}
				break
			}
			id, value := s.jar.issue()
			if w != nil {
				s.setCookie(w, r, value)
			} else {
				s.warnNoWriter()
			}
			if st == nil {
				st = &attempts{tried: tried}
			}
			st.issued = id
			key, src = id, srcNewCookie
		}
	}

	var up *reverseproxy.Upstream
	if key == "" {
		src = srcFallback
		up = s.fallbackSelect(pool, r, w)
	} else {
		set, err := s.sets.get(pool)
		if err != nil {
			var be *buildError
			if !errors.As(err, &be) || be.firstReport() {
				if c := s.logger.Check(zapcore.ErrorLevel, "affinity: building hash table failed; using the fallback policy for this set of upstreams until it changes"); c != nil {
					c.Write(zap.Error(err), zap.Int("upstreams", len(pool)))
				}
			}
			up = s.fallbackSelect(pool, r, w)
		} else if i := s.choose(set, pool, key, tried); i >= 0 {
			up = pool[i]
		}
		if repl != nil && len(tried) == 0 {
			repl.Set(keyPlaceholder, key)
		}
	}

	if len(tried) == 0 && key != "" && (s.retriesKeepKey || src == srcCookie) {
		keyed = true
		if st != nil {
			st.keyed = true
		}
	}
	if vars != nil && up != nil {
		switch {
		case st == nil && len(tried) == 0 && keyed:
			vars[s.stateKey] = keyedPick{up}
		case st == nil && len(tried) == 0:
			vars[s.stateKey] = up
		case st == nil:
			vars[s.stateKey] = &attempts{tried: append(tried, up), keyed: keyed}
		default:
			st.tried = append(st.tried, up)
			vars[s.stateKey] = st
		}
	} else if vars != nil && st != nil {
		vars[s.stateKey] = st // keep the issued id for the retry
	}

	if c := s.logger.Check(zapcore.DebugLevel, "affinity pick"); c != nil {
		dial := ""
		if up != nil {
			dial = up.Dial
		}
		c.Write(
			zap.String("key_source", src),
			zap.String("key_hash", s.keyHash(key)),
			zap.String("dial", dial),
			zap.Int("attempt", len(tried)+1),
			zap.Int("upstreams", len(pool)),
		)
	}
	return up
}

// fallbackSelect asks the fallback policy. Caddy's cookie policy sets its
// cookie on w without looking: called without a response (by a third-party
// policy; Caddy's own are refused at provisioning), it gets one that sends
// nothing, so the request still gets an upstream, and the log says why
// its clients keep getting new cookies.
func (s *AffinitySelection) fallbackSelect(pool reverseproxy.UpstreamPool, r *http.Request, w http.ResponseWriter) *reverseproxy.Upstream {
	if w == nil && s.fallbackSetsCookie {
		s.warnNoWriter()
		w = unsentResponse{header: make(http.Header)}
	}
	return s.fallback.Select(pool, r, w)
}

// unsentResponse is a response whose header and body go nowhere.
type unsentResponse struct{ header http.Header }

func (u unsentResponse) Header() http.Header       { return u.header }
func (unsentResponse) Write(p []byte) (int, error) { return len(p), nil }
func (unsentResponse) WriteHeader(int)             {}

// setCookie sets the policy's cookie, value, on w for r, and warns once
// when it goes out Secure (secure on, same_site none, a __Host- or
// __Secure- name) over what looks like plain HTTP: browsers other than
// on localhost drop such a cookie, and its clients then get a new id, and
// likely another upstream, at every request.
func (s *AffinitySelection) setCookie(w http.ResponseWriter, r *http.Request, value string) {
	if !s.jar.set(w, r, value) {
		return
	}
	s.secureOverHTTP.Do(func() {
		s.logger.Warn("affinity cookie is Secure but the request came over plain HTTP: browsers drop it (except on localhost), so each request gets a new id; serve the site over HTTPS, or, behind a proxy that ends TLS, list it in the server's trusted_proxies so that its X-Forwarded-Proto counts",
			zap.String("cookie", s.jar.cfg.Name), zap.String("host", r.Host))
	})
}

// warnNoWriter logs, once, that the cookie could not be set: the policy
// that called this one as its fallback (a plugin's; Provision rejects
// Caddy's header and query policies) passed no ResponseWriter.
func (s *AffinitySelection) warnNoWriter() {
	s.noWriter.Do(func() {
		if s.jar == nil { // the fallback's cookie (fallbackSelect)
			s.logger.Warn("affinity's fallback, Caddy's cookie policy, cannot set its cookie: the policy calling this one as its fallback passed no response, so clients without the cookie keep getting new random upstreams; use lb_policy affinity itself, with the other policy's key as its key before its own cookie")
			return
		}
		s.logger.Warn("affinity cookie cannot be set: the policy calling this one as its fallback passed no response, so clients without the cookie keep getting new random ids; use lb_policy affinity itself, with the other policy's key as its key before the cookie")
	})
}

// keyHash identifies key in logs without logging it: keys are often
// personal data (client IPs, user ids). The hash is seeded per policy when
// it is provisioned, so it correlates the log lines of one config (not
// across reloads, nor between two reverse_proxy handlers) but cannot be
// looked up from a list of, say, all IPv4 addresses without the seed.
func (s *AffinitySelection) keyHash(key string) string {
	if key == "" {
		return ""
	}
	d := xxhash.NewWithSeed(s.logSeed)
	_, _ = d.WriteString(key)
	return strconv.FormatUint(d.Sum64(), 16)
}

// choose returns the pool index for key, or -1: the first upstream in
// key's preference order that is available and not tried in this round of
// the request's attempts (under the load cap if there is one, then
// without). A round ends when every available upstream was tried; the
// next starts over in the same order, from the first choice that is not
// the last one tried (or from the first choice, when that is the only one
// available), so that lb_try_duration can wait for an upstream that is
// restarting.
func (s *AffinitySelection) choose(set *upstreamSet, pool []*reverseproxy.Upstream, key string, tried []*reverseproxy.Upstream) int {
	c := chooser{pool: pool, set: set, bound: s.Bound, floor: s.BoundFloor}
	last := int32(-1)
	if len(tried) > 0 {
		c.skip = currentRound(set, tried)
		if i, ok := set.index[tried[len(tried)-1].Dial]; ok {
			last = i
		}
	}
	for pass := 0; ; pass++ {
		if s.Bound > 0 {
			c.bounded = true
			if i := set.table.Pick(key, c.eligible); i >= 0 {
				return set.poolIndex(i)
			}
			c.bounded = false
		}
		if i := set.table.Pick(key, c.eligible); i >= 0 {
			return set.poolIndex(i)
		}
		switch {
		case len(c.skip) == 0:
			return -1 // none available
		case pass == 0 && last >= 0 && !(len(c.skip) == 1 && c.skip[0] == last):
			c.skip = append(c.skip[:0], last) // a new round
		default:
			c.skip = c.skip[:0] // a new round, and the last one tried is the only one left
		}
	}
}

// currentRound returns the table indices of the upstreams tried in the
// current round: replaying tried, a round ends where an upstream it
// already has is tried again (choose started over).
func currentRound(set *upstreamSet, tried []*reverseproxy.Upstream) []int32 {
	round := make([]int32, 0, len(tried))
	for _, u := range tried {
		i, ok := set.index[u.Dial]
		if !ok {
			continue // no longer in the pool
		}
		if slices.Contains(round, i) {
			round = round[:0]
		}
		round = append(round, i)
	}
	return round
}

// chooser holds what eligibility depends on during one choose.
type chooser struct {
	pool  []*reverseproxy.Upstream
	set   *upstreamSet
	skip  []int32 // table indices not to pick (upstreams tried)
	bound float64 // the policy's Bound
	floor int     // the policy's BoundFloor

	bounded bool    // apply the load cap
	share   float64 // the cap per unit of weight, computed on first need; 0: not yet
}

// eligible reports whether table index i may be picked.
func (c *chooser) eligible(i int) bool {
	u := c.pool[c.set.poolIndex(i)]
	if !u.Available() || slices.Contains(c.skip, int32(i)) {
		return false
	}
	if !c.bounded || u.Host == nil {
		return true
	}
	load := u.NumRequests()
	if load == 0 || load < c.floor {
		// The cap is at least 1 and the floor, so such an upstream is
		// under it; the O(n) pass that computes the cap waits until a
		// candidate is busy.
		return true
	}
	if c.share == 0 {
		c.share = loadShare(c.set, c.pool, c.bound)
	}
	return load < max(loadCap(c.share, c.set.table.Node(i).Weight), c.floor)
}

// loadShare returns the bounded-load cap per unit of weight for the next
// request: bound × (in-flight requests over available upstreams + 1) /
// their total weight, per Mirrokni, Thorup and Zadimoghaddam, "Consistent
// Hashing with Bounded Loads" (2018), with each upstream's share of the
// load in proportion to its weight, as HAProxy's hash-balance-factor has
// it: an upstream of weight 3 among ones of weight 1 may carry three
// times as much before its keys overflow. Each distinct dial counts once
// (the upstreams of a dial listed twice share one host and its count).
// 0 means no upstream is available.
func loadShare(set *upstreamSet, pool []*reverseproxy.Upstream, bound float64) float64 {
	weight, sum := 0, 0
	for i := range set.table.Len() {
		u := pool[set.poolIndex(i)]
		if !u.Available() {
			continue
		}
		weight += set.table.Node(i).Weight
		if u.Host != nil {
			sum += u.NumRequests()
		}
	}
	if weight == 0 {
		return 0
	}
	return bound * float64(sum+1) / float64(weight)
}

// loadCap returns the cap of an upstream of the given weight, at share
// per unit of weight (loadShare), rounded up.
func loadCap(share float64, weight int) int {
	// A huge bound means no bound; converting past MaxInt would not.
	return int(min(math.Ceil(share*float64(weight)), math.MaxInt32))
}

// Interface guards
var (
	_ reverseproxy.Selector = (*AffinitySelection)(nil)
	_ caddy.Provisioner     = (*AffinitySelection)(nil)
	_ caddy.Validator       = (*AffinitySelection)(nil)
	_ caddyfile.Unmarshaler = (*AffinitySelection)(nil)
)
