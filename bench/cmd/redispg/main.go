// Command redispg is the benchmark's reference architecture: the shortener
// the design documents say most teams would build instead of linkpop. An
// app server does cache-aside against Redis in front of PostgreSQL:
//
//   - GET or HEAD /{code}: Redis GET; on a miss SELECT from PostgreSQL and
//     SET the answer in Redis with a TTL; 302 with the target, 404 for an
//     unknown code (not cached: a cache-aside service caches rows it has).
//   - POST /v1/links {"url": "..."}: a random 7-character code, INSERT with
//     synchronous_commit = on (the answer waits for the WAL flush), 201
//     {"code": "...", "url": "..."}.
//
// The harness (bench/harness) starts Redis and PostgreSQL on loopback and
// this server pointed at them; -load fills the table with COPY before
// serving. -http picks the HTTP stack: fasthttp (the default, measured
// the faster of the two) or net/http.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"

	"github.com/linkpop/linkpop/link"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "redispg:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		listen    = flag.String("listen", "127.0.0.1:8095", "address to listen on")
		redisAddr = flag.String("redis", "127.0.0.1:6379", "Redis `host:port`")
		pgDSN     = flag.String("pg", "postgres://bench@127.0.0.1:5432/postgres", "PostgreSQL connection `URL`")
		ttl       = flag.Duration("ttl", 24*time.Hour, "TTL of a link cached in Redis")
		stack     = flag.String("http", "fasthttp", "HTTP stack: fasthttp or net/http")
		load      = flag.String("load", "", "`file` of code<TAB>url lines COPYed into the table before serving")
		redisPool = flag.Int("redis-pool", 256, "Redis connections at most")
		pgPool    = flag.Int("pg-pool", 64, "PostgreSQL connections at most")
	)
	flag.Parse()
	if *stack != "fasthttp" && *stack != "net/http" {
		return fmt.Errorf("-http %q: fasthttp or net/http", *stack)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	pcfg, err := pgxpool.ParseConfig(*pgDSN)
	if err != nil {
		return fmt.Errorf("-pg: %w", err)
	}
	pcfg.MaxConns = int32(*pgPool)
	// The default, stated: a create is acknowledged once its commit is
	// flushed to the WAL on disk.
	pcfg.ConnConfig.RuntimeParams["synchronous_commit"] = "on"
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	// PostgreSQL listens before it accepts queries ("the database system
	// is starting up"): wait for it, bounded.
	for deadline := time.Now().Add(2 * time.Minute); ; {
		err := pool.Ping(ctx)
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("postgresql: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS links (
		code text PRIMARY KEY,
		url text NOT NULL,
		created_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("create table: %w", err)
	}
	if *load != "" {
		begin := time.Now()
		n, err := copyLinks(ctx, pool, *load)
		if err != nil {
			return fmt.Errorf("load: %w", err)
		}
		fmt.Fprintf(os.Stderr, "redispg: loaded %d links in %v\n", n, time.Since(begin).Round(time.Millisecond))
	}
	rdb := redis.NewClient(&redis.Options{Addr: *redisAddr, PoolSize: *redisPool, MinIdleConns: 8})
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	a := &app{rdb: rdb, pg: pool, ttl: *ttl}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	if *stack == "net/http" {
		srv := &http.Server{Handler: a, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 60 * time.Second}
		go func() { <-ctx.Done(); _ = srv.Close() }()
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
	srv := &fasthttp.Server{
		Handler:              a.serveFast,
		Name:                 "redispg",
		NoDefaultContentType: true,
		ReadTimeout:          5 * time.Second,
		WriteTimeout:         5 * time.Second,
		IdleTimeout:          60 * time.Second,
	}
	go func() { <-ctx.Done(); _ = srv.Shutdown() }()
	return srv.Serve(ln)
}

// copyLinks COPYs the code<TAB>url lines of path into links.
func copyLinks(ctx context.Context, pool *pgxpool.Pool, path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	src := pgx.CopyFromFunc(func() ([]any, error) {
		if !sc.Scan() {
			return nil, sc.Err()
		}
		code, u, ok := strings.Cut(sc.Text(), "\t")
		if !ok {
			return nil, fmt.Errorf("line %q: no tab", sc.Text())
		}
		return []any{code, u}, nil
	})
	return pool.CopyFrom(ctx, pgx.Identifier{"links"}, []string{"code", "url"}, src)
}

type app struct {
	rdb *redis.Client
	pg  *pgxpool.Pool
	ttl time.Duration
}

var errNotFound = errors.New("not found")

// resolve is the cache-aside read: Redis, then PostgreSQL and a SET.
func (a *app) resolve(ctx context.Context, code string) (string, error) {
	key := "l:" + code
	u, err := a.rdb.Get(ctx, key).Result()
	if err == nil {
		return u, nil
	}
	// A failing Redis degrades to the database, as cache-aside does.
	err = a.pg.QueryRow(ctx, "SELECT url FROM links WHERE code = $1", code).Scan(&u)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", errNotFound
	}
	if err != nil {
		return "", err
	}
	_ = a.rdb.Set(ctx, key, u, a.ttl).Err()
	return u, nil
}

// create INSERTs a link under a fresh random code, redrawing on a taken
// one.
func (a *app) create(ctx context.Context, target string) (string, error) {
	for range 5 {
		code, err := link.RandomCode(link.DefaultCodeLen)
		if err != nil {
			return "", err
		}
		_, err = a.pg.Exec(ctx, "INSERT INTO links (code, url) VALUES ($1, $2)", code, target)
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23505" { // unique_violation
			continue
		}
		return code, err
	}
	return "", errors.New("no free code in 5 draws")
}

