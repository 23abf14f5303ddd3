module scoped-server/bench/go-nethttp

go 1.19
