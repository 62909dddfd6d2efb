package caddyfile

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/f06cdff9/caddy-affinity-cache/cache"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("response_cache", parseResponseCache)
	// Before encode: the cache runs after basic_auth, forward_auth and
	// request_header (so access control still applies to hits) and outside
	// encode, so it stores what encode produced, one variant per
	// Accept-Encoding (encode sets Vary), and a hit costs no compression.
	httpcaddyfile.RegisterDirectiveOrder("response_cache", httpcaddyfile.Before, "encode")
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
