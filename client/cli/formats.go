package cli

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/linkpop/linkpop/client"
)

// Import formats.
const (
	FormatJSONL  = "jsonl"  // linkpop's export: one link object (or create body) a line
	FormatCSV    = "csv"    // code,url[,tags,expires_at,redirect]; tags split on '|'
	FormatShlink = "shlink" // Shlink's short-URL CSV export
	FormatYOURLS = "yourls" // YOURLS: a CSV or SQL dump of the url table, or the Import-Export plugin's CSV
	FormatBitly  = "bitly"  // Bitly's CSV export (header aliases)
	FormatGolink = "golink" // golink's /.export JSON lines snapshot
)

// Formats lists the import formats: files, then the API sources
// (sources.go).
var Formats = []string{FormatJSONL, FormatCSV, FormatShlink, FormatYOURLS, FormatBitly, FormatGolink, FormatBitlyAPI, FormatKuttAPI}

// item is one link read from an import file: the create to send, and the
// line it came from. A parse error is reported for the line and never
// stops the import. A disabled link of a linkpop export is created
// disabled (create.Status), in one commit.
type item struct {
	line   int
	create client.CreateLink
	err    error
}

// reader yields the items of an import file one at a time (constant
// memory): next returns io.EOF at the end.
type reader interface {
	next() (item, error)
}

func newReader(format string, r io.Reader) (reader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	switch format {
	case FormatJSONL:
		return &jsonlReader{sc: newScanner(br)}, nil
	case FormatGolink:
		return &golinkReader{jsonlReader{sc: newScanner(br)}}, nil
	case FormatCSV, FormatShlink, FormatBitly:
		return newCSVReader(format, br)
	case FormatYOURLS:
		b, err := br.Peek(16)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		head := strings.ToUpper(strings.TrimLeft(string(b), " \t\r\n"))
		if strings.HasPrefix(head, "INSERT") || strings.HasPrefix(head, "--") || strings.HasPrefix(head, "/*") ||
			strings.HasPrefix(head, "SET ") || strings.HasPrefix(head, "CREATE") || strings.HasPrefix(head, "DROP") || strings.HasPrefix(head, "LOCK") {
			return &yourlsSQLReader{sc: newScanner(br)}, nil
		}
		return newCSVReader(format, br)
	}
	return nil, fmt.Errorf("unknown format %q (want one of %s)", format, strings.Join(Formats, ", "))
}

func newScanner(r io.Reader) *bufio.Scanner {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	return sc
}

type jsonlReader struct {
	sc   *bufio.Scanner
	line int
}

func (r *jsonlReader) nextLine() ([]byte, error) {
	for r.sc.Scan() {
		r.line++
		b := r.sc.Bytes()
		if len(strings.TrimSpace(string(b))) == 0 {
			continue
		}
		return b, nil
	}
	if err := r.sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %w", r.line+1, err)
	}
	return nil, io.EOF
}

func (r *jsonlReader) next() (item, error) {
	b, err := r.nextLine()
	if err != nil {
		return item{}, err
	}
	// A line is a link object or a create body, which is a link object's
	// subset: both decode as client.Link (short_url, revision and the
	// times are not sent back).
	var j client.Link
	if err := json.Unmarshal(b, &j); err != nil {
		return item{line: r.line, err: fmt.Errorf("not a JSON link object: %v", err)}, nil
	}
	if j.MaxVisits != nil && *j.MaxVisits == 0 {
		j.MaxVisits = nil
	}
	it := item{line: r.line, create: client.CreateLink{URL: j.URL, Code: j.Code, Redirect: j.Redirect, ExpiresAt: j.ExpiresAt, Tags: j.Tags, MaxVisits: j.MaxVisits}}
	switch j.Status {
	case "", client.StatusActive:
	case client.StatusDisabled:
		it.create.Status = client.StatusDisabled
	default:
		it.err = fmt.Errorf("status %q is neither active nor disabled", j.Status)
	}
	return it, nil
}

// golinkReader reads golink's snapshot: {"Short","Long","Created",...}.
// Long may be a Go template ({{...}}): such links cannot redirect
// statically and are refused per line.
type golinkReader struct{ jsonlReader }

