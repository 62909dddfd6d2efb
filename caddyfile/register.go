package caddyfile

import (
	"errors"
	"strings"

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
	h.Reset()
	h.Next() // the directive: errors below name its line
	if err := checkSharedName(h, &handler.Config); err != nil {
		return nil, err
	}
	return handler, nil
}

// sharedStore is what a response_cache block of the Caddyfile gave the
// store its cache_name names.
type sharedStore struct {
	maxSize, maxItemSize int64
	where                string // file:line of the block
}

// stateSharedStores is the adaptation state's key for the stores named
// so far (map[string]sharedStore by cache_name).
const stateSharedStores = "response_cache.shared_stores"

// checkSharedName refuses a block whose cache_name another block of the
// Caddyfile uses with other sizes: they would share one store, which
// provisioning refuses too, but without saying where. Not in named routes
// (&(name)), which Caddy adapts with a State of their own, and leaves out
// of the config unless invoked: provisioning checks them.
func checkSharedName(h httpcaddyfile.Helper, c *cache.Config) error {
	if h.IsNamedRoute() {
		return nil
	}
	name, maxSize, maxItemSize := c.StoreIdentity()
	named, _ := h.State[stateSharedStores].(map[string]sharedStore)
	if named == nil {
		named = make(map[string]sharedStore)
		h.State[stateSharedStores] = named
	}
	if have, ok := named[name]; ok {
		if have.maxSize != maxSize || have.maxItemSize != maxItemSize {
			return h.Errf("cache_name %q is used at %s with max_size %s and max_item_size %s, here with %s and %s: "+
				"response_cache blocks with one cache_name share one store, so give them the same sizes, or different names",
				name, have.where, cache.SizeString(have.maxSize), cache.SizeString(have.maxItemSize),
				cache.SizeString(maxSize), cache.SizeString(maxItemSize))
		}
		return nil
	}
	// Where, as Caddy says it: file:line, and the import chain of a
	// snippet's block (whose line is the same for every import).
	where := strings.TrimPrefix(h.WrapErr(errors.New("")).Error(), ", at ")
	named[name] = sharedStore{maxSize, maxItemSize, where}
	return nil
}
