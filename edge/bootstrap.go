package edge

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Peer bootstrap. A fresh edge (no DataDir/replica yet) with PeerSecret
// and GossipJoin joins its PoP's gossip with a short-lived probe member
// before it opens its replica, picks the ready peers that announce an
// admin address, most caught up first, and asks one for GET /checkpoint
// on its admin listener. The peer takes a Pebble checkpoint of its
// replica (replica.Checkpoint: hard links and a WAL copy, so it keeps
// serving and applying while it ships) and streams its files:
//
//	linkpop-checkpoint 1\n
//	F <name> <size>\n <size bytes> <sha256 of the file, hex>\n   (per file)
//	E <files> <sha256 of every line of the stream before this one, hex>\n
//
// The end sum covers the header, every F line and every file's sum line,
// so it covers names, sizes and (through their sums) contents, and every
// byte is hashed once on each side: at 10M links (1.3 GB) hashing the
// files twice cost more than a second on each side.
//
// The edge writes the files into DataDir/replica.boot, checks every
// file's sum and the final one, syncs, and renames the directory to
// DataDir/replica; Run then opens it as usual, and the consumer resumes
// the stream after the position the checkpoint holds ("m/position" is in
// the store). A transfer that fails in any way (peer gone, refused,
// short, a sum that does not match) is discarded whole and the next
// attempt starts from scratch, with the next peer; after
// bootstrapAttempts failures, or when no ready peer shows up within
// bootstrapFind, the edge replays the stream as an edge without peers
// does. Nothing half-written is ever opened: the replica directory only
// appears complete.

const (
	bootstrapDir      = "replica.boot"
	checkpointMagic   = "linkpop-checkpoint 1"
	bootstrapFind     = 5 * time.Second  // how long a fresh edge looks for a ready peer
	bootstrapAttempts = 3                // transfers tried before replaying
	shipIOTimeout     = 30 * time.Second // per read or write of a transfer
	probeLeaveWait    = 200 * time.Millisecond
	minPeerSecret     = 16
	maxCheckpointLine = 512
)

// Errors of peer bootstrap.
var (
	errCheckpoint     = errors.New("checkpoint stream does not check")
	errPeerRefused    = errors.New("peer refused the checkpoint")
	errNoPeerSecret   = errors.New("peer bootstrap off: no peer secret configured")
	errBadPeerSecret  = errors.New("wrong or missing peer secret")
	errShipInProgress = errors.New("a checkpoint is already being shipped")
)

// corruptShips, set only by tests (export_test.go), flips one byte of
// every file this process ships after its sum was taken.
var corruptShips atomic.Bool

// bootstrapClient fetches checkpoints; each transfer has its own
// connection, closed with it.
var bootstrapClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, ResponseHeaderTimeout: shipIOTimeout}}

// peerBootstrap is Run's first step: for a fresh edge that can ask peers,
// it tries to install a peer's checkpoint as DataDir/replica. It never
// fails Run: without a checkpoint the edge replays the stream.
func (s *Server) peerBootstrap(ctx context.Context) {
	cfg := &s.cfg
	if len(cfg.PeerSecret) == 0 || cfg.GossipBind == "" || len(cfg.GossipJoin) == 0 {
		return
	}
	dst := filepath.Join(cfg.DataDir, "replica")
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		return // a replica exists (or cannot be looked at): Open decides
	}
	start := time.Now()
	log := s.log.With("component", "bootstrap")
	peers, leave := s.bootstrapPeers(ctx, log)
	// The probe leaves the PoP (which waits for the leave broadcast)
	// while the transfer runs.
	var leaving sync.WaitGroup
	leaving.Go(leave)
	defer leaving.Wait()
	if len(peers) == 0 {
		log.Info("no ready peer to bootstrap from; replaying the stream", "looked_for", time.Since(start))
		s.bootstrapped("none", 0)
		return
	}
	found := time.Since(start)
	for i := range bootstrapAttempts {
		m := peers[i%len(peers)]
		n, err := s.fetchCheckpoint(ctx, m.AdminAddr, dst)
		if err == nil {
			log.Info("replica bootstrapped from peer", "peer", m.Name, "peer_applied", m.Applied,
				"bytes", n, "peer_found_in", found, "took", time.Since(start))
			s.bootstrapped("peer", time.Since(start))
			return
		}
		log.Warn("peer bootstrap failed; transfer discarded", "peer", m.Name, "attempt", i+1, "err", err)
		if ctx.Err() != nil {
			break
		}
	}
	log.Warn("peer bootstrap gave up; replaying the stream", "attempts", bootstrapAttempts)
	s.bootstrapped("failed", 0)
}

