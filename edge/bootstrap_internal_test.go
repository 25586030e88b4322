package edge

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// shipped is the checkpoint stream (without the HTTP head) of dir.
func shipped(t *testing.T, dir string) []byte {
	t.Helper()
	c1, c2 := net.Pipe()
	errc := make(chan error, 1)
	go func() { _, err := shipCheckpoint(c1, dir); c1.Close(); errc <- err }()
	resp, err := http.ReadResponse(bufio.NewReader(c2), nil)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestCheckpointStream: the stream of a directory reads back into equal
// files, and any change to it (a flipped byte anywhere, a cut, a name
// leaving the directory) is refused with errCheckpoint.
func TestCheckpointStream(t *testing.T) {
	src := t.TempDir()
	files := map[string]string{"000001.sst": strings.Repeat("sst", 1000), "MANIFEST-000002": "manifest", "empty": ""}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(src, n), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	good := shipped(t, src)
	dst := t.TempDir()
	if _, err := readCheckpoint(bytes.NewReader(good), dst); err != nil {
		t.Fatalf("good stream: %v", err)
	}
	for n, c := range files {
		if b, err := os.ReadFile(filepath.Join(dst, n)); err != nil || string(b) != c {
			t.Errorf("%s: %q %v", n, b, err)
		}
	}
	// Every single flipped byte is caught.
	for i := range good {
		bad := bytes.Clone(good)
		bad[i] ^= 0x01
		if _, err := readCheckpoint(bytes.NewReader(bad), t.TempDir()); err == nil {
			t.Fatalf("byte %d flipped: accepted", i)
		}
	}
	for _, n := range []int{0, 10, len(good) / 2, len(good) - 1} {
		if _, err := readCheckpoint(bytes.NewReader(good[:n]), t.TempDir()); !errors.Is(err, errCheckpoint) {
			t.Errorf("cut at %d: %v", n, err)
		}
	}
	for _, name := range []string{"../x", "a/b", "..", "."} {
		s := checkpointMagic + "\nF " + name + " 0\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
		if _, err := readCheckpoint(strings.NewReader(s), t.TempDir()); !errors.Is(err, errCheckpoint) {
			t.Errorf("name %q: %v", name, err)
		}
	}
}

// FuzzReadCheckpoint: no input panics or writes outside the directory.
func FuzzReadCheckpoint(f *testing.F) {
	f.Add([]byte(checkpointMagic + "\nF a 1\nx\n2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881\nE 1 00\n"))
	f.Add([]byte(checkpointMagic + "\nE 0 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		root := t.TempDir()
		dir := filepath.Join(root, "d")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		_, _ = readCheckpoint(bytes.NewReader(b), dir)
		ents, _ := os.ReadDir(root)
		if len(ents) != 1 {
			t.Fatalf("wrote outside the directory: %v", ents)
		}
	})
}
