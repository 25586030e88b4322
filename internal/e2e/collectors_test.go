package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/collector"
	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/proctest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/origin"
	"github.com/linkpop/linkpop/replication/natsauth"
)

// collectorFleet is n bin/collector child processes, partition i of n
// each, serving the partition API over TLS (a test CA), and the origin
// configuration that asks them.
type collectorFleet struct {
	t         *testing.T
	bin       string
	pki       *testPKI
	tokenFile string
	procs     []*collectorProc
}

// collectorProc is one partition's process and what it needs to be
// started again on the same store.
type collectorProc struct {
	i            int
	dir          string
	stats, admin string
	p            *proctest.Process
}

const fleetToken = "e2e-partition-token-0123456789"

func newCollectorFleet(t *testing.T, n int) *collectorFleet {
	t.Helper()
	f := &collectorFleet{t: t, bin: proctest.Build(t, "github.com/linkpop/linkpop/cmd/collector"), pki: newTestPKI(t, "collectors")}
	f.tokenFile = filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(f.tokenFile, []byte(fleetToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		f.procs = append(f.procs, &collectorProc{i: i, dir: t.TempDir(), stats: freeLowAddr(t), admin: freeLowAddr(t)})
	}
	return f
}

// freeLowAddr is a free loopback address below Linux's ephemeral port
// range (32768 and up): the addresses are chosen before the origin and
// the edges bind their port-0 listeners, which would otherwise take one
// of them now and then.
func freeLowAddr(t *testing.T) string {
	t.Helper()
	for range 100 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(20000+rand.IntN(12000)))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		return addr
	}
	t.Fatal("no free port in 20000-32000 after 100 tries")
	return ""
}

// originOpts has the origin ask the fleet over https, verified against
// the test CA.
func (f *collectorFleet) originOpts(cfg *origin.Config) {
	cfg.Collectors = nil
	for _, c := range f.procs {
		cfg.Collectors = append(cfg.Collectors, "https://"+c.stats)
	}
	cfg.CollectorToken = fleetToken
	cfg.CollectorCAFile = f.pki.caFile
}

// start starts partition i's process (again, after a kill) against s's
// NATS server, with its role's credentials, and waits until its admin
// listener answers.
func (f *collectorFleet) start(s *system, i int) {
	f.t.Helper()
	c := f.procs[i]
	conn := s.ns.Conn(natsauth.Collector)
	c.p = proctest.Start(f.t, proctest.Spec{
		Name: fmt.Sprintf("collector-%d", i),
		Path: f.bin,
		Args: []string{
			"-data", c.dir, "-admin", c.admin,
			"-nats", strings.Join(conn.URLs, ","), "-nats-user", conn.User,
			"-partition", strconv.Itoa(i), "-partitions", strconv.Itoa(len(f.procs)),
			"-stats-listen", c.stats, "-stats-token-file", f.tokenFile,
			"-stats-tls-cert", f.pki.serverCert, "-stats-tls-key", f.pki.serverKy,
			// A collector killed mid-ingest gets its unacknowledged
			// batches back after the ack wait: keep it short.
			"-ack-wait", "2s",
		},
		Env:   []string{"LINKPOP_NATS_PASSWORD=" + conn.Password},
		Quiet: true,
	})
	wait.For(f.t, convergeTimeout, fmt.Sprintf("collector %d answers /healthz", i), func() bool {
		if exited, err := c.p.Exited(); exited {
			f.t.Fatalf("collector %d exited: %v", i, err)
		}
		status, _ := httpGet("http://" + c.admin + "/healthz")
		return status == http.StatusOK
	})
}

// startAll starts every partition and tells s where their admin
// listeners are.
func (f *collectorFleet) startAll(s *system) {
	f.t.Helper()
	s.collectorAdmins = nil
	for i, c := range f.procs {
		f.start(s, i)
		s.collectorAdmins = append(s.collectorAdmins, c.admin)
	}
}

// metric reads one counter of partition i's /metrics (0 if absent).
func (f *collectorFleet) metric(i int, name string) float64 {
	_, met := httpGet("http://" + f.procs[i].admin + "/metrics")
	for _, l := range strings.Split(met, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			x, _ := strconv.ParseFloat(v, 64)
			return x
		}
	}
	return 0
}