// bootstrapPeers joins the PoP with a probe member (it announces itself
// not ready, so no peer counts it) and returns the ready peers with an
// admin address, most caught up first, as soon as there is one, or none
// after bootstrapFind, and a function that makes the probe leave.
func (s *Server) bootstrapPeers(ctx context.Context, log interface {
	Info(string, ...any)
}) (peers []Member, leave func()) {
	leave = func() {}
	cfg := &s.cfg
	host, _, err := net.SplitHostPort(cfg.GossipBind)
	if err != nil {
		return nil, leave
	}
	var id [6]byte
	_, _ = rand.Read(id[:])
	name := "bootstrap-" + hex.EncodeToString(id[:])
	if cfg.NodeName != "" {
		name = cfg.NodeName + "/bootstrap"
	}
	g, err := startGossip(name, net.JoinHostPort(host, "0"), cfg.GossipKeys, nodeMeta{}, s.log.With("component", "bootstrap-gossip"))
	if err != nil {
		log.Info("bootstrap probe", "err", err)
		return nil, leave
	}
	// A probe's leave waits less than a member's: peers that miss it
	// see it fail, which costs nothing, as it was never ready.
	leave = func() {
		_ = g.list.Leave(probeLeaveWait)
		_ = g.list.Shutdown()
	}
	ctx, cancel := context.WithTimeout(ctx, bootstrapFind)
	defer cancel()
	for {
		if g.list.NumMembers() < 2 {
			_, _ = g.list.Join(cfg.GossipJoin)
		}
		var ready []Member
		for _, m := range g.members() {
			if !m.Self && m.Ready && m.AdminAddr != "" {
				ready = append(ready, m)
			}
		}
		if len(ready) > 0 {
			slices.SortStableFunc(ready, func(a, b Member) int {
				switch {
				case a.Applied > b.Applied:
					return -1
				case a.Applied < b.Applied:
					return 1
				}
				return 0
			})
			return ready, leave
		}
		select {
		case <-ctx.Done():
			return nil, leave
		case <-time.After(warmPoll):
		}
	}
}

// fetchCheckpoint streams a peer's checkpoint into DataDir/replica.boot
// and, once every sum checked, renames it to dst. Whatever it fails on,
// the partial directory is removed.
func (s *Server) fetchCheckpoint(ctx context.Context, admin, dst string) (n int64, err error) {
	tmp := filepath.Join(s.cfg.DataDir, bootstrapDir)
	if err := os.RemoveAll(tmp); err != nil { // a leftover of a killed attempt
		return 0, err
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(tmp)
		}
	}()
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/checkpoint", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+string(s.cfg.PeerSecret))
	resp, err := bootstrapClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, fmt.Errorf("%w: %s %s", errPeerRefused, resp.Status, strings.TrimSpace(string(b)))
	}
	if n, err = readCheckpoint(resp.Body, tmp); err != nil {
		return n, err
	}
	if err := syncDir(tmp); err != nil {
		return n, err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return n, err
	}
	return n, syncDir(s.cfg.DataDir)
}

