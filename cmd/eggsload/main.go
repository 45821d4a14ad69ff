// Command eggsload measures a whole eggs homeserver under a chat-like load.
//
// It builds ./cmd/eggs, starts it as a child process on loopback with a fresh data
// directory (SQLite unless -database-url is given), registers users, creates rooms that
// every user joins, and then, for -duration, lets senders post messages while every user
// long-polls /sync. It reports sustained messages per second, send and sync-delivery
// latency, server CPU per message and memory, checks that every listener received every
// message exactly once, and times initial /sync of a user with a long history. Run it from
// the module root:
//
//	go run ./cmd/eggsload [-duration 20s] [-json report.json]
//
// Everything it starts, it stops; every loop is bounded in count and time.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// options are the command-line flags.
type options struct {
	users, rooms, senders, listeners int
	messages                         int
	rate                             int
	duration, drain, settle          time.Duration
	databaseURL, jsonPath, binary    string
	initialRooms, initialMessages    int
	initialRuns                      int
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	flags := flag.NewFlagSet("eggsload", flag.ContinueOnError)
	flags.IntVar(&o.users, "users", 20, "users to register")
	flags.IntVar(&o.rooms, "rooms", 10, "rooms to create; every user joins every room")
	flags.IntVar(&o.senders, "senders", 16, "concurrent senders")
	flags.IntVar(&o.listeners, "listeners", 20, "users that long-poll /sync (at most -users)")
	flags.DurationVar(&o.duration, "duration", 20*time.Second, "how long the senders send")
	flags.IntVar(&o.messages, "messages", 0, "stop after this many messages (0: only -duration bounds the load)")
	flags.IntVar(&o.rate, "rate", 0, "send at most this many messages per second in all (0: as fast as the server answers)")
	flags.DurationVar(&o.drain, "drain", 15*time.Second, "how long listeners may take to receive the last messages")
	flags.DurationVar(&o.settle, "settle", 2*time.Second, "idle time before each RSS reading")
	flags.StringVar(&o.databaseURL, "database-url", "", "PostgreSQL URL for the server (empty: SQLite in a temp dir)")
	flags.StringVar(&o.jsonPath, "json", "", "also write the report as JSON to this file")
	flags.StringVar(&o.binary, "eggs-binary", "", "run this server binary instead of building ./cmd/eggs")
	flags.IntVar(&o.initialRooms, "initial-rooms", 50, "rooms of the initial-sync user (0 skips that phase)")
	flags.IntVar(&o.initialMessages, "initial-messages", 20, "messages per room of the initial-sync user")
	flags.IntVar(&o.initialRuns, "initial-runs", 10, "initial /sync requests to time")
	if err := flags.Parse(args); err != nil {
		return nil, err
	}
	switch {
	case flags.NArg() > 0:
		return nil, fmt.Errorf("unexpected arguments %q", flags.Args())
	case o.users < 1 || o.rooms < 1 || o.senders < 1:
		return nil, errors.New("-users, -rooms and -senders must be at least 1")
	case o.listeners < 0 || o.listeners > o.users:
		return nil, errors.New("-listeners must be between 0 and -users")
	case o.duration <= 0 || o.duration > time.Hour:
		return nil, errors.New("-duration must be positive and at most 1h")
	case o.rate < 0 || o.rate > 1_000_000:
		return nil, errors.New("-rate must be between 0 and 1000000")
	case o.messages < 0 || o.initialRooms < 0 || o.initialMessages < 0 || o.initialRuns < 1:
		return nil, errors.New("-messages, -initial-rooms and -initial-messages must not be negative, -initial-runs at least 1")
	}
	return o, nil
}

func main() {
	opts, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "eggsload:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// However the server behaves, the tool ends: the load itself, plus generous room for
	// building, setup, draining and the initial-sync phase.
	ctx, cancel := context.WithTimeout(ctx, opts.duration+opts.drain+15*time.Minute)
	defer cancel()
	rep, err := run(ctx, opts)
	if rep != nil {
		rep.writeTable(os.Stdout)
		if opts.jsonPath != "" {
			if jsonErr := rep.writeJSON(opts.jsonPath); jsonErr != nil && err == nil {
				err = jsonErr
			}
		}
		if err == nil && rep.DeliveryFailures() > 0 {
			err = fmt.Errorf("%d delivery errors (missing, duplicate or in the wrong room)", rep.DeliveryFailures())
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "eggsload:", err)
		os.Exit(1)
	}
}

