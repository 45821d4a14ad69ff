package media

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/gif" // registers the GIF decoder
	"image/jpeg"
	"image/png"
	"io"
	"net/http"
	"strconv"

	"golang.org/x/image/draw"
	_ "golang.org/x/image/webp" // registers the WebP decoder

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/storage"
)

// Thumbnails (client-server API "Thumbnails"): made on demand from JPEG, PNG, GIF and WebP
// images, at one of a fixed set of sizes, and kept (file and database row) for the next
// request.

// box is a thumbnail size: the rectangle a thumbnail is fitted to (scale) or filled and
// cropped to (crop).
type box struct{ width, height int }

// thumbnailBoxes are the sizes thumbnails are made at, smallest first: the dimensions the
// spec recommends. A request gets the smallest box at least as large as it asked for, so
// that each image has a bounded number of thumbnails however many sizes are asked for.
// NOTSPEC: as Synapse, which makes these sizes; a request larger than all of them gets the
// image at its own size (fullSize), never one smaller than asked for.
var thumbnailBoxes = []box{{32, 32}, {96, 96}, {320, 240}, {640, 480}, {800, 600}}

// fullSize is the box of requests larger than every thumbnail box: the image as it is
// (stored as 0 × 0).
var fullSize = box{}

const (
	// maxImagePixels bounds the images thumbnailed, and maxDecodedBytes the memory their
	// decoding may take, so that a small file declaring huge dimensions (a decompression
	// bomb) is refused before it is decoded. NOTSPEC: Synapse's max_image_pixels is 32M.
	maxImagePixels  = 32_000_000
	maxDecodedBytes = 192 << 20
	// maxConcurrentThumbnails bounds the thumbnails generated at once, and so the memory
	// held by decoded images.
	maxConcurrentThumbnails = 2
	// jpegQuality is the quality of JPEG thumbnails. NOTSPEC: Synapse's 80.
	jpegQuality = 80
)

var (
	// errNotThumbnailable is the error for content that is not an image this server reads.
	errNotThumbnailable = errors.New("cannot thumbnail this content")
	// errImageTooLarge is the error for images beyond maxImagePixels or maxDecodedBytes.
	errImageTooLarge = errors.New("image too large to thumbnail")
)

// thumbnailRequest is what a thumbnail request asks for.
type thumbnailRequest struct {
	width, height int
	// method is "crop" or "scale".
	method string
	// animated is the animated parameter: an animated image may be served only when true.
	animated bool
}

// thumbnailParams reads width, height, method (default scale) and animated (default false)
// from the query; nonsense is 400.
func thumbnailParams(req *http.Request) (thumbnailRequest, error) {
	query := req.URL.Query()
	p := thumbnailRequest{method: "scale"}
	for _, dim := range []struct {
		name string
		into *int
	}{{"width", &p.width}, {"height", &p.height}} {
		raw := query.Get(dim.name)
		if raw == "" {
			return p, httpapi.MissingParam("Missing %s", dim.name)
		}
		n, err := strconv.ParseInt(raw, 10, 32)
		if err != nil || n <= 0 {
			return p, httpapi.InvalidParam("%s must be a positive integer", dim.name)
		}
		*dim.into = int(n)
	}
	switch method := query.Get("method"); method {
	case "":
	case "crop", "scale":
		p.method = method
	default:
		return p, httpapi.InvalidParam("method must be crop or scale")
	}
	switch query.Get("animated") {
	case "", "false":
	case "true":
		p.animated = true
	default:
		return p, httpapi.InvalidParam("animated must be true or false")
	}
	return p, nil
}

// GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId} (getContentThumbnailAuthed).
func (r *Repository) thumbnail(w http.ResponseWriter, req *http.Request, _ User) error {
	serverName, mediaID, err := mediaPath(req)
	if err != nil {
		return err
	}
	t, err := r.thumbnailFor(req, serverName, mediaID)
	if err != nil {
		return err
	}
	return r.serveFile(w, req, t.SHA256, t.ContentType, thumbnailDisposition(t.ContentType), t.CreatedTS)
}

