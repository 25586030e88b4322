package replication

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestParsePubAck reads the answers a stream gives a publish, in the
// forms nats-server writes them (server/stream.go: the pubAck prefix,
// the duplicate suffix with its space, API errors).
func TestParsePubAck(t *testing.T) {
	for _, tc := range []struct {
		name   string
		data   string
		status string
		seq    uint64
		dup    bool
		code   jetstream.ErrorCode // an *APIError with this code
		err    error
	}{
		{name: "plain", data: `{"stream":"LINKPOP_LINKS", "seq":42}`, seq: 42},
		{name: "no space", data: `{"stream":"LINKPOP_LINKS","seq":7}`, seq: 7},
		{name: "domain", data: `{"stream":"LINKPOP_LINKS", "domain":"hub", "seq":9001}`, seq: 9001},
		{name: "duplicate", data: `{"stream":"LINKPOP_LINKS", "seq":42,"duplicate": true}`, seq: 42, dup: true},
		{name: "stream named like a field", data: `{"stream":"error", "seq":3}`, seq: 3},
		{name: "wrong last sequence", data: `{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 5"}}`, code: 10071},
		{name: "duplicate in process", data: `{"stream":"S","error":{"code":409,"err_code":10158,"description":"duplicate message id is in process"}}`, code: 10158},
		{name: "no responders", status: "503", err: jetstream.ErrNoStreamResponse},
		{name: "empty", err: jetstream.ErrInvalidJSAck},
		{name: "garbage", data: `{"stream":"S", "seq":12x}`, err: jetstream.ErrInvalidJSAck},
		{name: "no stream", data: `{"seq":12}`, err: jetstream.ErrInvalidJSAck},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &nats.Msg{Data: []byte(tc.data)}
			if tc.status != "" {
				m.Header = nats.Header{"Status": []string{tc.status}}
			}
			seq, dup, err := parsePubAck(m)
			var apiErr *jetstream.APIError
			switch {
			case tc.code != 0:
				if !errors.As(err, &apiErr) || apiErr.ErrorCode != tc.code {
					t.Fatalf("err %v, want API error %d", err, tc.code)
				}
			case tc.err != nil:
				if !errors.Is(err, tc.err) {
					t.Fatalf("err %v, want %v", err, tc.err)
				}
			case err != nil:
				t.Fatalf("err %v", err)
			case seq != tc.seq || dup != tc.dup:
				t.Fatalf("seq %d dup %v, want %d %v", seq, dup, tc.seq, tc.dup)
			}
		})
	}
}
