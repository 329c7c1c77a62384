package daemon

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
)

// blockingTask returns when unblock is closed (the drain's job for a
// server task), and then reports whether its context had ended by then.
func blockingTask(name string, unblock <-chan struct{}, sawStop *atomic.Bool) task {
	return task{name, func(ctx context.Context) error {
		<-unblock
		sawStop.Store(ctx.Err() != nil)
		return nil
	}}
}

// TestRunTasksStop: a stop request ends the tasks' context, drain runs once
// and makes the servers return, the loops run until the drain is over, and
// a stop is not an error.
func TestRunTasksStop(t *testing.T) {
	unblock := make(chan struct{})
	var sawStop, loopDuringDrain atomic.Bool
	var drains, starts atomic.Int32
	loopDone := make(chan struct{})
	stop := make(chan struct{})
	tasks := []task{
		blockingTask("server", unblock, &sawStop),
		{"signals", func(ctx context.Context) error { <-stop; return errStop }},
	}
	loops := []task{{"loop", func(ctx context.Context) error { <-ctx.Done(); close(loopDone); return nil }}}
	started := func() { starts.Add(1); close(stop) }
	drain := func() {
		drains.Add(1)
		select {
		case <-loopDone:
		default:
			loopDuringDrain.Store(true)
		}
		close(unblock)
	}
	if err := runTasks(t.Context(), tasks, loops, started, drain); err != nil {
		t.Fatalf("runTasks = %v, want nil after a stop", err)
	}
	if starts.Load() != 1 || drains.Load() != 1 || !sawStop.Load() || !loopDuringDrain.Load() {
		t.Errorf("started %d, drained %d, server saw the stop %v, loop alive during drain %v",
			starts.Load(), drains.Load(), sawStop.Load(), loopDuringDrain.Load())
	}
}

// TestRunTasksFailure: a failing task stops the others and its error is
// the result.
func TestRunTasksFailure(t *testing.T) {
	unblock := make(chan struct{})
	var sawStop atomic.Bool
	boom := errors.New("api: listener broke")
	tasks := []task{
		blockingTask("http3", unblock, &sawStop),
		{"api", func(context.Context) error { return boom }},
		{"signals", func(ctx context.Context) error { <-ctx.Done(); return nil }},
	}
	err := runTasks(t.Context(), tasks, nil, func() {}, func() { close(unblock) })
	if !errors.Is(err, boom) || !sawStop.Load() {
		t.Fatalf("runTasks = %v (other task saw the stop: %v), want %v", err, sawStop.Load(), boom)
	}
}

// TestRunTasksContext: the caller's context ending is a clean stop.
func TestRunTasksContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	unblock := make(chan struct{})
	var sawStop atomic.Bool
	tasks := []task{blockingTask("ops", unblock, &sawStop)}
	err := runTasks(ctx, tasks, nil, cancel, func() { close(unblock) })
	if err != nil || !sawStop.Load() {
		t.Fatalf("runTasks = %v, server saw the stop %v", err, sawStop.Load())
	}
}
