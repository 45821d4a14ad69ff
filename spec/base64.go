package spec

import (
	"encoding/base64"
	"strings"
)

// Unpadded Base64 (appendices §"Unpadded Base64" and §"URL-safe unpadded Base64").
//
// Matrix writes binary values (hashes, signatures, keys) as RFC 4648 base64 without "="
// padding. Decoders "SHOULD accept input with or without padding characters", so the decode
// helpers below strip trailing padding before decoding.

// EncodeBase64 encodes b as unpadded standard base64.
func EncodeBase64(b []byte) string { return base64.RawStdEncoding.EncodeToString(b) }

// EncodeBase64URL encodes b as unpadded URL-safe base64 ("-" and "_" for 62 and 63).
func EncodeBase64URL(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// DecodeBase64 decodes standard base64, padded or unpadded.
func DecodeBase64(s string) ([]byte, error) {
	return base64.RawStdEncoding.DecodeString(trimPadding(s))
}

// DecodeBase64URL decodes URL-safe base64, padded or unpadded.
func DecodeBase64URL(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(trimPadding(s))
}

// trimPadding removes the at most two "=" that RFC 4648 padding can add, and only when they
// make the length a multiple of four, so that misplaced "=" still fail to decode.
func trimPadding(s string) string {
	if len(s)%4 != 0 || !strings.HasSuffix(s, "=") {
		return s
	}
	trimmed := strings.TrimSuffix(s, "=")
	if strings.HasSuffix(trimmed, "=") {
		trimmed = strings.TrimSuffix(trimmed, "=")
	}
	return trimmed
}