func (r *golinkReader) next() (item, error) {
	b, err := r.nextLine()
	if err != nil {
		return item{}, err
	}
	var g struct {
		Short string
		Long  string
	}
	if err := json.Unmarshal(b, &g); err != nil {
		return item{line: r.line, err: fmt.Errorf("not a golink record: %v", err)}, nil
	}
	it := item{line: r.line, create: client.CreateLink{URL: g.Long, Code: g.Short}}
	if strings.Contains(g.Long, "{{") {
		it.err = fmt.Errorf("golink %q is a template (%s), which a static redirect cannot express", g.Short, g.Long)
	}
	return it, nil
}

// csvReader reads the CSV formats by header name (case and spaces
// ignored), so columns may come in any order; a plain csv file may also
// have no header (code,url[,tags,expires_at,redirect]).
type csvReader struct {
	format  string
	r       *csv.Reader
	cols    map[string]int
	line    int
	pending []string // a first line that was data, not a header
}

// Header aliases, lower-case without spaces or underscores.
var (
	aliasCode     = []string{"code", "shortcode", "keyword", "custombitlink", "customlink", "source", "backhalf", "short"}
	aliasShortURL = []string{"shorturl", "bitlink", "link", "shortlink"}
	aliasURL      = []string{"url", "longurl", "destinationurl", "originalurl", "target", "long", "destination"}
	aliasTags     = []string{"tags", "tag"}
	aliasExpires  = []string{"expiresat", "expires", "validuntil"}
	aliasRedirect = []string{"redirect", "redirecttype", "status"}
)

func normHeader(h string) string {
	h = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
	return strings.NewReplacer(" ", "", "_", "", "-", "").Replace(h)
}

func newCSVReader(format string, r io.Reader) (*csvReader, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.LazyQuotes = true
	cr.ReuseRecord = false
	c := &csvReader{format: format, r: cr, cols: map[string]int{}}
	head, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("line 1: %w", err)
	}
	c.line = 1
	for i, h := range head {
		c.cols[normHeader(h)] = i
	}
	if c.col(aliasURL) < 0 {
		switch format {
		case FormatCSV:
			// No header: code,url[,tags,expires_at,redirect].
			c.cols = map[string]int{"code": 0, "url": 1, "tags": 2, "expiresat": 3, "redirect": 4}
			c.pending = head
		case FormatYOURLS:
			// A headerless dump of yourls_url: keyword,url,title,timestamp,ip,clicks.
			c.cols = map[string]int{"keyword": 0, "url": 1}
			c.pending = head
		default:
			return nil, fmt.Errorf("line 1: no column with the target URL (looked for %s)", strings.Join(aliasURL, ", "))
		}
	}
	return c, nil
}

func (c *csvReader) col(aliases []string) int {
	for _, a := range aliases {
		if i, ok := c.cols[a]; ok {
			return i
		}
	}
	return -1
}

func field(rec []string, i int) string {
	if i < 0 || i >= len(rec) {
		return ""
	}
	return strings.TrimSpace(rec[i])
}

func (c *csvReader) next() (item, error) {
	var rec []string
	if c.pending != nil {
		rec, c.pending = c.pending, nil
	} else {
		var err error
		rec, err = c.r.Read()
		if errors.Is(err, io.EOF) {
			return item{}, io.EOF
		}
		line, _ := c.r.FieldPos(0)
		c.line = line
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return item{line: pe.Line, err: err}, nil
			}
			return item{}, err
		}
	}
	if c.line == 0 {
		c.line = 1
	}
	it := item{line: c.line}
	it.create.URL = field(rec, c.col(aliasURL))
	code := field(rec, c.col(aliasCode))
	if code == "" {
		code = codeFromShortURL(field(rec, c.col(aliasShortURL)))
	}
	if c.format == FormatYOURLS {
		code = strings.Trim(code, "/") // the Import-Export plugin writes /keyword/
	}
	if c.format == FormatBitly && strings.Contains(code, "/") {
		code = codeFromShortURL(code) // Custom Link may be a whole URL
	}
	it.create.Code = code
	if t := field(rec, c.col(aliasTags)); t != "" {
		it.create.Tags = strings.FieldsFunc(t, func(r rune) bool { return r == '|' || (c.format != FormatCSV && r == ',') })
		for i := range it.create.Tags {
			it.create.Tags[i] = strings.TrimSpace(it.create.Tags[i])
		}
	}
	if c.format == FormatCSV {
		if e := field(rec, c.col(aliasExpires)); e != "" {
			t, err := time.Parse(time.RFC3339, e)
			if err != nil {
				it.err = fmt.Errorf("expires_at %q is not RFC 3339", e)
				return it, nil
			}
			it.create.ExpiresAt = &t
		}
		if rd := field(rec, c.col(aliasRedirect)); rd != "" {
			n, err := strconv.Atoi(rd)
			if err != nil {
				it.err = fmt.Errorf("redirect %q is not a number", rd)
				return it, nil
			}
			it.create.Redirect = n
		}
	}
	if it.create.URL == "" {
		it.err = errors.New("no target URL on this line")
	}
	return it, nil
}

