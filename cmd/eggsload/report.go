package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// The targets of the project's load issue, and Dendrite 0.13.8 measured on the same sizes
// for scale.
const (
	targetMessagesPerSecond = 1000
	targetSyncP99           = 100 * time.Millisecond
	targetInitialSync       = 40 * time.Millisecond
	targetIdleRSS           = 40 << 20
)

// report is everything measured, in the shape of the JSON output. Durations are in
// milliseconds unless the name says otherwise.
type report struct {
	Users     int    `json:"users"`
	Rooms     int    `json:"rooms"`
	Senders   int    `json:"senders"`
	Listeners int    `json:"listeners"`
	Database  string `json:"database"`
	// Rate is the -rate the senders were paced at (0: as fast as the server answered).
	Rate int `json:"rate"`

	SetupSeconds float64 `json:"setup_seconds"`

	SendSeconds       float64 `json:"send_seconds"`
	MessagesAttempted int     `json:"messages_attempted"`
	MessagesAcked     int     `json:"messages_acked"`
	SendErrors        int     `json:"send_errors"`
	LastSendError     string  `json:"last_send_error,omitempty"`
	MessagesPerSecond float64 `json:"messages_per_second"`
	SendP50           float64 `json:"send_latency_p50_ms"`
	SendP99           float64 `json:"send_latency_p99_ms"`

	DrainSeconds     float64 `json:"drain_seconds"`
	Syncs            int     `json:"syncs"`
	SyncErrors       int     `json:"sync_errors"`
	LastSyncError    string  `json:"last_sync_error,omitempty"`
	LimitedTimelines int     `json:"limited_timelines"`
	Deliveries       int     `json:"deliveries"`
	SyncP50          float64 `json:"sync_delivery_p50_ms"`
	SyncP99          float64 `json:"sync_delivery_p99_ms"`
	SyncMax          float64 `json:"sync_delivery_max_ms"`
	Expected         int     `json:"deliveries_expected"`
	Missing          int     `json:"deliveries_missing"`
	Duplicates       int     `json:"deliveries_duplicate"`
	WrongRoom        int     `json:"deliveries_wrong_room"`
	Unacked          int     `json:"deliveries_of_failed_sends"`
	Unknown          int     `json:"deliveries_unknown"`

	ClockTicks        int64   `json:"clock_ticks_per_second"`
	ClockTicksAssumed bool    `json:"clock_ticks_assumed"`
	ServerCPUSeconds  float64 `json:"server_cpu_seconds"`
	CPUPerMessage     float64 `json:"server_cpu_per_message_ms"`
	ToolCPUSeconds    float64 `json:"load_tool_cpu_seconds"`

	IdleRSSBytes  int64 `json:"idle_rss_bytes"`
	SetupRSSBytes int64 `json:"after_setup_rss_bytes"`
	PeakRSSBytes  int64 `json:"peak_rss_bytes"`

	InitialRooms    int     `json:"initial_sync_rooms"`
	InitialMessages int     `json:"initial_sync_messages_per_room"`
	InitialRuns     int     `json:"initial_sync_runs"`
	InitialMin      float64 `json:"initial_sync_min_ms"`
	InitialMedian   float64 `json:"initial_sync_median_ms"`
	InitialMax      float64 `json:"initial_sync_max_ms"`
	InitialSeen     string  `json:"initial_sync_response"`

	sendP50, sendP99, syncP50, syncP99, syncMax time.Duration
	initialMin, initialMedian, initialMax       time.Duration
}

func newReport(o *options) *report {
	r := &report{Users: o.users, Rooms: o.rooms, Senders: o.senders, Listeners: o.listeners, Database: "sqlite", Rate: o.rate,
		InitialRooms: o.initialRooms, InitialMessages: o.initialMessages}
	if o.databaseURL != "" {
		r.Database = "postgresql"
	}
	return r
}

