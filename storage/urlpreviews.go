package storage

import (
	"context"
	"database/sql"
	"errors"
)

// Queries of the URL preview cache (client-server API "Content repository", GET
// /preview_url): one row per URL previewed, the answer given for it, until it expires.

// URLPreview is the answer cached for one URL: an Open Graph object, or the error its fetch
// failed with.
type URLPreview struct {
	URL string
	// OG is the answer, a JSON object; "" when the fetch failed.
	OG string
	// Status, ErrCode and Message are the error of a failed fetch; Status is 200 otherwise.
	Status    int
	ErrCode   string
	Message   string
	CreatedTS int64
	ExpiresTS int64
}

// LoadURLPreview reads the preview cached for url that has not expired at nowMS;
// ErrNotFound if there is none.
func LoadURLPreview(ctx context.Context, q Querier, url string, nowMS int64) (*URLPreview, error) {
	p := &URLPreview{URL: url}
	err := q.QueryRow(ctx, `SELECT og, status, errcode, message, created_ts, expires_ts FROM url_previews
		WHERE url = $1 AND expires_ts > $2`, url, nowMS).Scan(&p.OG, &p.Status, &p.ErrCode, &p.Message, &p.CreatedTS, &p.ExpiresTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return p, nil
}

// StoreURLPreview caches a preview, replacing the one cached for its URL.
func StoreURLPreview(ctx context.Context, q Querier, p *URLPreview) error {
	_, err := q.Exec(ctx, `INSERT INTO url_previews (url, og, status, errcode, message, created_ts, expires_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (url) DO UPDATE SET og = excluded.og, status = excluded.status, errcode = excluded.errcode,
			message = excluded.message, created_ts = excluded.created_ts, expires_ts = excluded.expires_ts`,
		p.URL, p.OG, p.Status, p.ErrCode, p.Message, p.CreatedTS, p.ExpiresTS)
	return err
}

// DeleteExpiredURLPreviews forgets the previews expired at nowMS, and returns how many.
func DeleteExpiredURLPreviews(ctx context.Context, q Querier, nowMS int64) (int64, error) {
	res, err := q.Exec(ctx, `DELETE FROM url_previews WHERE expires_ts <= $1`, nowMS)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