// codeFromShortURL is the path of a short URL ("https://bit.ly/abc" ->
// "abc"), or "" when it is not one.
func codeFromShortURL(s string) string {
	if s == "" {
		return ""
	}
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return ""
	}
	return strings.Trim(u.Path, "/")
}

// yourlsSQLReader reads INSERT statements of a mysqldump of yourls_url:
// VALUES ('keyword','url','title','timestamp','ip',clicks),(...);
// Statements for other tables are skipped.
type yourlsSQLReader struct {
	sc      *bufio.Scanner
	line    int
	pending [][]string
	pline   int
}

var insertURL = regexp.MustCompile("(?i)^\\s*INSERT\\s+INTO\\s+`?(\\w*)`?")

func (r *yourlsSQLReader) next() (item, error) {
	for len(r.pending) == 0 {
		if !r.sc.Scan() {
			if err := r.sc.Err(); err != nil {
				return item{}, err
			}
			return item{}, io.EOF
		}
		r.line++
		s := r.sc.Text()
		m := insertURL.FindStringSubmatch(s)
		if m == nil || !strings.HasSuffix(strings.ToLower(m[1]), "url") {
			continue
		}
		i := indexFold(s, "VALUES")
		if i < 0 {
			continue
		}
		tuples, err := sqlTuples(s[i+len("VALUES"):])
		if err != nil {
			return item{line: r.line, err: err}, nil
		}
		r.pending, r.pline = tuples, r.line
	}
	t := r.pending[0]
	r.pending = r.pending[1:]
	it := item{line: r.pline}
	if len(t) < 2 {
		it.err = fmt.Errorf("a yourls_url row has %d values, want keyword, url, ...", len(t))
		return it, nil
	}
	it.create = client.CreateLink{Code: t[0], URL: t[1]}
	return it, nil
}

// indexFold is strings.Index ignoring ASCII case, byte offsets kept
// (strings.ToUpper would change them for invalid UTF-8).
func indexFold(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return i
		}
	}
	return -1
}

// sqlTuples parses "('a','b',1),('c','d',2);" into its values.
func sqlTuples(s string) ([][]string, error) {
	var out [][]string
	var cur []string
	var val strings.Builder
	in, quoted, inTuple := false, false, false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case in:
			switch {
			case ch == '\\' && i+1 < len(s):
				i++
				switch s[i] {
				case 'n':
					val.WriteByte('\n')
				case 'r':
					val.WriteByte('\r')
				case 't':
					val.WriteByte('\t')
				case '0':
					val.WriteByte(0)
				default:
					val.WriteByte(s[i])
				}
			case ch == '\'' && i+1 < len(s) && s[i+1] == '\'':
				val.WriteByte('\'')
				i++
			case ch == '\'':
				in = false
			default:
				val.WriteByte(ch)
			}
		case ch == '(' && !inTuple:
			inTuple, cur = true, nil
			val.Reset()
		case !inTuple:
			// between tuples: ',' ';' spaces
		case ch == '\'':
			in, quoted = true, true
		case ch == ',' || ch == ')':
			v := strings.TrimSpace(val.String())
			if !quoted && strings.EqualFold(v, "NULL") {
				v = ""
			}
			cur = append(cur, v)
			val.Reset()
			quoted = false
			if ch == ')' {
				out = append(out, cur)
				inTuple = false
			}
		default:
			val.WriteByte(ch)
		}
	}
	if in || inTuple {
		return out, errors.New("unterminated VALUES tuple")
	}
	return out, nil
}
