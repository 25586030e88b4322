package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/linkpop/linkpop/client"
)

// originProc is a running bin/origin.
type originProc struct {
	p      *proc
	api    string // http://host:port
	admin  string // host:port
	key    string
	client *client.Client
}

// startOrigin starts bin/origin against the harness's stream with its
// store on disk.
func (h *harness) startOrigin() (*originProc, error) {
	if h.origin != nil {
		return h.origin, nil
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	admin, err := freeAddr()
	if err != nil {
		return nil, err
	}
	var kb [24]byte
	if _, err := rand.Read(kb[:]); err != nil {
		return nil, err
	}
	key := "bench-" + hex.EncodeToString(kb[:])
	p, err := h.start("origin", -1, nil, filepath.Join(h.cfg.BinDir, "origin"),
		"-listen", addr, "-admin", admin, "-data", filepath.Join(h.cfg.WorkDir, "origin"),
		"-nats", h.natsURL, "-admin-key", key, "-log-level", "warn")
	if err != nil {
		return nil, err
	}
	o := &originProc{p: p, api: "http://" + addr, admin: admin, key: key}
	probe := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	err = waitFor(h.ctx, p, 2*time.Minute, 10*time.Millisecond, "origin /readyz", func() bool {
		resp, err := probe.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	if err != nil {
		p.stop(syscall.SIGTERM, 10*time.Second)
		return nil, err
	}
	o.client, err = client.New(client.Config{
		BaseURL:     o.api,
		Key:         key,
		HTTPClient:  &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxIdleConns: 512}},
		MaxAttempts: 1, // a benchmark counts refusals, it does not hide them
		UserAgent:   "linkpop-bench",
	})
	if err != nil {
		p.stop(syscall.SIGTERM, 10*time.Second)
		return nil, err
	}
	h.origin = o
	return o, nil
}

// create creates a link to url and returns its code and the answer's
// status (0 when there was none).
func (o *originProc) create(ctx context.Context, url string) (string, int, error) {
	l, err := o.client.CreateLink(ctx, client.CreateLink{URL: url}, client.CreateOptions{})
	if err != nil {
		return "", apiStatus(err), fmt.Errorf("create: %w", err)
	}
	return l.Code, http.StatusCreated, nil
}

// apiStatus is the HTTP status of an API error, 0 for no answer.
func apiStatus(err error) int {
	var ae *client.Error
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// writes measures creates/s through the origin API at each concurrency,
// every create acknowledged only once synced, and how long the relay then
// needs to get the run's events into the stream.
func (h *harness) writes() error {
	o, err := h.startOrigin()
	if err != nil {
		return err
	}
	w := &WritesReport{}
	h.rep.Writes = w
	var seq int64
	for _, conc := range h.cfg.WriteConcurrency {
		h.log.Info("writes", "concurrency", conc)
		seq0, err := h.lastSeq()
		if err != nil {
			return err
		}
		run := WriteRun{Concurrency: conc, Statuses: map[string]int{}}
		var (
			mu   sync.Mutex
			lats []float64
			wg   sync.WaitGroup
		)
		ctx, cancel := context.WithTimeout(h.ctx, h.cfg.WriteDuration)
		begin := time.Now()
		var lastAck time.Time
		for range conc {
			wg.Go(func() {
				for ctx.Err() == nil {
					mu.Lock()
					seq++
					url := fmt.Sprintf("https://example.com/w/%d", seq)
					mu.Unlock()
					t0 := time.Now()
					_, st, _ := o.create(h.ctx, url)
					t1 := time.Now()
					mu.Lock()
					switch {
					case st == http.StatusCreated:
						run.Created++
						lats = append(lats, float64(t1.Sub(t0).Microseconds())/1e3)
						if t1.After(lastAck) {
							lastAck = t1
						}
						run.Statuses["201"]++
					case st != 0:
						run.Statuses[strconv.Itoa(st)]++
					default:
						run.Statuses["error"]++
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		cancel()
		run.Seconds = time.Since(begin).Seconds()
		run.PerSecond = float64(run.Created) / run.Seconds
		p := percentiles(lats)
		run.P50Ms, run.P99Ms, run.MaxMs = p.P50Ms, p.P99Ms, p.MaxMs
		// Every acknowledged create is one event in the stream.
		want := seq0 + uint64(run.Created)
		err = waitFor(h.ctx, o.p, 5*time.Minute, time.Millisecond, "relay to publish the run's events", func() bool {
			last, err := h.lastSeq()
			return err == nil && last >= want
		})
		if err != nil {
			return err
		}
		if !lastAck.IsZero() {
			run.DrainMs = float64(time.Since(lastAck).Microseconds()) / 1e3
		}
		w.Runs = append(w.Runs, run)
	}
	w.RelayMetrics = o.relayMetrics()
	return nil
}

// relayMetrics returns the origin's metric lines about its relay and
// outbox.
func (o *originProc) relayMetrics() []string {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + o.admin + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		if strings.Contains(line, "relay") || strings.Contains(line, "outbox") {
			out = append(out, line)
		}
	}
	return out
}
