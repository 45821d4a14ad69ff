package media

import (
	"mime"
	"strings"
	"unicode/utf8"
)

// inlineTypes are the content types that may be served with Content-Disposition: inline
// (client-server API "Serving inline content"); everything else is an attachment.
var inlineTypes = map[string]bool{
	"text/css": true, "text/plain": true, "text/csv": true,
	"application/json": true, "application/ld+json": true,
	"image/jpeg": true, "image/gif": true, "image/png": true, "image/apng": true, "image/webp": true, "image/avif": true,
	"video/mp4": true, "video/webm": true, "video/ogg": true, "video/quicktime": true,
	"audio/mp4": true, "audio/webm": true, "audio/aac": true, "audio/mpeg": true, "audio/ogg": true,
	"audio/wave": true, "audio/wav": true, "audio/x-wav": true, "audio/x-pn-wav": true, "audio/flac": true, "audio/x-flac": true,
}

// servesInline reports whether content of contentType may be served inline: its media type,
// parameters aside and case folded, is one of inlineTypes.
func servesInline(contentType string) bool {
	mediaType, _, err := mime.ParseMediaType(contentType)
	return err == nil && inlineTypes[mediaType]
}

// contentDisposition is the Content-Disposition header for content of contentType named
// filename ("" for none): inline for the types that may be, attachment otherwise
// (authed-content-repo.yaml, "Content-Disposition").
//
// The filename is written as RFC 6266 §4.1 allows: as a bare token when it is plain ASCII
// that needs no quoting, otherwise as filename* in RFC 8187's UTF-8 percent-encoding, which
// can carry any name and that every current browser reads. NOTSPEC: Synapse does the same,
// and never writes the quoted-string form, which user agents unescape inconsistently.
// Invalid UTF-8 in a name becomes U+FFFD.
func contentDisposition(contentType, filename string) string {
	disposition := "attachment"
	if servesInline(contentType) {
		disposition = "inline"
	}
	return disposition + filenameParam(filename)
}

// filenameParam is "; filename=…" or "; filename*=utf-8”…" for name, or "" for no name.
func filenameParam(name string) string {
	if name == "" {
		return ""
	}
	name = strings.ToValidUTF8(name, "\uFFFD")
	if isToken(name) {
		return "; filename=" + name
	}
	return "; filename*=utf-8''" + percentEncode(name)
}

// isToken reports whether s is an RFC 9110 §5.6.2 token that is also safe to leave bare in
// a filename: '%' is left out, as some user agents percent-decode bare filenames.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isAttrChar(s[i]) && s[i] != '*' && s[i] != '\'' {
			return false
		}
	}
	return true
}

// isAttrChar reports whether c is an RFC 8187 §3.2.1 attr-char, which stands unencoded in
// an ext-value.
func isAttrChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$&+-.^_`|~", c) >= 0
}

// percentEncode encodes the bytes of s that are not attr-chars as %XX (RFC 8187 §3.2.1).
func percentEncode(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) * 3)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAttrChar(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0x0f])
	}
	return b.String()
}

// dispositionFilename is the filename of a Content-Disposition header another server sent,
// "" when it has none or none we would keep (see validName).
func dispositionFilename(header string) string {
	_, params, err := mime.ParseMediaType(header)
	if err != nil || !validName(params["filename"]) {
		return ""
	}
	return params["filename"]
}

// validName reports whether name may be stored as an upload's filename or content type:
// valid UTF-8 of at most maxNameLength bytes with no control characters.
func validName(name string) bool {
	if len(name) > maxNameLength || !utf8.ValidString(name) {
		return false
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}
