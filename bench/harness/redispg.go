package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// redisPG is the reference architecture running: the bench/cmd/redispg
// app, Redis and PostgreSQL, each a child process on loopback with its
// data in WorkDir.
type redisPG struct {
	app, redis, pg  *proc
	addr, redisAddr string
	pgDir           string
}

// server is the system as the redirect section measures it.
func (rp *redisPG) server() *server {
	return &server{name: SysRedisPG, addr: rp.addr, p: rp.app, stopSig: syscall.SIGTERM, sys: rp}
}

// redisPGTools finds redis-server and PostgreSQL's initdb and postgres
// (Debian keeps them in /usr/lib/postgresql/<version>/bin, outside PATH).
func redisPGTools() (redisServer, initdb, postgres string, err error) {
	redisServer = lookPath("redis-server")
	initdb, postgres = lookPath("initdb"), lookPath("postgres")
	if initdb == "" || postgres == "" {
		dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
		sort.Strings(dirs)
		for i := len(dirs) - 1; i >= 0; i-- { // the newest version
			if _, err := os.Stat(filepath.Join(dirs[i], "postgres")); err == nil {
				initdb, postgres = filepath.Join(dirs[i], "initdb"), filepath.Join(dirs[i], "postgres")
				break
			}
		}
	}
	var missing []string
	if redisServer == "" {
		missing = append(missing, "redis-server")
	}
	if initdb == "" || postgres == "" {
		missing = append(missing, "postgresql (initdb, postgres)")
	}
	if len(missing) > 0 {
		return "", "", "", fmt.Errorf("%s not installed (bench/run.sh and .ci/run install redis-server and postgresql with apt as root)", strings.Join(missing, " and "))
	}
	return redisServer, initdb, postgres, nil
}

// RedisPGAvailable reports why the reference architecture cannot run here
// (redis-server or PostgreSQL missing), or nil.
func RedisPGAvailable() error {
	if _, _, _, err := redisPGTools(); err != nil {
		return err
	}
	_, err := pgCredential()
	return err
}

// pgCredential is who PostgreSQL runs as: it refuses to run as root, so
// under root the Debian package's postgres user (or nobody); nil when the
// harness is not root.
func pgCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
	}
	return nil, fmt.Errorf("running as root and neither a postgres nor a nobody user exists to run PostgreSQL as")
}

