package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// percentile is the nearest-rank percentile p (0 < p ≤ 100) of samples, which must be
// sorted ascending: the smallest sample with at least p% of the samples at or below it.
// It is 0 for no samples; p ≤ 0 gives the minimum.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// sortedCopy returns the samples sorted ascending, leaving the input alone.
func sortedCopy(samples []time.Duration) []time.Duration {
	out := slices.Clone(samples)
	slices.Sort(out)
	return out
}

// ms is d in milliseconds, for the JSON report.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// formatDuration prints d with about three significant digits in a unit that suits it.
func formatDuration(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= 100*time.Millisecond:
		return fmt.Sprintf("%.0f ms", ms(d))
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", ms(d))
	default:
		return fmt.Sprintf("%.2f ms", ms(d))
	}
}

// formatBytes prints n in MiB ("MB" as the targets say it).
func formatBytes(n int64) string {
	return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
}