// readCheckpoint reads the checkpoint stream into dir (which exists and
// is empty) and returns the bytes of files written.
func readCheckpoint(r io.Reader, dir string) (int64, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	line := func() (string, error) {
		l, err := br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, bufio.ErrBufferFull) {
				return "", fmt.Errorf("%w: truncated or overlong line", errCheckpoint)
			}
			return "", err
		}
		if len(l) > maxCheckpointLine {
			return "", fmt.Errorf("%w: overlong line", errCheckpoint)
		}
		return strings.TrimSuffix(string(l), "\n"), nil
	}
	all := sha256.New()
	if l, err := line(); err != nil {
		return 0, err
	} else if l != checkpointMagic {
		return 0, fmt.Errorf("%w: header %q", errCheckpoint, l)
	}
	all.Write([]byte(checkpointMagic + "\n"))
	var total int64
	files := 0
	seen := map[string]bool{}
	for {
		l, err := line()
		if err != nil {
			return total, err
		}
		f := strings.Fields(l)
		if len(f) == 3 && f[0] == "E" {
			want, err := strconv.Atoi(f[1])
			if err != nil || want != files || f[2] != hex.EncodeToString(all.Sum(nil)) {
				return total, fmt.Errorf("%w: end %q after %d files", errCheckpoint, l, files)
			}
			if files == 0 {
				return total, fmt.Errorf("%w: no files", errCheckpoint)
			}
			return total, nil
		}
		if len(f) != 3 || f[0] != "F" {
			return total, fmt.Errorf("%w: line %q", errCheckpoint, l)
		}
		name := f[1]
		size, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil || size < 0 || !validCheckpointName(name) || seen[name] {
			return total, fmt.Errorf("%w: file %q", errCheckpoint, l)
		}
		seen[name] = true
		all.Write([]byte(l + "\n"))
		sum, err := receiveFile(br, filepath.Join(dir, name), size)
		total += size
		if err != nil {
			return total, err
		}
		l, err = line()
		if err != nil {
			return total, err
		}
		if l != hex.EncodeToString(sum) {
			return total, fmt.Errorf("%w: sha256 of %s", errCheckpoint, name)
		}
		all.Write([]byte(l + "\n"))
		files++
	}
}

