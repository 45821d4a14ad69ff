package integration

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// buildEggs compiles the server binary once per test binary.
var buildEggs = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "eggs-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "eggs")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/scrambledeggs/eggs/cmd/eggs").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// process is an eggs server running as a child process.
type process struct {
	cmd *exec.Cmd
	url string
}

func startProcess(t *testing.T, env []string, addr string) *process {
	t.Helper()
	bin, err := buildEggs()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	if os.Getenv("EGGS_TEST_LOG") == "" {
		cmd.Stderr = nil
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, url: "http://" + addr}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(p.url + "/_matrix/client/versions")
		if err == nil {
			resp.Body.Close()
			return p
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("server at %s did not come up", addr)
	return nil
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestAcknowledgedEventsSurviveSIGKILL sends from several clients at once, kills the server
// with SIGKILL in the middle, restarts it and checks that every event whose send was
// acknowledged is there, once.
func TestAcknowledgedEventsSurviveSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills a server process")
	}
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			addr := freeAddr(t)
			env := []string{
				"EGGS_SERVER_NAME=localhost:" + addr[len("127.0.0.1:"):], "EGGS_CLIENT_ADDR=" + addr,
				"EGGS_DATA_DIR=" + t.TempDir(), "EGGS_REGISTRATION=open", "EGGS_RATE_LIMIT=off", "EGGS_LOG_LEVEL=error",
				"EGGS_FEDERATION_ADDR=off", // clients-only: no TLS certificate needed
			}
			if engine == "postgres" {
				env = append(env, "EGGS_DATABASE_URL="+storagetest.PostgresURL(t))
			}
			proc := startProcess(t, env, addr)
			ctx := context.Background()

			const senders = 4
			clients := make([]*mautrix.Client, senders)
			var roomID id.RoomID
			for i := range clients {
				cli, _ := mautrix.NewClient(proc.url, "", "")
				resp, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: fmt.Sprintf("sender%d", i), Password: "pw-pw-pw-pw"})
				if err != nil {
					t.Fatalf("register: %v", err)
				}
				cli.SetCredentials(resp.UserID, resp.AccessToken)
				clients[i] = cli
				if i == 0 {
					created, err := cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
					if err != nil {
						t.Fatalf("create room: %v", err)
					}
					roomID = created.RoomID
				} else if _, err := cli.JoinRoomByID(ctx, roomID); err != nil {
					t.Fatalf("join: %v", err)
				}
			}

			var mu sync.Mutex
			acked := map[id.EventID]bool{}
			var wg sync.WaitGroup
			stop := make(chan struct{})
			for i, cli := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for n := 0; n < 5000; n++ {
						select {
						case <-stop:
							return
						default:
						}
						resp, err := cli.SendText(ctx, roomID, fmt.Sprintf("%d-%d", i, n))
						if err != nil {
							return // the server is gone
						}
						mu.Lock()
						acked[resp.EventID] = true
						mu.Unlock()
					}
				}()
			}
			// Kill once a good number of sends were acknowledged.
			for waited := 0; waited < 600; waited++ {
				mu.Lock()
				n := len(acked)
				mu.Unlock()
				if n >= 200 {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err := proc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_, _ = proc.cmd.Process.Wait()
			close(stop)
			wg.Wait()
			if len(acked) == 0 {
				t.Fatal("no send was acknowledged before the kill")
			}

			proc = startProcess(t, env, addr)
			reader := clients[0]
			reader.HomeserverURL = mustParse(t, proc.url)
			found := map[id.EventID]int{}
			from := ""
			for page := 0; page < 1000; page++ {
				resp, err := reader.Messages(ctx, roomID, from, "", mautrix.DirectionBackward, nil, 1000)
				if err != nil {
					t.Fatalf("messages after restart: %v", err)
				}
				for _, e := range resp.Chunk {
					found[e.ID]++
				}
				if resp.End == "" {
					break
				}
				from = resp.End
			}
			for eventID := range acked {
				if found[eventID] != 1 {
					t.Fatalf("acknowledged event %s found %d times after SIGKILL and restart", eventID, found[eventID])
				}
			}
			t.Logf("%d acknowledged events all present after SIGKILL", len(acked))
		})
	}
}
