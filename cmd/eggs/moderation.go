package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/scrambledeggs/eggs/server"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// moderationActions are the account moderation subcommands of eggs user (client-server
// API "Account locking", "Account suspension"): what each sets, and what it prints.
var moderationActions = map[string]struct {
	set   func(ctx context.Context, q storage.Querier, userID string, value bool) error
	value bool
	done  string
}{
	"lock":      {storage.SetAccountLocked, true, "locked"},
	"unlock":    {storage.SetAccountLocked, false, "unlocked"},
	"suspend":   {storage.SetAccountSuspended, true, "suspended"},
	"unsuspend": {storage.SetAccountSuspended, false, "unsuspended"},
}

// moderateUser runs eggs user lock|unlock|suspend|unsuspend USER: what PUT
// /_matrix/client/v1/admin/lock and /admin/suspend do, for any local account (server admins
// included). A running server sees the change within a minute, when its cached lookup of
// the account's access tokens expires.
func moderateUser(action string, args []string, stdout io.Writer) error {
	act, ok := moderationActions[action]
	if !ok {
		return errors.New(usage)
	}
	flags := flag.NewFlagSet("user "+action, flag.ContinueOnError)
	configPath := flags.String("config", "", "YAML configuration file")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if flags.NArg() == 0 {
		return errors.New(usage)
	}
	user := flags.Arg(0)
	// Flags may follow USER too.
	if err := flags.Parse(flags.Args()[1:]); err != nil {
		return err
	}
	if flags.NArg() != 0 {
		return errors.New(usage)
	}
	cfg, _, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(user, "@") {
		user = "@" + user + ":" + cfg.ServerName
	}
	userID, err := spec.ParseUserID(user)
	if err != nil {
		return err
	}
	if userID.Server() != cfg.ServerName {
		return fmt.Errorf("user %s is not on this server (%s)", userID, cfg.ServerName)
	}
	ctx := context.Background()
	db, err := server.OpenDatabase(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	err = act.set(ctx, db, userID.String(), act.value)
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("no active account %s", userID)
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, act.done, userID.String())
	return nil
}
