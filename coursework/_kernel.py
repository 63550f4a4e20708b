"""The student's kernel, run inside the sandbox (``coursework/sandbox.py``): it executes the submission's
cells one request at a time and answers the grader's questions about the names they defined.

Requests come as JSON lines on stdin; each answer goes to stdout after the cell's own output, as one line
``\\n\\x1e<nonce> <json>``. Everything here runs in the student's process, so the grader treats every
answer as untrusted data: what it may hold is the student's answers, never a verdict.

    {"op": "run", "code": ..., "timeout": s}        -> {"error": null | {"ename", "evalue"}}
    {"op": "get", "names": [...]}                   -> {"values": {name: data}}
    {"op": "call", "name": f, "args": [...], ...}   -> {"value": data} | {"error": ...}
    while a call runs, the kernel may send {"callback": k, "args": ...}: the grader answers with one line
    {"value": data} | {"error": "..."}
"""

import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wire  # noqa: E402

_out = os.fdopen(os.dup(1), "wb", buffering=0)
_in = os.fdopen(os.dup(0), "rb")
_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
_nonce = [b""]


def _send(obj) -> None:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    _out.write(b"\n\x1e" + _nonce[0] + b" " + json.dumps(obj).encode() + b"\n")


def _error(e: BaseException) -> dict:
    return {"ename": type(e).__name__, "evalue": str(e)[:500]}


class _Timeout(KeyboardInterrupt):
    pass


def _alarm(signum, frame):
    raise _Timeout("the cell ran past its time limit")


def _callback(k):
    def call(*args, **kwargs):
        _send({"callback": k, "args": wire.encode(list(args)), "kwargs": wire.encode(kwargs)})
        reply = json.loads(_in.readline())
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return wire.decode(reply["value"], _refs)

    return call


def _refs(d):
    (kind, v), = d.items()
    if kind == "cb":
        return _callback(v)
    if kind == "ref":
        return shell.user_ns[v]
    return wire.Opaque(str(v))


def _callables(x):
    if callable(x):
        return {"callable": getattr(x, "__name__", type(x).__name__)}
    return None


from IPython.core.interactiveshell import InteractiveShell  # noqa: E402

from traitlets.config import Config  # noqa: E402

_config = Config()
_config.HistoryManager.enabled = False
shell = InteractiveShell.instance(config=_config, colors="NoColor")
signal.signal(signal.SIGALRM, _alarm)


def main() -> None:
    while True:
        line = _in.readline()
        if not line:
            return
        req = json.loads(line)
        _nonce[0] = req["nonce"].encode()
        op = req["op"]
        if op == "run":
            signal.setitimer(signal.ITIMER_REAL, float(req.get("timeout", 60)))
            try:
                r = shell.run_cell(req["code"], store_history=False)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            err = r.error_in_exec or r.error_before_exec
            _send({"error": None if err is None else _error(err)})
        elif op == "get":
            values = {}
            for name in req["names"]:
                if name not in shell.user_ns:
                    values[name] = {"missing": True}
                    continue
                try:
                    values[name] = wire.encode(shell.user_ns[name], _callables)
                except Exception as e:
                    values[name] = {"opaque": f"unsendable: {type(e).__name__}"}
            _send({"values": values})
        elif op == "call":
            signal.setitimer(signal.ITIMER_REAL, float(req.get("timeout", 60)))
            try:
                f = shell.user_ns[req["name"]]
                args = wire.decode(req["args"], _refs)
                kwargs = wire.decode(req["kwargs"], _refs)
                out = f(*args, **kwargs)
                signal.setitimer(signal.ITIMER_REAL, 0)
                _send({"value": wire.encode(out, _callables)})
            except BaseException as e:  # the student's function failed: report, keep serving
                signal.setitimer(signal.ITIMER_REAL, 0)
                _send({"error": _error(e)})


if __name__ == "__main__":
    main()
