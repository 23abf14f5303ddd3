// Peer: Go's net/http with the standard library only, answering the same JSON as scoped-server's
// /livez, and on SIGTERM the documented graceful stop, http.Server.Shutdown.
package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

func main() {
	body := []byte(`{"status":"ok"}`)
	mux := http.NewServeMux()
	mux.HandleFunc("/livez", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	})
	host := os.Getenv("HOST")
	if host == "" {
		host = "127.0.0.1"
	}
	server := &http.Server{Addr: net.JoinHostPort(host, os.Getenv("PORT")), Handler: mux}

	stopped := make(chan struct{})
	go func() {
		signals := make(chan os.Signal, 1)
		signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
		<-signals
		// No deadline: Shutdown waits for every active request, as the other peers' close does.
		server.Shutdown(context.Background())
		close(stopped)
	}()
	if err := server.ListenAndServe(); err != http.ErrServerClosed {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
	<-stopped
}