// validCheckpointName accepts a plain file name, nothing that could
// leave the directory.
func validCheckpointName(name string) bool {
	return name != "" && name != "." && name != ".." && filepath.Base(name) == name &&
		!strings.ContainsAny(name, `/\`) && len(name) <= 255
}

func receiveFile(r io.Reader, path string, size int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	n, err := io.CopyN(io.MultiWriter(f, h), r, size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if n < size && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
			err = fmt.Errorf("%w: %s cut at %d of %d bytes", errCheckpoint, filepath.Base(path), n, size)
		}
		return nil, err
	}
	return h.Sum(nil), nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	return errors.Join(err, d.Close())
}

// shipping is held while this edge ships a checkpoint: one at a time.
var shipping sync.Map // *Server -> struct{}

// adminCheckpoint is GET /checkpoint: with the fleet secret as a bearer
// token, the replica's checkpoint in the stream format above. 403
// without a configured secret, 401 with a wrong one, 409 while another
// ship runs. The connection is taken over (hijacked) for the transfer, so
// the admin listener's 5 s write timeout does not cut a large replica;
// every write has shipIOTimeout instead.
func (s *Server) adminCheckpoint(ctx *fasthttp.RequestCtx) {
	if len(s.cfg.PeerSecret) == 0 {
		s.writeAdminJSON(ctx, fasthttp.StatusForbidden, map[string]string{"error": errNoPeerSecret.Error()})
		return
	}
	tok, ok := strings.CutPrefix(string(ctx.Request.Header.Peek("Authorization")), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(tok), s.cfg.PeerSecret) != 1 {
		s.log.Warn("checkpoint refused: wrong peer secret", "from", ctx.RemoteAddr().String())
		s.writeAdminJSON(ctx, fasthttp.StatusUnauthorized, map[string]string{"error": errBadPeerSecret.Error()})
		return
	}
	rep := s.rep.Load()
	if rep == nil {
		s.adminError(ctx, ErrNotRunning)
		return
	}
	if _, busy := shipping.LoadOrStore(s, struct{}{}); busy {
		s.writeAdminJSON(ctx, fasthttp.StatusConflict, map[string]string{"error": errShipInProgress.Error()})
		return
	}
	// Checkpoints left by a ship this process did not finish (it was
	// killed) go first; none is in use, as one ship runs at a time.
	if old, _ := filepath.Glob(filepath.Join(s.cfg.DataDir, "checkpoint-*")); len(old) > 0 {
		for _, d := range old {
			_ = os.RemoveAll(d)
		}
	}
	var id [6]byte
	_, _ = rand.Read(id[:])
	dir := filepath.Join(s.cfg.DataDir, "checkpoint-"+hex.EncodeToString(id[:]))
	start := time.Now()
	if err := rep.Checkpoint(dir); err != nil {
		shipping.Delete(s)
		_ = os.RemoveAll(dir)
		s.adminError(ctx, err)
		return
	}
	applied := rep.Stats().Position
	ops := s.ops
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		defer shipping.Delete(s)
		defer os.RemoveAll(dir)
		stop := context.AfterFunc(ops, func() { _ = c.Close() })
		defer stop()
		n, err := shipCheckpoint(c, dir)
		if err != nil {
			s.log.Warn("checkpoint ship failed", "to", c.RemoteAddr().String(), "bytes", n, "err", err)
			return
		}
		s.log.Info("checkpoint shipped", "to", c.RemoteAddr().String(), "bytes", n, "position_at_least", applied,
			"took", time.Since(start))
	})
}

// deadlineWriter sets a fresh write deadline before every write.
type deadlineWriter struct{ c net.Conn }

func (w deadlineWriter) Write(p []byte) (int, error) {
	_ = w.c.SetWriteDeadline(time.Now().Add(shipIOTimeout))
	return w.c.Write(p)
}

// shipCheckpoint writes the HTTP response head and the checkpoint
// stream of dir's files to c.
func shipCheckpoint(c net.Conn, dir string) (int64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	w := bufio.NewWriterSize(deadlineWriter{c}, 256<<10)
	fmt.Fprint(w, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n")
	all := sha256.New()
	hw := io.MultiWriter(w, all) // the lines: all of the stream but the files' bytes and the end line
	fmt.Fprintf(hw, "%s\n", checkpointMagic)
	var total int64
	files := 0
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		n, err := shipFile(hw, w, filepath.Join(dir, e.Name()))
		total += n
		if err != nil {
			return total, err
		}
		files++
	}
	fmt.Fprintf(w, "E %d %s\n", files, hex.EncodeToString(all.Sum(nil)))
	return total, w.Flush()
}

// shipFile writes path's F line and sum line to lines and its bytes to
// data (the same stream, without the end sum's hash).
func shipFile(lines, data io.Writer, path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := st.Size()
	fmt.Fprintf(lines, "F %s %d\n", filepath.Base(path), size)
	h := sha256.New()
	out := data
	if corruptShips.Load() {
		out = &flipWriter{w: data}
	}
	n, err := io.CopyN(io.MultiWriter(out, h), f, size)
	if err != nil {
		return n, err
	}
	_, err = fmt.Fprintf(lines, "%s\n", hex.EncodeToString(h.Sum(nil)))
	return n, err
}

// flipWriter flips the first byte written through it (tests only).
type flipWriter struct {
	w       io.Writer
	flipped bool
}

func (f *flipWriter) Write(p []byte) (int, error) {
	if !f.flipped && len(p) > 0 {
		q := slices.Clone(p)
		q[0] ^= 0xff
		f.flipped = true
		return f.w.Write(q)
	}
	return f.w.Write(p)
}

// bootstrapped counts how a fresh edge got its replica ("peer", "failed":
// replayed after failed transfers, "none": no ready peer) and how long a
// peer transfer took.
func (s *Server) bootstrapped(result string, took time.Duration) {
	s.cfg.Metrics.GetOrCreateCounter(`linkpop_edge_peer_bootstrap_total{result="` + result + `"}`).Inc()
	if result == "peer" {
		s.cfg.Metrics.GetOrCreateGauge("linkpop_edge_peer_bootstrap_seconds", nil).Set(took.Seconds())
	}
}
