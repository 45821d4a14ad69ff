package media

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"image"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/netguard"
	"github.com/scrambledeggs/eggs/storage"
)

// URL previews (client-server API "Content repository", GET /preview_url): the Open Graph
// metadata of a web page, its image stored as our media, or of an image, stored likewise.
// The server fetches what a user names, so every fetch goes through the repository's HTTP
// client, which connects to public addresses only (netguard.Control), and is bounded
// in time and size. Previews, and failures, are cached in the database (table url_previews),
// so that the clients of a room, all asking about the same link, cause one fetch.

const (
	// maxPreviewURLLength bounds the url parameter. NOTSPEC: the spec sets no limit; 2048
	// bytes is what browsers and CDNs commonly accept.
	maxPreviewURLLength = 2048
	// previewTimeout bounds the making of a preview: fetching the page, then its image in
	// the time left (without it when none is left). NOTSPEC.
	previewTimeout = 10 * time.Second
	// maxPreviewHTMLSize is how much of an HTML page is read for its metadata, which is in
	// its <head>, at the start. NOTSPEC: Synapse reads up to max_spider_size (10 MiB) and
	// refuses larger pages with 502; here the rest of a larger page is left unread.
	maxPreviewHTMLSize = 1 << 20
	// previewExpiry is how long a preview is cached, and previewErrorExpiry a failure.
	// NOTSPEC: Synapse's hour for both; failures, often passing, for less here.
	previewExpiry      = time.Hour
	previewErrorExpiry = 10 * time.Minute
	// previewAcceptLanguage is the language previews are asked in: one for all users, whom
	// the cache serves alike. NOTSPEC: Synapse's url_preview_accept_language default.
	previewAcceptLanguage = "en"
)

// GET /_matrix/client/v1/media/preview_url and /_matrix/media/v3/preview_url
// (getUrlPreviewAuthed, getUrlPreview, deprecated). The deprecated one is not frozen with
// the downloads: it always required authentication, so it answers as the new one.
// NOTSPEC: as Synapse, which serves both.
//
// The ts parameter is checked and otherwise ignored: the preview served is the cached one or
// a new one, which the spec allows ("The server may return a newer version").
func (r *Repository) previewURL(w http.ResponseWriter, req *http.Request, user User) error {
	target, err := previewParams(req.URL.Query())
	if err != nil {
		return err
	}
	if err := r.limit(user); err != nil {
		return err
	}
	og, err := r.preview(req.Context(), target, user.UserID)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, json.RawMessage(og))
	return nil
}

// previewParams reads the url parameter, an absolute http or https URL (its fragment, never
// sent to the server, dropped), and checks the ts parameter. NOTSPEC: Synapse answers other
// schemes 500; they are bad input, so 400 M_INVALID_PARAM here.
func previewParams(query url.Values) (*url.URL, error) {
	raw := query.Get("url")
	switch {
	case raw == "":
		return nil, httpapi.MissingParam("Missing url parameter")
	case len(raw) > maxPreviewURLLength:
		return nil, httpapi.InvalidParam("url must be at most %d bytes", maxPreviewURLLength)
	}
	if ts := query.Get("ts"); ts != "" {
		if _, err := strconv.ParseInt(ts, 10, 64); err != nil {
			return nil, httpapi.InvalidParam("ts must be an integer")
		}
	}
	target, err := url.Parse(raw)
	if err != nil || (target.Scheme != "http" && target.Scheme != "https") || target.Hostname() == "" {
		return nil, httpapi.InvalidParam("url must be an absolute http or https URL")
	}
	target.Fragment, target.RawFragment = "", ""
	return target, nil
}

