package integration

import (
	"context"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/testserver"
	"github.com/scrambledeggs/eggs/tlsutil"
)

func mustParse(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// federatedServers starts n eggs servers on engine, federating on loopback with certificates
// from one test CA, which it returns too for tests that sign their own federation requests.
func federatedServers(t *testing.T, engine storage.Engine, n int) (*tlsutil.TestCA, []*testserver.Server) {
	t.Helper()
	ca := testserver.NewCA(t)
	servers := make([]*testserver.Server, n)
	for i := range servers {
		servers[i] = testserver.StartFederated(t, engine, ca)
	}
	return ca, servers
}

// federatedPair starts two federated eggs servers on engine.
func federatedPair(t *testing.T, engine storage.Engine) (hs1, hs2 *testserver.Server) {
	t.Helper()
	_, servers := federatedServers(t, engine, 2)
	return servers[0], servers[1]
}

// createRoom has cli create the room req describes.
func createRoom(t *testing.T, cli *mautrix.Client, req *mautrix.ReqCreateRoom) *mautrix.RespCreateRoom {
	t.Helper()
	room, err := cli.CreateRoom(context.Background(), req)
	if err != nil {
		t.Fatalf("%s creates a room: %v", cli.UserID, err)
	}
	return room
}

// joinVia has each client join roomID through via's server (make_join/send_join when the
// client's own server is not in the room).
func joinVia(t *testing.T, roomID id.RoomID, via *testserver.Server, clients ...*mautrix.Client) {
	t.Helper()
	for _, c := range clients {
		if _, err := c.JoinRoom(context.Background(), roomID.String(), &mautrix.ReqJoinRoom{Via: []string{via.ServerName}}); err != nil {
			t.Fatalf("%s joins through %s: %v", c.UserID, via.ServerName, err)
		}
	}
}

// initialSync runs cli's first /sync and returns its next since token.
func initialSync(t *testing.T, cli *mautrix.Client) string {
	t.Helper()
	return syncUntil(t, cli, "", func(*mautrix.RespSync) bool { return true })
}
