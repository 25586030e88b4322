// Package clicks is the edge half of click analytics: a Recorder that
// counts every redirect into sharded in-memory aggregates without a lock
// shared by all connections and without allocating per click, a Shipper
// that seals those aggregates into a link.ClickBatch every flush interval,
// writes it to an on-disk journal and publishes it to the click stream in
// sequence order (through a Publisher, so this package never imports
// NATS), and the enrichment (visitor hash, client address behind trusted
// proxies, country, device, browser, OS, bot) that needs no network.
package clicks
