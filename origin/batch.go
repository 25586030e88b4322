package origin

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/origin/store"
)

// ErrBatchTooLarge: a batch of more than client.MaxBatch creates.
var ErrBatchTooLarge = &Error{http.StatusBadRequest, "batch_too_large", fmt.Sprintf("a batch holds 1 to %d creates", client.MaxBatch)}

// batchBody is the body of POST /v1/links/batch; each item is decoded
// and checked as the body of POST /v1/links is.
type batchBody struct {
	Links []jsontext.Value `json:"links"`
}

// createBatch is POST /v1/links/batch: up to client.MaxBatch creates in
// one group commit, each answered in request order with its link or its
// own error object. With an Idempotency-Key, the batch has one
// idempotency record (the store's CreateBatch) under the key and a hash
// of the whole batch, so a retry answers every item as it was answered
// first and a different batch under the same key is 422
// idempotency_key_reused.
func (s *Server) createBatch(w http.ResponseWriter, r *http.Request, p *principal) error {
	idemKey, err := idempotencyKey(r.Header)
	if err != nil {
		return err
	}
	var body batchBody
	if err := readJSON(r, &body); err != nil {
		return err
	}
	if body.Links == nil {
		return link.OnField("links", withDetail(link.ErrInvalidJSON, "links must be an array of creates"))
	}
	if len(body.Links) == 0 || len(body.Links) > client.MaxBatch {
		return link.OnField("links", ErrBatchTooLarge)
	}
	s.writeGate.RLock() // from the policy checks to the commit
	defer s.writeGate.RUnlock()
	now := time.Now()
	results := make([]client.BatchResult, len(body.Links))
	reqs := make([]store.CreateRequest, 0, len(body.Links))
	index := make([]int, 0, len(body.Links)) // reqs[j] answers results[index[j]]
	canon := make([]createRequest, 0, len(body.Links))
	for i, raw := range body.Links {
		var item linkBody
		err := decodeJSON(raw, &item)
		var req createRequest
		if err == nil {
			req, err = s.parseCreate(&item, now)
		}
		if err != nil {
			results[i] = s.batchError(err)
			continue
		}
		canon = append(canon, req)
		index = append(index, i)
		reqs = append(reqs, req.store())
	}
	var idem *store.Idempotency
	if idemKey != "" {
		idem = &store.Idempotency{Scope: p.id, Key: "batch\x00" + idemKey, RequestHash: batchHash(canon, index)}
	}
	replayed := false
	if len(reqs) > 0 {
		out, err := s.store.CreateBatch(r.Context(), reqs, idem)
		if err != nil {
			return err
		}
		if err := s.replicated(r.Context()); err != nil {
			return err
		}
		for j, res := range out {
			replayed = replayed || res.Replayed
			if res.Err != nil {
				results[index[j]] = s.batchError(res.Err)
				continue
			}
			l := s.linkObject(&res.Rec)
			results[index[j]] = client.BatchResult{Link: &l}
		}
	}
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	writeJSON(w, http.StatusOK, &client.BatchResponse{Results: results})
	return nil
}

// batchError is the error object of one refused item, as the API would
// answer it for a single create.
func (s *Server) batchError(err error) client.BatchResult {
	_, obj, internal := classify(err)
	if internal {
		s.log.Error("batch item failed", "err", err)
	}
	return client.BatchResult{Error: &obj}
}

// batchHash fingerprints a batch's valid creates and their positions.
func batchHash(reqs []createRequest, index []int) [32]byte {
	b, _ := json.Marshal(struct {
		Route string          `json:"route"`
		Reqs  []createRequest `json:"reqs"`
		Index []int           `json:"index"`
	}{"POST /v1/links/batch", reqs, index}) // strings, ints and times: cannot fail
	return sha256.Sum256(b)
}
