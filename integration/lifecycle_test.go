package integration

import (
	"context"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
)

// TestSIGTERMAndAdminCLI stops a server holding a long-polling /sync with SIGTERM (it must
// exit cleanly, well within 10 s), creates a user with `eggs user create` on its data, and
// checks that the user can log in once the server is back.
func TestSIGTERMAndAdminCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a server process")
	}
	addr := freeAddr(t)
	serverName := "localhost:" + addr[strings.LastIndexByte(addr, ':')+1:]
	env := []string{
		"EGGS_SERVER_NAME=" + serverName, "EGGS_CLIENT_ADDR=" + addr, "EGGS_DATA_DIR=" + t.TempDir(),
		"EGGS_REGISTRATION=open", "EGGS_RATE_LIMIT=off", "EGGS_LOG_LEVEL=error",
		"EGGS_FEDERATION_ADDR=off", // clients-only: no TLS certificate needed
	}
	proc := startProcess(t, env, addr)
	ctx := context.Background()
	cli, _ := mautrix.NewClient(proc.url, "", "")
	resp, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "sleeper", Password: "pw-pw-pw-pw"})
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	cli.SetCredentials(resp.UserID, resp.AccessToken)
	first, err := cli.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	syncDone := make(chan error, 1)
	go func() {
		_, err := cli.SyncRequest(ctx, 60000, first.NextBatch, "", false, event.PresenceOnline)
		syncDone <- err
	}()
	time.Sleep(300 * time.Millisecond) // let the long-poll start waiting

	if err := proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- proc.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("server exited with %v after SIGTERM, want a clean exit", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server still running 10 s after SIGTERM")
	}
	select {
	case <-syncDone: // answered or cut: either way not left hanging
	case <-time.After(5 * time.Second):
		t.Fatal("the long-polling /sync was left hanging after shutdown")
	}

	bin, err := buildEggs()
	if err != nil {
		t.Fatal(err)
	}
	create := exec.Command(bin, "user", "create", "--username", "admin", "--password-stdin", "--admin")
	create.Env = append(create.Environ(), env...)
	create.Stdin = strings.NewReader("an admin passphrase\n")
	if out, err := create.CombinedOutput(); err != nil || !strings.Contains(string(out), "@admin:"+serverName) {
		t.Fatalf("eggs user create: %v\n%s", err, out)
	}
	again := exec.Command(bin, "user", "create", "--username", "admin", "--password", "x")
	again.Env = append(again.Environ(), env...)
	if out, err := again.CombinedOutput(); err == nil || !strings.Contains(string(out), "already exists") {
		t.Fatalf("creating the same user twice: %v\n%s", err, out)
	}

	proc = startProcess(t, env, addr)
	admin, _ := mautrix.NewClient(proc.url, "", "")
	if _, err := admin.Login(ctx, &mautrix.ReqLogin{
		Type: mautrix.AuthTypePassword, Password: "an admin passphrase", StoreCredentials: true,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "admin"},
	}); err != nil {
		t.Fatalf("login as the user made by the CLI: %v", err)
	}
	if who, err := admin.Whoami(ctx); err != nil || who.UserID.String() != "@admin:"+serverName {
		t.Fatalf("whoami = %v, %v", who, err)
	}
}

// TestRegistrationTokenFromCLI makes a single-use token with `eggs registration-token
// create` and registers with it through a real client on a server in token mode.
func TestRegistrationTokenFromCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a server process")
	}
	addr := freeAddr(t)
	env := []string{
		"EGGS_SERVER_NAME=localhost:" + addr[strings.LastIndexByte(addr, ':')+1:], "EGGS_CLIENT_ADDR=" + addr,
		"EGGS_DATA_DIR=" + t.TempDir(), "EGGS_REGISTRATION=token", "EGGS_RATE_LIMIT=off", "EGGS_LOG_LEVEL=error",
		"EGGS_FEDERATION_ADDR=off", // clients-only: no TLS certificate needed
	}
	bin, err := buildEggs()
	if err != nil {
		t.Fatal(err)
	}
	create := exec.Command(bin, "registration-token", "create", "--uses", "1")
	create.Env = append(create.Environ(), env...)
	out, err := create.Output()
	if err != nil {
		t.Fatalf("eggs registration-token create: %v", err)
	}
	token := strings.TrimSpace(string(out))

	proc := startProcess(t, env, addr)
	ctx := context.Background()
	register := func(name, tok string) error {
		cli, _ := mautrix.NewClient(proc.url, "", "")
		_, _, err := cli.Register(ctx, &mautrix.ReqRegister[any]{
			Username: name, Password: "pw-pw-pw-pw",
			Auth: map[string]string{"type": "m.login.registration_token", "token": tok},
		})
		return err
	}
	if err := register("first", "wrong-token"); err == nil {
		t.Fatal("registered with a token that does not exist")
	}
	if err := register("first", token); err != nil {
		t.Fatalf("register with the token: %v", err)
	}
	if err := register("second", token); err == nil {
		t.Fatal("a single-use token worked twice")
	}
}
