package media

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"net/http"
	"testing"
	"time"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestMediaThumbnails: thumbnails of PNG, JPEG and GIF images at the spec's sizes and
// methods, never upscaled, kept for the next request; small images come back as they are,
// animated ones only when animation is asked for; what is not an image, and images too large
// to decode safely, are refused.
func TestMediaThumbnails(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		tr := newTestRepo(t, db)
		alice := tr.user("alice")
		wide := tr.upload(alice, encodePNG(t, testImage(1000, 500)), "image/png", "wide.png")
		photo := tr.upload(alice, encodeJPEG(t, testImage(1200, 900)), "image/jpeg", "")
		small := encodePNG(t, testImage(20, 20))
		smallID := tr.upload(alice, small, "image/png", "")
		animatedGIF := encodeGIF(t, 50, 40, 3)
		animatedID := tr.upload(alice, animatedGIF, "image/gif", "")
		text := tr.upload(alice, []byte("not an image"), "text/plain", "")

		thumb := func(id, query string) (format string, width, height int, body []byte) {
			t.Helper()
			w := tr.get("/_matrix/client/v1/media/thumbnail/"+testServerName+"/"+id+"?"+query, alice)
			if w.Code != http.StatusOK {
				t.Fatalf("thumbnail %s?%s: %d %s", id, query, w.Code, w.Body)
			}
			format, width, height = decodeImage(t, w.Body.Bytes())
			if ct := w.Header().Get("Content-Type"); ct != "image/"+format {
				t.Fatalf("Content-Type %q for a %s", ct, format)
			}
			wantDisposition := "inline; filename=thumbnail." + map[string]string{"png": "png", "jpeg": "jpg", "gif": "gif"}[format]
			if got := w.Header().Get("Content-Disposition"); got != wantDisposition {
				t.Fatalf("Content-Disposition %q, want %q", got, wantDisposition)
			}
			if w.Header().Get("Content-Security-Policy") == "" || w.Header().Get("Cross-Origin-Resource-Policy") != "cross-origin" {
				t.Fatal("thumbnail without the security headers")
			}
			return format, width, height, w.Body.Bytes()
		}
		for _, tc := range []struct {
			id, query     string
			format        string
			width, height int
			sameBytesAs   []byte
			describe      string
		}{
			{wide, "width=320&height=240&method=scale", "png", 320, 160, nil, "scale fits the box"},
			{wide, "width=300&height=200", "png", 320, 160, nil, "scale is the default; the box holding the request"},
			{wide, "width=96&height=96&method=crop", "png", 96, 96, nil, "crop fills the box"},
			{wide, "width=700&height=500&method=crop", "png", 800, 500, nil, "crop, image too short to fill: not upscaled"},
			{wide, "width=2000&height=2000", "png", 1000, 500, nil, "larger than every box: the image itself"},
			{photo, "width=640&height=480&method=scale", "jpeg", 640, 480, nil, "JPEG thumbnails are JPEGs"},
			{photo, "width=32&height=32&method=crop", "jpeg", 32, 32, nil, "JPEG crop"},
			{smallID, "width=32&height=32&method=crop", "png", 20, 20, small, "smaller than asked for: the original"},
			{animatedID, "width=96&height=96", "png", 50, 40, nil, "animated, animation not asked for: a still"},
			{animatedID, "width=96&height=96&animated=false", "png", 50, 40, nil, "animated=false: a still"},
			{animatedID, "width=96&height=96&animated=true", "gif", 50, 40, animatedGIF, "animated=true: the animation"},
			{animatedID, "width=32&height=32&animated=true", "png", 32, 25, nil, "animated=true but resized: a still"},
		} {
			format, width, height, body := thumb(tc.id, tc.query)
			if format != tc.format || width != tc.width || height != tc.height {
				t.Errorf("%s (%s): %s %dx%d, want %s %dx%d", tc.describe, tc.query, format, width, height, tc.format, tc.width, tc.height)
			}
			if tc.sameBytesAs != nil && !bytes.Equal(body, tc.sameBytesAs) {
				t.Errorf("%s: not the original bytes", tc.describe)
			}
		}

		// Made once: the second request is served from the stored thumbnail.
		stored, err := storage.LoadThumbnail(context.Background(), db, testServerName, wide, 320, 240, "scale")
		if err != nil {
			t.Fatalf("stored thumbnail: %v", err)
		}
		tr.clock.Advance(time.Hour)
		thumb(wide, "width=320&height=240")
		again, _ := storage.LoadThumbnail(context.Background(), db, testServerName, wide, 320, 240, "scale")
		if *again != *stored {
			t.Fatalf("thumbnail made again: %+v, was %+v", again, stored)
		}

		base := "/_matrix/client/v1/media/thumbnail/" + testServerName + "/"
		expectError(t, "text", tr.get(base+text+"?width=32&height=32", alice), http.StatusBadRequest, "M_UNKNOWN")
		for query, code := range map[string]string{
			"height=32":                           "M_MISSING_PARAM",
			"width=32":                            "M_MISSING_PARAM",
			"width=0&height=32":                   "M_INVALID_PARAM",
			"width=-5&height=32":                  "M_INVALID_PARAM",
			"width=3.5&height=32":                 "M_INVALID_PARAM",
			"width=99999999999&height=32":         "M_INVALID_PARAM",
			"width=32&height=32&method=stretch":   "M_INVALID_PARAM",
			"width=32&height=32&animated=perhaps": "M_INVALID_PARAM",
		} {
			expectError(t, query, tr.get(base+wide+"?"+query, alice), http.StatusBadRequest, code)
		}
		expectError(t, "no token", tr.get(base+wide+"?width=32&height=32", ""), http.StatusUnauthorized, "M_MISSING_TOKEN")

		// A small PNG claiming to be 100,000 pixels square is refused before it is decoded.
		bomb := tr.upload(alice, pngClaiming(100_000, 100_000), "image/png", "")
		expectError(t, "decompression bomb", tr.get(base+bomb+"?width=32&height=32", alice), http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	})
}

