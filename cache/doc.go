// Package cache provides the `response_cache` HTTP handler: an in-memory
// shared HTTP cache (RFC 9111) stored in ristretto, bounded in bytes.
//
// Besides the handler and its admin API, the package exports the HTTP
// caching rules it is built from as plain functions over headers and
// times (ParseResponseControl, Storable, NewFreshness, VaryKey,
// ParseRange, ...), each tested against the RFC text. Until the module's
// first tagged release they may still change; the config (JSON and
// Caddyfile) is what this module keeps stable.
package cache
