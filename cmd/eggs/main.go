// Command eggs is the Scrambled Eggs Matrix homeserver.
//
//	eggs serve [--config FILE]                 run the homeserver
//	eggs user create --username NAME [--password PW] [--admin] [--config FILE]
//	eggs user lock|unlock|suspend|unsuspend USER [--config FILE]
//	eggs registration-token create [--token T] [--uses N] [--expires DURATION] [--config FILE]
//	eggs version
//
// Every setting can also come from the environment (EGGS_*; see README.md).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/scrambledeggs/eggs/auth"
	"github.com/scrambledeggs/eggs/config"
	"github.com/scrambledeggs/eggs/server"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "eggs:", err)
		os.Exit(1)
	}
}

const usage = `usage:
  eggs serve [--config FILE]
  eggs user create --username NAME [--password PW | --password-stdin] [--admin] [--config FILE]
  eggs user lock|unlock|suspend|unsuspend USER [--config FILE]
  eggs registration-token create [--token T] [--uses N] [--expires DURATION] [--config FILE]
  eggs version`

func run(args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "serve":
		return serve(args[1:])
	case "user":
		if len(args) < 2 {
			return errors.New(usage)
		}
		if args[1] == "create" {
			return createUser(args[2:], stdin, stdout)
		}
		return moderateUser(args[1], args[2:], stdout)
	case "registration-token":
		if len(args) < 2 || args[1] != "create" {
			return errors.New(usage)
		}
		return createRegistrationToken(args[2:], stdout)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "eggs", version)
		return nil
	}
	return fmt.Errorf("unknown command %q\n%s", args[0], usage)
}

func loadConfig(path string) (*config.Config, *slog.Logger, error) {
	cfg, err := config.Load(path, os.LookupEnv)
	if err != nil {
		return nil, nil, err
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	return cfg, log, nil
}

func serve(args []string) error {
	flags := flag.NewFlagSet("serve", flag.ContinueOnError)
	configPath := flags.String("config", "", "YAML configuration file")
	if err := flags.Parse(args); err != nil {
		return err
	}
	cfg, log, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv, err := server.New(ctx, cfg, log, server.WithVersion(version))
	if err != nil {
		return err
	}
	client, federation, err := server.Listen(cfg)
	if err != nil {
		return err
	}
	return srv.Serve(ctx, client, federation)
}

func createUser(args []string, stdin io.Reader, stdout io.Writer) error {
	flags := flag.NewFlagSet("user create", flag.ContinueOnError)
	configPath := flags.String("config", "", "YAML configuration file")
	username := flags.String("username", "", "localpart or full user ID")
	password := flags.String("password", "", "password (prefer --password-stdin: arguments are visible to other users)")
	passwordStdin := flags.Bool("password-stdin", false, "read the password from the first line of standard input")
	admin := flags.Bool("admin", false, "make the user a server admin")
	if err := flags.Parse(args); err != nil {
		return err
	}
	cfg, _, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	localpart := strings.TrimPrefix(*username, "@")
	if i := strings.IndexByte(localpart, ':'); i >= 0 {
		if localpart[i+1:] != cfg.ServerName {
			return fmt.Errorf("user %s is not on this server (%s)", *username, cfg.ServerName)
		}
		localpart = localpart[:i]
	}
	if err := spec.ValidateNewLocalpart(localpart); err != nil {
		return fmt.Errorf("username: %w", err)
	}
	userID, err := spec.NewUserID(localpart, cfg.ServerName)
	if err != nil {
		return err
	}
	pw := *password
	if *passwordStdin {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		pw = strings.TrimRight(line, "\r\n")
	}
	hash := ""
	if pw != "" {
		if hash, err = auth.HashPassword(pw); err != nil {
			return err
		}
	}
	ctx := context.Background()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return err
	}
	db, err := server.OpenDatabase(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	err = storage.InsertUser(ctx, db, &storage.UserRow{UserID: userID.String(), PasswordHash: hash, IsAdmin: *admin}, time.Now().UnixMilli())
	if errors.Is(err, storage.ErrExists) {
		return fmt.Errorf("user %s already exists", userID)
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "created", userID.String())
	return nil
}

// createRegistrationToken makes a token for EGGS_REGISTRATION=token (client-server API
// "Token-authenticated registration"), printed on stdout.
func createRegistrationToken(args []string, stdout io.Writer) error {
	flags := flag.NewFlagSet("registration-token create", flag.ContinueOnError)
	configPath := flags.String("config", "", "YAML configuration file")
	token := flags.String("token", "", "the token (default: 16 random characters)")
	uses := flags.Int64("uses", 0, "how many registrations it allows (0: unlimited)")
	expires := flags.Duration("expires", 0, "how long it stays valid (0: forever)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *uses < 0 || *expires < 0 {
		return errors.New("--uses and --expires must not be negative")
	}
	if *token == "" {
		*token = auth.NewRegistrationToken()
	}
	if !auth.ValidRegistrationTokenSyntax(*token) {
		return fmt.Errorf("token %q: use at most 64 of A-Z a-z 0-9 . _ ~ -", *token)
	}
	cfg, _, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return err
	}
	ctx := context.Background()
	db, err := server.OpenDatabase(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	var expiry int64
	if *expires > 0 {
		expiry = time.Now().Add(*expires).UnixMilli()
	}
	if err := storage.InsertRegistrationToken(ctx, db, *token, *uses, expiry); err != nil {
		return fmt.Errorf("store token: %w", err)
	}
	fmt.Fprintln(stdout, *token)
	return nil
}
