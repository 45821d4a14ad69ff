package federation

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// newThirdPartyServer is a gapServer that also serves the third-party invite endpoints:
// exchange_third_party_invite behind X-Matrix authentication, 3pid/onbind without.
func newThirdPartyServer(t *testing.T, db *storage.DB, clock *fakeClock) *gapServer {
	t.Helper()
	g := newGapServer(t, db, clock)
	router := chi.NewRouter()
	Routes(router, g.keys, g.ring)
	g.api.Routes(router)
	auth := &Authenticator{ServerName: g.name, Keys: g.ring, Now: clock.Now, MaxBodySize: maxExchangeBody}
	router.Group(func(r chi.Router) {
		r.Use(auth.Middleware)
		g.api.thirdPartyRoutes(r)
	})
	g.api.openThirdPartyRoutes(router)
	g.serve(router.ServeHTTP)
	return g
}

// identityServer signs third-party invite objects as an identity server would.
type identityServer struct {
	name  string
	keyID string
	key   ed25519.PrivateKey
}

// publicKey is the identity server's public key, unpadded base64.
func (is *identityServer) publicKey() string {
	return spec.EncodeBase64(is.key.Public().(ed25519.PublicKey))
}

// sign is the signed object of a third-party invite of mxid with token.
func (is *identityServer) sign(t *testing.T, mxid, token string) json.RawMessage {
	t.Helper()
	raw, _ := json.Marshal(map[string]string{"mxid": mxid, "token": token})
	signed, err := spec.SignJSON(raw, is.name, is.keyID, is.key)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// thirdPartyInviteContent is an m.room.third_party_invite content with is's key.
func thirdPartyInviteContent(is *identityServer, displayName string) json.RawMessage {
	validity := "https://" + is.name + "/_matrix/identity/v2/pubkey/isvalid"
	raw, _ := json.Marshal(map[string]any{
		"display_name":     displayName,
		"key_validity_url": validity,
		"public_key":       is.publicKey(),
		"public_keys":      []map[string]string{{"public_key": is.publicKey(), "key_validity_url": validity}},
	})
	return raw
}

// memberContent is the content of user's member event in the room's current state.
func memberContent(t *testing.T, rs *rooms.Server, roomID, user string) map[string]json.RawMessage {
	t.Helper()
	e, err := rs.CurrentStateEvent(context.Background(), roomID, "m.room.member", user)
	if err != nil || e == nil {
		t.Fatalf("no member event of %s in %s: %v", user, roomID, err)
	}
	var content map[string]json.RawMessage
	if err := json.Unmarshal(e.Content(), &content); err != nil {
		t.Fatal(err)
	}
	return content
}

// TestThirdPartyInvites: alice on hs1 has a room with two m.room.third_party_invite events
// of an identity server. The exchange endpoint refuses what the spec and the auth rules
// refuse; then the identity server reports bindings: carol of hs2 through hs2's onbind,
// which asks hs1 for the exchange, and hs1 issues the invite to hs2; dan of hs1 through
// hs1's onbind, which issues the invite itself. Each invite carries the signed object and
// the display name of the room's m.room.third_party_invite.
func TestThirdPartyInvites(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		clock := newFakeClock()
		hs1 := newThirdPartyServer(t, db, clock)
		hs2 := newThirdPartyServer(t, storagetest.NewDB(t, db.Engine()), clock)
		alice, carol, dan := "@alice:"+hs1.name, "@carol:"+hs2.name, "@dan:"+hs1.name
		for _, u := range []struct {
			db   *storage.DB
			user string
		}{{hs2.api.DB, carol}, {hs1.api.DB, dan}} {
			if err := storage.InsertUser(ctx, u.db, &storage.UserRow{UserID: u.user}, clock.Now().UnixMilli()); err != nil {
				t.Fatal(err)
			}
		}
		is := &identityServer{name: "id.example", keyID: "ed25519:0", key: testKey("id.example")}
		rv, _ := spec.LookupRoomVersion("12")
		empty, tok1, tok2 := "", "token-carol", "token-dan"
		roomID, _, err := hs1.rs.CreateRoom(ctx, rv, alice, json.RawMessage(`{"room_version":"12"}`), []rooms.EventRequest{
			{Sender: alice, Type: "m.room.member", StateKey: &alice, Content: json.RawMessage(`{"membership":"join"}`)},
			{Sender: alice, Type: "m.room.join_rules", StateKey: &empty, Content: json.RawMessage(`{"join_rule":"invite"}`)},
			{Sender: alice, Type: thirdPartyInviteType, StateKey: &tok1, Content: thirdPartyInviteContent(is, "car...@example.org")},
			{Sender: alice, Type: thirdPartyInviteType, StateKey: &tok2, Content: thirdPartyInviteContent(is, "dan...@example.org")},
		})
		if err != nil {
			t.Fatal(err)
		}

		// Exchange refusals, asked by hs2 with X-Matrix authentication.
		exchange := func(path string, body map[string]any) (int, string) {
			t.Helper()
			err := hs2.api.Client.DoJSON(ctx, Request{Method: http.MethodPut, Destination: hs1.name, URI: path, Body: body}, nil)
			if err == nil {
				return http.StatusOK, ""
			}
			var remote *RemoteError
			if !errors.As(err, &remote) {
				t.Fatalf("exchange: %v", err)
			}
			return remote.Status, remote.ErrCode
		}
		request := func(room, sender, target string, signed json.RawMessage) map[string]any {
			return map[string]any{"type": "m.room.member", "room_id": room, "sender": sender, "state_key": target,
				"content": map[string]any{"membership": "invite",
					"third_party_invite": map[string]any{"display_name": "whoever", "signed": signed}}}
		}
		path := exchangeThirdPartyInvitePath + url.PathEscape(roomID)
		forger := &identityServer{name: "id.example", keyID: "ed25519:0", key: testKey("forger")}
		unknownRoom := "!unknown:" + hs1.name
		for _, c := range []struct {
			name    string
			path    string
			body    map[string]any
			status  int
			errcode string
		}{
			{"room_id other than the path's", path, request("!other:"+hs1.name, alice, carol, is.sign(t, carol, tok1)), 400, "M_INVALID_PARAM"},
			{"invitee not of the asking server", path, request(roomID, alice, "@carol:elsewhere.example", is.sign(t, "@carol:elsewhere.example", tok1)), 400, "M_INVALID_PARAM"},
			{"sender not of this server", path, request(roomID, "@eve:"+hs2.name, carol, is.sign(t, carol, tok1)), 400, "M_INVALID_PARAM"},
			{"no signed object", path, request(roomID, alice, carol, json.RawMessage(`{"mxid":"x"}`)), 400, "M_INVALID_PARAM"},
			{"unknown room", exchangeThirdPartyInvitePath + url.PathEscape(unknownRoom), request(unknownRoom, alice, carol, is.sign(t, carol, tok1)), 404, "M_NOT_FOUND"},
			{"unknown token", path, request(roomID, alice, carol, is.sign(t, carol, "no-such-token")), 403, "M_FORBIDDEN"},
			{"signature of another key", path, request(roomID, alice, carol, forger.sign(t, carol, tok1)), 403, "M_FORBIDDEN"},
			{"signed for another user", path, request(roomID, alice, carol, is.sign(t, "@mallory:"+hs2.name, tok1)), 403, "M_FORBIDDEN"},
		} {
			if status, errcode := exchange(c.path, c.body); status != c.status || errcode != c.errcode {
				t.Errorf("%s: %d %s, want %d %s", c.name, status, errcode, c.status, c.errcode)
			}
		}
		if e, _ := hs1.rs.CurrentStateEvent(ctx, roomID, "m.room.member", carol); e != nil {
			t.Fatalf("a refused exchange left %s", e.Content())
		}

		// onbind refusals.
		onbind := func(g *gapServer, body any) (int, string) {
			t.Helper()
			raw, _ := json.Marshal(body)
			req, err := http.NewRequest(http.MethodPut, g.srv.URL+onBindPath, bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := g.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var e struct {
				ErrCode string `json:"errcode"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&e)
			return resp.StatusCode, e.ErrCode
		}
		binding := func(mxid, address, token string) map[string]any {
			return map[string]any{"medium": "email", "address": address, "mxid": mxid,
				"invites": []map[string]any{{"medium": "email", "address": address, "mxid": mxid, "room_id": roomID,
					"sender": alice, "signed": is.sign(t, mxid, token)}}}
		}
		if status, errcode := onbind(hs2, map[string]any{"address": "a@example.org", "mxid": carol, "invites": []any{}}); status != 400 || errcode != "M_MISSING_PARAM" {
			t.Errorf("onbind without medium: %d %s", status, errcode)
		}
		if status, errcode := onbind(hs2, binding(dan, "dan@example.org", tok2)); status != 400 || errcode != "M_INVALID_PARAM" {
			t.Errorf("onbind for a user of another server: %d %s", status, errcode)
		}
		if status, errcode := onbind(hs2, binding("@nobody:"+hs2.name, "n@example.org", tok1)); status != 404 || errcode != "M_NOT_FOUND" {
			t.Errorf("onbind for an unknown user: %d %s", status, errcode)
		}

		// carol binds: hs2 asks hs1, which invites her through hs2.
		if status, errcode := onbind(hs2, binding(carol, "carol@example.org", tok1)); status != 200 {
			t.Fatalf("onbind of carol: %d %s", status, errcode)
		}
		content := memberContent(t, hs1.rs, roomID, carol)
		if string(content["membership"]) != `"invite"` {
			t.Fatalf("carol's membership on hs1: %s", content["membership"])
		}
		var tpi struct {
			DisplayName string          `json:"display_name"`
			Signed      json.RawMessage `json:"signed"`
		}
		if err := json.Unmarshal(content["third_party_invite"], &tpi); err != nil || tpi.DisplayName != "car...@example.org" {
			t.Fatalf("carol's third_party_invite: %s (%v)", content["third_party_invite"], err)
		}
		if !bytes.Equal(mustCanonical(t, tpi.Signed), mustCanonical(t, is.sign(t, carol, tok1))) {
			t.Fatalf("the signed object changed: %s", tpi.Signed)
		}
		if kept, err := hs2.rs.OutsideMembership(ctx, roomID, carol); err != nil || kept == nil {
			t.Fatalf("hs2 did not keep carol's invite: %v, %v", kept, err)
		}

		// dan binds: his server is the inviter's and in the room, so it issues the invite.
		if status, errcode := onbind(hs1, binding(dan, "dan@example.org", tok2)); status != 200 {
			t.Fatalf("onbind of dan: %d %s", status, errcode)
		}
		content = memberContent(t, hs1.rs, roomID, dan)
		if err := json.Unmarshal(content["third_party_invite"], &tpi); err != nil || string(content["membership"]) != `"invite"` ||
			tpi.DisplayName != "dan...@example.org" {
			t.Fatalf("dan's member event: %v (%v)", content, err)
		}
		// An invite whose signature fails is skipped: the notification still succeeds.
		if status, _ := onbind(hs1, map[string]any{"medium": "email", "address": "d@example.org", "mxid": dan,
			"invites": []map[string]any{{"medium": "email", "address": "d@example.org", "mxid": dan, "room_id": roomID,
				"sender": alice, "signed": forger.sign(t, dan, tok2)}}}); status != 200 {
			t.Fatalf("onbind with a forged invite: %d", status)
		}
	})
}
