// Package regions holds the multi-region test: an origin host and two
// region hosts, each a Linux network namespace of its own on a shared
// virtual LAN (veth pairs on a bridge), the origin's host running the
// hub JetStream (domain "hub") and each region a NATS leaf node with its
// own domain, a mirror of the change stream and a regional click stream,
// read and written by two edges. The test cuts one region off with an
// nftables drop in both directions while links keep changing, heals it
// and checks what the edges served, reported and converged to. It needs
// root, ip (iproute2) and nft (nftables), and skips without them. It has
// no non-test code.
package regions