// thumbnailFor reads a thumbnail request for mxc://origin/mediaID and finds or makes the
// thumbnail, with the spec's errors.
func (r *Repository) thumbnailFor(req *http.Request, origin, mediaID string) (*storage.Thumbnail, error) {
	p, err := thumbnailParams(req)
	if err != nil {
		return nil, err
	}
	timeout, err := timeoutParam(req)
	if err != nil {
		return nil, err
	}
	m, err := r.lookup(req.Context(), origin, mediaID, timeout)
	if err != nil {
		return nil, err
	}
	t, err := r.makeThumbnail(req.Context(), m, p)
	switch {
	case errors.Is(err, errNotThumbnailable):
		return nil, httpapi.NewError(http.StatusBadRequest, "M_UNKNOWN", "Cannot generate thumbnails for the requested content")
	case errors.Is(err, errImageTooLarge) && origin == r.cfg.ServerName:
		return nil, httpapi.TooLarge("Content is too large to thumbnail")
	case errors.Is(err, errImageTooLarge):
		return nil, httpapi.NewError(http.StatusBadGateway, "M_TOO_LARGE", "Content is too large to thumbnail")
	}
	return t, err
}

// thumbnailDisposition is the Content-Disposition of a thumbnail: always inline, with a
// file name (getContentThumbnailAuthed).
func thumbnailDisposition(contentType string) string {
	extension := map[string]string{"image/jpeg": "jpg", "image/png": "png", "image/gif": "gif", "image/webp": "webp"}[contentType]
	return "inline; filename=thumbnail." + extension
}

