package origin

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"strconv"
	"strings"

	"github.com/boombuler/barcode/qr"

	"github.com/linkpop/linkpop/link"
)

// QR code answers: error correction level M (15 % of the symbol may be
// damaged), a quiet zone of QRQuietZone modules on every side as scanners
// need, whole pixels per module. size is the image's width in pixels,
// QRMinSize to QRMaxSize; a PNG is at most that wide (whole modules), an
// SVG exactly (it scales: its viewBox is in modules).
const (
	QRQuietZone   = 4
	QRDefaultSize = 256
	QRMinSize     = 64
	QRMaxSize     = 2048
)

// QR errors.
var (
	ErrInvalidQRFormat = &Error{http.StatusBadRequest, "invalid_format", "format must be png or svg"}
	ErrInvalidQRSize   = &Error{http.StatusBadRequest, "invalid_size", fmt.Sprintf("size must be an integer in [%d, %d]", QRMinSize, QRMaxSize)}
)

// linkQR is GET /v1/links/{code}/qr?format=png|svg&size=N.
func (s *Server) linkQR(w http.ResponseWriter, r *http.Request, _ *principal) error {
	q := r.URL.Query()
	format := "png"
	if vals, ok := q["format"]; ok {
		if len(vals) != 1 || (vals[0] != "png" && vals[0] != "svg") {
			return link.OnField("format", ErrInvalidQRFormat)
		}
		format = vals[0]
	}
	size := QRDefaultSize
	if vals, ok := q["size"]; ok {
		n, err := strconv.Atoi(vals[0])
		if len(vals) != 1 || err != nil || n < QRMinSize || n > QRMaxSize {
			return link.OnField("size", ErrInvalidQRSize)
		}
		size = n
	}
	code := r.PathValue("code")
	if !link.ValidCode(code) {
		return link.ErrNotFound
	}
	if _, err := s.store.Get(code); err != nil {
		return err
	}
	short := s.shortBase + code
	// The image depends only on the short URL, format and size.
	sum := sha256.Sum256([]byte(short + "\x00" + format + "\x00" + strconv.Itoa(size)))
	tag := `"qr-` + hex.EncodeToString(sum[:8]) + `"`
	h := w.Header()
	h.Set("ETag", tag)
	h.Set("Cache-Control", "private, max-age=86400")
	h.Set("X-Content-Type-Options", "nosniff")
	if inm := r.Header.Get("If-None-Match"); inm != "" && strings.Contains(inm, tag) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	body, ctype, err := renderQR(short, format, size)
	if err != nil {
		return err
	}
	h.Set("Content-Type", ctype)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
	return nil
}

// qrModules is the module matrix of text at level M, without a quiet
// zone: true is dark.
func qrModules(text string) ([][]bool, error) {
	bc, err := qr.Encode(text, qr.M, qr.Auto)
	if err != nil {
		return nil, fmt.Errorf("qr encode: %w", err)
	}
	b := bc.Bounds()
	m := make([][]bool, b.Dy())
	for y := range m {
		m[y] = make([]bool, b.Dx())
		for x := range m[y] {
			r, _, _, _ := bc.At(b.Min.X+x, b.Min.Y+y).RGBA()
			m[y][x] = r < 0x8000
		}
	}
	return m, nil
}

// renderQR draws text as a PNG or SVG about size pixels wide.
func renderQR(text, format string, size int) ([]byte, string, error) {
	m, err := qrModules(text)
	if err != nil {
		return nil, "", err
	}
	n := len(m) + 2*QRQuietZone // modules across, quiet zone included
	if format == "svg" {
		return qrSVG(m, n, size), "image/svg+xml", nil
	}
	scale := max(size/n, 1)
	img := image.NewPaletted(image.Rect(0, 0, n*scale, n*scale), color.Palette{color.White, color.Black})
	for y, row := range m {
		for x, dark := range row {
			if !dark {
				continue
			}
			for dy := range scale {
				off := img.PixOffset((x+QRQuietZone)*scale, (y+QRQuietZone)*scale+dy)
				for dx := range scale {
					img.Pix[off+dx] = 1
				}
			}
		}
	}
	var buf bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.BestCompression}).Encode(&buf, img); err != nil {
		return nil, "", fmt.Errorf("qr png: %w", err)
	}
	return buf.Bytes(), "image/png", nil
}

// qrSVG draws the matrix as one path of unit squares in a viewBox of n
// modules, so it scales to any size.
func qrSVG(m [][]bool, n, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
		`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" shape-rendering="crispEdges">`+
		`<rect width="%d" height="%d" fill="#fff"/><path fill="#000" d="`, size, size, n, n, n, n)
	for y, row := range m {
		for x := 0; x < len(row); x++ {
			if !row[x] {
				continue
			}
			run := 1
			for x+run < len(row) && row[x+run] {
				run++
			}
			fmt.Fprintf(&b, "M%d %dh%dv1h-%dz", x+QRQuietZone, y+QRQuietZone, run, run)
			x += run - 1
		}
	}
	b.WriteString(`"/></svg>` + "\n")
	return b.Bytes()
}
