package rooms

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"testing"

	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// fakePolicyServer signs every event it is asked about, unless told to refuse or to sign
// with a key the room does not know.
type fakePolicyServer struct {
	name   string
	key    ed25519.PrivateKey
	refuse error
	// wrongKey signs with a key other than the one in m.room.policy.
	wrongKey bool
	asked    []string
}

func (f *fakePolicyServer) Sign(_ context.Context, ev *spec.Event, ps spec.PolicyServer) (*spec.Event, error) {
	f.asked = append(f.asked, ev.EventID())
	if ps.ServerName != f.name {
		return nil, errors.New("asked the wrong server")
	}
	if f.refuse != nil {
		return nil, f.refuse
	}
	key := f.key
	if f.wrongKey {
		_, key, _ = ed25519.GenerateKey(nil)
	}
	redacted, err := spec.RedactEventJSON(ev.JSON(), ev.Version())
	if err != nil {
		return nil, err
	}
	signedJSON, err := spec.SignJSON(redacted, f.name, spec.PolicyServerKeyID, key)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(signedJSON, &doc); err != nil {
		return nil, err
	}
	return ev.WithSignature(f.name, spec.PolicyServerKeyID, doc.Signatures[f.name][spec.PolicyServerKeyID])
}

// hasPolicySignature reports whether the stored event (read through a fresh room server, as
// after a restart) carries a valid signature of f.
func (f *fakePolicyServer) hasPolicySignature(t *testing.T, db *storage.DB, eventID string) bool {
	t.Helper()
	e, err := newTestServer(t, db).EventByID(context.Background(), eventID)
	if err != nil {
		t.Fatalf("load %s: %v", eventID, err)
	}
	return spec.VerifyPolicyServerSignature(e.Event, spec.PolicyServer{ServerName: f.name, Key: f.key.Public().(ed25519.PublicKey)}) == nil
}

var errPolicyRefused = errors.New("M_FORBIDDEN: the message appears to contain possible spam")

// TestPolicyServerSend covers our own events in a room with a Policy Server (server-server
// API §"Determining if a Policy Server is enabled in a room", §"Asking for a Policy Server
// signature on an event"): signed before they are stored, not stored when the Policy Server
// refuses or its signature does not verify, and m.room.policy itself never sent to it.
func TestPolicyServerSend(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		for _, version := range []string{"10", "12"} {
			t.Run("v"+version, func(t *testing.T) { testPolicyServerSend(t, db, version) })
		}
	})
}