// makeThumbnail returns the thumbnail of m for p: the stored one if it was made before,
// else a new one, stored. When the image needs no resizing for p (it is no larger than
// asked for) the thumbnail is the image itself (the spec: "servers should return the
// original content"), unless it is animated and p does not ask for animation, which gets
// its first frame.
func (r *Repository) makeThumbnail(ctx context.Context, m *storage.Media, p thumbnailRequest) (*storage.Thumbnail, error) {
	f, err := r.store.open(m.SHA256)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := inspectImage(f)
	if err != nil {
		return nil, err
	}
	b := chooseBox(p.width, p.height)
	plan := planThumbnail(info.width, info.height, b, p.method)
	if plan.unchanged(info) && (!info.animated || p.animated) {
		return &storage.Thumbnail{Origin: m.Origin, MediaID: m.MediaID, ContentType: "image/" + info.format,
			Size: m.Size, SHA256: m.SHA256, CreatedTS: m.CreatedTS}, nil
	}
	stored, err := storage.LoadThumbnail(ctx, r.cfg.DB, m.Origin, m.MediaID, b.width, b.height, p.method)
	if err == nil {
		return stored, nil
	}
	if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	key := fmt.Sprintf("thumbnail %s/%s %dx%d %s", m.Origin, m.MediaID, b.width, b.height, p.method)
	made, err, _ := r.flights.Do(key, func() (any, error) {
		select {
		case r.thumbnails <- struct{}{}:
			defer func() { <-r.thumbnails }()
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		data, contentType, err := renderThumbnail(f, info, plan)
		if err != nil {
			return nil, err
		}
		hash, size, err := r.store.write(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return nil, err
		}
		t := &storage.Thumbnail{Origin: m.Origin, MediaID: m.MediaID, Width: b.width, Height: b.height, Method: p.method,
			ContentType: contentType, Size: size, SHA256: hash, CreatedTS: r.nowMS()}
		return t, storage.InsertThumbnail(context.WithoutCancel(ctx), r.cfg.DB, t)
	})
	if err != nil {
		return nil, err
	}
	return made.(*storage.Thumbnail), nil
}

// chooseBox is the smallest thumbnail box holding width × height, or fullSize.
func chooseBox(width, height int) box {
	for _, b := range thumbnailBoxes {
		if b.width >= width && b.height >= height {
			return b
		}
	}
	return fullSize
}

// imageInfo is what inspectImage learns of an image without decoding it.
type imageInfo struct {
	// format is the decoder's name: jpeg, png, gif or webp.
	format        string
	width, height int
	animated      bool
}

// inspectImage reads an image's format, dimensions and whether it is animated from its
// headers, refusing what is not an image we read (errNotThumbnailable) and images too large
// to decode safely (errImageTooLarge).
func inspectImage(f io.ReadSeeker) (imageInfo, error) {
	cfg, format, err := image.DecodeConfig(bufio.NewReader(f))
	if err != nil {
		return imageInfo{}, errNotThumbnailable
	}
	info := imageInfo{format: format, width: cfg.Width, height: cfg.Height}
	if info.width <= 0 || info.height <= 0 {
		return imageInfo{}, errNotThumbnailable
	}
	pixels := int64(info.width) * int64(info.height)
	if pixels > maxImagePixels || pixels*decodedBytesPerPixel(format, cfg.ColorModel) > maxDecodedBytes {
		return imageInfo{}, errImageTooLarge
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return imageInfo{}, err
	}
	info.animated = isAnimated(bufio.NewReader(f), format)
	return info, nil
}

// decodedBytesPerPixel is an upper estimate of the memory that decoding takes per pixel.
// Progressive JPEGs keep every coefficient while decoding, hence the JPEG figure.
func decodedBytesPerPixel(format string, model color.Model) int64 {
	switch {
	case format == "jpeg":
		return 8
	case model == color.RGBA64Model || model == color.NRGBA64Model:
		return 8
	case model == color.Gray16Model:
		return 2
	case model == color.GrayModel:
		return 1
	default:
		return 4
	}
}

// thumbnailPlan is how a thumbnail is made: the part of the image (src) that is resized to
// width × height.
type thumbnailPlan struct {
	src           image.Rectangle
	width, height int
}

// unchanged reports whether the plan is the whole image at its own size.
func (p thumbnailPlan) unchanged(info imageInfo) bool {
	return p.src == image.Rect(0, 0, info.width, info.height) && p.width == info.width && p.height == info.height
}

// planThumbnail plans the thumbnail of a width × height image for box b and method, never
// upscaling ("Servers MUST NOT upscale thumbnails"). scale fits the whole image in the box,
// keeping its aspect ratio; crop fills the box, cutting off what sticks out on either side,
// or when the image is too small to fill it, takes the middle of the image at its own scale.
func planThumbnail(width, height int, b box, method string) thumbnailPlan {
	whole := image.Rect(0, 0, width, height)
	if b == fullSize || (width <= b.width && height <= b.height) {
		return thumbnailPlan{src: whole, width: width, height: height}
	}
	if method == "scale" {
		// Which side reaches the box first: compare width/b.width with height/b.height.
		if int64(width)*int64(b.height) >= int64(height)*int64(b.width) {
			return thumbnailPlan{src: whole, width: b.width, height: max(1, int(int64(height)*int64(b.width)/int64(width)))}
		}
		return thumbnailPlan{src: whole, width: max(1, int(int64(width)*int64(b.height)/int64(height))), height: b.height}
	}
	// The largest part of the image with the box's aspect ratio, centred.
	cropWidth, cropHeight := width, int(int64(width)*int64(b.height)/int64(b.width))
	if cropHeight > height {
		cropWidth, cropHeight = int(int64(height)*int64(b.width)/int64(b.height)), height
	}
	if cropWidth <= b.width || cropHeight <= b.height {
		// Too small to fill the box: the middle of the image, not resized.
		cropWidth, cropHeight = min(width, b.width), min(height, b.height)
		return thumbnailPlan{src: centred(width, height, cropWidth, cropHeight), width: cropWidth, height: cropHeight}
	}
	return thumbnailPlan{src: centred(width, height, cropWidth, cropHeight), width: b.width, height: b.height}
}

// centred is the w × h rectangle in the middle of a width × height image.
func centred(width, height, w, h int) image.Rectangle {
	x, y := (width-w)/2, (height-h)/2
	return image.Rect(x, y, x+w, y+h)
}

// renderThumbnail decodes the image in f (its first frame) and makes the planned thumbnail:
// a JPEG of a JPEG, a PNG of anything else (which keeps transparency).
func renderThumbnail(f io.ReadSeeker, info imageInfo, plan thumbnailPlan) ([]byte, string, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, "", err
	}
	src, _, err := image.Decode(bufio.NewReader(f))
	if err != nil {
		return nil, "", errNotThumbnailable
	}
	srcRect := plan.src.Add(src.Bounds().Min)
	dst := image.NewRGBA(image.Rect(0, 0, plan.width, plan.height))
	if srcRect.Dx() == plan.width && srcRect.Dy() == plan.height {
		draw.Draw(dst, dst.Bounds(), src, srcRect.Min, draw.Src)
	} else {
		// Catmull-Rom is sharp but its cost grows with the source; a box filter first brings
		// the source down to two to four times the thumbnail's size, which is several times
		// faster on a photo and loses nothing visible.
		if factor := min(srcRect.Dx()/plan.width, srcRect.Dy()/plan.height) / 2; factor >= 2 {
			src = shrink(src, srcRect, factor)
			srcRect = src.Bounds()
		}
		draw.CatmullRom.Scale(dst, dst.Bounds(), src, srcRect, draw.Src, nil)
	}
	var out bytes.Buffer
	if info.format == "jpeg" {
		err = jpeg.Encode(&out, dst, &jpeg.Options{Quality: jpegQuality})
		return out.Bytes(), "image/jpeg", err
	}
	err = (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&out, dst)
	return out.Bytes(), "image/png", err
}

