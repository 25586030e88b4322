package edge

import (
	"net/netip"
	"strconv"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"

	"github.com/linkpop/linkpop/edge/clicks"
	"github.com/linkpop/linkpop/link"
)

// Header names and fixed values, as bytes so the hot path never converts.
var (
	hdrLocation     = []byte(fasthttp.HeaderLocation)
	hdrCacheControl = []byte(fasthttp.HeaderCacheControl)
	hdrAllow        = []byte(fasthttp.HeaderAllow)
	valAllow        = []byte("GET, HEAD")
	valNoStore      = []byte("private, max-age=0")
	textPlain       = []byte("text/plain; charset=utf-8")
	bodyNotFound    = []byte("not found\n")
	bodyGone        = []byte("gone\n")
	bodyMethod      = []byte("method not allowed\n")
	bodyUnavailable = []byte("unavailable\n")
	bodyRoot        = []byte("linkpop\n")
)

// Resolve is the redirect handler, a fasthttp.RequestHandler. It answers
// GET and HEAD /{code}:
//
//   - the link's redirect status (301, 302, 307 or 308) with Location
//     exactly as stored. 301 and 308 carry "Cache-Control: max-age=<MaxAge>"
//     so a permanent redirect is cached for a bounded time only; 302 and
//     307 carry "Cache-Control: private, max-age=0" so shared caches
//     never answer for the edge and every click reaches it;
//   - 410 for a disabled or expired link;
//   - 404 for an unknown code, and for any path that is not "/" followed by
//     a valid code (no decoding: "/%61bc" is not "/abc"), without a lookup;
//   - 429 with Retry-After instead of 404 for an unknown code once the
//     client has collected too many (the enumeration limiter, notFound);
//   - 405 with "Allow: GET, HEAD" for other methods.
//
// A link with "freshness": "strict" is answered 503 with Retry-After
// while the edge cannot prove it is within MaxStale of the stream (see
// provablyFresh); relaxed links are served from the replica whatever its
// staleness.
//
// A miss is authoritative while the replica is caught up. While it lags
// and an origin is configured, the miss asks the origin (see fallback);
// the origin being down never turns into a 5xx. Only a failing local
// replica answers 503.
//
// Resolve does not allocate when the link is in the hot cache (nor for an
// invalid path or a miss the bloom filter rules out). It may be called once
// Started is closed, until Run returns.
func (s *Server) Resolve(ctx *fasthttp.RequestCtx) {
	start := ctx.Time()
	status := s.resolve(ctx, start)
	s.met.countStatus(status)
	// The duration histogram takes a mutex and a clock read; under load
	// on two cores that was 4-8% of a request (BenchmarkLatencyHistogram
	// against BenchmarkResolveListener), so it records one request in
	// durationSample, spread over connections and over the requests of
	// each connection.
	if (ctx.ConnID()+ctx.ConnRequestNum())%durationSample == 0 {
		s.met.duration.Update(time.Since(start).Seconds())
	}
}

// durationSample: one request in durationSample updates the duration
// histogram.
const durationSample = 8

func (s *Server) resolve(ctx *fasthttp.RequestCtx, now time.Time) int {
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.SetCanonical(hdrAllow, valAllow)
		return textStatus(ctx, fasthttp.StatusMethodNotAllowed, bodyMethod)
	}
	code, ok := codeFromURI(ctx.Request.Header.RequestURI())
	if !ok {
		if code != nil { // the root
			return textStatus(ctx, fasthttp.StatusNotFound, bodyRoot)
		}
		return textStatus(ctx, fasthttp.StatusNotFound, bodyNotFound)
	}
	rep := s.rep.Load()
	e, found, err := rep.Lookup(code)
	if err != nil {
		s.log.Warn("replica lookup", "code", string(code), "err", err)
	}
	if found {
		if e.Strict && !s.provablyFresh(now) {
			return s.serveStrictUnavailable(ctx)
		}
		return s.recordClick(ctx, code, now, s.serveRedirect(ctx, e.Redirects(now), e.Redirect, e.URL))
	}
	if s.fb != nil && (err != nil || !s.caughtUp()) {
		if rec, ok := s.fb.resolve(code); ok {
			return s.recordClick(ctx, code, now, s.serveRedirect(ctx, rec.Redirects(now), rec.Redirect, rec.URL))
		}
	}
	if err != nil {
		return textStatus(ctx, fasthttp.StatusServiceUnavailable, bodyUnavailable)
	}
	return s.notFound(ctx, now)
}

