package media

import (
	"net/http"
	"net/url"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/spec"
)

// Routes mounts the content repository's client endpoints on the client router:
//
//	POST /_matrix/media/v3/upload                                   upload
//	POST /_matrix/media/v1/create                                   create a media ID to upload to later
//	PUT  /_matrix/media/v3/upload/{serverName}/{mediaId}            upload to it
//	GET  /_matrix/client/v1/media/config                            limits (also /_matrix/media/v3/config)
//	GET  /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}]
//	GET  /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}
//	GET  /_matrix/client/v1/media/preview_url                       (also /_matrix/media/v3/preview_url)
//	GET  /_matrix/media/v3/download/…, /_matrix/media/v3/thumbnail/…   frozen (see frozen)
//
// The /v3/ upload, config and preview_url endpoints answer under /r0/ too, as the rest of
// the client API does, for old clients.
func (r *Repository) Routes(router chi.Router) {
	h := func(fn httpapi.Handler) http.HandlerFunc { return fn.ServeHTTP }
	authed := func(fn func(w http.ResponseWriter, req *http.Request, user User) error) http.HandlerFunc {
		return h(func(w http.ResponseWriter, req *http.Request) error {
			user, err := r.cfg.Authenticate(req)
			if err != nil {
				return err
			}
			return fn(w, req, user)
		})
	}
	for _, version := range []string{"v3", "r0"} {
		prefix := "/_matrix/media/" + version
		router.Post(prefix+"/upload", authed(r.upload))
		router.Put(prefix+"/upload/{serverName}/{mediaId}", authed(r.uploadPending))
		router.Get(prefix+"/config", authed(r.config))
		router.Get(prefix+"/preview_url", authed(r.previewURL))
		router.Get(prefix+"/download/{serverName}/{mediaId}", h(r.frozen))
		router.Get(prefix+"/download/{serverName}/{mediaId}/{fileName}", h(r.frozen))
		router.Get(prefix+"/thumbnail/{serverName}/{mediaId}", h(r.frozen))
	}
	router.Post("/_matrix/media/v1/create", authed(r.create))
	router.Get("/_matrix/client/v1/media/config", authed(r.config))
	router.Get("/_matrix/client/v1/media/download/{serverName}/{mediaId}", authed(r.download))
	router.Get("/_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}", authed(r.download))
	router.Get("/_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}", authed(r.thumbnail))
	router.Get("/_matrix/client/v1/media/preview_url", authed(r.previewURL))
}

// FederationRoutes mounts the content repository's federation endpoints behind
// authenticate, the X-Matrix middleware (federation.Authenticator):
//
//	GET /_matrix/federation/v1/media/download/{mediaId}
//	GET /_matrix/federation/v1/media/thumbnail/{mediaId}
func (r *Repository) FederationRoutes(router chi.Router, authenticate func(http.Handler) http.Handler) {
	h := func(fn httpapi.Handler) http.HandlerFunc { return fn.ServeHTTP }
	router.Group(func(router chi.Router) {
		router.Use(authenticate)
		router.Get("/_matrix/federation/v1/media/download/{mediaId}", h(r.federationDownload))
		router.Get("/_matrix/federation/v1/media/thumbnail/{mediaId}", h(r.federationThumbnail))
	})
}

// pathParam is a path parameter, percent-decoded (chi hands back the escaped form when the
// request's escaping differs from Go's).
func pathParam(req *http.Request, name string) string {
	v := chi.URLParam(req, name)
	if req.URL.RawPath == "" {
		return v
	}
	if decoded, err := url.PathUnescape(v); err == nil {
		return decoded
	}
	return v
}

// mediaPath reads and checks the server name and media ID of a request path, as the
// content repository's security considerations require before they are used anywhere: a
// valid server name, and a media ID of only A-Za-z0-9, '_' and '-'.
func mediaPath(req *http.Request) (serverName, mediaID string, err error) {
	serverName = pathParam(req, "serverName")
	if _, parseErr := spec.ParseServerName(serverName); parseErr != nil {
		return "", "", httpapi.InvalidParam("Invalid server name %q", serverName)
	}
	mediaID = pathParam(req, "mediaId")
	if !validMediaID(mediaID) {
		return "", "", httpapi.InvalidParam("Invalid media ID")
	}
	return serverName, mediaID, nil
}

// validMediaID reports whether id is a media ID as the spec allows them ("Matrix Content
// (mxc://) URIs"): 1 to 255 characters of A-Za-z0-9, '_' and '-'. NOTSPEC: the length
// limit; ours are 24 characters.
func validMediaID(id string) bool {
	if id == "" || len(id) > maxNameLength {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
