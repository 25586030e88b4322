package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/linkpop/linkpop/client"
)

// Import sources read over another shortener's API rather than from a
// file: Kutt has no export at all, and Bitly's CSV export is capped and
// its columns drift. They page through the service (constant memory);
// the token comes from EnvSourceToken, never from a flag, so it does not
// show in the process list or the shell history.
const (
	FormatBitlyAPI = "bitly-api" // Bitly API v4: GET /groups, then /groups/{guid}/bitlinks, following pagination.next
	FormatKuttAPI  = "kutt-api"  // Kutt API v2: GET /api/v2/links?limit&skip

	// EnvSourceToken holds the token of the service an API import reads.
	EnvSourceToken = "LINKPOP_SOURCE_TOKEN"
)

// apiSource pages through a foreign API. Every request goes to the host
// of the base URL the user gave: a "next" link elsewhere is refused, so
// the token is never sent to another host.
type apiSource struct {
	ctx   context.Context
	hc    *http.Client
	base  *url.URL
	auth  func(h http.Header)
	n     int // items handed out, for the per-item reports
	queue []item
}

func newAPISource(ctx context.Context, format, base, token string) (reader, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usagef("%s: %q is not an http(s) URL of the API", format, base)
	}
	if token == "" {
		return nil, usagef("%s: set %s to the API token", format, EnvSourceToken)
	}
	s := &apiSource{ctx: ctx, hc: &http.Client{Timeout: 60 * time.Second}, base: u}
	u.Path = strings.TrimRight(u.Path, "/") + "/" // pages resolve under it
	switch format {
	case FormatBitlyAPI:
		s.auth = func(h http.Header) { h.Set("Authorization", "Bearer "+token) }
		return &bitlyAPIReader{apiSource: s}, nil
	case FormatKuttAPI:
		s.auth = func(h http.Header) { h.Set("X-API-KEY", token) }
		return &kuttAPIReader{apiSource: s}, nil
	}
	return nil, fmt.Errorf("unknown API source %q", format)
}

// ErrForeignHost: a pagination link of the source API points at another
// host than the one given.
var ErrForeignHost = errors.New("the source API's next page is on another host")

// get fetches ref (a path under the base, or an absolute URL on the same
// host) and decodes its JSON answer into v.
func (s *apiSource) get(ref string, v any) error {
	u, err := s.base.Parse(ref)
	if err != nil {
		return err
	}
	if u.Scheme != s.base.Scheme || u.Host != s.base.Host {
		return fmt.Errorf("%w: %s", ErrForeignHost, u.Redacted())
	}
	req, err := http.NewRequestWithContext(s.ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	s.auth(req.Header)
	req.Header.Set("Accept", "application/json")
	resp, err := s.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("GET %s: %w", u.Path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %.200s", u.Path, resp.Status, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: %w", u.Path, err)
	}
	return nil
}

// pop hands out the next queued item, numbered in the source's order.
func (s *apiSource) pop() item {
	it := s.queue[0]
	s.queue = s.queue[1:]
	s.n++
	it.line = s.n
	return it
}

// bitlink is the part of Bitly's Bitlink object the import reads
// (dev.bitly.com API v4).
type bitlink struct {
	ID             string   `json:"id"` // "bit.ly/abc"
	Link           string   `json:"link"`
	CustomBitlinks []string `json:"custom_bitlinks"`
	LongURL        string   `json:"long_url"`
	Tags           []string `json:"tags"`
	IsDeleted      bool     `json:"is_deleted"`
}

type bitlyAPIReader struct {
	*apiSource
	groups  []string
	started bool
	page    string // the next page of the current group; "" none
}

func (r *bitlyAPIReader) next() (item, error) {
	for len(r.queue) == 0 {
		if !r.started {
			r.started = true
			var g struct {
				Groups []struct {
					GUID string `json:"guid"`
				} `json:"groups"`
			}
			if err := r.get("groups", &g); err != nil {
				return item{}, err
			}
			for _, x := range g.Groups {
				r.groups = append(r.groups, x.GUID)
			}
		}
		page := r.page
		if page == "" {
			if len(r.groups) == 0 {
				return item{}, io.EOF
			}
			page = "groups/" + url.PathEscape(r.groups[0]) + "/bitlinks?size=100&archived=both"
			r.groups = r.groups[1:]
		}
		var p struct {
			Links      []bitlink `json:"links"`
			Pagination struct {
				Next string `json:"next"`
			} `json:"pagination"`
		}
		if err := r.get(page, &p); err != nil {
			return item{}, err
		}
		r.page = p.Pagination.Next
		if len(p.Links) == 0 {
			r.page = ""
		}
		for _, b := range p.Links {
			code := ""
			if len(b.CustomBitlinks) > 0 {
				code = codeFromShortURL(b.CustomBitlinks[0])
			}
			if code == "" {
				code = codeFromShortURL(cmp.Or(b.Link, b.ID))
			}
			it := item{create: client.CreateLink{URL: b.LongURL, Code: code, Tags: b.Tags}}
			if b.IsDeleted {
				it.create.Status = client.StatusDisabled
			}
			if code == "" {
				it.err = fmt.Errorf("bitlink %q has no code", b.ID)
			}
			r.queue = append(r.queue, it)
		}
	}
	return r.pop(), nil
}

// kuttLink is the part of Kutt's link object the import reads
// (thedevs-network/kutt docs/api/api.js, sanitize.link).
type kuttLink struct {
	Address  string  `json:"address"`
	Target   string  `json:"target"`
	Password bool    `json:"password"`
	Banned   bool    `json:"banned"`
	ExpireIn *string `json:"expire_in"`
}

type kuttAPIReader struct {
	*apiSource
	skip int
	done bool
}

const kuttPage = 100

func (r *kuttAPIReader) next() (item, error) {
	for len(r.queue) == 0 {
		if r.done {
			return item{}, io.EOF
		}
		var p struct {
			Total int        `json:"total"`
			Data  []kuttLink `json:"data"`
		}
		if err := r.get("api/v2/links?limit="+strconv.Itoa(kuttPage)+"&skip="+strconv.Itoa(r.skip), &p); err != nil {
			return item{}, err
		}
		r.skip += len(p.Data)
		r.done = len(p.Data) == 0 || r.skip >= p.Total
		for _, k := range p.Data {
			it := item{create: client.CreateLink{URL: k.Target, Code: k.Address}}
			if k.Banned {
				it.create.Status = client.StatusDisabled
			}
			if k.ExpireIn != nil && *k.ExpireIn != "" {
				at, err := time.Parse(time.RFC3339, *k.ExpireIn)
				if err != nil {
					it.err = fmt.Errorf("expire_in %q: %v", *k.ExpireIn, err)
				}
				it.create.ExpiresAt = &at
			}
			if k.Password {
				it.err = fmt.Errorf("kutt link %q is password-protected, which a linkpop redirect cannot ask for", k.Address)
			}
			r.queue = append(r.queue, it)
		}
	}
	return r.pop(), nil
}