// startRedisPG starts PostgreSQL, Redis and the app, loads every link
// into the table with COPY, and returns the running system. Everything
// is pinned to the server core, as every other system is.
func (h *harness) startRedisPG(info *SystemInfo) (*redisPG, error) {
	redisServer, initdb, postgres, err := redisPGTools()
	if err != nil {
		return nil, err
	}
	cred, err := pgCredential()
	if err != nil {
		return nil, err
	}
	h.rep.Machine.Redis = version(redisServer, "--version")
	h.rep.Machine.PostgreSQL = version(postgres, "--version")
	info.Description = fmt.Sprintf("bench/cmd/redispg (Go, fasthttp, go-redis v9, pgx v5): GET → Redis GET → miss: SELECT + SET EX 24h; POST → INSERT, synchronous_commit=on. %s; %s (fsync on). App, Redis and PostgreSQL on the server core",
		h.rep.Machine.Redis, h.rep.Machine.PostgreSQL)
	dir := filepath.Join(h.cfg.WorkDir, "redispg")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// The data directory is a temp directory of its own: the postgres
	// user must own it and reach it, and WorkDir may be private to root.
	pgDir, err := os.MkdirTemp("", "linkpop-bench-pg-")
	if err != nil {
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(pgDir, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(pgDir)
			return nil, err
		}
	}
	begin := time.Now()
	initArgs := []string{"-D", pgDir, "-U", "bench", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"}
	init := exec.Command(initdb, initArgs...)
	init.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if out, err := init.CombinedOutput(); err != nil {
		os.RemoveAll(pgDir)
		return nil, fmt.Errorf("initdb: %v\n%s", err, tailBytes(out, 1500))
	}
	pgAddr, err := freeAddr()
	if err != nil {
		os.RemoveAll(pgDir)
		return nil, err
	}
	_, pgPort, _ := net.SplitHostPort(pgAddr)
	pg, err := h.startAs("postgres", h.cfg.ServerCPU, cred, postgres, "-D", pgDir,
		"-c", "listen_addresses=127.0.0.1", "-c", "port="+pgPort, "-c", "unix_socket_directories=",
		"-c", "max_connections=200", "-c", "synchronous_commit=on", "-c", "fsync=on",
		"-c", "logging_collector=off")
	if err != nil {
		os.RemoveAll(pgDir)
		return nil, err
	}
	rp := &redisPG{pg: pg, pgDir: pgDir}
	if err := waitFor(h.ctx, pg, 2*time.Minute, 10*time.Millisecond, "postgres to listen", func() bool { return dialable(pgAddr) }); err != nil {
		rp.stop()
		return nil, err
	}
	rp.redisAddr, err = freeAddr()
	if err != nil {
		rp.stop()
		return nil, err
	}
	rHost, rPort, _ := net.SplitHostPort(rp.redisAddr)
	rp.redis, err = h.start("redis", h.cfg.ServerCPU, nil, redisServer, "--bind", rHost, "--port", rPort,
		"--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no", "--protected-mode", "no")
	if err != nil {
		rp.stop()
		return nil, err
	}
	if err := waitFor(h.ctx, rp.redis, time.Minute, 10*time.Millisecond, "redis to listen", func() bool { return dialable(rp.redisAddr) }); err != nil {
		rp.stop()
		return nil, err
	}
	// The link table, COPYed by the app before it listens.
	loadFile := filepath.Join(dir, "links.tsv")
	if err := h.writeLinksTSV(loadFile); err != nil {
		rp.stop()
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		rp.stop()
		return nil, err
	}
	appStart := time.Now()
	app, err := h.start(SysRedisPG, h.cfg.ServerCPU, nil, filepath.Join(h.cfg.BinDir, "redispg"), "-listen", addr,
		"-redis", rp.redisAddr, "-pg", "postgres://bench@"+pgAddr+"/postgres?sslmode=disable", "-load", loadFile)
	if err != nil {
		rp.stop()
		return nil, err
	}
	rp.app, rp.addr = app, addr
	if err := waitFor(h.ctx, app, 30*time.Minute, 10*time.Millisecond, "redispg to load and listen", func() bool { return dialable(addr) }); err != nil {
		rp.stop()
		return nil, err
	}
	os.Remove(loadFile)
	info.LoadSeconds = time.Since(begin).Seconds()
	info.StartSeconds = time.Since(appStart).Seconds()
	info.Notes = append(info.Notes, fmt.Sprintf("initdb, PostgreSQL and Redis started and %d links COPYed in %.1f s (the app's COPY and start %.1f s); Redis starts empty and fills on the warm-up walk",
		len(h.data.codes), info.LoadSeconds, info.StartSeconds))
	return rp, nil
}

// writeLinksTSV writes code<TAB>target lines for the app's -load.
func (h *harness) writeLinksTSV(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for i, c := range h.data.codes {
		w.WriteString(c)
		w.WriteByte('\t')
		w.WriteString(h.data.targets[i])
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// pids are the app, Redis and every PostgreSQL process (postmaster,
// backends, WAL writer, checkpointer...): the whole system.
func (rp *redisPG) pids() []int {
	var out []int
	for _, p := range []*proc{rp.app, rp.redis, rp.pg} {
		if p != nil {
			out = append(out, procTree(p.pid())...)
		}
	}
	return out
}

// stop stops the app, then Redis, then PostgreSQL (SIGINT: fast
// shutdown), and removes PostgreSQL's data directory.
func (rp *redisPG) stop() {
	defer os.RemoveAll(rp.pgDir)
	if rp.app != nil {
		rp.app.stop(syscall.SIGTERM, 20*time.Second)
	}
	if rp.redis != nil {
		rp.redis.stop(syscall.SIGTERM, 20*time.Second)
	}
	if rp.pg != nil {
		rp.pg.stop(syscall.SIGINT, 30*time.Second)
	}
}

// flushRedis empties Redis (FLUSHALL over RESP), for the cold-Redis run.
func (rp *redisPG) flushRedis() error {
	c, err := net.DialTimeout("tcp", rp.redisAddr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte("*1\r\n$8\r\nFLUSHALL\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+OK") {
		return fmt.Errorf("FLUSHALL: %q", line)
	}
	return nil
}

// create POSTs one link to the app and returns the answer's status (0
// when there was none).
func (rp *redisPG) create(ctx context.Context, c *http.Client, target string) int {
	body, _ := json.Marshal(map[string]string{"url": target})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+rp.addr+"/v1/links", bytes.NewReader(body))
	if err != nil {
		return 0
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var out struct {
		Code string `json:"code"`
	}
	if json.NewDecoder(resp.Body).Decode(&out) != nil && resp.StatusCode == http.StatusCreated {
		return 0
	}
	if resp.StatusCode == http.StatusCreated && out.Code == "" {
		return 0
	}
	return resp.StatusCode
}
