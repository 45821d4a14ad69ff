package media

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/scrambledeggs/eggs/federation"
	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/netguard"
	"github.com/scrambledeggs/eggs/storage"
)

// Other servers' media (server-server API "Content Repository"): fetched from the server
// its mxc:// URI names, through the federation client, and cached like our own, so that it
// is fetched once.

// Federation is what the repository needs of the federation client (*federation.Client):
// signed requests whose answers are read as they arrive, headers included.
type Federation interface {
	DoStreamWithHeader(ctx context.Context, req federation.Request) (io.ReadCloser, http.Header, error)
}

const (
	// multipartOverhead is what a multipart answer may carry besides the content:
	// boundaries, part headers, the metadata part.
	multipartOverhead = 1 << 20
	// maxMetadataSize bounds the JSON metadata part of a multipart answer.
	maxMetadataSize = 64 << 10
	// fetchGrace is how long a fetch may take besides the timeout the remote server may
	// wait for a pending upload: the transfer itself. The federation client bounds each
	// request too.
	fetchGrace = 2 * time.Minute
	// maxLocationRedirects bounds the redirects followed from a Location answer.
	maxLocationRedirects = 5
)

// fetchRemote fetches mxc://origin/mediaID from origin and caches it. Concurrent requests
// for the same media share one fetch, which goes on when the request that started it ends,
// so that the next one finds it cached.
func (r *Repository) fetchRemote(ctx context.Context, origin, mediaID string, timeout time.Duration) (*storage.Media, error) {
	if r.cfg.Federation == nil {
		return nil, errNotFound()
	}
	result := r.flights.DoChan("remote "+origin+"/"+mediaID, func() (any, error) {
		// A fetch that ended between the caller's look in the cache and this one stored it.
		switch m, err := storage.LoadMedia(ctx, r.cfg.DB, origin, mediaID); {
		case err == nil && m.Quarantined:
			return nil, errNotFound()
		case err == nil:
			return m, nil
		case !errors.Is(err, storage.ErrNotFound):
			return nil, err
		}
		fetchCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout+fetchGrace)
		defer cancel()
		return r.fetch(fetchCtx, origin, mediaID, timeout)
	})
	select {
	case res := <-result:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*storage.Media), nil
	case <-ctx.Done():
		return nil, httpapi.NewError(http.StatusGatewayTimeout, "M_UNKNOWN", "Timed out fetching the media from %s", origin)
	}
}

// fetch downloads mxc://origin/mediaID with GET /_matrix/federation/v1/media/download, or
// from servers older than v1.11 (which answer it 404 M_UNRECOGNIZED) the deprecated
// /_matrix/media/v3/download with allow_remote=false, as the spec says; stores it; and
// returns its row.
func (r *Repository) fetch(ctx context.Context, origin, mediaID string, timeout time.Duration) (*storage.Media, error) {
	timeoutQuery := "timeout_ms=" + strconv.FormatInt(timeout.Milliseconds(), 10)
	limit := r.cfg.MaxUploadSize
	body, header, err := r.cfg.Federation.DoStreamWithHeader(ctx, federation.Request{
		Method: http.MethodGet, Destination: origin, MaxResponseSize: limit + multipartOverhead,
		URI: "/_matrix/federation/v1/media/download/" + mediaID + "?" + timeoutQuery,
	})
	legacy := false
	var remote *federation.RemoteError
	if errors.As(err, &remote) && remote.Status == http.StatusNotFound && remote.ErrCode == "M_UNRECOGNIZED" {
		legacy = true
		body, header, err = r.cfg.Federation.DoStreamWithHeader(ctx, federation.Request{
			Method: http.MethodGet, Destination: origin, MaxResponseSize: limit,
			URI: "/_matrix/media/v3/download/" + url.PathEscape(origin) + "/" + mediaID + "?allow_remote=false&" + timeoutQuery,
		})
	}
	if err != nil {
		return nil, r.remoteError(origin, err)
	}
	defer body.Close()
	content, contentHeader := io.Reader(body), header
	if !legacy {
		part, err := contentPart(header, body)
		if err != nil {
			r.cfg.Log.Warn("bad media answer", "origin", origin, "media_id", mediaID, "err", err)
			return nil, errFetchFailed(origin)
		}
		content, contentHeader = part, http.Header(part.Header)
		if location := part.Header.Get("Location"); location != "" {
			response, err := r.followLocation(ctx, location)
			if err != nil {
				r.cfg.Log.Warn("fetch media location", "origin", origin, "media_id", mediaID, "err", err)
				return nil, errFetchFailed(origin)
			}
			defer response.Body.Close()
			content, contentHeader = response.Body, response.Header
		}
	}
	hash, size, err := r.store.write(content, limit)
	switch {
	case errors.Is(err, errTooLarge) || errors.Is(err, federation.ErrResponseTooLarge):
		return nil, httpapi.NewError(http.StatusBadGateway, "M_TOO_LARGE", "The media is larger than this server's limit of %d bytes", limit)
	case err != nil:
		var readErr *sourceError
		if errors.As(err, &readErr) {
			r.cfg.Log.Warn("read remote media", "origin", origin, "media_id", mediaID, "err", err)
			return nil, errFetchFailed(origin)
		}
		return nil, err
	}
	contentType := contentHeader.Get("Content-Type")
	if !validName(contentType) {
		contentType = ""
	}
	m := &storage.Media{Origin: origin, MediaID: mediaID, ContentType: contentType,
		UploadName: dispositionFilename(contentHeader.Get("Content-Disposition")), Size: size, SHA256: hash, CreatedTS: r.nowMS()}
	err = storage.InsertMedia(ctx, r.cfg.DB, m)
	if errors.Is(err, storage.ErrExists) {
		// Another process fetched it meanwhile: serve what it stored.
		return storage.LoadMedia(ctx, r.cfg.DB, origin, mediaID)
	}
	return m, err
}