// addLoad fills in the load phase.
func (r *report) addLoad(senders []*sender, listeners []*listener, sendElapsed, drainElapsed time.Duration) {
	r.SendSeconds = sendElapsed.Seconds()
	r.DrainSeconds = drainElapsed.Seconds()
	var sendLatencies []time.Duration
	for _, s := range senders {
		r.MessagesAttempted += len(s.records)
		r.SendErrors += s.errors
		if s.lastErr != nil {
			r.LastSendError = s.lastErr.Error()
		}
		sendLatencies = append(sendLatencies, s.latencies...)
	}
	r.MessagesAcked = len(sendLatencies)
	r.MessagesPerSecond = float64(r.MessagesAcked) / sendElapsed.Seconds()
	sendLatencies = sortedCopy(sendLatencies)
	r.sendP50, r.sendP99 = percentile(sendLatencies, 50), percentile(sendLatencies, 99)
	r.SendP50, r.SendP99 = ms(r.sendP50), ms(r.sendP99)

	var syncLatencies []time.Duration
	for _, l := range listeners {
		l.mu.Lock()
		r.Syncs += l.syncs
		r.SyncErrors += l.errors
		r.LimitedTimelines += l.limited
		r.Unknown += l.foreign
		if l.lastErr != nil {
			r.LastSyncError = l.lastErr.Error()
		}
		syncLatencies = append(syncLatencies, l.latencies...)
		l.mu.Unlock()
	}
	r.Deliveries = len(syncLatencies)
	syncLatencies = sortedCopy(syncLatencies)
	r.syncP50, r.syncP99 = percentile(syncLatencies, 50), percentile(syncLatencies, 99)
	r.syncMax = percentile(syncLatencies, 100)
	r.SyncP50, r.SyncP99, r.SyncMax = ms(r.syncP50), ms(r.syncP99), ms(r.syncMax)

	check := checkDeliveries(senders, listeners)
	r.Expected, r.Missing, r.Duplicates = check.expected, check.missing, check.duplicates
	r.WrongRoom, r.Unacked = check.wrongRoom, check.unacked
	r.Unknown += check.unknown
}

// addCPU fills in CPU use over the load phase (sending and draining).
func (r *report) addCPU(serverTicks int64, tool time.Duration) {
	r.ClockTicks, r.ClockTicksAssumed = clockTicksPerSecond()
	r.ServerCPUSeconds = float64(serverTicks) / float64(r.ClockTicks)
	if r.MessagesAcked > 0 {
		r.CPUPerMessage = r.ServerCPUSeconds * 1000 / float64(r.MessagesAcked)
	}
	r.ToolCPUSeconds = tool.Seconds()
}

// addInitialSync fills in the initial-sync phase.
func (r *report) addInitialSync(res *initialSyncResult) {
	r.InitialRuns = len(res.samples)
	r.initialMin = percentile(res.samples, 0)
	r.initialMedian = percentile(res.samples, 50)
	r.initialMax = percentile(res.samples, 100)
	r.InitialMin, r.InitialMedian, r.InitialMax = ms(r.initialMin), ms(r.initialMedian), ms(r.initialMax)
	r.InitialSeen = fmt.Sprintf("%d rooms, %d timeline messages", res.rooms, res.messages)
}

// DeliveryFailures counts deliveries that break "every listener gets every message of its
// rooms exactly once".
func (r *report) DeliveryFailures() int { return r.Missing + r.Duplicates + r.WrongRoom }

// met marks whether a target is reached.
func met(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}

