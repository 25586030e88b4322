package origin

import (
	"net/http"
	"strconv"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/link"
)

// maxDigestScans bounds the digest scans running at once: each reads the
// whole link table, so a burst of digest calls queues instead of
// multiplying the I/O.
const maxDigestScans = 2

// digest is GET /v1/digest.
func (s *Server) digest(w http.ResponseWriter, r *http.Request, _ *principal) error {
	if err := s.acquireScan(r); err != nil {
		return err
	}
	defer s.releaseScan()
	unpublished, _ := s.store.OutboxStats()
	d, rev, err := s.store.BucketDigest()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, client.Digest{DigestJSON: d.JSON(), Revision: rev, Unpublished: unpublished})
	return nil
}

// digestBucket is GET /v1/digest/buckets/{i}.
func (s *Server) digestBucket(w http.ResponseWriter, r *http.Request, _ *principal) error {
	i, err := parseBucket(r.PathValue("i"))
	if err != nil {
		return err
	}
	if err := s.acquireScan(r); err != nil {
		return err
	}
	defer s.releaseScan()
	entries, rev, err := s.store.DigestBucket(i)
	if err != nil {
		return err
	}
	if entries == nil {
		entries = []link.DigestEntry{}
	}
	writeJSON(w, http.StatusOK, client.DigestBucket{Bucket: i, Revision: rev, Links: entries})
	return nil
}

// parseBucket reads a bucket number: a decimal integer in [0, 255].
func parseBucket(v string) (int, error) {
	i, err := strconv.Atoi(v)
	if err != nil || i < 0 || i >= link.DigestBuckets || strconv.Itoa(i) != v {
		return 0, ErrInvalidBucket
	}
	return i, nil
}

// acquireScan waits for a digest scan slot, or for the request to end.
func (s *Server) acquireScan(r *http.Request) error {
	select {
	case s.scans <- struct{}{}:
		return nil
	case <-r.Context().Done():
		return r.Context().Err()
	}
}

func (s *Server) releaseScan() { <-s.scans }
