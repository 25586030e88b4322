package cli

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// FuzzImportReaders feeds every import format arbitrary bytes: a reader
// may refuse lines, but never panic, loop, or yield an item without a
// line number.
func FuzzImportReaders(f *testing.F) {
	files, _ := filepath.Glob("testdata/*")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("INSERT INTO `yourls_url` VALUES ('a','b'),('c\\'"))
	f.Add([]byte("\"a\nb"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, format := range Formats {
			r, err := newReader(format, bytes.NewReader(data))
			if err != nil {
				continue
			}
			for n := 0; ; n++ {
				if n > len(data)+2 {
					t.Fatalf("%s: %d items from %d bytes", format, n, len(data))
				}
				it, err := r.next()
				if errors.Is(err, io.EOF) || err != nil {
					break
				}
				if it.line < 1 {
					t.Fatalf("%s: item without a line: %+v", format, it)
				}
			}
		}
	})
}

func TestSQLTuples(t *testing.T) {
	got, err := sqlTuples(`('a','it\'s',NULL,'x''y',3),('b','c');`)
	if err != nil || len(got) != 2 || got[0][1] != "it's" || got[0][2] != "" || got[0][3] != "x'y" || got[0][4] != "3" || got[1][0] != "b" {
		t.Fatalf("%q %v", got, err)
	}
	if _, err := sqlTuples(`('a`); err == nil {
		t.Fatal("unterminated tuple accepted")
	}
}