// TestCollectorProcesses: two bin/collector processes split the links
// (partition 0 and 1 of 2), each serving its partition API over TLS; the
// origin asks them at https URLs verified against a test CA, and the API
// refuses plain HTTP and clients that do not trust the CA. The scripted
// traffic runs over both edges, and in the middle of it partition 0's
// process is SIGKILLed while it ingests and started again on the same
// store (its unacknowledged batches come back after the 2 s ack wait).
// Once complete_through has passed the end, every link's stats and the
// merged top links equal the model exactly: nothing lost, nothing
// counted twice.
func TestCollectorProcesses(t *testing.T) {
	leaktest.Check(t)
	fleet := newCollectorFleet(t, 2)
	sc := newClickScene(t, fleet.originOpts)
	fleet.startAll(sc.s)
	// One link more in each partition, so both hold links whatever
	// codes the scene drew.
	extra := model{}
	for p := range 2 {
		for k := 0; ; k++ {
			code := fmt.Sprintf("part%dx%d", p, k)
			if collector.PartitionOf(code, 2) != p {
				continue
			}
			o := sc.s.api.create(t, client.CreateLink{URL: "https://example.com/part/" + code, Code: code})
			sc.active = append(sc.active, o.Code)
			extra[o.Code] = wantOf(t, o)
			break
		}
	}
	sc.s.converge(extra, nil)
	checkPartitionTLS(t, fleet, sc.active[0])
	m := newClickModel()
	m.baseline(t, sc.s, append(sc.active, sc.disabled)...)
	reqs := sc.script(3, 3000)
	tr := startTraffic(t, sc.s, m, reqs, false)
	// Mid-ingest: a third of the traffic is sent, the edges ship a batch
	// every 200 ms and partition 0 applies them as they come.
	tr.reachBefore(len(reqs)/3, "the kill")
	batches := fleet.metric(0, "linkpop_collector_batches_total")
	fleet.procs[0].p.Kill()
	t.Logf("partition 0 SIGKILLed after %d of %d requests, having applied %v batches", tr.done.Load(), len(reqs), batches)
	// While it is down its links' stats are 503, never someone else's.
	_, err := sc.s.client.Stats(context.Background(), firstOf(sc.active, 0), client.StatsQuery{})
	if !isAPIError(err, http.StatusServiceUnavailable, "unavailable") {
		t.Errorf("stats of a partition-0 link while it is down: %v, want 503 unavailable", err)
	}
	tr.reach(2 * len(reqs) / 3)
	fleet.start(sc.s, 0)
	tr.wait()
	end := time.Now()
	t.Logf("%d redirects served", m.served)
	checkStats(t, sc.s, m, end, sc.disabled)
	t.Logf("partition 0 after its restart: %v duplicates refused, %v gap retries",
		fleet.metric(0, "linkpop_collector_duplicates_refused_total"), fleet.metric(0, "linkpop_collector_gap_retries_total"))
}

// firstOf is the first code of codes in partition i of 2.
func firstOf(codes []string, i int) string {
	for _, c := range codes {
		if collector.PartitionOf(c, 2) == i {
			return c
		}
	}
	return ""
}

// TestMaxVisitsSeparateCollectors: TestMaxVisits with two bin/collector
// processes: the origin follows each partition's click feed over the
// TLS partition API and disables the link through its own store, and
// the overshoot is measured the same way.
func TestMaxVisitsSeparateCollectors(t *testing.T) {
	leaktest.Check(t)
	fleet := newCollectorFleet(t, 2)
	s := newSystem(t, fleet.originOpts)
	fleet.startAll(s)
	checkMaxVisits(t, s)
}

// checkPartitionTLS: the fleet's partition API refuses plain HTTP, and a
// Remote that does not trust its CA cannot ask it; one with the CA can.
func checkPartitionTLS(t *testing.T, fleet *collectorFleet, code string) {
	t.Helper()
	c := fleet.procs[collector.PartitionOf(code, len(fleet.procs))]
	if status, body := httpGet("http://" + c.stats + "/collector/v1/links/" + code + "/totals"); status == http.StatusOK {
		t.Errorf("plain HTTP to the TLS partition API answered 200: %s", body)
	}
	rc := collector.RemoteConfig{URL: "https://" + c.stats, Token: fleetToken, Partition: c.i, Partitions: len(fleet.procs), Timeout: 10 * time.Second}
	untrusted, err := collector.NewRemote(rc) // the system's roots do not hold the test CA
	if err != nil {
		t.Fatal(err)
	}
	if _, err := untrusted.Totals(code); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a Remote without the CA: %v, want a certificate error", err)
	}
	rc.CAFile = fleet.pki.caFile
	trusted, err := collector.NewRemote(rc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := trusted.Totals(code); err != nil {
		t.Errorf("a Remote with the CA: %v", err)
	}
}