// shrink averages the factor × factor blocks of rectangle r of src into an image 1/factor
// of r's size (a box filter; the rightmost and bottom pixels that make no whole block are
// dropped). JPEG's YCbCr and PNG's RGBA and NRGBA images are read directly; others through
// At, which is slower.
func shrink(src image.Image, r image.Rectangle, factor int) *image.RGBA {
	width, height := r.Dx()/factor, r.Dy()/factor
	dst := image.NewRGBA(image.Rect(0, 0, width, height))
	n := uint32(factor * factor)
	for oy := 0; oy < height; oy++ {
		y0 := r.Min.Y + oy*factor
		for ox := 0; ox < width; ox++ {
			x0 := r.Min.X + ox*factor
			var c0, c1, c2, c3 uint32
			switch s := src.(type) {
			case *image.YCbCr:
				for y := y0; y < y0+factor; y++ {
					for x := x0; x < x0+factor; x++ {
						ci := s.COffset(x, y)
						c0 += uint32(s.Y[s.YOffset(x, y)])
						c1 += uint32(s.Cb[ci])
						c2 += uint32(s.Cr[ci])
					}
				}
				red, green, blue := color.YCbCrToRGB(uint8(c0/n), uint8(c1/n), uint8(c2/n))
				c0, c1, c2, c3 = uint32(red)*n, uint32(green)*n, uint32(blue)*n, 255*n
			case *image.RGBA:
				for y := y0; y < y0+factor; y++ {
					pix := s.Pix[s.PixOffset(x0, y):]
					for i := 0; i < 4*factor; i += 4 {
						c0, c1, c2, c3 = c0+uint32(pix[i]), c1+uint32(pix[i+1]), c2+uint32(pix[i+2]), c3+uint32(pix[i+3])
					}
				}
			case *image.NRGBA:
				// Premultiplied by alpha as it is summed, so that transparent pixels lend no
				// colour.
				for y := y0; y < y0+factor; y++ {
					pix := s.Pix[s.PixOffset(x0, y):]
					for i := 0; i < 4*factor; i += 4 {
						a := uint32(pix[i+3])
						c0, c1, c2, c3 = c0+uint32(pix[i])*a/255, c1+uint32(pix[i+1])*a/255, c2+uint32(pix[i+2])*a/255, c3+a
					}
				}
			default:
				for y := y0; y < y0+factor; y++ {
					for x := x0; x < x0+factor; x++ {
						red, green, blue, alpha := src.At(x, y).RGBA()
						c0, c1, c2, c3 = c0+red>>8, c1+green>>8, c2+blue>>8, c3+alpha>>8
					}
				}
			}
			i := dst.PixOffset(ox, oy)
			dst.Pix[i], dst.Pix[i+1], dst.Pix[i+2], dst.Pix[i+3] = uint8(c0/n), uint8(c1/n), uint8(c2/n), uint8(c3/n)
		}
	}
	return dst
}

