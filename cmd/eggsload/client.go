package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// clientPrefix is where every Client-Server API endpoint this tool uses lives.
const clientPrefix = "/_matrix/client/v3"

// maxResponseBytes bounds what the tool reads of one response; an initial sync of the
// largest phase here is well below it.
const maxResponseBytes = 64 << 20

// client talks to one homeserver over plain HTTP on loopback.
type client struct {
	base string // "http://127.0.0.1:PORT"
	http *http.Client
}

// newClient makes a client whose transport keeps enough idle connections for every sender
// and listener to reuse its own: without that, each request would open a new TCP connection
// and the numbers would measure the kernel's handshakes instead of the server.
func newClient(base string) *client {
	transport := &http.Transport{
		Proxy:               nil, // loopback only, whatever the environment says
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 128,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &client{base: base, http: &http.Client{Transport: transport}}
}

// close drops the idle connections.
func (c *client) close() { c.http.CloseIdleConnections() }

// httpError is a response other than 200 OK.
type httpError struct {
	method, path string
	status       int
	body         []byte
}

func (e *httpError) Error() string {
	body := e.body
	if len(body) > 300 {
		body = body[:300]
	}
	return fmt.Sprintf("%s %s: HTTP %d: %s", e.method, e.path, e.status, bytes.TrimSpace(body))
}

// do sends one request with an optional JSON body and access token and decodes a 200
// response into out (when out is not nil). Any other status is an *httpError.
func (c *client) do(ctx context.Context, method, path, token string, body, out any) error {
	var reader io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		reader = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, reader)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	limited := io.LimitReader(resp.Body, maxResponseBytes)
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(limited)
		return &httpError{method: method, path: path, status: resp.StatusCode, body: data}
	}
	if out == nil {
		_, err = io.Copy(io.Discard, limited)
		return err
	}
	if err := json.NewDecoder(limited).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	return nil
}

// versions asks GET /_matrix/client/versions, which answers without authentication once the
// server is up.
func (c *client) versions(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/_matrix/client/versions", "", nil, nil)
}

// user is a registered account with its access token.
type user struct {
	ID    string
	Token string
}

// register creates an account through the m.login.dummy flow of open registration. A
// server that first answers 401 with a UIA session gets the same request again with that
// session (client-server API "User-interactive authentication").
func (c *client) register(ctx context.Context, username, password string) (*user, error) {
	authDict := map[string]any{"type": "m.login.dummy"}
	body := map[string]any{"username": username, "password": password, "auth": authDict}
	var resp struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
	}
	err := c.do(ctx, http.MethodPost, clientPrefix+"/register", "", body, &resp)
	var httpErr *httpError
	if errors.As(err, &httpErr) && httpErr.status == http.StatusUnauthorized {
		var uia struct {
			Session string `json:"session"`
		}
		if json.Unmarshal(httpErr.body, &uia) == nil && uia.Session != "" {
			authDict["session"] = uia.Session
			err = c.do(ctx, http.MethodPost, clientPrefix+"/register", "", body, &resp)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("register %s: %w", username, err)
	}
	if resp.AccessToken == "" {
		return nil, fmt.Errorf("register %s: no access token in the response", username)
	}
	return &user{ID: resp.UserID, Token: resp.AccessToken}, nil
}

// createRoom creates a public room and returns its ID.
func (c *client) createRoom(ctx context.Context, u *user, name string) (string, error) {
	var resp struct {
		RoomID string `json:"room_id"`
	}
	body := map[string]any{"preset": "public_chat", "name": name}
	if err := c.do(ctx, http.MethodPost, clientPrefix+"/createRoom", u.Token, body, &resp); err != nil {
		return "", err
	}
	if resp.RoomID == "" {
		return "", errors.New("createRoom: no room_id in the response")
	}
	return resp.RoomID, nil
}

// join joins u to the room.
func (c *client) join(ctx context.Context, u *user, roomID string) error {
	path := clientPrefix + "/rooms/" + url.PathEscape(roomID) + "/join"
	return c.do(ctx, http.MethodPost, path, u.Token, map[string]any{}, nil)
}

// sendText sends an m.text message with the given transaction ID.
func (c *client) sendText(ctx context.Context, u *user, roomID, txnID, body string) error {
	path := clientPrefix + "/rooms/" + url.PathEscape(roomID) + "/send/m.room.message/" + url.PathEscape(txnID)
	var resp struct {
		EventID string `json:"event_id"`
	}
	content := map[string]string{"msgtype": "m.text", "body": body}
	if err := c.do(ctx, http.MethodPut, path, u.Token, content, &resp); err != nil {
		return err
	}
	if resp.EventID == "" {
		return errors.New("send: no event_id in the response")
	}
	return nil
}

// syncResponse is the part of a /sync response the tool looks at.
type syncResponse struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events  []syncEvent `json:"events"`
				Limited bool        `json:"limited"`
			} `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
}

// syncEvent is one timeline event. The content stays raw: only m.room.message bodies are
// read, and other events' content may have any shape.
type syncEvent struct {
	Type    string          `json:"type"`
	Sender  string          `json:"sender"`
	EventID string          `json:"event_id"`
	Content json.RawMessage `json:"content"`
}

// sync calls GET /sync. An empty since is an initial sync; timeout 0 returns at once; an
// empty filter uses the server's default.
func (c *client) sync(ctx context.Context, u *user, since string, timeout time.Duration, filter string) (*syncResponse, error) {
	query := url.Values{}
	if since != "" {
		query.Set("since", since)
	}
	if timeout > 0 {
		query.Set("timeout", strconv.FormatInt(timeout.Milliseconds(), 10))
	}
	if filter != "" {
		query.Set("filter", filter)
	}
	path := clientPrefix + "/sync"
	if len(query) > 0 {
		path += "?" + query.Encode()
	}
	resp := &syncResponse{}
	if err := c.do(ctx, http.MethodGet, path, u.Token, nil, resp); err != nil {
		return nil, err
	}
	return resp, nil
}