// pngClaiming is a PNG signature and IHDR chunk declaring a width × height RGBA image, and
// no image data.
func pngClaiming(width, height uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], width)
	binary.BigEndian.PutUint32(ihdr[4:], height)
	ihdr[8], ihdr[9] = 8, 6 // 8-bit RGBA
	writeChunk(&b, "IHDR", ihdr)
	return b.Bytes()
}

func writeChunk(b *bytes.Buffer, kind string, data []byte) {
	_ = binary.Write(b, binary.BigEndian, uint32(len(data)))
	b.WriteString(kind)
	b.Write(data)
	_ = binary.Write(b, binary.BigEndian, crc32.ChecksumIEEE(append([]byte(kind), data...)))
}

// TestPlanThumbnail: the part of the image taken and the size made, per method and box.
func TestPlanThumbnail(t *testing.T) {
	for _, tc := range []struct {
		width, height int
		box           box
		method        string
		want          thumbnailPlan
	}{
		{1000, 500, box{320, 240}, "scale", thumbnailPlan{image.Rect(0, 0, 1000, 500), 320, 160}},
		{500, 1000, box{320, 240}, "scale", thumbnailPlan{image.Rect(0, 0, 500, 1000), 120, 240}},
		{300, 200, box{320, 240}, "scale", thumbnailPlan{image.Rect(0, 0, 300, 200), 300, 200}},
		{1000, 1, box{32, 32}, "scale", thumbnailPlan{image.Rect(0, 0, 1000, 1), 32, 1}},
		{1000, 500, box{96, 96}, "crop", thumbnailPlan{image.Rect(250, 0, 750, 500), 96, 96}},
		{500, 1000, box{320, 240}, "crop", thumbnailPlan{image.Rect(0, 312, 500, 687), 320, 240}},
		{50, 1000, box{96, 96}, "crop", thumbnailPlan{image.Rect(0, 452, 50, 548), 50, 96}},
		{90, 90, box{96, 96}, "crop", thumbnailPlan{image.Rect(0, 0, 90, 90), 90, 90}},
		{4000, 3000, fullSize, "crop", thumbnailPlan{image.Rect(0, 0, 4000, 3000), 4000, 3000}},
	} {
		if got := planThumbnail(tc.width, tc.height, tc.box, tc.method); got != tc.want {
			t.Errorf("%dx%d in %v by %s: %+v, want %+v", tc.width, tc.height, tc.box, tc.method, got, tc.want)
		}
	}
	for _, tc := range []struct {
		width, height int
		want          box
	}{{1, 1, box{32, 32}}, {32, 33, box{96, 96}}, {100, 50, box{320, 240}}, {640, 480, box{640, 480}}, {801, 10, fullSize}} {
		if got := chooseBox(tc.width, tc.height); got != tc.want {
			t.Errorf("box for %dx%d: %v, want %v", tc.width, tc.height, got, tc.want)
		}
	}
}