// preview is the preview of target as JSON: cached, or fetched and cached. Concurrent
// requests for the same URL share one fetch, which goes on when the request that started it
// ends, so that the next one finds it cached.
func (r *Repository) preview(ctx context.Context, target *url.URL, userID string) ([]byte, error) {
	key := target.String()
	result := r.flights.DoChan("preview "+key, func() (any, error) {
		ctx := context.WithoutCancel(ctx)
		switch cached, err := storage.LoadURLPreview(ctx, r.cfg.DB, key, r.nowMS()); {
		case err == nil:
			return cached, nil
		case !errors.Is(err, storage.ErrNotFound):
			return nil, err
		}
		return r.fetchPreview(ctx, target, userID)
	})
	select {
	case res := <-result:
		if res.Err != nil {
			return nil, res.Err
		}
		p := res.Val.(*storage.URLPreview)
		if p.Status != http.StatusOK {
			return nil, httpapi.NewError(p.Status, p.ErrCode, "%s", p.Message)
		}
		return []byte(p.OG), nil
	case <-ctx.Done():
		return nil, errPreviewTimeout()
	}
}

// fetchPreview makes the preview of target and caches it; a failure to fetch it (a Matrix
// error) is cached too, for less time.
func (r *Repository) fetchPreview(ctx context.Context, target *url.URL, userID string) (*storage.URLPreview, error) {
	now := r.cfg.Clock()
	p := &storage.URLPreview{URL: target.String(), Status: http.StatusOK, CreatedTS: now.UnixMilli()}
	og, err := r.makePreview(ctx, target, userID)
	var failure *httpapi.Error
	switch {
	case errors.As(err, &failure):
		p.Status, p.ErrCode, p.Message = failure.Status, failure.ErrCode, failure.Message
		p.ExpiresTS = now.Add(previewErrorExpiry).UnixMilli()
	case err != nil:
		return nil, err
	default:
		body, err := json.Marshal(og)
		if err != nil {
			return nil, err
		}
		p.OG = string(body)
		p.ExpiresTS = now.Add(previewExpiry).UnixMilli()
	}
	if err := storage.StoreURLPreview(ctx, r.cfg.DB, p); err != nil {
		return nil, err
	}
	return p, nil
}

// makePreview fetches target and makes its preview: for an image, the image stored as our
// media; for an HTML page, its Open Graph metadata, its og:image stored likewise; for
// anything else, nothing (NOTSPEC: Synapse answers 502; the spec allows an empty preview,
// and the body is not read at all).
func (r *Repository) makePreview(ctx context.Context, target *url.URL, userID string) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(ctx, previewTimeout)
	defer cancel()
	response, body, mediaType, err := r.previewGet(ctx, target)
	if err != nil {
		return nil, r.previewFetchError(target, err)
	}
	defer response.Body.Close()
	switch {
	case strings.HasPrefix(mediaType, "image/"):
		m, err := r.storePreviewImage(ctx, response, body, mediaType, userID)
		switch {
		case errors.Is(err, errTooLarge):
			return nil, httpapi.NewError(http.StatusBadGateway, "M_TOO_LARGE", "The image is larger than this server's limit of %d bytes", r.cfg.MaxUploadSize)
		case err != nil:
			var readErr *sourceError
			if errors.As(err, &readErr) {
				return nil, r.previewFetchError(target, err)
			}
			return nil, err
		}
		og := map[string]any{}
		// NOTSPEC: as Synapse, the image's filename, if it has one, describes it.
		if m.UploadName != "" {
			og["og:description"] = m.UploadName
		}
		r.addPreviewImage(og, m, mediaType, nil)
		return og, nil
	case mediaType == "text/html" || mediaType == "application/xhtml+xml":
		page, err := io.ReadAll(io.LimitReader(body, maxPreviewHTMLSize))
		if err != nil {
			return nil, r.previewFetchError(target, err)
		}
		return r.htmlPreview(ctx, page, response.Header.Get("Content-Type"), response.Request.URL, userID)
	default:
		return map[string]any{}, nil
	}
}

