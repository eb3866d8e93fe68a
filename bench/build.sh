#!/bin/sh
# Build the benchmarks' compiled load generators into bench/bin/ (bench/compare.py, sched_wait.py and
# paced_tail.py use them when they are there, and say so when they are not):
#   bench/bin/zload     zraft's load generator in C, on libzmq    (apt-get install -y gcc libzmq3-dev)
#   bench/bin/etcdload  etcd's, in Go, on etcd's own client        (apt-get install -y golang-go golang-etcd-server-dev)
# Each is built if its tools are installed; what is missing is printed. Exit code 0 if at least one was built.
#
#   sh bench/build.sh
set -u
cd "$(dirname "$0")"
mkdir -p bin
built=0
if command -v cc >/dev/null 2>&1; then
    if cc -O2 -o bin/zload zload/zload.c -lzmq; then
        echo "built bench/bin/zload"; built=1
    else
        echo "bench/zload did not build (apt-get install -y libzmq3-dev?)" >&2
    fi
else
    echo "no C compiler: bench/bin/zload not built (apt-get install -y gcc libzmq3-dev)" >&2
fi
if ! command -v go >/dev/null 2>&1; then
    echo "go is not installed: bench/bin/etcdload not built (apt-get install -y golang-go golang-etcd-server-dev)" >&2
elif [ ! -d /usr/share/gocode/src/go.etcd.io/etcd/clientv3 ]; then
    echo "etcd's Go client sources are missing: bench/bin/etcdload not built (apt-get install -y golang-etcd-server-dev)" >&2
else
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp/src" && cp -r etcdload "$tmp/src/etcdload"
    if GO111MODULE=off GOPATH="$tmp:/usr/share/gocode" CGO_ENABLED=0 go build -o bin/etcdload etcdload; then
        echo "built bench/bin/etcdload"; built=1
    else
        echo "bench/etcdload did not build" >&2
    fi
fi
[ "$built" = 1 ]