func testPolicyServerSend(t *testing.T, db *storage.DB, version string) {
	ctx := context.Background()
	s := newTestServer(t, db)
	_, psKey, _ := ed25519.GenerateKey(nil)
	ps := &fakePolicyServer{name: "policy.example", key: psKey}
	s.SetPolicySigner(ps)
	remote := newRemote("policy.example")
	keys := remote.keys(s)
	alice, bot := "@alice:test.example", "@bot:policy.example"
	roomID := createTestRoom(t, s, version, alice)
	message := func(body string) EventRequest {
		content, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": body})
		return EventRequest{Sender: alice, Type: "m.room.message", Content: content}
	}

	// No m.room.policy: the Policy Server is not asked.
	sent, err := s.Send(ctx, roomID, message("no policy"))
	if err != nil || len(ps.asked) != 0 {
		t.Fatalf("send without m.room.policy: %v, asked %v", err, ps.asked)
	}

	// m.room.policy names a server with no joined user: the room still uses no Policy Server.
	policy := stateReq(alice, "m.room.policy", "", map[string]any{
		"via": ps.name, "public_keys": map[string]string{"ed25519": spec.EncodeBase64(psKey.Public().(ed25519.PublicKey))},
	})
	if _, err := s.Send(ctx, roomID, policy); err != nil {
		t.Fatalf("send m.room.policy: %v", err)
	}
	if sent, err = s.Send(ctx, roomID, message("nobody of the policy server here")); err != nil || len(ps.asked) != 0 {
		t.Fatalf("send with the policy server not joined: %v, asked %v", err, ps.asked)
	}
	if ps.hasPolicySignature(t, db, sent[0].EventID()) {
		t.Fatal("an event was signed by a policy server not in use")
	}

	// Its bot joins (the room uses no Policy Server before the join is in): now it does.
	state, prev := head(t, s, roomID)
	join := remote.event(t, s, roomID, state, prev, bot, "m.room.member", ptr(bot), map[string]string{"membership": "join"})
	if got, err := s.ReceiveEvent(ctx, join, keys); err != nil || got.Status != storage.EventAccepted {
		t.Fatalf("bot joins: %+v, %v", got, err)
	}
	if len(ps.asked) != 0 {
		t.Fatalf("the join was sent to the policy server: %v", ps.asked)
	}

	// A message is signed before it is stored; its ID does not change.
	sent, err = s.Send(ctx, roomID, message("hello"))
	if err != nil {
		t.Fatalf("send in a room with a policy server: %v", err)
	}
	if len(ps.asked) != 1 || ps.asked[0] != sent[0].EventID() {
		t.Fatalf("asked %v, want %s", ps.asked, sent[0].EventID())
	}
	if !ps.hasPolicySignature(t, db, sent[0].EventID()) {
		t.Fatal("the stored event lacks the policy server's signature")
	}

	// m.room.policy with an empty state key is never sent to the Policy Server, state events
	// of other types are.
	ps.asked = nil
	if _, err := s.Send(ctx, roomID, policy); err != nil || len(ps.asked) != 0 {
		t.Fatalf("send m.room.policy again: %v, asked %v", err, ps.asked)
	}
	if _, err := s.Send(ctx, roomID, stateReq(alice, "m.room.topic", "", map[string]string{"topic": "t"})); err != nil || len(ps.asked) != 1 {
		t.Fatalf("send a topic: %v, asked %v", err, ps.asked)
	}

	// A refusal reaches the client and nothing is stored, not even the transaction ID.
	for _, tc := range []struct {
		name     string
		refuse   error
		wrongKey bool
	}{{"refused", errPolicyRefused, false}, {"bad signature", nil, true}} {
		ps.refuse, ps.wrongKey = tc.refuse, tc.wrongKey
		_, before := head(t, s, roomID)
		req := message("spam")
		req.DeviceID, req.TxnID = "DEV", "txn-"+tc.name
		_, err := s.Send(ctx, roomID, req)
		if err == nil || (tc.refuse != nil && !errors.Is(err, tc.refuse)) {
			t.Fatalf("%s: send gave %v, want the policy server's error", tc.name, err)
		}
		if _, after := head(t, s, roomID); after.EventID() != before.EventID() {
			t.Fatalf("%s: the room moved on to %s", tc.name, after.EventID())
		}
		ps.refuse, ps.wrongKey = nil, false
		retried, err := s.Send(ctx, roomID, req)
		if err != nil || retried[0].EventID() == before.EventID() || !ps.hasPolicySignature(t, db, retried[0].EventID()) {
			t.Fatalf("%s: retry after the refusal: %v", tc.name, err)
		}
	}
}

