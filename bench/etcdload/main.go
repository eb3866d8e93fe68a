// etcdload: a closed-loop load generator for etcd, after etcd's own tools/benchmark: N goroutines share a few
// gRPC connections, each sends one request, waits for its answer, and sends the next. bench/compare.py builds it
// at run time (GOPATH mode, with Debian's golang-etcd-server-dev sources) so that the load generator is not the
// bottleneck, as the Python grpcio driver is at high concurrency.
//
// Usage: etcdload -endpoints a,b,c -workload write|mixed|read -concurrency N -conns C -warmup S -seconds S
//
//	-value BYTES -keys K -seed N
//
// Prints one JSON line: {"ops": ..., "elapsed": ..., "p50": ..., "p99": ..., "max": ..., "cpu": ...} with
// latencies in seconds over the measured window and the CPU seconds this process used in it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/clientv3"
)

func cpuSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

func main() {
	endpoints := flag.String("endpoints", "127.0.0.1:2379", "comma-separated client URLs (host:port)")
	workload := flag.String("workload", "write", "write (100% puts), mixed (90% gets), read (100% gets)")
	concurrency := flag.Int("concurrency", 100, "requests in flight (goroutines)")
	conns := flag.Int("conns", 4, "gRPC connections shared by the goroutines")
	warmup := flag.Float64("warmup", 5, "unmeasured seconds first")
	seconds := flag.Float64("seconds", 30, "measured seconds")
	valueSize := flag.Int("value", 64, "value size in bytes")
	keys := flag.Int("keys", 1000, "distinct keys")
	seed := flag.Int64("seed", 1, "random seed")
	flag.Parse()

	eps := strings.Split(*endpoints, ",")
	clients := make([]*clientv3.Client, *conns)
	for i := range clients {
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{eps[i%len(eps)]}, DialTimeout: 5 * time.Second})
		if err != nil {
			fmt.Fprintln(os.Stderr, "etcdload: connect:", err)
			os.Exit(1)
		}
		defer c.Close()
		clients[i] = c
	}
	value := strings.Repeat("v", *valueSize)
	readShare := map[string]float64{"write": 0, "mixed": 0.9, "read": 1}[*workload]

	start := time.Now()
	measureFrom := start.Add(time.Duration(*warmup * float64(time.Second)))
	until := measureFrom.Add(time.Duration(*seconds * float64(time.Second)))
	lats := make([][]float64, *concurrency)
	var failed error
	var mu sync.Mutex
	var wg sync.WaitGroup
	var cpu0 float64
	var cpuOnce sync.Once
	for g := 0; g < *concurrency; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(*seed*100003 + int64(g)))
			kv := clients[g%len(clients)]
			for {
				t0 := time.Now()
				if t0.After(until) {
					return
				}
				if !t0.Before(measureFrom) {
					cpuOnce.Do(func() { cpu0 = cpuSeconds() })
				}
				key := fmt.Sprintf("key%d", rng.Intn(*keys))
				var err error
				if rng.Float64() < readShare {
					_, err = kv.Get(context.Background(), key)
				} else {
					_, err = kv.Put(context.Background(), key, value)
				}
				if err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
					return
				}
				if !t0.Before(measureFrom) {
					lats[g] = append(lats[g], time.Since(t0).Seconds())
				}
			}
		}(g)
	}
	wg.Wait()
	cpu := cpuSeconds() - cpu0
	if failed != nil {
		fmt.Fprintln(os.Stderr, "etcdload:", failed)
		os.Exit(1)
	}
	var all []float64
	for _, l := range lats {
		all = append(all, l...)
	}
	if len(all) == 0 {
		fmt.Fprintln(os.Stderr, "etcdload: no request completed in the measured window")
		os.Exit(1)
	}
	sort.Float64s(all)
	out := map[string]float64{"ops": float64(len(all)), "elapsed": *seconds, "p50": all[len(all)/2],
		"p99": all[len(all)*99/100], "max": all[len(all)-1], "cpu": cpu}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
}
