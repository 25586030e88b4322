package origin

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/linkpop/linkpop/client"
)

// routeUnparsed labels, in metrics, requests net/http refused before any
// handler ran because they are not well-formed HTTP/1.1.
const routeUnparsed = "unparsed"

// netHTTPRefusal is what follows the status line of the answers net/http
// writes itself, straight to the connection, when it cannot parse a
// request (bytes not allowed in a header, duplicate Content-Length, an
// unsupported Transfer-Encoding, headers too large): a plain-text body the
// contract does not allow. Nothing else the API answers looks like it:
// every handler answer is application/json.
const netHTTPRefusal = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

// refusalListener hands out connections that rewrite net/http's own
// plain-text refusals into the contract's JSON error body, so that every
// answer of the API, even to a request no handler saw, is
// {"error":{"code",...}} with a 4xx status (an unsupported
// Transfer-Encoding, which net/http answers 501, is the client's error
// too: 400 malformed_request).
type refusalListener struct {
	net.Listener
	s *Server
}

func (l *refusalListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &refusalConn{Conn: c, s: l.s}, nil
}

type refusalConn struct {
	net.Conn
	s *Server
}

// Write passes answers through, except net/http's own refusals, which it
// replaces. net/http writes each refusal in one Write call (fmt.Fprintf on
// the connection, bypassing its buffered writer).
func (c *refusalConn) Write(b []byte) (int, error) {
	if out, ok := c.s.rewriteRefusal(b); ok {
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return c.Conn.Write(b)
}

// CloseWrite lets net/http half-close the connection after a refusal, as
// it does on a bare *net.TCPConn, so the client reads the answer.
func (c *refusalConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// rewriteRefusal returns the JSON answer replacing b when b is one of
// net/http's plain-text refusals, counting it in
// linkpop_origin_requests_total{route="unparsed"}.
func (s *Server) rewriteRefusal(b []byte) ([]byte, bool) {
	const proto = "HTTP/1.1 "
	// Every handler answer passes here: a status below 400 is let through
	// before anything is searched.
	if len(b) < len(proto)+3 || !bytes.HasPrefix(b, []byte(proto)) || b[len(proto)] < '4' {
		return nil, false
	}
	i := bytes.Index(b, []byte(netHTTPRefusal))
	if i < 0 || bytes.Contains(b[:i], []byte("\r\n")) {
		return nil, false
	}
	code, err := strconv.Atoi(string(b[len(proto) : len(proto)+3]))
	if err != nil || code < 400 {
		return nil, false
	}
	e := ErrMalformedRequest
	if code == http.StatusRequestHeaderFieldsTooLarge {
		e = ErrHeadersTooLarge
	}
	obj := client.ErrorObject{Code: e.Code, Message: e.Message}
	// net/http's reason ("400 Bad Request: missing required Host header")
	// is one of its fixed strings, never an echo of the request.
	if _, reason, ok := strings.Cut(string(b[i+len(netHTTPRefusal):]), ": "); ok && code == http.StatusBadRequest {
		obj.Message += ": " + reason
	}
	body, _ := json.Marshal(client.ErrorBody{Error: obj}) // strings only: cannot fail
	body = append(body, '\n')
	var out bytes.Buffer
	out.WriteString(proto + strconv.Itoa(e.Status) + " " + http.StatusText(e.Status) + "\r\n")
	out.WriteString("Content-Type: application/json\r\n")
	out.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n")
	out.WriteString("X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n")
	out.Write(body)
	s.metrics.GetOrCreateCounter(`linkpop_origin_requests_total{route="` + routeUnparsed + `",code="` + strconv.Itoa(e.Status) + `"}`).Inc()
	s.log.Debug("request refused before routing", "status", e.Status, "net_http_status", code)
	return out.Bytes(), true
}
