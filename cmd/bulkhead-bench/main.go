// Command bulkhead-bench measures Bulkhead against its floor, as
// ../shared/PERFORMANCE.md describes: the mock upstream, a bare fasthttp
// forwarder (no parsing, no auth: the floor) and the gateway with its
// features on, each a separate process on loopback, driven by vegeta used
// as a library.
//
//	bulkhead-bench run [flags]          the whole picture (make bench)
//	bulkhead-bench forward -listen A -upstream B   the floor forwarder
//	bulkhead-bench load -url U [-key K | -keys-file F [-zipf S]] [-metrics U] [-duration D] [-conns N] [-rate R]
//	                                    load on one target (for profiling)
//	bulkhead-bench pairs -key K [-on U] [-off U] [-pairs N] [-pair-duration D]
//	                                    request log on vs off, in alternating pairs
//	bulkhead-bench memory [-requests N] [-after D] [-env NAME=VALUE]
//	                                    the gateway's RSS before, during and after a burst
//	bulkhead-bench seed [-orgs N] [-keys N] [-rows N] [-big-rows N] [-days N] [-keys-file F] [-drop]
//	                                    organizations, keys and request-log rows in bulk, for the scale benchmarks
//	bulkhead-bench keys [-keys N] [-orgs N] [-zipf S] [-rounds N] [-compare DIR]
//	                                    key authentication at scale: a Zipf mix over many keys against the floor
//	bulkhead-bench placement [-config F] [-tenants 1,100,1000] [-strategies shared,schema,database] [-big-rows N] [-proxy=false]
//	                                    the isolation strategies compared (issue 14): create, migrate, catalog, log rows/s, reads, pools,
//	                                    the gateway's throughput as a share of the floor's
//	bulkhead-bench tail [-rate R] [-rounds N] [-duration D] [-streams N] [-env NAME=VALUE] [-trace F] [-gateway-stderr F]
//	                                    the latency tail alone: open-loop added p99 and streaming time to first byte,
//	                                    the floor and the gateway alternating round by round
//
// It reports closed-loop throughput at 50 connections, open-loop latency at
// fixed rates, streaming time to first byte, and the gateway's resident
// memory idle and with many open streams. Each configuration runs twice,
// alternating, since this machine is noisy: compare ratios within a run.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: bulkhead-bench run|forward|load|pairs|memory|seed|keys|placement|tail [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = runBench(ctx, os.Args[2:])
	case "forward":
		err = forward(ctx, os.Args[2:])
	case "load":
		err = load(os.Args[2:])
	case "pairs":
		err = pairs(os.Args[2:])
	case "memory":
		err = memory(ctx, os.Args[2:])
	case "seed":
		err = seed(ctx, os.Args[2:])
	case "keys":
		err = keysBench(ctx, os.Args[2:])
	case "placement":
		err = placement(ctx, os.Args[2:])
	case "tail":
		err = tail(ctx, os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bulkhead-bench:", err)
		os.Exit(1)
	}
}