// progress tells the person waiting what is happening.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "eggsload: "+format+"\n", args...)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// run does the whole measurement. It returns a report whenever the load phase completed,
// even with an error from a later phase.
func run(ctx context.Context, o *options) (_ *report, err error) {
	tmp, err := os.MkdirTemp("", "eggsload-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	binary := o.binary
	if binary == "" {
		progress("building ./cmd/eggs")
		if binary, err = buildServer(ctx, tmp); err != nil {
			return nil, err
		}
	}
	dataDir := filepath.Join(tmp, "data")
	if err := os.Mkdir(dataDir, 0o700); err != nil {
		return nil, err
	}
	srv, err := startServer(ctx, binary, dataDir, o.databaseURL)
	if err != nil {
		return nil, err
	}
	defer func() {
		if stopErr := srv.stop(); stopErr != nil && err == nil {
			err = fmt.Errorf("server stop: %w", stopErr)
		}
	}()
	progress("server pid %d at %s", srv.pid, srv.base)
	c := newClient(srv.base)
	defer c.close()

	rep := newReport(o)
	if err := sleep(ctx, o.settle); err != nil {
		return nil, err
	}
	if rep.IdleRSSBytes, _, err = srv.memory(); err != nil {
		return nil, err
	}

	// Setup: users, rooms, joins; then every listener's initial sync.
	runID := strconv.FormatInt(time.Now().UnixNano(), 36)
	progress("setup: %d users, %d rooms", o.users, o.rooms)
	setupStart := time.Now()
	w, err := setup(ctx, c, runID, o.users, o.rooms)
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	roomIndex := make(map[string]int, len(w.rooms))
	for i, id := range w.rooms {
		roomIndex[id] = i
	}
	listeners := make([]*listener, o.listeners)
	sinces := make([]string, o.listeners)
	for i := range listeners {
		listeners[i] = &listener{user: w.users[i], roomIndex: roomIndex, seen: map[messageKey]delivery{}}
	}
	if err := parallel(ctx, 4, len(listeners), func(ctx context.Context, i int) error {
		since, err := listeners[i].initialSync(ctx, c)
		sinces[i] = since
		return err
	}); err != nil {
		return nil, fmt.Errorf("listener initial sync: %w", err)
	}
	rep.SetupSeconds = time.Since(setupStart).Seconds()
	if err := sleep(ctx, o.settle); err != nil {
		return nil, err
	}
	if rep.SetupRSSBytes, _, err = srv.memory(); err != nil {
		return nil, err
	}

	// Load: listeners first, so that they wait before the first message is sent.
	progress("load: %d senders, %d listeners, %s", o.senders, o.listeners, o.duration)
	listenCtx, stopListening := context.WithCancel(ctx)
	defer stopListening()
	var listening sync.WaitGroup
	for i, l := range listeners {
		listening.Go(func() { l.run(listenCtx, c, sinces[i]) })
	}
	ticks0, err := srv.cpuTicks()
	if err != nil {
		return nil, err
	}
	toolCPU0 := ownCPU()
	var budget *atomic.Int64
	if o.messages > 0 {
		budget = new(atomic.Int64)
		budget.Store(int64(o.messages))
	}
	senders := make([]*sender, o.senders)
	loadStart := time.Now()
	stopAt := loadStart.Add(o.duration)
	paceCtx, stopPacing := context.WithCancel(ctx)
	pace := newPacer(paceCtx, o.rate)
	var sending sync.WaitGroup
	for i := range senders {
		senders[i] = &sender{index: i, pace: pace}
		sending.Go(func() { senders[i].run(ctx, c, w, stopAt, budget) })
	}
	sending.Wait()
	stopPacing()
	sendElapsed := time.Since(loadStart)

	acked := 0
	for _, s := range senders {
		acked += len(s.latencies)
	}
	progress("sent %d messages in %s; waiting for listeners (at most %s)", acked, sendElapsed.Round(time.Millisecond), o.drain)
	drainStart := time.Now()
	for time.Since(drainStart) < o.drain && ctx.Err() == nil {
		behind := false
		for _, l := range listeners {
			if l.unique.Load() < int64(acked) {
				behind = true
				break
			}
		}
		if !behind {
			break
		}
		_ = sleep(ctx, 20*time.Millisecond)
	}
	drainElapsed := time.Since(drainStart)
	ticks1, err := srv.cpuTicks()
	if err != nil {
		return nil, err
	}
	toolCPU1 := ownCPU()
	stopListening()
	listening.Wait()

	rep.addLoad(senders, listeners, sendElapsed, drainElapsed)
	rep.addCPU(ticks1-ticks0, toolCPU1-toolCPU0)
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}

	if o.initialRooms > 0 {
		progress("initial sync: %d rooms × %d messages, %d runs", o.initialRooms, o.initialMessages, o.initialRuns)
		result, err := measureInitialSync(ctx, c, runID, o.initialRooms, o.initialMessages, o.initialRuns)
		if err != nil {
			_, rep.PeakRSSBytes, _ = srv.memory()
			return rep, err
		}
		rep.addInitialSync(result)
	}
	_, rep.PeakRSSBytes, err = srv.memory()
	return rep, err
}

// ownCPU is this process's user+system CPU time so far: the load tool shares the machine
// with the server, so its own cost is worth knowing.
func ownCPU() time.Duration {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		return 0
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
}

// writeJSON writes the report to path.
func (r *report) writeJSON(path string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}