// isAnimated reports whether an image has more than one frame, from its structure alone: a
// GIF with several images, an APNG (a PNG whose acTL chunk comes before its image data) or
// an animated WebP (the animation flag of its VP8X chunk). What cannot be read counts as
// not animated.
func isAnimated(r *bufio.Reader, format string) bool {
	switch format {
	case "gif":
		return gifFrames(r) > 1
	case "png":
		return isAPNG(r)
	case "webp":
		header := make([]byte, 21)
		if _, err := io.ReadFull(r, header); err != nil {
			return false
		}
		// "RIFF" size "WEBP" "VP8X" size flags: bit 1 of flags is the animation flag.
		return string(header[12:16]) == "VP8X" && header[20]&0x02 != 0
	}
	return false
}

// gifFrames counts the images of a GIF, stopping at two (GIF89a §§17–27: header, logical
// screen descriptor, optional global colour table, then blocks up to the trailer).
func gifFrames(r *bufio.Reader) int {
	header := make([]byte, 13)
	if _, err := io.ReadFull(r, header); err != nil {
		return 0
	}
	if header[10]&0x80 != 0 {
		if _, err := r.Discard(3 << (header[10]&0x07 + 1)); err != nil {
			return 0
		}
	}
	frames := 0
	for frames < 2 {
		introducer, err := r.ReadByte()
		if err != nil {
			return frames
		}
		switch introducer {
		case 0x21: // extension: label, then data sub-blocks
			if _, err := r.ReadByte(); err != nil || !skipSubBlocks(r) {
				return frames
			}
		case 0x2c: // image descriptor
			frames++
			descriptor := make([]byte, 9)
			if _, err := io.ReadFull(r, descriptor); err != nil {
				return frames
			}
			if descriptor[8]&0x80 != 0 {
				if _, err := r.Discard(3 << (descriptor[8]&0x07 + 1)); err != nil {
					return frames
				}
			}
			// LZW minimum code size, then the image data sub-blocks.
			if _, err := r.ReadByte(); err != nil || !skipSubBlocks(r) {
				return frames
			}
		default: // the trailer, or garbage
			return frames
		}
	}
	return frames
}

// skipSubBlocks skips GIF data sub-blocks up to their terminator.
func skipSubBlocks(r *bufio.Reader) bool {
	for {
		size, err := r.ReadByte()
		if err != nil {
			return false
		}
		if size == 0 {
			return true
		}
		if _, err := r.Discard(int(size)); err != nil {
			return false
		}
	}
}

// isAPNG reports whether a PNG has an acTL chunk before its first IDAT (APNG §4).
func isAPNG(r *bufio.Reader) bool {
	if _, err := r.Discard(8); err != nil { // signature
		return false
	}
	chunk := make([]byte, 8)
	for {
		if _, err := io.ReadFull(r, chunk); err != nil {
			return false
		}
		switch string(chunk[4:8]) {
		case "acTL":
			return true
		case "IDAT":
			return false
		}
		length := int64(chunk[0])<<24 | int64(chunk[1])<<16 | int64(chunk[2])<<8 | int64(chunk[3])
		if _, err := io.CopyN(io.Discard, r, length+4); err != nil { // data and CRC
			return false
		}
	}
}
