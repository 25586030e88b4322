package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/client/cli"
	"github.com/linkpop/linkpop/collector"
	"github.com/linkpop/linkpop/edge"
	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/origin"
	"github.com/linkpop/linkpop/replication"
	"github.com/linkpop/linkpop/replication/natsauth"
	"github.com/linkpop/linkpop/tlsconf"
)

// testPKI is a CA made for one test and the certificates it signed, as PEM
// files in a temporary directory.
type testPKI struct {
	dir                  string
	ca                   *x509.Certificate
	caKey                *ecdsa.PrivateKey
	pool                 *x509.CertPool
	caFile               string
	serverCert, serverKy string // for 127.0.0.1
	clientCert, clientKy string
}

func newTestPKI(t *testing.T, name string) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name + " test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p.ca, _ = x509.ParseCertificate(der)
	p.caKey = key
	p.pool = x509.NewCertPool()
	p.pool.AddCert(p.ca)
	p.caFile = p.write(t, "ca.pem", "CERTIFICATE", der)
	p.serverCert, p.serverKy = p.issue(t, "server", x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKy = p.issue(t, "client", x509.ExtKeyUsageClientAuth)
	return p
}

func (p *testPKI) write(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// issue makes a certificate for 127.0.0.1 with usage, signed by the CA.
func (p *testPKI) issue(t *testing.T, name string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return p.write(t, name+".pem", "CERTIFICATE", der), p.write(t, name+"-key.pem", "EC PRIVATE KEY", kder)
}

// TestTLSEverywhere: with TLS configured on every connection (NATS with
// client certificates verified, the origin API, the edge's redirect
// listener), the system works end to end, every client verifies the
// server against the test's CA, and the same connections without TLS, or
// against a server whose CA the client does not trust, fail.
func TestTLSEverywhere(t *testing.T) {
	pki := newTestPKI(t, "linkpop")
	natsTLS, err := tlsconf.Server(pki.serverCert, pki.serverKy)
	if err != nil {
		t.Fatal(err)
	}
	natsTLS.ClientCAs, natsTLS.ClientAuth = pki.pool, tls.RequireAndVerifyClientCert
	ns := natstest.StartTLS(t, natsTLS)
	log := testLogger(t)
	withTLS := func(c replication.ConnConfig) replication.ConnConfig {
		c.CAFile, c.CertFile, c.KeyFile = pki.caFile, pki.clientCert, pki.clientKy
		c.ReconnectWait, c.Logger = 50*time.Millisecond, log
		return c
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// NATS refuses plain TCP, a client without a certificate, and a
	// client that does not trust the server's CA refuses the server.
	refused := func(what string, opts ...nats.Option) {
		t.Helper()
		opts = append(opts, nats.Timeout(5*time.Second), nats.UserInfo("operator", ns.Password(natsauth.Operator)))
		if nc, err := nats.Connect("nats://"+ns.Addr(), opts...); err == nil {
			nc.Close()
			t.Errorf("NATS accepted %s", what)
		}
	}
	refused("a plain TCP client")
	refused("a client without a certificate", nats.RootCAs(pki.caFile))
	other := newTestPKI(t, "other")
	refused("a client trusting another CA", nats.RootCAs(other.caFile), nats.ClientCert(pki.clientCert, pki.clientKy))

	// The operator's step over TLS.
	op, err := replication.Dial(ctx, withTLS(replication.ConnConfig{URLs: []string{ns.URL()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	wait.For(t, 20*time.Second, "operator connected over TLS", op.IsConnected)
	if !op.TLSRequired() {
		t.Error("the operator's connection is not TLS")
	}
	if err := replication.EnsureStreams(ctx, op, replication.StreamConfig{}, replication.OriginStream(replication.StreamConfig{}, 25*time.Hour), replication.ClickStreamConfig{}); err != nil {
		t.Fatal(err)
	}

	osrv, err := origin.New(origin.Config{
		Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", DataDir: t.TempDir(),
		TLSCertFile: pki.serverCert, TLSKeyFile: pki.serverKy,
		NATS:      withTLS(ns.Conn(natsauth.Origin)),
		Collector: collector.Config{NATS: withTLS(ns.Conn(natsauth.Collector))},
		AdminKey:  testAdminKey,
		Logger:    log.With("component", "origin"),
	})
	if err != nil {
		t.Fatal(err)
	}
	octx, ocancel := context.WithCancel(context.Background())
	odone := make(chan error, 1)
	go func() { odone <- osrv.Run(octx) }()
	defer func() {
		ocancel()
		if err := <-odone; err != nil {
			t.Errorf("origin Run: %v", err)
		}
	}()
	originURL := "https://" + osrv.Addr()

	esrv, err := edge.New(edge.Config{
		Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", DataDir: t.TempDir(),
		TLSCertFile: pki.serverCert, TLSKeyFile: pki.serverKy,
		NATS:      withTLS(ns.Conn(natsauth.Edge)),
		OriginURL: originURL, OriginKey: testAdminKey, OriginCAFile: pki.caFile,
		Logger: log.With("component", "edge"),
	})
	if err != nil {
		t.Fatal(err)
	}
	ectx, ecancel := context.WithCancel(context.Background())
	edone := make(chan error, 1)
	go func() { edone <- esrv.Run(ectx) }()
	defer func() {
		ecancel()
		if err := <-edone; err != nil {
			t.Errorf("edge Run: %v", err)
		}
	}()
	select {
	case <-esrv.Started():
	case err := <-edone:
		t.Fatalf("edge Run: %v", err)
	}

	// Clients that trust the CA reach the origin API and the edge over
	// TLS; plain HTTP and clients without the CA fail.
	trusting := &http.Client{Timeout: 10 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer trusting.CloseIdleConnections()
	api, err := client.New(client.Config{BaseURL: originURL, Key: testAdminKey, HTTPClient: trusting})
	if err != nil {
		t.Fatal(err)
	}
	var l client.Link
	wait.For(t, 30*time.Second, "create a link over https", func() bool {
		l, err = api.CreateLink(ctx, client.CreateLink{URL: "https://example.com/tls", Code: "tlslink"}, client.CreateOptions{})
		return err == nil
	})
	wait.For(t, convergeTimeout, "the edge redirects over https", func() bool {
		resp, err := trusting.Get("https://" + esrv.Addr() + "/" + l.Code)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusFound && resp.Header.Get("Location") == "https://example.com/tls"
	})
	// The CLI verifies the origin against $LINKPOP_CA_FILE.
	cliRun := func(ca string) (int, string) {
		var out, errOut strings.Builder
		env := map[string]string{cli.EnvAPI: originURL, cli.EnvKey: testAdminKey, cli.EnvCAFile: ca}
		code := cli.Main(ctx, []string{"get", l.Code, "-o", "json"}, cli.IO{Stdout: &out, Stderr: &errOut,
			Getenv:    func(k string) string { return env[k] },
			ConfigDir: func() (string, error) { return t.TempDir(), nil }})
		return code, out.String() + errOut.String()
	}
	if code, out := cliRun(pki.caFile); code != 0 || !strings.Contains(out, "https://example.com/tls") {
		t.Errorf("linkpop get over https with the CA: exit %d, %s", code, out)
	}
	if code, out := cliRun(""); code == 0 || !strings.Contains(out, "certificate") {
		t.Errorf("linkpop get over https without the CA: exit %d, %s", code, out)
	}
	untrusting := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	defer untrusting.CloseIdleConnections()
	for _, base := range []string{originURL + "/v1/links/" + l.Code, "https://" + esrv.Addr() + "/" + l.Code} {
		_, err := untrusting.Get(base)
		var unknown x509.UnknownAuthorityError
		if !errors.As(err, &unknown) {
			t.Errorf("GET %s without the CA: %v, want an unknown authority error", base, err)
		}
		plain := "http://" + strings.TrimPrefix(base, "https://")
		if resp, err := untrusting.Get(plain); err == nil {
			resp.Body.Close()
			if resp.StatusCode < 400 {
				t.Errorf("plain GET %s answered %d", plain, resp.StatusCode)
			}
		}
	}
}
