// Package affinitycache registers every module of caddy-affinity-cache with
// Caddy, so that a single
//
//	xcaddy build --with github.com/f06cdff9/caddy-affinity-cache
//
// brings in the `lb_policy affinity` selection policy, the `response_cache`
// handler and their Caddyfile directives.
package affinitycache

import (
	_ "github.com/f06cdff9/caddy-affinity-cache/affinity"
	_ "github.com/f06cdff9/caddy-affinity-cache/cache"
	_ "github.com/f06cdff9/caddy-affinity-cache/caddyfile"
)
