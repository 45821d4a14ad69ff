package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// serverProcess is an eggs server running as a child process on loopback.
type serverProcess struct {
	cmd     *exec.Cmd
	pid     int
	base    string // http://127.0.0.1:PORT
	exited  chan struct{}
	waitErr error // valid once exited is closed
}

// buildServer compiles ./cmd/eggs into dir and returns the binary's path. The tool is run
// from the module root (make bench, go run ./cmd/eggsload).
func buildServer(ctx context.Context, dir string) (string, error) {
	binary := filepath.Join(dir, "eggs")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", binary, "./cmd/eggs")
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/eggs: %w", err)
	}
	return binary, nil
}

// freePort asks the kernel for an unused loopback port. Another process could take it
// before the server binds it; on a test machine that is rare enough to accept.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startServer runs `binary serve` with a fresh data directory and the settings the
// measurement needs, and waits until GET /_matrix/client/versions answers.
func startServer(ctx context.Context, binary, dataDir, databaseURL string) (*serverProcess, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	env := []string{}
	for _, kv := range os.Environ() {
		// Settings of the caller's own server must not leak into the measured one.
		if !strings.HasPrefix(kv, "EGGS_") {
			env = append(env, kv)
		}
	}
	env = append(env,
		"EGGS_DATA_DIR="+dataDir,
		"EGGS_RATE_LIMIT=off",
		"EGGS_REGISTRATION=open",
		"EGGS_CLIENT_ADDR="+addr,
		"EGGS_FEDERATION_ADDR=off", // the load is client traffic only
		"EGGS_SERVER_NAME=localhost:"+strconv.Itoa(port),
		"EGGS_LOG_LEVEL=warn",
	)
	if databaseURL != "" {
		env = append(env, "EGGS_DATABASE_URL="+databaseURL)
	}
	cmd := exec.Command(binary, "serve")
	cmd.Env = env
	cmd.Dir = dataDir
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	// Should this tool die without stopping the server, the kernel stops it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", binary, err)
	}
	s := &serverProcess{cmd: cmd, pid: cmd.Process.Pid, base: "http://" + addr, exited: make(chan struct{})}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitReady(ctx, 30*time.Second); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// waitReady polls /versions until it answers 200, the server exits or the limit passes.
func (s *serverProcess) waitReady(ctx context.Context, limit time.Duration) error {
	c := newClient(s.base)
	defer c.close()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		reqCtx, cancel := context.WithTimeout(ctx, time.Second)
		err := c.versions(reqCtx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("server exited before answering: %v", s.waitErr)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("server did not answer /versions within %s", limit)
}

// stop sends SIGTERM and waits for the server's graceful shutdown (8 s grace for requests
// in flight), then kills it if it is still there.
func (s *serverProcess) stop() error {
	select {
	case <-s.exited:
		return s.waitErr
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
		return errors.New("server did not stop within 15 s of SIGTERM; killed")
	}
	return s.waitErr
}

// cpuTicks is the server's user+system CPU time so far in clock ticks (/proc/PID/stat
// fields 14 and 15, see proc(5)).
func (s *serverProcess) cpuTicks() (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may contain spaces: count fields
	// from the last ')'.
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return 0, errors.New("unexpected /proc/PID/stat format")
	}
	fields := strings.Fields(string(data[end+1:]))
	// fields[0] is field 3 (state), so utime (14) and stime (15) are fields[11], fields[12].
	if len(fields) < 13 {
		return 0, errors.New("short /proc/PID/stat")
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("bad utime/stime in /proc/PID/stat")
	}
	return utime + stime, nil
}

// memory reads VmRSS and VmHWM (peak RSS) from /proc/PID/status, in bytes.
func (s *serverProcess) memory() (rss, peak int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", s.pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		name, value, ok := strings.Cut(scanner.Text(), ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		fields := strings.Fields(value) // "12345 kB"
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, 0, fmt.Errorf("unexpected %s line in /proc/PID/status", name)
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, 0, err
		}
		if name == "VmRSS" {
			rss = kb << 10
		} else {
			peak = kb << 10
		}
	}
	return rss, peak, scanner.Err()
}

// clockTicksPerSecond is sysconf(_SC_CLK_TCK), read with getconf(1). It is 100 on every
// Linux architecture Go supports; that is also the fallback when getconf is missing.
func clockTicksPerSecond() (ticks int64, assumed bool) {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && n > 0 {
			return n, false
		}
	}
	return 100, true
}
