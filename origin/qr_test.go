package origin_test

import (
	"bytes"
	"encoding/xml"
	"errors"
	"image/png"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"

	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/origin"
)

// TestQR decodes the PNG with a QR decoder library and compares it with
// short_url, checks the quiet zone's geometry (decoders forgive a missing
// one), the ETag, the SVG's form, and the refusals.
func TestQR(t *testing.T) {
	leaktest.Check(t)
	o := apiStart(t, nil)
	l := o.must(http.StatusCreated, "POST", "/v1/links", apiAdminKey, `{"url":"https://example.com/qr","code":"qr-Code_1"}`)
	short := l.str("short_url")

	for _, size := range []int{origin.QRMinSize, origin.QRDefaultSize, 999} {
		path := "/v1/links/qr-Code_1/qr?size=" + strconv.Itoa(size)
		r := o.must(http.StatusOK, "GET", path, apiAdminKey, "")
		if ct := r.header.Get("Content-Type"); ct != "image/png" {
			t.Fatalf("Content-Type %q", ct)
		}
		img, err := png.Decode(bytes.NewReader(r.raw))
		if err != nil {
			t.Fatal(err)
		}
		b := img.Bounds()
		if b.Dx() != b.Dy() || b.Dx() > size || b.Dx() < size/2 {
			t.Fatalf("size %d: image %v", size, b)
		}
		bmp, err := gozxing.NewBinaryBitmapFromImage(img)
		if err != nil {
			t.Fatal(err)
		}
		res, err := qrcode.NewQRCodeReader().Decode(bmp, map[gozxing.DecodeHintType]any{gozxing.DecodeHintType_PURE_BARCODE: true})
		if err != nil {
			t.Fatalf("size %d: decode: %v", size, err)
		}
		if res.GetText() != short {
			t.Fatalf("decoded %q, want %q", res.GetText(), short)
		}
		// The top-left finder pattern starts after the quiet zone: its
		// first dark row begins QRQuietZone modules in, and its dark run
		// is 7 modules wide.
		dark := func(x, y int) bool { r, _, _, _ := img.At(x, y).RGBA(); return r < 0x8000 }
		off := -1
		for i := 0; i < b.Dx() && off < 0; i++ {
			if dark(i, i) {
				off = i
			}
		}
		run := 0
		for x := off; x < b.Dx() && dark(x, off); x++ {
			run++
		}
		if run%7 != 0 || off != origin.QRQuietZone*(run/7) {
			t.Fatalf("size %d: finder at %d, %d px wide: want a %d-module quiet zone", size, off, run, origin.QRQuietZone)
		}
		etag := r.header.Get("ETag")
		if etag == "" {
			t.Fatal("no ETag")
		}
		o.must(http.StatusNotModified, "GET", path, apiAdminKey, "", "If-None-Match", etag)
	}

	r := o.must(http.StatusOK, "GET", "/v1/links/qr-Code_1/qr?format=svg&size=512", apiAdminKey, "")
	if ct := r.header.Get("Content-Type"); ct != "image/svg+xml" {
		t.Fatalf("svg Content-Type %q", ct)
	}
	dec := xml.NewDecoder(bytes.NewReader(r.raw))
	var root *xml.StartElement
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("svg is not well-formed: %v\n%s", err, r.raw)
		}
		if se, ok := tok.(xml.StartElement); ok && root == nil {
			root = &se
		}
	}
	attrs := map[string]string{}
	for _, a := range root.Attr {
		attrs[a.Name.Local] = a.Value
	}
	if root.Name.Local != "svg" || attrs["width"] != "512" || !strings.HasPrefix(attrs["viewBox"], "0 0 ") {
		t.Fatalf("svg root %v %v", root.Name, attrs)
	}
	if r.header.Get("ETag") == o.do("GET", "/v1/links/qr-Code_1/qr?size=512", apiAdminKey, "").header.Get("ETag") {
		t.Error("svg and png share an ETag")
	}

	f := func(path, key string, status int, code string) {
		t.Helper()
		r := o.do("GET", path, key, "")
		if r.status != status || r.errCode() != code {
			t.Errorf("GET %s: %d %s, want %d %s", path, r.status, r.raw, status, code)
		}
	}
	_, writeKey := o.mintKey(`{"name":"w","scopes":["links:write"]}`)
	_, readKey := o.mintKey(`{"name":"r","scopes":["links:read"]}`)
	f("/v1/links/qr-Code_1/qr?format=gif", apiAdminKey, 400, "invalid_format")
	f("/v1/links/qr-Code_1/qr?size=10", apiAdminKey, 400, "invalid_size")
	f("/v1/links/qr-Code_1/qr?size=4096", apiAdminKey, 400, "invalid_size")
	f("/v1/links/qr-Code_1/qr?size=x", apiAdminKey, 400, "invalid_size")
	f("/v1/links/nope404/qr", apiAdminKey, 404, "not_found")
	f("/v1/links/a.b/qr", apiAdminKey, 404, "not_found")
	f("/v1/links/qr-Code_1/qr", writeKey, 403, "forbidden")
	f("/v1/links/qr-Code_1/qr", readKey, 200, "")
	f("/v1/links/qr-Code_1/qr", "", 401, "unauthorized")
}
