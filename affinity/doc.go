// Package affinity provides `lb_policy affinity`, a reverse_proxy selection
// policy that maps a request key (client IP, cookie, header, any placeholder)
// to one upstream by consistent hashing, so a user keeps hitting the same
// replica and a change of the upstream set moves as few users as possible.
package affinity