// htmlPreview is the preview of an HTML page fetched from base: its Open Graph properties,
// with its og:image (relative to base, or absolute) fetched and stored as our media. The
// image is optional: when it cannot be fetched, the preview has none, and none of the
// og:image:… properties that describe it.
func (r *Repository) htmlPreview(ctx context.Context, page []byte, contentType string, base *url.URL, userID string) (map[string]any, error) {
	properties := openGraph(page, contentType)
	og := make(map[string]any, len(properties))
	for key, value := range properties {
		if key != "og:image" && !strings.HasPrefix(key, "og:image:") {
			og[key] = value
		}
	}
	imageRef := properties["og:image"]
	for _, alias := range []string{"og:image:secure_url", "og:image:url"} {
		if imageRef == "" {
			imageRef = properties[alias]
		}
	}
	if imageRef == "" {
		return og, nil
	}
	imageURL, err := base.Parse(strings.TrimSpace(imageRef))
	if err != nil || (imageURL.Scheme != "http" && imageURL.Scheme != "https") {
		r.cfg.Log.Debug("preview image URL not fetched", "page", base.Redacted(), "image", imageRef)
		return og, nil
	}
	m, mediaType, err := r.fetchPreviewImage(ctx, imageURL, userID)
	var failure *httpapi.Error
	switch {
	case errors.As(err, &failure) || errors.Is(err, errTooLarge):
		r.cfg.Log.Debug("preview image not fetched", "page", base.Redacted(), "image", imageURL.Redacted(), "err", err)
	case err != nil:
		return nil, err
	default:
		r.addPreviewImage(og, m, mediaType, properties)
	}
	return og, nil
}

// fetchPreviewImage fetches the image at imageURL and stores it as our media. An answer
// that is not an image, or too large, is an error.
func (r *Repository) fetchPreviewImage(ctx context.Context, imageURL *url.URL, userID string) (*storage.Media, string, error) {
	response, body, mediaType, err := r.previewGet(ctx, imageURL)
	if err != nil {
		return nil, "", r.previewFetchError(imageURL, err)
	}
	defer response.Body.Close()
	if !strings.HasPrefix(mediaType, "image/") {
		return nil, "", httpapi.NewError(http.StatusBadGateway, "M_UNKNOWN", "Not an image but %s", mediaType)
	}
	m, err := r.storePreviewImage(ctx, response, body, mediaType, userID)
	var readErr *sourceError
	if errors.As(err, &readErr) {
		return nil, "", r.previewFetchError(imageURL, err)
	}
	return m, mediaType, err
}

// previewGet asks for target as the preview bot and returns a successful answer, its body
// (to read instead of the answer's) and its media type, lower-case, without parameters:
// from its Content-Type, or sniffed from its first bytes when it has none. Answers other
// than 2xx are a 502 M_UNKNOWN, as Synapse answers them.
func (r *Repository) previewGet(ctx context.Context, target *url.URL) (*http.Response, *bufio.Reader, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
	if err != nil {
		return nil, nil, "", err
	}
	// NOTSPEC: as Synapse, a user agent that says it is a bot (some sites give their Open
	// Graph metadata only to bots), naming the server but not its version.
	req.Header.Set("User-Agent", "ScrambledEggs (bot; URL previews for "+r.cfg.ServerName+")")
	req.Header.Set("Accept", "text/html,application/xhtml+xml,image/*;q=0.9,*/*;q=0.8")
	req.Header.Set("Accept-Language", previewAcceptLanguage)
	response, err := r.http.Do(req)
	if err != nil {
		return nil, nil, "", err
	}
	if response.StatusCode < 200 || response.StatusCode > 299 {
		response.Body.Close()
		return nil, nil, "", httpapi.NewError(http.StatusBadGateway, "M_UNKNOWN", "%s answered HTTP %d", target.Redacted(), response.StatusCode)
	}
	body := bufio.NewReader(response.Body)
	mediaType, _, err := mime.ParseMediaType(response.Header.Get("Content-Type"))
	if err != nil {
		sniffed, _ := body.Peek(512)
		mediaType, _, _ = mime.ParseMediaType(http.DetectContentType(sniffed))
	}
	return response, body, strings.ToLower(mediaType), nil
}