type createReq struct {
	URL string `json:"url"`
}

type createResp struct {
	Code string `json:"code"`
	URL  string `json:"url"`
}

// validURL is the check a plain service makes: an absolute http(s) URL
// with a host.
func validURL(s string) bool {
	if len(s) > 2048 {
		return false
	}
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

func (a *app) serveFast(ctx *fasthttp.RequestCtx) {
	path := ctx.Path()
	switch {
	case ctx.IsPost() && string(path) == "/v1/links":
		var req createReq
		if json.Unmarshal(ctx.PostBody(), &req) != nil || !validURL(req.URL) {
			ctx.Error("bad request\n", fasthttp.StatusBadRequest)
			return
		}
		code, err := a.create(ctx, req.URL)
		if err != nil {
			ctx.Error("unavailable\n", fasthttp.StatusServiceUnavailable)
			return
		}
		b, _ := json.Marshal(createResp{Code: code, URL: req.URL})
		ctx.SetStatusCode(fasthttp.StatusCreated)
		ctx.SetContentType("application/json")
		ctx.SetBody(b)
	case ctx.IsGet() || ctx.IsHead():
		code := path[1:]
		if !link.ValidCodeBytes(code) {
			ctx.Error("not found\n", fasthttp.StatusNotFound)
			return
		}
		u, err := a.resolve(ctx, string(code))
		switch {
		case errors.Is(err, errNotFound):
			ctx.Error("not found\n", fasthttp.StatusNotFound)
		case err != nil:
			ctx.Error("unavailable\n", fasthttp.StatusServiceUnavailable)
		default:
			ctx.SetStatusCode(fasthttp.StatusFound)
			ctx.Response.Header.Set("Location", u)
			ctx.Response.Header.Set("Cache-Control", "private, max-age=0")
		}
	default:
		ctx.Error("method not allowed\n", fasthttp.StatusMethodNotAllowed)
	}
}

func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/links":
		var req createReq
		b, err := io.ReadAll(io.LimitReader(r.Body, 4<<10))
		if err != nil || json.Unmarshal(b, &req) != nil || !validURL(req.URL) {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		code, err := a.create(r.Context(), req.URL)
		if err != nil {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(createResp{Code: code, URL: req.URL})
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		code := r.URL.Path[1:]
		if !link.ValidCode(code) {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		u, err := a.resolve(r.Context(), code)
		switch {
		case errors.Is(err, errNotFound):
			http.Error(w, "not found", http.StatusNotFound)
		case err != nil:
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
		default:
			w.Header().Set("Location", u)
			w.Header().Set("Cache-Control", "private, max-age=0")
			w.WriteHeader(http.StatusFound)
		}
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}