// clientAddr is the request's client address: the socket peer, or behind
// a trusted proxy the address its forwarding headers name
// (clicks.Proxies.ClientAddr).
func (s *Server) clientAddr(ctx *fasthttp.RequestCtx) netip.Addr {
	return s.clientAddrOf(ctx, connPeer(ctx))
}

// clientAddrOf is clientAddr, the socket peer known.
func (s *Server) clientAddrOf(ctx *fasthttp.RequestCtx, peer netip.Addr) netip.Addr {
	if !s.proxies.Trusts(peer) {
		return peer
	}
	// PeekAll reuses one buffer: take Forwarded, and X-Forwarded-For only
	// when there is no Forwarded (which wins).
	if fwd := ctx.Request.Header.PeekAll(fasthttp.HeaderForwarded); len(fwd) > 0 {
		return s.proxies.ClientAddr(peer, nil, fwd)
	}
	return s.proxies.ClientAddr(peer, ctx.Request.Header.PeekAll(fasthttp.HeaderXForwardedFor), nil)
}

// recordClick records a click if the answer decided is a redirect to a
// GET (HEAD, 404 and 410 are not clicks) that can still be written (the
// connection was not closed under it: connInfo) and analytics is on, and
// returns status.
func (s *Server) recordClick(ctx *fasthttp.RequestCtx, code []byte, now time.Time, status int) int {
	if s.clk == nil || status == fasthttp.StatusGone || !ctx.IsGet() {
		return status
	}
	peer, lost, sender := connInfo(ctx)
	if lost {
		return status
	}
	c := clicks.Click{
		Code:      code,
		Time:      now,
		Addr:      s.clientAddrOf(ctx, peer),
		UserAgent: ctx.Request.Header.UserAgent(),
		Referer:   ctx.Request.Header.Referer(),
		Stripe:    ctx.ConnID(),
		Sender:    sender,
	}
	s.clk.Record(&c)
	return status
}

// serveRedirect answers a found link: its redirect or 410.
func (s *Server) serveRedirect(ctx *fasthttp.RequestCtx, redirects bool, status int, url string) int {
	if !redirects {
		return textStatus(ctx, fasthttp.StatusGone, bodyGone)
	}
	ctx.Response.SetStatusCode(status)
	// SetCanonical copies the value verbatim (it only strips CR and LF,
	// which a stored URL never holds): no normalisation, no re-encoding.
	ctx.Response.Header.SetCanonical(hdrLocation, unsafe.Slice(unsafe.StringData(url), len(url)))
	if status == fasthttp.StatusMovedPermanently || status == fasthttp.StatusPermanentRedirect {
		ctx.Response.Header.SetCanonical(hdrCacheControl, s.cacheControlPermanent)
	} else {
		ctx.Response.Header.SetCanonical(hdrCacheControl, valNoStore)
	}
	return status
}

func textStatus(ctx *fasthttp.RequestCtx, status int, body []byte) int {
	ctx.Response.SetStatusCode(status)
	ctx.Response.Header.SetContentTypeBytes(textPlain)
	ctx.Response.SetBodyRaw(body)
	return status
}

// codeFromURI returns the code a request-target names. ok is false for
// anything but "/" followed by a valid code and an optional query, which
// is ignored; code is then non-nil (and empty) only for the root "/". The
// target is taken raw: nothing is percent-decoded or normalised, so every
// encoded or dotted variant is a 404. An absolute-form target
// ("http://host/code") is reduced to its path first.
func codeFromURI(uri []byte) (code []byte, ok bool) {
	if len(uri) > 0 && uri[0] != '/' {
		uri = absolutePath(uri)
	}
	if len(uri) == 0 || uri[0] != '/' {
		return nil, false
	}
	p := uri[1:]
	for i, c := range p {
		if c == '?' {
			p = p[:i]
			break
		}
	}
	if len(p) == 0 {
		return p, false
	}
	if !link.ValidCodeBytes(p) {
		return nil, false
	}
	return p, true
}

// absolutePath returns the path of an absolute-form request-target, or nil.
func absolutePath(uri []byte) []byte {
	var rest []byte
	switch {
	case hasPrefixFold(uri, "http://"):
		rest = uri[len("http://"):]
	case hasPrefixFold(uri, "https://"):
		rest = uri[len("https://"):]
	default:
		return nil
	}
	for i, c := range rest {
		switch c {
		case '/':
			return rest[i:]
		case '?':
			return nil
		}
	}
	return nil
}

func hasPrefixFold(b []byte, prefix string) bool {
	if len(b) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		c := b[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

// cacheControlMaxAge is the Cache-Control value for permanent redirects.
func cacheControlMaxAge(maxAge time.Duration) []byte {
	return []byte("max-age=" + strconv.FormatInt(int64(maxAge/time.Second), 10))
}
