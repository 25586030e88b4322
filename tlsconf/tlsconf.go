// Package tlsconf builds the TLS configurations of linkpop's listeners
// (the origin API, the edge's redirect listener) and of its HTTP clients
// (the edge's origin fallback) from PEM files: the one place the minimum
// protocol version and the verification rules are set. It imports only
// the standard library, so the edge and the CLI may link it. (NATS
// connections take their files through replication.ConnConfig, whose
// client verifies the same way.)
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// MinVersion is the oldest TLS version linkpop accepts or speaks.
const MinVersion = tls.VersionTLS12

// Server loads a listener's certificate (chain first) and key.
func Server(certFile, keyFile string) (*tls.Config, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("tls: a certificate and a key file are both required")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: MinVersion}, nil
}

// Client is a client's configuration: it verifies servers against the
// CAs in caFile, or the system's roots when caFile is "". Verification is
// never turned off.
func Client(caFile string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: MinVersion}
	if caFile == "" {
		return c, nil
	}
	pool, err := Pool(caFile)
	if err != nil {
		return nil, err
	}
	c.RootCAs = pool
	return c, nil
}

// Pool reads the PEM certificates of caFile into a pool.
func Pool(caFile string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("tls: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls: CA file %s holds no PEM certificate", caFile)
	}
	return pool, nil
}

// PairError reports a certificate without its key or the reverse, for
// the Validate of a Config holding both; what names the fields.
func PairError(what, certFile, keyFile string) error {
	if (certFile == "") != (keyFile == "") {
		return fmt.Errorf("%s: the certificate and the key file go together", what)
	}
	return nil
}