// TestPolicyServerReceive covers received events in a room with a Policy Server
// (§"Validating Policy Server signatures"): one without a valid signature is sent to the
// Policy Server once, accepted with the signature it returns, and soft-failed if it returns
// none.
func TestPolicyServerReceive(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestServer(t, db)
		_, psKey, _ := ed25519.GenerateKey(nil)
		ps := &fakePolicyServer{name: "policy.example", key: psKey}
		s.SetPolicySigner(ps)
		remote := newRemote("policy.example")
		keys := remote.keys(s)
		// The Policy Server is the bot's homeserver too: its policy_server signature is not
		// mistaken for one by its published keys (which remote.keys answers for any key ID).
		alice, bot := "@alice:test.example", "@bot:policy.example"
		roomID := createTestRoom(t, s, "12", alice)
		if _, err := s.Send(ctx, roomID, stateReq(alice, "m.room.policy", "", map[string]any{
			"via": ps.name, "public_keys": map[string]string{"ed25519": spec.EncodeBase64(psKey.Public().(ed25519.PublicKey))},
		})); err != nil {
			t.Fatal(err)
		}
		receive := func(evType string, stateKey *string, content any, sign bool) (*spec.Event, *Event) {
			t.Helper()
			state, prev := head(t, s, roomID)
			ev := remote.event(t, s, roomID, state, prev, bot, evType, stateKey, content)
			if sign {
				var err error
				if ev, err = ps.Sign(ctx, ev, spec.PolicyServer{ServerName: ps.name}); err != nil {
					t.Fatal(err)
				}
			}
			ps.asked = nil
			got, err := s.ReceiveEvent(ctx, ev, keys)
			if err != nil {
				t.Fatalf("receive %s: %v", evType, err)
			}
			return ev, got
		}
		if _, got := receive("m.room.member", ptr(bot), map[string]string{"membership": "join"}, false); got.Status != storage.EventAccepted || len(ps.asked) != 0 {
			t.Fatalf("bot joins: %v, asked %v", got.Status, ps.asked)
		}

		// Signed already: accepted without asking.
		ev, got := receive("m.room.message", nil, map[string]string{"body": "signed"}, true)
		if got.Status != storage.EventAccepted || len(ps.asked) != 0 || !ps.hasPolicySignature(t, db, ev.EventID()) {
			t.Fatalf("signed message: %v, asked %v", got.Status, ps.asked)
		}

		// Unsigned, and the Policy Server signs when asked: accepted, stored with the signature.
		ev, got = receive("m.room.message", nil, map[string]string{"body": "unsigned"}, false)
		if got.Status != storage.EventAccepted || len(ps.asked) != 1 || !ps.hasPolicySignature(t, db, ev.EventID()) {
			t.Fatalf("unsigned message signed on request: %v, asked %v", got.Status, ps.asked)
		}

		// Unsigned, and the Policy Server refuses: soft-failed.
		ps.refuse = errPolicyRefused
		_, got = receive("m.room.message", nil, map[string]string{"body": "spam"}, false)
		if got.Status != storage.EventSoftFailed || len(ps.asked) != 1 {
			t.Fatalf("refused message: %v, asked %v", got.Status, ps.asked)
		}

		// Signed with a key the room has not got: asked again, soft-failed when refused.
		ps.refuse, ps.wrongKey = nil, true
		state, prev := head(t, s, roomID)
		stale, err := ps.Sign(ctx, remote.event(t, s, roomID, state, prev, bot, "m.room.message", nil, map[string]string{"body": "stale"}), spec.PolicyServer{ServerName: ps.name})
		if err != nil {
			t.Fatal(err)
		}
		ps.refuse, ps.asked = errPolicyRefused, nil
		if got, err := s.ReceiveEvent(ctx, stale, keys); err != nil || got.Status != storage.EventSoftFailed || len(ps.asked) != 1 {
			t.Fatalf("message with a stale signature: %+v, %v, asked %v", got, err, ps.asked)
		}

		// The bot leaves (signed, as it is still in the room before): no more Policy Server.
		ps.refuse, ps.wrongKey = nil, false
		if _, got := receive("m.room.member", ptr(bot), map[string]string{"membership": "leave"}, false); got.Status != storage.EventAccepted || len(ps.asked) != 1 {
			t.Fatalf("bot leaves: %v, asked %v", got.Status, ps.asked)
		}
		ps.refuse = errPolicyRefused
		ps.asked = nil
		if _, err := s.Send(ctx, roomID, EventRequest{Sender: alice, Type: "m.room.message", Content: json.RawMessage(`{"body":"after"}`)}); err != nil || len(ps.asked) != 0 {
			t.Fatalf("message after the policy server left: %v, asked %v", err, ps.asked)
		}
	})
}
