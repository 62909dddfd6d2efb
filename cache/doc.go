// Package cache provides the `response_cache` HTTP handler: an in-memory
// shared HTTP cache (RFC 9111) stored in ristretto, bounded in bytes.
package cache
