// Package link is linkpop's domain, shared by the origin and the edges: the
// syntax of short codes, the validation and canonical form of target URLs,
// the link record, the change event that replicates it, their wire
// encoding, and the sentinel errors that name every way a link can be
// refused.
package link
