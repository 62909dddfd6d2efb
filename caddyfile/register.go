package caddyfile

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/f06cdff9/caddy-affinity-cache/cache"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("response_cache", parseResponseCache)
	// Just before reverse_proxy (and php_fastcgi, file_server), where
	// nginx's proxy_cache sits: every handler Caddy orders before the
	// proxy runs for hits too. Access control (basic_auth, forward_auth),
	// guards (abort, error, respond with a matcher), encode, intercept and
	// templates all apply to a hit as to a miss, and handle and route
	// blocks are not wrapped by a site-level cache (put one inside a block
	// to cache it, after that block's own access control).
	httpcaddyfile.RegisterDirectiveOrder("response_cache", httpcaddyfile.Before, "reverse_proxy")
}

// parseResponseCache sets up a response_cache handler from Caddyfile tokens;
// see cache.Config.UnmarshalCaddyfile for the syntax.
func parseResponseCache(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := new(cache.Handler)
	if err := handler.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return handler, nil
}
