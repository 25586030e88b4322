package edge

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/linkpop/linkpop/link"
)

// The hot set: the codes of the hot cache, most requested first by hit
// counts halved every WarmSaveInterval (replica.HotCodes, DecayHot),
// saved in DataDir/hotset every WarmSaveInterval and when the edge
// stops, and loaded into the hot cache when it starts, so a
// restarted edge serves from memory from its first requests. A fresh edge
// (no hot set of its own) takes a ready peer's from its admin GET
// /hotset. The file is "linkpop-hotset 1 <count> <crc32c of the rest>\n"
// then one code a line; a file that does not check is ignored.

const (
	hotSetFile   = "hotset"
	hotSetMagic  = "linkpop-hotset 1"
	peerHotSetIn = 2 * time.Second // how long a fresh edge looks for a peer
	warmPoll     = 50 * time.Millisecond
)

var errHotSet = errors.New("hot set file does not check")

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// hotSetClient fetches a peer's hot set; no connection outlives a fetch,
// so none holds the peer's admin listener open when it shuts down.
var hotSetClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// encodeHotSet is the hot set file's content for codes.
func encodeHotSet(codes []string) []byte {
	body := []byte(strings.Join(codes, "\n"))
	if len(codes) > 0 {
		body = append(body, '\n')
	}
	head := fmt.Sprintf("%s %d %08x\n", hotSetMagic, len(codes), crc32.Checksum(body, crcTable))
	return append([]byte(head), body...)
}

// decodeHotSet parses a hot set file, checking count, checksum and codes.
func decodeHotSet(b []byte) ([]string, error) {
	head, body, ok := bytes.Cut(b, []byte("\n"))
	if !ok {
		return nil, errHotSet
	}
	f := strings.Fields(string(head))
	if len(f) != 4 || f[0]+" "+f[1] != hotSetMagic {
		return nil, errHotSet
	}
	n, err1 := strconv.Atoi(f[2])
	sum, err2 := strconv.ParseUint(f[3], 16, 32)
	if err1 != nil || err2 != nil || n < 0 || uint32(sum) != crc32.Checksum(body, crcTable) {
		return nil, errHotSet
	}
	codes := make([]string, 0, n)
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		if !link.ValidCode(sc.Text()) {
			return nil, errHotSet
		}
		codes = append(codes, sc.Text())
	}
	if len(codes) != n {
		return nil, errHotSet
	}
	return codes, nil
}

// saveHotSet writes the hot set file atomically (temporary file, sync,
// rename).
func (s *Server) saveHotSet() error {
	rep := s.rep.Load()
	if rep == nil || s.cfg.WarmEntries <= 0 {
		return nil
	}
	path := filepath.Join(s.cfg.DataDir, hotSetFile)
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("save hot set: %w", err)
	}
	_, err = f.Write(encodeHotSet(rep.HotCodes(s.cfg.WarmEntries)))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("save hot set: %w", err)
	}
	return nil
}

// loadHotSet reads this edge's hot set file; nil if there is none or it
// does not check.
func (s *Server) loadHotSet() []string {
	b, err := os.ReadFile(filepath.Join(s.cfg.DataDir, hotSetFile))
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("read hot set", "err", err)
		}
		return nil
	}
	codes, err := decodeHotSet(b)
	if err != nil {
		s.log.Warn("hot set ignored", "err", err)
		return nil
	}
	return codes
}