// storePreviewImage stores an image fetched for a preview as our media, up to the upload
// limit (errTooLarge beyond). NOTSPEC: as Synapse, the user who asked for the preview is
// its uploader.
func (r *Repository) storePreviewImage(ctx context.Context, response *http.Response, body io.Reader, mediaType, userID string) (*storage.Media, error) {
	limit := r.cfg.MaxUploadSize
	if response.ContentLength > limit {
		return nil, errTooLarge
	}
	hash, size, err := r.store.write(body, limit)
	if err != nil {
		return nil, err
	}
	contentType := response.Header.Get("Content-Type")
	if contentType == "" || !validName(contentType) {
		contentType = mediaType
	}
	m := &storage.Media{Origin: r.cfg.ServerName, MediaID: newMediaID(), ContentType: contentType,
		UploadName: dispositionFilename(response.Header.Get("Content-Disposition")), Size: size, SHA256: hash,
		UserID: userID, CreatedTS: r.nowMS()}
	// Not bound by the fetch's timeout: the content is in place, the row must follow.
	if err := storage.InsertMedia(context.WithoutCancel(ctx), r.cfg.DB, m); err != nil {
		return nil, err
	}
	return m, nil
}

// addPreviewImage puts the stored image m into a preview: its mxc:// URI, type, size
// (matrix:image:size) and dimensions, as the spec's example has them, read from the image
// or else taken from the page's properties; and the page's og:image:alt.
func (r *Repository) addPreviewImage(og map[string]any, m *storage.Media, mediaType string, properties map[string]string) {
	og["og:image"] = "mxc://" + m.Origin + "/" + m.MediaID
	og["og:image:type"] = mediaType
	og["matrix:image:size"] = m.Size
	if width, height, ok := r.imageDimensions(m.SHA256); ok {
		og["og:image:width"], og["og:image:height"] = width, height
	} else {
		for _, key := range []string{"og:image:width", "og:image:height"} {
			if n, err := strconv.Atoi(strings.TrimSpace(properties[key])); err == nil && n > 0 {
				og[key] = n
			}
		}
	}
	if alt := properties["og:image:alt"]; alt != "" {
		og["og:image:alt"] = alt
	}
}

// imageDimensions reads the width and height of the stored image whose SHA-256 is hash from
// its header, in the formats that thumbnails are made of.
func (r *Repository) imageDimensions(hash string) (width, height int, ok bool) {
	f, err := r.store.open(hash)
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	cfg, _, err := image.DecodeConfig(bufio.NewReader(f))
	if err != nil {
		return 0, 0, false
	}
	return cfg.Width, cfg.Height, true
}

// previewFetchError is the error for a fetch that failed: 403 M_UNKNOWN for an address
// refused (NOTSPEC: as Synapse, "IP address blocked"), 504 for a timeout, 502 for anything
// else. A Matrix error is passed on.
func (r *Repository) previewFetchError(target *url.URL, err error) *httpapi.Error {
	var failure *httpapi.Error
	var netErr net.Error
	switch {
	case errors.As(err, &failure):
		return failure
	case errors.Is(err, netguard.ErrBlocked):
		return httpapi.NewError(http.StatusForbidden, "M_UNKNOWN", "IP address blocked")
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) && netErr.Timeout():
		return errPreviewTimeout()
	}
	r.cfg.Log.Info("fetch URL preview", "url", target.Redacted(), "err", err)
	return httpapi.NewError(http.StatusBadGateway, "M_UNKNOWN", "Could not fetch %s", target.Redacted())
}

func errPreviewTimeout() *httpapi.Error {
	return httpapi.NewError(http.StatusGatewayTimeout, "M_UNKNOWN", "Timed out fetching the URL")
}

// expirePreviews forgets the URL previews that have expired. The images they name stay,
// as media.
func (r *Repository) expirePreviews(ctx context.Context) {
	n, err := storage.DeleteExpiredURLPreviews(ctx, r.cfg.DB, r.nowMS())
	if err != nil && ctx.Err() == nil {
		r.cfg.Log.Warn("expire URL previews", "err", err)
	} else if n > 0 {
		r.cfg.Log.Debug("expired URL previews", "count", n)
	}
}
