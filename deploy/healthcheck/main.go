// Command healthcheck is the container image's probe for runtimes that run a
// command inside the container (Docker and compose healthchecks): the image
// is distroless and has no shell, curl or wget. Kubernetes does not need it;
// its probes call the admin listener's /healthz and /readyz directly.
//
// Usage: healthcheck URL. It exits 0 when a GET of URL answers 2xx within
// two seconds, else 1, printing the reason to stderr.
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	if err := check(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		os.Exit(1)
	}
}

func check(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: healthcheck URL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, args[0], nil)
	if err != nil {
		return err
	}
	// A bare Transport: no HTTP_PROXY detour for a probe of the container itself.
	client := &http.Client{Transport: &http.Transport{}}
	res, err := client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 512))
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s %s", args[0], res.Status, body)
	}
	return nil
}
