"""An interactive shell for a zraft cluster.

    python client_shell.py                    # the cluster launcher.py started (./zraft-data/cluster.json)
    python client_shell.py --nodes 127.0.0.1:5551,127.0.0.1:5552
    python client_shell.py get mykey          # run one command and exit
    printf 'put a 1\\nget a\\n' | python client_shell.py   # one command per line, one result per line

Commands: put K V, append K V, get K, delete K, range PREFIX, cas K OLD NEW, txn ..., status (status --json
for scripts), leader, members, transfer N, backup FILE, help, quit; and for a launcher-made cluster kill N, pause N,
resume N, restart N (process faults: watch an election happen) and add N, remove N (membership: start a node and
make it a voter; remove a node and stop it). Keys and values are UTF-8 text; a value is the rest of the line.
put/append/delete/add/remove/transfer print OK, get prints the value or (nil), range the keys found and how many,
cas OK or (not swapped), txn the branch taken and each result, leader the leader's node id. Errors go to stderr
and make the exit code non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from typing import Any

from zraft.client import Client, ZraftError
from zraft.tools import chaos, launch
from zraft.transport.security import ClientKeys, KeysError, load_public

HELP = """commands:
  put K V        store V under K                  append K V   append V to K's value
  put K V --lease ID   attached to lease ID (deleted with it); put K V --ttl SECONDS: K's own TTL
  lease grant SECONDS  a new lease (its id)       lease keepalive ID   restart its TTL from now
  lease revoke ID      drop it and its keys       lease ttl ID         its time left and keys
  expire K SECONDS     K's own TTL                persist K    drop K's TTL     ttl K   K's time left
  lock NAME [--ttl S] put K V   take lock NAME (waiting for it), write K fenced by its token, release it;
                 without put: hold it until Enter or Ctrl-C      election NAME   its leader's value and token
  watch PREFIX   print each change to the keys that start with PREFIX as it comes, until Ctrl-C;
                 --from REV: from revision REV (resumes on another node if one fails); --count N: stop after N
  get K          read K (linearizable)            delete K     remove K
  range PREFIX   the keys that start with PREFIX ("" for all), in order: KEY: VALUE lines, then how many and
                 the revision; range --from START [--to END] for the keys in [START, END); --limit N: the first N
  cas K OLD NEW  set K to NEW if its value is OLD ((nil): if K is absent): OK, or (not swapped)
  txn [if COMPARE...] then OP... [else OP...]   one atomic transaction, e.g.
                 txn if value(k) = 1 mod(j) < 9 then put k 2 get j else get k
                 COMPARE: value(K) = V, version(K) > N, create(K) < N, mod(K) != N (=, !=, <, >);
                 OP: put K V, append K V, del K, get K, range PREFIX. Prints then/else and each result
  status         a table of every node            leader       the leader's node id
  status --json  every node's status as JSON (one line, for scripts)
  kill N         SIGKILL node N                   pause N      SIGSTOP node N
  resume N       SIGCONT node N                   restart N    start node N again
  members        voters and learners              transfer N   make node N the leader
  add N          start node N, add it, promote it remove N     remove node N, stop it
  add N HOST:PORT [KEYFILE]  add node N, started by hand with --join, and promote it
  backup FILE    write a backup of every key and client session to FILE (restore: launcher.py --restore FILE);
                 a FILE that is a symbolic link is refused unless given as backup --follow-symlink FILE
  help           this text                        quit         leave (or Ctrl-D)"""


class Shell:
    def __init__(self, client: Client, cluster: launch.Cluster | None,
                 out: Callable[[str], None] | None = None) -> None:
        self.client = client
        self.cluster = cluster
        self.out = out or (lambda line: print(line, flush=True))
        """Where ``watch`` prints each event as it comes."""

    def _range(self, args: list[str]) -> str:
        usage = "usage: range PREFIX [--limit N] or range --from START [--to END] [--limit N]"
        opts: dict[str, str] = {}
        rest: list[str] = []
        it = iter(args)
        for a in it:
            if a in ("--from", "--to", "--limit"):
                v = next(it, None)
                if v is None or a in opts:
                    raise ValueError(usage)
                opts[a] = v
            else:
                rest.append(a)
        limit = opts.get("--limit", "0")
        if not limit.isdigit():
            raise ValueError(usage)
        if len(rest) == 1 and "--from" not in opts and "--to" not in opts:
            r = self.client.range(prefix=rest[0], limit=int(limit))
        elif not rest and "--from" in opts:
            r = self.client.range(opts["--from"], opts.get("--to"), limit=int(limit))
        else:
            raise ValueError(usage)
        lines = [f"{kv.key.decode(errors='replace')}: {(kv.value or b'').decode(errors='replace')}" for kv in r.kvs]
        more = f", {r.count - len(r.kvs)} more not listed" if r.more else ""
        lines.append(f"({len(r.kvs)} key{'' if len(r.kvs) == 1 else 's'}{more}; revision {r.revision})")
        return "\n".join(lines)

    def _txn(self, args: list[str]) -> str:
        from zraft.client import txn as t

        usage = ("usage: txn [if COMPARE...] then OP... [else OP...]; COMPARE: value(K) = V, version(K) > N, "
                 "create(K) < N, mod(K) != N; OP: put K V, append K V, del K, get K, range PREFIX")
        targets = {"value": t.value, "version": t.version, "create": t.create_revision, "mod": t.mod_revision}
        words = list(args)
        compares = []
        if words[:1] == ["if"]:
            words.pop(0)
            while words and words[0] not in ("then", "else"):
                if len(words) < 3 or "(" not in words[0] or not words[0].endswith(")"):
                    raise ValueError(usage)
                target, _, key = words[0][:-1].partition("(")
                side, cmp, operand = targets.get(target), words[1], words[2]
                if side is None or cmp not in ("=", "!=", "<", ">") or not (target == "value" or operand.isdigit()):
                    raise ValueError(usage)
                x: str | int = operand if target == "value" else int(operand)
                compares.append({"=": side(key).__eq__, "!=": side(key).__ne__, "<": side(key).__lt__,
                                 ">": side(key).__gt__}[cmp](x))
                del words[:3]
        branches: dict[str, list[Any]] = {"then": [], "else": []}
        current = None
        arity = {"put": 2, "append": 2, "del": 1, "get": 1, "range": 1}
        while words:
            w = words.pop(0)
            if w in branches and not branches[w] and (w == "then" or current == "then"):
                current = w
                continue
            if current is None or w not in arity or len(words) < arity[w]:
                raise ValueError(usage)
            a = [words.pop(0) for _ in range(arity[w])]
            branches[current].append(t.put(a[0], a[1]) if w == "put" else t.append(*a) if w == "append" else
                                     t.delete(a[0]) if w == "del" else t.get(a[0]) if w == "get" else
                                     t.get_range(prefix=a[0]))
        if current is None:
            raise ValueError(usage)
        r = self.client.txn(compares, branches["then"], branches["else"])
        lines = [f"{'then' if r.succeeded else 'else'} (revision {r.revision})"]
        for op, res in zip(branches["then" if r.succeeded else "else"], r.results, strict=True):
            key = op.key.decode(errors="replace")
            if op.kind == "get":
                lines.append(f"{key}: {'(nil)' if res is None else res.value.decode(errors='replace')}")
            elif op.kind == "range":
                lines += [f"{kv.key.decode(errors='replace')}: {(kv.value or b'').decode(errors='replace')}"
                          for kv in res.kvs]
            elif op.kind in ("delete", "delete_range"):
                lines.append(f"{key}: {res} deleted")
            else:
                lines.append(f"{key}: OK")
        return "\n".join(lines)

    def _watch(self, args: list[str]) -> str:
        """watch PREFIX [--from REV] [--count N]: print each change to the keys that start with PREFIX as it comes
        (from revision REV on), until Ctrl-C (or N events)."""
        usage = "usage: watch PREFIX [--from REVISION] [--count N]  (Ctrl-C stops it)"
        opts: dict[str, int] = {}
        rest: list[str] = []
        it = iter(args)
        for a in it:
            if a in ("--from", "--count"):
                v = next(it, None)
                if v is None or not v.isdigit() or a in opts:
                    raise ValueError(usage)
                opts[a] = int(v)
            else:
                rest.append(a)
        if len(rest) != 1:
            raise ValueError(usage)
        count = opts.get("--count", 0)
        seen = 0
        with self.client.watch(prefix=rest[0], start_revision=opts.get("--from", 0), prev_kv=True) as stream:
            self.out(f"watching {rest[0]!r} from revision {stream.next_rev} (Ctrl-C stops)")
            try:
                for e in stream:
                    key = e.key.decode(errors="replace")
                    if e.type == "put":
                        line = f"{e.mod_revision} put {key} = {(e.value or b'').decode(errors='replace')}"
                    else:
                        line = f"{e.mod_revision} delete {key}"
                    if e.prev_value is not None:
                        line += f" (was {e.prev_value.decode(errors='replace')})"
                    self.out(line)
                    seen += 1
                    if count and seen >= count:
                        break
            except KeyboardInterrupt:
                pass
        return f"({seen} event{'' if seen == 1 else 's'}; last revision {stream.revision})"

    def _lock(self, args: list[str]) -> str:
        """lock NAME [--ttl S] [put K V]: take the lock (waiting for it), make the write fenced by its token (or
        hold it until Enter or Ctrl-C), release it."""
        usage = "usage: lock NAME [--ttl SECONDS] [put KEY VALUE]  (without put: hold it until Enter or Ctrl-C)"
        ttl = 10.0
        if len(args) >= 3 and args[1] == "--ttl":
            try:
                ttl = float(args[2])
            except ValueError:
                raise ValueError(usage) from None
            args = [args[0], *args[3:]]
        if len(args) not in (1, 4) or (len(args) == 4 and args[1] != "put"):
            raise ValueError(usage)
        with self.client.lock(args[0], ttl=ttl) as lock:
            held = f"lock {args[0]} held with token {lock.token}"
            if len(args) == 4:
                lock.put(args[2], args[3])
                return f"{held}; put {args[2]}: OK"
            self.out(f"{held} (Enter or Ctrl-C releases it)")
            try:
                input()
            except (KeyboardInterrupt, EOFError):
                pass
        return f"lock {args[0]} released"

    def _lease(self, args: list[str]) -> str:
        usage = "usage: lease grant SECONDS | lease keepalive ID | lease revoke ID | lease ttl ID"
        if len(args) != 2 or args[0] not in ("grant", "keepalive", "revoke", "ttl"):
            raise ValueError(usage)
        try:
            n = float(args[1]) if args[0] == "grant" else int(args[1])
        except ValueError:
            raise ValueError(usage) from None
        cl = self.client
        if args[0] == "grant":
            lease = cl.grant(n)
            return f"lease {lease} granted, TTL {n:g} s (keep it alive: lease keepalive {lease})"
        if args[0] == "keepalive":
            return f"lease {int(n)} kept alive: {cl.keepalive(int(n)):g} s from now"
        if args[0] == "revoke":
            return f"lease {int(n)} revoked (revision {cl.revoke(int(n))})"
        info = cl.time_to_live(int(n))
        return f"lease {info.lease}: {info.remaining:.3f} s left of {info.ttl:g} s; {info.keys} key" + (
            "" if info.keys == 1 else "s")

    def _key_ttl(self, cmd: str, args: list[str]) -> str:
        cl = self.client
        if cmd == "expire":
            self._arity(cmd, args, 2, "KEY SECONDS")
            try:
                seconds = float(args[1])
            except ValueError:
                raise ValueError("usage: expire KEY SECONDS") from None
            return "OK" if cl.expire(args[0].encode(), seconds) else "(no such key)"
        self._arity(cmd, args, 1, "KEY")
        if cmd == "persist":
            return "OK" if cl.expire(args[0].encode(), None) else "(no TTL)"
        try:
            info = cl.key_ttl(args[0].encode())
        except KeyError:
            return "(no such key)"
        if info is None:
            return "(no TTL)"
        return f"{info.remaining:.3f} s left of {info.ttl:g} s (lease {info.lease})"

    def _reconnect(self) -> None:
        """The cluster's nodes changed (add/remove): a client that knows the new list."""
        assert self.cluster is not None
        deadline = self.client.deadline
        self.client.close()
        self.client = self.cluster.client(deadline=deadline)

    def run(self, line: str) -> str | None:
        """Execute one command line; returns the text to print, or None to quit. Raises on errors."""
        try:
            words = shlex.split(line)
        except ValueError as e:
            raise ValueError(f"cannot parse the line: {e}") from None
        if not words:
            return ""
        cmd, args = words[0].lower(), words[1:]
        if cmd in ("quit", "exit"):
            return None
        if cmd == "help":
            return HELP
        if cmd in ("put", "append"):
            lease, ttl = 0, None
            if cmd == "put" and len(args) >= 4 and args[-2] in ("--lease", "--ttl"):
                try:
                    lease, ttl = (int(args[-1]), None) if args[-2] == "--lease" else (0, float(args[-1]))
                except ValueError:
                    raise ValueError(f"usage: put KEY VALUE [--lease ID | --ttl SECONDS]; not {args[-1]!r}") \
                        from None
                args = args[:-2]
            if len(args) < 2:
                raise ValueError(f"usage: {cmd} KEY VALUE" + (" [--lease ID | --ttl SECONDS]" if cmd == "put" else ""))
            value = " ".join(args[1:])
            if cmd == "put":
                self.client.put(args[0].encode(), value.encode(), lease=lease, ttl=ttl)
            else:
                self.client.append(args[0].encode(), value.encode())
            return "OK"
        if cmd == "lease":
            return self._lease(args)
        if cmd == "watch":
            return self._watch(args)
        if cmd == "lock":
            return self._lock(args)
        if cmd == "election":
            self._arity(cmd, args, 1, "NAME")
            leader = self.client.election(args[0]).leader()
            return "(no leader)" if leader is None else \
                f"{leader[0].decode(errors='replace')} (token {leader[1]})"
        if cmd in ("expire", "persist", "ttl"):
            return self._key_ttl(cmd, args)
        if cmd == "get":
            self._arity(cmd, args, 1, "KEY")
            v = self.client.get(args[0].encode())
            return "(nil)" if v is None else v.decode(errors="replace")
        if cmd == "range":
            return self._range(args)
        if cmd == "cas":
            self._arity(cmd, args, 3, "KEY EXPECTED NEW  (EXPECTED (nil): only if KEY is absent)")
            expect = None if args[1] == "(nil)" else args[1].encode()
            return "OK" if self.client.cas(args[0].encode(), expect, args[2].encode()) else "(not swapped)"
        if cmd == "txn":
            return self._txn(args)
        if cmd == "delete":
            self._arity(cmd, args, 1, "KEY")
            self.client.delete(args[0].encode())
            return "OK"
        if cmd == "leader":
            idx = self.client.find_leader(3.0)
            if idx is None:
                raise ZraftError("no leader right now")
            return str(self.client.status(idx)["node"])
        if cmd == "status":
            if args == ["--json"]:
                return json.dumps(self.client.status_all(), sort_keys=True, default=str)
            if args:
                raise ValueError("usage: status [--json]")
            return self._status()
        if cmd == "members":
            return self._members()
        if cmd == "backup":
            follow = bool(args) and args[0] == "--follow-symlink"
            if follow:
                args = args[1:]
            self._arity(cmd, args, 1, "[--follow-symlink] FILE")
            t0 = time.monotonic()
            info = self.client.backup(args[0], timeout=max(self.client.deadline, 600.0), follow_symlink=follow)
            source = self.client.nodes[self.client.answered_by]
            return f"backup {args[0]}: {info.describe()}; from {source} in {time.monotonic() - t0:.2f} s"
        if cmd == "add" and len(args) in (2, 3):
            # Any cluster (nodes started by hand): node N already runs with --join; add it and promote it.
            try:
                node = int(args[0])
            except ValueError:
                raise ValueError("usage: add NODE HOST:PORT [PUBLIC_KEY_FILE]") from None
            key = load_public(args[2]).decode() if len(args) == 3 else ""
            self.client.add_node(node, args[1], key)
            return "OK"
        if cmd in ("add", "remove", "transfer"):
            self._arity(cmd, args, 1, "NODE")
            try:
                node = int(args[0])
            except ValueError:
                raise ValueError(f"usage: {cmd} NODE (a node id)") from None
            if cmd == "transfer":
                self.client.transfer_leadership(node)
                return "OK"
            if self.cluster is None:
                if cmd == "add":
                    raise ValueError("add N needs a launcher-made cluster (cluster.json); otherwise start the node "
                                     "with zraft node --join and use add N HOST:PORT [PUBLIC_KEY_FILE]")
                self.client.remove_node(node)
                return "OK"
            try:
                if cmd == "add":
                    self.cluster.add_node(node)
                else:
                    self.cluster.remove_node(node)
            finally:
                self._reconnect()
            return "OK"
        if cmd in ("kill", "pause", "resume", "restart"):
            self._arity(cmd, args, 1, "NODE")
            if self.cluster is None:
                raise ValueError(f"{cmd} needs a launcher-made cluster (cluster.json), not --nodes")
            try:
                node = int(args[0])
            except ValueError:
                raise ValueError(f"usage: {cmd} NODE (a node id)") from None
            getattr(chaos, cmd)(self.cluster, node)
            return "OK"
        raise ValueError(f"unknown command {cmd!r}; type help")

    @staticmethod
    def _arity(cmd: str, args: list[str], n: int, names: str) -> None:
        if len(args) != n:
            raise ValueError(f"usage: {cmd} {names}")

    def _members(self) -> str:
        m = self.client.members()
        rows = [f"{'node':>4}  {'address':<21} {'role':<8} {'match':>8}"]
        for nid, addr, role, match in m["members"]:
            lead = " (leader)" if nid == m["leader"] else ""
            rows.append(f"{nid:>4}  {addr:<21} {role:<8} {match:>8}{lead}")
        if "pending_config_index" in m:
            rows.append(f"      a change at index {m['pending_config_index']} is not committed yet")
        if "transferee" in m:
            rows.append(f"      leadership is being transferred to node {m['transferee']}")
        return "\n".join(rows)

    def _status(self) -> str:
        rows = [f"{'node':>4}  {'address':<21} {'role':<13} {'term':>5} {'leader':>6} {'commit':>7} {'applied':>7} "
                f"{'last':>7} {'snapshot':>8} {'log':>7}"]
        for addr, s in zip(self.client.nodes, self.client.status_many(self.client.attempt_timeout), strict=True):
            if s is None:  # all asked at once: two stopped nodes cost one timeout, not two
                rows.append(f"{'?':>4}  {addr:<21} {'(no answer)':<13}")
                continue
            def f(k: str, st: dict[str, Any] = s) -> str:  # a field the answer may lack (it is a stranger's word)
                v = st.get(k)
                return "?" if v is None else str(v)[:40]

            rows.append(f"{f('node'):>4}  {addr:<21} {f('role'):<13} {f('term'):>5} {f('leader'):>6} "
                        f"{f('commit'):>7} {f('applied'):>7} {f('last_index'):>7} {f('snapshot_index'):>8} "
                        f"{f('log_entries'):>7}")
            if s.get("match"):
                rows.append("      follower match index: " + ", ".join(
                    sorted(f"{k!s:.20}={v!s:.20}" for k, v in list(s["match"].items())[:64])))
        return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cluster", help=f"a cluster.json (default {launch.DEFAULT_DATA_DIR}/{launch.CLUSTER_FILE})")
    p.add_argument("--nodes", help="node addresses HOST:PORT,HOST:PORT,... (instead of a cluster file)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds before a request gives up (default 10)")
    p.add_argument("--keys", metavar="DIR",
                   help="with --nodes: CurveZMQ keys, DIR/client.key_secret and DIR/node-<i>.key for the i-th "
                        "address (a cluster file names its key directory itself)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="a command to run once, e.g. get mykey")
    a = p.parse_args(argv)
    cluster = None
    try:
        if a.nodes:
            nodes = [n.strip() for n in a.nodes.split(",") if n.strip()]
            keys = ClientKeys.load(a.keys, nodes) if a.keys else None
        else:
            cluster = launch.load(a.cluster or launch.DEFAULT_DATA_DIR)
            nodes = cluster.addresses
            keys = cluster.client_keys()
        client = Client(nodes, deadline=a.timeout, keys=keys)
    except (launch.LaunchError, KeysError, ValueError) as e:
        print(f"client_shell: {e}", file=sys.stderr)
        return 2
    shell = Shell(client, cluster)
    failures = 0

    def do(line: str) -> bool:
        nonlocal failures
        try:
            out = shell.run(line)
        except (ZraftError, ValueError, chaos.ChaosError, KeyError, launch.LaunchError, OSError, KeysError) as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            failures += 1
            return True
        if out is None:
            return False
        if out:
            print(out, flush=True)
        return True

    try:
        if a.command:
            do(shlex.join(a.command))
        elif sys.stdin.isatty():
            try:
                import readline

                hist = os.path.expanduser("~/.zraft_history")
                try:
                    readline.read_history_file(hist)
                except OSError:
                    pass
            except ImportError:
                readline = None  # type: ignore[assignment]
            print(f"zraft shell: {len(nodes)} nodes. Type help.")
            while True:
                try:
                    line = input("zraft> ")
                except EOFError:
                    print()
                    break
                except KeyboardInterrupt:
                    print()
                    continue
                if not do(line):
                    break
            if readline is not None:
                try:
                    readline.write_history_file(hist)
                except OSError:
                    pass
        else:
            for line in sys.stdin:
                if not do(line.rstrip("\n")):
                    break
    finally:
        shell.client.close()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
