package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"
)

// result is one scenario at one caller count.
type result struct {
	Name    string
	Callers int
	N       int
	Errors  int
	P50     time.Duration
	P99     time.Duration
	RPS     float64
	Elapsed time.Duration
	FirstEr string
}

// newReq builds a fresh request for one call (bodies are not reusable).
type newReq func() (*http.Request, error)

// run issues sequential requests from each of callers goroutines until d
// has passed or maxPerCaller requests were made by each (both bounds), and
// measures every request from send to the last body byte.
func run(ctx context.Context, name string, c *http.Client, mk newReq, callers int, d time.Duration, maxPerCaller int) result {
	deadline := time.Now().Add(d)
	lat := make([][]time.Duration, callers)
	errs := make([]int, callers)
	firstErr := make([]string, callers)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			l := make([]time.Duration, 0, 4096)
			for n := 0; n < maxPerCaller && ctx.Err() == nil && time.Now().Before(deadline); n++ {
				t0 := time.Now()
				err := once(c, mk)
				el := time.Since(t0)
				if err != nil {
					if errs[i] == 0 {
						firstErr[i] = err.Error()
					}
					errs[i]++
					continue
				}
				l = append(l, el)
			}
			lat[i] = l
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	r := result{Name: name, Callers: callers, Elapsed: elapsed}
	for i := range lat {
		all = append(all, lat[i]...)
		r.Errors += errs[i]
		if r.FirstEr == "" {
			r.FirstEr = firstErr[i]
		}
	}
	slices.Sort(all)
	r.N = len(all)
	if r.N > 0 {
		r.P50 = all[r.N*50/100]
		r.P99 = all[min(r.N-1, r.N*99/100)]
	}
	r.RPS = float64(r.N) / elapsed.Seconds()
	return r
}

// once makes one call and requires a 200 with the whole body read.
func once(c *http.Client, mk newReq) error {
	req, err := mk()
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// warm makes n sequential calls to set up connections and caches; any
// failure is fatal to the run (a benchmark of errors is no benchmark).
func warm(c *http.Client, mk newReq, n int) error {
	for i := 0; i < n; i++ {
		if err := once(c, mk); err != nil {
			return err
		}
	}
	return nil
}

func getReq(url string, hdr http.Header) newReq {
	return func() (*http.Request, error) {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		return req, nil
	}
}
