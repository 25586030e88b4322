package regions

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// nsPrefix starts the name of every namespace this test creates, followed
// by the test process's PID: a later run deletes what a crashed run left
// (its PID no longer running), never what a concurrent run uses.
const nsPrefix = "lpreg-"

// lab is the test's virtual network: a namespace "wan" holding a bridge,
// one namespace per host with its end of a veth pair on that bridge (all
// hosts on one /24 of 10.231.0.0/16), and a management veth from the
// test's own namespace onto the bridge (address .254), through which the
// test reaches every host.
type lab struct {
	t      *testing.T
	id     string // the PID, in names
	subnet string // "10.231.N", N from the PID
	hosts  map[string]string
}

// requireLab skips the test unless it runs as root with ip and nft.
func requireLab(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("regions: needs root to create network namespaces (ip netns) and nftables rules; run as root (CI does)")
	}
	for _, bin := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("regions: %s not found (Debian packages iproute2 and nftables; .ci/run installs them)", bin)
		}
	}
	if out, err := exec.Command("ip", "netns", "list").CombinedOutput(); err != nil {
		t.Skipf("regions: ip netns does not work here: %v: %s", err, out)
	}
}

// sh runs a command and fails the test if it fails.
func sh(t testing.TB, stdin string, name string, args ...string) {
	t.Helper()
	if out, err := shErr(stdin, name, args...); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

func shErr(stdin string, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	return cmd.CombinedOutput()
}

// cleanLeftovers deletes the namespaces of earlier runs whose process is
// gone, and kills what still runs in them (processes those runs started).
func cleanLeftovers(t *testing.T) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, nsPrefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue // not ours, or its run is alive
		}
		t.Logf("removing namespace %s left by an earlier run (pid %d)", name, pid)
		deleteNamespace(name)
	}
}

// deleteNamespace kills the processes still in ns (by PID) and deletes it;
// its veth ends go with it, and their peers with them.
func deleteNamespace(ns string) {
	if out, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	_, _ = shErr("", "ip", "netns", "del", ns)
}

// newLab creates the wan namespace and bridge and the management link;
// t.Cleanup removes every namespace it made (after the processes, which
// register their own cleanups later and so run first).
func newLab(t *testing.T) *lab {
	t.Helper()
	cleanLeftovers(t)
	pid := os.Getpid()
	l := &lab{t: t, id: strconv.Itoa(pid), subnet: fmt.Sprintf("10.231.%d", 10+pid%200), hosts: map[string]string{}}
	// Registered first, so it runs last: nothing of this run is left.
	t.Cleanup(func() {
		out, _ := exec.Command("ip", "netns", "list").Output()
		if strings.Contains(string(out), l.ns("")) {
			t.Errorf("namespaces of this run left behind:\n%s", out)
		}
		if exec.Command("ip", "link", "show", l.mgmtLink()).Run() == nil {
			t.Errorf("management link %s left behind", l.mgmtLink())
		}
	})
	t.Cleanup(func() {
		for _, ns := range l.namespaces() {
			deleteNamespace(ns)
		}
		_, _ = shErr("", "ip", "link", "del", l.mgmtLink())
	})
	wan := l.ns("wan")
	sh(t, "", "ip", "netns", "add", wan)
	sh(t, "", "ip", "-n", wan, "link", "set", "lo", "up")
	sh(t, "", "ip", "-n", wan, "link", "add", "br0", "type", "bridge")
	sh(t, "", "ip", "-n", wan, "link", "set", "br0", "up")
	sh(t, "", "ip", "link", "add", l.mgmtLink(), "type", "veth", "peer", "name", "mgmt", "netns", wan)
	sh(t, "", "ip", "-n", wan, "link", "set", "mgmt", "master", "br0", "up")
	sh(t, "", "ip", "addr", "add", l.subnet+".254/24", "dev", l.mgmtLink())
	sh(t, "", "ip", "link", "set", l.mgmtLink(), "up")
	return l
}

func (l *lab) ns(host string) string { return nsPrefix + l.id + "-" + host }

func (l *lab) mgmtLink() string { return "lpr" + l.id + "m" }

func (l *lab) namespaces() []string {
	out := []string{l.ns("wan")}
	for h := range l.hosts {
		out = append(out, l.ns(h))
	}
	return out
}

// addHost creates host's namespace with address subnet.octet on the LAN
// and returns that address.
func (l *lab) addHost(host string, octet int) string {
	t := l.t
	t.Helper()
	ns, wan := l.ns(host), l.ns("wan")
	ip := fmt.Sprintf("%s.%d", l.subnet, octet)
	l.hosts[host] = ip
	sh(t, "", "ip", "netns", "add", ns)
	sh(t, "", "ip", "-n", ns, "link", "set", "lo", "up")
	sh(t, "", "ip", "-n", wan, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns)
	sh(t, "", "ip", "-n", wan, "link", "set", host, "master", "br0", "up")
	sh(t, "", "ip", "-n", ns, "addr", "add", ip+"/24", "dev", "eth0")
	sh(t, "", "ip", "-n", ns, "link", "set", "eth0", "up")
	return ip
}

// cut drops, inside host's namespace, every packet to or from the other
// hosts, in both directions (a WAN partition: established connections go
// silent, new ones time out); the management address still passes, so
// the test keeps watching the host.
func (l *lab) cut(host string) {
	l.t.Helper()
	var others []string
	for h, ip := range l.hosts {
		if h != host {
			others = append(others, ip)
		}
	}
	set := "{ " + strings.Join(others, ", ") + " }"
	rules := fmt.Sprintf(`table inet lpreg_cut {
  chain in { type filter hook input priority 0; policy accept; ip saddr %s drop; }
  chain out { type filter hook output priority 0; policy accept; ip daddr %s drop; }
}
`, set, set)
	sh(l.t, rules, "ip", "netns", "exec", l.ns(host), "nft", "-f", "-")
}

// heal removes the cut.
func (l *lab) heal(host string) {
	l.t.Helper()
	sh(l.t, "", "ip", "netns", "exec", l.ns(host), "nft", "delete", "table", "inet", "lpreg_cut")
}

// cutRules lists host's nftables ruleset (for the log).
func (l *lab) cutRules(host string) string {
	out, _ := shErr("", "ip", "netns", "exec", l.ns(host), "nft", "list", "ruleset")
	return string(bytes.TrimSpace(out))
}