// peerHotSet fetches the hot set of a ready peer seen through gossip,
// looking for one for at most peerHotSetIn.
func (s *Server) peerHotSet(ctx context.Context) []string {
	ctx, cancel := context.WithTimeout(ctx, peerHotSetIn)
	defer cancel()
	for {
		if g := s.gossip.Load(); g != nil {
			for _, m := range g.members() {
				if m.Self || !m.Ready || m.AdminAddr == "" {
					continue
				}
				codes, err := fetchHotSet(ctx, m.AdminAddr, s.cfg.WarmEntries)
				if err == nil {
					s.log.Info("hot set from peer", "peer", m.Name, "codes", len(codes))
					return codes
				}
				s.log.Info("peer hot set", "peer", m.Name, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(warmPoll):
		}
	}
}

func fetchHotSet(ctx context.Context, admin string, n int) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/hotset?n="+strconv.Itoa(n), nil)
	if err != nil {
		return nil, err
	}
	resp, err := hotSetClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /hotset: %s", resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, int64(n)*(link.MaxCodeLen+1)+128))
	if err != nil {
		return nil, err
	}
	return decodeHotSet(b)
}

// adminHotSet is GET /hotset[?n=N]: the hot set file's format, at most
// WarmEntries (or n) codes.
func (s *Server) adminHotSet(ctx *fasthttp.RequestCtx) {
	rep := s.rep.Load()
	n := s.cfg.WarmEntries
	if v := ctx.QueryArgs().Peek("n"); len(v) > 0 {
		if m, err := strconv.Atoi(string(v)); err == nil && m >= 0 && m < n {
			n = m
		}
	}
	if rep == nil || n <= 0 {
		textStatus(ctx, fasthttp.StatusNotFound, bodyNotFound)
		return
	}
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.SetBody(encodeHotSet(rep.HotCodes(n)))
}

// warmFromFile loads the edge's own hot set into the hot cache, for at
// most WarmTimeout. Run calls it before it serves when the replica holds
// a position (a restart); it reports whether there was a hot set.
func (s *Server) warmFromFile(ctx context.Context) bool {
	if s.cfg.WarmEntries <= 0 {
		return false
	}
	start := time.Now()
	codes := s.loadHotSet()
	if codes == nil {
		return false
	}
	s.warmCodes(ctx, codes, "file", start)
	return true
}

func (s *Server) warmCodes(ctx context.Context, codes []string, from string, start time.Time) {
	wctx, cancel := context.WithTimeout(ctx, s.cfg.WarmTimeout)
	n, err := s.warm(wctx, codes)
	cancel()
	if err != nil {
		s.log.Warn("warm hot cache", "err", err)
	}
	s.log.Info("hot cache warmed", "from", from, "codes", len(codes), "loaded", n, "took", time.Since(start))
}

// runWarm, for an edge that was not warmed from its own hot set and has
// gossip peers, takes a ready peer's hot set once the replica is
// bootstrapped and loads it, for at most WarmTimeout; the edge is not
// ready until it is done. Then it saves the hot set every
// WarmSaveInterval until ctx is done, and once more when it is.
func (s *Server) runWarm(ctx context.Context) {
	defer s.warmed.Store(true)
	if s.cfg.WarmEntries <= 0 {
		return
	}
	if !s.warmed.Load() {
		for !s.health(time.Now()).bootstrapped {
			select {
			case <-ctx.Done():
				return
			case <-time.After(warmPoll):
			}
		}
		start := time.Now()
		if codes := s.peerHotSet(ctx); codes != nil {
			s.warmCodes(ctx, codes, "peer", start)
		}
		s.warmed.Store(true)
	}

	t := time.NewTicker(s.cfg.WarmSaveInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := s.saveHotSet(); err != nil {
				s.log.Warn("hot set", "err", err)
			}
			return
		case <-t.C:
			if err := s.saveHotSet(); err != nil {
				s.log.Warn("hot set", "err", err)
			}
			// Hit counts halve every interval: the hot set ranks codes
			// by their recent requests.
			if rep := s.rep.Load(); rep != nil {
				rep.DecayHot()
			}
		}
	}
}

// warm loads codes into the replica's hot cache.
func (s *Server) warm(ctx context.Context, codes []string) (int, error) {
	rep := s.rep.Load()
	if rep == nil || len(codes) == 0 {
		return 0, nil
	}
	return rep.Warm(ctx, codes)
}
