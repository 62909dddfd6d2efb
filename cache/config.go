package cache

import (
	"github.com/caddyserver/caddy/v2"
)

// Config is the JSON configuration of the response_cache handler
// (module http.handlers.response_cache). It is embedded in Handler so the
// fields appear at the top level of the handler's JSON.
type Config struct {
	// MaxSize is the most bytes the cache holds, counting each entry's
	// body, stored headers, key and a fixed per-entry overhead. Entries are
	// evicted (ristretto's TinyLFU admission and sampled LFU eviction) to stay
	// under it. Responses being recorded for storage take at most an eighth
	// of it more, all together (one alone up to MaxItemSize, and those
	// other requests wait for a second eighth); a storable miss that would
	// pass that is streamed and not stored (Cache-Status
	// detail=recording-budget). Responses are recorded at the origin's
	// pace, not their clients', as far as a lead budget allows: those
	// without Content-Length run ahead of their clients by at most a
	// sixteenth of it, all together.
	// Default: 256 MiB. From 64 KiB to 512 GiB (to 1 GiB in a 32-bit
	// build, whose process cannot address more beside Go's heap).
	MaxSize int64 `json:"max_size,omitempty"`

	// MaxItemSize is the largest response, in bytes, that is buffered for
	// storage: its header fields (each line's name and value, plus 4) and
	// its body. A larger response is streamed to the client as it arrives;
	// buffering stops and its memory is released the moment the body
	// passes what the header leaves of this size (at once for a header
	// that leaves no room; a body of unknown length needs a byte of room),
	// and it is not stored. A 304's or a HEAD's update that would take the
	// stored response past it drops it. Default: MaxSize/8, at most
	// 64 MiB. Must be positive and not larger than MaxSize.
	MaxItemSize int64 `json:"max_item_size,omitempty"`

	// Key is the template of the primary cache key; it may use any request
	// placeholders. The default,
	// `{http.request.scheme}://{http.request.hostport}{http.request.orig_uri}`,
	// covers scheme, host (lower-cased) and port as Host names them (a
	// default port too, when Host spells it), followed by '#' and the port the
	// connection came in on when Host names another (a port mapping, a
	// front proxy: http://a.test:8080#80/a), and the path and query the
	// client sent (before any rewrite),
	// the path with its percent-encoding
	// as sent (so /a%2Fb and /a/b are two entries, as are /a? and /a); GET
	// and HEAD share a key, because only GET responses are stored and HEAD
	// is answered from them. A custom key always has the scheme and
	// host:port and a space prepended, so that two sites never share an
	// entry and a custom key is never a default one. It must name a
	// placeholder that depends on the request (not only {env.*},
	// {system.*}, {file.*} or {time.*}), Caddy must know its
	// {http.request.*} names, and Caddyfile shorthands are expanded. A
	// request for which one of its placeholders is unknown bypasses the
	// cache. Path placeholders such as
	// {path} are decoded, and {uri} is read after rewrites: prefer
	// {http.request.orig_uri}, last in the template and after a space.
	Key string `json:"key,omitempty"`

	// DefaultTTL is the freshness lifetime given to storable responses that
	// carry neither explicit freshness (max-age, s-maxage, Expires) nor
	// heuristic freshness (Last-Modified), of status 200, 203, 204, 206,
	// 300, 301, 308, 404, 405 or 410, or marked public by the origin (see
	// OperatorFreshness): not an error a client can provoke for a URL
	// whose answer is a 200. Default: 0, which stores nothing without
	// freshness information (RFC 9111 strict). Responses stored with it
	// are fresh for at most the DefaultTTL of the config serving them:
	// a reload that lowers or removes it applies to them too.
	DefaultTTL caddy.Duration `json:"default_ttl,omitempty"`

	// HeuristicMax is the longest freshness lifetime the heuristic gives a
	// response without explicit freshness (10% of the time since its
	// Last-Modified, RFC 9111 §4.2.2): a 404 last modified two years ago
	// would otherwise be fresh for 73 days. Default: 24h (as Apache's
	// CacheMaxExpire and Traffic Server's heuristic_max_lifetime); set a
	// long one (8760h) to leave heuristics nearly uncapped. Negative (the
	// Caddyfile's off): no heuristic freshness (RFC 9111 §4.2.2 allows a
	// cache none), so a response fresh only by it is served from the
	// store only after a revalidation with the origin, on every use. Like
	// DefaultTTL, it bounds the responses already stored when a reload
	// lowers it.
	HeuristicMax caddy.Duration `json:"heuristic_max,omitempty"`

	// StaleWhileRevalidate is the RFC 5861 stale-while-revalidate window used
	// when a response carries none, and the upper bound of the window a
	// response asks for. Within it a stale entry is served immediately and
	// revalidated once, in the background. Default: 0 (only the response's
	// own directive applies, uncapped). Negative (the Caddyfile's off):
	// never, whatever the response asks.
	StaleWhileRevalidate caddy.Duration `json:"stale_while_revalidate,omitempty"`

	// StaleIfError is the RFC 5861 stale-if-error window used when a
	// response carries none, and the upper bound of the window a response
	// asks for. Within it a stale entry is served when the origin answers
	// 500, 502, 503 or 504 or cannot be reached. Default: 0 (only the
	// response's own directive applies, uncapped). Negative (the
	// Caddyfile's off): never, whatever the response or request asks.
	StaleIfError caddy.Duration `json:"stale_if_error,omitempty"`

	// CacheName identifies this cache in the Cache-Status response header
	// (RFC 9211), in metrics and in the admin API. Default: "caddy".
	// Handlers with the same name and sizes share one store (across sites,
	// and across config reloads that keep them); within one config, the
	// same name with another MaxSize or MaxItemSize is an error.
	CacheName string `json:"cache_name,omitempty"`

	// Coalesce makes concurrent misses for one key send a single request to
	// the origin; the others wait for it and are answered from it. Misses
	// MinUses will not store go alone: a burst of first misses of a new URL
	// sends MinUses requests (up to 2×MinUses-1). Default: true.
	Coalesce *bool `json:"coalesce,omitempty"`

	// TargetedField is the name of the targeted cache-control field (RFC
	// 9213) that, when present and valid, overrides Cache-Control and
	// Expires for this cache. Default: "CDN-Cache-Control". Set to "-" (or
	// "off", as in the Caddyfile) to honour Cache-Control only, or to
	// "Surrogate-Control" for an origin that speaks that instead (read as
	// an RFC 8941 dictionary too: max-age, no-store, stale-while-revalidate
	// and the like, not the Edge Architecture's ";target" forms). A field
	// with a meaning of its own in HTTP (Cache-Control, Set-Cookie, Vary,
	// Content-Length...) is refused.
	TargetedField string `json:"targeted_field,omitempty"`

	// MinUses is how many times a URL must miss before its response is
	// stored (like nginx's proxy_cache_min_uses), from 1 to 15; 0, the
	// default, means auto.
	//
	// 1 stores every storable response on its first miss. 2 stores on
	// the second miss within about a cache-full of misses, so that
	// responses asked for once (most of the URLs of many sites) cost
	// neither the work of storing them nor the space of what they would
	// evict: such a miss costs what an uncacheable one does.
	//
	// Auto stores on the first miss, except while the store is nearly
	// full (7/8 of MaxSize) and fewer than 1 in 16 of the recent
	// responses stored on a first miss were asked for again (a flood of
	// one-off URLs): then it acts as 2, still storing one first miss in
	// 16 to see when URLs start coming back.
	//
	// Misses not stored for this reason are not coalesced (see
	// coalesce): concurrent misses of a new URL go to the origin until
	// one reaches the count, and the rest are answered from that one.
	// Stale entries are revalidated and refreshed regardless. Responses
	// not stored for this reason carry `detail=min-uses` in Cache-Status.
	MinUses int `json:"min_uses,omitempty"`

	// StatusKey adds the cache key to Cache-Status (the `key` parameter).
	// Off by default because keys can reveal more than a client should see.
	StatusKey bool `json:"status_key,omitempty"`
}