// TestIsAnimated: GIFs by their frames, APNGs by their acTL chunk, WebPs by their VP8X
// animation flag; truncated files are not animated.
func TestIsAnimated(t *testing.T) {
	still := encodePNG(t, testImage(4, 4))
	// An APNG: an acTL chunk between IHDR (8 + 25 bytes) and the image data.
	var apng bytes.Buffer
	apng.Write(still[:33])
	writeChunk(&apng, "acTL", make([]byte, 8))
	apng.Write(still[33:])
	webp := func(flags byte) []byte {
		return append([]byte("RIFF\x00\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00"), flags, 0, 0, 0)
	}
	for _, tc := range []struct {
		name   string
		data   []byte
		format string
		want   bool
	}{
		{"gif, one frame", encodeGIF(t, 8, 8, 1), "gif", false},
		{"gif, two frames", encodeGIF(t, 8, 8, 2), "gif", true},
		{"gif, truncated", encodeGIF(t, 8, 8, 2)[:20], "gif", false},
		{"png", still, "png", false},
		{"apng", apng.Bytes(), "png", true},
		{"webp, animated", webp(0x02), "webp", true},
		{"webp, still", webp(0x10), "webp", false},
		{"jpeg", encodeJPEG(t, testImage(4, 4)), "jpeg", false},
	} {
		if got := isAnimated(bufio.NewReader(bytes.NewReader(tc.data)), tc.format); got != tc.want {
			t.Errorf("%s: animated %v, want %v", tc.name, got, tc.want)
		}
	}
}

// BenchmarkThumbnail measures making a 320×240 thumbnail of a 4000×3000 JPEG photo (12 MP),
// decoding included.
func BenchmarkThumbnail(b *testing.B) {
	data := encodeJPEG(b, testImage(4000, 3000))
	f := bytes.NewReader(data)
	info, err := inspectImage(f)
	if err != nil {
		b.Fatal(err)
	}
	plan := planThumbnail(info.width, info.height, box{320, 240}, "scale")
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, _, err := renderThumbnail(f, info, plan); err != nil {
			b.Fatal(err)
		}
	}
}

// TestShrink: the box filter averages blocks on every kind of decoded image, and transparent
// pixels lend no colour.
func TestShrink(t *testing.T) {
	rgba := image.NewRGBA(image.Rect(0, 0, 4, 2))
	nrgba := image.NewNRGBA(image.Rect(0, 0, 4, 2))
	gray := image.NewGray(image.Rect(0, 0, 4, 2))
	ycbcr := image.NewYCbCr(image.Rect(0, 0, 4, 2), image.YCbCrSubsampleRatio420)
	for x := 0; x < 4; x++ {
		for y := 0; y < 2; y++ {
			rgba.Set(x, y, color.RGBA{200, 100, 0, 255})
			gray.SetGray(x, y, color.Gray{uint8(100 * (x % 2))})
			ycbcr.Y[ycbcr.YOffset(x, y)] = 128
			if x < 2 {
				nrgba.SetNRGBA(x, y, color.NRGBA{255, 0, 0, 255})
			} else {
				nrgba.SetNRGBA(x, y, color.NRGBA{0, 255, 0, 0}) // transparent green
			}
		}
	}
	for i := range ycbcr.Cb {
		ycbcr.Cb[i], ycbcr.Cr[i] = 128, 128
	}
	for _, tc := range []struct {
		name string
		src  image.Image
		want []color.RGBA
	}{
		{"rgba", rgba, []color.RGBA{{200, 100, 0, 255}, {200, 100, 0, 255}}},
		{"nrgba", nrgba, []color.RGBA{{255, 0, 0, 255}, {0, 0, 0, 0}}},
		{"gray", gray, []color.RGBA{{50, 50, 50, 255}, {50, 50, 50, 255}}},
		{"ycbcr", ycbcr, []color.RGBA{{128, 128, 128, 255}, {128, 128, 128, 255}}},
	} {
		got := shrink(tc.src, tc.src.Bounds(), 2)
		if got.Bounds() != image.Rect(0, 0, 2, 1) {
			t.Fatalf("%s: bounds %v", tc.name, got.Bounds())
		}
		for x, want := range tc.want {
			if c := got.RGBAAt(x, 0); c != want {
				t.Errorf("%s: pixel %d = %v, want %v", tc.name, x, c, want)
			}
		}
	}
}