// contentPart reads a multipart/mixed media answer up to its second part, the content (or
// its Location), and returns that part to be read. The first part, the metadata, must be a
// JSON object; it holds nothing we use yet.
func contentPart(header http.Header, body io.Reader) (*multipart.Part, error) {
	mediaType, params, err := mime.ParseMediaType(header.Get("Content-Type"))
	if err != nil || mediaType != "multipart/mixed" || params["boundary"] == "" {
		return nil, fmt.Errorf("answer is %q, not multipart/mixed with a boundary", header.Get("Content-Type"))
	}
	reader := multipart.NewReader(body, params["boundary"])
	metadata, err := reader.NextPart()
	if err != nil {
		return nil, fmt.Errorf("metadata part: %w", err)
	}
	raw, err := io.ReadAll(io.LimitReader(metadata, maxMetadataSize+1))
	var object map[string]json.RawMessage
	if err != nil || len(raw) > maxMetadataSize || json.Unmarshal(raw, &object) != nil {
		return nil, errors.New("metadata part is not a JSON object")
	}
	content, err := reader.NextPart()
	if err != nil {
		return nil, fmt.Errorf("content part: %w", err)
	}
	return content, nil
}

// followLocation fetches the URL that a content part's Location header gives.
func (r *Repository) followLocation(ctx context.Context, location string) (*http.Response, error) {
	u, err := url.Parse(location)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("bad Location %q", location)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	response, err := r.http.Do(req)
	if err != nil {
		return nil, err
	}
	if response.StatusCode != http.StatusOK {
		response.Body.Close()
		return nil, fmt.Errorf("location %s answered HTTP %d", u.Redacted(), response.StatusCode)
	}
	return response, nil
}

// remoteError is the error to give the client when the origin server did not give the
// media: its 404 and M_NOT_YET_UPLOADED passed on, M_TOO_LARGE as 502, anything else 502.
func (r *Repository) remoteError(origin string, err error) error {
	var remote *federation.RemoteError
	if errors.As(err, &remote) {
		switch {
		case remote.Status == http.StatusNotFound:
			return errNotFound()
		case remote.ErrCode == "M_NOT_YET_UPLOADED":
			return errNotYetUploaded()
		case remote.ErrCode == "M_TOO_LARGE":
			return httpapi.NewError(http.StatusBadGateway, "M_TOO_LARGE", "The media is too large for %s to serve", origin)
		}
	}
	r.cfg.Log.Warn("fetch remote media", "origin", origin, "err", err)
	return errFetchFailed(origin)
}

// errFetchFailed is the 502 for media its origin did not give. NOTSPEC: the spec names no
// error for it; Synapse answers 502 too.
func errFetchFailed(origin string) *httpapi.Error {
	return httpapi.NewError(http.StatusBadGateway, "M_UNKNOWN", "Could not fetch the media from %s", origin)
}

// newRedirectClient is the HTTP client that follows Location answers: another server
// chooses the URL, so it may connect only to public addresses, never to this machine or
// its private network (NOTSPEC: as Synapse's ip_range_blacklist), and follows a few
// redirects at most. The address check is at dial time (netguard.Control), after the
// name is resolved, on every connection, redirects included.
func newRedirectClient() *http.Client {
	dialer := netguard.Dialer(10 * time.Second)
	return &http.Client{
		Timeout: fetchGrace,
		Transport: &http.Transport{
			DialContext:           dialer.DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: time.Minute,
			ForceAttemptHTTP2:     true,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxLocationRedirects {
				return errors.New("too many redirects")
			}
			if req.URL.Scheme != "https" && req.URL.Scheme != "http" {
				return fmt.Errorf("redirect to %s URL", req.URL.Scheme)
			}
			return nil
		},
	}
}