// writeTable prints the report as a plain-text table.
func (r *report) writeTable(out io.Writer) {
	pacing := "unpaced"
	if r.Rate > 0 {
		pacing = fmt.Sprintf("paced at %d messages/s", r.Rate)
	}
	fmt.Fprintf(out, "\neggs load: %d users, %d rooms (all joined), %d senders (%s), %d /sync listeners, %s, %s\n",
		r.Users, r.Rooms, r.Senders, pacing, r.Listeners, time.Duration(r.SendSeconds*float64(time.Second)).Round(time.Millisecond), r.Database)
	fmt.Fprintf(out, "setup %.1f s; sent %d, acknowledged %d, send errors %d; %d syncs, %d sync errors, %d limited timelines; drain %.2f s\n\n",
		r.SetupSeconds, r.MessagesAttempted, r.MessagesAcked, r.SendErrors, r.Syncs, r.SyncErrors, r.LimitedTimelines, r.DrainSeconds)

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "metric\tmeasured\ttarget\tmet\tDendrite 0.13.8")
	fmt.Fprintln(tw, "------\t--------\t------\t---\t---------------")
	if r.Rate > 0 {
		// Paced, the rate is the tool's choice: this run measures latency at that load.
		fmt.Fprintf(tw, "messages/s sustained\t%.0f\t(paced)\t\t35\n", r.MessagesPerSecond)
	} else {
		fmt.Fprintf(tw, "messages/s sustained\t%.0f\t≥ %d\t%s\t35\n",
			r.MessagesPerSecond, targetMessagesPerSecond, met(r.MessagesPerSecond >= targetMessagesPerSecond))
	}
	fmt.Fprintf(tw, "send latency p50 / p99\t%s / %s\t\t\t\n", formatDuration(r.sendP50), formatDuration(r.sendP99))
	fmt.Fprintf(tw, "sync delivery p50 / p99\t%s / %s\tp99 < %s\t%s\t1.2 s / 2.7 s\n",
		formatDuration(r.syncP50), formatDuration(r.syncP99), formatDuration(targetSyncP99),
		met(r.Deliveries > 0 && r.syncP99 < targetSyncP99))
	fmt.Fprintf(tw, "sync delivery max\t%s\t\t\t\n", formatDuration(r.syncMax))
	assumed := ""
	if r.ClockTicksAssumed {
		assumed = fmt.Sprintf(" (CLK_TCK assumed %d)", r.ClockTicks)
	}
	fmt.Fprintf(tw, "server CPU per message\t%.3f ms%s\t\t\t35 ms\n", r.CPUPerMessage, assumed)
	fmt.Fprintf(tw, "server CPU / load tool CPU\t%.1f s / %.1f s\t\t\t\n", r.ServerCPUSeconds, r.ToolCPUSeconds)
	if r.InitialRuns > 0 {
		fmt.Fprintf(tw, "initial sync %d×%d min / median\t%s / %s\t< %s\t%s\t127 ms\n",
			r.InitialRooms, r.InitialMessages, formatDuration(r.initialMin), formatDuration(r.initialMedian),
			formatDuration(targetInitialSync), met(r.initialMedian < targetInitialSync))
	}
	fmt.Fprintf(tw, "idle RSS (fresh server)\t%s\t< %s\t%s\t\n",
		formatBytes(r.IdleRSSBytes), formatBytes(targetIdleRSS), met(r.IdleRSSBytes < targetIdleRSS))
	fmt.Fprintf(tw, "idle RSS (after setup)\t%s\t< %s\t%s\t\n",
		formatBytes(r.SetupRSSBytes), formatBytes(targetIdleRSS), met(r.SetupRSSBytes < targetIdleRSS))
	fmt.Fprintf(tw, "peak RSS (VmHWM)\t%s\t\t\t195 MB\n", formatBytes(r.PeakRSSBytes))
	fmt.Fprintf(tw, "deliveries (listener × message)\t%d of %d\t%d\t%s\t\n",
		r.Expected-r.Missing, r.Expected, r.Expected, met(r.DeliveryFailures() == 0 && r.Expected > 0))
	fmt.Fprintf(tw, "missing / duplicate / wrong room\t%d / %d / %d\t0 / 0 / 0\t%s\t\n",
		r.Missing, r.Duplicates, r.WrongRoom, met(r.DeliveryFailures() == 0))
	tw.Flush()
	if r.Unacked > 0 || r.Unknown > 0 {
		fmt.Fprintf(out, "also delivered: %d copies of messages whose send failed, %d unknown messages\n", r.Unacked, r.Unknown)
	}
	if r.InitialRuns > 0 {
		fmt.Fprintf(out, "initial sync response: %s (max %s over %d runs)\n", r.InitialSeen, formatDuration(r.initialMax), r.InitialRuns)
	}
	if r.LastSendError != "" {
		fmt.Fprintf(out, "last send error: %s\n", r.LastSendError)
	}
	if r.LastSyncError != "" {
		fmt.Fprintf(out, "last sync error: %s\n", r.LastSyncError)
	}
}
