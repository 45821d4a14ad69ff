package media

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// store keeps files named by the SHA-256 of their content (see the package doc).
type store struct {
	content string
	tmp     string
}

// errTooLarge is returned by store.write when the content exceeds the limit.
var errTooLarge = errors.New("content too large")

// sourceError wraps an error reading the content being stored, as opposed to writing it: a
// client that went away, a remote server's broken answer.
type sourceError struct{ err error }

func (e *sourceError) Error() string { return "read content: " + e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// openStore makes the store's folders under dir and removes files in tmp/ last modified
// before staleBefore.
func openStore(dir string, staleBefore time.Time) (*store, error) {
	s := &store{content: filepath.Join(dir, "content"), tmp: filepath.Join(dir, "tmp")}
	for _, d := range []string{s.content, s.tmp} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	entries, err := os.ReadDir(s.tmp)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.ModTime().Before(staleBefore) {
			_ = os.Remove(filepath.Join(s.tmp, e.Name()))
		}
	}
	return s, nil
}

// path is the file of the content whose SHA-256 is hash (lower-case hex).
func (s *store) path(hash string) string {
	return filepath.Join(s.content, hash[:2], hash)
}

// write stores what src yields, up to limit bytes, and returns its SHA-256 and size. It
// streams: the content is never held in memory whole. More than limit bytes give
// errTooLarge and errors reading src a *sourceError; either way nothing is stored.
func (s *store) write(src io.Reader, limit int64) (hash string, size int64, err error) {
	tmp, err := os.CreateTemp(s.tmp, "upload-")
	if err != nil {
		return "", 0, err
	}
	defer func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	hasher := sha256.New()
	size, err = io.Copy(io.MultiWriter(tmp, hasher), &sourceReader{r: io.LimitReader(src, limit+1)})
	if err != nil {
		return "", 0, err
	}
	if size > limit {
		return "", 0, errTooLarge
	}
	// Synced before the rename and before the database row that points at it, so that a
	// crash never leaves a row whose file is empty.
	if err := tmp.Sync(); err != nil {
		return "", 0, err
	}
	if err := tmp.Close(); err != nil {
		return "", 0, err
	}
	hash = hex.EncodeToString(hasher.Sum(nil))
	final := s.path(hash)
	if _, err := os.Stat(final); err == nil {
		// The same content is stored already: keep that file.
		os.Remove(tmp.Name())
		tmp = nil
		return hash, size, nil
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
		return "", 0, err
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", 0, fmt.Errorf("store content: %w", err)
	}
	tmp = nil
	return hash, size, nil
}

// open opens the content whose SHA-256 is hash.
func (s *store) open(hash string) (*os.File, error) {
	if len(hash) != sha256.Size*2 {
		return nil, fmt.Errorf("bad content hash %q", hash)
	}
	return os.Open(s.path(hash))
}

// sourceReader marks the errors of the reader it wraps as *sourceError.
type sourceReader struct{ r io.Reader }

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		err = &sourceError{err}
	}
	return n, err
}
